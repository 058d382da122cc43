//! The field checks of the records format version 2 added: the signals
//! record (interval timers, the process-wide signal queue) and the thread
//! records (a thread's own state, its restart block and its queue), as
//! restart makes them. Whether thread ids are distinct is `verify`'s.

use std::mem::{offset_of, size_of};

use super::linux::*;
use super::{range_from, Ctx};
use crate::format::{
    named, Itimer, Named, PosixTimer, Siginfo, SignalsHeader, Thread, Wire, FUTEX_FLAGS_MASK,
    MAX_PENDING, MAX_TIMERS, NSIG, PAGE_SIZE, RESTART_FUTEX, RESTART_NANOSLEEP, RESTART_NONE,
    RESTART_POLL, SIGINFO_KEPT, SIGINFO_SIZE, SI_CODE, SI_SIGNO,
};
use crate::ImageError;

/// `cr_read_signals()`: the interval timers, the process-wide queue and
/// the POSIX timers.
pub(crate) fn signals(
    ctx: &Ctx,
    payload: &[u8],
    len: u32,
) -> Result<(SignalsHeader, Vec<Siginfo>, Vec<PosixTimer>), ImageError> {
    let s = SignalsHeader::from_bytes(payload);
    let nr_timers = named!(SignalsHeader, s.nr_timers);
    if s.nr_timers > MAX_TIMERS {
        return Err(ctx.bad(nr_timers, "more than CR_MAX_TIMERS (4096) POSIX timers"));
    }
    // The queue's count is checked against what is left for it.
    let timers_len = s.nr_timers as usize * size_of::<PosixTimer>();
    let fixed = size_of::<SignalsHeader>();
    let queue_len = len.saturating_sub(timers_len as u32);
    if (len as usize) < fixed + timers_len {
        let expected = (fixed + timers_len) as u64;
        return Err(ctx.length_mismatch(nr_timers, len, expected));
    }
    pending_count(ctx, named!(SignalsHeader, s.nr_pending), fixed, queue_len)?;
    for (i, t) in s.itimer.iter().enumerate() {
        let off = offset_of!(SignalsHeader, itimer) + i * size_of::<Itimer>();
        let fields = [
            ("value", t.value, offset_of!(Itimer, value)),
            ("interval", t.interval, offset_of!(Itimer, interval)),
        ];
        for (name, value, at) in fields {
            if value > KTIME_MAX {
                let field = format!("itimer[{i}].{name}");
                let problem = "more nanoseconds than KTIME_MAX (i64::MAX)";
                return Err(ctx.field(off + at, field, value, problem));
            }
        }
    }
    let at = queue_len as usize;
    let pending = queue(ctx, &payload[..at], fixed)?;
    let timers = super::timers::timers(ctx, &payload[at..], at)?;
    Ok((s, pending, timers))
}

/// `cr_read_thread()`: a thread's own state, its restart block and its
/// queued signals. The checks of its sigaltstack, rseq area, tid address
/// and robust list are those v1 made of the task record.
pub(crate) fn thread(
    ctx: &Ctx,
    payload: &[u8],
    len: u32,
) -> Result<(Thread, Vec<Siginfo>), ImageError> {
    let t = Thread::from_bytes(payload);
    if !t.comm.contains(&0) {
        let off = offset_of!(Thread, comm);
        return Err(ctx.field(off, "comm", t.comm.len() as u64, "not NUL-terminated"));
    }
    ctx.zero(named!(Thread, t.pad))?;
    if t.tid <= 0 {
        let off = offset_of!(Thread, tid);
        let value = u64::from(t.tid as u32);
        return Err(ctx.field(off, "tid", value, "not a thread id (above 0)"));
    }
    let fixed = size_of::<Thread>();
    pending_count(ctx, named!(Thread, t.nr_pending), fixed, len)?;
    sigaltstack(ctx, &t)?;
    ctx.user_range(
        named!(Thread, t.clear_child_tid),
        named!(Thread, t.clear_child_tid),
    )?;
    ctx.user_range(named!(Thread, t.robust_list), named!(Thread, t.robust_list))?;
    let robust_len = named!(Thread, t.robust_list_len);
    if robust_len.value > PAGE_SIZE {
        return Err(ctx.bad(robust_len, "longer than a page"));
    }
    if t.rseq_len != 0 {
        let len = named!(Thread, t.rseq_len);
        if t.rseq_len < RSEQ_MIN_LEN || u64::from(t.rseq_len) > PAGE_SIZE {
            return Err(ctx.bad(len, "an rseq area has 32 bytes to a page"));
        }
        let rseq = named!(Thread, t.rseq);
        if !rseq.value.is_multiple_of(RSEQ_ALIGN) {
            return Err(ctx.bad(rseq, "not 32-byte aligned"));
        }
        range_from(ctx, rseq, len, "rseq + rseq_len")?;
    }
    restart(ctx, &t)?;
    let pending = queue(ctx, payload, fixed)?;
    Ok((t, pending))
}

