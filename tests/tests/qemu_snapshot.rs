//! Whole-VM snapshots under the QEMU engine: a guest workload survives
//! snapshot and restore in another VM with its memory intact; the source
//! can run on; damaged or mismatched snapshots are refused by name; VMs
//! that cannot be snapshotted say why and keep running.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_engine::qemu::SnapshotError;
use crvmm_engine::{AfterSnapshot, AgentChannel, Engine, EngineError, RestoreOptions, Vm, VmExit};
use crvmm_protocol::ExecRequest;
use crvmm_tests::{processes_mentioning, unique_name, GuestImage, Sandbox, AGENT_TIMEOUT};

const COUNTER: &str = "/usr/lib/crvmm/programs/counter";
const STATE: &str = "/tmp/counter.state";

fn connect(vm: &dyn Vm) -> AgentConnection {
    vm.agent_endpoint()
        .connect(Duration::from_secs(30))
        .expect("connecting to the agent")
}

fn sh(agent: &mut AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts the counter over 16 MiB in the background; returns its pid.
fn start_counter(agent: &mut AgentConnection) -> u32 {
    let pid = sh(
        agent,
        &format!("{COUNTER} 16 {STATE} >/dev/null 2>&1 & echo $!"),
    );
    pid.parse().unwrap_or_else(|_| panic!("pid {pid:?}"))
}

/// The counter's current value, once it has written one.
fn read_counter(agent: &mut AgentConnection) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(raw) = agent.read_file(STATE) {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let mut words = text.split_whitespace();
            assert_eq!(words.next(), Some("counter"), "{STATE} holds {text:?}");
            return words
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{STATE} holds {text:?}"));
        }
        assert!(Instant::now() < deadline, "the counter never wrote {STATE}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the counter exceeds `value`; returns what it read.
fn wait_counter_above(agent: &mut AgentConnection, value: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = read_counter(agent);
        if now > value {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the counter is stuck at {now} (waiting for more than {value})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn restore_options(name: &str) -> RestoreOptions {
    RestoreOptions::new(name)
}

/// A scratch directory for snapshots, outside the sandbox (whose emptiness
/// the leak check asserts).
fn snapshot_base() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crvmm-snap")
        .tempdir_in("/tmp")
        .unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn restored_guest_counts_on_with_its_memory_intact() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let snaps = snapshot_base();
    let mut vm = sandbox.boot(&guest.config(&unique_name("snap-src"), AgentChannel::Serial));
    let mut agent = connect(&*vm);
    let pid = start_counter(&mut agent);
    let before = wait_counter_above(&mut agent, 5);
    drop(agent);

    let dir = snaps.path().join("snap");
    let info = vm.snapshot(&dir, AfterSnapshot::Exit).unwrap();
    eprintln!(
        "snapshot: {} bytes, downtime {:?}, total {:?}",
        info.bytes, info.downtime, info.total
    );
    assert_eq!(info.dir, dir);
    assert_eq!(entries(snaps.path()), ["snap"], "no temporary left beside");
    assert_eq!(entries(&dir), ["manifest.json", "memory-and-devices"]);
    let on_disk: u64 = ["manifest.json", "memory-and-devices"]
        .iter()
        .map(|f| fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert_eq!(info.bytes, on_disk);
    assert!(info.bytes > 16 << 20, "the 16 MiB pattern is in the stream");
    assert!(info.downtime <= info.total);
    assert!(
        vm.try_wait().unwrap().is_some(),
        "AfterSnapshot::Exit ends the source VM"
    );
    drop(vm);

    let name = unique_name("snap-dst");
    let started = Instant::now();
    let mut restored = sandbox
        .qemu()
        .restore(&dir, &restore_options(&name))
        .unwrap();
    let hello = restored.wait_agent(AGENT_TIMEOUT).unwrap();
    eprintln!("restore to agent-ready: {:?}", started.elapsed());
    assert_eq!(hello.transport, "serial");
    assert_eq!(restored.name(), name);
    let record = crvmm_engine::rundir::find(sandbox.base(), &name).unwrap();
    assert_eq!(record.agent, *restored.agent_endpoint());

    let mut agent = connect(&*restored);
    let after = read_counter(&mut agent);
    assert!(
        after >= before,
        "the count goes on from the snapshot ({before} before, {after} after)"
    );
    wait_counter_above(&mut agent, after);
    assert_eq!(
        sh(&mut agent, "pidof counter"),
        pid.to_string(),
        "the same process runs on"
    );
    sh(&mut agent, &format!("kill -USR1 {pid}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let verdict = loop {
        if let Ok(v) = agent.read_file(&format!("{STATE}.verdict")) {
            break String::from_utf8_lossy(&v).into_owned();
        }
        assert!(Instant::now() < deadline, "no verdict from the counter");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(verdict.starts_with("PASS "), "verdict: {verdict}");
    drop(agent);

    assert_eq!(
        restored.shutdown(Duration::from_secs(60)).unwrap(),
        VmExit::GuestShutdown
    );
    drop(restored);
    sandbox.assert_clean();
}

#[test]
fn snapshot_with_resume_or_pause_keeps_the_source() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let snaps = snapshot_base();
    let mut vm = sandbox.boot(&guest.config(&unique_name("snap-run"), AgentChannel::Serial));
    let mut agent = connect(&*vm);
    start_counter(&mut agent);
    let before = wait_counter_above(&mut agent, 2);
    drop(agent);

    let info = vm
        .snapshot(&snaps.path().join("resumed"), AfterSnapshot::Resume)
        .unwrap();
    eprintln!(
        "snapshot (resume): {} bytes, downtime {:?}, total {:?}",
        info.bytes, info.downtime, info.total
    );
    assert!(info.downtime <= info.total);
    assert!(vm.try_wait().unwrap().is_none(), "the source runs on");
    let mut agent = connect(&*vm);
    let after = wait_counter_above(&mut agent, before);
    wait_counter_above(&mut agent, after);
    drop(agent);

    // Pause: the VM stays stopped until resumed, then counts on.
    vm.snapshot(&snaps.path().join("paused"), AfterSnapshot::Pause)
        .unwrap();
    assert!(vm.try_wait().unwrap().is_none());
    let mut probe = vm.agent_endpoint().connect(Duration::from_secs(2));
    let answered = probe.as_mut().map(|a| a.hello().is_ok()).unwrap_or(false);
    assert!(!answered, "a VM left paused must not answer");
    drop(probe);
    vm.resume().unwrap();
    vm.wait_agent(Duration::from_secs(60)).unwrap();
    let mut agent = connect(&*vm);
    let now = read_counter(&mut agent);
    wait_counter_above(&mut agent, now);
    drop(agent);
    assert_eq!(entries(snaps.path()), ["paused", "resumed"]);

    drop(vm);
    sandbox.assert_clean();
}

/// The error and its causes, as `crvmm` prints them.
fn chain(err: &EngineError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn copy_snapshot(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir(to).unwrap();
    for name in ["manifest.json", "memory-and-devices"] {
        fs::copy(from.join(name), to.join(name)).unwrap();
    }
    to.to_owned()
}

fn edit_manifest(dir: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    change(&mut manifest);
    fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn damaged_or_mismatched_snapshots_are_refused_by_name() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let snaps = snapshot_base();
    let mut vm = sandbox.boot(&guest.config(&unique_name("snap-bad"), AgentChannel::Serial));
    let good = snaps.path().join("good");
    vm.snapshot(&good, AfterSnapshot::Exit).unwrap();
    drop(vm);
    let engine = sandbox.qemu();
    let stream_len = fs::metadata(good.join("memory-and-devices")).unwrap().len();

    let refuse = |case: &str, damage: &dyn Fn(&Path), expect: &[&str]| {
        let dir = copy_snapshot(&good, &snaps.path().join(case));
        damage(&dir);
        let started = Instant::now();
        let err = engine
            .restore(&dir, &restore_options(&unique_name("snap-bad")))
            .err()
            .unwrap_or_else(|| panic!("{case}: a damaged snapshot was restored"));
        let msg = chain(&err);
        eprintln!("{case} ({:?}): {msg}", started.elapsed());
        for word in expect {
            assert!(msg.contains(word), "{case}: {word:?} is not in: {msg}");
        }
        let left = processes_mentioning(sandbox.base());
        assert!(left.is_empty(), "{case}: processes left: {left:?}");
        err
    };
    let stream = |dir: &Path| dir.join("memory-and-devices");

    let err = refuse(
        "flipped",
        &|dir| {
            let mut bytes = fs::read(stream(dir)).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            fs::write(stream(dir), bytes).unwrap();
        },
        &["memory-and-devices", "is corrupt", "sha256"],
    );
    assert!(matches!(
        err,
        EngineError::QemuSnapshot(SnapshotError::Corrupt { .. })
    ));
    refuse(
        "truncated",
        &|dir| {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(stream(dir))
                .unwrap();
            file.set_len(stream_len / 2).unwrap();
        },
        &["memory-and-devices", "is corrupt", &format!("{stream_len}")],
    );
    refuse(
        "deleted",
        &|dir| fs::remove_file(stream(dir)).unwrap(),
        &["memory-and-devices", "cannot be read", "No such file"],
    );
    refuse(
        "version",
        &|dir| edit_manifest(dir, |m| m["version"] = 99.into()),
        &["manifest.json", "format version 99"],
    );
    let kernel = guest.vmlinux.display().to_string();
    refuse(
        "kernel",
        &|dir| {
            edit_manifest(dir, |m| {
                m["vm"]["kernel"]["sha256"] = "ab".repeat(32).into()
            })
        },
        &["kernel", &kernel, "changed since the snapshot"],
    );
    // A stream whose manifest agrees with it but that QEMU cannot load: QEMU
    // itself refuses it, and its own words are in the error.
    let err = refuse(
        "unloadable",
        &|dir| {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(stream(dir))
                .unwrap();
            file.set_len(stream_len / 2).unwrap();
            let sha = sha256sum(&stream(dir));
            edit_manifest(dir, |m| {
                m["stream"]["size"] = (stream_len / 2).into();
                m["stream"]["sha256"] = sha.into();
            });
        },
        &["QEMU could not load", "memory-and-devices", "QEMU said"],
    );
    assert!(matches!(
        err,
        EngineError::QemuSnapshot(SnapshotError::Load { .. })
    ));
    sandbox.assert_clean();
}

#[test]
fn vsock_vm_snapshot_is_refused_and_the_vm_runs_on() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let snaps = snapshot_base();
    let mut vm = sandbox.boot(&guest.config(&unique_name("snap-vsock"), AgentChannel::Vsock));
    let err = vm
        .snapshot(&snaps.path().join("snap"), AfterSnapshot::Resume)
        .unwrap_err();
    let msg = chain(&err);
    assert!(
        matches!(err, EngineError::QemuSnapshot(SnapshotError::VsockChannel)),
        "{msg}"
    );
    assert!(
        msg.contains("vsock") && msg.contains("--channel serial"),
        "{msg}"
    );
    assert!(entries(snaps.path()).is_empty(), "nothing written");
    assert_eq!(connect(&*vm).hello().unwrap().transport, "vsock");
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn snapshot_into_an_existing_directory_fails_and_leaves_it_alone() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let snaps = snapshot_base();
    let mut vm = sandbox.boot(&guest.config(&unique_name("snap-exists"), AgentChannel::Serial));
    let dir = snaps.path().join("taken");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep.txt"), "precious\n").unwrap();

    let err = vm.snapshot(&dir, AfterSnapshot::Exit).unwrap_err();
    assert!(
        matches!(err, EngineError::QemuSnapshot(SnapshotError::Exists(_))),
        "{err}"
    );
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(entries(snaps.path()), ["taken"], "no temporary left beside");
    assert_eq!(entries(&dir), ["keep.txt"]);
    assert_eq!(
        fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "precious\n"
    );
    assert!(vm.try_wait().unwrap().is_none(), "the VM runs on");
    assert!(connect(&*vm).hello().is_ok());
    drop(vm);
    sandbox.assert_clean();
}
