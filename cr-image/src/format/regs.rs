//! The CPU state records: the general registers (`struct cr_regs`) and the
//! header of the XSAVE buffer (`struct cr_xstate`).

use serde::Serialize;

use super::helpers::named_gregs;
#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire, NR_GREGS};

/// The general registers of `struct user_regs_struct`, in order.
pub const GREG_NAMES: [&str; NR_GREGS] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
];

/// Indexes in `Regs::gregs` of the registers restart checks.
pub mod greg {
    /// `ip`.
    pub const IP: usize = 16;
    /// `cs`.
    pub const CS: usize = 17;
    /// `sp`.
    pub const SP: usize = 19;
    /// `ss`.
    pub const SS: usize = 20;
    /// `fs_base`.
    pub const FS_BASE: usize = 21;
    /// `gs_base`.
    pub const GS_BASE: usize = 22;
    /// `ds`.
    pub const DS: usize = 23;
    /// `es`.
    pub const ES: usize = 24;
    /// `fs`.
    pub const FS: usize = 25;
    /// `gs`.
    pub const GS: usize = 26;
}

/// `struct cr_regs`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Regs {
    /// `struct user_regs_struct`, shown by register name.
    #[serde(serialize_with = "named_gregs")]
    pub gregs: [u64; NR_GREGS],
    /// Zero.
    #[serde(skip)]
    pub pad: u64,
}

impl Wire for Regs {
    fn decode(r: &mut Le<'_>) -> Self {
        Regs {
            gregs: std::array::from_fn(|_| r.u64()),
            pad: r.u64(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        for g in self.gregs.iter().chain([&self.pad]) {
            put(out, &g.to_le_bytes());
        }
    }
}

/// `struct cr_xstate` (the XSAVE buffer follows it in the record).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct XstateHeader {
    /// Features present in the buffer.
    pub xfeatures: u64,
    /// Bytes of XSAVE buffer that follow.
    pub size: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
}

/// Offset of the XSAVE header's `xfeatures` in an XSAVE buffer.
pub const XSAVE_HDR_XFEATURES: usize = 512;
/// Offset of the XSAVE header's `xcomp_bv` (0: standard format).
pub const XSAVE_HDR_XCOMP_BV: usize = 520;

impl Wire for XstateHeader {
    fn decode(r: &mut Le<'_>) -> Self {
        XstateHeader {
            xfeatures: r.u64(),
            size: r.u32(),
            pad: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.xfeatures.to_le_bytes());
        put(out, &self.size.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
    }
}
