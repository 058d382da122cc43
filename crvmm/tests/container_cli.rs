//! `crvmm container ... --vm <vm>` end to end: a `crvmm run` in the
//! background, containers created, used and removed from other processes.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crvmm_tests::cli::{self, CrvmmRun};
use crvmm_tests::Sandbox;

const CRVMM: &str = env!("CARGO_BIN_EXE_crvmm");

fn crvmm(base: &Path, args: &[&str]) -> Output {
    cli::crvmm(Path::new(CRVMM), base, args)
}

/// Runs `crvmm container ... --vm ctcli` and checks it succeeded.
fn container_ok(base: &Path, args: &[&str]) -> String {
    let out = container(base, args);
    assert!(
        out.status.success(),
        "crvmm container {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `crvmm container --vm ctcli ARGS` (`--vm` first: a create's command
/// comes last).
fn container(base: &Path, args: &[&str]) -> Output {
    let mut full = vec!["container", "--vm", "ctcli"];
    full.extend_from_slice(args);
    crvmm(base, &full)
}

#[test]
fn container_commands_end_to_end() {
    let sandbox = Sandbox::new();
    let base = sandbox.base();
    let mut run = CrvmmRun::start(Path::new(CRVMM), base, "ctcli", &[]);

    // Create from flags; the command runs at once.
    let out = container_ok(
        base,
        &[
            "create",
            "--id",
            "web",
            "--hostname",
            "web1",
            "--pids",
            "20",
            "--memory",
            "32M",
            "--",
            "sh",
            "-c",
            "echo hello; sleep 1000",
        ],
    );
    assert!(out.starts_with("web: running, pid "), "{out}");

    // Exec: output, exit code, environment and working directory.
    assert_eq!(
        container_ok(base, &["exec", "web", "--", "hostname"]),
        "web1\n"
    );
    let out = container(base, &["exec", "web", "--", "sh", "-c", "echo $$; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(pid < 20, "pid {pid} in the container");
    let out = container_ok(
        base,
        &[
            "exec",
            "web",
            "--env",
            "A=b",
            "--cwd",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo $A $(pwd)",
        ],
    );
    assert_eq!(out, "b /tmp\n");
    let out = container_ok(base, &["exec", "web", "--json", "--", "echo", "hi"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["status"]["kind"], "exited");
    assert_eq!(json["stdout"], "aGkK");

    // Create from a config.json, without starting it.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let script = "trap 'exit 3' USR1; while :; do sleep 1; done";
    let mut spec = crvmm_protocol::BasicSpec::new(["sh", "-c", script]);
    spec.hostname = Some("from-file".into());
    std::fs::write(&config, serde_json::to_vec(&spec.to_json()).unwrap()).unwrap();
    let out = container_ok(
        base,
        &[
            "create",
            "--id",
            "cfg",
            "--config",
            config.to_str().unwrap(),
            "--no-start",
        ],
    );
    assert!(out.starts_with("cfg: created, pid "), "{out}");
    assert!(container_ok(base, &["start", "cfg"]).starts_with("cfg: running"));
    assert_eq!(
        container_ok(base, &["exec", "cfg", "--", "hostname"]),
        "from-file\n"
    );

    // List, as a table and as JSON; state; the init's output.
    let table = container_ok(base, &["list"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!((rows[0][0], rows[0][1]), ("cfg", "running"));
    assert_eq!((rows[1][0], rows[1][1]), ("web", "running"));
    // `--vm` may also follow the subcommand.
    let out = crvmm(base, &["container", "list", "--json", "--vm", "ctcli"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[1]["id"], "web");
    assert_eq!(list[1]["hostname"], "web1");
    assert_eq!(list[1]["cgroup"], "/sys/fs/cgroup/crvmm/web");
    let state = container_ok(base, &["state", "web"]);
    assert!(
        state.contains("namespaces: mount pid uts ipc network"),
        "{state}"
    );
    assert_eq!(container_ok(base, &["logs", "web"]), "hello\n");

    // Freeze and thaw.
    assert!(container_ok(base, &["freeze", "web"]).starts_with("web: frozen"));
    let out = container(base, &["exec", "web", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is frozen; thaw it"));
    assert!(container_ok(base, &["thaw", "web"]).starts_with("web: running"));

    // Kill reports how the init ended; delete removes it.
    let out = container_ok(base, &["kill", "web"]);
    assert!(out.contains("web: stopped (killed by signal 9)"), "{out}");
    // A signal the init handles: it exits in its own time.
    container_ok(base, &["kill", "--signal", "USR1", "cfg"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let out = container_ok(base, &["state", "--json", "cfg"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        if json["status"] == "stopped" {
            break json;
        }
        assert!(Instant::now() < deadline, "cfg never stopped: {json}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        state["exit"],
        serde_json::json!({"kind": "exited", "value": 3})
    );
    assert_eq!(container_ok(base, &["delete", "web"]), "web: deleted\n");
    let out = container_ok(base, &["delete", "cfg", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["deleted"], true);
    assert_eq!(container_ok(base, &["list", "--json"]).trim(), "[]");

    // Errors: an unknown container, a missing --vm, a bad signal.
    let out = container(base, &["state", "web"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no container \"web\" (existing: none)"),
        "{stderr}"
    );
    let out = crvmm(base, &["container", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vm NAME"));
    let out = container(base, &["kill", "--signal", "BOGUS", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal \"BOGUS\""));

    assert!(crvmm(base, &["stop", "ctcli"]).status.success());
    assert_eq!(run.wait(Duration::from_secs(30)), Some(0));
    drop(dir);
    sandbox.assert_clean();
}
