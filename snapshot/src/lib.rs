//! Snapshot state files: a versioned, checksummed container around a
//! serde-encoded state, and atomic file replacement.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CRVMSNAP"
//! 8       2     format major version (u16 LE)
//! 10      2     format minor version (u16 LE)
//! 12      4     flags (u32 LE, 0; reserved)
//! 16      8     payload length N (u64 LE), at most the reader's cap
//! 24      N     payload: the state, CBOR-encoded
//! 24+N    8     CRC-64/ECMA-182 of bytes 0..24+N (u64 LE)
//! ```
//!
//! Compatibility policy (also in `docs/snapshot-format.md`): a reader
//! accepts any file of its own major version. New fields are added as
//! optional (`#[serde(default)]`) with a minor bump and older readers
//! ignore them; removing or changing the meaning of a field bumps the
//! major version, and a reader refuses other majors with an error that
//! names both versions.

mod atomic;

pub use atomic::{write_atomic, AtomicWriteError};

use std::io::{self, Read, Write};

use crc::{Crc, CRC_64_ECMA_182};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The file magic.
pub const MAGIC: [u8; 8] = *b"CRVMSNAP";
/// The format major version this build writes and reads.
pub const FORMAT_MAJOR: u16 = 1;
/// The format minor version this build writes.
pub const FORMAT_MINOR: u16 = 0;
/// The default cap on a payload's size (the state, not guest memory).
pub const DEFAULT_MAX_PAYLOAD: u64 = 16 << 20;

const HEADER_LEN: usize = 24;
const CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_ECMA_182);

/// Why a state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file does not start with the magic.
    #[error("not a crvmm snapshot state file (bad magic {0:02x?})")]
    BadMagic([u8; 8]),
    /// A major version this build does not read.
    #[error(
        "snapshot format version {found}.x is not supported (this build reads {FORMAT_MAJOR}.x)"
    )]
    UnsupportedVersion {
        /// The file's major version.
        found: u16,
    },
    /// Reserved flags are set.
    #[error("snapshot state file has unknown flags {0:#x}")]
    UnknownFlags(u32),
    /// The payload is larger than the cap.
    #[error("snapshot state of {len} bytes exceeds the {cap}-byte limit")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// The file ends early.
    #[error("snapshot state file is truncated ({0})")]
    Truncated(&'static str),
    /// The checksum does not match.
    #[error("snapshot state file is corrupt: CRC64 {found:#018x}, expected {expected:#018x}")]
    Checksum {
        /// Stored.
        found: u64,
        /// Computed.
        expected: u64,
    },
    /// Bytes after the checksum.
    #[error("snapshot state file has {0} unexpected bytes after its checksum")]
    TrailingData(u64),
    /// The payload does not decode as the expected state.
    #[error("snapshot state does not decode: {0}")]
    Decode(String),
    /// Reading or writing failed.
    #[error("snapshot state I/O failed")]
    Io(#[source] io::Error),
}

/// Encodes `state` into a complete state file image.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    let mut payload = Vec::new();
    ciborium::into_writer(state, &mut payload).expect("encoding into memory cannot fail");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 8);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    out.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes `state` to `w` as a state file; returns the bytes written.
pub fn write<T: Serialize, W: Write>(w: &mut W, state: &T) -> Result<u64, StateFileError> {
    let bytes = encode(state);
    w.write_all(&bytes).map_err(StateFileError::Io)?;
    Ok(bytes.len() as u64)
}

/// The header of a state file, as read before the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Payload length.
    pub payload_len: u64,
}

