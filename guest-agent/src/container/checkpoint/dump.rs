//! The dump step of a container checkpoint: the container's process tree
//! from its cgroup and `/proc`, the manifest, and each process's kernel
//! image through `checkpoint(2)`, streamed into the container image with
//! no copy in the guest.
//!
//! Each process goes through a pipe: a thread of ours sits in the system
//! call writing the image into it while this thread reads it and hands it
//! to the image writer. Dropping the read end makes the kernel's next write
//! fail with `EPIPE` (SIGPIPE is ignored in the agent), which is how a dump
//! stops when its destination goes away.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::thread;

use crvmm_cr_image::container::{ContainerWriter, Manifest, ProcessEntry, ZombieEntry};
use nix::errno::Errno;

use super::sink::SinkStatus;

/// `checkpoint(pid, fd, flags, logfd)` on x86-64 (`CR_NR_CHECKPOINT`).
const SYS_CHECKPOINT: libc::c_long = 463;

/// `CR_CHECKPOINT_INHERIT_STDIO`: descriptors 0 to 2 are not saved; a
/// restored process gets those of its restorer (the new container's).
const CHECKPOINT_INHERIT_STDIO: libc::c_ulong = 0x1;

/// The kernel's image format version, as the running kernel states it.
pub const FORMAT_VERSION_FILE: &str = "/sys/kernel/checkpoint/format_version";

/// The pipe size asked for (the default `pipe-max-size`): fewer wake-ups.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The most the kernel's log of one checkpoint is read.
const MAX_LOG: usize = 4096;

