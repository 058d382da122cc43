//! Containers in the guest: created from an OCI `config.json` subset
//! ([`spec`]), each with namespaces of its own and a cgroup v2 group
//! ([`cgroup`]); an init process made by `clone3` ([`create`]), programs run
//! inside by joining it ([`exec`]).
//!
//! Every container lives in the [`Registry`] as an `Arc<Container>`, which
//! keeps what a later checkpoint or restore needs: the parsed spec and the
//! checked [`Config`], the namespaces, the cgroup (whose `cgroup.procs` is
//! the container's process tree), the init's PID and a pidfd for it.
//!
//! Reaping: the init is a child of the agent process. One thread per
//! container ([`watch`]) blocks in `waitpid` on that PID only, records the
//! exit status and wakes whoever waits for it. The agent's own exec waits
//! on its own children's PIDs too, never on "any child", so the two never
//! take each other's exits. Programs exec'd into a container are children
//! of the agent and are reaped by the exec that started them; orphans
//! inside are reparented to the container's init.

pub mod cgroup;
pub mod checkpoint;
mod child;
pub mod create;
pub mod exec;
pub mod restore;
mod restorer;
pub mod spec;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crvmm_protocol::{
    ContainerCreate, ContainerExec, ContainerInfo, ContainerKill, ContainerStatus, ErrorKind,
    ExecOutput, ExitStatus, MAX_CONTAINER_ID_LEN,
};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use self::cgroup::{Cgroup, CgroupError, Limits, CGROUP_ROOT};
use self::create::{CreateError, StartGate};
use self::exec::{EnterError, Entry};
use self::spec::{Config, SpecError};

/// Where each container gets a directory of the agent's own (outside the
/// container): `<id>/init.log` receives the init's output.
pub const STATE_DIR: &str = "/run/crvmm/containers";

/// How long a freeze waits when the request names no time.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long kill and delete wait for the init to exit after SIGKILL.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// How long delete waits for the cgroup to empty.
const CGROUP_EMPTY_WAIT: Duration = Duration::from_secs(10);

/// Errors of container requests.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The identifier is not acceptable.
    #[error(
        "container id {0:?} is not valid: 1 to {MAX_CONTAINER_ID_LEN} characters of \
         [A-Za-z0-9_.-], starting with a letter or digit"
    )]
    BadId(String),
    /// The identifier is taken.
    #[error("container {0:?} already exists")]
    Duplicate(String),
    /// No container has this identifier.
    #[error("no container {id:?} (existing: {})", list_or_none(known))]
    NotFound {
        /// The identifier asked for.
        id: String,
        /// The ones that exist.
        known: Vec<String>,
    },
    /// The spec cannot be used.
    #[error("cannot create container {id:?}")]
    Spec {
        /// The container.
        id: String,
        /// What is wrong with it.
        #[source]
        source: SpecError,
    },
    /// The agent's directory for it could not be made.
    #[error("cannot create {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating or starting the init failed.
    #[error("cannot {op} container {id:?}")]
    Create {
        /// `create` or `start`.
        op: &'static str,
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: CreateError,
    },
    /// A cgroup operation failed.
    #[error("cannot {op} container {id:?}")]
    Cgroup {
        /// What was attempted.
        op: &'static str,
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// The request needs a container that has not stopped.
    #[error("container {id:?} is {status}; {op} needs a container that has not stopped")]
    Stopped {
        /// The container.
        id: String,
        /// Its status in words (with the exit status).
        status: String,
        /// The request.
        op: &'static str,
    },
    /// The request cannot act on a frozen container.
    #[error("container {id:?} is frozen; thaw it before {op}")]
    Frozen {
        /// The container.
        id: String,
        /// The request.
        op: &'static str,
    },
    /// Start on a container that was started.
    #[error("container {0:?} was already started")]
    AlreadyStarted(String),
    /// Delete of a running container without force.
    #[error("container {id:?} is {status}: kill it first, or delete it with force")]
    StillRunning {
        /// The container.
        id: String,
        /// Its status.
        status: ContainerStatus,
    },
    /// A signal number outside 1..=64.
    #[error("{0} is not a signal number (1 to 64)")]
    BadSignal(i32),
    /// Sending a signal failed.
    #[error("cannot signal container {id:?}")]
    Signal {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The init did not exit after SIGKILL.
    #[error("container {id:?}: its init did not exit within {secs} s of SIGKILL")]
    ExitTimeout {
        /// The container.
        id: String,
        /// How long we waited.
        secs: u64,
    },
    /// Exec into the container failed.
    #[error("cannot exec in container {id:?}")]
    Exec {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: EnterError,
    },
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

impl ContainerError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::NotFound { .. } => ErrorKind::NotFound,
            ContainerError::Spec { source, .. } if source.is_unsupported() => {
                ErrorKind::Unsupported
            }
            ContainerError::BadId(_)
            | ContainerError::Duplicate(_)
            | ContainerError::Spec { .. }
            | ContainerError::Stopped { .. }
            | ContainerError::Frozen { .. }
            | ContainerError::AlreadyStarted(_)
            | ContainerError::StillRunning { .. }
            | ContainerError::BadSignal(_) => ErrorKind::BadRequest,
            ContainerError::Create { source, .. } => source.kind(),
            ContainerError::Exec { source, .. } => source.kind(),
            ContainerError::StateDir { .. }
            | ContainerError::Cgroup { .. }
            | ContainerError::Signal { .. }
            | ContainerError::ExitTimeout { .. } => ErrorKind::Io,
        }
    }
}

