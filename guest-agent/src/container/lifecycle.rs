//! One [`Container`] and its mutable [`Lifecycle`], the thread that reaps
//! its init ([`watch`]), and [`adopt`], which starts that thread for a new
//! container or undoes the container.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crvmm_protocol::{ContainerInfo, ContainerStatus, ExitStatus};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::cgroup::{Cgroup, CgroupError};
use super::create::{CreateError, StartGate};
use super::spec::{self, Config};
use super::{ContainerError, CGROUP_EMPTY_WAIT};

/// One container.
pub struct Container {
    /// Its identifier.
    pub id: String,
    /// The spec it was created from, as parsed.
    #[allow(dead_code, reason = "kept for checkpoint/restore (issue 6, part B)")]
    pub spec: oci_spec::runtime::Spec,
    /// The spec, checked: what the agent built.
    pub config: Config,
    /// Its cgroup; `cgroup.procs` lists its processes.
    pub cgroup: Cgroup,
    /// Its init's PID in the guest.
    pub init: i32,
    /// A pidfd for the init.
    pub pidfd: OwnedFd,
    /// When it was created.
    pub created: SystemTime,
    /// The agent's directory for it (`STATE_DIR/<id>`).
    pub state_dir: PathBuf,
    lifecycle: Mutex<Lifecycle>,
    exited: Condvar,
}

/// The mutable part of a container.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Present until started: what lets the init exec its program.
    pub gate: Option<StartGate>,
    /// The program was started.
    pub started: bool,
    /// How the init ended, once reaped.
    pub exit: Option<ExitStatus>,
}

impl Container {
    /// A container whose init (a child of this agent process) is `init`.
    /// Call [`watch`] on it so its exit is recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        spec: oci_spec::runtime::Spec,
        config: Config,
        cgroup: Cgroup,
        init: i32,
        pidfd: OwnedFd,
        state_dir: PathBuf,
        lifecycle: Lifecycle,
    ) -> Arc<Container> {
        Arc::new(Container {
            id,
            spec,
            config,
            cgroup,
            init,
            pidfd,
            created: SystemTime::now(),
            state_dir,
            lifecycle: Mutex::new(lifecycle),
            exited: Condvar::new(),
        })
    }

    /// Its lifecycle, locked: requests on one container run one at a time.
    pub fn lock(&self) -> MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The processes in its cgroup (guest PIDs), init included.
    pub fn processes(&self) -> Result<Vec<u32>, CgroupError> {
        self.cgroup.pids()
    }

    /// The file of its init's namespace `ns` (valid while the init lives).
    #[allow(dead_code, reason = "for checkpoint/restore (issue 6, part B)")]
    pub fn namespace_path(&self, ns: spec::Namespace) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{}", self.init, ns.proc_name()))
    }

    /// The init's output log.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("init.log")
    }

    pub(super) fn status(&self, lifecycle: &Lifecycle) -> ContainerStatus {
        if lifecycle.exit.is_some() {
            ContainerStatus::Stopped
        } else if self.cgroup.is_frozen() {
            ContainerStatus::Frozen
        } else if lifecycle.started {
            ContainerStatus::Running
        } else {
            ContainerStatus::Created
        }
    }

    pub(super) fn status_words(&self, lifecycle: &Lifecycle) -> String {
        match lifecycle.exit {
            Some(exit) => format!("stopped ({exit})"),
            None => self.status(lifecycle).to_string(),
        }
    }

    /// What the protocol reports, given the locked lifecycle.
    pub(super) fn info(&self, lifecycle: &Lifecycle) -> ContainerInfo {
        let uts = self.config.has(spec::Namespace::Uts);
        ContainerInfo {
            id: self.id.clone(),
            status: self.status(lifecycle),
            pid: self.init as u32,
            exit: lifecycle.exit,
            hostname: self.config.hostname.clone().filter(|_| uts),
            rootfs: self.config.rootfs.clone(),
            cgroup: self.cgroup.path().display().to_string(),
            namespaces: self
                .config
                .namespaces
                .iter()
                .map(|ns| ns.name().to_owned())
                .collect(),
            created_ms: self
                .created
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            log: self.log_path().display().to_string(),
        }
    }

    /// Sends `signal` to the init through its pidfd (no PID reuse race).
    pub(super) fn signal_init(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes a descriptor we own, a signal
        // number and no siginfo; it touches no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits (releasing the lock) until the init has been reaped or
    /// `timeout` passed; true if it was.
    pub(super) fn wait_exit<'a>(
        &'a self,
        mut lifecycle: MutexGuard<'a, Lifecycle>,
        timeout: Duration,
    ) -> (MutexGuard<'a, Lifecycle>, bool) {
        let deadline = Instant::now() + timeout;
        while lifecycle.exit.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return (lifecycle, false);
            }
            lifecycle = self
                .exited
                .wait_timeout(lifecycle, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        (lifecycle, true)
    }
}

/// Starts the thread that reaps `container`'s init and records its exit.
pub fn watch(container: Arc<Container>) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("reap-{}", container.id))
        .spawn(move || {
            let status = loop {
                match waitpid(Pid::from_raw(container.init), None) {
                    Ok(WaitStatus::Exited(_, code)) => break ExitStatus::Exited(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => {
                        break ExitStatus::Signaled(signal as i32)
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log!("container {}: waitpid failed: {e}", container.id);
                        break ExitStatus::Exited(-1);
                    }
                }
            };
            let mut lifecycle = container.lock();
            lifecycle.exit = Some(status);
            lifecycle.gate = None;
            drop(lifecycle);
            container.exited.notify_all();
            log!(
                "container {}: init {} ended: {status}",
                container.id,
                container.init
            );
        })
        .map(drop)
}

/// Starts the reaper of a new container (created or restored); without one
/// nobody would record its init's exit, so a failure undoes the container:
/// kills and reaps it, removes its cgroup and directory.
pub(crate) fn adopt(
    op: &'static str,
    container: Arc<Container>,
) -> Result<Arc<Container>, ContainerError> {
    if let Err(e) = watch(container.clone()) {
        let id = container.id.clone();
        log!("container {id}: cannot start its reaper thread: {e}");
        let _ = container.cgroup.kill();
        let _ = waitpid(Pid::from_raw(container.init), None);
        let _ = container.cgroup.remove(CGROUP_EMPTY_WAIT);
        let _ = std::fs::remove_dir_all(&container.state_dir);
        return Err(ContainerError::Create {
            op,
            id,
            source: CreateError::Channel(e),
        });
    }
    Ok(container)
}
