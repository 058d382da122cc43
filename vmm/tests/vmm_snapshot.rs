//! Snapshots of a whole crvmm VM with its devices, through the control API:
//! a guest counting in memory and printing on the UART is snapshotted and
//! ended, restored into a new VM from the directory, and counts on. Broken
//! snapshot directories fail restore with an error naming the problem.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crvmm_vmm::api::{self, ApiRequest, ApiResponse};
use crvmm_vmm::runtime::snapshot::{After, MEMORY_FILE, STATE_FILE};
use crvmm_vmm::runtime::{Vmm, VmmConfig, VmmError, VsockConfig};
use crvmm_vmm::vcpus::ExitReason;
use crvmm_vmm::vstate::memory::LoadMode;
use vm_memory::{Bytes, GuestAddress};

mod common;
use common::{assemble, guest_file, temp_dir};

const COUNTER: u64 = 0x20_0000;

fn config(dir: &Path, tag: &str) -> VmmConfig {
    VmmConfig {
        mem_mib: 32,
        serial_log: dir.join(format!("serial-{tag}.log")),
        vsock: Some(VsockConfig {
            uds_path: dir.join(format!("v-{tag}.sock")),
            guest_cid: 3,
        }),
        api_socket: Some(dir.join(format!("api-{tag}.sock"))),
        payload: Some(assemble("uart_counter")),
        ..VmmConfig::new(guest_file("vmlinux"), dir)
    }
}

fn dots(log: &Path) -> usize {
    std::fs::read(log)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b == b'.')
        .count()
}

