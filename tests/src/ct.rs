//! Container checkpoint and restore through a guest's agent, as the
//! container tests do them: a checkpoint streamed to the host on a
//! connection of its own, a restore of the bytes.

use std::time::{Duration, Instant};

use crate::{unique_name, GuestImage, Sandbox};
use crvmm_engine::agent::AgentConnection;
use crvmm_engine::{AgentChannel, Vm};
use crvmm_protocol::{
    CheckpointReport, ClientError, ContainerCheckpoint, ContainerInfo, ContainerRestore,
    ExecRequest,
};

/// Boots a guest with the vsock agent channel, `mem_mib` of memory and
/// `vcpus` (the default if none), and connects to its agent.
pub fn boot(
    sandbox: &Sandbox,
    name: &str,
    mem_mib: u32,
    vcpus: Option<u8>,
) -> (Box<dyn Vm>, AgentConnection) {
    let guest = GuestImage::get();
    let mut config = guest.config(&unique_name(name), AgentChannel::Vsock);
    config.mem_mib = mem_mib;
    if let Some(vcpus) = vcpus {
        config.vcpus = vcpus;
    }
    let vm = sandbox.boot(&config);
    let agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(60))
        .expect("connecting to the agent");
    (vm, agent)
}

/// Checkpoints container `id` of `vm` (killing it, or with
/// `leave_running` not), streamed on a new connection; the report and the
/// image.
pub fn checkpoint_streamed(
    vm: &dyn Vm,
    id: &str,
    leave_running: bool,
) -> (CheckpointReport, Vec<u8>) {
    let request = ContainerCheckpoint {
        container: id.into(),
        stream: true,
        leave_running,
        ..ContainerCheckpoint::default()
    };
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(60))
        .expect("connecting to the agent");
    let mut image = Vec::new();
    let report = agent
        .container_checkpoint(request, &mut image, &mut |_| {})
        .unwrap_or_else(|e| panic!("checkpoint of {id}: {e}"));
    (report, image)
}

/// Checkpoints container `id` of `vm` (streamed), which the agent must
/// refuse; its error message.
pub fn checkpoint_refused(vm: &dyn Vm, id: &str) -> String {
    let request = ContainerCheckpoint {
        container: id.into(),
        stream: true,
        ..ContainerCheckpoint::default()
    };
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(60))
        .expect("connecting to the agent");
    match agent.container_checkpoint(request, &mut Vec::new(), &mut |_| {}) {
        Err(crvmm_protocol::ClientError::Agent(e)) => e.message,
        other => panic!("checkpoint of {id} was not refused: {other:?}"),
    }
}

/// Restores `image` as container `id` through `agent`.
pub fn restore(
    agent: &mut AgentConnection,
    id: &str,
    image: &[u8],
) -> Result<ContainerInfo, ClientError> {
    let request = ContainerRestore {
        container: id.into(),
        guest_file: None,
    };
    agent.container_restore(request, &mut &image[..], &mut |_| {})
}

/// Reads `/tmp/<file>` of the container whose init is guest pid `init`,
/// trimmed; none if it cannot be read.
pub fn container_file(agent: &mut AgentConnection, init: u32, file: &str) -> Option<String> {
    let bytes = agent
        .read_file(&format!("/proc/{init}/root/tmp/{file}"))
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// Runs `sh -c script` in container `id`, which must succeed; its output.
pub fn container_sh(agent: &mut AgentConnection, id: &str, script: &str) -> String {
    let out = agent
        .container_exec(id, ExecRequest::new(["sh", "-c", script]))
        .unwrap();
    assert!(out.status.success(), "{id}: `{script}`: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to two minutes for `/tmp/<dir>/verdict` of the container
/// whose init is guest pid `init` to be written; the verdict.
pub fn wait_verdict(agent: &mut AgentConnection, init: u32, dir: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = container_file(agent, init, &format!("{dir}/verdict")) {
            if !v.is_empty() {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no verdict in /tmp/{dir}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The count of a lab program ("count N" in `/tmp/<dir>/state`) of the
/// container whose init is guest pid `init`.
pub fn lab_count(agent: &mut AgentConnection, init: u32, dir: &str) -> Option<u64> {
    container_file(agent, init, &format!("{dir}/state"))?
        .strip_prefix("count ")?
        .parse()
        .ok()
}

/// Waits up to two minutes for that count to pass `above`; the count.
pub fn wait_lab_count_above(agent: &mut AgentConnection, init: u32, dir: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(n) = lab_count(agent, init, dir).filter(|&n| n > above) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "/tmp/{dir}: the count does not pass {above}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number in `/tmp/<file>` of the container whose init is guest pid
/// `init`, if it holds one.
pub fn container_number(agent: &mut AgentConnection, init: u32, file: &str) -> Option<u64> {
    container_file(agent, init, file)?.parse().ok()
}

/// After a restore of a program that writes a count to `/tmp/<file>`:
/// its first new number comes within a minute and goes on from `at` (at
/// most 15 further: no restart from 1), then it counts three more.
pub fn assert_counts_on(agent: &mut AgentConnection, init: u32, file: &str, at: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(n) = container_number(agent, init, file).filter(|&n| n != at) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the restored program does not count"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        first > at && first <= at + 15,
        "the restored program wrote {first}; it was at {at}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while container_number(agent, init, file).unwrap_or(0) < first + 3 {
        assert!(Instant::now() < deadline, "the restored program stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes container `id` (killing it), then checks the guest's kernel
/// log (`assert_kernel_clean`).
pub fn delete_clean(agent: &mut AgentConnection, id: &str) {
    agent.container_delete(id, true).unwrap();
    assert_kernel_clean(agent);
}

/// The guest's kernel log has no oops, BUG, WARNING or KASAN report.
pub fn assert_kernel_clean(agent: &mut AgentConnection) {
    let log = agent
        .exec(ExecRequest::new(["dmesg"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap();
    let bad = crate::cr::kernel_problems(&log);
    if let Some(first) = bad.first() {
        // The report itself: from its first line on.
        let report: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.contains(&**first))
            .take(80)
            .collect();
        panic!("guest kernel: {bad:?}\n{}", report.join("\n"));
    }
}
