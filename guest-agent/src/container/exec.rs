//! Exec into a running container: the program joins the container's
//! cgroup and namespaces, enters its root, takes its user, and is then
//! supervised by the agent's ordinary exec ([`crate::exec::supervise`]:
//! output capture, time limit, exit status).
//!
//! Joining happens in the forked child before `execve` (a `pre_exec`
//! hook), except for the PID namespace: `setns(CLONE_NEWPID)` only places
//! the caller's future children, so a short-lived thread of the agent
//! enters it and forks from there. The mount and user namespaces cannot be
//! entered by a thread of a multi-threaded process at all, which the
//! forked child is not.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use crvmm_protocol::{ErrorKind, ExecOutput, ExecRequest};

use super::cgroup::Cgroup;
use super::spec::{Config, Namespace};
use crate::exec::{self as agent_exec, ExecError};

/// Errors of preparing an exec into a container (the exec itself fails
/// with [`ExecError`]).
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// A namespace, the root or the cgroup could not be opened.
    #[error("failed to open {what} of the container's init")]
    Open {
        /// What (a `/proc/<pid>/...` path or the cgroup file).
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The working directory is missing in the container.
    #[error("cannot use working directory {cwd} in the container")]
    Cwd {
        /// The directory inside the container.
        cwd: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The working directory is not a directory.
    #[error("working directory {0} in the container is not a directory")]
    CwdNotDirectory(String),
    /// A string with a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    /// The exec itself failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl EnterError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EnterError::Open { source, .. } | EnterError::Cwd { source, .. } => source.into(),
            EnterError::CwdNotDirectory(_) | EnterError::Nul(_) => ErrorKind::BadRequest,
            EnterError::Exec(e) => e.kind(),
        }
    }
}

/// A way into a container, opened while its init is alive: the open
/// namespace files stay valid whatever happens to the PID afterwards.
pub struct Entry {
    /// Namespaces joined in the child, in order (user first, mount last).
    namespaces: Vec<(File, libc::c_int)>,
    /// The PID namespace, entered by the spawning thread.
    pid_ns: Option<File>,
    /// The init's root directory.
    root: File,
    /// The cgroup's `cgroup.procs`.
    procs: File,
    /// `/proc/<pid>/root`, to check paths inside the container.
    root_path: String,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    env: Vec<(String, String)>,
    default_cwd: String,
}

impl Entry {
    /// Opens the namespaces and root of `init` and the cgroup's procs file.
    /// Check afterwards that `init` is still the container's process.
    pub fn open(init: i32, config: &Config, cgroup: &Cgroup) -> Result<Entry, EnterError> {
        let open = |path: String| {
            File::open(&path).map_err(|source| EnterError::Open { what: path, source })
        };
        let mut namespaces = Vec::new();
        let mut pid_ns = None;
        // User first (it grants the rights to enter the others), mount
        // last (it changes how paths resolve).
        let order = [
            Namespace::User,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Network,
            Namespace::Pid,
            Namespace::Mount,
        ];
        for ns in order.into_iter().filter(|ns| config.has(*ns)) {
            let file = open(format!("/proc/{init}/ns/{}", ns.proc_name()))?;
            if ns == Namespace::Pid {
                pid_ns = Some(file);
            } else {
                namespaces.push((file, ns.clone_flag()));
            }
        }
        let root_path = format!("/proc/{init}/root");
        let root = open(root_path.clone())?;
        let procs = cgroup.open_procs().map_err(|e| EnterError::Open {
            what: format!("{}/cgroup.procs", cgroup.path().display()),
            source: io::Error::other(e),
        })?;
        let env = config
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Entry {
            namespaces,
            pid_ns,
            root,
            procs,
            root_path,
            uid: config.uid,
            gid: config.gid,
            groups: config.additional_gids.clone(),
            env,
            default_cwd: config.cwd.clone(),
        })
    }

    /// Runs `request` in the container to completion.
    pub fn run(self, request: ExecRequest, cap: usize) -> Result<ExecOutput, EnterError> {
        let program = request.argv.first().ok_or(ExecError::EmptyArgv)?.clone();
        let cwd = request
            .cwd
            .clone()
            .unwrap_or_else(|| self.default_cwd.clone());
        let inside = format!("{}/{}", self.root_path, cwd.trim_start_matches('/'));
        let meta = std::fs::metadata(&inside).map_err(|source| EnterError::Cwd {
            cwd: cwd.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(EnterError::CwdNotDirectory(cwd));
        }
        let cwd = CString::new(cwd).map_err(|_| EnterError::Nul("cwd"))?;

        let mut command = Command::new(&program);
        command
            .args(&request.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(request.env.iter().map(|(k, v)| (k, v)));
        let join = Join {
            namespaces: self
                .namespaces
                .iter()
                .map(|(f, flag)| (f.as_raw_fd(), *flag))
                .collect(),
            root: self.root.as_raw_fd(),
            procs: self.procs.as_raw_fd(),
            cwd,
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        };
        // SAFETY: `Join::enter` runs between fork and exec and only makes
        // system calls on data it owns (see there); the descriptors it uses
        // are kept open by `self` until the spawn has returned.
        unsafe { command.pre_exec(move || join.enter()) };
        let pid_ns = self.pid_ns.as_ref().map(AsRawFd::as_raw_fd);
        let output = agent_exec::supervise(
            command,
            &program,
            request.stdin,
            request.timeout_ms,
            cap,
            |command| spawn_in_pid_ns(command, pid_ns),
        )?;
        drop(self);
        Ok(output)
    }
}

/// What the forked child does to join the container.
struct Join {
    namespaces: Vec<(RawFd, libc::c_int)>,
    root: RawFd,
    procs: RawFd,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Join {
    /// Cgroup, namespaces, root, IDs, working directory. Runs in the
    /// forked child: system calls only, no allocation.
    fn enter(&self) -> io::Result<()> {
        let os = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: every call takes descriptors kept open by the parent's
        // `Entry` (inherited across fork) and strings and arrays owned by
        // `self`, valid for the calls.
        unsafe {
            // "0" moves the writer itself; first, while our credentials are
            // still the agent's.
            let rc = libc::write(self.procs, b"0".as_ptr().cast(), 1);
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            for (fd, nstype) in &self.namespaces {
                os(libc::setns(*fd, *nstype))?;
            }
            os(libc::fchdir(self.root))?;
            os(libc::chroot(c".".as_ptr()))?;
            os(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            os(libc::setresgid(self.gid, self.gid, self.gid))?;
            os(libc::setresuid(self.uid, self.uid, self.uid))?;
            os(libc::chdir(self.cwd.as_ptr()))?;
        }
        Ok(())
    }
}

/// Spawns `command` from a new thread that has entered `pid_ns`, so the
/// child is born in it; the agent's own threads never change namespace.
fn spawn_in_pid_ns(command: &mut Command, pid_ns: Option<RawFd>) -> io::Result<Child> {
    let Some(fd) = pid_ns else {
        return command.spawn();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on a descriptor that stays open for the
                // call; it changes only this short-lived thread.
                if unsafe { libc::setns(fd, libc::CLONE_NEWPID) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                command.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
    })
}
