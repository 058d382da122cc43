//! Writes a container image front to back (no seek), hashing as it goes.

use std::io::{self, Write};

use xxhash_rust::xxh3::Xxh3;

use super::format::*;

/// What a finished image amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes written, trailer included.
    pub bytes: u64,
    /// Records written, trailer included.
    pub records: u64,
    /// The trailer's digest (of every byte before it but the DATA
    /// payloads, which their processes' digests cover).
    pub digest: Digest,
}

/// A container image being written to `W`.
pub struct ContainerWriter<W: Write> {
    out: W,
    hash: Xxh3,
    bytes: u64,
    records: u64,
    process: Option<(u32, u64, Xxh3)>,
    next_index: u32,
}

impl<W: Write> ContainerWriter<W> {
    /// Starts an image: writes its header with `manifest`.
    pub fn new(out: W, manifest: &Manifest) -> io::Result<Self> {
        let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
        if json.len() > CT_MAX_MANIFEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("manifest of {} bytes exceeds {CT_MAX_MANIFEST}", json.len()),
            ));
        }
        let mut w = ContainerWriter {
            out,
            hash: Xxh3::new(),
            bytes: 0,
            records: 0,
            process: None,
            next_index: 0,
        };
        let mut payload = Vec::with_capacity(HEADER_FIXED + json.len());
        payload.extend(CT_MAGIC.to_le_bytes());
        payload.extend(CT_VERSION.to_le_bytes());
        payload.extend(0u32.to_le_bytes()); // flags
        payload.extend((json.len() as u32).to_le_bytes());
        payload.extend(0u32.to_le_bytes()); // pad
        payload.extend(&json);
        w.record(CT_REC_HEADER, &payload)?;
        Ok(w)
    }

    /// The bytes queue `index` of the manifest held (its pipes', then its
    /// socketpairs' two sides each): every one, in order, before the first
    /// process.
    pub fn queue(&mut self, index: u32, bytes: &[u8]) -> io::Result<()> {
        if self.next_index != 0 || self.process.is_some() {
            return Err(io::Error::other("queued bytes after a process"));
        }
        let mut payload = Vec::with_capacity(super::pipes::QUEUE_FIXED + bytes.len());
        payload.extend(index.to_le_bytes());
        payload.extend(0u32.to_le_bytes());
        payload.extend(bytes);
        self.record(CT_REC_QUEUE, &payload)
    }

    /// Bytes of shared memory object `index` of the manifest from `offset`
    /// on: after the queues, before the first process, objects in order,
    /// offsets increasing.
    pub fn shm(&mut self, index: u32, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.next_index != 0 || self.process.is_some() {
            return Err(io::Error::other("shared memory after a process"));
        }
        let mut at = 0;
        while at < bytes.len() {
            let n = (bytes.len() - at).min(CT_MAX_CHUNK);
            let mut payload = Vec::with_capacity(super::shm::SHM_FIXED + n);
            payload.extend(index.to_le_bytes());
            payload.extend(0u32.to_le_bytes());
            payload.extend((offset + at as u64).to_le_bytes());
            payload.extend(&bytes[at..at + n]);
            self.record(CT_REC_SHM, &payload)?;
            at += n;
        }
        Ok(())
    }

    /// Starts the kernel image of the process with container pid `pid`;
    /// processes are numbered in the order they are begun.
    pub fn begin_process(&mut self, pid: i32) -> io::Result<u32> {
        if self.process.is_some() {
            return Err(io::Error::other("begin_process inside a process"));
        }
        let index = self.next_index;
        let mut payload = [0u8; PROCESS_LEN];
        payload[..4].copy_from_slice(&index.to_le_bytes());
        payload[4..].copy_from_slice(&pid.to_le_bytes());
        self.record(CT_REC_PROCESS, &payload)?;
        self.process = Some((index, 0, Xxh3::new()));
        self.next_index += 1;
        Ok(index)
    }

    /// Appends bytes of the current process's kernel image.
    pub fn data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(CT_MAX_CHUNK);
            let (chunk, rest) = bytes.split_at(n);
            let Some((_, len, hash)) = self.process.as_mut() else {
                return Err(io::Error::other("data outside a process"));
            };
            *len += n as u64;
            hash.update(chunk);
            self.data_record(chunk)?;
            bytes = rest;
        }
        Ok(())
    }

    /// Ends the current process's kernel image.
    pub fn end_process(&mut self) -> io::Result<()> {
        let Some((index, len, hash)) = self.process.take() else {
            return Err(io::Error::other("end_process outside a process"));
        };
        let mut payload = [0u8; PROCESS_END_LEN];
        payload[..4].copy_from_slice(&index.to_le_bytes());
        payload[8..16].copy_from_slice(&len.to_le_bytes());
        payload[16..].copy_from_slice(&hash.digest128().to_le_bytes());
        self.record(CT_REC_PROCESS_END, &payload)
    }

    /// Ends a failed image with an ERROR record (no trailer follows).
    pub fn error(mut self, errno: i32, message: &str) -> io::Result<W> {
        let mut msg = message.as_bytes();
        if msg.len() > CT_MAX_MESSAGE {
            msg = &msg[..CT_MAX_MESSAGE];
        }
        let mut payload = Vec::with_capacity(ERROR_FIXED + msg.len());
        payload.extend(errno.to_le_bytes());
        payload.extend((msg.len() as u32).to_le_bytes());
        payload.extend(msg);
        self.record(CT_REC_ERROR, &payload)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes the trailer and returns the sink and the totals.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        if self.process.is_some() {
            return Err(io::Error::other("finish inside a process"));
        }
        let digest: Digest = self.hash.digest128().to_le_bytes();
        let mut payload = [0u8; TRAILER_LEN];
        payload[..8].copy_from_slice(&CT_TRAILER_MAGIC.to_le_bytes());
        payload[8..16].copy_from_slice(&self.records.to_le_bytes());
        payload[16..].copy_from_slice(&digest);
        self.record(CT_REC_TRAILER, &payload)?;
        self.out.flush()?;
        let written = Written {
            bytes: self.bytes,
            records: self.records,
            digest,
        };
        Ok((self.out, written))
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn record(&mut self, kind: u32, payload: &[u8]) -> io::Result<()> {
        self.write_record(kind, payload, true)
    }

    /// A DATA record: its payload is in its process's digest, not the
    /// trailer's.
    fn data_record(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_record(CT_REC_DATA, payload, false)
    }

    fn write_record(&mut self, kind: u32, payload: &[u8], hash_payload: bool) -> io::Result<()> {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&kind.to_le_bytes());
        head[4..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let pad = [0u8; 8];
        let pad = &pad[..padding(payload.len())];
        for (part, hashed) in [(&head[..], true), (payload, hash_payload), (pad, true)] {
            self.out.write_all(part)?;
            if hashed {
                self.hash.update(part);
            }
        }
        self.bytes += (8 + payload.len() + pad.len()) as u64;
        self.records += 1;
        Ok(())
    }
}
