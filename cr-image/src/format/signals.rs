//! Signal state: the process-wide part (`struct cr_signals`: interval
//! timers, the shared queue's length and the number of POSIX timers
//! after it) and a queued signal
//! (`struct cr_siginfo`, user space's `siginfo_t`), which follow the
//! signals record and each thread record.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire, NR_ITIMERS, SIGINFO_SIZE};

/// Bytes of a siginfo the kernel keeps (`struct kernel_siginfo`); the
/// rest of the user `siginfo_t` must be zero.
pub const SIGINFO_KEPT: usize = 48;

/// The interval timers' names, in `ITIMER_*` order.
pub const ITIMER_NAMES: [&str; NR_ITIMERS] = ["real", "virtual", "prof"];

/// `struct cr_itimer`: relative to the checkpoint; a 0 value is disarmed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Itimer {
    /// Nanoseconds until it fires.
    pub value: u64,
    /// Nanoseconds between firings after that.
    pub interval: u64,
}

/// `struct cr_signals` (the shared queue's siginfos follow it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SignalsHeader {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`; shown by name.
    #[serde(serialize_with = "named_itimers")]
    pub itimer: [Itimer; NR_ITIMERS],
    /// Signals of the process-wide queue, which follow.
    pub nr_pending: u32,
    /// POSIX timers (`struct cr_timer`), which follow the queue.
    pub nr_timers: u32,
}

fn named_itimers<S: Serializer>(v: &[Itimer; NR_ITIMERS], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(NR_ITIMERS))?;
    for (name, timer) in ITIMER_NAMES.iter().zip(v) {
        map.serialize_entry(name, timer)?;
    }
    map.end()
}

impl Wire for SignalsHeader {
    fn decode(r: &mut Le<'_>) -> Self {
        SignalsHeader {
            itimer: std::array::from_fn(|_| Itimer {
                value: r.u64(),
                interval: r.u64(),
            }),
            nr_pending: r.u32(),
            nr_timers: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        for t in &self.itimer {
            put(out, &t.value.to_le_bytes());
            put(out, &t.interval.to_le_bytes());
        }
        put(out, &self.nr_pending.to_le_bytes());
        put(out, &self.nr_timers.to_le_bytes());
    }
}

/// `struct cr_siginfo`: a queued signal as user space's `siginfo_t`.
/// Shown as its number, errno and code, and the rest of what the kernel
/// keeps (bytes 12 to 48) in hex.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Siginfo {
    /// The 128 bytes.
    pub info: [u8; SIGINFO_SIZE],
}

/// Offset of `si_signo` in a siginfo.
pub const SI_SIGNO: usize = 0;
/// Offset of `si_errno`.
pub const SI_ERRNO: usize = 4;
/// Offset of `si_code`.
pub const SI_CODE: usize = 8;

impl Siginfo {
    /// A siginfo with these three fields and zeros elsewhere.
    pub fn new(signo: i32, errno: i32, code: i32) -> Self {
        let mut info = [0u8; SIGINFO_SIZE];
        info[SI_SIGNO..SI_SIGNO + 4].copy_from_slice(&signo.to_le_bytes());
        info[SI_ERRNO..SI_ERRNO + 4].copy_from_slice(&errno.to_le_bytes());
        info[SI_CODE..SI_CODE + 4].copy_from_slice(&code.to_le_bytes());
        Siginfo { info }
    }

    fn i32_at(&self, off: usize) -> i32 {
        Le::new(self.info.get(off..).unwrap_or_default()).i32()
    }

    /// `si_signo`.
    pub fn signo(&self) -> i32 {
        self.i32_at(SI_SIGNO)
    }

    /// `si_errno`.
    pub fn errno(&self) -> i32 {
        self.i32_at(SI_ERRNO)
    }

    /// `si_code`.
    pub fn code(&self) -> i32 {
        self.i32_at(SI_CODE)
    }
}

impl Default for Siginfo {
    fn default() -> Self {
        Siginfo {
            info: [0; SIGINFO_SIZE],
        }
    }
}

impl Serialize for Siginfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("signo", &self.signo())?;
        map.serialize_entry("errno", &self.errno())?;
        map.serialize_entry("code", &self.code())?;
        let rest: String = self.info[SI_CODE + 4..SIGINFO_KEPT]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        map.serialize_entry("data", &rest)?;
        map.end()
    }
}

impl Wire for Siginfo {
    fn decode(r: &mut Le<'_>) -> Self {
        Siginfo { info: r.array() }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.info);
    }
}