/// Why the dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// `cgroup.procs` could not be read.
    #[error("listing the container's processes")]
    List(#[source] super::super::cgroup::CgroupError),
    /// A process's `/proc` files could not be read.
    #[error("reading /proc/{pid}/{file}")]
    Proc {
        /// Its guest PID.
        pid: u32,
        /// The file.
        file: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A `/proc/<pid>/status` without the fields we need.
    #[error("/proc/{0}/status has no PPid or NSpid line")]
    Status(u32),
    /// The container's init is not in its cgroup.
    #[error("the container's init (guest pid {0}) is not in its cgroup")]
    NoInit(i32),
    /// A process whose parent is not in the container.
    #[error(
        "process {pid} ({comm}, guest pid {guest_pid}) has its parent (guest pid {ppid}) outside \
         the container: a program exec'd into it is still running; checkpoint once it ended"
    )]
    OutsideParent {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its guest pid.
        guest_pid: i32,
        /// Its parent's guest pid.
        ppid: i32,
    },
    /// More processes than an image holds.
    #[error("{0} processes: an image holds at most {max}", max = crvmm_cr_image::container::format::CT_MAX_PROCESSES)]
    TooMany(usize),
    /// Starting the image (its header) failed.
    #[error("writing the image header")]
    Header(#[source] io::Error),
    /// The pipe, log file or thread for a process could not be made.
    #[error("preparing the checkpoint of process {pid} ({comm})")]
    Prepare {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel refused or failed the checkpoint of a process.
    #[error(
        "dumping process {pid} ({comm}, guest pid {guest_pid}): the kernel's checkpoint failed \
         with {errno:?}: {log}"
    )]
    Kernel {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its guest pid.
        guest_pid: i32,
        /// The errno of `checkpoint(2)`.
        errno: Errno,
        /// The kernel's log line (or the errno's description without one).
        log: String,
    },
    /// A process in a state stage 1 cannot restore (a zombie, a stopped
    /// process), found before anything is dumped.
    #[error(
        "process {pid} ({comm}, guest pid {guest_pid}) is {what}: not supported yet \
         (restart would bring it back running)"
    )]
    Unsupported {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Its guest pid.
        guest_pid: i32,
        /// Its state, in words.
        what: &'static str,
    },
    /// A pipe or FIFO that cannot be saved.
    #[error("process {pid} ({comm}) fd {fd}: {what}: not supported")]
    Pipe {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// The descriptor.
        fd: i32,
        /// What the pipe is, in words.
        what: String,
    },
    /// Shared memory that cannot be saved.
    #[error("process {pid} ({comm}): {what}: not supported")]
    Shared {
        /// Its pid in the container.
        pid: i32,
        /// Its command name.
        comm: String,
        /// What it maps, in words.
        what: String,
    },
    /// Shared memory could not be read (or its records written).
    #[error("saving the container's shared memory")]
    SharedData(#[source] io::Error),
    /// Writing the image failed (a destination, or the writer itself).
    #[error("writing the image of process {pid} ({comm})")]
    Write {
        /// Its pid in the container (0: outside any process).
        pid: i32,
        /// Its command name.
        comm: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The trailer or the last bytes could not be written.
    #[error("finishing the image")]
    Finish(#[source] io::Error),
}

impl DumpError {
    /// The errno recorded in the image's ERROR record.
    pub fn errno(&self) -> i32 {
        match self {
            DumpError::Kernel { errno, .. } => *errno as i32,
            DumpError::TooMany(_) => libc::E2BIG,
            DumpError::Unsupported { .. } | DumpError::Pipe { .. } | DumpError::Shared { .. } => {
                libc::EOPNOTSUPP
            }
            DumpError::OutsideParent { .. } => libc::EBUSY,
            DumpError::Status(_) | DumpError::NoInit(_) => libc::ESRCH,
            DumpError::List(_) => libc::EIO,
            DumpError::Proc { source, .. }
            | DumpError::Header(source)
            | DumpError::SharedData(source)
            | DumpError::Prepare { source, .. }
            | DumpError::Write { source, .. }
            | DumpError::Finish(source) => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// True when the kernel refused something it does not support.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            DumpError::Unsupported { .. } | DumpError::Pipe { .. } | DumpError::Shared { .. }
        ) || matches!(
            self,
            DumpError::Kernel { errno, .. }
                if matches!(errno, Errno::EOPNOTSUPP | Errno::ETOOMANYREFS)
        )
    }
}

/// What `/proc/<pid>/status` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusIds {
    /// Its parent's guest PID.
    pub ppid: i32,
    /// Its PID in the innermost PID namespace it is in (the last NSpid field).
    pub ns_pid: i32,
    /// Its process group there (0: a group led from outside it).
    pub ns_pgid: i32,
    /// Its session there (0 likewise).
    pub ns_sid: i32,
}

/// The PPid and the last NSpid (NSpgid, NSsid) field of a
/// `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Option<StatusIds> {
    let mut ppid = None;
    let mut ns_pid = None;
    let (mut ns_pgid, mut ns_sid) = (0, 0);
    let last = |rest: &str| rest.split_whitespace().last()?.parse().ok();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("PPid:") {
            ppid = rest.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("NSpid:") {
            ns_pid = last(rest);
        } else if let Some(rest) = line.strip_prefix("NSpgid:") {
            ns_pgid = last(rest).unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("NSsid:") {
            ns_sid = last(rest).unwrap_or(0);
        }
    }
    Some(StatusIds {
        ppid: ppid?,
        ns_pid: ns_pid?,
        ns_pgid,
        ns_sid,
    })
}

/// A zombie's state in words.
const ZOMBIE: &str = "a zombie (exited, not yet reaped by its parent)";

/// The state of a `/proc/<pid>/status` text in words, if it is not one
/// of a running or sleeping process.
pub fn unsupported_state(status: &str) -> Option<&'static str> {
    let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
    match state.trim_start().chars().next()? {
        'Z' => Some(ZOMBIE),
        'T' => Some("stopped (SIGSTOP or a job-control signal)"),
        't' => Some("stopped by a tracer"),
        _ => None,
    }
}

/// One process found in the cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its guest PID.
    pub guest_pid: i32,
    /// Its parent's guest PID.
    pub guest_ppid: i32,
    /// Its PID in the container's PID namespace.
    pub ns_pid: i32,
    /// Its process group and session there.
    pub ns_pgid: i32,
    /// (0: outside the namespace.)
    pub ns_sid: i32,
    /// Its command name.
    pub comm: String,
}

/// A zombie child of the container's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundZombie {
    /// Its ids and name, as for a live process.
    pub found: Found,
    /// Its wait status.
    pub status: i32,
}

/// The container's processes and its zombies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// Live processes (those of cgroup.procs).
    pub processes: Vec<Found>,
    /// Exited children of theirs not yet reaped.
    pub zombies: Vec<FoundZombie>,
}

/// Reads what the manifest needs about each guest PID in `pids`, collects
/// the zombies among their children (cgroup.procs does not list exited
/// processes), and refuses any other child not among them (a process moved
/// to another cgroup).
pub fn inspect(pids: &[u32]) -> Result<Inspected, DumpError> {
    let processes = inspect_listed(pids)?;
    let zombies = unlisted_children(pids)?;
    Ok(Inspected { processes, zombies })
}

/// The wait status of a zombie from its `/proc/<pid>/stat` (field 52,
/// `exit_code`).
pub fn exit_status(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(49)?.parse().ok()
}

