//! Reads and checks a container image front to back, in bounded memory.
//!
//! Everything is validated as it arrives: record order, lengths, padding,
//! the manifest, each process's byte count and digest, and the trailer's
//! record count and digest over the rest of the stream. The consumer gets each
//! chunk of a process's kernel image as it is read (to feed a restart
//! through a pipe, say) and must treat the data as unconfirmed until
//! [`Event::End`].

use std::io::{self, Read};

use xxhash_rust::xxh3::Xxh3;

use super::format::*;
use super::pipes::{check_pipes, CT_MAX_PIPE_BYTES, QUEUE_FIXED};
use super::shm::{check_data, check_shm, SHM_FIXED};
use super::sockets::{queue_count, queue_len};

/// Why a container image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Reading failed.
    #[error("reading the image: {0}")]
    Io(#[from] io::Error),
    /// The stream ended early.
    #[error("image ends early: {0}")]
    Truncated(&'static str),
    /// Not a container image, or another version.
    #[error("not a crvmm container image of version 1 to {CT_VERSION}: {0}")]
    NotContainer(String),
    /// A record breaks the format.
    #[error("record {index} at byte {offset}: {what}")]
    Bad {
        /// Its position (0 = header).
        index: u64,
        /// Its byte offset.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The image is the record of a failed checkpoint.
    #[error("the checkpoint failed (errno {errno}): {message}")]
    Failed {
        /// The errno of the failure (0 when none applies).
        errno: i32,
        /// What the agent said.
        message: String,
    },
}

/// One step through an image.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The header: the container's manifest.
    Header(Box<Manifest>),
    /// The bytes queue `index` of the manifest held: its pipe `index`,
    /// or a socket of its socketpairs after the pipes.
    Queue {
        /// Its position: pipes first, then two per socketpair.
        index: u32,
        /// Its bytes.
        data: &'a [u8],
    },
    /// Bytes of shared memory object `index` of the manifest, at
    /// `offset` (what is not given is zero).
    Shm {
        /// The object's position in the manifest.
        index: u32,
        /// Where the bytes go in it.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// The kernel image of process `index` (container pid `pid`) starts.
    Process {
        /// Its position.
        index: u32,
        /// Its pid in the container.
        pid: i32,
    },
    /// Bytes of the current process's kernel image.
    Data(&'a [u8]),
    /// That kernel image ended, with this many bytes and the right digest.
    ProcessEnd {
        /// Its position.
        index: u32,
        /// Its length.
        bytes: u64,
    },
    /// The trailer checked out: the image is complete and intact.
    End {
        /// Bytes in the image.
        bytes: u64,
        /// Its digest (the trailer's).
        digest: Digest,
    },
}

enum State {
    Start,
    Between,
    InProcess {
        index: u32,
        bytes: u64,
        hash: Box<Xxh3>,
    },
    Done,
}

/// A pull reader of container images.
pub struct ContainerReader<R: Read> {
    input: R,
    hash: Xxh3,
    offset: u64,
    records: u64,
    state: State,
    manifest: Option<Manifest>,
    next_index: u32,
    next_pipe: u32,
    /// The last SHM record's object and end.
    shm_at: (u32, u64),
    buf: Vec<u8>,
}

impl<R: Read> ContainerReader<R> {
    /// A reader of the image in `input`.
    pub fn new(input: R) -> Self {
        ContainerReader {
            input,
            hash: Xxh3::new(),
            offset: 0,
            records: 0,
            state: State::Start,
            manifest: None,
            next_index: 0,
            next_pipe: 0,
            shm_at: (0, 0),
            buf: Vec::new(),
        }
    }

    /// The manifest, once the header has been read.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The next event; `None` after [`Event::End`].
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, ContainerError> {
        if matches!(self.state, State::Done) {
            return Ok(None);
        }
        let at = self.offset;
        let index = self.records;
        // The trailer's digest covers everything before its header.
        let before_trailer: Digest = self.hash.digest128().to_le_bytes();
        let mut head = [0u8; 8];
        self.fill(&mut head, "in a record header")?;
        self.hash.update(&head);
        let kind = le_u32(&head, 0);
        let len = le_u32(&head, 4) as usize;
        let bad = |what: String| ContainerError::Bad {
            index,
            offset: at,
            what,
        };
        if matches!(self.state, State::Start) && kind != CT_REC_HEADER {
            return Err(ContainerError::NotContainer(format!(
                "first record has type {kind:#x}"
            )));
        }
        let max = match kind {
            CT_REC_HEADER => HEADER_FIXED + CT_MAX_MANIFEST,
            CT_REC_PROCESS => PROCESS_LEN,
            CT_REC_DATA => CT_MAX_CHUNK,
            CT_REC_PROCESS_END => PROCESS_END_LEN,
            CT_REC_ERROR => ERROR_FIXED + CT_MAX_MESSAGE,
            CT_REC_TRAILER => TRAILER_LEN,
            CT_REC_QUEUE => QUEUE_FIXED + CT_MAX_PIPE_BYTES,
            CT_REC_SHM => SHM_FIXED + CT_MAX_CHUNK,
            _ => return Err(bad(format!("unknown record type {kind:#x}"))),
        };
        if len > max {
            return Err(bad(format!("length {len} over the limit {max}")));
        }
        let mut payload = std::mem::take(&mut self.buf);
        payload.resize(len + padding(len), 0);
        self.fill(&mut payload, "in a record")?;
        // DATA payloads are in their process's digest instead.
        let hashed = if kind == CT_REC_DATA { len } else { 0 };
        self.hash.update(&payload[hashed..]);
        if payload[len..].iter().any(|&b| b != 0) {
            return Err(bad("padding is not zero".into()));
        }
        payload.truncate(len);
        self.records += 1;
        self.buf = payload;
        let p = &self.buf;
        let queues = self.manifest.as_ref().map_or(0, queue_count);
        let ends_queues = matches!(kind, CT_REC_PROCESS | CT_REC_TRAILER | CT_REC_SHM);
        if ends_queues && (self.next_pipe as usize) < queues {
            return Err(bad(format!(
                "the data of {} of {queues} pipes and sockets",
                self.next_pipe
            )));
        }
        match (&mut self.state, kind) {
            (State::Start, CT_REC_HEADER) => {
                let manifest = header(p).map_err(ContainerError::NotContainer)?;
                let manifest = check_manifest(manifest).map_err(bad)?;
                self.manifest = Some(manifest.clone());
                self.state = State::Between;
                Ok(Some(Event::Header(Box::new(manifest))))
            }
            (State::Between, CT_REC_SHM) if self.next_index == 0 => {
                if p.len() < SHM_FIXED || le_u32(p, 4) != 0 {
                    return Err(bad("malformed shared memory record".into()));
                }
                let (index, offset) = (le_u32(p, 0), le_u64(p, 8));
                let len = p.len() - SHM_FIXED;
                let m = self.manifest.as_ref().expect("after the header");
                check_data(m, self.shm_at, index, offset, len).map_err(bad)?;
                self.shm_at = (index, offset + len as u64);
                Ok(Some(Event::Shm {
                    index,
                    offset,
                    data: &self.buf[SHM_FIXED..],
                }))
            }
            (State::Between, CT_REC_QUEUE) if self.next_index == 0 && self.shm_at == (0, 0) => {
                let i = self.next_pipe;
                let want = self
                    .manifest
                    .as_ref()
                    .and_then(|m| queue_len(m, i as usize));
                let fits = want.is_some_and(|n| p.len() == QUEUE_FIXED + n);
                if p.len() < QUEUE_FIXED || le_u32(p, 0) != i || le_u32(p, 4) != 0 || !fits {
                    return Err(bad(format!(
                        "queue record {i}: not the manifest's queue {i}"
                    )));
                }
                self.next_pipe += 1;
                Ok(Some(Event::Queue {
                    index: i,
                    data: &self.buf[QUEUE_FIXED..],
                }))
            }
            (State::Between, CT_REC_PROCESS) => {
                let (i, pid) = exact(p, PROCESS_LEN)
                    .map(|p| (le_u32(p, 0), le_u32(p, 4) as i32))
                    .map_err(bad)?;
                let want = self
                    .manifest
                    .as_ref()
                    .and_then(|m| m.processes.get(i as usize));
                match want {
                    Some(e) if i == self.next_index && e.pid == pid => {}
                    _ => return Err(bad(format!("process {i} (pid {pid}) out of order"))),
                }
                self.state = State::InProcess {
                    index: i,
                    bytes: 0,
                    hash: Box::new(Xxh3::new()),
                };
                Ok(Some(Event::Process { index: i, pid }))
            }
            (State::InProcess { bytes, hash, .. }, CT_REC_DATA) => {
                if p.is_empty() {
                    return Err(bad("empty data record".into()));
                }
                *bytes += p.len() as u64;
                hash.update(p);
                Ok(Some(Event::Data(&self.buf)))
            }
            (
                State::InProcess {
                    index: i,
                    bytes,
                    hash,
                },
                CT_REC_PROCESS_END,
            ) => {
                let p = exact(p, PROCESS_END_LEN).map_err(bad)?;
                let (i, n) = (*i, *bytes);
                if le_u32(p, 0) != i || le_u64(p, 8) != n {
                    return Err(bad(format!(
                        "process {i} end says {} bytes of process {}, read {n}",
                        le_u64(p, 8),
                        le_u32(p, 0)
                    )));
                }
                if hash.digest128().to_le_bytes()[..] != p[16..32] {
                    return Err(bad(format!("process {i}: digest mismatch")));
                }
                self.next_index += 1;
                self.state = State::Between;
                Ok(Some(Event::ProcessEnd { index: i, bytes: n }))
            }
            (State::Between, CT_REC_TRAILER) => {
                let p = exact(p, TRAILER_LEN).map_err(bad)?;
                let expected = self.manifest.as_ref().map_or(0, |m| m.processes.len());
                if le_u64(p, 0) != CT_TRAILER_MAGIC {
                    return Err(bad("trailer magic".into()));
                }
                if le_u64(p, 8) != index {
                    return Err(bad(format!(
                        "trailer counts {} records, read {index}",
                        le_u64(p, 8)
                    )));
                }
                if self.next_index as usize != expected {
                    return Err(bad(format!("{} of {expected} processes", self.next_index)));
                }
                if p[16..32] != before_trailer {
                    return Err(bad("the image's digest does not match the trailer".into()));
                }
                self.expect_eof()?;
                self.state = State::Done;
                Ok(Some(Event::End {
                    bytes: self.offset,
                    digest: before_trailer,
                }))
            }
            (_, CT_REC_ERROR) => {
                let p = &self.buf;
                if p.len() < ERROR_FIXED || le_u32(p, 4) as usize != p.len() - ERROR_FIXED {
                    return Err(bad("malformed error record".into()));
                }
                Err(ContainerError::Failed {
                    errno: le_u32(p, 0) as i32,
                    message: String::from_utf8_lossy(&p[ERROR_FIXED..]).into_owned(),
                })
            }
            (_, kind) => Err(bad(format!("record type {kind:#x} out of place"))),
        }
    }

    /// Reads the whole image, checking it; returns the manifest and the
    /// final event's totals.
    pub fn verify(mut self) -> Result<(Manifest, u64, Digest), ContainerError> {
        loop {
            match self.next_event()? {
                Some(Event::End { bytes, digest }) => {
                    let m = self.manifest.take().unwrap_or_default();
                    return Ok((m, bytes, digest));
                }
                Some(_) => {}
                None => return Err(ContainerError::Truncated("after the end")),
            }
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ContainerError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => return Err(ContainerError::Truncated(what)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn expect_eof(&mut self) -> Result<(), ContainerError> {
        let mut byte = [0u8; 1];
        loop {
            match self.input.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(ContainerError::Bad {
                        index: self.records,
                        offset: self.offset,
                        what: "bytes after the trailer".into(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn exact(p: &[u8], len: usize) -> Result<&[u8], String> {
    if p.len() == len {
        Ok(p)
    } else {
        Err(format!("payload of {} bytes, expected {len}", p.len()))
    }
}

fn header(p: &[u8]) -> Result<Manifest, String> {
    if p.len() < HEADER_FIXED || le_u64(p, 0) != CT_MAGIC {
        return Err("no container image magic".into());
    }
    if !(1..=CT_VERSION).contains(&le_u32(p, 8)) {
        return Err(format!("format version {}", le_u32(p, 8)));
    }
    let len = le_u32(p, 16) as usize;
    if le_u32(p, 12) != 0 || len != p.len() - HEADER_FIXED {
        return Err("malformed header".into());
    }
    serde_json::from_slice(&p[HEADER_FIXED..]).map_err(|e| format!("manifest: {e}"))
}

fn check_manifest(m: Manifest) -> Result<Manifest, String> {
    if m.processes.is_empty() || m.processes.len() > CT_MAX_PROCESSES {
        return Err(format!("{} processes", m.processes.len()));
    }
    for (i, p) in m.processes.iter().enumerate() {
        if p.index as usize != i || p.pid <= 0 || p.ppid < 0 {
            return Err(format!(
                "process entry {i} (index {}, pid {})",
                p.index, p.pid
            ));
        }
        // Parents come first: a tree the restorer can build in order.
        if p.ppid != 0 && !m.processes[..i].iter().any(|q| q.pid == p.ppid) {
            return Err(format!(
                "process {} has parent {} not before it",
                p.pid, p.ppid
            ));
        }
        if m.processes[..i].iter().any(|q| q.pid == p.pid) {
            return Err(format!("pid {} twice", p.pid));
        }
    }
    check_pipes(&m)?;
    check_shm(&m)?;
    if m.processes[0].ppid != 0 {
        return Err("the first process is not the container's init".into());
    }
    if m.processes.len() + m.zombies.len() > CT_MAX_PROCESSES {
        return Err(format!("{} zombies", m.zombies.len()));
    }
    for (i, z) in m.zombies.iter().enumerate() {
        let taken = m.processes.iter().any(|q| q.pid == z.pid)
            || m.zombies[..i].iter().any(|q| q.pid == z.pid);
        if z.pid <= 0 || taken || !ZombieEntry::status_valid(z.status) {
            return Err(format!(
                "zombie entry {i} (pid {}, status {:#x})",
                z.pid, z.status
            ));
        }
        if !m.processes.iter().any(|q| q.pid == z.ppid) {
            return Err(format!(
                "zombie {} has parent {}, not a process of the image",
                z.pid, z.ppid
            ));
        }
    }
    Ok(m)
}
