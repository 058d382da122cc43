//! Creating a container's init: `clone3` with the namespace flags straight
//! into the container's cgroup, then, in the child, the setup the spec
//! asks for, a pause until `start`, and `execve`.
//!
//! The child's side is in `child.rs`: until it execs it may only make
//! system calls, on data prepared here.
//!
//! The conversation with the child:
//!
//! 1. parent: `clone3(CLONE_NEW* | CLONE_INTO_CGROUP | CLONE_PIDFD)`;
//! 2. parent: writes the user namespace's ID maps (if any), then `g` on
//!    the go pipe; the child waits for it before doing anything;
//! 3. child: hostname, mounts made private, the root file system bound on
//!    itself, the spec's mounts, then the root is moved to `/`
//!    (`mount --move` + `chroot`: the guest's own root is the initramfs,
//!    where `pivot_root(2)` does not work), IDs, limits, `cwd`; reports
//!    "ready" on the report pipe;
//! 4. on `start`, parent: `s` on the go pipe; child: `execve`. The report
//!    pipe is close-on-exec, so end-of-file tells the parent the program
//!    runs; a record tells why not. End-of-file on the go pipe (the agent
//!    went away or the container is deleted) ends the child instead.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::cgroup::Cgroup;
use super::child::{child_main, Fds, Prepared, Record, Step, DEVICES, RECORD_LEN, STEPS};
use super::restorer::RestorePlan;
use super::spec::{Config, IdMapping, MountKind, Namespace};

