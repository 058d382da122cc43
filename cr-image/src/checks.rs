//! The field checks of each record, as `restart(2)` makes them
//! (`kernel/checkpoint/restart.c` and `cr_check_header()`,
//! `cr_read_trailer()` of `image.c`), for what the host can judge. They
//! are pure: the record's bytes and position in, the decoded record or the
//! error that names the field out. What depends on earlier records (record
//! order, thread count and ids, VMA order, page addresses) is `verify`'s.
//! The records of threads and signals are checked in `thread`, those of
//! open files in `files`.

use std::mem::{offset_of, size_of};

use crate::format::{
    c_str, greg, named, Creds, ErrorHeader, ImageHeader, Le, Mm, Named, PagesHeader, RecordType,
    Regs, Sighand, Task, Trailer, Vma, Wire, XstateHeader, ARCH_X86_64, AT_NULL,
    CHECKPOINT_FLAGS_MASK, FORMAT_VERSION, GREG_NAMES, IMAGE_MAGIC, MAX_GROUPS, MAX_THREADS,
    MAX_VMAS, MIN_XSTATE, PAGES_PER_CHUNK, PAGE_ENTRY_LEN, PAGE_SIZE, PROT_MASK, PROT_READ,
    TRAILER_MAGIC, VMA_ANON, VMA_EXE, VMA_FILE, VMA_FLAGS_MASK, VMA_GROWSDOWN, VMA_PAGES,
    VMA_SHMEM, VMA_SYSV, XSAVE_HDR_XCOMP_BV, XSAVE_HDR_XFEATURES,
};
use crate::{At, ImageError};

mod files;
mod thread;
mod timers;

pub(crate) use files::{file, files, FileCheck};
pub(crate) use thread::{signals, thread};

/// The values of Linux 6.12 on x86-64 (the pinned guest kernel) that
/// restart checks records against.
pub(crate) mod linux {
    /// `__USER_CS`: the 64-bit user code segment.
    pub const USER_CS: u64 = 0x33;
    /// `__USER_DS`.
    pub const USER_DS: u64 = 0x2b;
    /// `SS_AUTODISARM`, the one flag restart takes in `sas_ss_flags`.
    pub const SS_AUTODISARM: u32 = 1 << 31;
    /// `SS_ONSTACK`: a sigaltstack mode (the thread is running on it).
    pub const SS_ONSTACK: u32 = 1;
    /// `SS_DISABLE`: the sigaltstack mode of no alternate stack.
    pub const SS_DISABLE: u32 = 2;
    /// `SI_TIMER`: the `si_code` of a POSIX timer's signal.
    pub const SI_TIMER: i32 = -2;
    /// The clocks a nanosleep restart block may be on: `CLOCK_REALTIME`,
    /// `CLOCK_MONOTONIC`, `CLOCK_BOOTTIME`, `CLOCK_TAI`.
    pub const NANOSLEEP_CLOCKS: [u32; 4] = [0, 1, 7, 11];
    /// The most descriptors a poll restart block may wait on.
    pub const POLL_MAX_NFDS: u32 = 1 << 20;
    /// `KTIME_MAX`: the latest time, in nanoseconds.
    pub const KTIME_MAX: u64 = i64::MAX as u64;
    /// `PER_MASK`.
    pub const PER_MASK: u32 = 0xff;
    /// `PER_LINUX`.
    pub const PER_LINUX: u32 = 0;
    /// `RLIMIT_NOFILE`.
    pub const RLIMIT_NOFILE: usize = 7;
    /// `fs.nr_open`'s default.
    pub const NR_OPEN_DEFAULT: u64 = 1 << 20;
    /// `sysctl_nr_open_max`: `fs.nr_open` cannot be set higher.
    pub const NR_OPEN_MAX: u64 = 0x7fff_ffc0;
    /// `ORIG_RSEQ_SIZE`: the smallest rseq area.
    pub const RSEQ_MIN_LEN: u32 = 32;
    /// `__alignof__(struct rseq)`.
    pub const RSEQ_ALIGN: u64 = 32;
    /// `CAP_VALID_MASK`: capabilities 0 to `CAP_LAST_CAP` (40).
    pub const CAP_VALID_MASK: u64 = (1 << 41) - 1;
    /// `SECURE_ALL_BITS | SECURE_ALL_LOCKS`.
    pub const SECUREBITS_MASK: u32 = 0xff;
    /// `(uid_t)-1`, which no user namespace maps.
    pub const INVALID_ID: u32 = u32::MAX;
    /// `SIG_ERR`, a handler value restart lets through.
    pub const SIG_ERR: u64 = u64::MAX;
    /// Signals whose action cannot change (`sig_kernel_only`).
    pub const KERNEL_ONLY: [(usize, &str); 2] = [(9, "SIGKILL"), (19, "SIGSTOP")];
}

