//! The child half of container creation: what the init does between
//! `clone3` and `execve` (see `create.rs` for the conversation).
//!
//! The agent has many threads, so the child of `clone3` may only make
//! system calls until it execs: another thread may have held the
//! allocator's lock at the moment of the clone. Everything it needs is
//! therefore prepared beforehand as C strings and pointer arrays
//! ([`Prepared`]), and it reports a failure as a fixed-size [`Record`] on
//! a pipe instead of formatting a message.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

use super::create::CreateError;
use super::restorer::{restore_tree, RestorePlan};
use super::spec::{Config, MountKind, Namespace};

/// Where the child looks for a program named without `/` when the spec's
/// environment has no `PATH`.
pub const DEFAULT_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

/// The devices every container gets in its `/dev` (the OCI runtime spec's
/// list, without a console), bound from the guest's: binding works in a
/// user namespace too, where mknod does not.
pub(super) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The links every container gets in its `/dev`.
const DEV_LINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
];

/// Flags that force a mount to be remounted after a bind.
const BIND_REMOUNT_FLAGS: libc::c_ulong = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME;

/// What the child reports: a step and, unless `Ready`, the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) step: u32,
    pub(super) index: u32,
    pub(super) errno: i32,
}

pub(super) const RECORD_LEN: usize = 12;

/// The child's steps, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Step {
    Ready = 0,
    Stdio,
    WaitParent,
    UserRoot,
    Loopback,
    Hostname,
    Domainname,
    MakePrivate,
    BindRoot,
    MountPoint,
    Mount,
    Remount,
    Devices,
    ReadonlyRoot,
    MoveRoot,
    Chroot,
    Rlimit,
    Groups,
    Gid,
    Uid,
    NoNewPrivileges,
    Cwd,
    Exec,
    RestoreClone,
    Restart,
    RestoreSession,
    RestoreClock,
    RestorePipe,
    RestoreShm,
}

pub(super) const STEPS: [Step; 29] = [
    Step::Ready,
    Step::Stdio,
    Step::WaitParent,
    Step::UserRoot,
    Step::Loopback,
    Step::Hostname,
    Step::Domainname,
    Step::MakePrivate,
    Step::BindRoot,
    Step::MountPoint,
    Step::Mount,
    Step::Remount,
    Step::Devices,
    Step::ReadonlyRoot,
    Step::MoveRoot,
    Step::Chroot,
    Step::Rlimit,
    Step::Groups,
    Step::Gid,
    Step::Uid,
    Step::NoNewPrivileges,
    Step::Cwd,
    Step::Exec,
    Step::RestoreClone,
    Step::Restart,
    Step::RestoreSession,
    Step::RestoreClock,
    Step::RestorePipe,
    Step::RestoreShm,
];

/// Descriptors the child uses, open in the parent.
pub(super) struct Fds {
    pub(super) stdin: RawFd,
    pub(super) log: RawFd,
    pub(super) go: RawFd,
    pub(super) report: RawFd,
}

/// One mount, ready for mount(2).
struct PreparedMount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
    /// Flags of a second, remounting call (bind mounts with options).
    remount: Option<libc::c_ulong>,
    /// The mount point is a file (a bind mount of a file), not a directory.
    file: bool,
}

/// Everything the child needs, built before the clone.
pub(super) struct Prepared {
    pub(super) fds: Fds,
    /// Descriptors that survive the clean-up, sorted.
    keep: Vec<u32>,
    /// Restore instead of exec: the process tree to build (see
    /// `restorer.rs`).
    pub(super) restore: Option<RestorePlan>,
    user_ns: bool,
    loopback: bool,
    hostname: Option<CString>,
    domainname: Option<CString>,
    rootfs: CString,
    mounts: Vec<PreparedMount>,
    /// `<rootfs>/dev`.
    dev_dir: CString,
    /// Guest device and its mount point in the container's `/dev`.
    devices: Vec<(CString, CString)>,
    /// Link text and link path in the container's `/dev`.
    dev_links: Vec<(CString, CString)>,
    readonly_root: bool,
    rlimits: Vec<(libc::c_int, libc::rlimit)>,
    groups: Vec<libc::gid_t>,
    gid: libc::gid_t,
    uid: libc::uid_t,
    umask: Option<libc::mode_t>,
    no_new_privileges: bool,
    cwd: CString,
    /// Paths to try for `args[0]`, in order (a `PATH` search).
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

fn cstring(text: &str) -> CString {
    // The spec checks refuse NUL in every string used here.
    CString::new(text).expect("spec strings carry no NUL")
}

impl Prepared {
    /// Makes the child restore `plan` instead of executing the program;
    /// its descriptors survive the child's clean-up.
    pub(super) fn set_restore(&mut self, plan: RestorePlan) {
        self.keep.extend(plan.fds());
        self.keep.sort_unstable();
        self.restore = Some(plan);
    }

