//! PID 1 duties.
//!
//! PID 1 sets up the guest (pseudo file systems, console, hostname,
//! environment), then forks the agent server and spends the rest of its life
//! reaping: it waits for every orphan, and respawns the agent when it dies.
//! The agent runs in a process of its own so that its `waitpid` on the
//! programs it runs is never raced by this reaper.
//!
//! PID 1 must never exit or panic (the kernel would panic with it), so
//! failures here are logged and the guest comes up as far as it can.

use std::collections::VecDeque;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{close, dup2, fork, sethostname, ForkResult, Pid};

use crate::exec::BASE_ENV;
use crate::log;

/// The guest's hostname.
pub const HOSTNAME: &str = "crvmm-guest";

/// Pause before an agent that died is started again.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);

/// At most this many respawns ...
const RESPAWN_LIMIT: usize = 5;

/// ... within this window; past that the agent stays down.
const RESPAWN_WINDOW: Duration = Duration::from_secs(60);

/// Errors of the init steps.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A mount point could not be created.
    #[error("failed to create mount point {path}")]
    MountPoint {
        /// The directory.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A mount failed.
    #[error("failed to mount {fstype} on {target}")]
    Mount {
        /// The file system type.
        fstype: &'static str,
        /// The mount point.
        target: &'static str,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Neither /dev/console nor /dev/null could be opened for stdio.
    #[error("failed to open a console for descriptor {fd}")]
    Console {
        /// The missing standard descriptor.
        fd: i32,
        /// Why.
        #[source]
        source: Errno,
    },
    /// sethostname failed.
    #[error("failed to set the hostname to {HOSTNAME}")]
    Hostname(#[source] Errno),
    /// fork failed.
    #[error("failed to fork the agent process")]
    Fork(#[source] Errno),
}

/// One file system PID 1 mounts.
struct MountSpec {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

fn mounts() -> [MountSpec; 8] {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let secure = nosuid_nodev | MsFlags::MS_NOEXEC;
    let spec = |fstype, target, flags, data| MountSpec {
        fstype,
        target,
        flags,
        data,
    };
    [
        spec("proc", "/proc", secure, None),
        spec("sysfs", "/sys", secure, None),
        spec("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        spec(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        spec("tmpfs", "/dev/shm", nosuid_nodev, Some("mode=1777")),
        spec("tmpfs", "/tmp", nosuid_nodev, Some("mode=1777")),
        spec("tmpfs", "/run", nosuid_nodev, Some("mode=0755")),
        spec("cgroup2", "/sys/fs/cgroup", secure, None),
    ]
}

/// Does PID 1's setup and forks the agent. Returns only in the agent
/// process (the first or a respawned one); PID 1 itself never returns.
pub fn run() {
    for spec in mounts() {
        if let Err(e) = mount_one(&spec) {
            log!("{}", log::chain(&e));
        }
        if spec.target == "/dev" {
            // Now that /dev/console exists, make sure 0, 1 and 2 are open,
            // or the first sockets we open would take their numbers.
            if let Err(e) = ensure_stdio() {
                log!("{}", log::chain(&e));
            }
        }
    }
    if let Err(e) = sethostname(HOSTNAME).map_err(InitError::Hostname) {
        log!("{}", log::chain(&e));
    }
    for (key, value) in BASE_ENV {
        // PID 1 is still single-threaded here.
        std::env::set_var(key, value);
    }
    reap_forever();
}

fn mount_one(spec: &MountSpec) -> Result<(), InitError> {
    std::fs::create_dir_all(spec.target).map_err(|source| InitError::MountPoint {
        path: spec.target,
        source,
    })?;
    match mount(
        Some(spec.fstype),
        spec.target,
        Some(spec.fstype),
        spec.flags,
        spec.data,
    ) {
        // Already mounted (the kernel may auto-mount devtmpfs).
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(source) => Err(InitError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source,
        }),
    }
}

/// Opens /dev/console (or /dev/null) on each of descriptors 0..=2 that the
/// kernel left closed (it does when the initramfs has no /dev/console).
fn ensure_stdio() -> Result<(), InitError> {
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD) != Err(Errno::EBADF) {
            continue;
        }
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY;
        let opened = open("/dev/console", flags, Mode::empty())
            .or_else(|_| open("/dev/null", flags, Mode::empty()))
            .map_err(|source| InitError::Console { fd, source })?;
        if opened != fd {
            let _ = dup2(opened, fd);
            let _ = close(opened);
        }
    }
    Ok(())
}

/// Forks the agent: `Ok(None)` in the agent process, its pid in PID 1.
fn fork_agent() -> Result<Option<Pid>, InitError> {
    // SAFETY: PID 1 never starts a thread, so the child is a copy of a
    // single-threaded process and may run any code, not only
    // async-signal-safe functions.
    match unsafe { fork() }.map_err(InitError::Fork)? {
        ForkResult::Child => Ok(None),
        ForkResult::Parent { child } => Ok(Some(child)),
    }
}

/// PID 1's loop: reap every child, respawn the agent within the budget.
/// Returns only in a newly forked agent process.
fn reap_forever() {
    let mut budget = RespawnBudget::new(RESPAWN_LIMIT, RESPAWN_WINDOW);
    let mut agent = match fork_agent() {
        Ok(None) => return,
        Ok(Some(pid)) => Some(pid),
        Err(e) => {
            log!("{}", log::chain(&e));
            None
        }
    };
    loop {
        if agent.is_none() && !budget.exhausted() {
            thread::sleep(RESPAWN_DELAY);
            if budget.allow(Instant::now()) {
                match fork_agent() {
                    Ok(None) => return,
                    Ok(Some(pid)) => {
                        log!("agent respawned as pid {pid}");
                        agent = Some(pid);
                    }
                    Err(e) => log!("{}", log::chain(&e)),
                }
            } else {
                log!(
                    "the agent died {RESPAWN_LIMIT} times within {} s; not respawning it \
                     again (PID 1 keeps reaping)",
                    RESPAWN_WINDOW.as_secs()
                );
            }
            continue;
        }
        match waitpid(None::<Pid>, None) {
            Ok(status) if status.pid().is_some() && status.pid() == agent => {
                log!("agent process {}; respawning", describe(status));
                agent = None;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // No children at all: nothing to reap until something forks.
            Err(Errno::ECHILD) => thread::sleep(Duration::from_secs(1)),
            Err(e) => {
                log!("waitpid failed: {e}");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(pid, code) => format!("{pid} exited with code {code}"),
        WaitStatus::Signaled(pid, signal, _) => format!("{pid} was killed by {signal}"),
        other => format!("{other:?}"),
    }
}

/// Allows at most `limit` respawns within any `window`; once refused, it
/// stays refused.
struct RespawnBudget {
    limit: usize,
    window: Duration,
    recent: VecDeque<Instant>,
    exhausted: bool,
}

impl RespawnBudget {
    fn new(limit: usize, window: Duration) -> Self {
        RespawnBudget {
            limit,
            window,
            recent: VecDeque::new(),
            exhausted: false,
        }
    }

    fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Records a respawn at `now` if the budget allows it.
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit {
            self.exhausted = true;
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respawn_budget_allows_five_per_minute_then_stops() {
        let mut budget = RespawnBudget::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(budget.allow(t0 + Duration::from_secs(i)));
        }
        assert!(!budget.allow(t0 + Duration::from_secs(10)));
        assert!(budget.exhausted());
    }

    #[test]
    fn respawns_spread_over_time_are_allowed() {
        let mut budget = RespawnBudget::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(budget.allow(t0 + Duration::from_secs(15 * i)));
        }
        assert!(!budget.exhausted());
    }

    #[test]
    fn mount_table_covers_the_required_file_systems() {
        let targets: Vec<_> = mounts().iter().map(|m| m.target).collect();
        for t in [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/tmp",
            "/run",
            "/sys/fs/cgroup",
        ] {
            assert!(targets.contains(&t), "{t} missing");
        }
        // Parents are mounted before their children.
        let pos = |t| targets.iter().position(|x| *x == t).unwrap();
        assert!(pos("/dev") < pos("/dev/pts"));
        assert!(pos("/sys") < pos("/sys/fs/cgroup"));
    }
}
