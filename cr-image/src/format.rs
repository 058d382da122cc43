//! The image format, version 1, as `include/uapi/linux/checkpoint.h`
//! defines it: constants, record types, and the fixed-size structures,
//! decoded from little-endian bytes (and encoded, for the test builder).
//!
//! Each structure is `#[repr(C)]` with the fields of its C counterpart in
//! the same order. None has implicit padding, so `size_of` is its size in
//! the image (asserted below against the C sizes) and `offset_of!` the
//! offset of a field in a record's payload, which errors point at.

use std::mem::size_of;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// `CR_IMAGE_MAGIC`: "CRCKRIMG" as a little-endian u64.
pub const IMAGE_MAGIC: u64 = 0x474d_4952_4b43_5243;
/// `CR_TRAILER_MAGIC`: "CRCKREND".
pub const TRAILER_MAGIC: u64 = 0x444e_4552_4b43_5243;
/// `CR_FORMAT_VERSION`.
pub const FORMAT_VERSION: u32 = 1;
/// `CR_ARCH_X86_64`.
pub const ARCH_X86_64: u32 = 1;
/// x86-64's page size, the only one an image can have.
pub const PAGE_SIZE: u64 = 4096;
/// `CR_ALIGN`: payloads are zero-padded to a multiple of this.
pub const ALIGN: u32 = 8;
/// `CR_MAX_RECORD`: no record payload is longer.
pub const MAX_RECORD: u32 = 64 << 20;
/// `CR_MAX_VMAS`.
pub const MAX_VMAS: u64 = 65536;
/// `CR_MAX_GROUPS` (also the kernel's `NGROUPS_MAX`).
pub const MAX_GROUPS: u32 = 65536;
/// `CR_MAX_PATH`: the longest path of a file VMA, with its NUL.
pub const MAX_PATH: u32 = 4096;
/// `CR_PAGES_PER_CHUNK`: the most pages in one pages record.
pub const PAGES_PER_CHUNK: u32 = 256;
/// `CR_RELEASE_LEN`.
pub const RELEASE_LEN: usize = 72;
/// `CR_NLIMITS`.
pub const NLIMITS: usize = 16;
/// `CR_NSIG`.
pub const NSIG: usize = 64;
/// `CR_NR_GREGS`.
pub const NR_GREGS: usize = 27;
/// `CR_AUXV_WORDS`.
pub const AUXV_WORDS: usize = 64;
/// The largest XSAVE buffer restart reads (its bound on the xstate record).
pub const MAX_XSTATE: u32 = 64 * 1024;
/// The smallest XSAVE buffer: legacy area and XSAVE header (`struct xregs_state`).
pub const MIN_XSTATE: u32 = 576;
/// The longest error message, with its NUL (the kernel's `cr_ctx.msg`).
pub const MAX_ERROR_MSG: u32 = 256;

/// `CR_PROT_*`.
pub const PROT_READ: u32 = 0x1;
/// Writable.
pub const PROT_WRITE: u32 = 0x2;
/// Executable.
pub const PROT_EXEC: u32 = 0x4;
/// Every protection bit.
pub const PROT_MASK: u32 = 0x7;

/// `CR_VMA_ANON`: private anonymous mapping.
pub const VMA_ANON: u32 = 0x01;
/// `CR_VMA_FILE`: private mapping of a file.
pub const VMA_FILE: u32 = 0x02;
/// `CR_VMA_GROWSDOWN`: a stack.
pub const VMA_GROWSDOWN: u32 = 0x04;
/// `CR_VMA_PAGES`: pages records may hit this VMA.
pub const VMA_PAGES: u32 = 0x08;
/// Every VMA flag.
pub const VMA_FLAGS_MASK: u32 = 0x0f;

/// Bytes of a record header (`struct cr_hdr`).
pub const RECORD_HEADER_LEN: u32 = 8;
/// Bytes a page takes in a pages record: its address and its data.
pub const PAGE_ENTRY_LEN: u64 = 8 + PAGE_SIZE;

/// The zero padding that follows a payload of `len` bytes.
pub fn padding(len: u32) -> u32 {
    len.wrapping_neg() & (ALIGN - 1)
}