use linux::*;

/// The record being checked: where its payload is, and the end of user
/// space the image is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub record: u64,
    pub kind: RecordType,
    pub payload: u64,
    pub task_size: u64,
}

impl Ctx {
    /// The position of the byte `off` of the payload.
    pub fn at(&self, off: usize) -> At {
        At {
            record: self.record,
            kind: Some(self.kind),
            offset: self.payload.saturating_add(off as u64),
        }
    }

    /// A field error at `off`.
    pub fn field(
        &self,
        off: usize,
        field: impl Into<String>,
        value: u64,
        problem: impl Into<String>,
    ) -> ImageError {
        ImageError::Field {
            at: self.at(off),
            field: field.into(),
            value,
            problem: problem.into(),
        }
    }

    fn bad(&self, f: Named, problem: impl Into<String>) -> ImageError {
        self.field(f.offset, f.name, f.value, problem)
    }

    fn beyond(&self, off: usize, field: impl Into<String>, value: u64) -> ImageError {
        ImageError::BeyondUserSpace {
            at: self.at(off),
            field: field.into(),
            value,
            limit: self.task_size,
        }
    }

    /// An address restart requires below `TASK_SIZE` (`>= TASK_SIZE` fails).
    fn user_address(&self, f: Named) -> Result<(), ImageError> {
        if f.value >= self.task_size {
            return Err(self.beyond(f.offset, f.name, f.value));
        }
        Ok(())
    }

    /// The kernel's `cr_user_range(start, end)`: `start <= end <= TASK_SIZE`.
    fn user_range(&self, start: Named, end: Named) -> Result<(), ImageError> {
        if start.value > end.value {
            return Err(self.bad(end, format!("below {} {:#x}", start.name, start.value)));
        }
        if end.value > self.task_size {
            return Err(self.beyond(end.offset, end.name, end.value));
        }
        Ok(())
    }

    fn zero(&self, f: Named) -> Result<(), ImageError> {
        if f.value != 0 {
            return Err(self.bad(f, "must be zero"));
        }
        Ok(())
    }

    /// A record length that disagrees with the count in field `f`.
    fn length_mismatch(&self, f: Named, len: u32, expected: u64) -> ImageError {
        ImageError::LengthMismatch {
            at: self.at(f.offset),
            len,
            expected,
        }
    }
}