/// Reads and checks a whole state file from `r`: magic, version, flags,
/// size cap (before allocating), checksum, nothing after it; then decodes.
pub fn read<T: DeserializeOwned, R: Read>(
    r: &mut R,
    cap: u64,
) -> Result<(Header, T), StateFileError> {
    let mut head = [0u8; HEADER_LEN];
    read_exact(r, &mut head, "header")?;
    let magic: [u8; 8] = head[..8].try_into().expect("8 bytes");
    if magic != MAGIC {
        return Err(StateFileError::BadMagic(magic));
    }
    let major = u16::from_le_bytes([head[8], head[9]]);
    let minor = u16::from_le_bytes([head[10], head[11]]);
    if major != FORMAT_MAJOR {
        return Err(StateFileError::UnsupportedVersion { found: major });
    }
    let flags = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    if flags != 0 {
        return Err(StateFileError::UnknownFlags(flags));
    }
    let len = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    if len > cap {
        return Err(StateFileError::TooLarge { len, cap });
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(r, &mut payload, "payload")?;
    let mut crc_bytes = [0u8; 8];
    read_exact(r, &mut crc_bytes, "checksum")?;
    let mut digest = CRC64.digest();
    digest.update(&head);
    digest.update(&payload);
    let expected = digest.finalize();
    let found = u64::from_le_bytes(crc_bytes);
    if found != expected {
        return Err(StateFileError::Checksum { found, expected });
    }
    let trailing = io::copy(&mut r.take(1 << 20), &mut io::sink()).map_err(StateFileError::Io)?;
    if trailing != 0 {
        return Err(StateFileError::TrailingData(trailing));
    }
    let state = ciborium::from_reader(payload.as_slice())
        .map_err(|e| StateFileError::Decode(e.to_string()))?;
    Ok((
        Header {
            major,
            minor,
            payload_len: len,
        },
        state,
    ))
}

fn read_exact<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), StateFileError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => StateFileError::Truncated(what),
        _ => StateFileError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V1 {
        name: String,
        regs: Vec<u64>,
        blob: Vec<u8>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V1WithExtra {
        name: String,
        regs: Vec<u64>,
        blob: Vec<u8>,
        #[serde(default)]
        added_later: Option<u32>,
    }

    fn sample() -> V1 {
        V1 {
            name: "vcpu0".into(),
            regs: vec![1, 2, u64::MAX],
            blob: (0..=255).collect(),
        }
    }

    fn read_v1(bytes: &[u8]) -> Result<V1, StateFileError> {
        read(&mut &bytes[..], DEFAULT_MAX_PAYLOAD).map(|(_, s)| s)
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample());
        let (header, back): (Header, V1) = read(&mut &bytes[..], DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(back, sample());
        assert_eq!((header.major, header.minor), (FORMAT_MAJOR, FORMAT_MINOR));
    }

    #[test]
    fn fields_can_be_added_and_ignored() {
        let old = encode(&sample());
        let (_, new): (Header, V1WithExtra) = read(&mut &old[..], DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(new.added_later, None);
        let newer = encode(&V1WithExtra {
            name: "x".into(),
            regs: vec![],
            blob: vec![],
            added_later: Some(7),
        });
        assert_eq!(read_v1(&newer).unwrap().name, "x");
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    read_v1(&bad).is_err(),
                    "flip of bit {bit:#x} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            let err = read_v1(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, StateFileError::Truncated(_)),
                "length {len}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let mut bytes = encode(&sample());
        bytes[0] = b'X';
        assert!(matches!(read_v1(&bytes), Err(StateFileError::BadMagic(_))));

        let mut bytes = encode(&sample());
        bytes[8] = 9;
        let err = read_v1(&bytes).unwrap_err();
        assert!(
            err.to_string().contains("version 9.x is not supported"),
            "{err}"
        );

        let mut bytes = encode(&sample());
        bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_v1(&bytes),
            Err(StateFileError::TooLarge { .. })
        ));

        let mut bytes = encode(&sample());
        bytes.push(0);
        assert!(matches!(
            read_v1(&bytes),
            Err(StateFileError::TrailingData(1))
        ));
    }

    #[test]
    fn a_valid_file_of_the_wrong_type_fails_to_decode() {
        let bytes = encode(&vec![1u8, 2, 3]);
        assert!(matches!(read_v1(&bytes), Err(StateFileError::Decode(_))));
    }
}