/// How long the child may take to set the container up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `execve` may take once started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `CLONE_INTO_CGROUP` (Linux 5.7), a clone3-only flag above 32 bits.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Errors of creating and starting an init.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The root file system cannot be used.
    #[error("cannot use the root file system {path}")]
    Rootfs {
        /// The guest directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The root file system is not a directory.
    #[error("the root file system {0} is not a directory")]
    RootfsNotDirectory(String),
    /// A bind mount's source cannot be used.
    #[error("cannot use {source_path}, the source of mounts[{index}]")]
    BindSource {
        /// Its index in `mounts`.
        index: usize,
        /// The guest path.
        source_path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file the init needs could not be opened.
    #[error("failed to open {path} for the container's init")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A pipe to talk to the init could not be made.
    #[error("failed to create a pipe to the container's init")]
    Pipe(#[source] io::Error),
    /// `clone3` failed.
    #[error("failed to create the container's init process (clone3)")]
    Clone(#[source] io::Error),
    /// Writing the user namespace's ID map failed.
    #[error("failed to write {file} of the container's init")]
    IdMap {
        /// `uid_map` or `gid_map`.
        file: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Talking to the init failed.
    #[error("lost contact with the container's init")]
    Channel(#[source] io::Error),
    /// A setup step failed in the init.
    #[error("container setup failed: {step}")]
    Setup {
        /// The step, in words.
        step: String,
        /// The error of its system call.
        #[source]
        source: io::Error,
    },
    /// The init could not run its program.
    #[error("cannot execute {program:?} in the container")]
    Exec {
        /// `process.args[0]`.
        program: String,
        /// The error of `execve`.
        #[source]
        source: io::Error,
    },
    /// The init died without saying why.
    #[error("the container's init died during setup ({0})")]
    Died(String),
    /// The init did not answer in time.
    #[error("the container's init did not finish {0} within {1} s")]
    Timeout(&'static str, u64),
}

impl CreateError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> crvmm_protocol::ErrorKind {
        use crvmm_protocol::ErrorKind;
        match self {
            CreateError::Rootfs { source, .. }
            | CreateError::BindSource { source, .. }
            | CreateError::Exec { source, .. } => source.into(),
            CreateError::RootfsNotDirectory(_) => ErrorKind::BadRequest,
            CreateError::Setup { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
                ErrorKind::PermissionDenied
            }
            _ => ErrorKind::Io,
        }
    }
}

/// A created init, waiting before `execve`.
#[derive(Debug)]
pub struct Spawned {
    /// Its PID in the guest.
    pub pid: i32,
    /// A pidfd for it (signals without PID reuse races; `waitid`).
    pub pidfd: OwnedFd,
    /// What lets it run.
    pub gate: StartGate,
}

/// The parent's ends of the pipes to a created init.
#[derive(Debug)]
pub struct StartGate {
    go: File,
    report: File,
}

impl StartGate {
    /// The go pipe (write `s` to let the init go on) and the report pipe
    /// (failure records), for a restore, which watches its processes itself.
    pub(super) fn into_pipes(self) -> (File, File) {
        (self.go, self.report)
    }

    /// Lets the init exec `program`; returns once it has, or with why not.
    /// Dropping the gate instead makes the init exit.
    pub fn release(self, program: &str) -> Result<(), CreateError> {
        let StartGate { mut go, report } = self;
        go.write_all(b"s").map_err(CreateError::Channel)?;
        drop(go);
        match read_record(&report, START_TIMEOUT)? {
            Some(None) => Ok(()),
            Some(Some(record)) if record.step == Step::Exec as u32 => Err(CreateError::Exec {
                program: program.to_owned(),
                source: io::Error::from_raw_os_error(record.errno),
            }),
            Some(Some(record)) => Err(CreateError::Setup {
                step: format!("step {} after start", record.step),
                source: io::Error::from_raw_os_error(record.errno),
            }),
            None => Err(CreateError::Timeout("exec", START_TIMEOUT.as_secs())),
        }
    }
}

/// Creates the init of a container in `cgroup`, set up and waiting for
/// [`StartGate::release`]. Its output goes to `log` (appended).
pub fn spawn(config: &Config, cgroup: &Cgroup, log: &Path) -> Result<Spawned, CreateError> {
    spawn_with(config, cgroup, log, None)
}

/// Like [`spawn`], for a restore: once released (`s` on the gate's go
/// pipe, see [`StartGate::into_pipes`]) the init builds `plan`'s process
/// tree and every process restarts from its image (see `restorer.rs`).
pub(super) fn spawn_restorer(
    config: &Config,
    cgroup: &Cgroup,
    log: &Path,
    plan: RestorePlan,
) -> Result<Spawned, CreateError> {
    spawn_with(config, cgroup, log, Some(plan))
}

fn spawn_with(
    config: &Config,
    cgroup: &Cgroup,
    log: &Path,
    plan: Option<RestorePlan>,
) -> Result<Spawned, CreateError> {
    let meta = std::fs::metadata(&config.rootfs).map_err(|source| CreateError::Rootfs {
        path: config.rootfs.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CreateError::RootfsNotDirectory(config.rootfs.clone()));
    }
    let open = |path: &Path, options: &mut OpenOptions| {
        options
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| CreateError::Open {
                path: path.display().to_string(),
                source,
            })
    };
    let null = open(Path::new("/dev/null"), OpenOptions::new().read(true))?;
    let log = open(log, OpenOptions::new().append(true).create(true))?;
    let (go_read, go_write) = pipe()?;
    let (report_read, report_write) = pipe()?;
    // A restorer's descriptors stay clear of the pipes it makes.
    let floor = plan.as_ref().map_or(0, |plan| plan.pipes.floor());
    let raise = |fd| super::restorer::above(fd, floor).map_err(CreateError::Pipe);
    let (go_read, report_write) = (raise(go_read)?, raise(report_write)?);
    let mut prepared = Prepared::new(
        config,
        Fds {
            stdin: null.as_raw_fd(),
            log: log.as_raw_fd(),
            go: go_read.as_raw_fd(),
            report: report_write.as_raw_fd(),
        },
    )?;
    if let Some(plan) = plan {
        prepared.set_restore(plan);
    }
    let cgroup_dir = cgroup.open_dir().map_err(|e| CreateError::Open {
        path: cgroup.path().display().to_string(),
        source: io::Error::other(e),
    })?;

    let mut flags = CLONE_INTO_CGROUP | libc::CLONE_PIDFD as u64;
    for ns in &config.namespaces {
        flags |= ns.clone_flag() as u64;
    }
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed. Without
    // CLONE_VM the child gets a copy of our memory and returns here with 0,
    // like fork(); it then runs only `child_main`, which makes system calls
    // on prepared data and never returns (see the module comment).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        child_main(&prepared);
    }
    if ret < 0 {
        return Err(CreateError::Clone(io::Error::last_os_error()));
    }
    let pid = ret as i32;
    // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor in
    // `pidfd`, which nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((go_read, report_write, null, log, cgroup_dir));
    let mut child = ChildGuard(Some(pid));

    if config.has(Namespace::User) {
        write_id_map(pid, "uid_map", &config.uid_mappings)?;
        write_id_map(pid, "gid_map", &config.gid_mappings)?;
    }
    let mut go = File::from(go_write);
    go.write_all(b"g").map_err(CreateError::Channel)?;
    let report = File::from(report_read);
    match read_record(&report, SETUP_TIMEOUT)? {
        Some(Some(record)) if record.step == Step::Ready as u32 => {}
        Some(Some(record)) => {
            return Err(CreateError::Setup {
                step: describe(&record, config),
                source: io::Error::from_raw_os_error(record.errno),
            })
        }
        Some(None) => return Err(CreateError::Died(child.reap())),
        None => return Err(CreateError::Timeout("its setup", SETUP_TIMEOUT.as_secs())),
    }
    child.0 = None;
    Ok(Spawned {
        pid,
        pidfd,
        gate: StartGate { go, report },
    })
}

/// Kills and reaps the child when creation fails half-way.
struct ChildGuard(Option<i32>);

impl ChildGuard {
    /// Reaps the child (which has exited or is about to); its status in words.
    fn reap(&mut self) -> String {
        let Some(pid) = self.0.take() else {
            return "already reaped".into();
        };
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
            Ok(WaitStatus::Signaled(_, signal, _)) => format!("killed by {signal}"),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("waitpid failed: {e}"),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            self.reap();
        }
    }
}

/// `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
    pub(super) cgroup: u64,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CreateError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(CreateError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_id_map(pid: i32, file: &'static str, map: &[IdMapping]) -> Result<(), CreateError> {
    let text: String = map
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect();
    // The map must arrive in one write.
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/{file}"))
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| CreateError::IdMap { file, source })
}

/// Reads one record: `Some(None)` at end-of-file, `None` on timeout.
fn read_record(pipe: &File, timeout: Duration) -> Result<Option<Option<Record>>, CreateError> {
    let mut pfd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = timeout.as_millis() as libc::c_int;
    loop {
        // SAFETY: one valid pollfd, exclusively borrowed.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc == 0 {
            return Ok(None);
        }
        if rc > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(CreateError::Channel(e));
        }
    }
    let mut buf = [0u8; RECORD_LEN];
    let mut reader = pipe;
    let n = loop {
        match reader.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CreateError::Channel(e)),
        }
    };
    match n {
        0 => Ok(Some(None)),
        RECORD_LEN => Ok(Some(Some(Record {
            step: u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")),
            index: u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")),
            errno: i32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")),
        }))),
        n => Err(CreateError::Channel(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {n}-byte record from the container's init"),
        ))),
    }
}

