//! POSIX timers (`timer_create`): `struct cr_timer`, which follow the
//! process-wide queue in the signals record (format version 4).

use serde::Serialize;

#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire};

/// `CR_MAX_TIMERS`: the most POSIX timers one image holds.
pub const MAX_TIMERS: u32 = 4096;
/// Clocks a saved timer may count: `CLOCK_REALTIME`, `CLOCK_MONOTONIC`,
/// `CLOCK_BOOTTIME`, `CLOCK_TAI`.
pub const TIMER_CLOCKS: [i32; 4] = [0, 1, 7, 11];
/// `SIGEV_SIGNAL`.
pub const SIGEV_SIGNAL: i32 = 0;
/// `SIGEV_NONE`.
pub const SIGEV_NONE: i32 = 1;
/// `SIGEV_SIGNAL | SIGEV_THREAD_ID`: a signal to one thread.
pub const SIGEV_THREAD_ID: i32 = 4;

/// `struct cr_timer`: one POSIX timer of the process.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PosixTimer {
    /// Its id (`timer_t`), which restart gives it again.
    pub id: i32,
    /// The clock it counts.
    pub clock: i32,
    /// `SIGEV_SIGNAL` or `SIGEV_SIGNAL | SIGEV_THREAD_ID`.
    pub notify: i32,
    /// The signal it sends.
    pub signo: i32,
    /// `SIGEV_THREAD_ID`: the thread it signals (else 0).
    pub tid: i32,
    /// 1: its signal was queued at the checkpoint; it fires at once after
    /// restart.
    pub fired: u32,
    /// `sigev_value`.
    pub value: u64,
    /// Nanoseconds between firings (0: once).
    pub interval: u64,
    /// Nanoseconds from the checkpoint until it fires (0: disarmed).
    pub expires: u64,
}

impl Wire for PosixTimer {
    fn decode(r: &mut Le<'_>) -> Self {
        PosixTimer {
            id: r.i32(),
            clock: r.i32(),
            notify: r.i32(),
            signo: r.i32(),
            tid: r.i32(),
            fired: r.u32(),
            value: r.u64(),
            interval: r.u64(),
            expires: r.u64(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.id.to_le_bytes());
        put(out, &self.clock.to_le_bytes());
        put(out, &self.notify.to_le_bytes());
        put(out, &self.signo.to_le_bytes());
        put(out, &self.tid.to_le_bytes());
        put(out, &self.fired.to_le_bytes());
        put(out, &self.value.to_le_bytes());
        put(out, &self.interval.to_le_bytes());
        put(out, &self.expires.to_le_bytes());
    }
}
