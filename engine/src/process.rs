//! Host child processes (QEMU, vhost-device-vsock): started so that they die
//! with us, and stopped politely first, then firmly.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct Supervised {
    child: Option<Child>,
    program: String,
}

impl Supervised {
    /// Starts `command`. The child gets SIGKILL if this process dies (so a
    /// crashed or killed `crvmm` leaves no VMM behind) and, with
    /// `own_group`, a process group of its own (so a Ctrl-C at the terminal
    /// reaches only us, and we stop it in order).
    pub fn spawn(mut command: Command, own_group: bool) -> Result<Supervised, EngineError> {
        let program = command.get_program().to_string_lossy().into_owned();
        if own_group {
            command.process_group(0);
        }
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl and getppid, which are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| EngineError::Spawn {
            program: program.clone(),
            source,
        })?;
        Ok(Supervised {
            child: Some(child),
            program,
        })
    }

    /// The process id, while it has not been reaped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Returns the exit status as text once the process has ended.
    pub fn try_wait(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL, and reaps.
    pub fn stop(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: the child has not been reaped (try_wait said it
                // runs), so the pid still names it.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if self.wait_timeout(grace).is_none() {
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// The program's name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Finds `program` in `PATH` or in `~/.cargo/bin` (where `cargo install`
/// puts it), or says how to install it.
pub fn find_program(program: &str, install: &str) -> Result<PathBuf, EngineError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| EngineError::MissingProgram {
            program: program.into(),
            install: install.into(),
        })
}

/// Waits until `path` exists, the process ends, or `timeout` passes.
pub fn wait_for_path(
    path: &Path,
    process: &mut Supervised,
    log: &Path,
    timeout: Duration,
) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(status) = process.try_wait() {
            return Err(EngineError::HelperExited {
                program: process.program().into(),
                status,
                log_tail: log_tail(log, 20),
            });
        }
        if Instant::now() >= deadline {
            return Err(EngineError::HelperExited {
                program: process.program().into(),
                status: format!("did not create {} in {timeout:?}", path.display()),
                log_tail: log_tail(log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_a_process_that_ignores_sigterm() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; sleep 30"]);
        let mut p = Supervised::spawn(cmd, true).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        p.stop(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(p.try_wait().is_none(), "reaped process has no status left");
    }

    #[test]
    fn log_tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&dir.path().join("none"), 2), "");
    }

    #[test]
    fn missing_program_says_how_to_install() {
        let err = find_program("crvmm-no-such-program", "apt-get install x").unwrap_err();
        assert!(err.to_string().contains("apt-get install x"));
    }
}