/// `enum cr_rec_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordType {
    /// `CR_REC_HEADER`.
    Header = 1,
    /// `CR_REC_TASK`.
    Task = 2,
    /// `CR_REC_CREDS`.
    Creds = 3,
    /// `CR_REC_SIGHAND`.
    Sighand = 4,
    /// `CR_REC_REGS`.
    Regs = 5,
    /// `CR_REC_XSTATE`.
    Xstate = 6,
    /// `CR_REC_MM`.
    Mm = 7,
    /// `CR_REC_VMA`.
    Vma = 8,
    /// `CR_REC_PAGES`.
    Pages = 9,
    /// `CR_REC_ERROR`.
    Error = 10,
    /// `CR_REC_TRAILER`.
    Trailer = 11,
}

impl RecordType {
    /// The type of a record header's type field, if defined.
    pub fn from_u32(value: u32) -> Option<Self> {
        use RecordType::*;
        Some(match value {
            1 => Header,
            2 => Task,
            3 => Creds,
            4 => Sighand,
            5 => Regs,
            6 => Xstate,
            7 => Mm,
            8 => Vma,
            9 => Pages,
            10 => Error,
            11 => Trailer,
            _ => return None,
        })
    }

    /// Its name, as the kernel's log calls it.
    pub fn name(self) -> &'static str {
        use RecordType::*;
        match self {
            Header => "header",
            Task => "task",
            Creds => "creds",
            Sighand => "sighand",
            Regs => "regs",
            Xstate => "xstate",
            Mm => "mm",
            Vma => "vma",
            Pages => "pages",
            Error => "error",
            Trailer => "trailer",
        }
    }

    /// The payload lengths a record of this type may have: restart's
    /// bounds (`cr_read_hdr()`), and the writer's for the error record,
    /// which restart never reads. All are within `CR_MAX_RECORD`.
    pub fn len_bounds(self) -> (u32, u32) {
        let size = |n: usize| n as u32;
        let fixed = |n: usize| (n as u32, n as u32);
        match self {
            RecordType::Header => fixed(size_of::<ImageHeader>()),
            RecordType::Task => fixed(size_of::<Task>()),
            RecordType::Creds => {
                let min = size(size_of::<Creds>());
                (min, min + MAX_GROUPS * 4)
            }
            RecordType::Sighand => fixed(size_of::<Sighand>()),
            RecordType::Regs => fixed(size_of::<Regs>()),
            RecordType::Xstate => {
                let min = size(size_of::<XstateHeader>());
                (min, min + MAX_XSTATE)
            }
            RecordType::Mm => fixed(size_of::<Mm>()),
            RecordType::Vma => {
                let min = size(size_of::<Vma>());
                (min, min + MAX_PATH)
            }
            RecordType::Pages => {
                let min = size(size_of::<PagesHeader>());
                (min, min + PAGES_PER_CHUNK * PAGE_ENTRY_LEN as u32)
            }
            RecordType::Error => {
                let min = size(size_of::<ErrorHeader>());
                (min, min + MAX_ERROR_MSG)
            }
            RecordType::Trailer => fixed(size_of::<Trailer>()),
        }
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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

/// A little-endian cursor over a payload. Reading past the end yields
/// zeros instead of panicking; callers check lengths before decoding.
pub struct Le<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Le { bytes, pos: 0 }
    }

    /// The next `N` bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let end = self.pos.saturating_add(N);
        let out = self
            .bytes
            .get(self.pos..end)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .unwrap_or([0; N]);
        self.pos = end;
        out
    }

    /// The next u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next i32.
    pub fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }

    /// The next u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// The next i64.
    pub fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
}

/// A fixed-size structure of the image.
pub trait Wire: Sized {
    /// Its size in the image.
    const SIZE: usize = size_of::<Self>();

    /// Reads it from the cursor.
    fn decode(r: &mut Le<'_>) -> Self;

    /// Decodes it from the start of `bytes` (zeros for missing bytes).
    fn from_bytes(bytes: &[u8]) -> Self {
        Self::decode(&mut Le::new(bytes))
    }

    /// Appends it to `out`.
    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>);
}

