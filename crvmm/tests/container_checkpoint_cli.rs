//! `crvmm container checkpoint` end to end: a `crvmm run` in the
//! background, containers checkpointed from other processes to host files
//! (as JSON and as text, plain and zstd), to standard output, and the
//! errors, which leave no file behind.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crvmm_cr_image::container::ContainerReader;
use crvmm_tests::cli::{self, CrvmmRun};
use crvmm_tests::Sandbox;

const CRVMM: &str = env!("CARGO_BIN_EXE_crvmm");
const VM: &str = "ckcli";

fn crvmm(base: &Path, args: &[&str]) -> Output {
    cli::crvmm(Path::new(CRVMM), base, args)
}

/// `crvmm container --vm ckcli ARGS`.
fn container(base: &Path, args: &[&str]) -> Output {
    let mut full = vec!["container", "--vm", VM];
    full.extend_from_slice(args);
    crvmm(base, &full)
}

fn container_ok(base: &Path, args: &[&str]) -> Output {
    let out = container(base, args);
    assert!(
        out.status.success(),
        "crvmm container {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Creates a container running `counter` and waits until it counts.
fn start_counter(base: &Path, id: &str) {
    container_ok(
        base,
        &[
            "create",
            "--id",
            id,
            "--",
            "/usr/lib/crvmm/programs/counter",
            "4",
            "/tmp/state",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !container(base, &["exec", id, "--", "test", "-s", "/tmp/state"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{id} never counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Verifies an image on the host; returns its digest in hex and its comm.
fn verify(bytes: &[u8]) -> (String, String) {
    let (manifest, _, sha) = ContainerReader::new(bytes).verify().expect("a good image");
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    (hex, manifest.processes[0].comm.clone())
}

#[test]
fn checkpoint_to_files_and_stdout_and_errors() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let _run = CrvmmRun::start(Path::new(CRVMM), base, VM, &["--mem-mib", "384"]);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // To a file, as JSON, leaving it running, with a pre-dump hook and
    // progress lines (stderr is no terminal here).
    start_counter(base, "web");
    let img = file("web.img");
    let out = container_ok(
        base,
        &[
            "checkpoint",
            "web",
            "-o",
            &img,
            "--leave-running",
            "--json",
            "--progress",
            "--pre-dump",
            "sh",
            "-c",
            "sync",
            ";",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["container"], "web");
    assert_eq!(report["processes"], 1);
    assert_eq!(report["left_running"], true);
    assert_eq!(report["zstd"], false);
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(report["image_bytes"], bytes.len() as u64);
    let (sha, comm) = verify(&bytes);
    assert_eq!(report["digest"], sha.as_str());
    assert_eq!(comm, "counter");
    assert!(
        text(&out.stderr).contains("crvmm: received"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&format!("{img}.part")).exists());
    let state = container_ok(base, &["state", "web", "--json"]);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");

    // To standard output; the summary goes to stderr.
    let out = container_ok(base, &["checkpoint", "web", "-o", "-", "--leave-running"]);
    verify(&out.stdout);
    let summary = text(&out.stderr);
    assert!(
        summary.contains("image: standard output (verified)"),
        "{summary}"
    );

    // zstd and a guest file too, killing it (the default): the summary.
    let zst = file("web.zst");
    let out = container_ok(
        base,
        &[
            "checkpoint",
            "web",
            "-o",
            &zst,
            "--zstd",
            "--guest-file",
            "/tmp/web.img",
        ],
    );
    let summary = text(&out.stdout);
    for part in [
        "container web: checkpointed 1 process, image ",
        "MiB with zstd",
        &format!("image: {zst} (verified)"),
        "guest file: /tmp/web.img",
        "processes: 1 counter",
        "the container was killed (stopped)",
    ] {
        assert!(summary.contains(part), "{part:?} in {summary}");
    }
    let packed = std::fs::read(&zst).unwrap();
    verify(&zstd::stream::decode_all(&packed[..]).unwrap());
    let state = container_ok(base, &["state", "web"]);
    assert!(text(&state.stdout).contains("stopped (killed by signal 9)"));

    // Errors leave nothing: a stopped container, an unknown one, no
    // destination.
    let again = file("again.img");
    let out = container(base, &["checkpoint", "web", "-o", &again]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is stopped"),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&again).exists() && !Path::new(&format!("{again}.part")).exists());
    let out = container(base, &["checkpoint", "nope", "-o", &again]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no container \"nope\""),
        "{}",
        text(&out.stderr)
    );
    assert!(!Path::new(&again).exists() && !Path::new(&format!("{again}.part")).exists());
    let out = container(base, &["checkpoint", "web"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("where does the image go?"));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["web.img", "web.zst"]);

    container_ok(base, &["delete", "web"]);
    assert!(crvmm(base, &["stop", VM]).status.success());
    drop(_run);
    drop(dir);
    sandbox.assert_clean();
}