/// Every container of the agent, by identifier.
pub struct Registry {
    /// `None` while a container of that name is being created.
    entries: Mutex<BTreeMap<String, Option<Arc<Container>>>>,
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Registry {
        Registry {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The agent's registry.
    pub fn global() -> &'static Registry {
        static REGISTRY: Registry = Registry::new();
        &REGISTRY
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Option<Arc<Container>>>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` for a container about to be created (or restored).
    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
        check_id(id)?;
        let mut entries = self.entries();
        if entries.contains_key(id) {
            return Err(ContainerError::Duplicate(id.to_owned()));
        }
        entries.insert(id.to_owned(), None);
        Ok(Reservation {
            registry: self,
            id: id.to_owned(),
            committed: false,
        })
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        let entries = self.entries();
        match entries.get(id) {
            Some(Some(container)) => Ok(container.clone()),
            _ => Err(ContainerError::NotFound {
                id: id.to_owned(),
                known: entries
                    .iter()
                    .filter(|(_, c)| c.is_some())
                    .map(|(id, _)| id.clone())
                    .collect(),
            }),
        }
    }

    /// Every container, sorted by identifier.
    pub fn list(&self) -> Vec<Arc<Container>> {
        self.entries().values().flatten().cloned().collect()
    }

    fn remove(&self, id: &str) {
        self.entries().remove(id);
    }
}

/// A claimed identifier; released again unless committed.
pub struct Reservation<'a> {
    registry: &'a Registry,
    id: String,
    committed: bool,
}

impl Reservation<'_> {
    /// Publishes the container under the reserved identifier.
    pub fn commit(mut self, container: Arc<Container>) {
        self.registry
            .entries()
            .insert(self.id.clone(), Some(container));
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.registry.remove(&self.id);
        }
    }
}

fn check_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CONTAINER_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::BadId(id.to_owned()))
    }
}

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

    fn status(&self, lifecycle: &Lifecycle) -> ContainerStatus {
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

    fn status_words(&self, lifecycle: &Lifecycle) -> String {
        match lifecycle.exit {
            Some(exit) => format!("stopped ({exit})"),
            None => self.status(lifecycle).to_string(),
        }
    }

    /// What the protocol reports, given the locked lifecycle.
    fn info(&self, lifecycle: &Lifecycle) -> ContainerInfo {
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
    fn signal_init(&self, signal: i32) -> io::Result<()> {
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
    fn wait_exit<'a>(
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
pub(super) fn adopt(
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

/// `container_create`.
pub fn create(
    registry: &Registry,
    request: ContainerCreate,
) -> Result<ContainerInfo, ContainerError> {
    let id = request.container;
    let reservation = registry.reserve(&id)?;
    let (spec, config) = spec::parse(&request.spec).map_err(|source| ContainerError::Spec {
        id: id.clone(),
        source,
    })?;
    let state_dir = Path::new(STATE_DIR).join(&id);
    std::fs::create_dir_all(&state_dir).map_err(|source| ContainerError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    // The spec as given, for the manifest of a later checkpoint.
    let spec_path = state_dir.join(checkpoint::SPEC_FILE);
    if let Err(source) = std::fs::write(&spec_path, request.spec.to_string()) {
        let _ = std::fs::remove_dir_all(&state_dir);
        return Err(ContainerError::StateDir {
            path: spec_path,
            source,
        });
    }
    let limits = Limits {
        memory: config.memory_limit,
        pids: config.pids_limit,
    };
    let cgroup = match Cgroup::create(Path::new(CGROUP_ROOT), &id, limits) {
        Ok(cgroup) => cgroup,
        Err(source) => {
            let _ = std::fs::remove_dir_all(&state_dir);
            return Err(ContainerError::Cgroup {
                op: "create",
                id,
                source,
            });
        }
    };
    let spawned = match create::spawn(&config, &cgroup, &state_dir.join("init.log")) {
        Ok(spawned) => spawned,
        Err(source) => {
            let _ = cgroup.remove(CGROUP_EMPTY_WAIT);
            let _ = std::fs::remove_dir_all(&state_dir);
            return Err(ContainerError::Create {
                op: "create",
                id,
                source,
            });
        }
    };
    let lifecycle = Lifecycle {
        gate: Some(spawned.gate),
        ..Lifecycle::default()
    };
    let container = adopt(
        "create",
        Container::new(
            id.clone(),
            spec,
            config,
            cgroup,
            spawned.pid,
            spawned.pidfd,
            state_dir,
            lifecycle,
        ),
    )?;
    reservation.commit(container.clone());
    log!("container {id}: created, init pid {}", container.init);
    if request.start {
        if let Err(e) = start_locked(&container, container.lock()) {
            // A create that asked to start either runs or leaves nothing.
            let _ = delete(registry, &id, true);
            return Err(e);
        }
    }
    let lifecycle = container.lock();
    Ok(container.info(&lifecycle))
}

/// `container_start`.
pub fn start(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = start_locked(&container, container.lock())?;
    Ok(container.info(&lifecycle))
}

fn start_locked<'a>(
    container: &'a Container,
    mut lifecycle: MutexGuard<'a, Lifecycle>,
) -> Result<MutexGuard<'a, Lifecycle>, ContainerError> {
    let id = &container.id;
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.clone(),
            status: container.status_words(&lifecycle),
            op: "start",
        });
    }
    let Some(gate) = lifecycle.gate.take() else {
        return Err(ContainerError::AlreadyStarted(id.clone()));
    };
    gate.release(&container.config.args[0])
        .map_err(|source| ContainerError::Create {
            op: "start",
            id: id.clone(),
            source,
        })?;
    lifecycle.started = true;
    log!("container {id}: started {:?}", container.config.args);
    Ok(lifecycle)
}

/// `container_state`.
pub fn state(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    Ok(container.info(&lifecycle))
}

/// `container_list`.
pub fn list(registry: &Registry) -> Vec<ContainerInfo> {
    registry.list().iter().map(|c| c.info(&c.lock())).collect()
}

/// `container_exec`.
pub fn exec(
    registry: &Registry,
    request: ContainerExec,
    cap: usize,
) -> Result<ExecOutput, ContainerError> {
    let container = registry.get(&request.container)?;
    let id = &container.id;
    let entry = {
        let lifecycle = container.lock();
        if lifecycle.exit.is_some() {
            return Err(ContainerError::Stopped {
                id: id.clone(),
                status: container.status_words(&lifecycle),
                op: "exec",
            });
        }
        if container.cgroup.is_frozen() {
            return Err(ContainerError::Frozen {
                id: id.clone(),
                op: "exec",
            });
        }
        let exec_error = |source| ContainerError::Exec {
            id: id.clone(),
            source,
        };
        let entry = Entry::open(container.init, &container.config, &container.cgroup)
            .map_err(exec_error)?;
        // The PID was still the init's when the files were opened if the
        // init is still not reaped now.
        if container.signal_init(0).is_err() {
            return Err(ContainerError::Stopped {
                id: id.clone(),
                status: "stopped".into(),
                op: "exec",
            });
        }
        entry
    };
    entry
        .run(request.exec, cap)
        .map_err(|source| ContainerError::Exec {
            id: id.clone(),
            source,
        })
}

/// `container_freeze`.
pub fn freeze(
    registry: &Registry,
    id: &str,
    timeout_ms: Option<u64>,
) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.to_owned(),
            status: container.status_words(&lifecycle),
            op: "freeze",
        });
    }
    let timeout = timeout_ms.map_or(DEFAULT_FREEZE_TIMEOUT, Duration::from_millis);
    container
        .cgroup
        .freeze(timeout)
        .map_err(|source| ContainerError::Cgroup {
            op: "freeze",
            id: id.to_owned(),
            source,
        })?;
    Ok(container.info(&lifecycle))
}

/// `container_thaw`.
pub fn thaw(registry: &Registry, id: &str) -> Result<ContainerInfo, ContainerError> {
    let container = registry.get(id)?;
    let lifecycle = container.lock();
    container
        .cgroup
        .thaw()
        .map_err(|source| ContainerError::Cgroup {
            op: "thaw",
            id: id.to_owned(),
            source,
        })?;
    Ok(container.info(&lifecycle))
}

/// `container_kill`: the signal (default SIGKILL) goes to the init, or
/// with `all` to every process of the cgroup. After SIGKILL it waits for
/// the init's exit, so the answer reports it.
pub fn kill(registry: &Registry, request: ContainerKill) -> Result<ContainerInfo, ContainerError> {
    let signal = request.signal.unwrap_or(libc::SIGKILL);
    if !(1..=64).contains(&signal) {
        return Err(ContainerError::BadSignal(signal));
    }
    let container = registry.get(&request.container)?;
    let id = &container.id;
    let lifecycle = container.lock();
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.clone(),
            status: container.status_words(&lifecycle),
            op: "kill",
        });
    }
    let signal_error = |source| ContainerError::Signal {
        id: id.clone(),
        source,
    };
    if !request.all {
        container.signal_init(signal).map_err(signal_error)?;
    } else if signal == libc::SIGKILL {
        container
            .cgroup
            .kill()
            .map_err(|source| ContainerError::Cgroup {
                op: "kill",
                id: id.clone(),
                source,
            })?;
    } else {
        let pids = container
            .processes()
            .map_err(|source| ContainerError::Cgroup {
                op: "kill",
                id: id.clone(),
                source,
            })?;
        for pid in pids {
            // SAFETY: kill takes two integers and touches no memory.
            if unsafe { libc::kill(pid as i32, signal) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(signal_error(e));
                }
            }
        }
    }
    if signal != libc::SIGKILL {
        return Ok(container.info(&lifecycle));
    }
    let (lifecycle, exited) = container.wait_exit(lifecycle, EXIT_WAIT);
    if !exited {
        return Err(ContainerError::ExitTimeout {
            id: id.clone(),
            secs: EXIT_WAIT.as_secs(),
        });
    }
    Ok(container.info(&lifecycle))
}

/// `container_delete`: a stopped or never started container goes at once;
/// a running or frozen one only with `force` (SIGKILL to its cgroup).
pub fn delete(registry: &Registry, id: &str, force: bool) -> Result<(), ContainerError> {
    let container = registry.get(id)?;
    let mut lifecycle = container.lock();
    if lifecycle.exit.is_none() {
        let status = container.status(&lifecycle);
        if status != ContainerStatus::Created && !force {
            return Err(ContainerError::StillRunning {
                id: id.to_owned(),
                status,
            });
        }
        // Dropping the gate ends a created init; the cgroup kill ends the
        // rest, frozen or not.
        lifecycle.gate = None;
        container
            .cgroup
            .kill()
            .map_err(|source| ContainerError::Cgroup {
                op: "delete",
                id: id.to_owned(),
                source,
            })?;
        let exited;
        (lifecycle, exited) = container.wait_exit(lifecycle, EXIT_WAIT);
        if !exited {
            return Err(ContainerError::ExitTimeout {
                id: id.to_owned(),
                secs: EXIT_WAIT.as_secs(),
            });
        }
    }
    container
        .cgroup
        .remove(CGROUP_EMPTY_WAIT)
        .map_err(|source| ContainerError::Cgroup {
            op: "delete",
            id: id.to_owned(),
            source,
        })?;
    if let Err(e) = std::fs::remove_dir_all(&container.state_dir) {
        if e.kind() != io::ErrorKind::NotFound {
            log!(
                "container {id}: cannot remove {}: {e}",
                container.state_dir.display()
            );
        }
    }
    registry.remove(id);
    drop(lifecycle);
    log!("container {id}: deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["a", "web-1", "A.b_c", &"x".repeat(64)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(
                matches!(check_id(bad), Err(ContainerError::BadId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn reservations_claim_and_release_ids() {
        let registry = Registry::new();
        let first = registry.reserve("c1").unwrap();
        assert!(matches!(
            registry.reserve("c1"),
            Err(ContainerError::Duplicate(_))
        ));
        // Being created is not visible yet.
        assert!(registry.list().is_empty());
        let err = registry.get("c1").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "no container \"c1\" (existing: none)");
        drop(first);
        assert!(registry.reserve("c1").is_ok());
        assert!(matches!(
            registry.reserve("bad id"),
            Err(ContainerError::BadId(_))
        ));
    }
}
