//! Shared helpers: errno names, C strings, and the serde serializers the
//! records' `Serialize` derives use.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{SigAction, AT_NULL, AUXV_WORDS, GREG_NAMES, NR_GREGS, NSIG};

/// The name of a (negative) errno a failed checkpoint reports.
pub fn errno_name(errno: i32) -> &'static str {
    match errno.unsigned_abs() {
        1 => "EPERM",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        12 => "ENOMEM",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        27 => "EFBIG",
        28 => "ENOSPC",
        32 => "EPIPE",
        95 => "EOPNOTSUPP",
        109 => "ETOOMANYREFS",
        122 => "EDQUOT",
        _ => "an error",
    }
}

/// The text of a NUL-terminated (or full) byte array, lossily decoded.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Serializes a u64 as a hex string (magics, hashes: identifiers, and
/// beyond the 2^53 that JSON readers keep exactly).
pub(crate) fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#018x}"))
}

pub(super) fn c_string<S: Serializer, const N: usize>(
    v: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c_str(v))
}

pub(super) fn seq<S: Serializer, T: Serialize, const N: usize>(
    v: &[T; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v)
}

pub(super) fn named_gregs<S: Serializer>(v: &[u64; NR_GREGS], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(NR_GREGS))?;
    for (name, value) in GREG_NAMES.iter().zip(v) {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

pub(super) fn actions<S: Serializer>(v: &[SigAction; NSIG], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Numbered<'a> {
        signal: usize,
        #[serde(flatten)]
        action: &'a SigAction,
    }
    let mut list = s.serialize_seq(None)?;
    for (i, action) in v.iter().enumerate() {
        if *action != SigAction::default() {
            list.serialize_element(&Numbered {
                signal: i + 1,
                action,
            })?;
        }
    }
    list.end()
}

pub(super) fn auxv_pairs<S: Serializer>(v: &[u64; AUXV_WORDS], s: S) -> Result<S::Ok, S::Error> {
    let mut list = s.serialize_seq(None)?;
    for pair in v.chunks_exact(2) {
        if pair[0] == AT_NULL {
            break;
        }
        list.serialize_element(&[pair[0], pair[1]])?;
    }
    list.end()
}
