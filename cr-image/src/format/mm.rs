//! The address space records: `struct cr_mm`, the VMAs (`struct cr_vma`)
//! and the header of a pages record (`struct cr_pages`).

use serde::Serialize;

use super::helpers::auxv_pairs;
#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{named, Le, Named, Wire, AUXV_WORDS};

/// `AT_NULL`, the auxiliary vector's terminator.
pub const AT_NULL: u64 = 0;

/// `struct cr_mm`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mm {
    /// Text start.
    pub start_code: u64,
    /// Text end.
    pub end_code: u64,
    /// Data start.
    pub start_data: u64,
    /// Data end.
    pub end_data: u64,
    /// Heap start.
    pub start_brk: u64,
    /// Program break.
    pub brk: u64,
    /// Stack start.
    pub start_stack: u64,
    /// Arguments start.
    pub arg_start: u64,
    /// Arguments end.
    pub arg_end: u64,
    /// Environment start.
    pub env_start: u64,
    /// Environment end.
    pub env_end: u64,
    /// vDSO text start, 0 if none.
    pub vdso: u64,
    /// vvar start (below the text).
    pub vvar: u64,
    /// VMA records that follow.
    pub nr_vmas: u64,
    /// Auxiliary vector; shown as (type, value) pairs up to `AT_NULL`.
    #[serde(serialize_with = "auxv_pairs")]
    pub auxv: [u64; AUXV_WORDS],
}

impl Mm {
    /// The bounds that must be ordered ranges in user space: (start, end)
    /// pairs; `start_stack` is a range of its own.
    pub fn ranges(&self) -> [(Named, Named); 6] {
        [
            (named!(Mm, self.start_code), named!(Mm, self.end_code)),
            (named!(Mm, self.start_data), named!(Mm, self.end_data)),
            (named!(Mm, self.start_brk), named!(Mm, self.brk)),
            (named!(Mm, self.start_stack), named!(Mm, self.start_stack)),
            (named!(Mm, self.arg_start), named!(Mm, self.arg_end)),
            (named!(Mm, self.env_start), named!(Mm, self.env_end)),
        ]
    }
}

impl Wire for Mm {
    fn decode(r: &mut Le<'_>) -> Self {
        Mm {
            start_code: r.u64(),
            end_code: r.u64(),
            start_data: r.u64(),
            end_data: r.u64(),
            start_brk: r.u64(),
            brk: r.u64(),
            start_stack: r.u64(),
            arg_start: r.u64(),
            arg_end: r.u64(),
            env_start: r.u64(),
            env_end: r.u64(),
            vdso: r.u64(),
            vvar: r.u64(),
            nr_vmas: r.u64(),
            auxv: std::array::from_fn(|_| r.u64()),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        let words = [
            self.start_code,
            self.end_code,
            self.start_data,
            self.end_data,
            self.start_brk,
            self.brk,
            self.start_stack,
            self.arg_start,
            self.arg_end,
            self.env_start,
            self.env_end,
            self.vdso,
            self.vvar,
            self.nr_vmas,
        ];
        for w in words.iter().chain(&self.auxv) {
            put(out, &w.to_le_bytes());
        }
    }
}

/// `struct cr_vma` (a file VMA's path follows it in the record).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// Address after the last.
    pub end: u64,
    /// File offset in pages (file mappings).
    pub pgoff: u64,
    /// `CR_PROT_*`.
    pub prot: u32,
    /// `CR_VMA_*`.
    pub flags: u32,
    /// Bytes of path that follow, with the NUL.
    pub path_len: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
    /// `CR_VMA_SHMEM`: the shared anonymous object (its inode number);
    /// `CR_VMA_SYSV`: the segment's id; else zero.
    pub shm_id: u64,
}

impl Wire for Vma {
    fn decode(r: &mut Le<'_>) -> Self {
        Vma {
            start: r.u64(),
            end: r.u64(),
            pgoff: r.u64(),
            prot: r.u32(),
            flags: r.u32(),
            path_len: r.u32(),
            pad: r.u32(),
            shm_id: r.u64(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.start.to_le_bytes());
        put(out, &self.end.to_le_bytes());
        put(out, &self.pgoff.to_le_bytes());
        put(out, &self.prot.to_le_bytes());
        put(out, &self.flags.to_le_bytes());
        put(out, &self.path_len.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
        put(out, &self.shm_id.to_le_bytes());
    }
}

/// `struct cr_pages` (addresses, then page data, follow it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagesHeader {
    /// Pages in the record; 0 ends the page data.
    pub nr_pages: u32,
    /// Zero.
    pub pad: u32,
}

impl Wire for PagesHeader {
    fn decode(r: &mut Le<'_>) -> Self {
        PagesHeader {
            nr_pages: r.u32(),
            pad: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.nr_pages.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
    }
}
