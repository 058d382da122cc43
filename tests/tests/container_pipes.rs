//! Pipes and FIFOs shared by the processes of a container (issue 7): saved
//! once in the container image, made again at restore with the bytes they
//! held, each end at its process's descriptor.
//!
//! - `cr_pipes`: a parent and child joined by a pipe and a FIFO holding
//!   60 KiB each, a stream socketpair with bytes queued both ways and a
//!   datagram socketpair with five messages queued and a semaphore eventfd
//!   with a count of 3, restored in the same
//!   VM and in a second VM; both check the bytes, message boundaries,
//!   flags, the FIFO's path, and that end-of-file comes once the child has
//!   gone (no end left open by the restore).
//! - An unmodified busybox shell pipeline migrates and goes on.
//! - A pipe shared with a process outside the container is refused, named,
//!   and the container runs on.

use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::{BasicSpec, ExecRequest};
use crvmm_tests::ct::{
    assert_counts_on, boot, checkpoint_refused, checkpoint_streamed, container_number,
    container_sh, delete_clean, lab_count, restore, wait_lab_count_above, wait_verdict,
};
use crvmm_tests::Sandbox;

/// The FIFO is in the container's /tmp, a tmpfs of its own: a restored
/// container gets a new one, in which the restore makes the FIFO again.
const PIPES: &str = "exec /usr/lib/crvmm/programs/cr_pipes /tmp/pipes /tmp/pipes.fifo";

fn count(agent: &mut AgentConnection, init: u32) -> Option<u64> {
    lab_count(agent, init, "pipes")
}

fn wait_count_above(agent: &mut AgentConnection, init: u32, above: u64) -> u64 {
    wait_lab_count_above(agent, init, "pipes", above)
}

/// The container's processes and their descriptors, as "pid: fds" lines.
const FDS: &str = "for p in $(pidof cr_pipes | tr ' ' '\\n' | sort -n); do \
                   echo $p: $(ls /proc/$p/fd | sort -n); done";

fn assert_restored(agent: &mut AgentConnection, id: &str, at: u64, fds: &str) {
    let init = agent.container_state(id).unwrap().pid;
    wait_count_above(agent, init, at);
    assert_eq!(container_sh(agent, id, FDS), fds, "{id}: descriptors");
    container_sh(agent, id, "kill -USR1 $(pidof cr_pipes)");
    let verdict = wait_verdict(agent, init, "pipes");
    assert!(verdict.starts_with("PASS"), "{id}: {verdict}");
}

#[test]
fn a_pipe_and_a_fifo_keep_their_bytes_across_restore() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "pipes-a", 384, Some(2));
    let spec = BasicSpec::new(["sh", "-c", PIPES]).to_json();
    let info = a.container_create("pipes", spec, true).unwrap();
    wait_count_above(&mut a, info.pid, 3);
    let fds = container_sh(&mut a, "pipes", FDS);
    // The child has the parent's pipe and FIFO too, and its own.
    assert_eq!(
        fds, "1: 0 1 2 10 11 14 16 18\n2: 0 1 2 10 11 12 13 15 17 18\n",
        "before"
    );

    let (report, image) = checkpoint_streamed(vm_a.as_ref(), "pipes", false);
    assert_eq!(report.processes, 2, "{report:?}");
    let at = count(&mut a, info.pid).unwrap_or(0);
    a.container_delete("pipes", true).unwrap();
    // The host reads the pipes from the manifest: one pipe, one FIFO,
    // 60 KiB each, every end where the processes had it.
    let limits = crvmm_cr_image::Limits::default();
    let check = crvmm_cr_image::container::check_container(&image[..], &limits, false).unwrap();
    assert!(check.first_bad().is_none(), "{:?}", check.first_bad());
    let pipes = &check.manifest.pipes;
    assert_eq!(pipes.len(), 2, "{pipes:?}");
    assert!(pipes.iter().all(|p| p.buffered == 60 * 1024), "{pipes:?}");
    let fifo = pipes.iter().find(|p| p.fifo.is_some()).unwrap();
    assert_eq!(fifo.fifo.as_deref(), Some("/tmp/pipes.fifo"));
    let mut ends: Vec<_> = pipes
        .iter()
        .flat_map(|p| &p.ends)
        .map(|e| (e.pid, e.fd, e.access))
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        [
            (1, 10, 0),
            (1, 11, 2),
            (2, 10, 0),
            (2, 11, 2),
            (2, 12, 1),
            (2, 13, 1)
        ]
    );
    // Two socketpairs: what each side has queued, datagrams with their
    // lengths.
    let mut sides: Vec<_> = check
        .manifest
        .socketpairs
        .iter()
        .flat_map(|p| p.sides.iter().map(move |s| (p.kind, s)))
        .map(|(kind, s)| {
            let end: Vec<_> = s.ends.iter().map(|e| (e.pid, e.fd)).collect();
            (kind, end, s.queued, s.messages.clone())
        })
        .collect();
    let stream = |pid, fd, queued| (1, vec![(pid, fd)], queued, vec![]);
    let mut want = vec![
        stream(1, 14, 3000),
        stream(2, 15, 2000),
        (2, vec![(1, 16)], 6111, vec![1, 10, 100, 1000, 5000]),
        (2, vec![(2, 17)], 0, vec![]),
    ];
    sides.sort();
    want.sort();
    assert_eq!(sides, want);
    // One semaphore eventfd, both processes at fd 18, count 3.
    let eventfds = &check.manifest.eventfds;
    assert_eq!(eventfds.len(), 1, "{eventfds:?}");
    let e = &eventfds[0];
    let holders: Vec<_> = e.ends.iter().map(|end| (end.pid, end.fd)).collect();
    assert_eq!(
        (e.count, e.semaphore, holders),
        (3, true, vec![(1, 18), (2, 18)])
    );

    restore(&mut a, "again", &image).unwrap();
    assert_restored(&mut a, "again", at, &fds);
    let (vm_b, mut b) = boot(&sandbox, "pipes-b", 384, Some(2));
    restore(&mut b, "pipes", &image).unwrap();
    assert_restored(&mut b, "pipes", at, &fds);

    delete_clean(&mut a, "again");
    delete_clean(&mut b, "pipes");
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}