/// `cr_check_header()`, less what needs the restarting kernel (release,
/// config hash), which `verify` reports.
pub(crate) fn header(ctx: &Ctx, payload: &[u8]) -> Result<ImageHeader, ImageError> {
    let h = ImageHeader::from_bytes(payload);
    if h.magic != IMAGE_MAGIC {
        let at = ctx.at(offset_of!(ImageHeader, magic));
        return Err(ImageError::BadMagic { at, found: h.magic });
    }
    if h.version != FORMAT_VERSION {
        let at = ctx.at(offset_of!(ImageHeader, version));
        return Err(ImageError::Version {
            at,
            found: h.version,
        });
    }
    if h.arch != ARCH_X86_64 {
        let at = ctx.at(offset_of!(ImageHeader, arch));
        return Err(ImageError::Arch { at, found: h.arch });
    }
    if u64::from(h.page_size) != PAGE_SIZE {
        let at = ctx.at(offset_of!(ImageHeader, page_size));
        return Err(ImageError::PageSize {
            at,
            found: h.page_size,
        });
    }
    if !h.release.contains(&0) {
        let off = offset_of!(ImageHeader, release);
        return Err(ctx.field(off, "release", h.release.len() as u64, "not NUL-terminated"));
    }
    if h.flags & !CHECKPOINT_FLAGS_MASK != 0 {
        let f = named!(ImageHeader, h.flags);
        let problem =
            "unknown checkpoint flags (only CR_CHECKPOINT_INHERIT_STDIO, 0x1, is defined)";
        return Err(ctx.bad(f, problem));
    }
    ctx.zero(named!(ImageHeader, h.pad))?;
    Ok(h)
}

/// `cr_read_task()`, less the permission to raise hard limits. What v1
/// checked here of the thread (sigaltstack, rseq, tid address, robust
/// list) is `thread::thread`'s now.
pub(crate) fn task(ctx: &Ctx, payload: &[u8]) -> Result<Task, ImageError> {
    let t = Task::from_bytes(payload);
    if !t.comm.contains(&0) {
        let off = offset_of!(Task, comm);
        return Err(ctx.field(off, "comm", t.comm.len() as u64, "not NUL-terminated"));
    }
    ctx.zero(named!(Task, t.pad))?;
    let nr = named!(Task, t.nr_rlimits);
    if nr.value != crate::format::NLIMITS as u64 {
        return Err(ctx.bad(nr, "must be 16 (RLIM_NLIMITS)"));
    }
    let threads = named!(Task, t.nr_threads);
    if t.nr_threads == 0 || t.nr_threads > MAX_THREADS {
        return Err(ctx.bad(threads, "not 1 to CR_MAX_THREADS (4096) threads"));
    }
    if t.personality & PER_MASK != PER_LINUX {
        let f = named!(Task, t.personality);
        return Err(ctx.bad(f, "restart supports only the PER_LINUX personality"));
    }
    for (i, l) in t.rlim.iter().enumerate() {
        let off = offset_of!(Task, rlim) + i * 16;
        if l.cur > l.max {
            let problem = format!("above the hard limit {:#x}", l.max);
            return Err(ctx.field(off, format!("rlim[{i}].cur"), l.cur, problem));
        }
        if i == RLIMIT_NOFILE && l.max > NR_OPEN_MAX {
            let problem = "above the largest fs.nr_open (0x7fffffc0)";
            return Err(ctx.field(off + 8, format!("rlim[{i}].max"), l.max, problem));
        }
    }
    Ok(t)
}

/// `cr_user_range(base, base + len)` with the sum checked for overflow.
fn range_from(ctx: &Ctx, base: Named, len: Named, name: &'static str) -> Result<(), ImageError> {
    match base.value.checked_add(len.value) {
        None => Err(ctx.bad(len, format!("{name} overflows"))),
        Some(end) => ctx.user_range(
            base,
            Named {
                name,
                offset: len.offset,
                value: end,
            },
        ),
    }
}

