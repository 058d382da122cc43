//! Exec: run a program to completion with captured output and a time limit.
//!
//! The calling thread does all the waiting: it `poll`s the stdout and stderr
//! pipes and a pidfd of the child, so output is drained concurrently with
//! no reader threads and the exit is seen at once, without sleeping. Only
//! stdin is fed from a thread of its own, so a program that never reads its
//! input cannot block us.
//!
//! The program runs in a process group of its own. On timeout the whole
//! group gets SIGKILL, so a shell's children die with it. When the program
//! exits normally while something it started in the background still holds
//! its output pipes, we stop reading after [`EXIT_GRACE`] and return what
//! we have instead of waiting for the background process.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crvmm_protocol::{ErrorKind, ExecOutput, ExecRequest, ExitStatus};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The environment every program starts with; request variables are added
/// on top and may override these.
pub const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/bin:/sbin:/usr/bin:/usr/sbin"),
    ("HOME", "/root"),
    ("TERM", "linux"),
];

/// How long output pipes may stay open after the program exited.
const EXIT_GRACE: Duration = Duration::from_millis(100);

/// The longest sleep between exit checks when no pidfd is available.
const MAX_BACKOFF: Duration = Duration::from_millis(10);

/// Errors of an exec request.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The request names no program.
    #[error("argv is empty: there is no program to run")]
    EmptyArgv,
    /// The working directory cannot be used.
    #[error("cannot use working directory {cwd}")]
    Cwd {
        /// The requested directory.
        cwd: String,
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// The working directory exists but is not a directory.
    #[error("working directory {0} is not a directory")]
    CwdNotDirectory(String),
    /// The program could not be started.
    #[error("failed to start `{program}`")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The error of fork/exec.
        #[source]
        source: io::Error,
    },
    /// Polling or reading the output pipes failed.
    #[error("failed to collect the output of `{program}`")]
    Capture {
        /// `argv[0]`.
        program: String,
        /// The failing poll or read.
        #[source]
        source: io::Error,
    },
    /// Waiting for the program's exit failed.
    #[error("failed to wait for `{program}`")]
    Wait {
        /// `argv[0]`.
        program: String,
        /// The failing wait.
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::EmptyArgv | ExecError::CwdNotDirectory(_) => ErrorKind::BadRequest,
            ExecError::Spawn { source, .. } if source.kind() == io::ErrorKind::InvalidInput => {
                ErrorKind::BadRequest
            }
            ExecError::Cwd { source, .. } | ExecError::Spawn { source, .. } => source.into(),
            ExecError::Capture { .. } | ExecError::Wait { .. } => ErrorKind::Io,
        }
    }
}

/// Runs `request` to completion, keeping at most `cap` bytes of each of
/// stdout and stderr.
pub fn run(request: ExecRequest, cap: usize) -> Result<ExecOutput, ExecError> {
    let program = request.argv.first().ok_or(ExecError::EmptyArgv)?.clone();
    let cwd = request.cwd.as_deref().unwrap_or("/");
    let meta = std::fs::metadata(cwd).map_err(|source| ExecError::Cwd {
        cwd: cwd.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ExecError::CwdNotDirectory(cwd.to_owned()));
    }

    let mut command = Command::new(&program);
    command
        .args(&request.argv[1..])
        .env_clear()
        .envs(BASE_ENV)
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd);
    supervise(
        command,
        &program,
        request.stdin,
        request.timeout_ms,
        cap,
        Command::spawn,
    )
}