/// The sigaltstack as `sigaltstack(2)` can leave it: a mode of 0,
/// `SS_ONSTACK` or `SS_DISABLE` (with no stack), `SS_AUTODISARM` as the
/// only flag, and a stack in user space.
fn sigaltstack(ctx: &Ctx, t: &Thread) -> Result<(), ImageError> {
    let flags = named!(Thread, t.sas_ss_flags);
    let sp = named!(Thread, t.sas_ss_sp);
    let size = named!(Thread, t.sas_ss_size);
    match t.sas_ss_flags & !SS_AUTODISARM {
        0 | SS_ONSTACK => {}
        SS_DISABLE => {
            for f in [sp, size] {
                if f.value != 0 {
                    return Err(ctx.bad(f, "a disabled sigaltstack (SS_DISABLE) has none"));
                }
            }
        }
        _ => {
            let problem = "the mode is none of 0, SS_ONSTACK, SS_DISABLE (with SS_AUTODISARM)";
            return Err(ctx.bad(flags, problem));
        }
    }
    range_from(ctx, sp, size, "sas_ss_sp + sas_ss_size")
}

/// The restart block: only the fields its kind uses, each in range.
fn restart(ctx: &Ctx, t: &Thread) -> Result<(), ImageError> {
    let r = &t.restart;
    ctx.zero(named!(Thread, t.restart.pad))?;
    let kind = named!(Thread, t.restart.kind);
    let clockid = named!(Thread, t.restart.clockid);
    let expires = named!(Thread, t.restart.expires);
    let addr = named!(Thread, t.restart.addr);
    let val = named!(Thread, t.restart.val);
    let bitset = named!(Thread, t.restart.bitset);
    let flags = named!(Thread, t.restart.flags);
    let unused = |fields: &[Named], what: &str| {
        for &f in fields {
            if f.value != 0 {
                return Err(ctx.bad(f, format!("must be zero in the restart block of {what}")));
            }
        }
        Ok(())
    };
    let ktime = |f: Named| {
        if f.value > KTIME_MAX {
            return Err(ctx.bad(f, "later than KTIME_MAX (i64::MAX nanoseconds)"));
        }
        Ok(())
    };
    match r.kind {
        RESTART_NONE => unused(
            &[clockid, expires, addr, val, bitset, flags],
            "no call (CR_RESTART_NONE)",
        ),
        RESTART_NANOSLEEP => {
            if !NANOSLEEP_CLOCKS.contains(&r.clockid) {
                let problem = "not CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME or CLOCK_TAI";
                return Err(ctx.bad(clockid, problem));
            }
            ktime(expires)?;
            ctx.user_address(addr)?;
            unused(&[val, bitset, flags], "a nanosleep")
        }
        RESTART_FUTEX => {
            unused(&[clockid], "a futex wait")?;
            if r.addr == 0 {
                return Err(ctx.bad(addr, "a futex wait needs the futex's address"));
            }
            if !r.addr.is_multiple_of(4) {
                return Err(ctx.bad(addr, "a futex is 4-byte aligned"));
            }
            ctx.user_address(addr)?;
            if r.flags & !FUTEX_FLAGS_MASK != 0 {
                return Err(ctx.bad(flags, "unknown futex flags"));
            }
            if r.bitset == 0 {
                return Err(ctx.bad(bitset, "a futex wait needs a nonzero bitset"));
            }
            ktime(expires)
        }
        RESTART_POLL => {
            unused(&[clockid, bitset], "a poll")?;
            ctx.user_address(addr)?;
            if r.val > POLL_MAX_NFDS {
                return Err(ctx.bad(val, "more than 1048576 descriptors"));
            }
            if r.flags > 1 {
                return Err(ctx.bad(flags, "a poll's flags are 0, or 1 with a timeout"));
            }
            ktime(expires)?;
            if r.flags == 0 && r.expires != 0 {
                return Err(ctx.bad(expires, "a poll without a timeout (flags 0) has none"));
            }
            Ok(())
        }
        _ => Err(ctx.bad(
            kind,
            "not a restart kind (CR_RESTART_NONE to CR_RESTART_POLL)",
        )),
    }
}