/// `cr_read_creds()`, less the permission to take ids and capabilities.
pub(crate) fn creds(ctx: &Ctx, payload: &[u8], len: u32) -> Result<(Creds, Vec<u32>), ImageError> {
    let c = Creds::from_bytes(payload);
    let ngroups = named!(Creds, c.ngroups);
    if c.ngroups > MAX_GROUPS {
        return Err(ctx.bad(ngroups, "more than NGROUPS_MAX (65536) groups"));
    }
    let expected = size_of::<Creds>() as u64 + u64::from(c.ngroups) * 4;
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(ngroups, len, expected));
    }
    let groups: Vec<u32> = payload
        .get(size_of::<Creds>()..)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|g| u32::from_le_bytes([g[0], g[1], g[2], g[3]]))
        .collect();
    for (i, &g) in groups.iter().enumerate() {
        if g == INVALID_ID {
            let off = size_of::<Creds>() + i * 4;
            return Err(ctx.field(off, format!("groups[{i}]"), g.into(), "not a valid id"));
        }
    }
    for id in c.ids() {
        if id.value == u64::from(INVALID_ID) {
            return Err(ctx.bad(id, "not a valid id"));
        }
    }
    for set in c.caps() {
        if set.value & !CAP_VALID_MASK != 0 {
            return Err(ctx.bad(set, "capabilities beyond CAP_LAST_CAP (40)"));
        }
    }
    if c.securebits & !SECUREBITS_MASK != 0 {
        return Err(ctx.bad(named!(Creds, c.securebits), "unknown securebits"));
    }
    Ok((c, groups))
}

/// `cr_read_sighand()`.
pub(crate) fn sighand(ctx: &Ctx, payload: &[u8]) -> Result<Sighand, ImageError> {
    let s = Sighand::from_bytes(payload);
    for (i, a) in s.action.iter().enumerate() {
        let off = offset_of!(Sighand, action) + i * 32;
        if a.handler >= ctx.task_size && a.handler != SIG_ERR {
            return Err(ctx.beyond(off, format!("action[{i}].handler"), a.handler));
        }
        if a.restorer >= ctx.task_size {
            return Err(ctx.beyond(off + 16, format!("action[{i}].restorer"), a.restorer));
        }
        if a.flags > u64::from(u32::MAX) {
            let field = format!("action[{i}].flags");
            return Err(ctx.field(off + 8, field, a.flags, "wider than 32 bits"));
        }
        if let Some((_, name)) = KERNEL_ONLY.iter().find(|(sig, _)| *sig == i + 1) {
            if a.handler != 0 {
                let problem = format!("the action of {name} cannot be changed");
                return Err(ctx.field(off, format!("action[{i}].handler"), a.handler, problem));
            }
        }
    }
    Ok(s)
}

/// The general registers of `cr_read_regs()`.
pub(crate) fn regs(ctx: &Ctx, payload: &[u8]) -> Result<Regs, ImageError> {
    let r = Regs::from_bytes(payload);
    let reg = |i: usize| Named {
        name: GREG_NAMES[i],
        offset: i * 8,
        value: r.gregs[i],
    };
    for i in [greg::IP, greg::SP, greg::FS_BASE, greg::GS_BASE] {
        ctx.user_address(reg(i))?;
    }
    ctx.zero(named!(Regs, r.pad))?;
    let flat = "restart supports only 64-bit flat user segments";
    if r.gregs[greg::CS] != USER_CS {
        return Err(ctx.bad(reg(greg::CS), format!("{flat} (cs {USER_CS:#x})")));
    }
    if r.gregs[greg::SS] != USER_DS {
        return Err(ctx.bad(reg(greg::SS), format!("{flat} (ss {USER_DS:#x})")));
    }
    for i in [greg::DS, greg::ES, greg::FS, greg::GS] {
        if r.gregs[i] != 0 {
            return Err(ctx.bad(reg(i), format!("{flat} (0)")));
        }
    }
    Ok(r)
}

