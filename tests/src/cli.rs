//! Driving the `crvmm` binary from tests: a `crvmm run` in the background
//! and one-shot commands against it. The binary's path comes from the
//! caller (`env!("CARGO_BIN_EXE_crvmm")` exists only in crvmm's own tests).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use crate::{GuestImage, AGENT_TIMEOUT};

/// A `crvmm run` in the background, killed when dropped.
pub struct CrvmmRun {
    child: Child,
}

impl CrvmmRun {
    /// Boots the test guest as VM `name` under QEMU with `extra` arguments
    /// and waits until its agent is ready.
    pub fn start(bin: &Path, base: &Path, name: &str, extra: &[&str]) -> CrvmmRun {
        let guest = GuestImage::get();
        let mut child = Command::new(bin)
            .arg("--run-dir")
            .arg(base)
            .args([
                "run",
                "--console",
                "log",
                "--engine",
                "qemu",
                "--name",
                name,
            ])
            // As patient as the harness: a loaded host boots TCG guests slowly.
            .args(["--agent-timeout", &AGENT_TIMEOUT.as_secs().to_string()])
            .args(extra)
            .arg("--kernel")
            .arg(&guest.vmlinux)
            .arg("--initrd")
            .arg(&guest.initramfs)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting crvmm run");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(AGENT_TIMEOUT) {
                Ok(line) if line.contains("agent ready") => break,
                Ok(_) => {}
                Err(e) => panic!("crvmm run {name} never said the agent is ready: {e}"),
            }
        }
        std::thread::spawn(move || rx.iter().for_each(drop));
        CrvmmRun { child }
    }
}

impl CrvmmRun {
    /// Waits up to `timeout` for `crvmm run` to exit; its exit code.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for crvmm run") {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "crvmm run did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for CrvmmRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `crvmm --run-dir BASE ARGS` to completion.
pub fn crvmm(bin: &Path, base: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--run-dir")
        .arg(base)
        .args(args)
        .output()
        .expect("running crvmm")
}

/// Like [`crvmm`], and it must succeed; returns its standard output.
pub fn crvmm_ok(bin: &Path, base: &Path, args: &[&str]) -> String {
    let out = crvmm(bin, base, args);
    assert!(
        out.status.success(),
        "crvmm {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
