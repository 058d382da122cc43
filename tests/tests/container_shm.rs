//! Shared memory of the processes of a container: saved once in the
//! container image, made again at restore so that the restored processes
//! still share it (not each a copy), each mapping where it was, with its
//! permissions and its offset into the object.
//!
//! - `cr_shm`: a parent and child sharing an anonymous shared mapping
//!   (split in three by a read-only page), a removed SysV segment both
//!   still have attached and a SysV segment with a key that the child has
//!   attached read-only; restored in the same VM and in a second VM, both
//!   check the bytes, their mappings, the segments' ids, keys, modes and
//!   attach counts, and that a token one writes reaches the other.
//! - A shared mapping of a memfd is refused, named, and the container
//!   runs on.

use crvmm_cr_image::container::ShmKind;
use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::BasicSpec;
use crvmm_tests::ct::{
    boot, checkpoint_refused, checkpoint_streamed, container_sh, delete_clean, lab_count, restore,
    wait_lab_count_above, wait_verdict,
};
use crvmm_tests::Sandbox;

const SHM: &str = "exec /usr/lib/crvmm/programs/cr_shm /tmp/shm";
const PAGE: u64 = 4096;

fn count(agent: &mut AgentConnection, init: u32) -> Option<u64> {
    lab_count(agent, init, "shm")
}

fn wait_count_above(agent: &mut AgentConnection, init: u32, above: u64) -> u64 {
    wait_lab_count_above(agent, init, "shm", above)
}

/// Counts on past `at`, then checks itself on SIGUSR1: PASS.
fn assert_passes(agent: &mut AgentConnection, id: &str, at: u64) {
    let init = agent.container_state(id).unwrap().pid;
    wait_count_above(agent, init, at);
    container_sh(agent, id, "kill -USR1 $(pidof cr_shm)");
    let verdict = wait_verdict(agent, init, "shm");
    assert!(verdict.starts_with("PASS"), "{id}: {verdict}");
}

#[test]
fn shared_memory_stays_shared_across_restore() {
    let sandbox = Sandbox::new();
    let (vm_a, mut a) = boot(&sandbox, "shm-a", 384, Some(2));
    let spec = BasicSpec::new(["sh", "-c", SHM]).to_json();
    let info = a.container_create("shm", spec, true).unwrap();
    wait_count_above(&mut a, info.pid, 3);

    let (report, image) = checkpoint_streamed(vm_a.as_ref(), "shm", false);
    assert_eq!(report.processes, 2, "{report:?}");
    let at = count(&mut a, info.pid).unwrap_or(0);
    a.container_delete("shm", true).unwrap();
    // The host reads the shared memory from the manifest: the anonymous
    // mapping once (not once per VMA or per process), both segments.
    let limits = crvmm_cr_image::Limits::default();
    let check = crvmm_cr_image::container::check_container(&image[..], &limits, false).unwrap();
    assert!(check.first_bad().is_none(), "{:?}", check.first_bad());
    let shm = &check.manifest.shared_memory;
    assert_eq!(shm.len(), 3, "{shm:?}");
    let one = |kind: ShmKind, size: u64| {
        let found: Vec<_> = shm
            .iter()
            .filter(|s| s.kind == kind && s.size == size)
            .collect();
        assert_eq!(found.len(), 1, "one {kind:?} of {size} bytes in {shm:?}");
        found[0]
    };
    // Mapped by both processes (SysV segments name none: their VMA
    // records do).
    let anon = one(ShmKind::Anon, 1024 * 1024 + 5 * PAGE);
    let mut pids = anon.pids.clone();
    pids.sort();
    assert_eq!(pids, [1, 2], "{anon:?}");
    // Removed (IPC_RMID) while both have it attached.
    let removed = one(ShmKind::Sysv, 100_000);
    assert_eq!(
        (removed.key, removed.mode, removed.removed),
        (0, 0o600, true),
        "{removed:?}"
    );
    // With a key; the child has it read-only.
    let keyed = one(ShmKind::Sysv, 3 * PAGE + 100);
    assert_eq!(
        (keyed.key, keyed.mode, keyed.removed),
        (0x4352_0001, 0o640, false),
        "{keyed:?}"
    );

    restore(&mut a, "again", &image).unwrap();
    assert_passes(&mut a, "again", at);
    // What a restore made is checkpointed again the same way: the
    // anonymous object is a `/dev/zero` one again, the segments keep
    // their ids.
    let (_, second) = checkpoint_streamed(vm_a.as_ref(), "again", false);
    let check = crvmm_cr_image::container::check_container(&second[..], &limits, false).unwrap();
    let kinds: Vec<_> = check
        .manifest
        .shared_memory
        .iter()
        .map(|e| (e.kind, e.size))
        .collect();
    let first: Vec<_> = shm.iter().map(|e| (e.kind, e.size)).collect();
    assert_eq!(kinds, first);
    a.container_delete("again", true).unwrap();
    restore(&mut a, "again", &second).unwrap();
    assert_passes(&mut a, "again", at);
    let (vm_b, mut b) = boot(&sandbox, "shm-b", 384, Some(2));
    restore(&mut b, "shm", &image).unwrap();
    assert_passes(&mut b, "shm", at);

    delete_clean(&mut a, "again");
    delete_clean(&mut b, "shm");
    drop((a, b));
    drop((vm_a, vm_b));
    sandbox.assert_clean();
}

/// `cr_shm` with a page of a memfd mapped shared (the memfd closed): the
/// checkpoint is refused, naming the mapping as a memfd's, and the
/// container runs on, intact.
#[test]
fn a_memfd_shared_mapping_is_refused_by_name() {
    let sandbox = Sandbox::new();
    let (vm, mut a) = boot(&sandbox, "shm-memfd", 384, Some(2));
    let script = format!("{SHM} memfd");
    let spec = BasicSpec::new(["sh", "-c", &script]).to_json();
    let info = a.container_create("memfd", spec, true).unwrap();
    wait_count_above(&mut a, info.pid, 3);

    let err = checkpoint_refused(vm.as_ref(), "memfd");
    for part in ["resource shared mapping", "memfd"] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    // It runs on, its shared memory as it was.
    let now = count(&mut a, info.pid).unwrap();
    assert_passes(&mut a, "memfd", now);
    delete_clean(&mut a, "memfd");
    drop(a);
    drop(vm);
    sandbox.assert_clean();
}