/// What `cr_read_regs()` checks of the XSAVE record without the CPU: the
/// record's own consistency. Size and features against the CPU are notes.
pub(crate) fn xstate(ctx: &Ctx, payload: &[u8], len: u32) -> Result<XstateHeader, ImageError> {
    let x = XstateHeader::from_bytes(payload);
    ctx.zero(named!(XstateHeader, x.pad))?;
    let size = named!(XstateHeader, x.size);
    if x.size < MIN_XSTATE {
        let problem = "smaller than an XSAVE buffer's legacy area and header (576 bytes)";
        return Err(ctx.bad(size, problem));
    }
    let expected = size_of::<XstateHeader>() as u64 + u64::from(x.size);
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(size, len, expected));
    }
    let word = |off: usize| {
        let at = size_of::<XstateHeader>() + off;
        (at, Le::new(payload.get(at..).unwrap_or_default()).u64())
    };
    let (off, xfeatures) = word(XSAVE_HDR_XFEATURES);
    if xfeatures != x.xfeatures {
        let problem = format!("differs from the record's xfeatures {:#x}", x.xfeatures);
        return Err(ctx.field(off, "xsave.header.xfeatures", xfeatures, problem));
    }
    let (off, xcomp_bv) = word(XSAVE_HDR_XCOMP_BV);
    if xcomp_bv != 0 {
        let problem = "compacted XSAVE format; restart takes the standard one";
        return Err(ctx.field(off, "xsave.header.xcomp_bv", xcomp_bv, problem));
    }
    Ok(x)
}

/// `cr_read_mm()`. `auxv_words` is the restarting kernel's `AT_VECTOR_SIZE`.
/// The vDSO text's size is the kernel build's: one page at least is
/// assumed.
pub(crate) fn mm(ctx: &Ctx, payload: &[u8], auxv_words: usize) -> Result<Mm, ImageError> {
    let m = Mm::from_bytes(payload);
    for (start, end) in m.ranges() {
        ctx.user_range(start, end)?;
    }
    if m.vdso != 0 {
        let vvar = named!(Mm, m.vvar);
        if !m.vvar.is_multiple_of(PAGE_SIZE) {
            return Err(ctx.bad(vvar, "not page aligned"));
        }
        if m.vvar >= m.vdso || !(m.vdso - m.vvar).is_multiple_of(PAGE_SIZE) {
            let problem = format!("not whole pages below the vDSO {:#x}", m.vdso);
            return Err(ctx.bad(vvar, problem));
        }
        let vdso = named!(Mm, m.vdso);
        let vdso_end = Named {
            name: "vdso + one page",
            value: m.vdso.saturating_add(PAGE_SIZE),
            ..vdso
        };
        ctx.user_range(vvar, vdso_end)?;
    }
    let terminated = m
        .auxv
        .iter()
        .step_by(2)
        .take(auxv_words.div_ceil(2))
        .any(|&w| w == AT_NULL);
    if !terminated {
        let off = offset_of!(Mm, auxv);
        let problem = format!("no AT_NULL within the first {auxv_words} words (AT_VECTOR_SIZE)");
        return Err(ctx.field(off, "auxv", m.auxv[0], problem));
    }
    let nr_vmas = named!(Mm, m.nr_vmas);
    if m.nr_vmas > MAX_VMAS {
        return Err(ctx.bad(nr_vmas, "more than CR_MAX_VMAS (65536)"));
    }
    Ok(m)
}

/// The vDSO area of the mm record: `[vvar, vdso + one page)` at least.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VdsoArea {
    pub vvar: u64,
    pub vdso: u64,
}

