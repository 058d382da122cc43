//! Container restore (issue 6): the agent rebuilds a container from a
//! container image and its processes restart where they were, in the same
//! VM under a new name or in another VM. The images here are made without
//! the agent's own checkpoint (that has its own tests): the kernel image of
//! the container's init comes from `cr_dump`, wrapped on the host with
//! `crvmm_cr_image`'s container writer, so restore is tested on its own,
//! and damaged images can be built at will.

use std::time::{Duration, Instant};

use crvmm_cr_image::container::{ContainerWriter, Manifest, ProcessEntry};
use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::{BasicSpec, ClientError, ContainerStatus, ExecRequest};
use crvmm_tests::ct::{boot, checkpoint_streamed, restore};
use crvmm_tests::Sandbox;

const COUNTER: &str = "/usr/lib/crvmm/programs/counter";

fn guest_sh(agent: &mut AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert!(out.status.success(), "`{script}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The counter of the container whose init is guest pid `pid`, read
/// through its root (works while it is frozen).
fn count(agent: &mut AgentConnection, pid: u32) -> Option<u64> {
    let text = agent
        .read_file(&format!("/proc/{pid}/root/tmp/state"))
        .ok()?;
    let text = String::from_utf8_lossy(&text).into_owned();
    text.split_whitespace().nth(1)?.parse().ok()
}

fn wait_count_above(agent: &mut AgentConnection, pid: u32, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match count(agent, pid) {
            Some(c) if c > n => return c,
            last => assert!(
                Instant::now() < deadline,
                "count stuck at {last:?} (<= {n})"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A container running `counter 8`, its kernel image taken by `cr_dump`
/// while frozen (then killed and deleted), wrapped as a container image.
/// Returns the image, the count at the checkpoint and the spec.
fn checkpoint_by_hand(agent: &mut AgentConnection, id: &str) -> (Vec<u8>, u64) {
    let mut spec = BasicSpec::new([COUNTER, "8", "/tmp/state"]);
    spec.hostname = Some("box".into());
    let spec = spec.to_json();
    let info = agent.container_create(id, spec.clone(), true).unwrap();
    let pid = info.pid;
    wait_count_above(agent, pid, 3);
    agent.container_freeze(id, None).unwrap();
    let at = count(agent, pid).unwrap();
    guest_sh(
        agent,
        &format!(
            "/usr/lib/crvmm/programs/cr_dump -n -i {pid} {} /tmp/{id}.img",
            info.cgroup
        ),
    );
    agent.container_delete(id, true).unwrap();
    let kernel_image = agent.read_file(&format!("/tmp/{id}.img")).unwrap();
    let release = agent.hello().unwrap().kernel_release;
    let manifest = Manifest {
        id: id.into(),
        kernel_release: release,
        kernel_format: crvmm_cr_image::format::FORMAT_VERSION,
        spec,
        namespaces: info.namespaces.clone(),
        hostname: Some("box".into()),
        processes: vec![ProcessEntry {
            index: 0,
            pid: 1,
            ppid: 0,
            guest_pid: pid as i32,
            comm: "counter".into(),
            ..ProcessEntry::default()
        }],
        ..Manifest::default()
    };
    (wrap(&manifest, &kernel_image), at)
}

fn wrap(manifest: &Manifest, kernel_image: &[u8]) -> Vec<u8> {
    let mut w = ContainerWriter::new(Vec::new(), manifest).unwrap();
    w.begin_process(1).unwrap();
    w.data(kernel_image).unwrap();
    w.end_process().unwrap();
    w.finish().unwrap().0
}

/// The restored container counts on from the checkpoint, as pid 1 of its
/// pid namespace, with its hostname and its memory intact.
fn assert_restored(agent: &mut AgentConnection, id: &str, at: u64) {
    let info = agent.container_state(id).unwrap();
    assert_eq!(info.status, ContainerStatus::Running);
    let first = wait_count_above(agent, info.pid, at);
    assert!(
        first < at + 100,
        "restarted at {first}, checkpoint was at {at}"
    );
    let out = agent
        .container_exec(
            id,
            ExecRequest::new(["sh", "-c", "hostname; cat /proc/1/comm; kill -USR1 1"]),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "box\ncounter\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    let verdict = loop {
        let path = format!("/proc/{}/root/tmp/state.verdict", info.pid);
        if let Ok(v) = agent.read_file(&path) {
            break String::from_utf8_lossy(&v).into_owned();
        }
        assert!(Instant::now() < deadline, "no verdict");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(verdict.starts_with("PASS"), "{id}: {verdict}");
}

#[test]
fn restores_in_the_same_vm_and_in_another() {
    let sandbox = Sandbox::new();
    let (_vm_a, mut a) = boot(&sandbox, "restore-a", 384, None);
    let (image, at) = checkpoint_by_hand(&mut a, "orig");

    // Same VM, new name.
    let info = restore(&mut a, "copy", &image).unwrap();
    assert_eq!(info.id, "copy");
    assert_restored(&mut a, "copy", at);

    // Another VM, same name: a migration.
    let (_vm_b, mut b) = boot(&sandbox, "restore-b", 384, None);
    restore(&mut b, "orig", &image).unwrap();
    assert_restored(&mut b, "orig", at);
    for (agent, id) in [(&mut a, "copy"), (&mut b, "orig")] {
        agent.container_delete(id, true).unwrap();
    }
    drop((a, b));
    drop((_vm_a, _vm_b));
    sandbox.assert_clean();
}

#[test]
fn bad_images_fail_cleanly_and_leave_nothing() {
    let sandbox = Sandbox::new();
    let (_vm, mut a) = boot(&sandbox, "restore-bad", 384, None);
    let (image, _) = checkpoint_by_hand(&mut a, "src");
    let leftovers = |agent: &mut AgentConnection| {
        let list = agent.container_list().unwrap();
        let cgroups = guest_sh(
            agent,
            "find /sys/fs/cgroup/crvmm /run/crvmm/containers -mindepth 1 -maxdepth 1 \
             -type d 2>/dev/null; true",
        );
        (list.len(), cgroups)
    };

    // A flipped byte in the middle (the kernel image's data): refused by its
    // digest before anything is built.
    let mut flipped = image.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let e = error_text(restore(&mut a, "x1", &flipped));
    assert!(e.contains("digest mismatch"), "{e}");

    // Truncated.
    let e = error_text(restore(&mut a, "x2", &image[..image.len() - 100]));
    assert!(e.contains("ends early"), "{e}");

    // Another kernel.
    let mut manifest = manifest_of(&image);
    manifest.kernel_release = "5.10.0-other".into();
    let kernel_image = kernel_image_of(&image);
    let e = error_text(restore(&mut a, "x3", &wrap(&manifest, &kernel_image)));
    assert!(e.contains("made by kernel 5.10.0-other"), "{e}");

    // An intact container image around a kernel image the kernel refuses
    // (bad magic): the restart fails, the container is torn down, and the
    // error carries the kernel's log line.
    let mut bad_kernel = kernel_image.clone();
    bad_kernel[8] ^= 0xff;
    let e = error_text(restore(
        &mut a,
        "x4",
        &wrap(&manifest_of(&image), &bad_kernel),
    ));
    assert!(
        e.contains("restarting process 0") && e.contains("not a checkpoint image"),
        "{e}"
    );

    assert_eq!(leftovers(&mut a), (0, String::new()));
    // After all that, the good image still restores.
    restore(&mut a, "good", &image).unwrap();
    a.container_delete("good", true).unwrap();
    drop(a);
    drop(_vm);
    sandbox.assert_clean();
}

fn error_text<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Agent(e)) => e.message,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

fn manifest_of(image: &[u8]) -> Manifest {
    crvmm_cr_image::container::ContainerReader::new(image)
        .verify()
        .unwrap()
        .0
}

fn kernel_image_of(image: &[u8]) -> Vec<u8> {
    use crvmm_cr_image::container::{ContainerReader, Event};
    let mut reader = ContainerReader::new(image);
    let mut out = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        if let Event::Data(bytes) = event {
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// Two processes, parent and child, in one container: restore rebuilds the
/// tree with their pids (clone3 with set_tid) and both count on.
#[test]
fn restores_a_process_tree_with_its_pids() {
    let sandbox = Sandbox::new();
    let (_vm, mut a) = boot(&sandbox, "restore-tree", 384, None);
    let script = format!("{COUNTER} 1 /tmp/child & exec {COUNTER} 2 /tmp/state");
    let mut spec = BasicSpec::new(["sh", "-c", &script]);
    spec.hostname = Some("box".into());
    let spec = spec.to_json();
    let info = a.container_create("tree", spec.clone(), true).unwrap();
    wait_count_above(&mut a, info.pid, 3);
    // The child's guest pid: the other process of the cgroup.
    let procs = guest_sh(&mut a, &format!("cat {}/cgroup.procs", info.cgroup));
    let child: u32 = procs
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|&p: &u32| p != info.pid)
        .expect("a second process");
    a.container_freeze("tree", None).unwrap();
    let at = count(&mut a, info.pid).unwrap();
    let dump = "/usr/lib/crvmm/programs/cr_dump -n -i";
    guest_sh(
        &mut a,
        &format!(
            "{dump} {} {cg} /tmp/p1.img && {dump} {child} {cg} /tmp/p2.img",
            info.pid,
            cg = info.cgroup
        ),
    );
    a.container_delete("tree", true).unwrap();
    let images = [
        a.read_file("/tmp/p1.img").unwrap(),
        a.read_file("/tmp/p2.img").unwrap(),
    ];
    let manifest = Manifest {
        id: "tree".into(),
        kernel_release: a.hello().unwrap().kernel_release,
        kernel_format: crvmm_cr_image::format::FORMAT_VERSION,
        spec,
        processes: vec![
            ProcessEntry {
                index: 0,
                pid: 1,
                ppid: 0,
                comm: "counter".into(),
                ..ProcessEntry::default()
            },
            ProcessEntry {
                index: 1,
                pid: 2,
                ppid: 1,
                comm: "counter".into(),
                ..ProcessEntry::default()
            },
        ],
        ..Manifest::default()
    };
    let mut w = ContainerWriter::new(Vec::new(), &manifest).unwrap();
    for (pid, image) in [1, 2].iter().zip(&images) {
        w.begin_process(*pid).unwrap();
        w.data(image).unwrap();
        w.end_process().unwrap();
    }
    let image = w.finish().unwrap().0;

    restore(&mut a, "tree2", &image).unwrap();
    assert_restored(&mut a, "tree2", at);
    let out = a
        .container_exec(
            "tree2",
            ExecRequest::new([
                "sh",
                "-c",
                "cat /proc/2/comm; grep PPid /proc/2/status; cat /tmp/child",
            ]),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("counter\nPPid:\t1\ncounter "),
        "the child process: {text}"
    );
    a.container_delete("tree2", true).unwrap();
    drop(a);
    drop(_vm);
    sandbox.assert_clean();
}

/// Sessions and process groups inside the container survive: a process
/// that made its own session (setsid) leads it again after the agent's own
/// checkpoint and a restore.
#[test]
fn sessions_and_process_groups_survive() {
    let sandbox = Sandbox::new();
    let (_vm, mut a) = boot(&sandbox, "restore-sessions", 384, None);
    let script = format!("setsid {COUNTER} 1 /tmp/b & exec {COUNTER} 2 /tmp/state");
    let spec = BasicSpec::new(["sh", "-c", &script]).to_json();
    let info = a.container_create("sess", spec, true).unwrap();
    wait_count_above(&mut a, info.pid, 3);
    let ids = "grep -h -E '^(Pid|NSpgid|NSsid):' /proc/[0-9]*/status | tr '\\n' ' '";
    let exec_ids = |agent: &mut AgentConnection, id: &str| {
        let out = agent
            .container_exec(id, ExecRequest::new(["sh", "-c", ids]))
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = exec_ids(&mut a, "sess");
    // The setsid'd counter (pid 2) leads its own session and group.
    assert!(before.contains("NSpgid:\t2 NSsid:\t2"), "{before}");

    let (_, image) = checkpoint_streamed(_vm.as_ref(), "sess", false);
    a.container_delete("sess", true).unwrap();

    restore(&mut a, "sess", &image).unwrap();
    let after = exec_ids(&mut a, "sess");
    // The exec'd shell itself shows up with other ids: compare pids 1, 2.
    let keep = |text: &str| -> Vec<String> {
        text.split("Pid:")
            .filter(|e| e.starts_with("\t1 ") || e.starts_with("\t2 "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        keep(&after),
        keep(&before),
        "before: {before}\nafter: {after}"
    );

    // A restored container can be checkpointed again: its manifest carries
    // the same spec, and the same sessions.
    let (_, second) = checkpoint_streamed(_vm.as_ref(), "sess", true);
    let (m1, m2) = (manifest_of(&image), manifest_of(&second));
    assert_eq!(m2.spec, m1.spec);
    let sessions = |m: &Manifest| -> Vec<(i32, i32, i32)> {
        m.processes.iter().map(|p| (p.pid, p.pgid, p.sid)).collect()
    };
    assert_eq!(sessions(&m2), sessions(&m1));
    a.container_delete("sess", true).unwrap();
    drop(a);
    drop(_vm);
    sandbox.assert_clean();
}
