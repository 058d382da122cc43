//! The state suite through the agent (issue 7): a container whose processes
//! hold threads in futex waits, sleeps and polls, queued signals with
//! payloads, and interval timers, checkpointed (and killed) by the agent and
//! restored in the same VM and in a second VM. Each program checks its own
//! state on SIGUSR1 and writes PASS or FAIL. And zombies: exited children
//! not yet reaped come back as zombies with their pids, parent, session and
//! exit status.

use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::{BasicSpec, ExecRequest};
use crvmm_tests::ct::{
    assert_counts_on, boot, checkpoint_streamed, container_number, container_sh as exec,
    delete_clean, lab_count, restore, wait_verdict,
};
use crvmm_tests::Sandbox;

/// The container's programs: `cr_threads` (8 threads) as a child of
/// `cr_signals` (two threads, four POSIX timers), which is its pid 1.
const SCRIPT: &str =
    "P=/usr/lib/crvmm/programs; $P/cr_threads /tmp/thr & exec $P/cr_signals /tmp/sig posixtimer";

fn wait_counting(agent: &mut AgentConnection, init: u32, above: [u64; 2]) -> [u64; 2] {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = [lab_count(agent, init, "thr"), lab_count(agent, init, "sig")];
        if let [Some(t), Some(s)] = now {
            if t > above[0] && s > above[1] {
                return [t, s];
            }
        }
        if Instant::now() >= deadline {
            let script = format!(
                "ls -laR /proc/{init}/root/tmp; ps; cat /run/crvmm/containers/*/init.log; dmesg | tail"
            );
            let out = agent.exec(ExecRequest::new(["sh", "-c", &script])).unwrap();
            panic!(
                "counts stuck at {now:?} (above {above:?}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both programs count on from the checkpoint, keep their pids and thread
/// ids, and pass their own checks.
fn assert_restored(agent: &mut AgentConnection, id: &str, at: [u64; 2], ids: &str) {
    let init = agent.container_state(id).unwrap().pid;
    wait_counting(agent, init, at);
    assert_eq!(exec(agent, id, IDS), ids, "{id}: pids and thread ids");
    // Standard input and output are the new container's; nothing of the
    // restorer (image socket, report pipe) is left open.
    let fds = exec(agent, id, FDS);
    assert_eq!(fds, "0 1 2\n0 1 2\n", "{id}: open descriptors");
    exec(
        agent,
        id,
        "rm -f /tmp/thr/verdict /tmp/sig/verdict; kill -USR1 1 $(pidof cr_threads)",
    );
    for dir in ["thr", "sig"] {
        let verdict = wait_verdict(agent, init, dir);
        assert!(verdict.starts_with("PASS"), "{id} {dir}: {verdict}");
    }
}

/// The open descriptors of both processes.
const FDS: &str = "for p in 1 $(pidof cr_threads); do echo $(ls /proc/$p/fd | sort -n); done";

/// Every process's pid and thread ids, as seen in the container.
const IDS: &str = "for p in 1 $(pidof cr_threads); do echo $p: $(ls /proc/$p/task | sort -n); done";

#[test]
fn threads_signals_and_timers_survive_container_migration() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "state-a", 384, Some(2));
    let spec = BasicSpec::new(["sh", "-c", SCRIPT]).to_json();
    let info = a.container_create("suite", spec, true).unwrap();
    wait_counting(&mut a, info.pid, [3, 3]);
    let ids = exec(&mut a, "suite", IDS);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    assert_eq!(ids.lines().next().unwrap().split(' ').count(), 3, "{ids}");

    let (report, image) = checkpoint_streamed(vm_a.as_ref(), "suite", false);
    assert_eq!(report.processes, 2, "{report:?}");
    let at = [
        lab_count(&mut a, info.pid, "thr").unwrap_or(0),
        lab_count(&mut a, info.pid, "sig").unwrap_or(0),
    ];
    a.container_delete("suite", true).unwrap();
    // The host reads it as the kernel will: every kernel image checks out.
    let limits = crvmm_cr_image::Limits::default();
    let check = crvmm_cr_image::container::check_container(&image[..], &limits, false).unwrap();
    assert_eq!(check.processes.len(), 2);
    assert!(check.first_bad().is_none(), "{:?}", check.first_bad());

    let restore_as = |agent: &mut AgentConnection, id: &str| {
        restore(agent, id, &image).unwrap();
    };
    // Same VM, new name; then a second VM.
    restore_as(&mut a, "again");
    assert_restored(&mut a, "again", at, &ids);
    let (vm_b, mut b) = boot(&sandbox, "state-b", 384, Some(2));
    restore_as(&mut b, "suite");
    assert_restored(&mut b, "suite", at, &ids);

    delete_clean(&mut a, "again");
    delete_clean(&mut b, "suite");
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}

/// The container's zombies: "pid ppid sid exit_code" lines, sorted.
const ZOMBIES: &str =
    "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\" { print $1, $4, $6, $NF }' | sort -n";

fn zombies(agent: &mut AgentConnection, id: &str) -> String {
    exec(agent, id, ZOMBIES)
}

#[test]
fn zombies_keep_their_pids_parents_and_exit_status() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "zombie-a", 384, Some(2));
    // Three children of the init that it never reaps: one exited with 7,
    // one killed by SIGTERM, one that led its own session and exited 3.
    // (They end after the shell has become the counter: the shell would
    // reap them.)
    let script = "sh -c 'sleep 0.5; exit 7' & sh -c 'sleep 0.5; kill -TERM $$' & \
                  setsid sh -c 'sleep 0.5; exit 3' & \
                  exec /usr/lib/crvmm/programs/counter 1 /tmp/state";
    let spec = BasicSpec::new(["sh", "-c", script]).to_json();
    let info = a.container_create("z", spec, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let z = zombies(&mut a, "z");
        if z.lines().count() == 3 {
            break z;
        }
        assert!(Instant::now() < deadline, "zombies: {z}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let codes: Vec<&str> = before
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(codes, ["1792", "15", "768"], "{before}");
    assert!(
        before.lines().all(|l| l.split(' ').nth(1) == Some("1")),
        "{before}"
    );

    let (_, image) = checkpoint_streamed(vm_a.as_ref(), "z", false);
    a.container_delete("z", true).unwrap();
    let limits = crvmm_cr_image::Limits::default();
    let check = crvmm_cr_image::container::check_container(&image[..], &limits, false).unwrap();
    assert_eq!(check.manifest.zombies.len(), 3, "{:?}", check.manifest);
    let _ = info;

    let restore_as = |agent: &mut AgentConnection, id: &str| {
        restore(agent, id, &image).unwrap();
    };
    restore_as(&mut a, "z2");
    assert_eq!(zombies(&mut a, "z2"), before, "same VM");
    let (vm_b, mut b) = boot(&sandbox, "zombie-b", 384, Some(2));
    restore_as(&mut b, "z");
    assert_eq!(zombies(&mut b, "z"), before, "second VM");
    a.container_delete("z2", true).unwrap();
    b.container_delete("z", true).unwrap();
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}

/// An unmodified program: a busybox shell loop that counts in a shell
/// variable and runs `sleep` as a child each turn, migrated to a second
/// VM: it goes on counting from where it was, not from 1.
#[test]
fn a_busybox_shell_loop_counts_on_in_another_vm() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "shell-a", 384, Some(2));
    let script = "i=0; while :; do i=$((i+1)); echo $i >/tmp/n; sleep 0.2; done";
    let spec = BasicSpec::new(["sh", "-c", script]).to_json();
    let info = a.container_create("loop", spec, true).unwrap();
    let read = |agent: &mut AgentConnection, init: u32| container_number(agent, init, "n");
    let deadline = Instant::now() + Duration::from_secs(60);
    while read(&mut a, info.pid).unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "the loop does not count");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The count just before the checkpoint (the container is gone after).
    let at = read(&mut a, info.pid).unwrap();
    let (_, image) = checkpoint_streamed(vm_a.as_ref(), "loop", false);
    a.container_delete("loop", true).unwrap();

    let (vm_b, mut b) = boot(&sandbox, "shell-b", 384, Some(2));
    let restored = restore(&mut b, "loop", &image).unwrap();
    assert_counts_on(&mut b, restored.pid, "n", at);
    // At its pace: each `sleep 0.2` sleeps. Busybox runs its applets
    // through /proc/self/exe, which must be busybox again, not the agent
    // that restored it.
    let exe = exec(&mut b, "loop", "readlink /proc/1/exe");
    assert_eq!(exe.trim(), "/bin/busybox");
    let before = read(&mut b, restored.pid).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = read(&mut b, restored.pid).unwrap();
    assert!(
        after > before && after <= before + 12,
        "2 s of `sleep 0.2` counted from {before} to {after}"
    );
    b.container_delete("loop", true).unwrap();
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}