/// `cr_read_vma()`, less opening the file. `prev_end`: the end of the
/// previous VMA (0 for the first).
pub(crate) fn vma(
    ctx: &Ctx,
    payload: &[u8],
    len: u32,
    prev_end: u64,
    vdso: Option<VdsoArea>,
) -> Result<(Vma, Option<String>), ImageError> {
    let v = Vma::from_bytes(payload);
    let start = named!(Vma, v.start);
    let end = named!(Vma, v.end);
    for f in [start, end] {
        if !f.value.is_multiple_of(PAGE_SIZE) {
            return Err(ctx.bad(f, "not page aligned"));
        }
    }
    if v.start >= v.end {
        return Err(ctx.bad(end, format!("not above start {:#x}", v.start)));
    }
    if v.end > ctx.task_size {
        return Err(ctx.beyond(end.offset, end.name, end.value));
    }
    if v.start < prev_end {
        return Err(ImageError::VmaOrder {
            at: ctx.at(start.offset),
            start: v.start,
            prev_end,
        });
    }
    if v.start < PAGE_SIZE {
        return Err(ctx.bad(start, "in the first page"));
    }
    if v.prot & !PROT_MASK != 0 {
        return Err(ctx.bad(named!(Vma, v.prot), "unknown protection bits"));
    }
    let flags = named!(Vma, v.flags);
    if v.flags & !VMA_FLAGS_MASK != 0 {
        return Err(ctx.bad(flags, "unknown VMA flags"));
    }
    ctx.zero(named!(Vma, v.pad))?;
    let kind = v.flags & (VMA_ANON | VMA_FILE | VMA_SHMEM | VMA_SYSV);
    if ![VMA_ANON, VMA_FILE, VMA_SHMEM, VMA_SYSV].contains(&kind) {
        return Err(ctx.bad(
            flags,
            "not exactly one of CR_VMA_ANON, FILE, SHMEM and SYSV",
        ));
    }
    let path_len = named!(Vma, v.path_len);
    let shm_id = named!(Vma, v.shm_id);
    if v.flags & VMA_EXE != 0 && kind != VMA_FILE {
        return Err(ctx.bad(flags, "only a file mapping is the executable"));
    }
    let shared = kind == VMA_SHMEM || kind == VMA_SYSV;
    if !shared && v.shm_id != 0 {
        return Err(ctx.bad(shm_id, "only a shared mapping names an object"));
    }
    if shared {
        shared_vma(ctx, &v)?;
    } else if kind == VMA_FILE {
        if v.flags & VMA_GROWSDOWN != 0 {
            return Err(ctx.bad(flags, "a file mapping cannot grow down"));
        }
        if v.path_len < 2 {
            return Err(ctx.bad(path_len, "a file mapping needs a path"));
        }
        end_offset_fits(ctx, &v)?;
    } else if v.path_len != 0 {
        return Err(ctx.bad(path_len, "an anonymous mapping has no path"));
    } else if v.pgoff != 0 {
        return Err(ctx.bad(named!(Vma, v.pgoff), "an anonymous mapping has no offset"));
    }
    let expected = size_of::<Vma>() as u64 + u64::from(v.path_len);
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(path_len, len, expected));
    }
    if let Some(area) = vdso {
        if v.start < area.vdso.saturating_add(PAGE_SIZE) && v.end > area.vvar {
            let problem = format!("overlaps the vDSO area from {:#x}", area.vvar);
            return Err(ctx.bad(start, problem));
        }
    }
    if kind != VMA_FILE {
        return Ok((v, None));
    }
    let path = payload.get(size_of::<Vma>()..).unwrap_or_default();
    let off = size_of::<Vma>();
    if path.iter().position(|&b| b == 0) != Some(path.len().saturating_sub(1)) {
        let problem = "not one NUL-terminated string of path_len bytes";
        return Err(ctx.field(off, "path", path.len() as u64, problem));
    }
    if path.first() != Some(&b'/') {
        return Err(ctx.field(off, "path", path.len() as u64, "not an absolute path"));
    }
    Ok((v, Some(c_str(path))))
}

/// A second VMA flagged `CR_VMA_EXE` (restart takes one at most).
pub(crate) fn second_exe(ctx: &Ctx, v: &Vma) -> ImageError {
    ctx.bad(
        named!(Vma, v.flags),
        "a second mapping of the executable (CR_VMA_EXE)",
    )
}

/// The largest file offset (`MAX_LFS_FILESIZE` on 64-bit).
const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;