#[cfg(any(test, feature = "builder"))]
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// A field of a structure: its name, its offset in the structure, its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    /// The field's name in the uapi header.
    pub name: &'static str,
    /// Its offset in the record payload.
    pub offset: usize,
    /// Its value.
    pub value: u64,
}

macro_rules! named {
    ($ty:ty, $self:ident . $field:ident) => {
        Named {
            name: stringify!($field),
            offset: std::mem::offset_of!($ty, $field),
            value: u64::from($self.$field),
        }
    };
}
pub(crate) use named;

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

/// `struct cr_rlimit`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// `struct cr_task`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Command name, NUL terminated.
    #[serde(serialize_with = "c_string")]
    pub comm: [u8; 16],
    /// Pid at checkpoint (a hint).
    pub pid: i32,
    /// Thread group id at checkpoint.
    pub tgid: i32,
    /// `personality(2)`.
    pub personality: u32,
    /// `CR_NLIMITS`.
    pub nr_rlimits: u32,
    /// Blocked signals, bit n-1 for signal n.
    pub blocked: u64,
    /// `sigaltstack` base.
    pub sas_ss_sp: u64,
    /// `sigaltstack` size.
    pub sas_ss_size: u64,
    /// `sigaltstack` flags.
    pub sas_ss_flags: u32,
    /// Size of the rseq area, 0 if none.
    pub rseq_len: u32,
    /// Address of the rseq area.
    pub rseq: u64,
    /// rseq signature.
    pub rseq_sig: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
    /// `set_tid_address()`.
    pub clear_child_tid: u64,
    /// `set_robust_list()` head.
    pub robust_list: u64,
    /// And its length.
    pub robust_list_len: u64,
    /// Resource limits, in `RLIMIT_*` order.
    #[serde(serialize_with = "seq")]
    pub rlim: [Rlimit; NLIMITS],
}

impl Wire for Task {
    fn decode(r: &mut Le<'_>) -> Self {
        Task {
            comm: r.array(),
            pid: r.i32(),
            tgid: r.i32(),
            personality: r.u32(),
            nr_rlimits: r.u32(),
            blocked: r.u64(),
            sas_ss_sp: r.u64(),
            sas_ss_size: r.u64(),
            sas_ss_flags: r.u32(),
            rseq_len: r.u32(),
            rseq: r.u64(),
            rseq_sig: r.u32(),
            pad: r.u32(),
            clear_child_tid: r.u64(),
            robust_list: r.u64(),
            robust_list_len: r.u64(),
            rlim: std::array::from_fn(|_| Rlimit {
                cur: r.u64(),
                max: r.u64(),
            }),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.comm);
        put(out, &self.pid.to_le_bytes());
        put(out, &self.tgid.to_le_bytes());
        put(out, &self.personality.to_le_bytes());
        put(out, &self.nr_rlimits.to_le_bytes());
        put(out, &self.blocked.to_le_bytes());
        put(out, &self.sas_ss_sp.to_le_bytes());
        put(out, &self.sas_ss_size.to_le_bytes());
        put(out, &self.sas_ss_flags.to_le_bytes());
        put(out, &self.rseq_len.to_le_bytes());
        put(out, &self.rseq.to_le_bytes());
        put(out, &self.rseq_sig.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
        put(out, &self.clear_child_tid.to_le_bytes());
        put(out, &self.robust_list.to_le_bytes());
        put(out, &self.robust_list_len.to_le_bytes());
        for l in &self.rlim {
            put(out, &l.cur.to_le_bytes());
            put(out, &l.max.to_le_bytes());
        }
    }
}

/// `struct cr_creds` (the supplementary groups follow it in the record).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Creds {
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Saved uid.
    pub suid: u32,
    /// File system uid.
    pub fsuid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Saved gid.
    pub sgid: u32,
    /// File system gid.
    pub fsgid: u32,
    /// `SECBIT_*`.
    pub securebits: u32,
    /// Supplementary groups that follow.
    pub ngroups: u32,
    /// Capability sets.
    pub cap_inheritable: u64,
    /// Permitted.
    pub cap_permitted: u64,
    /// Effective.
    pub cap_effective: u64,
    /// Bounding.
    pub cap_bset: u64,
    /// Ambient.
    pub cap_ambient: u64,
}

