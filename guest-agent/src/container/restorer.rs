//! The child side of a container restore: after the container's setup (see
//! `child.rs`), the init builds the process tree of the image with
//! `clone3` and `set_tid`, so every process gets its old pid in the new pid
//! namespace, and each process then becomes its image with `restart(2)`.
//!
//! Like the rest of the child, this runs between `clone3` and the end of
//! the process with system calls only, on data prepared by the agent.
//!
//! Each process reads its image from its own socket (a socketpair whose
//! other end the agent feeds); the kernel's log lines go to standard error,
//! the container's `init.log`. A process whose restart fails reports
//! [`Step::Restart`] with its index and errno on the report pipe and exits;
//! the kernel kills one that fails after the point of no return. Images are
//! taken with `CR_CHECKPOINT_INHERIT_STDIO`: restart keeps the caller's
//! descriptors 0 to 2 (standard input `/dev/null`, output and error the new
//! container's log), closes the others (the image socket, the report pipe)
//! and opens the image's own files. Pipes shared by the processes are
//! made by the init first and handed out before restart (`pipes.rs`).

use std::ffi::CString;
use std::os::fd::RawFd;

use super::child::{report, Prepared, Step};
use super::create::CloneArgs;

mod pipes;
mod shm;
pub(super) use pipes::{above, PipePlan};
pub(super) use shm::{CrShmFd, Segment, ShmPlan};

/// Restart flag: the fifth and sixth arguments give the shared memory
/// objects (`CR_RESTART_SHM`).
const CR_RESTART_SHM: libc::c_ulong = 0x1;

/// x86-64 system call number of restart(2) (`CR_NR_RESTART`).
const NR_RESTART: libc::c_long = 464;

/// One process to restore.
#[derive(Debug, Clone, Copy)]
pub(super) struct RestoreProc {
    /// Its pid in the container's pid namespace.
    pub(super) pid: i32,
    /// Its parent's there (0 for the init).
    pub(super) ppid: i32,
    /// Its process group there (0: one outside the namespace: inherit).
    pub(super) pgid: i32,
    /// Its session there (0 likewise).
    pub(super) sid: i32,
    /// The child's end of its image socket.
    pub(super) fd: RawFd,
}

/// A zombie to make again: a child that exits at once with `status`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RestoreZombie {
    /// Its pid, parent, group and session, as for [`RestoreProc`].
    pub(super) proc: RestoreProc,
    /// Its wait status (exit code << 8, or a signal number).
    pub(super) status: i32,
}

/// The tree to build: the init first, parents before children.
#[derive(Debug, Clone)]
pub(super) struct RestorePlan {
    /// The processes.
    pub(super) procs: Vec<RestoreProc>,
    /// The zombies, each made by its parent before that restarts.
    pub(super) zombies: Vec<RestoreZombie>,
    /// The `timens_offsets` of a new time namespace for the tree, in which
    /// the image's clocks go on (see `clocks.rs`); none: the guest's clocks.
    pub(super) clock_offsets: Option<CString>,
    /// Give each process its old pid (the container has a pid namespace).
    pub(super) set_tid: bool,
    /// The pipes its processes share (see `restorer/pipes.rs`).
    pub(super) pipes: PipePlan,
    /// Their shared memory (see `restorer/shm.rs`).
    pub(super) shm: ShmPlan,
}

impl RestorePlan {
    /// Descriptors the child must keep.
    pub(super) fn fds(&self) -> impl Iterator<Item = u32> + '_ {
        let shm = &self.shm;
        let segments = shm.segments.iter().map(|s| s.content);
        let provided = shm.provided.iter().flatten().map(|o| o.fd);
        let procs = self.procs.iter().map(|p| p.fd);
        procs.chain(segments).chain(provided).map(|fd| fd as u32)
    }
}

