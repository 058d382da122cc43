//! The image format, version 2, as `include/uapi/linux/checkpoint.h`
//! defines it: constants, record types, and the fixed-size structures,
//! decoded from little-endian bytes (and encoded, for the test builder).
//!
//! Each structure is `#[repr(C)]` with the fields of its C counterpart in
//! the same order. None has implicit padding, so `size_of` is its size in
//! the image (asserted below against the C sizes) and `offset_of!` the
//! offset of a field in a record's payload, which errors point at.

use std::mem::size_of;

mod files;
mod header;
mod helpers;
mod mm;
mod record;
mod regs;
mod signals;
mod task;
mod thread;
mod timers;
mod wire;

pub use files::{
    file_kind_name, File, Files, CHECKPOINT_FLAGS_MASK, CHECKPOINT_INHERIT_STDIO, FD_CLOEXEC,
    FILE_CHR, FILE_DELETED, FILE_DIR, FILE_EVENTFD, FILE_FLAGS_MASK, FILE_INHERIT, FILE_PIPE,
    FILE_REG, FILE_UNIX, MAX_DELETED, MAX_FD, MAX_FILES, O_ACCMODE, O_APPEND, O_DIRECT, O_NONBLOCK,
    O_RDONLY, O_RDWR, O_WRONLY,
};
pub use header::{ErrorHeader, ImageHeader, Trailer};
pub(crate) use helpers::hex;
pub use helpers::{c_str, errno_name};
pub use mm::{Mm, PagesHeader, Vma, AT_NULL};
pub use record::RecordType;
pub use regs::{greg, Regs, XstateHeader, GREG_NAMES, XSAVE_HDR_XCOMP_BV, XSAVE_HDR_XFEATURES};
pub use signals::{
    Itimer, Siginfo, SignalsHeader, ITIMER_NAMES, SIGINFO_KEPT, SI_CODE, SI_ERRNO, SI_SIGNO,
};
pub use task::{Creds, Rlimit, SigAction, Sighand, Task};
pub use thread::{
    restart_kind_name, Restart, Thread, FUTEX_CLOCKRT, FUTEX_FLAGS_MASK, FUTEX_SHARED,
    RESTART_FUTEX, RESTART_NANOSLEEP, RESTART_NONE, RESTART_POLL,
};
pub use timers::{PosixTimer, MAX_TIMERS, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID, TIMER_CLOCKS};
pub(crate) use wire::named;
pub use wire::{Le, Named, Wire};

/// `CR_IMAGE_MAGIC`: "CRCKRIMG" as a little-endian u64.
pub const IMAGE_MAGIC: u64 = 0x474d_4952_4b43_5243;
/// `CR_TRAILER_MAGIC`: "CRCKREND".
pub const TRAILER_MAGIC: u64 = 0x444e_4552_4b43_5243;
/// `CR_FORMAT_VERSION`.
pub const FORMAT_VERSION: u32 = 5;
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
/// `CR_MAX_PATH`: the longest path (of a file VMA, the working directory,
/// an open file), with its NUL.
pub const MAX_PATH: u32 = 4096;
/// `CR_PAGES_PER_CHUNK`: the most pages in one pages record.
pub const PAGES_PER_CHUNK: u32 = 256;
/// `CR_RELEASE_LEN`.
pub const RELEASE_LEN: usize = 72;
/// `CR_NLIMITS`.
pub const NLIMITS: usize = 16;
/// `CR_NSIG`.
pub const NSIG: usize = 64;
/// `CR_MAX_THREADS`: the most threads an image holds.
pub const MAX_THREADS: u32 = 4096;
/// `CR_MAX_PENDING`: the most queued signals in one image (all records).
pub const MAX_PENDING: u32 = 65536;
/// `CR_SIGINFO_SIZE`: bytes of a queued signal (user `siginfo_t`).
pub const SIGINFO_SIZE: usize = 128;
/// `CR_NR_ITIMERS`: `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`.
pub const NR_ITIMERS: usize = 3;
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
/// `CR_VMA_SHMEM`: shared anonymous memory, provided at restart.
pub const VMA_SHMEM: u32 = 0x10;
/// `CR_VMA_SYSV`: a SysV shm segment attached whole.
pub const VMA_SYSV: u32 = 0x20;
/// `CR_VMA_EXE`: a file mapping of the executable (`/proc/PID/exe`).
pub const VMA_EXE: u32 = 0x40;
/// Every VMA flag.
pub const VMA_FLAGS_MASK: u32 = 0x7f;

/// Bytes of a record header (`struct cr_hdr`).
pub const RECORD_HEADER_LEN: u32 = 8;
/// Bytes a page takes in a pages record: its address and its data.
pub const PAGE_ENTRY_LEN: u64 = 8 + PAGE_SIZE;

/// The zero padding that follows a payload of `len` bytes.
pub fn padding(len: u32) -> u32 {
    len.wrapping_neg() & (ALIGN - 1)
}

// The sizes of the C structures (x86-64).
const _: () = assert!(size_of::<ImageHeader>() == 120);
const _: () = assert!(size_of::<Task>() == 296);
const _: () = assert!(size_of::<Thread>() == 136);
const _: () = assert!(size_of::<Restart>() == 40);
const _: () = assert!(size_of::<SignalsHeader>() == 56);
const _: () = assert!(size_of::<Itimer>() == 16);
const _: () = assert!(size_of::<PosixTimer>() == 48);
const _: () = assert!(size_of::<Siginfo>() == SIGINFO_SIZE);
const _: () = assert!(size_of::<Files>() == 8);
const _: () = assert!(size_of::<File>() == 48);
const _: () = assert!(size_of::<Creds>() == 80);
const _: () = assert!(size_of::<Sighand>() == 2048);
const _: () = assert!(size_of::<Regs>() == 224);
const _: () = assert!(size_of::<XstateHeader>() == 16);
const _: () = assert!(size_of::<Mm>() == 624);
const _: () = assert!(size_of::<Vma>() == 48);
const _: () = assert!(size_of::<PagesHeader>() == 8);
const _: () = assert!(size_of::<ErrorHeader>() == 8);
const _: () = assert!(size_of::<Trailer>() == 24);
// A thread record with the most queued signals is within `CR_MAX_RECORD`.
const _: () =
    assert!(size_of::<Thread>() + MAX_PENDING as usize * SIGINFO_SIZE <= MAX_RECORD as usize);
