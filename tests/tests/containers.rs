//! Containers in a real guest (issue 6, part A): the agent creates them
//! from OCI specs, runs programs inside, freezes, thaws, kills and deletes
//! them. Each test checks what the guest does, and that nothing is left.

use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_engine::AgentChannel;
use crvmm_protocol::{
    BasicSpec, ClientError, ContainerInfo, ContainerStatus, ErrorKind, ExecOutput, ExecRequest,
    ExitStatus,
};
use crvmm_tests::{unique_name, GuestImage, Sandbox};

const COUNTER: &str = "/usr/lib/crvmm/programs/counter";

/// Boots a guest (one vCPU: the freeze timeout test relies on it) and
/// connects to its agent.
fn boot(sandbox: &Sandbox, name: &str) -> (Box<dyn crvmm_engine::Vm>, AgentConnection) {
    let guest = GuestImage::get();
    let config = guest.config(&unique_name(name), AgentChannel::Vsock);
    let vm = sandbox.boot(&config);
    let agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(60))
        .unwrap();
    (vm, agent)
}

fn shell_spec(script: &str, hostname: &str) -> serde_json::Value {
    let mut spec = BasicSpec::new(["sh", "-c", script]);
    spec.hostname = Some(hostname.into());
    spec.to_json()
}