/// The manifest's zombie entries: `found`'s zombies, their parents named
/// by container PID (from `processes`, the manifest's list).
pub fn zombies(found: &Inspected, processes: &[ProcessEntry]) -> Vec<ZombieEntry> {
    found
        .zombies
        .iter()
        .filter_map(|z| {
            let parent = processes
                .iter()
                .find(|p| p.guest_pid == z.found.guest_ppid)?;
            Some(ZombieEntry {
                pid: z.found.ns_pid,
                ppid: parent.pid,
                comm: z.found.comm.clone(),
                pgid: z.found.ns_pgid,
                sid: z.found.ns_sid,
                status: z.status,
            })
        })
        .collect()
}

fn unlisted_children(pids: &[u32]) -> Result<Vec<FoundZombie>, DumpError> {
    let listed: std::collections::BTreeSet<i32> = pids.iter().map(|&p| p as i32).collect();
    let mut zombies = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Ok(zombies);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if listed.contains(&pid) {
            continue;
        }
        // A process that ended meanwhile is no concern.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let Some(ids) = parse_status(&status) else {
            continue;
        };
        if !listed.contains(&ids.ppid) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim_end().to_owned();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = unsupported_state(&status) == Some(ZOMBIE);
        match exit_status(&stat).filter(|&s| zombie && ZombieEntry::status_valid(s)) {
            Some(status) => zombies.push(FoundZombie {
                found: Found {
                    guest_pid: pid,
                    guest_ppid: ids.ppid,
                    ns_pid: ids.ns_pid,
                    ns_pgid: ids.ns_pgid,
                    ns_sid: ids.ns_sid,
                    comm,
                },
                status,
            }),
            None => {
                return Err(DumpError::Unsupported {
                    pid: ids.ns_pid,
                    comm,
                    guest_pid: pid,
                    what: unsupported_state(&status)
                        .unwrap_or("a child of the container outside its cgroup"),
                })
            }
        }
    }
    zombies.sort_by_key(|z| z.found.ns_pid);
    Ok(zombies)
}

fn inspect_listed(pids: &[u32]) -> Result<Vec<Found>, DumpError> {
    pids.iter()
        .map(|&pid| {
            let read = |file: &'static str| {
                std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .map_err(|source| DumpError::Proc { pid, file, source })
            };
            let status = read("status")?;
            let ids = parse_status(&status).ok_or(DumpError::Status(pid))?;
            let comm = read("comm")?.trim_end_matches('\n').to_owned();
            if let Some(what) = unsupported_state(&status) {
                return Err(DumpError::Unsupported {
                    pid: ids.ns_pid,
                    comm,
                    guest_pid: pid as i32,
                    what,
                });
            }
            Ok(Found {
                guest_pid: pid as i32,
                guest_ppid: ids.ppid,
                ns_pid: ids.ns_pid,
                ns_pgid: ids.ns_pgid,
                ns_sid: ids.ns_sid,
                comm,
            })
        })
        .collect()
}

/// Orders `found` parents before children from the init (guest PID
/// `init`), siblings by PID, and gives each its container PIDs: the
/// manifest's process list, and the guest PID of each entry.
pub fn tree(init: i32, found: &[Found]) -> Result<Vec<ProcessEntry>, DumpError> {
    if found.len() > crvmm_cr_image::container::format::CT_MAX_PROCESSES {
        return Err(DumpError::TooMany(found.len()));
    }
    let by_guest: BTreeMap<i32, &Found> = found.iter().map(|f| (f.guest_pid, f)).collect();
    let root = by_guest.get(&init).ok_or(DumpError::NoInit(init))?;
    // Children of each guest PID, sorted by container PID.
    let mut children: BTreeMap<i32, Vec<&Found>> = BTreeMap::new();
    for f in found.iter().filter(|f| f.guest_pid != init) {
        if !by_guest.contains_key(&f.guest_ppid) {
            return Err(DumpError::OutsideParent {
                pid: f.ns_pid,
                comm: f.comm.clone(),
                guest_pid: f.guest_pid,
                ppid: f.guest_ppid,
            });
        }
        children.entry(f.guest_ppid).or_default().push(f);
    }
    children
        .values_mut()
        .for_each(|list| list.sort_by_key(|f| f.ns_pid));
    let mut order: Vec<(&Found, i32)> = vec![(root, 0)];
    let mut next = 0;
    while next < order.len() {
        let (parent, _) = order[next];
        for child in children.get(&parent.guest_pid).into_iter().flatten() {
            order.push((child, parent.ns_pid));
        }
        next += 1;
    }
    Ok(order
        .into_iter()
        .enumerate()
        .map(|(index, (f, ppid))| ProcessEntry {
            index: index as u32,
            pid: f.ns_pid,
            ppid,
            guest_pid: f.guest_pid,
            comm: f.comm.clone(),
            pgid: f.ns_pgid,
            sid: f.ns_sid,
        })
        .collect())
}

