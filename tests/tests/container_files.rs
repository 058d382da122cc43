//! Open files through the agent (issue 7): `cr_files` in a container, its
//! directory on a guest directory bind-mounted into it (files that outlive
//! the container, as the design assumes the file system does), holding a
//! regular file at two offsets, a log in append mode, its directory,
//! `/dev/null`, `/dev/zero` and a file deleted while open, with content.
//! Checkpointed and killed by the agent, then restored in the same VM and
//! in a second VM given the same files: it checks every descriptor itself
//! (file, offset, flags, close-on-exec, reads and appends, its working
//! directory, nothing else open) and reports PASS.

use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::{BasicSpec, ExecRequest};
use crvmm_tests::ct::{boot, checkpoint_streamed, container_sh, delete_clean, restore};
use crvmm_tests::Sandbox;

/// The guest directory, and where the container sees it.
const GUEST_DIR: &str = "/var/lab";
/// `cr_files`'s directory, in the container.
const DIR: &str = "/lab/files";

fn guest_sh(agent: &mut AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert!(out.status.success(), "`{script}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `<DIR>/<name>` as the guest sees it.
fn guest_path(name: &str) -> String {
    format!("{GUEST_DIR}/files/{name}")
}

fn count(agent: &mut AgentConnection) -> Option<u64> {
    let text = agent.read_file(&guest_path("state")).ok()?;
    String::from_utf8_lossy(&text)
        .trim()
        .strip_prefix("count ")?
        .parse()
        .ok()
}

fn wait_count_above(agent: &mut AgentConnection, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(n) = count(agent).filter(|&n| n > above) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "cr_files does not count past {above}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts on past `at`, then checks itself on SIGUSR1: PASS.
fn assert_passes(agent: &mut AgentConnection, id: &str, at: u64) {
    wait_count_above(agent, at);
    let verdict = guest_path("verdict");
    guest_sh(agent, &format!("rm -f {verdict}"));
    container_sh(agent, id, "kill -USR1 $(pidof cr_files)");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Ok(text) = agent.read_file(&verdict) {
            break String::from_utf8_lossy(&text).trim().to_owned();
        }
        assert!(Instant::now() < deadline, "{id}: no verdict");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with("PASS"), "{id}: {text}");
}

fn spec() -> serde_json::Value {
    let mut spec = BasicSpec::new(["/usr/lib/crvmm/programs/cr_files", DIR, "deleted"]).to_json();
    let mounts = spec["mounts"]
        .as_array_mut()
        .expect("a basic spec has mounts");
    mounts.push(serde_json::json!({
        "destination": "/lab",
        "type": "bind",
        "source": GUEST_DIR,
        "options": ["rbind", "rw"],
    }));
    spec
}

#[test]
fn open_and_deleted_files_survive_container_migration() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "files-a", 384, Some(2));
    guest_sh(&mut a, &format!("mkdir -p {GUEST_DIR}"));
    a.container_create("files", spec(), true).unwrap();
    wait_count_above(&mut a, 3);

    let (report, image) = checkpoint_streamed(vm_a.as_ref(), "files", false);
    assert_eq!(report.processes, 1, "{report:?}");
    let at = count(&mut a).unwrap_or(0);
    a.container_delete("files", true).unwrap();
    // The deleted file is in the image, not in the directory.
    let names = guest_sh(&mut a, &format!("ls {GUEST_DIR}/files"));
    let names: Vec<_> = names.split_whitespace().collect();
    assert!(
        names.contains(&"data") && !names.contains(&"gone"),
        "{names:?}"
    );
    // The second VM gets the files as they were at the checkpoint (the
    // restored process changes them), every one: the freeze may have
    // caught a `state.tmp` open.
    let (vm_b, mut b) = boot(&sandbox, "files-b", 384, Some(2));
    guest_sh(&mut b, &format!("mkdir -p {GUEST_DIR}/files"));
    for name in names {
        let bytes = a.read_file(&guest_path(name)).unwrap();
        b.write_file(&guest_path(name), &bytes, Some(0o644))
            .unwrap();
    }

    restore(&mut a, "again", &image).unwrap();
    assert_passes(&mut a, "again", at);
    restore(&mut b, "files", &image).unwrap();
    assert_passes(&mut b, "files", at);
    // Its deleted file is open again, unnamed, in the directory it was in.
    let link = container_sh(&mut b, "files", "readlink /proc/$(pidof cr_files)/fd/9");
    assert!(link.starts_with(&format!("{DIR}/")), "{link}");
    assert!(link.contains("(deleted)"), "{link}");

    delete_clean(&mut a, "again");
    delete_clean(&mut b, "files");
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}