/// Runs `sh -c script` in container `id`; returns its output, checked.
fn sh_in(agent: &mut AgentConnection, id: &str, script: &str) -> String {
    let out = agent
        .container_exec(id, ExecRequest::new(["sh", "-c", script]))
        .unwrap();
    assert_success(&out, script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sh -c script` in the guest itself.
fn sh_guest(agent: &mut AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert_success(&out, script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_success(out: &ExecOutput, what: &str) {
    assert!(
        out.status.success(),
        "`{what}` failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agent's error for a call that must fail.
fn agent_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> crvmm_protocol::AgentError {
    match result {
        Err(ClientError::Agent(e)) => e,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

/// Polls `state` until `done` holds (TCG guests are slow on busy hosts).
fn wait_state(
    agent: &mut AgentConnection,
    id: &str,
    done: impl Fn(&ContainerInfo) -> bool,
) -> ContainerInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = agent.container_state(id).unwrap();
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached the state: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The counter of `counter`'s state file, read from outside the container
/// through its init's root (works while the container is frozen).
fn counter_value(agent: &mut AgentConnection, init: u32) -> u64 {
    let text = agent
        .read_file(&format!("/proc/{init}/root/tmp/counter.state"))
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected state file {text:?}"))
}

/// Waits until the counter has moved past `after`.
fn wait_counter_above(agent: &mut AgentConnection, init: u32, after: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = agent.read_file(&format!("/proc/{init}/root/tmp/counter.state")) {
            if !text.is_empty() {
                let value = counter_value(agent, init);
                if value > after {
                    return value;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the counter never passed {after}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cgroup_exists(agent: &mut AgentConnection, id: &str) -> bool {
    let out = agent
        .exec(ExecRequest::new([
            "test",
            "-d",
            &format!("/sys/fs/cgroup/crvmm/{id}"),
        ]))
        .unwrap();
    out.status.success()
}

#[test]
fn lifecycle_exec_isolation_kill_and_delete() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-life");

    let script = "echo started; while :; do sleep 1; done";
    let c1 = agent
        .container_create("c1", shell_spec(script, "box-one"), true)
        .unwrap();
    assert_eq!(c1.status, ContainerStatus::Running);
    assert_eq!(c1.hostname.as_deref(), Some("box-one"));
    assert_eq!(c1.cgroup, "/sys/fs/cgroup/crvmm/c1");
    assert_eq!(c1.rootfs, crvmm_protocol::DEFAULT_ROOTFS);
    assert_eq!(c1.namespaces, ["mount", "pid", "uts", "ipc", "network"]);
    assert!(c1.pid > 1 && c1.exit.is_none(), "{c1:?}");

    // Inside: its own hostname, its init is PID 1, the exec'd shell has a
    // small PID, ps sees only the container's processes.
    assert_eq!(sh_in(&mut agent, "c1", "hostname"), "box-one\n");
    let cmdline = sh_in(&mut agent, "c1", "tr '\\0' ' ' < /proc/1/cmdline");
    assert_eq!(cmdline, format!("sh -c {script} "));
    let pid: u32 = sh_in(&mut agent, "c1", "echo $$").trim().parse().unwrap();
    assert!(pid < 20, "pid {pid} in the container");
    let ps = sh_in(&mut agent, "c1", "ps -o pid,args");
    let pids: Vec<u32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.contains(&1) && pids.iter().all(|p| *p < 20), "{ps}");
    // The exec'd program is in the container's cgroup, and the guest
    // itself keeps its hostname.
    let cgroup = sh_in(&mut agent, "c1", "cat /proc/self/cgroup");
    assert_eq!(cgroup, "0::/crvmm/c1\n");
    assert_eq!(sh_guest(&mut agent, "hostname"), "crvmm-guest\n");
    // The guest sees the init under its guest PID.
    let guest_view = sh_guest(&mut agent, &format!("cat /proc/{}/comm", c1.pid));
    assert_eq!(guest_view, "sh\n");

    // Environment and working directory of the request apply.
    let out = agent
        .container_exec(
            "c1",
            ExecRequest {
                env: vec![("GREETING".into(), "hello".into())],
                cwd: Some("/tmp".into()),
                stdin: b"input".to_vec(),
                ..ExecRequest::new(["sh", "-c", "cat; echo \" $GREETING $PATH $(pwd)\"; exit 4"])
            },
        )
        .unwrap();
    assert_eq!(out.status, ExitStatus::Exited(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "input hello /bin:/sbin:/usr/bin:/usr/sbin /tmp\n"
    );

    // A file written in one container is not visible in another, nor in
    // the guest; the root file system is read-only.
    let c2 = agent
        .container_create("c2", shell_spec("sleep 1000", "box-two"), true)
        .unwrap();
    sh_in(&mut agent, "c1", "echo secret > /tmp/only-c1");
    assert_eq!(sh_in(&mut agent, "c1", "cat /tmp/only-c1"), "secret\n");
    let out = agent
        .container_exec("c2", ExecRequest::new(["cat", "/tmp/only-c1"]))
        .unwrap();
    assert!(!out.status.success(), "c2 sees c1's file");
    assert!(
        agent.read_file("/tmp/only-c1").is_err(),
        "the guest sees it"
    );
    let out = agent
        .container_exec("c1", ExecRequest::new(["touch", "/etc/x"]))
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert_eq!(sh_in(&mut agent, "c2", "hostname"), "box-two\n");

    // The init's output is in its log.
    let log = agent.read_file(&c1.log).unwrap();
    assert_eq!(log, b"started\n");

    // List: both, sorted.
    let list = agent.container_list().unwrap();
    let ids: Vec<_> = list.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);

    // Kill (default SIGKILL) reports the signal once the init is reaped.
    let killed = agent.container_kill("c1", None, false).unwrap();
    assert_eq!(killed.status, ContainerStatus::Stopped);
    assert_eq!(killed.exit, Some(ExitStatus::Signaled(9)));
    let err = agent_error(agent.container_exec("c1", ExecRequest::new(["true"])));
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(
        err.message.contains("is stopped (killed by signal 9)"),
        "{err}"
    );
    let err = agent_error(agent.container_kill("c1", None, false));
    assert!(err.message.contains("stopped"), "{err}");

    // Delete removes the cgroup and the registry entry.
    assert!(cgroup_exists(&mut agent, "c1"));
    agent.container_delete("c1", false).unwrap();
    assert!(!cgroup_exists(&mut agent, "c1"));
    let err = agent_error(agent.container_state("c1"));
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("no container \"c1\" (existing: c2)"),
        "{err}"
    );
    assert!(agent.read_file(&c1.log).is_err(), "the log outlived delete");

    // A running container is deleted only with force.
    let err = agent_error(agent.container_delete("c2", false));
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("is running: kill it first"), "{err}");
    agent.container_delete("c2", true).unwrap();
    assert!(!cgroup_exists(&mut agent, "c2"));
    assert!(agent.container_list().unwrap().is_empty());
    let guest_view = agent
        .exec(ExecRequest::new(["cat", &format!("/proc/{}/comm", c2.pid)]))
        .unwrap();
    assert!(!guest_view.status.success(), "c2's init still exists");

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn create_start_and_exit_status() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-start");

    // Created: set up, its program not yet running.
    let spec = shell_spec("echo out; echo err >&2; exit 3", "waiting");
    let created = agent.container_create("job", spec, false).unwrap();
    assert_eq!(created.status, ContainerStatus::Created);
    assert_eq!(agent.read_file(&created.log).unwrap(), b"");
    // Already in its namespaces: exec works before start.
    assert_eq!(sh_in(&mut agent, "job", "hostname"), "waiting\n");

    let started = agent.container_start("job").unwrap();
    assert_eq!(started.pid, created.pid);
    let stopped = wait_state(&mut agent, "job", |c| c.status == ContainerStatus::Stopped);
    assert_eq!(stopped.exit, Some(ExitStatus::Exited(3)));
    assert_eq!(agent.read_file(&created.log).unwrap(), b"out\nerr\n");
    let err = agent_error(agent.container_start("job"));
    assert!(err.message.contains("stopped (exit code 3)"), "{err}");
    agent.container_delete("job", false).unwrap();

    // A created container that never starts can be deleted as it is.
    let spec = shell_spec("echo never", "idle");
    agent.container_create("idle", spec, false).unwrap();
    let err = agent_error(agent.container_start("nope"));
    assert_eq!(err.kind, ErrorKind::NotFound);
    agent.container_delete("idle", false).unwrap();
    assert!(!cgroup_exists(&mut agent, "idle"));

    // A program that does not exist: create+start fails and leaves nothing.
    let spec = BasicSpec::new(["/bin/no-such-program"]).to_json();
    let err = agent_error(agent.container_create("ghost", spec, true));
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(
        err.message
            .contains("cannot execute \"/bin/no-such-program\""),
        "{err}"
    );
    assert!(agent.container_list().unwrap().is_empty());
    assert!(!cgroup_exists(&mut agent, "ghost"));

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn freeze_stops_the_counter_and_thaw_resumes_it() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-freeze");

    let spec = BasicSpec::new([COUNTER, "1", "/tmp/counter.state"]).to_json();
    let info = agent.container_create("count", spec, true).unwrap();
    let first = wait_counter_above(&mut agent, info.pid, 0);
    wait_counter_above(&mut agent, info.pid, first);

    let frozen = agent.container_freeze("count", None).unwrap();
    assert_eq!(frozen.status, ContainerStatus::Frozen);
    let events = agent
        .read_file("/sys/fs/cgroup/crvmm/count/cgroup.events")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&events).contains("frozen 1"),
        "{}",
        String::from_utf8_lossy(&events)
    );
    let at_freeze = counter_value(&mut agent, info.pid);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counter_value(&mut agent, info.pid), at_freeze);
    // Nothing can be exec'd into a frozen container (it would freeze too).
    let err = agent_error(agent.container_exec("count", ExecRequest::new(["true"])));
    assert!(err.message.contains("is frozen; thaw it"), "{err}");
    assert_eq!(
        agent.container_list().unwrap()[0].status,
        ContainerStatus::Frozen
    );

    let thawed = agent.container_thaw("count").unwrap();
    assert_eq!(thawed.status, ContainerStatus::Running);
    wait_counter_above(&mut agent, info.pid, at_freeze);
    let events = agent
        .read_file("/sys/fs/cgroup/crvmm/count/cgroup.events")
        .unwrap();
    assert!(String::from_utf8_lossy(&events).contains("frozen 0"));

    // A frozen container can be killed and deleted with force.
    agent.container_freeze("count", Some(5000)).unwrap();
    agent.container_delete("count", true).unwrap();
    assert!(!cgroup_exists(&mut agent, "count"));

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn freeze_timeout_leaves_the_container_running() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-ftime");

    // A process that spends its time in long system calls the freezer
    // cannot interrupt (16 MiB reads and writes on tmpfs): a freeze
    // completes only when it next returns to user space, which one look
    // (timeout 0) does not wait for.
    let script = "head -c 16777216 /dev/zero > /tmp/src; \
                  while :; do dd if=/tmp/src of=/tmp/dst bs=16M 2>/dev/null; done";
    agent
        .container_create("busy", shell_spec(script, "busy"), true)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = agent
            .container_exec("busy", ExecRequest::new(["test", "-e", "/tmp/dst"]))
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "dd never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = agent_error(agent.container_freeze("busy", Some(0)));
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(
        err.message
            .contains("did not freeze within 0 ms (thawed again)"),
        "{err}"
    );
    // Thawed again: running, and exec works.
    let state = agent.container_state("busy").unwrap();
    assert_eq!(state.status, ContainerStatus::Running);
    assert_eq!(sh_in(&mut agent, "busy", "echo alive"), "alive\n");

    // Without a time limit the same freeze succeeds.
    let frozen = agent.container_freeze("busy", None).unwrap();
    assert_eq!(frozen.status, ContainerStatus::Frozen);
    agent.container_thaw("busy").unwrap();

    // Kill with `all`: every process of the cgroup gets the signal.
    let killed = agent.container_kill("busy", Some(9), true).unwrap();
    assert_eq!(killed.exit, Some(ExitStatus::Signaled(9)));
    assert_eq!(
        sh_guest(&mut agent, "cat /sys/fs/cgroup/crvmm/busy/cgroup.procs"),
        ""
    );
    agent.container_delete("busy", false).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn resource_limits_apply() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-limit");

    let mut spec = BasicSpec::new(["sleep", "1000"]);
    spec.pids = Some(5);
    spec.memory = Some(64 << 20);
    let info = agent
        .container_create("small", spec.to_json(), true)
        .unwrap();
    let read = |agent: &mut AgentConnection, file: &str| {
        let text = agent.read_file(&format!("{}/{file}", info.cgroup)).unwrap();
        String::from_utf8(text).unwrap()
    };
    assert_eq!(read(&mut agent, "pids.max"), "5\n");
    assert_eq!(read(&mut agent, "memory.max"), format!("{}\n", 64 << 20));

    // The init and an exec'd shell with three children: five, the limit.
    let script = "sleep 60 & sleep 60 & sleep 60 & echo three";
    assert_eq!(sh_in(&mut agent, "small", script), "three\n");
    assert_eq!(read(&mut agent, "pids.current"), "4\n");
    // One more shell fits (five), its child does not.
    let out = agent
        .container_exec(
            "small",
            ExecRequest::new(["sh", "-c", "sleep 60 & echo four"]),
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("can't fork"), "{stderr}");
    assert_eq!(read(&mut agent, "pids.events"), "max 1\n");

    agent.container_delete("small", true).unwrap();
    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn errors_are_clear() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-errors");

    // Unknown container.
    let err = agent_error(agent.container_state("nope"));
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.message, "no container \"nope\" (existing: none)");
    let err = agent_error(agent.container_exec("nope", ExecRequest::new(["true"])));
    assert_eq!(err.kind, ErrorKind::NotFound);

    // Unsupported and invalid fields, by name; nothing is created.
    let mut spec = shell_spec("true", "x");
    spec["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"});
    let err = agent_error(agent.container_create("bad", spec, true));
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(
        err.message.contains("`linux.seccomp` is not supported"),
        "{err}"
    );
    let mut spec = shell_spec("true", "x");
    spec["mounts"][0]["type"] = serde_json::json!("devpts");
    let err = agent_error(agent.container_create("bad", spec, true));
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(err.message.contains("mounts[0].type"), "{err}");
    let mut spec = BasicSpec::new(["true"]);
    spec.rootfs = "/no/such/rootfs".into();
    let err = agent_error(agent.container_create("bad", spec.to_json(), true));
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("/no/such/rootfs"), "{err}");
    let err = agent_error(agent.container_create("bad id", shell_spec("true", "x"), true));
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("is not valid"), "{err}");
    // A failed setup step names the step and the spec field.
    let mut spec = shell_spec("true", "x");
    spec["mounts"][2]["options"] = serde_json::json!(["size=lots"]);
    let err = agent_error(agent.container_create("bad", spec, true));
    assert!(
        err.message.contains("mounting tmpfs on /tmp (mounts[2])"),
        "{err}"
    );
    assert!(agent.container_list().unwrap().is_empty());
    assert!(!cgroup_exists(&mut agent, "bad"));

    // Duplicate identifier.
    agent
        .container_create("dup", shell_spec("sleep 1000", "dup"), true)
        .unwrap();
    let err = agent_error(agent.container_create("dup", shell_spec("true", "x"), true));
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(err.message, "container \"dup\" already exists");
    // Bad signal, missing program in exec.
    let err = agent_error(agent.container_kill("dup", Some(99), false));
    assert!(err.message.contains("99 is not a signal number"), "{err}");
    let err = agent_error(agent.container_exec("dup", ExecRequest::new(["no-such-tool"])));
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("no-such-tool"), "{err}");
    let err = agent_error(agent.container_exec(
        "dup",
        ExecRequest {
            cwd: Some("/nowhere".into()),
            ..ExecRequest::new(["true"])
        },
    ));
    assert!(err.message.contains("/nowhere"), "{err}");
    agent.container_delete("dup", true).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn user_namespace_maps_root() {
    let sandbox = Sandbox::new();
    let (vm, mut agent) = boot(&sandbox, "ct-user");

    let mut spec = BasicSpec::new(["sleep", "1000"]);
    spec.user_ns_base = Some(100_000);
    spec.hostname = Some("mapped".into());
    let info = agent.container_create("u", spec.to_json(), true).unwrap();
    assert!(info.namespaces.contains(&"user".to_owned()));
    assert_eq!(sh_in(&mut agent, "u", "id -u; hostname"), "0\nmapped\n");
    let map = sh_in(&mut agent, "u", "cat /proc/self/uid_map");
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    // Seen from the guest, the init runs as the mapped ID.
    let status = sh_guest(&mut agent, &format!("grep ^Uid: /proc/{}/status", info.pid));
    assert!(status.contains("100000"), "{status}");
    agent.container_delete("u", true).unwrap();

    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}