/// The running kernel's checkpoint image format version.
pub fn kernel_format() -> io::Result<u32> {
    let text = std::fs::read_to_string(FORMAT_VERSION_FILE)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{FORMAT_VERSION_FILE} holds {text:?}, not a number"),
        )
    })
}

/// Writes the image of `manifest`'s processes into `writer`, stopping at
/// the first failure of the kernel or of a destination (seen in `status`).
pub fn dump_processes<W: Write>(
    writer: &mut ContainerWriter<W>,
    manifest: &Manifest,
    status: &SinkStatus,
) -> Result<(), DumpError> {
    ignore_sigpipe();
    for entry in &manifest.processes {
        dump_one(writer, entry, status)?;
    }
    Ok(())
}

/// One process: `checkpoint(2)` on a thread, its output pumped into the
/// image here.
fn dump_one<W: Write>(
    writer: &mut ContainerWriter<W>,
    entry: &ProcessEntry,
    status: &SinkStatus,
) -> Result<(), DumpError> {
    let prepare = |source| DumpError::Prepare {
        pid: entry.pid,
        comm: entry.comm.clone(),
        source,
    };
    let write_error = |source| DumpError::Write {
        pid: entry.pid,
        comm: entry.comm.clone(),
        source,
    };
    let (read_end, write_end) = pipe().map_err(prepare)?;
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int. A
    // refusal only leaves the default size.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    let log = super::super::memfd("crvmm-checkpoint-log").map_err(prepare)?;
    let logfd = log.as_raw_fd();
    let guest_pid = entry.guest_pid;
    writer.begin_process(entry.pid).map_err(write_error)?;
    let worker = thread::Builder::new()
        .name(format!("checkpoint-{guest_pid}"))
        .spawn(move || {
            let result = sys_checkpoint(guest_pid, write_end.as_raw_fd(), logfd);
            // The reader sees the end of the image once this is closed.
            drop(write_end);
            result
        })
        .map_err(prepare)?;
    let mut pipe = File::from(read_end);
    let pumped = pump(&mut pipe, writer, status);
    // A kernel still writing now gets EPIPE and returns.
    drop(pipe);
    let result = worker.join().unwrap_or(Err(Errno::EIO));
    pumped.map_err(write_error)?;
    if let Err(errno) = result {
        let mut log = read_log(&log);
        if log.is_empty() {
            log = errno.desc().to_owned();
        }
        return Err(DumpError::Kernel {
            pid: entry.pid,
            comm: entry.comm.clone(),
            guest_pid,
            errno,
            log,
        });
    }
    writer.end_process().map_err(write_error)
}

/// Copies the pipe into the image until the kernel closes it, or a
/// destination fails.
fn pump<W: Write>(
    pipe: &mut File,
    writer: &mut ContainerWriter<W>,
    status: &SinkStatus,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.data(&buf[..n])?;
        status.advance(n as u64);
        if let Some(destination) = status.failed() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("the {destination:?} destination failed"),
            ));
        }
    }
}

/// The kernel's log lines, on one line.
fn read_log(log: &OwnedFd) -> String {
    // SAFETY: the descriptor is borrowed for the read only: ManuallyDrop
    // keeps the File from closing what `log` still owns.
    let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(log.as_raw_fd()) });
    let mut buf = vec![0u8; MAX_LOG];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `checkpoint(pid, fd, CR_CHECKPOINT_INHERIT_STDIO, logfd)`.
