//! The `crvmm` command line end to end: boot, agent requests from another
//! process, VM control, and teardown on Ctrl-C and on `crvmm stop`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crvmm_tests::{GuestImage, Sandbox, AGENT_TIMEOUT, LINUX_BOOT_TIMEOUT};

const CRVMM: &str = env!("CARGO_BIN_EXE_crvmm");

/// A `crvmm run` in the background, killed if the test fails.
struct Running {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Running {
    fn start(base: &Path, name: &str, channel: &str) -> Running {
        let running = Self::spawn(base, name, &["--engine", "qemu", "--channel", channel]);
        running.wait_for_line("agent ready");
        running
    }

    fn spawn(base: &Path, name: &str, engine_args: &[&str]) -> Running {
        let guest = GuestImage::get();
        let mut cmd = Command::new(CRVMM);
        cmd.arg("--run-dir")
            .arg(base)
            .args(["run", "--console", "log"])
            .args(engine_args)
            .args(["--name", name, "--kernel"])
            .arg(&guest.vmlinux);
        if !engine_args.contains(&"--initrd") {
            cmd.arg("--initrd").arg(&guest.initramfs);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, stderr: rx }
    }

    fn wait_for_line(&self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(AGENT_TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("crvmm run never printed {needle:?}: {e}"),
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "crvmm run did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `crvmm snapshot restore SNAP --name NAME` and waits until it says
/// the VM was restored; its stderr is drained so it can keep writing.
fn restore(base: &Path, snap: &Path, name: &str) -> Child {
    let mut child = Command::new(CRVMM)
        .arg("--run-dir")
        .arg(base)
        .args(["snapshot", "restore"])
        .arg(snap)
        .args(["--name", name])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let restored = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("restored from"));
    assert!(restored, "restoring {} failed", snap.display());
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn crvmm(base: &Path, args: &[&str]) -> Output {
    Command::new(CRVMM)
        .arg("--run-dir")
        .arg(base)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn run_exec_files_control_and_ctrl_c() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let mut run = Running::start(base, "cli", "vsock");

    let out = crvmm(
        base,
        &[
            "agent",
            "cli",
            "exec",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");

    let host_file = base.join("payload.bin");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&host_file, &data).unwrap();
    let out = crvmm(
        base,
        &["agent", "cli", "put", host_file.to_str().unwrap(), "/tmp/p"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crvmm(base, &["agent", "cli", "get", "/tmp/p", "-"]);
    assert_eq!(out.stdout, data);
    std::fs::remove_file(&host_file).unwrap();

    let out = crvmm(base, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "cli");
    assert_eq!(list[0]["engine"], "qemu");

    assert!(crvmm(base, &["pause", "cli"]).status.success());
    let table = String::from_utf8(crvmm(base, &["list"]).stdout).unwrap();
    assert!(table.contains("paused"), "{table}");
    let out = crvmm(base, &["agent", "cli", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is paused; resume it first"));
    assert!(crvmm(base, &["resume", "cli"]).status.success());
    let table = String::from_utf8(crvmm(base, &["list"]).stdout).unwrap();
    assert!(table.contains("running"), "{table}");

    // Unknown VM: a clear error listing the running ones.
    let out = crvmm(base, &["agent", "nope", "hello"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running: cli"));

    // Ctrl-C tears everything down.
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    assert_eq!(run.wait(Duration::from_secs(20)), 130);
    sandbox.assert_clean();
}

#[test]
fn stop_shuts_the_guest_down_cleanly() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let mut run = Running::start(base, "stopme", "serial");
    let out = crvmm(base, &["stop", "stopme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        run.wait(Duration::from_secs(30)),
        0,
        "a guest shutdown exits 0"
    );
    sandbox.assert_clean();
}

#[test]
fn bad_kernel_is_a_clear_error() {
    let sandbox = Sandbox::new();
    let out = Command::new(CRVMM)
        .arg("--run-dir")
        .arg(sandbox.base())
        .args(["run", "--engine", "qemu", "--kernel", "/etc/hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/etc/hostname is not a Linux kernel"), "{err}");
    sandbox.assert_clean();
}

#[test]
fn kvm_engine_from_the_cli() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let mut run = Running::spawn(base, "k1", &["--engine", "kvm"]);
    let nested_pvm = Path::new("/sys/module/kvm_pvm").exists();
    if nested_pvm {
        let line = run.wait_for_line("kvm_pvm");
        assert!(line.contains("use --engine qemu"), "{line}");
    }
    run.wait_for_line("booting with the kvm engine");
    let out = crvmm(base, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["engine"], "kvm");
    assert!(crvmm(base, &["pause", "k1"]).status.success());
    let table = String::from_utf8(crvmm(base, &["list"]).stdout).unwrap();
    assert!(table.contains("paused"), "{table}");
    assert!(crvmm(base, &["resume", "k1"]).status.success());
    if !nested_pvm {
        run.wait_for_line("agent ready");
        let out = crvmm(base, &["agent", "k1", "exec", "--", "uname", "-r"]);
        assert!(String::from_utf8_lossy(&out.stdout).ends_with("-crvmm\n"));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    assert_eq!(run.wait(Duration::from_secs(20)), 130);
    sandbox.assert_clean();
}

#[test]
fn kvm_snapshot_in_one_process_restores_in_another() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let guest = GuestImage::get();
    let mut run = Running::spawn(
        base,
        "src",
        &[
            "--engine",
            "kvm",
            "--initrd",
            guest.init_only.to_str().unwrap(),
        ],
    );
    run.wait_for_line("booting with the kvm engine");
    let log = base.join("src/serial.log");
    crvmm_tests::wait_for_text(&log, "smp: Brought up", LINUX_BOOT_TIMEOUT);
    let snap = base.join("src.snap");
    let out = crvmm(
        base,
        &[
            "snapshot",
            "create",
            "src",
            snap.to_str().unwrap(),
            "--after",
            "exit",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("MiB, guest paused"));
    assert_eq!(
        run.wait(Duration::from_secs(30)),
        0,
        "the source ends cleanly after the snapshot"
    );

    let out = crvmm(base, &["snapshot", "inspect", snap.to_str().unwrap()]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["mem_mib"], 256);
    assert_eq!(state["machine"]["vcpus"].as_array().unwrap().len(), 1);

    let mut restored = restore(base, &snap, "dst");
    // The restored kernel goes on from mid-boot: it never prints its
    // banner again, and it gets further than where it stopped.
    let text = crvmm_tests::wait_for_text(
        &base.join("dst/serial.log"),
        "NET: Registered PF_VSOCK protocol family",
        LINUX_BOOT_TIMEOUT,
    );
    assert!(!text.contains("Linux version"));
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(restored.id() as i32, libc::SIGINT) };
    let status = restored.wait().unwrap();
    assert!(matches!(status.code(), Some(130 | 0)), "{status:?}");
    std::fs::remove_dir_all(&snap).unwrap();
    sandbox.assert_clean();
}

#[test]
fn a_snapshot_killed_halfway_never_looks_complete() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let guest = GuestImage::get();
    let init_only = guest.init_only.to_str().unwrap();
    let mut run = Running::spawn(
        base,
        "big",
        &[
            "--engine",
            "kvm",
            "--mem-mib",
            "1024",
            "--initrd",
            init_only,
        ],
    );
    run.wait_for_line("booting with the kvm engine");
    let prev = base.join("prev.snap");
    let out = crvmm(base, &["snapshot", "create", "big", prev.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill the VM's owner while it writes the next one.
    let next = base.join("next.snap");
    let create = Command::new(CRVMM)
        .arg("--run-dir")
        .arg(base)
        .args(["snapshot", "create", "big", next.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The moment the owner starts writing, kill it.
    let partial_exists = || {
        std::fs::read_dir(base)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("next.snap.partial-")
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !partial_exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGKILL) };
    let out = create.wait_with_output().unwrap();
    assert!(!out.status.success(), "the interrupted snapshot must fail");
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    let _ = run.wait(Duration::from_secs(10));

    assert!(
        !next.exists(),
        "an interrupted snapshot must not look complete"
    );
    let partial: Vec<_> = std::fs::read_dir(base)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("next.snap.partial-"))
        .collect();
    assert_eq!(
        partial.len(),
        1,
        "the half-written snapshot keeps its temporary name"
    );
    // The previous snapshot is whole: inspect reads it, restore runs it.
    let out = crvmm(base, &["snapshot", "inspect", prev.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut restored = restore(base, &prev, "again");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(restored.id() as i32, libc::SIGINT) };
    restored.wait().unwrap();

    // What the killed owner left behind: its run directory (a later VM of
    // the same name clears it) and the partial snapshot.
    for p in partial.into_iter().chain([prev, base.join("big")]) {
        std::fs::remove_dir_all(p).unwrap();
    }
    sandbox.assert_clean();
}

#[test]
fn qemu_snapshot_from_another_process_restores_with_the_workload() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let mut run = Running::start(base, "q", "serial");
    let start = "/usr/lib/crvmm/programs/counter 4 /tmp/c.state >/dev/null 2>&1 &";
    assert!(
        crvmm(base, &["agent", "q", "exec", "--", "sh", "-c", start])
            .status
            .success()
    );
    let count = |vm: &str| -> u64 {
        let out = crvmm(base, &["agent", vm, "exec", "--", "cat", "/tmp/c.state"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count("q") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the counter does not run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = count("q");
    let snap = base.join("q.snap");
    let out = crvmm(
        base,
        &[
            "snapshot",
            "create",
            "q",
            snap.to_str().unwrap(),
            "--after",
            "exit",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run.wait(Duration::from_secs(30)), 0);
    let out = crvmm(base, &["snapshot", "create", "q", "/tmp/x", "--diff"]);
    assert!(!out.status.success(), "the VM is gone");

    let mut restored = restore(base, &snap, "q2");
    let after = count("q2");
    assert!(after >= before, "the count went back: {before} -> {after}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count("q2") <= after {
        assert!(
            std::time::Instant::now() < deadline,
            "the restored counter does not go on"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(crvmm(base, &["stop", "q2"]).status.success());
    assert_eq!(restored.wait().unwrap().code(), Some(0));
    std::fs::remove_dir_all(&snap).unwrap();
    sandbox.assert_clean();
}
