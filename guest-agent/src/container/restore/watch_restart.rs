//! Watching a container's processes restart, from the agent.
//!
//! A process counts as restored once it is no longer in `restart(2)`
//! (`/proc/PID/syscall` does not start with its number) and carries the
//! command name of its image: before the call it is the restorer
//! ("crvmm-restore", or the agent's name just after the clone), during it
//! the kernel sets the image's name but the system call is still 464.
//! Once every process has left the restorer (the report pipe is closed),
//! one that is gone either ended after it was restored (a `sleep` that was
//! nearly done) or was killed by the kernel past its point of no return,
//! which the kernel logs: only the latter fails the restore.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crvmm_cr_image::container::Manifest;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::super::cgroup::Cgroup;
use super::super::child::RECORD_LEN;

/// How a restore ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every process runs as itself again.
    Restored,
    /// Why not.
    Failed(String),
}

/// Waits until every process of `manifest` is restored, one fails, the
/// init (`init`, a child of the agent) dies, or `timeout` passes; `log`
/// is the init's log, where the kernel writes its restart lines.
pub fn restored(
    init: i32,
    report: &File,
    cgroup: &Cgroup,
    manifest: &Manifest,
    log: &Path,
    timeout: Duration,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let wanted = manifest.processes.len();
    // Restart closes the report pipe in every process it restores: the end
    // of the pipe is no failure by itself.
    let mut reports_open = true;
    loop {
        if reports_open {
            match read_report(report, manifest) {
                Report::Failure(failure) => return Outcome::Failed(failure),
                Report::Closed => reports_open = false,
                Report::None => {}
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        match waitpid(Pid::from_raw(init), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                return Outcome::Failed(format!("the init exited with code {code}"))
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Outcome::Failed(format!(
                    "the init was killed by {signal} (a restart that fails after its \
                     point of no return is killed by the kernel)"
                ))
            }
            Ok(_) => {}
            Err(e) => return Outcome::Failed(format!("waiting for the init: {e}")),
        }
        let pids = cgroup.pids().unwrap_or_default();
        let alive = pids.len();
        let done = pids
            .into_iter()
            .filter(|&pid| is_restored(pid, manifest))
            .count();
        if done == wanted {
            return Outcome::Restored;
        }
        // No restorer holds the pipe any more: each has restarted or died.
        if !reports_open && alive < wanted {
            if killed_past_no_return(log) {
                return Outcome::Failed(format!(
                    "{} of {wanted} processes ended during the restore",
                    wanted - alive
                ));
            }
            // The others ended after their restart, as they would have.
            if done + (wanted - alive) >= wanted {
                return Outcome::Restored;
            }
        }
        if Instant::now() >= deadline {
            return Outcome::Failed(format!(
                "{done} of {wanted} processes restarted within {} s",
                timeout.as_secs()
            ));
        }
    }
}

/// Whether the kernel killed a restart past its point of no return.
fn killed_past_no_return(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("failed after the point of no return"))
}

/// What the report pipe said.
enum Report {
    /// Nothing within 50 ms.
    None,
    /// Every process that held it has closed it.
    Closed,
    /// A failure, in words.
    Failure(String),
}

/// A failure record on the report pipe (waits up to 50 ms for one).
fn read_report(report: &File, manifest: &Manifest) -> Report {
    let mut pfd = libc::pollfd {
        fd: report.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, exclusively borrowed.
    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
        return Report::None;
    }
    let mut buf = [0u8; RECORD_LEN];
    let n = (&*report).read(&mut buf).unwrap_or(0);
    if n != RECORD_LEN {
        return Report::Closed;
    }
    let step = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
    let index = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    let errno = i32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    let what = match super::super::child::STEPS.get(step as usize) {
        Some(super::super::child::Step::RestoreClone) => "creating",
        Some(super::super::child::Step::Restart) => "restarting",
        _ => "setting up",
    };
    let (pid, comm) = manifest
        .processes
        .get(index)
        .map_or((0, ""), |p| (p.pid, p.comm.as_str()));
    Report::Failure(format!(
        "{what} process {index} (pid {pid} {comm:?}) failed: {}",
        std::io::Error::from_raw_os_error(errno)
    ))
}

/// True when guest process `pid` runs as one of the image's processes.
fn is_restored(pid: u32, manifest: &Manifest) -> bool {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
    let Some(comm) = read("comm") else {
        return false;
    };
    let comm = comm.trim_end();
    let in_restart = read("syscall").is_none_or(|s| s.split_whitespace().next() == Some("464"));
    if in_restart || comm == "crvmm-restore" || comm == "crvmm-agent" {
        return false;
    }
    manifest
        .processes
        .iter()
        .any(|p| p.comm.is_empty() || p.comm == comm)
}