fn sys_checkpoint(pid: i32, fd: RawFd, logfd: RawFd) -> Result<(), Errno> {
    // SAFETY: the system call takes four integers; the kernel only writes
    // to the two descriptors, which stay open for the whole call (`fd` is
    // owned by the calling thread, `logfd` by the caller of dump_one, which
    // joins this thread before closing it).
    let rc = unsafe {
        libc::syscall(
            SYS_CHECKPOINT,
            pid as libc::c_long,
            fd as libc::c_long,
            CHECKPOINT_INHERIT_STDIO,
            logfd as libc::c_long,
        )
    };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes sure a write into a pipe whose reader is gone fails with EPIPE
/// instead of killing the agent. Rust programs start with SIGPIPE ignored
/// already (and the agent, forked by PID 1, inherits that); this keeps it
/// true whatever changed it.
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // and touches no memory of ours.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_the_parent_and_the_innermost_pid() {
        let text = "Name:\tcounter\nState:\tS (sleeping)\nTgid:\t215\nNgid:\t0\n\
                    Pid:\t215\nPPid:\t212\nTracerPid:\t0\nNSpid:\t215\t3\nNSpgid:\t215\t3\n\
                    NSsid:\t200\t0\n";
        assert_eq!(
            parse_status(text),
            Some(StatusIds {
                ppid: 212,
                ns_pid: 3,
                ns_pgid: 3,
                ns_sid: 0,
            })
        );
        let flat = "PPid:\t1\nNSpid:\t77\n";
        assert_eq!(
            parse_status(flat),
            Some(StatusIds {
                ppid: 1,
                ns_pid: 77,
                ns_pgid: 0,
                ns_sid: 0,
            })
        );
        assert_eq!(parse_status("PPid:\t1\n"), None);
        assert_eq!(parse_status("NSpid:\t3\n"), None);
    }

    #[test]
    fn a_zombies_exit_status_is_the_last_stat_field() {
        let zeros = vec!["0"; 48].join(" ");
        let stat = format!("7 (sh (x) y) Z {zeros} 2304\n");
        assert_eq!(exit_status(&stat), Some(2304));
        assert_eq!(exit_status("7 (sh) Z 1 2"), None);
        assert_eq!(exit_status("garbage"), None);
    }

    #[test]
    fn zombies_and_stopped_processes_are_named() {
        assert!(unsupported_state("Name:\tsh\nState:\tZ (zombie)\n")
            .unwrap()
            .contains("zombie"));
        assert!(unsupported_state("State:\tT (stopped)\n")
            .unwrap()
            .contains("SIGSTOP"));
        assert_eq!(unsupported_state("State:\tS (sleeping)\n"), None);
        assert_eq!(unsupported_state("State:\tD (disk sleep)\n"), None);
        assert_eq!(unsupported_state("Name:\tx\n"), None);
    }

    fn found(guest_pid: i32, guest_ppid: i32, ns_pid: i32, comm: &str) -> Found {
        Found {
            guest_pid,
            guest_ppid,
            ns_pid,
            ns_pgid: 0,
            ns_sid: 0,
            comm: comm.into(),
        }
    }

    #[test]
    fn tree_puts_parents_first_and_maps_pids() {
        // init 100 (pid 1, parent the agent 50) with children 1 0 3 and
        // 1 0 2; the latter has a child.
        let list = [
            found(103, 101, 4, "grandchild"),
            found(101, 100, 3, "b"),
            found(100, 50, 1, "init"),
            found(102, 100, 2, "a"),
        ];
        let entries = tree(100, &list).unwrap();
        let got: Vec<(u32, i32, i32, i32, &str)> = entries
            .iter()
            .map(|e| (e.index, e.pid, e.ppid, e.guest_pid, e.comm.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, 1, 0, 100, "init"),
                (1, 2, 1, 102, "a"),
                (2, 3, 1, 101, "b"),
                (3, 4, 3, 103, "grandchild"),
            ]
        );
    }

    #[test]
    fn tree_refuses_outside_parents_and_a_missing_init() {
        let list = [found(100, 50, 1, "init"), found(120, 50, 5, "exec")];
        let err = tree(100, &list).unwrap_err();
        assert!(
            matches!(err, DumpError::OutsideParent { pid: 5, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("process 5 (exec, guest pid 120)"),
            "{err}"
        );
        assert!(matches!(tree(99, &list), Err(DumpError::NoInit(99))));
    }

    #[test]
    fn kernel_errors_name_the_process_errno_and_log() {
        let err = DumpError::Kernel {
            pid: 1,
            comm: "cr_target".into(),
            guest_pid: 212,
            errno: Errno::ETOOMANYREFS,
            log: "checkpoint: pid 212: resource threads: 2 threads".into(),
        };
        assert_eq!(
            err.to_string(),
            "dumping process 1 (cr_target, guest pid 212): the kernel's checkpoint failed with \
             ETOOMANYREFS: checkpoint: pid 212: resource threads: 2 threads"
        );
        assert!(err.is_unsupported());
        assert_eq!(err.errno(), libc::ETOOMANYREFS);
    }

    #[test]
    fn the_log_file_is_read_back_on_one_line() {
        let log = crate::container::memfd("test-log").unwrap();
        let mut file = File::from(log.try_clone().unwrap());
        file.write_all(b"checkpoint: pid 5: first\n\ncheckpoint: pid 5: second\n")
            .unwrap();
        assert_eq!(
            read_log(&log),
            "checkpoint: pid 5: first; checkpoint: pid 5: second"
        );
    }
}
