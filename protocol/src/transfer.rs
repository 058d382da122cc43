//! Container checkpoint and restore: requests whose image travels on the
//! same connection as raw data frames.
//!
//! A data frame is `magic "CRVD" | u32 little-endian length | bytes`, at
//! most [`MAX_DATA_CHUNK`] bytes, next to the JSON frames of [`crate::frame`].
//! Only these two requests use them, on a connection of their own:
//!
//! - `container_checkpoint` with `stream`: the agent answers with data
//!   frames carrying the container image as it is produced, then one JSON
//!   response (`checkpointed`, or an error that ends the stream);
//! - `container_restore` without `guest_file`: the host follows the request
//!   with data frames carrying the image and an empty data frame to end it;
//!   the agent reads all of it, then answers (`container`, or an error).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::client::{unexpected, AgentClient, ClientError};
use crate::container::ContainerInfo;
use crate::frame::{FrameError, FRAME_MAGIC, MAX_FRAME_LEN};
use crate::message::{Request, RequestEnvelope, Response, ResponseEnvelope};

/// Marks a data frame.
pub const DATA_MAGIC: [u8; 4] = *b"CRVD";

/// The largest data frame payload.
pub const MAX_DATA_CHUNK: usize = 1 << 20;

/// Checkpoint a container: pre-dump hook, freeze, dump every process, thaw
/// or kill, post-dump hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCheckpoint {
    /// The container.
    pub container: String,
    /// Thaw the container afterwards and let it run on (default: kill it,
    /// as for a migration).
    #[serde(default)]
    pub leave_running: bool,
    /// Send the image to the host in data frames on this connection.
    #[serde(default)]
    pub stream: bool,
    /// Also (or only) write the image to this file in the guest.
    #[serde(default)]
    pub guest_file: Option<String>,
    /// Compress the image with zstd (streamed and written alike).
    #[serde(default)]
    pub zstd: bool,
    /// Give up on a freeze that takes longer (default 10 000 ms).
    #[serde(default)]
    pub freeze_timeout_ms: Option<u64>,
    /// A program (argv) run in the guest before the freeze; a failure
    /// aborts the checkpoint.
    #[serde(default)]
    pub pre_dump: Vec<String>,
    /// A program run after the thaw or kill; its failure is reported.
    #[serde(default)]
    pub post_dump: Vec<String>,
}

/// What a checkpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The container.
    pub container: String,
    /// Processes dumped.
    pub processes: u32,
    /// Bytes of the container image (uncompressed).
    pub image_bytes: u64,
    /// Bytes streamed or written (compressed when `zstd`).
    pub stored_bytes: u64,
    /// The uncompressed image's digest, in hex: XXH3-128, as its trailer
    /// carries it (docs/container-image.md).
    pub digest: String,
    /// The stream is zstd-compressed.
    pub zstd: bool,
    /// The container runs on (else it was killed).
    pub left_running: bool,
    /// The guest file written, if any.
    #[serde(default)]
    pub guest_file: Option<String>,
    /// Time in the pre-dump hook.
    pub pre_dump_us: u64,
    /// From writing `cgroup.freeze` to frozen.
    pub freeze_us: u64,
    /// Dumping every process.
    pub dump_us: u64,
    /// From the freeze to the thaw (or kill): how long the container stood.
    pub downtime_us: u64,
    /// The whole request.
    pub total_us: u64,
    /// The post-dump hook's failure, if it failed.
    #[serde(default)]
    pub post_dump_error: Option<String>,
}

/// Restore a container from an image: the host sends it in data frames,
/// or the agent reads it from a guest file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRestore {
    /// The new container's identifier (may be the checkpointed one's).
    pub container: String,
    /// Read the image from this file in the guest instead of the stream.
    #[serde(default)]
    pub guest_file: Option<String>,
}

/// A frame read on a streaming connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A JSON message.
    Message(Vec<u8>),
    /// Raw bytes (empty: the end of a stream the host sends).
    Data(Vec<u8>),
}

/// Writes one data frame.
pub fn write_data<W: Write>(w: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() > MAX_DATA_CHUNK {
        return Err(FrameError::TooLarge(bytes.len() as u64));
    }
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&DATA_MAGIC);
    head[4..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    w.write_all(&head).map_err(FrameError::Write)?;
    w.write_all(bytes).map_err(FrameError::Write)
}

/// Reads the next frame of a streaming connection. Unlike
/// [`crate::frame::read_frame`] it does not skip garbage: these connections
/// are private vsock streams, where a bad magic means a broken peer.
pub fn read_incoming<R: Read>(r: &mut R) -> Result<Incoming, FrameError> {
    let mut head = [0u8; 8];
    match fill(r, &mut head)? {
        0 => return Err(FrameError::Closed),
        8 => {}
        _ => return Err(FrameError::Truncated),
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let (data, limit) = match [head[0], head[1], head[2], head[3]] {
        m if m == DATA_MAGIC => (true, MAX_DATA_CHUNK as u32),
        m if m == FRAME_MAGIC => (false, MAX_FRAME_LEN),
        _ => {
            return Err(FrameError::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a frame: magic {:02x?}", &head[..4]),
            )))
        }
    };
    if len > limit {
        return Err(FrameError::TooLarge(len.into()));
    }
    let mut body = vec![0u8; len as usize];
    if fill(r, &mut body)? != body.len() {
        return Err(FrameError::Truncated);
    }
    Ok(if data {
        Incoming::Data(body)
    } else {
        Incoming::Message(body)
    })
}