/// A queue's count: at most `CR_MAX_PENDING`, and the record's length
/// exactly the fixed part and that many siginfos.
fn pending_count(ctx: &Ctx, nr: Named, fixed: usize, len: u32) -> Result<(), ImageError> {
    if nr.value > u64::from(MAX_PENDING) {
        return Err(ctx.bad(nr, "more than CR_MAX_PENDING (65536) queued signals"));
    }
    let expected = fixed as u64 + nr.value * SIGINFO_SIZE as u64;
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(nr, len, expected));
    }
    Ok(())
}

/// The queued signals after the fixed part of `fixed` bytes (whose count
/// `pending_count` has checked against the length), each checked.
fn queue(ctx: &Ctx, payload: &[u8], fixed: usize) -> Result<Vec<Siginfo>, ImageError> {
    let raw = payload.get(fixed..).unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len() / SIGINFO_SIZE);
    for (i, bytes) in raw.chunks_exact(SIGINFO_SIZE).enumerate() {
        let si = Siginfo::from_bytes(bytes);
        siginfo(ctx, fixed + i * SIGINFO_SIZE, i, &si)?;
        out.push(si);
    }
    Ok(out)
}

/// A queued signal, `pending[i]` at `off` in the payload: a signal that can
/// be queued, not a POSIX timer's, and nothing beyond what the kernel keeps.
fn siginfo(ctx: &Ctx, off: usize, i: usize, si: &Siginfo) -> Result<(), ImageError> {
    let signo = si.signo();
    let signo_at = off + SI_SIGNO;
    let field = |name: &str| format!("pending[{i}].{name}");
    let value = u64::from(signo as u32);
    if signo < 1 || signo > NSIG as i32 {
        let problem = "not a signal (1 to 64)";
        return Err(ctx.field(signo_at, field("si_signo"), value, problem));
    }
    if let Some((_, name)) = KERNEL_ONLY.iter().find(|(sig, _)| *sig as i32 == signo) {
        let problem = format!("{name} is never queued");
        return Err(ctx.field(signo_at, field("si_signo"), value, problem));
    }
    let code = si.code();
    if code == SI_TIMER {
        let problem = "SI_TIMER: a POSIX timer's signal, and restart restores no POSIX timers";
        let value = u64::from(code as u32);
        return Err(ctx.field(off + SI_CODE, field("si_code"), value, problem));
    }
    if let Some(k) = (SIGINFO_KEPT..SIGINFO_SIZE).find(|&k| si.info[k] != 0) {
        let problem = "beyond the 48 bytes of a kernel_siginfo: must be zero";
        let value = u64::from(si.info[k]);
        return Err(ctx.field(off + k, field(&format!("info[{k}]")), value, problem));
    }
    Ok(())
}