/// An unmodified busybox pipeline: a shell loop that counts and writes
/// each number into a pipe, and a second shell that reads them and writes
/// each to a file. Migrated to a second VM, the numbers go on from where
/// they were, through the pipe.
#[test]
fn a_busybox_shell_pipeline_goes_on_in_another_vm() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "pipeline-a", 384, Some(2));
    let script = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done | \
                  while read n; do echo $n >/tmp/n; done";
    let spec = BasicSpec::new(["sh", "-c", script]).to_json();
    let info = a.container_create("line", spec, true).unwrap();
    let read = |agent: &mut AgentConnection, init: u32| container_number(agent, init, "n");
    let deadline = Instant::now() + Duration::from_secs(60);
    while read(&mut a, info.pid).unwrap_or(0) < 5 {
        assert!(Instant::now() < deadline, "the pipeline does not count");
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = read(&mut a, info.pid).unwrap();
    let (report, image) = checkpoint_streamed(vm_a.as_ref(), "line", false);
    assert!(report.processes >= 3, "{report:?}");
    a.container_delete("line", true).unwrap();
    let limits = crvmm_cr_image::Limits::default();
    let check = crvmm_cr_image::container::check_container(&image[..], &limits, false).unwrap();
    assert_eq!(check.manifest.pipes.len(), 1, "{:?}", check.manifest.pipes);

    let (vm_b, mut b) = boot(&sandbox, "pipeline-b", 384, Some(2));
    let restored = restore(&mut b, "line", &image).unwrap();
    assert_counts_on(&mut b, restored.pid, "n", at);
    b.container_delete("line", true).unwrap();
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}

/// A guest process outside the container opens the pipe of `cr_pipes`
/// (through /proc): the checkpoint is refused, naming the process, the fd
/// and the outsider, and the container runs on.
#[test]
fn a_pipe_shared_with_the_outside_is_refused_by_name() {
    let sandbox = Sandbox::new();
    let (vm, mut a) = boot(&sandbox, "pipes-out", 384, Some(2));
    let spec = BasicSpec::new(["sh", "-c", PIPES]).to_json();
    let info = a.container_create("out", spec, true).unwrap();
    wait_count_above(&mut a, info.pid, 3);
    let holder = format!(
        "sleep 1000 3</proc/{}/fd/10 >/dev/null 2>&1 </dev/null & echo $!",
        info.pid
    );
    let out = a.exec(ExecRequest::new(["sh", "-c", &holder])).unwrap();
    let outsider = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!outsider.is_empty(), "{out:?}");

    let err = checkpoint_refused(vm.as_ref(), "out");
    let expected = format!(
        "process 1 (cr_pipes) fd 10: a pipe shared with guest process {outsider}, outside the \
         container: not supported"
    );
    assert!(err.contains(&expected), "{err}");
    // It runs on.
    let now = count(&mut a, info.pid).unwrap();
    wait_count_above(&mut a, info.pid, now);
    a.exec(ExecRequest::new(["kill", &outsider])).unwrap();
    a.container_delete("out", true).unwrap();
    drop(a);
    drop(vm);
    sandbox.assert_clean();
}
