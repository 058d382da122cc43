//! The records of what a process's threads share: `struct cr_task` (with
//! its resource limits), `struct cr_creds` and `struct cr_sighand`.

use serde::Serialize;

use super::helpers::{actions, c_string, seq};
#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{named, Le, Named, Wire, NLIMITS, NSIG};

/// `struct cr_rlimit`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rlimit {
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// `struct cr_task`: the process, what its threads share. What each
/// thread has of its own is in its [`Thread`](super::Thread) record.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Task {
    /// The group leader's command name, NUL terminated.
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
    /// Thread records that follow, 1 to `CR_MAX_THREADS`.
    pub nr_threads: u32,
    /// Zero.
    #[serde(skip)]
    pub pad: u32,
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
            nr_threads: r.u32(),
            pad: r.u32(),
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
        put(out, &self.nr_threads.to_le_bytes());
        put(out, &self.pad.to_le_bytes());
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