/// What `cr_shared_vma_valid()` checks of a shared mapping.
fn shared_vma(ctx: &Ctx, v: &Vma) -> Result<(), ImageError> {
    let flags = named!(Vma, v.flags);
    if v.flags & (VMA_GROWSDOWN | VMA_PAGES) != 0 {
        return Err(ctx.bad(flags, "a shared mapping neither grows down nor has pages"));
    }
    if v.path_len != 0 {
        return Err(ctx.bad(named!(Vma, v.path_len), "a shared mapping has no path"));
    }
    if v.flags & VMA_SYSV != 0 {
        if v.pgoff != 0 {
            return Err(ctx.bad(named!(Vma, v.pgoff), "a SysV segment is mapped whole"));
        }
        if v.shm_id > i32::MAX as u64 {
            return Err(ctx.bad(named!(Vma, v.shm_id), "not a SysV id"));
        }
        if v.prot & PROT_READ == 0 {
            return Err(ctx.bad(named!(Vma, v.prot), "a SysV segment is mapped readable"));
        }
    } else {
        end_offset_fits(ctx, v)?;
    }
    Ok(())
}

/// The offset of a mapping's end is a file offset `mmap()` takes.
fn end_offset_fits(ctx: &Ctx, v: &Vma) -> Result<(), ImageError> {
    let pages = (v.end - v.start) / PAGE_SIZE;
    if v.pgoff > (MAX_LFS_FILESIZE / PAGE_SIZE) - pages {
        return Err(ctx.bad(named!(Vma, v.pgoff), "the mapping's end offset overflows"));
    }
    Ok(())
}

/// The fixed part of a pages record (`cr_fill_pages()`); returns the count.
pub(crate) fn pages_header(ctx: &Ctx, p: &PagesHeader, len: u32) -> Result<u32, ImageError> {
    let nr = named!(PagesHeader, p.nr_pages);
    if p.nr_pages > PAGES_PER_CHUNK {
        return Err(ImageError::TooManyPages {
            at: ctx.at(nr.offset),
            nr_pages: p.nr_pages,
        });
    }
    ctx.zero(named!(PagesHeader, p.pad))?;
    let expected = size_of::<PagesHeader>() as u64 + u64::from(p.nr_pages) * PAGE_ENTRY_LEN;
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(nr, len, expected));
    }
    Ok(p.nr_pages)
}

/// An error record: its errno and message. Restart refuses the image at
/// this record; the writer never makes one longer than its log line.
pub(crate) fn error(ctx: &Ctx, payload: &[u8], len: u32) -> Result<(i32, String), ImageError> {
    let e = ErrorHeader::from_bytes(payload);
    let expected = size_of::<ErrorHeader>() as u64 + u64::from(e.msg_len);
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(named!(ErrorHeader, e.msg_len), len, expected));
    }
    let message = c_str(payload.get(size_of::<ErrorHeader>()..).unwrap_or_default());
    Ok((e.error, message))
}

/// `cr_read_trailer()`: `counted` records came before it, whose bytes
/// have the CRC-32 `crc`.
pub(crate) fn trailer(
    ctx: &Ctx,
    payload: &[u8],
    counted: u64,
    crc: u32,
) -> Result<Trailer, ImageError> {
    let t = Trailer::from_bytes(payload);
    if t.magic != TRAILER_MAGIC {
        let at = ctx.at(offset_of!(Trailer, magic));
        return Err(ImageError::TrailerMagic { at, found: t.magic });
    }
    if t.nr_records != counted {
        let at = ctx.at(offset_of!(Trailer, nr_records));
        return Err(ImageError::RecordCount {
            at,
            trailer: t.nr_records,
            counted,
        });
    }
    if t.checksum != crc {
        let at = ctx.at(offset_of!(Trailer, checksum));
        return Err(ImageError::Checksum {
            at,
            stored: t.checksum,
            computed: crc,
        });
    }
    ctx.zero(named!(Trailer, t.pad))?;
    Ok(t)
}