/// Builds the tree below the init and restarts every process; never
/// returns.
pub(super) fn restore_tree(p: &Prepared, plan: &RestorePlan) -> ! {
    let procs = &plan.procs;
    let mut me = 0usize;
    if let Some(offsets) = &plan.clock_offsets {
        enter_time_namespace(p, offsets);
    }
    pipes::make_pipes(p, &plan.pipes);
    shm::make_segments(p, &plan.shm);
    // SAFETY: runs in the single-threaded child; plain system calls on the
    // plan prepared before the clone, which lives until the process ends.
    unsafe {
        'tree: loop {
            // Session and group first: the children inherit them.
            if plan.set_tid {
                join_session_and_group(p, procs[me], me);
            }
            let parent = procs[me].pid;
            for (i, child) in procs.iter().enumerate() {
                if i == me || child.ppid != parent {
                    continue;
                }
                let ret = clone_with_pid(plan, child.pid);
                if ret == 0 {
                    // The new process builds its own children next.
                    me = i;
                    continue 'tree;
                }
                if ret < 0 {
                    fail(p, Step::RestoreClone, i);
                }
            }
            for zombie in plan.zombies.iter().filter(|z| z.proc.ppid == parent) {
                let ret = clone_with_pid(plan, zombie.proc.pid);
                if ret == 0 {
                    become_zombie(p, plan, zombie, me);
                }
                if ret < 0 {
                    fail(p, Step::RestoreClone, me);
                }
            }
            break;
        }
        pipes::place_ends(p, &plan.pipes, me);
        for (i, other) in procs.iter().enumerate() {
            if i != me {
                libc::close(other.fd);
            }
        }
        libc::close(p.fds.go);
        libc::prctl(libc::PR_SET_NAME, c"crvmm-restore".as_ptr(), 0, 0, 0);
        match plan.shm.provided.get(me).filter(|v| !v.is_empty()) {
            Some(shm) => libc::syscall(
                NR_RESTART,
                0,
                procs[me].fd,
                CR_RESTART_SHM,
                2,
                shm.as_ptr(),
                shm.len() as libc::c_uint,
            ),
            None => libc::syscall(NR_RESTART, 0, procs[me].fd, 0, 2),
        };
        fail(p, Step::Restart, me)
    }
}

/// Makes a time namespace with `offsets` and enters it (allowed to a
/// single-threaded process that has not made children in it yet): the
/// init, and every process it makes, then read the image's clocks.
fn enter_time_namespace(p: &Prepared, offsets: &CString) {
    // SAFETY: plain system calls in the single-threaded child, on a
    // string prepared before the clone and descriptors it owns.
    unsafe {
        if libc::unshare(libc::CLONE_NEWTIME) < 0 {
            fail(p, Step::RestoreClock, 0);
        }
        let fd = libc::open(
            c"/proc/self/timens_offsets".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        let len = offsets.as_bytes().len();
        if fd < 0 || libc::write(fd, offsets.as_ptr().cast(), len) != len as isize {
            fail(p, Step::RestoreClock, 0);
        }
        libc::close(fd);
        let ns = libc::open(
            c"/proc/self/ns/time_for_children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if ns < 0 || libc::setns(ns, libc::CLONE_NEWTIME) < 0 {
            fail(p, Step::RestoreClock, 0);
        }
        libc::close(ns);
    }
}

/// clone3() giving the child `pid` (if the plan sets pids); its return.
fn clone_with_pid(plan: &RestorePlan, pid: i32) -> libc::c_long {
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if plan.set_tid {
            &tid as *const libc::pid_t as u64
        } else {
            0
        },
        set_tid_size: u64::from(plan.set_tid),
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a valid, fully initialised argument block and no
    // stack of ours shared (no CLONE_VM): the child is a copy.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    }
}

/// The child made for a zombie: joins its session and group, then ends
/// the way the zombie did: `_exit` with its code, or killed by its signal
/// (with core dumps off, so no core file is written: the core flag of the
/// status is not kept). A signal whose default action does not kill ends
/// it with code 127 instead.
fn become_zombie(p: &Prepared, plan: &RestorePlan, zombie: &RestoreZombie, parent: usize) -> ! {
    if plan.set_tid {
        join_session_and_group(p, zombie.proc, parent);
    }
    let sig = zombie.status & 0x7f;
    // SAFETY: plain system calls in the single-threaded child, which ends
    // here without running anything of ours.
    unsafe {
        if sig != 0 {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(127);
        }
        libc::_exit((zombie.status >> 8) & 0xff)
    }
}

/// Makes the calling process a session leader if it led its session, and
/// puts it in its process group (creating it if it led that too). Restart
/// leaves both alone, so they survive it. A group led by a process made
/// later cannot be joined: that fails the restore, named.
fn join_session_and_group(p: &Prepared, me: RestoreProc, index: usize) {
    // SAFETY: plain system calls in the single-threaded child.
    unsafe {
        if me.sid != 0 && me.sid == me.pid && libc::setsid() < 0 {
            fail(p, Step::RestoreSession, index);
        }
        if me.pgid != 0 && libc::getpgid(0) != me.pgid && libc::setpgid(0, me.pgid) < 0 {
            fail(p, Step::RestoreSession, index);
        }
    }
}

fn fail(p: &Prepared, step: Step, index: usize) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    report(p.fds.report, step, index, errno);
    // SAFETY: _exit ends the process at once, running nothing of ours.
    unsafe { libc::_exit(1) }
}