/// A failed step in words, with the spec field it came from.
fn describe(record: &Record, config: &Config) -> String {
    let i = record.index as usize;
    let mount = config.mounts.get(i);
    let target = mount.map_or("?", |m| m.destination.as_str());
    let kind = mount.map_or("?".to_owned(), |m| match &m.kind {
        MountKind::Proc => "proc".to_owned(),
        MountKind::Sysfs => "sysfs".to_owned(),
        MountKind::Tmpfs => "tmpfs".to_owned(),
        MountKind::Bind { source, .. } => format!("bind of {source}"),
    });
    let Some(step) = STEPS.get(record.step as usize) else {
        return format!("unknown step {}", record.step);
    };
    match step {
        Step::Ready => "none".into(),
        Step::Stdio => "setting up standard input and output".into(),
        Step::WaitParent => "waiting for the agent".into(),
        Step::UserRoot => "becoming root of the user namespace (the ID mappings must map \
                           container ID 0)"
            .into(),
        Step::Loopback => "bringing up the loopback interface".into(),
        Step::Hostname => format!("setting the hostname (hostname {:?})", config.hostname),
        Step::Domainname => "setting the domain name (domainname)".into(),
        Step::MakePrivate => "making the mounts private".into(),
        Step::BindRoot => format!("binding the root file system {} (root.path)", config.rootfs),
        Step::MountPoint => format!("creating the mount point {target} (mounts[{i}])"),
        Step::Mount => format!("mounting {kind} on {target} (mounts[{i}])"),
        Step::Remount => format!("applying the options of {target} (mounts[{i}].options)"),
        Step::Devices => format!(
            "providing /dev/{} in the container (a tmpfs on /dev in `mounts` gives it room)",
            DEVICES.get(i).unwrap_or(&"?")
        ),
        Step::ReadonlyRoot => "making the root file system read-only (root.readonly)".into(),
        Step::MoveRoot => format!("moving {} to / (mount --move)", config.rootfs),
        Step::Chroot => "entering the root file system (chroot)".into(),
        Step::Rlimit => format!("setting process.rlimits[{i}]"),
        Step::Groups => "setting process.user.additionalGids".into(),
        Step::Gid => format!("setting process.user.gid {}", config.gid),
        Step::Uid => format!("setting process.user.uid {}", config.uid),
        Step::NoNewPrivileges => "setting process.noNewPrivileges".into(),
        Step::Cwd => format!("changing to process.cwd {}", config.cwd),
        Step::Exec => format!("executing {:?}", config.args[0]),
        Step::RestoreClone => format!("creating process {i} of the image (clone3 with set_tid)"),
        Step::Restart => format!("restarting process {i} from its image (restart)"),
        Step::RestoreSession => format!("giving process {i} its session and process group"),
        Step::RestoreClock => {
            "making a time namespace in which the image's clocks go on (timens_offsets)".into()
        }
        Step::RestorePipe => {
            format!(
                "making pipe, socketpair or eventfd {i} of the image again (in that order), with \
                 what it held"
            )
        }
        Step::RestoreShm => format!(
            "making SysV shm segment {i} of the image again in the container's IPC namespace              (shm_next_id, shmget, IPC_SET, its content)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_has_the_kernels_v2_size() {
        // CLONE_ARGS_SIZE_VER2 in include/uapi/linux/sched.h.
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }

    #[test]
    fn failures_are_described_with_their_spec_field() {
        let spec = crvmm_protocol::BasicSpec::new(["sh"]).to_json();
        let (_, config) = super::super::spec::parse(&spec).unwrap();
        let record = Record {
            step: Step::Mount as u32,
            index: 2,
            errno: libc::EINVAL,
        };
        assert_eq!(
            describe(&record, &config),
            "mounting tmpfs on /tmp (mounts[2])"
        );
        let record = Record {
            step: 99,
            index: 0,
            errno: 0,
        };
        assert_eq!(describe(&record, &config), "unknown step 99");
    }
}
