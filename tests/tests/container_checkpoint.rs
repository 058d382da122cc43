//! Container checkpoint (issue 6): the agent freezes a container, streams
//! the image of every process to the host (and/or a guest file, through
//! zstd if asked), then thaws or kills it. Each test checks the image on
//! the host (container format, each process's kernel image, digest against
//! the report) and what the container does afterwards; the failures check
//! that the container runs on, thawed, with the reason in the error.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crvmm_cr_image::container::{ContainerError, ContainerReader, Event, Manifest};
use crvmm_engine::agent::AgentConnection;
use crvmm_engine::{AgentChannel, Vm};
use crvmm_protocol::{
    BasicSpec, CheckpointReport, ClientError, ContainerCheckpoint, ContainerStatus, ErrorKind,
    ExecRequest, ExitStatus,
};
use crvmm_tests::{unique_name, GuestImage, Sandbox};

const PROGRAMS: &str = "/usr/lib/crvmm/programs";

fn boot(sandbox: &Sandbox, name: &str) -> (Box<dyn Vm>, AgentConnection) {
    let guest = GuestImage::get();
    let mut config = guest.config(&unique_name(name), AgentChannel::Vsock);
    config.mem_mib = 384;
    let vm = sandbox.boot(&config);
    let agent = connect(vm.as_ref());
    (vm, agent)
}

fn connect(vm: &dyn Vm) -> AgentConnection {
    vm.agent_endpoint()
        .connect(Duration::from_secs(120))
        .expect("connecting to the agent")
}

/// A checkpoint request that streams the image.
fn streamed(id: &str) -> ContainerCheckpoint {
    ContainerCheckpoint {
        container: id.into(),
        stream: true,
        ..Default::default()
    }
}

/// Runs `request` on a connection of its own (the stream uses it up);
/// returns the answer and the bytes that came.
fn checkpoint(
    vm: &dyn Vm,
    request: ContainerCheckpoint,
) -> (Result<CheckpointReport, ClientError>, Vec<u8>) {
    let mut agent = connect(vm);
    let mut bytes = Vec::new();
    let result = agent.container_checkpoint(request, &mut bytes, &mut |_| {});
    (result, bytes)
}

fn checkpoint_ok(vm: &dyn Vm, request: ContainerCheckpoint) -> (CheckpointReport, Vec<u8>) {
    let (result, bytes) = checkpoint(vm, request);
    match result {
        Ok(report) => (report, bytes),
        Err(e) => panic!("checkpoint failed: {}", chain(&e)),
    }
}

