//! Framing: `magic "CRVA" | u32 little-endian body length | body`.
//!
//! The magic lets a reader on a byte stream without connection boundaries
//! (virtio-serial keeps bytes a previous host client left half-sent) find
//! the start of the next frame again: [`read_frame`] skips bytes until it
//! sees the magic, and reports how many it skipped.

use std::io::{self, Read, Write};

/// Marks the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"CRVA";

/// The largest body either side accepts. Bodies are JSON with base64 data,
/// so this bounds a file transfer to about 48 MiB per request.
pub const MAX_FRAME_LEN: u32 = 64 << 20;

/// Errors while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(u64),
    /// Reading from the stream failed.
    #[error("failed to read a frame")]
    Read(#[source] io::Error),
    /// Writing to the stream failed.
    #[error("failed to write a frame")]
    Write(#[source] io::Error),
}

impl FrameError {
    /// True when the error came from a read or write timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Read(e) | FrameError::Write(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// A frame read from a stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// The body bytes.
    pub body: Vec<u8>,
    /// Bytes skipped before the magic was found (0 on a clean stream).
    pub skipped: usize,
}

/// Writes one frame. The header and body go out in one `write_all` so a
/// frame is never interleaved with another writer's bytes at this level.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge(body.len() as u64))?;
    let mut buf = Vec::with_capacity(8 + body.len());
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).map_err(FrameError::Write)?;
    w.flush().map_err(FrameError::Write)
}

/// Reads one frame, skipping garbage before the magic.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Frame, FrameError> {
    let mut window = [0u8; 4];
    let mut filled = 0;
    let mut skipped = 0usize;
    // Slide a 4-byte window over the stream until it holds the magic.
    loop {
        let mut byte = [0u8; 1];
        match read_some(r, &mut byte)? {
            0 if filled == 0 && skipped == 0 => return Err(FrameError::Closed),
            0 => return Err(FrameError::Truncated),
            _ => {}
        }
        if filled < 4 {
            window[filled] = byte[0];
            filled += 1;
        } else {
            window.rotate_left(1);
            window[3] = byte[0];
            skipped += 1;
        }
        if filled == 4 && window == FRAME_MAGIC {
            break;
        }
    }
    let mut len = [0u8; 4];
    read_exact(r, &mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len.into()));
    }
    let mut body = vec![0u8; len as usize];
    read_exact(r, &mut body)?;
    Ok(Frame { body, skipped })
}

fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Read(e)),
        }
    }
}

fn read_exact<R: Read>(r: &mut R, mut buf: &mut [u8]) -> Result<(), FrameError> {
    while !buf.is_empty() {
        match read_some(r, buf)? {
            0 => return Err(FrameError::Truncated),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn encode(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let mut stream = Cursor::new(encode(b"hello"));
        let frame = read_frame(&mut stream).unwrap();
        assert_eq!(frame.body, b"hello");
        assert_eq!(frame.skipped, 0);
        assert!(matches!(read_frame(&mut stream), Err(FrameError::Closed)));
    }

    #[test]
    fn resynchronises_after_garbage() {
        let mut bytes = b"xxCRV garbage".to_vec();
        bytes.extend(encode(b"{}"));
        bytes.extend(encode(b"second"));
        let mut stream = Cursor::new(bytes);
        let first = read_frame(&mut stream).unwrap();
        assert_eq!(first.body, b"{}");
        assert_eq!(first.skipped, 13);
        assert_eq!(read_frame(&mut stream).unwrap().body, b"second");
    }

    #[test]
    fn rejects_oversized_length_before_allocating() {
        let mut bytes = FRAME_MAGIC.to_vec();
        bytes.extend((MAX_FRAME_LEN + 1).to_le_bytes());
        let err = read_frame(&mut Cursor::new(bytes)).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == u64::from(MAX_FRAME_LEN) + 1));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut bytes = encode(b"0123456789");
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            read_frame(&mut Cursor::new(bytes)),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn empty_body_is_allowed() {
        let frame = read_frame(&mut Cursor::new(encode(b""))).unwrap();
        assert!(frame.body.is_empty());
    }
}
