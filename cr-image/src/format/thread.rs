//! The records of one thread: `struct cr_thread` and the restart block of
//! an interrupted system call it holds (`struct cr_restart`). The thread's
//! queued signals (`struct cr_siginfo`, in `signals`) follow it in the
//! record, and its REGS and XSTATE records follow the record.

use serde::{Serialize, Serializer};

use super::helpers::c_string;
#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire};

/// `CR_RESTART_NONE`: `restart_syscall()` fails with `EINTR`.
pub const RESTART_NONE: u32 = 0;
/// `CR_RESTART_NANOSLEEP`: `clockid`, `expires`, `addr` = rmtp or 0.
pub const RESTART_NANOSLEEP: u32 = 1;
/// `CR_RESTART_FUTEX`: `addr` = uaddr, `val`, `bitset`, `flags`, `expires`.
pub const RESTART_FUTEX: u32 = 2;
/// `CR_RESTART_POLL`: `addr` = ufds, `val` = nfds, `flags` 1: `expires` set.
pub const RESTART_POLL: u32 = 3;

/// `CR_FUTEX_SHARED`: not a process-private futex.
pub const FUTEX_SHARED: u32 = 0x1;
/// `CR_FUTEX_CLOCKRT`: the timeout is on `CLOCK_REALTIME`.
pub const FUTEX_CLOCKRT: u32 = 0x2;
/// `CR_FUTEX_FLAGS_MASK`.
pub const FUTEX_FLAGS_MASK: u32 = 0x3;

/// The name of a `CR_RESTART_*` kind, if defined.
pub fn restart_kind_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        RESTART_NONE => "none",
        RESTART_NANOSLEEP => "nanosleep",
        RESTART_FUTEX => "futex",
        RESTART_POLL => "poll",
        _ => return None,
    })
}

/// `struct cr_restart`: what `restart_syscall()` resumes. Times are
/// absolute nanoseconds on the clock named, as the thread saw them.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Restart {
    /// `CR_RESTART_*`; shown by name.
    #[serde(serialize_with = "kind_name")]
    pub kind: u32,
    /// `CLOCK_*` of a nanosleep.
    pub clockid: u32,
    /// When the wait times out (0 for none, except for nanosleep).
    pub expires: u64,
    /// rmtp (nanosleep), uaddr (futex), ufds (poll).
    pub addr: u64,
    /// The futex value, or nfds of a poll.
    pub val: u32,
    /// The futex wait bitset.
    pub bitset: u32,
    /// `CR_FUTEX_*`, or 1 for a poll with a timeout.
    pub flags: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
}

fn kind_name<S: Serializer>(kind: &u32, s: S) -> Result<S::Ok, S::Error> {
    match restart_kind_name(*kind) {
        Some(name) => s.serialize_str(name),
        None => s.serialize_u32(*kind),
    }
}

impl Wire for Restart {
    fn decode(r: &mut Le<'_>) -> Self {
        Restart {
            kind: r.u32(),
            clockid: r.u32(),
            expires: r.u64(),
            addr: r.u64(),
            val: r.u32(),
            bitset: r.u32(),
            flags: r.u32(),
            pad: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.kind.to_le_bytes());
        put(out, &self.clockid.to_le_bytes());
        put(out, &self.expires.to_le_bytes());
        put(out, &self.addr.to_le_bytes());
        put(out, &self.val.to_le_bytes());
        put(out, &self.bitset.to_le_bytes());
        put(out, &self.flags.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
    }
}

/// `struct cr_thread` (its queued signals follow it in the record).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Thread {
    /// The thread's name, NUL terminated.
    #[serde(serialize_with = "c_string")]
    pub comm: [u8; 16],
    /// Thread id at checkpoint; restart gives it to every thread but the
    /// first.
    pub tid: i32,
    /// Its own queued signals, which follow.
    pub nr_pending: u32,
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
    /// The interrupted system call `restart_syscall()` resumes.
    pub restart: Restart,
}

impl Wire for Thread {
    fn decode(r: &mut Le<'_>) -> Self {
        Thread {
            comm: r.array(),
            tid: r.i32(),
            nr_pending: r.u32(),
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
            restart: Restart::decode(r),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.comm);
        put(out, &self.tid.to_le_bytes());
        put(out, &self.nr_pending.to_le_bytes());
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
        self.restart.encode(out);
    }
}