/// The agent's error of a checkpoint that must fail; the bytes that came.
fn checkpoint_err(
    vm: &dyn Vm,
    request: ContainerCheckpoint,
) -> (crvmm_protocol::AgentError, Vec<u8>) {
    match checkpoint(vm, request) {
        (Err(ClientError::Agent(e)), bytes) => {
            eprintln!("refused as expected: {e}");
            (e, bytes)
        }
        (other, _) => panic!("expected an agent error, got {other:?}"),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A container image read whole: the manifest, each process's kernel
/// image, and the totals of the trailer.
struct Image {
    manifest: Manifest,
    kernel_images: Vec<Vec<u8>>,
    bytes: u64,
    digest: String,
}

fn read_image(bytes: &[u8]) -> Result<Image, ContainerError> {
    let mut reader = ContainerReader::new(bytes);
    let mut manifest = None;
    let mut kernel_images = Vec::new();
    loop {
        match reader.next_event()? {
            Some(Event::Header(m)) => manifest = Some(*m),
            Some(Event::Process { .. }) => kernel_images.push(Vec::new()),
            Some(Event::Data(d)) => kernel_images.last_mut().unwrap().extend_from_slice(d),
            Some(Event::Queue { .. } | Event::Shm { .. } | Event::ProcessEnd { .. }) => {}
            Some(Event::End { bytes, digest }) => {
                return Ok(Image {
                    manifest: manifest.unwrap(),
                    kernel_images,
                    bytes,
                    digest: hex(&digest),
                })
            }
            None => unreachable!("the end comes as an event"),
        }
    }
}

/// Checks an uncompressed image against its report, and each process's
/// kernel image with the host verifier; returns it.
fn check_image(bytes: &[u8], report: &CheckpointReport) -> Image {
    let image = read_image(bytes).unwrap_or_else(|e| panic!("the image does not verify: {e}"));
    assert_eq!(image.bytes, report.image_bytes);
    assert_eq!(image.digest, report.digest);
    assert_eq!(image.manifest.processes.len() as u32, report.processes);
    assert_eq!(image.kernel_images.len() as u32, report.processes);
    assert_eq!(image.manifest.leave_running, report.left_running);
    for (entry, kernel) in image.manifest.processes.iter().zip(&image.kernel_images) {
        let summary = crvmm_cr_image::verify(&kernel[..], &Default::default())
            .unwrap_or_else(|e| panic!("kernel image of {entry:?}: {e}"));
        assert_eq!(summary.comm, entry.comm, "{entry:?}");
        assert_eq!(summary.pid, entry.guest_pid, "{entry:?}");
    }
    image
}

fn guest_sh(agent: &mut AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert!(out.status.success(), "`{script}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `counter MIB /tmp/state` in container `id` (hostname `box`); its init's
/// guest pid.
fn start_counter(agent: &mut AgentConnection, id: &str, mib: u32) -> u32 {
    let mut spec = BasicSpec::new([
        format!("{PROGRAMS}/counter"),
        mib.to_string(),
        "/tmp/state".into(),
    ]);
    spec.hostname = Some("box".into());
    let info = agent.container_create(id, spec.to_json(), true).unwrap();
    wait_count_above(agent, info.pid, "/tmp/state", 1);
    info.pid
}

/// The count in a state file of the container whose init is guest pid
/// `init` (counter's "counter N ..." or cr_target's "count N"), read
/// through the init's root, which works frozen or not.
fn count(agent: &mut AgentConnection, init: u32, file: &str) -> Option<u64> {
    let text = agent.read_file(&format!("/proc/{init}/root{file}")).ok()?;
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn wait_count_above(agent: &mut AgentConnection, init: u32, file: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match count(agent, init, file) {
            Some(c) if c > n => return c,
            last => assert!(
                Instant::now() < deadline,
                "{file} of {init}: count stuck at {last:?} (<= {n})"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The container runs, thawed, and its count moves on.
fn assert_runs_on(agent: &mut AgentConnection, id: &str, init: u32, file: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = agent.container_state(id).unwrap();
        if state.status == ContainerStatus::Running {
            break;
        }
        assert!(Instant::now() < deadline, "{id} never ran again: {state:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = agent
        .read_file(&format!("/sys/fs/cgroup/crvmm/{id}/cgroup.events"))
        .unwrap();
    let events = String::from_utf8_lossy(&events);
    assert!(events.contains("frozen 0"), "{id}: {events}");
    let now = count(agent, init, file).unwrap_or(0);
    wait_count_above(agent, init, file, now);
}

/// No BUG, WARNING, oops or sanitizer report in the guest kernel's log.
fn assert_kernel_clean(agent: &mut AgentConnection) {
    let log = guest_sh(agent, "dmesg");
    let bad = crvmm_tests::cr::kernel_problems(&log);
    assert!(
        bad.is_empty(),
        "the guest kernel reported:\n{}",
        bad.join("\n")
    );
}

#[test]
fn leave_running_streams_a_verified_image_and_the_counter_goes_on() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ckpt-run");
    let kernel_release = agent.hello().unwrap().kernel_release;
    let format = guest_sh(&mut agent, "cat /sys/kernel/checkpoint/format_version");

    let init = start_counter(&mut agent, "count", 16);
    let events = "/sys/fs/cgroup/crvmm/count/cgroup.events";
    let request = ContainerCheckpoint {
        leave_running: true,
        pre_dump: vec!["sh".into(), "-c".into(), format!("cat {events} > /tmp/pre")],
        post_dump: vec![
            "sh".into(),
            "-c".into(),
            format!("cat {events} > /tmp/post"),
        ],
        ..streamed("count")
    };
    let (report, bytes) = checkpoint_ok(vm.as_ref(), request);
    let at_checkpoint = count(&mut agent, init, "/tmp/state").unwrap();

    // The report describes what came.
    assert_eq!(report.container, "count");
    assert_eq!(report.processes, 1);
    assert!(report.left_running && !report.zstd);
    assert_eq!(report.stored_bytes, bytes.len() as u64);
    assert_eq!(report.image_bytes, bytes.len() as u64);
    assert!(report.image_bytes > 16 << 20, "{report:?}");
    assert_eq!(report.guest_file, None);
    assert_eq!(report.post_dump_error, None);
    assert!(report.dump_us > 0, "{report:?}");
    assert!(
        report.downtime_us >= report.freeze_us + report.dump_us,
        "{report:?}"
    );
    assert!(
        report.total_us >= report.downtime_us + report.pre_dump_us,
        "{report:?}"
    );

    // The image: the manifest, and the init's kernel image.
    let image = check_image(&bytes, &report);
    let m = &image.manifest;
    assert_eq!(m.id, "count");
    assert_eq!(m.kernel_release, kernel_release);
    assert_eq!(m.kernel_format.to_string(), format.trim());
    assert_eq!(m.hostname.as_deref(), Some("box"));
    assert_eq!(m.namespaces, ["mount", "pid", "uts", "ipc", "network"]);
    let mut spec = BasicSpec::new([
        format!("{PROGRAMS}/counter"),
        "16".into(),
        "/tmp/state".into(),
    ]);
    spec.hostname = Some("box".into());
    assert_eq!(m.spec, spec.to_json(), "the spec as given at create");
    assert!(m.leave_running);
    let init_entry = &m.processes[0];
    assert_eq!(
        (
            init_entry.index,
            init_entry.pid,
            init_entry.ppid,
            init_entry.comm.as_str()
        ),
        (0, 1, 0, "counter")
    );
    assert_eq!(init_entry.guest_pid, init as i32);
    let pages = crvmm_cr_image::verify(&image.kernel_images[0][..], &Default::default())
        .unwrap()
        .pages;
    assert!(pages >= 4096, "{pages} pages for 16 MiB");

    // The hooks ran before the freeze and after the thaw.
    assert_eq!(
        guest_sh(&mut agent, "cat /tmp/pre /tmp/post | grep -c 'frozen 0'"),
        "2\n"
    );

    // It counts on, thawed.
    assert_runs_on(&mut agent, "count", init, "/tmp/state");
    assert!(count(&mut agent, init, "/tmp/state").unwrap() > at_checkpoint);
    // A second checkpoint works the same.
    let (report, bytes) = checkpoint_ok(
        vm.as_ref(),
        ContainerCheckpoint {
            leave_running: true,
            ..streamed("count")
        },
    );
    check_image(&bytes, &report);
    agent.container_delete("count", true).unwrap();
    assert_kernel_clean(&mut agent);

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn stream_and_guest_file_carry_the_same_bytes() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ckpt-file");

    // Two processes: the init (a counter, pid 1) and its child.
    let script = format!("{PROGRAMS}/counter 1 /tmp/child & exec {PROGRAMS}/counter 4 /tmp/state");
    let info = agent
        .container_create(
            "pair",
            BasicSpec::new(["sh", "-c", &script]).to_json(),
            true,
        )
        .unwrap();
    wait_count_above(&mut agent, info.pid, "/tmp/state", 1);
    wait_count_above(&mut agent, info.pid, "/tmp/child", 1);

    let request = ContainerCheckpoint {
        leave_running: true,
        guest_file: Some("/tmp/pair.img".into()),
        ..streamed("pair")
    };
    let (report, bytes) = checkpoint_ok(vm.as_ref(), request);
    assert_eq!(report.guest_file.as_deref(), Some("/tmp/pair.img"));
    let image = check_image(&bytes, &report);
    let tree: Vec<(i32, i32, &str)> = image
        .manifest
        .processes
        .iter()
        .map(|p| (p.pid, p.ppid, p.comm.as_str()))
        .collect();
    assert_eq!(tree.len(), 2, "{tree:?}");
    assert_eq!(tree[0], (1, 0, "counter"));
    assert_eq!((tree[1].1, tree[1].2), (1, "counter"));
    assert!(tree[1].0 > 1);

    // The guest file holds the same bytes, and no temporary is left.
    let sum = guest_sh(&mut agent, "sha256sum /tmp/pair.img; ls /tmp");
    let mut lines = sum.lines();
    let guest_sha = lines.next().unwrap().split_whitespace().next().unwrap();
    assert_eq!(guest_sha, sha256_hex(&bytes));
    assert!(!sum.contains(".part"), "{sum}");

    // Only a guest file, compressed: nothing streams; the file is the
    // stored bytes.
    let request = ContainerCheckpoint {
        container: "pair".into(),
        leave_running: true,
        zstd: true,
        guest_file: Some("/tmp/only.img.zst".into()),
        ..Default::default()
    };
    let (report, bytes) = checkpoint_ok(vm.as_ref(), request);
    assert!(bytes.is_empty());
    assert!(
        report.zstd && report.stored_bytes < report.image_bytes,
        "{report:?}"
    );
    let size = guest_sh(&mut agent, "wc -c < /tmp/only.img.zst");
    assert_eq!(size.trim(), report.stored_bytes.to_string());
    assert_runs_on(&mut agent, "pair", info.pid, "/tmp/state");
    agent.container_delete("pair", true).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

#[test]
fn zstd_stream_is_smaller_and_decompresses_to_a_verified_image() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ckpt-zstd");
    let init = start_counter(&mut agent, "packed", 16);

    let request = ContainerCheckpoint {
        leave_running: true,
        zstd: true,
        ..streamed("packed")
    };
    let (report, bytes) = checkpoint_ok(vm.as_ref(), request);
    assert!(report.zstd);
    assert_eq!(report.stored_bytes, bytes.len() as u64);
    assert!(
        report.stored_bytes < report.image_bytes,
        "{} stored of {}",
        report.stored_bytes,
        report.image_bytes
    );
    let plain = zstd::stream::decode_all(&bytes[..]).expect("a zstd stream");
    assert_eq!(plain.len() as u64, report.image_bytes);
    let image = check_image(&plain, &report);
    assert_eq!(image.manifest.processes[0].comm, "counter");
    assert_runs_on(&mut agent, "packed", init, "/tmp/state");
    agent.container_delete("packed", true).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn kill_mode_stops_the_container_after_a_complete_image() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ckpt-kill");
    let init = start_counter(&mut agent, "moved", 8);

    // The default: kill, as for a migration.
    let (report, bytes) = checkpoint_ok(vm.as_ref(), streamed("moved"));
    assert!(!report.left_running);
    let image = check_image(&bytes, &report);
    assert!(!image.manifest.leave_running);
    let at_checkpoint = count(&mut agent, init, "/tmp/state");
    assert!(at_checkpoint.is_none(), "the init's root is gone with it");

    // Stopped, still known, its cgroup empty; then deleted as usual.
    let state = agent.container_state("moved").unwrap();
    assert_eq!(state.status, ContainerStatus::Stopped);
    assert_eq!(state.exit, Some(ExitStatus::Signaled(9)));
    assert_eq!(
        guest_sh(&mut agent, "cat /sys/fs/cgroup/crvmm/moved/cgroup.procs"),
        ""
    );
    let err = match checkpoint(vm.as_ref(), streamed("moved")) {
        (Err(ClientError::Agent(e)), _) => e,
        other => panic!("{other:?}"),
    };
    assert!(
        err.message.contains("is stopped (killed by signal 9)"),
        "{err}"
    );
    agent.container_delete("moved", false).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

/// A sink that takes `limit` bytes, then fails: the host going away.
struct FailsAfter {
    taken: usize,
    limit: usize,
}

impl Write for FailsAfter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.taken >= self.limit {
            return Err(io::Error::other("the disk is full, say"));
        }
        self.taken += bytes.len();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_checkpoints_leave_the_container_running_and_say_why() {
    let sandbox = Sandbox::new();
    let (vm_box, mut agent) = boot(&sandbox, "ckpt-fail");
    let vm = vm_box.as_ref();

    // Refused before anything happens.
    let (err, bytes) = checkpoint_err(vm, streamed("nope"));
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(bytes.is_empty());
    let init = start_counter(&mut agent, "c", 16);
    let (err, _) = checkpoint_err(
        vm,
        ContainerCheckpoint {
            container: "c".into(),
            ..Default::default()
        },
    );
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(
        err.message.contains("`stream`, `guest_file` or both"),
        "{err}"
    );
    let (err, _) = checkpoint_err(
        vm,
        ContainerCheckpoint {
            guest_file: Some("/no/such/dir/c.img".into()),
            ..streamed("c")
        },
    );
    assert!(
        err.message
            .contains("cannot create /no/such/dir/c.img.part"),
        "{err}"
    );
    assert_runs_on(&mut agent, "c", init, "/tmp/state");

    // The pre-dump hook fails: the container was not touched.
    let hook = ["sh", "-c", "echo not now >&2; exit 3"]
        .map(String::from)
        .to_vec();
    let (err, bytes) = checkpoint_err(
        vm,
        ContainerCheckpoint {
            pre_dump: hook,
            ..streamed("c")
        },
    );
    assert!(bytes.is_empty());
    assert!(err.message.contains("pre-dump hook"), "{err}");
    assert!(
        err.message.contains("exit code 3, output: \"not now\""),
        "{err}"
    );
    assert!(err.message.contains("not touched"), "{err}");
    assert_runs_on(&mut agent, "c", init, "/tmp/state");

    // The host goes away after 64 KiB: the agent stops, thaws, runs on.
    let mut agent2 = connect(vm);
    let mut sink = FailsAfter {
        taken: 0,
        limit: 64 << 10,
    };
    let result = agent2.container_checkpoint(streamed("c"), &mut sink, &mut |_| {});
    assert!(matches!(result, Err(ClientError::Sink(_))), "{result:?}");
    drop(agent2);
    assert_runs_on(&mut agent, "c", init, "/tmp/state");
    crvmm_tests::wait_for_text(
        vm.serial_log(),
        "checkpoint of container \"c\" stopped: the host went away during the stream",
        Duration::from_secs(30),
    );
    // ... and a checkpoint after it works.
    let (report, bytes) = checkpoint_ok(
        vm,
        ContainerCheckpoint {
            leave_running: true,
            ..streamed("c")
        },
    );
    check_image(&bytes, &report);
    assert_runs_on(&mut agent, "c", init, "/tmp/state");

    // The freeze does not complete in time (a process in long system
    // calls, looked at once): thawed again.
    let script = "head -c 16777216 /dev/zero > /tmp/src; \
                  while :; do dd if=/tmp/src of=/tmp/dst bs=16M 2>/dev/null; done";
    agent
        .container_create("busy", BasicSpec::new(["sh", "-c", script]).to_json(), true)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent
        .container_exec("busy", ExecRequest::new(["test", "-e", "/tmp/dst"]))
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "dd never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (err, bytes) = checkpoint_err(
        vm,
        ContainerCheckpoint {
            freeze_timeout_ms: Some(0),
            ..streamed("busy")
        },
    );
    assert!(bytes.is_empty());
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(
        err.message
            .contains("did not freeze within 0 ms (thawed again)"),
        "{err}"
    );
    assert_eq!(
        agent.container_state("busy").unwrap().status,
        ContainerStatus::Running
    );
    agent.container_delete("busy", true).unwrap();

    // The kernel refuses an init with a shared memfd mapping: the error
    // names the process, the errno and the kernel's reason, the image ends
    // with it.
    let target = format!("{PROGRAMS}/cr_files");
    let info = agent
        .container_create(
            "shared",
            BasicSpec::new([target.as_str(), "/tmp/t", "memfd"]).to_json(),
            true,
        )
        .unwrap();
    wait_count_above(&mut agent, info.pid, "/tmp/t/state", 1);
    let (err, bytes) = checkpoint_err(vm, streamed("shared"));
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    for part in [
        "dumping process 1 (cr_files",
        "EOPNOTSUPP",
        "resource shared mapping",
        "(a memfd or tmpfs file)",
        "thawed again, it runs on",
    ] {
        assert!(err.message.contains(part), "{part:?} in {err}");
    }
    match read_image(&bytes) {
        Err(ContainerError::Failed { errno, message }) => {
            assert_eq!(errno, libc::EOPNOTSUPP);
            assert!(message.contains("resource shared mapping"), "{message}");
        }
        Err(e) => panic!("expected the image's error record, got {e}"),
        Ok(_) => panic!("a complete image of a refused checkpoint"),
    }
    assert_runs_on(&mut agent, "shared", info.pid, "/tmp/t/state");
    agent.container_delete("shared", true).unwrap();

    // A second process with a POSIX timer on a CPU-time clock: the init is
    // dumped, the second is refused by name.
    let script =
        format!("{PROGRAMS}/cr_signals /tmp/t2 cputimer & exec {PROGRAMS}/counter 1 /tmp/state");
    let info = agent
        .container_create(
            "signal",
            BasicSpec::new(["sh", "-c", &script]).to_json(),
            true,
        )
        .unwrap();
    wait_count_above(&mut agent, info.pid, "/tmp/t2/state", 1);
    let pid = agent
        .container_exec("signal", ExecRequest::new(["pidof", "cr_signals"]))
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
    let (err, _) = checkpoint_err(
        vm,
        ContainerCheckpoint {
            guest_file: Some("/tmp/signal.img".into()),
            ..streamed("signal")
        },
    );
    let named = format!("dumping process {pid} (cr_signals");
    for part in [
        named.as_str(),
        "EOPNOTSUPP",
        "resource timers: POSIX timer 0 counts a CPU-time clock",
    ] {
        assert!(err.message.contains(part), "{part:?} in {err}");
    }
    // No guest file, complete or temporary, is left.
    assert_eq!(
        guest_sh(&mut agent, "ls /tmp | grep -c signal.img || true"),
        "0\n"
    );
    assert_runs_on(&mut agent, "signal", info.pid, "/tmp/state");
    agent.container_delete("signal", true).unwrap();

    // The first container went on through all of it.
    assert_runs_on(&mut agent, "c", init, "/tmp/state");
    agent.container_delete("c", true).unwrap();
    assert_kernel_clean(&mut agent);
    drop(agent);
    drop(vm_box);
    sandbox.assert_clean();
}

/// A zombie or a stopped process in the container: refused by name before
/// anything is dumped (stage 1 would restore either as running), and the
/// container runs on.
#[test]
fn stopped_processes_are_refused_by_name() {
    let sandbox = Sandbox::new();
    let (boxed_vm, mut agent) = boot(&sandbox, "ckpt-states");
    let vm = boxed_vm.as_ref();
    let counter = format!("{PROGRAMS}/counter");
    let find = |agent: &mut AgentConnection, id: &str, state: char| -> String {
        let script = format!(
            "for s in /proc/[0-9]*/status; do grep -q '^State:.{state}' $s && \
             grep '^Pid:' $s | cut -f2; done; true"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = agent
                .container_exec(id, ExecRequest::new(["sh", "-c", &script]))
                .unwrap();
            let pids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !pids.is_empty() {
                return pids;
            }
            assert!(Instant::now() < deadline, "no {state} process in {id}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // (Zombies are saved and restored: tests/tests/container_state.rs.)
    let script = format!("sleep 1000 & exec {counter} 1 /tmp/state");
    let info = agent
        .container_create(
            "stopped",
            BasicSpec::new(["sh", "-c", &script]).to_json(),
            true,
        )
        .unwrap();
    wait_count_above(&mut agent, info.pid, "/tmp/state", 1);
    let out = agent
        .container_exec(
            "stopped",
            ExecRequest::new(["sh", "-c", "kill -STOP $(pidof sleep)"]),
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    find(&mut agent, "stopped", 'T');
    let (err, _) = checkpoint_err(vm, streamed("stopped"));
    assert!(err.message.contains("stopped (SIGSTOP"), "{err}");
    assert_runs_on(&mut agent, "stopped", info.pid, "/tmp/state");
    agent.container_delete("stopped", true).unwrap();
    drop(agent);
    drop(boxed_vm);
    sandbox.assert_clean();
}