impl<S: Read + Write> AgentClient<S> {
    /// Checkpoints a container. With `request.stream`, the image's bytes go
    /// to `sink` as they arrive (`progress` gets the running total); the
    /// connection is then used up. A failing `sink` ends the call, and the
    /// connection with it: the agent then stops, thaws the container and
    /// lets it run on.
    pub fn container_checkpoint(
        &mut self,
        request: ContainerCheckpoint,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CheckpointReport, ClientError> {
        let id = self.send(Request::ContainerCheckpoint(request))?;
        let mut total = 0u64;
        loop {
            match read_incoming(self.stream_mut()).map_err(ClientError::Receive)? {
                Incoming::Data(bytes) => {
                    sink.write_all(&bytes).map_err(ClientError::Sink)?;
                    total += bytes.len() as u64;
                    progress(total);
                }
                Incoming::Message(body) => match self.response(id, &body)? {
                    Some(Response::Checkpointed { report }) => return Ok(*report),
                    Some(other) => return Err(unexpected("container_checkpoint", other)),
                    None => {}
                },
            }
        }
    }

    /// Restores a container from the image read from `source` (unless
    /// `request.guest_file` names one in the guest); `progress` gets the
    /// bytes sent so far. The agent answers after the whole image.
    pub fn container_restore(
        &mut self,
        request: ContainerRestore,
        source: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ContainerInfo, ClientError> {
        let from_host = request.guest_file.is_none();
        let id = self.send(Request::ContainerRestore(request))?;
        if from_host {
            let mut chunk = vec![0u8; MAX_DATA_CHUNK];
            let mut total = 0u64;
            loop {
                let n = match source.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ClientError::Source(e)),
                };
                write_data(self.stream_mut(), &chunk[..n]).map_err(ClientError::Send)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                progress(total);
            }
        }
        loop {
            let frame =
                crate::frame::read_frame(self.stream_mut()).map_err(ClientError::Receive)?;
            match self.response(id, &frame.body)? {
                Some(Response::Container { container }) => return Ok(*container),
                Some(other) => return Err(unexpected("container_restore", other)),
                None => {}
            }
        }
    }

    fn send(&mut self, request: Request) -> Result<u64, ClientError> {
        let id = self.take_id();
        let body = serde_json::to_vec(&RequestEnvelope { id, request })
            .expect("requests always serialize");
        crate::frame::write_frame(self.stream_mut(), &body).map_err(ClientError::Send)?;
        Ok(id)
    }

    /// The response in `body` if it answers request `id`.
    fn response(&mut self, id: u64, body: &[u8]) -> Result<Option<Response>, ClientError> {
        let envelope: ResponseEnvelope =
            serde_json::from_slice(body).map_err(ClientError::Decode)?;
        Ok((envelope.id == id).then_some(envelope.response))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Read(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::write_frame;

    #[test]
    fn data_and_messages_interleave() {
        let mut wire = Vec::new();
        write_data(&mut wire, b"abc").unwrap();
        write_frame(&mut wire, b"{\"x\":1}").unwrap();
        write_data(&mut wire, b"").unwrap();
        let mut r = &wire[..];
        assert_eq!(
            read_incoming(&mut r).unwrap(),
            Incoming::Data(b"abc".to_vec())
        );
        assert_eq!(
            read_incoming(&mut r).unwrap(),
            Incoming::Message(b"{\"x\":1}".to_vec())
        );
        assert_eq!(read_incoming(&mut r).unwrap(), Incoming::Data(Vec::new()));
        assert!(matches!(read_incoming(&mut r), Err(FrameError::Closed)));
    }

    #[test]
    fn bad_frames_are_refused() {
        let big = vec![0u8; MAX_DATA_CHUNK + 1];
        assert!(matches!(
            write_data(&mut Vec::new(), &big),
            Err(FrameError::TooLarge(_))
        ));
        let mut wire = b"CRVD".to_vec();
        wire.extend(((MAX_DATA_CHUNK + 1) as u32).to_le_bytes());
        assert!(matches!(
            read_incoming(&mut &wire[..]),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_incoming(&mut &b"XXXX\0\0\0\0"[..]),
            Err(FrameError::Read(_))
        ));
        assert!(matches!(
            read_incoming(&mut &b"CRVD\x05\0\0\0ab"[..]),
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_incoming(&mut &b"CRV"[..]),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn requests_keep_their_defaults() {
        let req: ContainerCheckpoint = serde_json::from_str(r#"{"container":"c"}"#).unwrap();
        assert_eq!(req.container, "c");
        assert!(!req.leave_running && !req.stream && !req.zstd && req.guest_file.is_none());
        let req: ContainerRestore = serde_json::from_str(r#"{"container":"d"}"#).unwrap();
        assert_eq!(req.guest_file, None);
    }
}
