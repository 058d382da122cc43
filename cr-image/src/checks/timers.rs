//! The checks restart makes of the POSIX timers in the signals record
//! (format version 4). That a `SIGEV_THREAD_ID` timer's thread is one of
//! the image's is `verify`'s, once the threads are read.

use std::mem::{offset_of, size_of};

use super::linux::KTIME_MAX;
use super::Ctx;
use crate::format::{PosixTimer, Wire, NSIG, SIGEV_SIGNAL, SIGEV_THREAD_ID, TIMER_CLOCKS};
use crate::ImageError;

/// The timers in `raw` (at `base` in the payload): ids increasing, a clock
/// of the four restart takes, a signal (to the process or to one thread;
/// `SIGEV_NONE` timers are refused at checkpoint), a fired flag, times a
/// `ktime_t` holds.
pub(crate) fn timers(ctx: &Ctx, raw: &[u8], base: usize) -> Result<Vec<PosixTimer>, ImageError> {
    let mut out: Vec<PosixTimer> = Vec::with_capacity(raw.len() / size_of::<PosixTimer>());
    for (i, bytes) in raw.chunks_exact(size_of::<PosixTimer>()).enumerate() {
        let t = PosixTimer::from_bytes(bytes);
        let off = base + i * size_of::<PosixTimer>();
        let bad = |at: usize, name: &str, value: u64, problem: &str| {
            Err(ctx.field(off + at, format!("timers[{i}].{name}"), value, problem))
        };
        let prev = out.last().map_or(-1, |p| p.id);
        if t.id <= prev {
            let at = offset_of!(PosixTimer, id);
            return bad(
                at,
                "id",
                t.id as u64,
                "not above the previous timer's (ids increase)",
            );
        }
        if !TIMER_CLOCKS.contains(&t.clock) {
            let problem = "not CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME or CLOCK_TAI";
            return bad(
                offset_of!(PosixTimer, clock),
                "clock",
                t.clock as u64,
                problem,
            );
        }
        if ![SIGEV_SIGNAL, SIGEV_THREAD_ID].contains(&t.notify) {
            let problem = "not SIGEV_SIGNAL or SIGEV_SIGNAL | SIGEV_THREAD_ID";
            return bad(
                offset_of!(PosixTimer, notify),
                "notify",
                t.notify as u64,
                problem,
            );
        }
        if t.signo < 1 || t.signo > NSIG as i32 {
            let problem = "not a signal (1 to 64)";
            return bad(
                offset_of!(PosixTimer, signo),
                "signo",
                t.signo as u64,
                problem,
            );
        }
        if (t.notify == SIGEV_THREAD_ID) != (t.tid > 0) || t.tid < 0 {
            let problem = "a thread id only with SIGEV_THREAD_ID, and then one";
            return bad(offset_of!(PosixTimer, tid), "tid", t.tid as u64, problem);
        }
        if t.fired > 1 {
            return bad(
                offset_of!(PosixTimer, fired),
                "fired",
                u64::from(t.fired),
                "not 0 or 1",
            );
        }
        for (name, value, at) in [
            ("interval", t.interval, offset_of!(PosixTimer, interval)),
            ("expires", t.expires, offset_of!(PosixTimer, expires)),
        ] {
            if value > KTIME_MAX {
                return bad(
                    at,
                    name,
                    value,
                    "more nanoseconds than KTIME_MAX (i64::MAX)",
                );
            }
        }
        out.push(t);
    }
    Ok(out)
}
