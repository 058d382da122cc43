//! The records that frame an image: its header, the error record of a
//! failed checkpoint, and the trailer.

use serde::Serialize;

use super::helpers::{c_string, hex};
#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire, RELEASE_LEN};

/// `struct cr_image_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageHeader {
    /// `CR_IMAGE_MAGIC`.
    #[serde(serialize_with = "hex")]
    pub magic: u64,
    /// `CR_FORMAT_VERSION`.
    pub version: u32,
    /// `CR_ARCH_*`.
    pub arch: u32,
    /// Page size of the kernel that wrote it.
    pub page_size: u32,
    /// `checkpoint()` flags.
    pub flags: u32,
    /// Hash of the kernel constants that shape the image (see `kconfig`).
    #[serde(serialize_with = "hex")]
    pub config_hash: u64,
    /// `CLOCK_REALTIME` at checkpoint, seconds.
    pub time_sec: i64,
    /// And nanoseconds.
    pub time_nsec: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
    /// `uname -r` of the kernel that wrote it, NUL padded.
    #[serde(serialize_with = "c_string")]
    pub release: [u8; RELEASE_LEN],
}

impl Wire for ImageHeader {
    fn decode(r: &mut Le<'_>) -> Self {
        ImageHeader {
            magic: r.u64(),
            version: r.u32(),
            arch: r.u32(),
            page_size: r.u32(),
            flags: r.u32(),
            config_hash: r.u64(),
            time_sec: r.i64(),
            time_nsec: r.u32(),
            pad: r.u32(),
            release: r.array(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.magic.to_le_bytes());
        put(out, &self.version.to_le_bytes());
        put(out, &self.arch.to_le_bytes());
        put(out, &self.page_size.to_le_bytes());
        put(out, &self.flags.to_le_bytes());
        put(out, &self.config_hash.to_le_bytes());
        put(out, &self.time_sec.to_le_bytes());
        put(out, &self.time_nsec.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
        put(out, &self.release);
    }
}

/// `struct cr_error` (the message follows it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorHeader {
    /// Negative errno.
    pub error: i32,
    /// Bytes of message that follow, with the NUL.
    pub msg_len: u32,
}

impl Wire for ErrorHeader {
    fn decode(r: &mut Le<'_>) -> Self {
        ErrorHeader {
            error: r.i32(),
            msg_len: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.error.to_le_bytes());
        put(out, &self.msg_len.to_le_bytes());
    }
}

/// `struct cr_trailer`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Trailer {
    /// `CR_TRAILER_MAGIC`.
    #[serde(serialize_with = "hex")]
    pub magic: u64,
    /// Records before the trailer.
    pub nr_records: u64,
    /// CRC-32 of every byte before the trailer's record header.
    pub checksum: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
}

impl Wire for Trailer {
    fn decode(r: &mut Le<'_>) -> Self {
        Trailer {
            magic: r.u64(),
            nr_records: r.u64(),
            checksum: r.u32(),
            pad: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.magic.to_le_bytes());
        put(out, &self.nr_records.to_le_bytes());
        put(out, &self.checksum.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
    }
}