impl Creds {
    /// The eight ids, in order.
    pub fn ids(&self) -> [Named; 8] {
        [
            named!(Creds, self.uid),
            named!(Creds, self.euid),
            named!(Creds, self.suid),
            named!(Creds, self.fsuid),
            named!(Creds, self.gid),
            named!(Creds, self.egid),
            named!(Creds, self.sgid),
            named!(Creds, self.fsgid),
        ]
    }

    /// The five capability sets, in order.
    pub fn caps(&self) -> [Named; 5] {
        [
            named!(Creds, self.cap_inheritable),
            named!(Creds, self.cap_permitted),
            named!(Creds, self.cap_effective),
            named!(Creds, self.cap_bset),
            named!(Creds, self.cap_ambient),
        ]
    }
}

impl Wire for Creds {
    fn decode(r: &mut Le<'_>) -> Self {
        Creds {
            uid: r.u32(),
            euid: r.u32(),
            suid: r.u32(),
            fsuid: r.u32(),
            gid: r.u32(),
            egid: r.u32(),
            sgid: r.u32(),
            fsgid: r.u32(),
            securebits: r.u32(),
            ngroups: r.u32(),
            cap_inheritable: r.u64(),
            cap_permitted: r.u64(),
            cap_effective: r.u64(),
            cap_bset: r.u64(),
            cap_ambient: r.u64(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        for id in self.ids() {
            put(out, &(id.value as u32).to_le_bytes());
        }
        put(out, &self.securebits.to_le_bytes());
        put(out, &self.ngroups.to_le_bytes());
        for set in self.caps() {
            put(out, &set.value.to_le_bytes());
        }
    }
}

/// `struct cr_sigaction`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SigAction {
    /// Handler address, or `SIG_DFL` (0) / `SIG_IGN` (1).
    pub handler: u64,
    /// `SA_*`.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// `struct cr_sighand`: `action[n-1]` is signal n.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sighand {
    /// The 64 actions; shown without the default ones.
    #[serde(serialize_with = "actions")]
    pub action: [SigAction; NSIG],
}

impl Wire for Sighand {
    fn decode(r: &mut Le<'_>) -> Self {
        Sighand {
            action: std::array::from_fn(|_| SigAction {
                handler: r.u64(),
                flags: r.u64(),
                restorer: r.u64(),
                mask: r.u64(),
            }),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        for a in &self.action {
            for v in [a.handler, a.flags, a.restorer, a.mask] {
                put(out, &v.to_le_bytes());
            }
        }
    }
}

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

// The sizes of the C structures (x86-64).
const _: () = assert!(size_of::<ImageHeader>() == 120);
const _: () = assert!(size_of::<Task>() == 360);
const _: () = assert!(size_of::<Creds>() == 80);
const _: () = assert!(size_of::<Sighand>() == 2048);
const _: () = assert!(size_of::<Regs>() == 224);
const _: () = assert!(size_of::<XstateHeader>() == 16);
const _: () = assert!(size_of::<Mm>() == 624);
const _: () = assert!(size_of::<Vma>() == 40);
const _: () = assert!(size_of::<PagesHeader>() == 8);
const _: () = assert!(size_of::<ErrorHeader>() == 8);
const _: () = assert!(size_of::<Trailer>() == 24);

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

fn c_string<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c_str(v))
}

fn seq<S: Serializer, T: Serialize, const N: usize>(v: &[T; N], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v)
}

fn named_gregs<S: Serializer>(v: &[u64; NR_GREGS], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(NR_GREGS))?;
    for (name, value) in GREG_NAMES.iter().zip(v) {
        map.serialize_entry(name, value)?;
    }
    map.end()
}

fn actions<S: Serializer>(v: &[SigAction; NSIG], s: S) -> Result<S::Ok, S::Error> {
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

fn auxv_pairs<S: Serializer>(v: &[u64; AUXV_WORDS], s: S) -> Result<S::Ok, S::Error> {
    let mut list = s.serialize_seq(None)?;
    for pair in v.chunks_exact(2) {
        if pair[0] == AT_NULL {
            break;
        }
        list.serialize_element(&[pair[0], pair[1]])?;
    }
    list.end()
}
