//! Shutdown, started after the `Done` answer has been sent.
//!
//! Only [`ShutdownMode::RebootGuest`] ever calls `reboot(2)`, and only
//! `server::run_guest` constructs it: the `--listen-unix` mode used on hosts
//! just exits the process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};

/// What a Shutdown request does.
#[derive(Debug, Clone)]
pub enum ShutdownMode {
    /// Guest mode: stop every process, sync and reset the machine.
    RebootGuest,
    /// Host test mode: remove the listening socket and exit with status 0.
    ExitProcess {
        /// The Unix socket to remove first.
        socket: Option<PathBuf>,
    },
}

/// Time for the reply to leave the guest before processes are stopped.
const REPLY_GRACE: Duration = Duration::from_millis(100);

/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Starts the shutdown; later calls do nothing.
pub fn begin(mode: &ShutdownMode) {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    match mode {
        ShutdownMode::ExitProcess { socket } => {
            if let Some(socket) = socket {
                let _ = std::fs::remove_file(socket);
            }
            log!("shutdown requested: exiting");
            std::process::exit(0);
        }
        ShutdownMode::RebootGuest => {
            thread::spawn(reboot_guest);
        }
    }
}

fn reboot_guest() {
    log!("shutdown requested: stopping all processes");
    thread::sleep(REPLY_GRACE);
    // kill(-1) reaches every process but PID 1 and the caller.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline && other_processes_remain() {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    sync();
    log!("rebooting");
    let Err(e) = reboot(RebootMode::RB_AUTOBOOT);
    log!("reboot failed: {e}");
}

/// True while a live user process other than PID 1 and us exists.
fn other_processes_remain() -> bool {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return false;
        };
        pid != 1
            && pid != me
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| is_live_user_process(&stat))
    })
}

/// Parses `/proc/<pid>/stat`: false for kernel threads and zombies.
fn is_live_user_process(stat: &str) -> bool {
    // The command name is in parentheses and may hold spaces; the fields
    // after it are state, ppid, pgrp, session, tty_nr, tpgid, flags, ...
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(state), Some(flags)) = (fields.first(), fields.get(6)) else {
        return false;
    };
    let kernel_thread = flags.parse::<u64>().is_ok_and(|f| f & PF_KTHREAD != 0);
    !kernel_thread && !matches!(*state, "Z" | "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_proc_stat_lines() {
        let user = "42 (my prog) S 1 42 42 0 -1 4194560 100 0 0 0";
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        let zombie = "77 (sh) Z 1 77 77 0 -1 4227084 0 0 0 0";
        assert!(is_live_user_process(user));
        assert!(!is_live_user_process(kthread));
        assert!(!is_live_user_process(zombie));
        assert!(!is_live_user_process("garbage"));
    }

    #[test]
    fn own_stat_is_a_live_user_process() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(is_live_user_process(&stat));
    }
}
