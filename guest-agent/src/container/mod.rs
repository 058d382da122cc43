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
//!
//! [`Config`]: spec::Config
//! [`watch`]: lifecycle::watch

pub mod cgroup;
pub mod checkpoint;
mod child;
pub mod clocks;
pub mod create;
pub mod exec;
mod lifecycle;
mod ops;
mod registry;
pub mod restore;
mod restorer;
pub mod spec;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use crvmm_protocol::{ContainerStatus, ErrorKind, MAX_CONTAINER_ID_LEN};

use self::cgroup::CgroupError;
use self::create::CreateError;
use self::exec::EnterError;
use self::spec::SpecError;

pub(super) use self::lifecycle::adopt;
pub use self::lifecycle::{Container, Lifecycle};
pub(super) use self::ops::prepare;
pub use self::ops::{create, delete, exec, freeze, kill, list, start, state, thaw};
pub use self::registry::Registry;

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

/// A new memfd (close-on-exec) named `name`.
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).expect("no NUL in the name");
    // SAFETY: memfd_create reads the NUL-terminated name, which lives for
    // the call, and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