    pub(super) fn new(config: &Config, fds: Fds) -> Result<Prepared, CreateError> {
        let mut mounts = Vec::with_capacity(config.mounts.len());
        for (index, m) in config.mounts.iter().enumerate() {
            let target = cstring(&format!("{}{}", config.rootfs, m.destination));
            let data = m.data.as_deref().map(cstring);
            let prepared = match &m.kind {
                MountKind::Bind { source, recursive } => {
                    let meta = std::fs::metadata(source).map_err(|e| CreateError::BindSource {
                        index,
                        source_path: source.clone(),
                        source: e,
                    })?;
                    let rec = if *recursive { libc::MS_REC } else { 0 };
                    let remount = m.flags & BIND_REMOUNT_FLAGS;
                    PreparedMount {
                        source: cstring(source),
                        target,
                        fstype: None,
                        flags: libc::MS_BIND | rec,
                        data: None,
                        remount: (remount != 0)
                            .then_some(libc::MS_REMOUNT | libc::MS_BIND | remount),
                        file: !meta.is_dir(),
                    }
                }
                kind => {
                    let fstype = match kind {
                        MountKind::Proc => "proc",
                        MountKind::Sysfs => "sysfs",
                        _ => "tmpfs",
                    };
                    PreparedMount {
                        source: cstring(fstype),
                        target,
                        fstype: Some(cstring(fstype)),
                        flags: m.flags,
                        data,
                        remount: None,
                        file: false,
                    }
                }
            };
            mounts.push(prepared);
        }

        let program = &config.args[0];
        let candidates = if program.contains('/') {
            vec![cstring(program)]
        } else {
            config
                .path_env()
                .unwrap_or(DEFAULT_PATH)
                .split(':')
                .map(|dir| {
                    let dir = if dir.is_empty() { "." } else { dir };
                    cstring(&format!("{dir}/{program}"))
                })
                .collect()
        };
        let argv: Vec<CString> = config.args.iter().map(|a| cstring(a)).collect();
        let envp: Vec<CString> = config.env.iter().map(|e| cstring(e)).collect();
        let pointers = |list: &[CString]| {
            list.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let mut keep = vec![fds.go as u32, fds.report as u32];
        keep.sort_unstable();
        Ok(Prepared {
            fds,
            keep,
            restore: None,
            user_ns: config.has(Namespace::User),
            loopback: config.has(Namespace::Network),
            hostname: config.hostname.as_deref().map(cstring),
            domainname: config.domainname.as_deref().map(cstring),
            rootfs: cstring(&config.rootfs),
            mounts,
            dev_dir: cstring(&format!("{}/dev", config.rootfs)),
            devices: DEVICES
                .iter()
                .map(|d| {
                    let target = format!("{}/dev/{d}", config.rootfs);
                    (cstring(&format!("/dev/{d}")), cstring(&target))
                })
                .collect(),
            dev_links: DEV_LINKS
                .iter()
                .map(|(text, name)| {
                    (
                        cstring(text),
                        cstring(&format!("{}/dev/{name}", config.rootfs)),
                    )
                })
                .collect(),
            readonly_root: config.readonly,
            rlimits: config
                .rlimits
                .iter()
                .map(|r| {
                    let limit = libc::rlimit {
                        rlim_cur: r.soft,
                        rlim_max: r.hard,
                    };
                    (r.resource, limit)
                })
                .collect(),
            groups: config.additional_gids.clone(),
            gid: config.gid,
            uid: config.uid,
            umask: config.umask,
            no_new_privileges: config.no_new_privileges,
            cwd: cstring(&config.cwd),
            candidates,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

// ---- The child. Only system calls from here on: no allocation, no locks,
// no panics. ----

/// Writes a failure record (or `Ready`) to the report pipe.
pub(super) fn report(fd: RawFd, step: Step, index: usize, errno: i32) {
    let mut buf = [0u8; RECORD_LEN];
    buf[0..4].copy_from_slice(&(step as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&(index as u32).to_le_bytes());
    buf[8..12].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: writes from a live stack buffer of RECORD_LEN bytes; a pipe
    // write this small is atomic.
    unsafe { libc::write(fd, buf.as_ptr().cast(), RECORD_LEN) };
}

/// Reports `step` as failed with the current errno and exits.
fn fail(p: &Prepared, step: Step, index: usize) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    report(p.fds.report, step, index, errno);
    // SAFETY: _exit ends the process at once, running nothing of ours.
    unsafe { libc::_exit(127) }
}

/// Fails `step` when a system call returned a negative value.
fn check(p: &Prepared, rc: libc::c_int, step: Step, index: usize) {
    if rc < 0 {
        fail(p, step, index);
    }
}

fn opt_ptr(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

pub(super) fn child_main(p: &Prepared) -> ! {
    // SAFETY: the whole body runs in the freshly cloned, single-threaded
    // child. Every call is a plain system call (or libc wrapper of one) on
    // strings and arrays prepared in `p`, which stays valid because this
    // function never returns.
    unsafe {
        // Signals: the agent's ignored ones would survive execve.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }

        // Standard descriptors, then close everything else but the pipes,
        // so no agent connection leaks in (not even until exec: another
        // container's pipes must see end-of-file when they should).
        let fds = &p.fds;
        check(p, libc::dup2(fds.stdin, 0), Step::Stdio, 0);
        check(p, libc::dup2(fds.log, 1), Step::Stdio, 1);
        check(p, libc::dup2(fds.log, 2), Step::Stdio, 2);
        let mut first = 3u32;
        for &fd in &p.keep {
            if fd > first {
                libc::syscall(libc::SYS_close_range, first, fd - 1, 0);
            }
            first = first.max(fd + 1);
        }
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);

        let mut byte = 0u8;
        let n = libc::read(fds.go, (&mut byte as *mut u8).cast(), 1);
        if n != 1 || byte != b'g' {
            libc::_exit(1);
        }

        // In a new user namespace we are nobody until we take its root:
        // files created in its mounts need a mapped owner.
        if p.user_ns {
            check(p, libc::setresgid(0, 0, 0), Step::UserRoot, 0);
            check(p, libc::setresuid(0, 0, 0), Step::UserRoot, 1);
        }
        if p.loopback {
            loopback_up(p);
        }
        if let Some(name) = &p.hostname {
            check(
                p,
                libc::sethostname(name.as_ptr(), name.as_bytes().len()),
                Step::Hostname,
                0,
            );
        }
        if let Some(name) = &p.domainname {
            let rc = libc::setdomainname(name.as_ptr(), name.as_bytes().len());
            check(p, rc, Step::Domainname, 0);
        }

        let null = std::ptr::null::<libc::c_char>();
        let root = c"/".as_ptr();
        let rc = libc::mount(
            null,
            root,
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        check(p, rc, Step::MakePrivate, 0);
        let rootfs = p.rootfs.as_ptr();
        let rc = libc::mount(
            rootfs,
            rootfs,
            null,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        );
        check(p, rc, Step::BindRoot, 0);

        for (i, m) in p.mounts.iter().enumerate() {
            let rc = if m.file {
                let fd = libc::open(
                    m.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            } else {
                libc::mkdir(m.target.as_ptr(), 0o755)
            };
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                fail(p, Step::MountPoint, i);
            }
            let data = opt_ptr(&m.data).cast::<libc::c_void>();
            let rc = libc::mount(
                m.source.as_ptr(),
                m.target.as_ptr(),
                opt_ptr(&m.fstype),
                m.flags,
                data,
            );
            check(p, rc, Step::Mount, i);
            if let Some(flags) = m.remount {
                let rc = libc::mount(null, m.target.as_ptr(), null, flags, std::ptr::null());
                check(p, rc, Step::Remount, i);
            }
        }
        let rc = libc::mkdir(p.dev_dir.as_ptr(), 0o755);
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            fail(p, Step::Devices, 0);
        }
        for (i, (device, target)) in p.devices.iter().enumerate() {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY;
            let fd = libc::open(target.as_ptr(), flags, 0o666);
            if fd < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                fail(p, Step::Devices, i);
            }
            if fd >= 0 {
                libc::close(fd);
            }
            let rc = libc::mount(
                device.as_ptr(),
                target.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null(),
            );
            check(p, rc, Step::Devices, i);
        }
        for (text, link) in &p.dev_links {
            // Best effort, like the links themselves.
            libc::symlink(text.as_ptr(), link.as_ptr());
        }
        if p.readonly_root {
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            let rc = libc::mount(null, rootfs, null, flags, std::ptr::null());
            check(p, rc, Step::ReadonlyRoot, 0);
        }

        // The initramfs cannot be pivoted away from: move the new root over
        // `/` and chroot into it, as switch_root does.
        check(p, libc::chdir(rootfs), Step::MoveRoot, 0);
        let rc = libc::mount(rootfs, root, null, libc::MS_MOVE, std::ptr::null());
        check(p, rc, Step::MoveRoot, 1);
        check(p, libc::chroot(c".".as_ptr()), Step::Chroot, 0);
        check(p, libc::chdir(root), Step::Chroot, 1);

        // A restore takes ids and limits from the image; dropping them here
        // would take away the capability restart(2) needs.
        let creds = p.restore.is_none();
        for (i, (resource, limit)) in p.rlimits.iter().enumerate().filter(|_| creds) {
            check(p, libc::setrlimit(*resource as _, limit), Step::Rlimit, i);
        }
        if creds {
            check(
                p,
                libc::setgroups(p.groups.len(), p.groups.as_ptr()),
                Step::Groups,
                0,
            );
            check(p, libc::setresgid(p.gid, p.gid, p.gid), Step::Gid, 0);
            check(p, libc::setresuid(p.uid, p.uid, p.uid), Step::Uid, 0);
        }
        if let Some(mask) = p.umask {
            libc::umask(mask);
        }
        if creds && p.no_new_privileges {
            check(
                p,
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                Step::NoNewPrivileges,
                0,
            );
        }
        check(p, libc::chdir(p.cwd.as_ptr()), Step::Cwd, 0);

        report(fds.report, Step::Ready, 0, 0);
        let n = libc::read(fds.go, (&mut byte as *mut u8).cast(), 1);
        if n != 1 || byte != b's' {
            libc::_exit(1);
        }

        if let Some(plan) = &p.restore {
            restore_tree(p, plan);
        }

        // A PATH search like execvp's: missing candidates are skipped, a
        // permission error is remembered, anything else ends the search.
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for candidate in &p.candidates {
            libc::execve(
                candidate.as_ptr(),
                p.argv_ptrs.as_ptr(),
                p.envp_ptrs.as_ptr(),
            );
            errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT);
            match errno {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => denied = true,
                _ => break,
            }
        }
        if denied && matches!(errno, libc::ENOENT | libc::ENOTDIR) {
            errno = libc::EACCES;
        }
        report(fds.report, Step::Exec, 0, errno);
        libc::_exit(127)
    }
}

/// `ip link set lo up` in the new network namespace.
fn loopback_up(p: &Prepared) {
    // SAFETY: a socket and two ioctls on a zero-initialised ifreq (plain
    // data) that lives for the calls; the socket is closed at exec.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(p, fd, Step::Loopback, 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        check(
            p,
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            Step::Loopback,
            1,
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(
            p,
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr),
            Step::Loopback,
            2,
        );
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_table_matches_the_enum() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(*step as usize, i);
        }
    }
}