/// Starts `command` with `spawn` (piped stdio, a process group of its
/// own), feeds it `input`, and waits for it as [`run`] does: the part of an
/// exec that containers share (`container::exec` spawns into a container).
pub fn supervise(
    mut command: Command,
    program: &str,
    input: Vec<u8>,
    timeout_ms: Option<u64>,
    cap: usize,
    spawn: impl FnOnce(&mut Command) -> io::Result<std::process::Child>,
) -> Result<ExecOutput, ExecError> {
    let program = program.to_owned();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = spawn(&mut command).map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;

    if let Some(mut stdin) = child.stdin.take() {
        if !input.is_empty() {
            let data = input;
            // Not joined: if a background process inherited stdin and never
            // reads it, the thread ends when that process does.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
    }

    let mut stdout = Capture::new(child.stdout.take(), cap);
    let mut stderr = Capture::new(child.stderr.take(), cap);
    // Readable once the child has exited; without it we poll with backoff.
    let exit_fd = pidfd_open(child.id()).ok();
    let deadline = timeout_ms.map(|ms| started + Duration::from_millis(ms));
    let capture_error = |source| ExecError::Capture {
        program: program.clone(),
        source,
    };

    let mut exited: Option<(std::process::ExitStatus, Duration)> = None;
    let mut timed_out = false;
    let mut backoff = Duration::from_millis(1);
    loop {
        if exited.is_none() {
            let status = child.try_wait().map_err(|source| ExecError::Wait {
                program: program.clone(),
                source,
            })?;
            exited = status.map(|s| (s, started.elapsed()));
        }
        let now = Instant::now();
        let mut wake = None;
        match exited {
            Some((_, after)) => {
                let grace_end = started + after + EXIT_GRACE;
                if !(stdout.is_open() || stderr.is_open()) || now >= grace_end {
                    break;
                }
                wake = Some(grace_end);
            }
            None => {
                if let Some(deadline) = deadline.filter(|_| !timed_out) {
                    if now >= deadline {
                        kill_group(&mut child);
                        timed_out = true;
                    } else {
                        wake = Some(deadline);
                    }
                }
                if exit_fd.is_none() {
                    wake = Some(wake.map_or(now + backoff, |w| w.min(now + backoff)));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }

        let mut fds = Vec::with_capacity(3);
        for fd in [stdout.fd(), stderr.fd()].into_iter().flatten() {
            fds.push(pollfd(fd));
        }
        if let (Some(fd), None) = (&exit_fd, exited) {
            fds.push(pollfd(fd.as_raw_fd()));
        }
        poll(&mut fds, wake.map(|w| w.saturating_duration_since(now))).map_err(capture_error)?;
        for p in &fds {
            if p.revents == 0 {
                continue;
            }
            if Some(p.fd) == stdout.fd() {
                stdout.read_available().map_err(capture_error)?;
            } else if Some(p.fd) == stderr.fd() {
                stderr.read_available().map_err(capture_error)?;
            }
        }
    }

    let (status, duration) = exited.expect("the loop ends only after the exit");
    let status = match (timed_out, status.code(), status.signal()) {
        (true, _, _) => ExitStatus::TimedOut,
        (false, Some(code), _) => ExitStatus::Exited(code),
        (false, None, Some(signal)) => ExitStatus::Signaled(signal),
        (false, None, None) => unreachable!("a reaped process exited or was signaled"),
    };
    Ok(ExecOutput {
        status,
        truncated: stdout.truncated || stderr.truncated,
        stdout: stdout.data,
        stderr: stderr.data,
        duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
    })
}

/// SIGKILL to the program's process group (it leads one of its own).
fn kill_group(child: &mut std::process::Child) {
    // The child is not reaped yet, so its pid (the group id) is still ours.
    let pgid = Pid::from_raw(child.id() as i32);
    if killpg(pgid, Signal::SIGKILL).is_err() {
        let _ = child.kill();
    }
}

/// One output pipe and what was read from it.
struct Capture<R> {
    pipe: Option<R>,
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl<R: Read + AsRawFd> Capture<R> {
    fn new(pipe: Option<R>, cap: usize) -> Self {
        Capture {
            pipe,
            data: Vec::new(),
            cap,
            truncated: false,
        }
    }

    fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    fn fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads once (poll said the pipe is readable or hung up). Bytes past
    /// the cap are read and dropped so the writer never blocks.
    fn read_available(&mut self) -> io::Result<()> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 64 * 1024];
        match pipe.read(&mut buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => {
                let keep = n.min(self.cap - self.data.len());
                self.data.extend_from_slice(&buf[..keep]);
                self.truncated |= keep < n;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll(2)` with an optional timeout (rounded up to whole milliseconds);
/// EINTR counts as a wake-up with no events.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let timeout_ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd structs; poll only writes their `revents` fields.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        fds.iter_mut().for_each(|p| p.revents = 0);
    }
    Ok(())
}

/// A pidfd for `pid` (Linux 5.3+): it polls readable once the process exits.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or
    // -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor (close-on-exec) and
    // nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crvmm_protocol::MAX_CAPTURE;

    fn sh(script: &str) -> ExecRequest {
        ExecRequest::new(["sh", "-c", script])
    }

    #[test]
    fn captures_output_and_exit_code() {
        let out = run(sh("echo out; echo err >&2; exit 3"), MAX_CAPTURE).unwrap();
        assert_eq!(out.status, ExitStatus::Exited(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.truncated);
    }

    #[test]
    fn stdin_round_trip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let mut request = ExecRequest::new(["cat"]);
        request.stdin = data.clone();
        let out = run(request, MAX_CAPTURE).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn program_that_ignores_stdin_does_not_block() {
        let mut request = sh("exit 0");
        request.stdin = vec![b'x'; 1 << 20];
        assert!(run(request, MAX_CAPTURE).unwrap().status.success());
    }

    #[test]
    fn timeout_kills_the_program_and_its_children() {
        let mut request = sh("sleep 5; echo never");
        request.timeout_ms = Some(200);
        let started = Instant::now();
        let out = run(request, MAX_CAPTURE).unwrap();
        assert_eq!(out.status, ExitStatus::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn signal_death_is_reported() {
        let out = run(sh("kill -9 $$"), MAX_CAPTURE).unwrap();
        assert_eq!(out.status, ExitStatus::Signaled(9));
    }

    #[test]
    fn missing_program_is_not_found() {
        let err = run(ExecRequest::new(["/nonexistent/prog"]), MAX_CAPTURE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
        let err = run(ExecRequest::new(["no-such-program-xyz"]), MAX_CAPTURE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn empty_argv_is_a_bad_request() {
        let err = run(ExecRequest::default(), MAX_CAPTURE).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn output_past_the_cap_is_dropped() {
        let out = run(sh("head -c 300000 /dev/zero; echo e >&2"), 1000).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, vec![0u8; 1000]);
        assert_eq!(out.stderr, b"e\n");
        assert!(out.truncated);
    }

    #[test]
    fn environment_is_clean_and_extended() {
        let mut request = sh("echo \"$PATH|$HOME|$TERM|$FOO|$USER\"; pwd");
        request.env = vec![("FOO".into(), "bar".into())];
        request.cwd = Some("/tmp".into());
        let out = run(request, MAX_CAPTURE).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "/bin:/sbin:/usr/bin:/usr/sbin|/root|linux|bar|\n/tmp\n"
        );
    }

    #[test]
    fn missing_cwd_is_not_found() {
        let mut request = ExecRequest::new(["true"]);
        request.cwd = Some("/nonexistent-dir".into());
        assert_eq!(
            run(request, MAX_CAPTURE).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn background_children_do_not_hold_the_reply() {
        let started = Instant::now();
        let out = run(sh("sleep 3 & echo started"), MAX_CAPTURE).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"started\n");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