fn wait_dots(log: &Path, more_than: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while dots(log) <= more_than {
        assert!(Instant::now() < deadline, "the guest stopped printing");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a VMM on its own thread; returns its exit reason and the counter.
fn spawn(
    make: impl FnOnce() -> Vmm + Send + 'static,
) -> std::thread::JoinHandle<(ExitReason, u64)> {
    std::thread::spawn(move || {
        let mut vmm = make();
        let reason = vmm.run().unwrap();
        let count = vmm.memory().read_obj(GuestAddress(COUNTER)).unwrap();
        (reason, count)
    })
}

fn snapshot_of_a_counting_guest(dir: &Path) -> (PathBuf, u64) {
    let c = config(dir, "a");
    let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
    let vm = spawn(move || Vmm::new(&c).unwrap());
    wait_dots(&log, 5);
    let snap = dir.join("snap");
    let request = ApiRequest::SnapshotCreate {
        dir: snap.clone(),
        after: After::Exit,
        diff: false,
    };
    match api::call(&api_path, &request, Duration::from_secs(60)).unwrap() {
        ApiResponse::Snapshot { bytes, .. } => assert!(bytes >= 32 << 20, "{bytes} bytes"),
        other => panic!("snapshot failed: {other:?}"),
    }
    let (reason, count) = vm.join().unwrap();
    assert_eq!(reason, ExitReason::Stopped, "after: exit ends the VM");
    assert_eq!(
        std::fs::metadata(snap.join(MEMORY_FILE)).unwrap().len(),
        32 << 20
    );
    (snap, count)
}

#[test]
fn restored_vm_counts_on_with_its_devices() {
    let dir = temp_dir("vmmsnap");
    let (snap, saved) = snapshot_of_a_counting_guest(&dir);
    let c = config(&dir, "b");
    let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
    let snap2 = snap.clone();
    let vm = spawn(move || Vmm::restore(&snap2, &c, LoadMode::MapPrivate, false).unwrap());
    wait_dots(&log, 3);
    match api::call(&api_path, &ApiRequest::Status, Duration::from_secs(10)).unwrap() {
        ApiResponse::Ok { mem_mib, vcpus, .. } => assert_eq!((mem_mib, vcpus), (32, 1)),
        other => panic!("{other:?}"),
    }
    api::call(&api_path, &ApiRequest::Shutdown, Duration::from_secs(10)).unwrap();
    let (_, count) = vm.join().unwrap();
    assert!(
        count > saved + 3 * 0x4000,
        "counted on from {saved:#x} to {count:#x}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_snapshots_fail_restore_with_the_reason() {
    let dir = temp_dir("vmmsnap");
    let (snap, _) = snapshot_of_a_counting_guest(&dir);
    let state = std::fs::read(snap.join(STATE_FILE)).unwrap();
    let try_restore = |tag: &str| -> String {
        match Vmm::restore(&snap, &config(&dir, tag), LoadMode::MapPrivate, false) {
            Ok(_) => panic!("{tag}: a broken snapshot was restored"),
            Err(e) => crvmm_vmm::error_chain(&e),
        }
    };
    let mut flipped = state.clone();
    flipped[state.len() / 2] ^= 1;
    std::fs::write(snap.join(STATE_FILE), &flipped).unwrap();
    assert!(try_restore("flip").contains("corrupt"));
    std::fs::write(snap.join(STATE_FILE), &state[..state.len() - 100]).unwrap();
    assert!(try_restore("cut").contains("truncated"));
    let mut version = state.clone();
    version[8] = 7;
    std::fs::write(snap.join(STATE_FILE), &version).unwrap();
    assert!(try_restore("version").contains("version 7.x is not supported"));
    std::fs::write(snap.join(STATE_FILE), &state).unwrap();

    let mem = snap.join(MEMORY_FILE);
    std::fs::File::options()
        .write(true)
        .open(&mem)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    assert!(try_restore("memsize").contains("holds 16777216 bytes"));
    std::fs::remove_file(&mem).unwrap();
    assert!(try_restore("nomem").contains("memory"));
    std::fs::remove_dir_all(&snap).unwrap();
    let err = try_restore("nodir");
    assert!(err.contains("state"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn snapshot_into_an_existing_directory_is_refused_and_the_vm_runs_on() {
    let dir = temp_dir("vmmsnap");
    let c = config(&dir, "x");
    let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
    let vm = spawn(move || Vmm::new(&c).unwrap());
    wait_dots(&log, 2);
    let existing = dir.join("taken");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep"), b"mine").unwrap();
    let request = ApiRequest::SnapshotCreate {
        dir: existing.clone(),
        after: After::Resume,
        diff: false,
    };
    match api::call(&api_path, &request, Duration::from_secs(30)).unwrap() {
        ApiResponse::Error { message } => assert!(message.contains("already exists"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(existing.join("keep")).unwrap(), b"mine");
    let before = dots(&log);
    wait_dots(&log, before + 2);
    api::call(&api_path, &ApiRequest::Shutdown, Duration::from_secs(10)).unwrap();
    vm.join().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty());
    let _ = VmmError::EventFd; // the error type is part of the public API
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn diff_chain_restores_the_same_memory_as_a_full_snapshot() {
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("vmmsnap");
    let mut c = config(&dir, "d");
    c.track_dirty = true;
    let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
    let vm = spawn(move || Vmm::new(&c).unwrap());
    let snap = |name: &str, after: After, diff: bool| -> PathBuf {
        let path = dir.join(name);
        let request = ApiRequest::SnapshotCreate {
            dir: path.clone(),
            after,
            diff,
        };
        match api::call(&api_path, &request, Duration::from_secs(60)).unwrap() {
            ApiResponse::Snapshot { .. } => path,
            other => panic!("{name}: {other:?}"),
        }
    };
    wait_dots(&log, 2);
    let base = snap("s0", After::Resume, false);
    wait_dots(&log, dots(&log) + 2);
    let d1 = snap("s1", After::Resume, true);
    wait_dots(&log, dots(&log) + 2);
    let d2 = snap("s2", After::Pause, true);
    // Same paused instant as s2, written in full.
    let full = snap("f2", After::Exit, false);
    vm.join().unwrap();

    // Diffs hold only what changed: a few pages on disk, not 32 MiB.
    for d in [&d1, &d2] {
        let used = std::fs::metadata(d.join(MEMORY_FILE)).unwrap().blocks() * 512;
        assert!(used < 1 << 20, "{} uses {used} bytes on disk", d.display());
        let state = crvmm_vmm::runtime::snapshot::read_state(d).unwrap();
        assert!(matches!(
            state.memory,
            crvmm_vmm::runtime::snapshot::MemoryImage::Diff { .. }
        ));
    }
    assert_eq!(
        std::fs::metadata(base.join(MEMORY_FILE)).unwrap().len(),
        32 << 20
    );

    // The chain s0 + s1 + s2 rebuilds f2's memory byte for byte.
    let (_, chain) = crvmm_vmm::runtime::snapshot::load(&d2, LoadMode::ReadAll).unwrap();
    let rebuilt = dir.join("rebuilt");
    let f = std::fs::File::create(&rebuilt).unwrap();
    crvmm_vmm::vstate::memory::dump(&chain, &f).unwrap();
    drop(f);
    let (a, b) = (
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(full.join(MEMORY_FILE)).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the diff chain differs from the full snapshot");
    let counter = |mem: &[u8]| u64::from_le_bytes(mem[COUNTER as usize..][..8].try_into().unwrap());
    assert!(counter(&a) > 0);

    // And a VM restored from the end of the chain counts on from there.
    let c = config(&dir, "e");
    let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
    let from = counter(&a);
    let vm = spawn(move || Vmm::restore(&d2, &c, LoadMode::MapPrivate, false).unwrap());
    wait_dots(&log, 2);
    api::call(&api_path, &ApiRequest::Shutdown, Duration::from_secs(10)).unwrap();
    let (_, count) = vm.join().unwrap();
    assert!(count > from, "counted on from {from:#x} to {count:#x}");

    // A chain whose parent is gone names it.
    std::fs::remove_dir_all(&d1).unwrap();
    let err = crvmm_vmm::runtime::snapshot::load(&dir.join("s2"), LoadMode::ReadAll).unwrap_err();
    assert!(crvmm_vmm::error_chain(&err).contains("s1"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
