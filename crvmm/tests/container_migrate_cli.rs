//! The container lab through the host CLI, as a user runs it (issue 6's
//! "done when"): a counter container checkpointed with --leave-running
//! keeps running; a second checkpoint, zstd-compressed, kills it; restored
//! in a second VM, the counter goes on from where it stood, as pid 1 with
//! the same hostname, and its memory checks out. The image written to a
//! guest file equals the streamed one, and a damaged image is refused
//! without leaving a container behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crvmm_tests::cli::{arg, crvmm, crvmm_ok, CrvmmRun};
use crvmm_tests::Sandbox;

const CRVMM: &str = env!("CARGO_BIN_EXE_crvmm");

fn run(base: &Path, args: &[&str]) -> String {
    crvmm_ok(Path::new(CRVMM), base, args)
}

/// The counter in `/tmp/state` of container `id` in `vm`, if it has one.
fn try_count(base: &Path, vm: &str, id: &str) -> Option<u64> {
    let out = crvmm(
        Path::new(CRVMM),
        base,
        &[
            "container",
            "--vm",
            vm,
            "exec",
            id,
            "--",
            "cat",
            "/tmp/state",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().nth(1)?.parse().ok()
}

fn count(base: &Path, vm: &str, id: &str) -> u64 {
    try_count(base, vm, id).unwrap_or_else(|| panic!("{id} in {vm} has no count"))
}

fn wait_count_above(base: &Path, vm: &str, id: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match try_count(base, vm, id) {
            Some(c) if c > n => return c,
            last => assert!(
                Instant::now() < deadline,
                "{id} in {vm}: count stuck at {last:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn checkpoint_in_one_vm_restore_in_another() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--mem-mib", "384", "--vcpus", "2"];
    let _a = CrvmmRun::start(Path::new(CRVMM), base, "lab-a", &extra);
    let _b = CrvmmRun::start(Path::new(CRVMM), base, "lab-b", &extra);
    let counter = "/usr/lib/crvmm/programs/counter";
    run(
        base,
        &[
            "container",
            "--vm",
            "lab-a",
            "create",
            "--id",
            "web",
            "--hostname",
            "web",
            "--",
            counter,
            "8",
            "/tmp/state",
        ],
    );
    wait_count_above(base, "lab-a", "web", 3);

    // 1. --leave-running: streamed and written to a guest file at once;
    // the two are the same bytes, and the container counts on.
    let plain = dir.path().join("web-1.img");
    let report = json(&run(
        base,
        &[
            "container",
            "--vm",
            "lab-a",
            "--json",
            "checkpoint",
            "web",
            "--leave-running",
            "-o",
            arg(&plain),
            "--guest-file",
            "/tmp/web-1.img",
        ],
    ));
    assert_eq!(report["left_running"], true);
    let at_first = count(base, "lab-a", "web");
    wait_count_above(base, "lab-a", "web", at_first + 3);
    let guest_copy = run(
        base,
        &["agent", "lab-a", "exec", "--", "md5sum", "/tmp/web-1.img"],
    );
    let host_bytes = std::fs::read(&plain).unwrap();
    let host_md5 = md5_hex(&host_bytes);
    assert!(
        guest_copy.starts_with(&host_md5),
        "guest {guest_copy} host {host_md5}"
    );

    // 2. zstd, and kill: the image holds the count at that moment.
    let before_kill = count(base, "lab-a", "web");
    let zst = dir.path().join("web.img.zst");
    let report = json(&run(
        base,
        &[
            "container",
            "--vm",
            "lab-a",
            "--json",
            "checkpoint",
            "web",
            "--zstd",
            "-o",
            arg(&zst),
        ],
    ));
    assert_eq!(report["left_running"], false);
    let stored = report["stored_bytes"].as_u64().unwrap();
    assert!(stored < report["image_bytes"].as_u64().unwrap(), "{report}");
    assert_eq!(std::fs::metadata(&zst).unwrap().len(), stored);
    let list = json(&run(
        base,
        &["container", "--vm", "lab-a", "--json", "list"],
    ));
    assert_eq!(list[0]["status"], "stopped", "{list}");
    let verified = run(base, &["image", "verify", arg(&zst)]);
    assert!(
        verified.contains("container image of \"web\", 1 processes"),
        "{verified}"
    );

    // 3. Restore in B, addressed by its vsock socket as one would a VM that
    // crvmm did not start: the counter goes on from the checkpoint, as pid
    // 1, with its hostname; its memory checks out (SIGUSR1: PASS).
    let socket = base.join("lab-b/vsock.sock");
    let info = json(&run(
        base,
        &[
            "container",
            "--vm",
            arg(&socket),
            "--json",
            "restore",
            "web",
            "--input",
            arg(&zst),
        ],
    ));
    assert_eq!(info["status"], "running", "{info}");
    let resumed = wait_count_above(base, "lab-b", "web", 0);
    let inside = run(
        base,
        &[
            "container",
            "--vm",
            "lab-b",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "hostname; cat /proc/1/comm; echo $$; kill -USR1 1; sleep 1; cat /tmp/state.verdict",
        ],
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(&lines[..2], ["web", "counter"], "{inside}");
    assert!(lines[3].starts_with("PASS"), "{inside}");
    // It went on from the killed checkpoint's count, not from zero.
    assert!(
        resumed > before_kill,
        "resumed at {resumed}, killed after {before_kill}"
    );

    // 4. A damaged image: refused, nothing left in B but the good one.
    let mut bad = std::fs::read(&plain).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    let bad_path = dir.path().join("bad.img");
    std::fs::write(&bad_path, &bad).unwrap();
    let out = crvmm(
        Path::new(CRVMM),
        base,
        &[
            "container",
            "--vm",
            "lab-b",
            "restore",
            "web2",
            "--input",
            arg(&bad_path),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("digest mismatch"), "{err}");
    let list = json(&run(
        base,
        &["container", "--vm", "lab-b", "--json", "list"],
    ));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    for vm in ["lab-a", "lab-b"] {
        run(base, &["stop", vm]);
    }
    drop((_a, _b));
    sandbox.assert_clean();
}

/// md5 of `bytes` in hex, by the host's md5sum.
fn md5_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
