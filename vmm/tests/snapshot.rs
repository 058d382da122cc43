//! Whole-VM snapshots on this host's KVM with payload guests: a guest
//! counting in memory and on a port is snapshotted mid-run, rebuilt in a
//! brand-new KVM VM from the state file and the memory file, and counts on
//! from where it stood; with 1 and with 2 vCPUs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crvmm_devices::BusDevice;
use crvmm_vmm::arch::x86_64::cpuid::CpuidPolicy;
use crvmm_vmm::builder::{Boot, MicroVm, MicroVmState, VmSpec};
use crvmm_vmm::host::HostKvm;
use crvmm_vmm::vstate::memory::{self, LoadMode};
use vm_memory::{Bytes, GuestAddress};

mod common;
use common::{assemble, temp_dir};

const BUF: u64 = 0x20_0000;

/// Counts the bytes written to its port.
struct PortCounter(Arc<Mutex<usize>>);

impl BusDevice for PortCounter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        *self.0.lock().unwrap() += data.len();
    }
}

fn boot(payload: &str, vcpus: u8) -> (MicroVm, Arc<Mutex<usize>>) {
    let spec = VmSpec {
        mem_size: 16 << 20,
        vcpus,
        boot: Boot::Payload {
            code: assemble(payload),
            arg: BUF,
        },
        cpuid: CpuidPolicy {
            nested_pvm: HostKvm::probe().nested_pvm,
        },
        track_dirty: false,
    };
    let mut vm = MicroVm::create(&spec).unwrap();
    let port = attach(&mut vm);
    vm.start().unwrap();
    (vm, port)
}

fn attach(vm: &mut MicroVm) -> Arc<Mutex<usize>> {
    let count = Arc::new(Mutex::new(0));
    let dev = Arc::new(Mutex::new(PortCounter(Arc::clone(&count))));
    vm.pio_bus_mut().insert(dev.clone(), 0x502, 1).unwrap();
    vm.pio_bus_mut().insert(dev, 0x503, 1).unwrap();
    count
}

fn read_u64(vm: &MicroVm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pauses, writes state and memory files, stops the VM; returns the paths.
fn snapshot(vm: &mut MicroVm, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    vm.pause().unwrap();
    let state = vm.save_state().unwrap();
    let state_path = dir.join("state");
    let mem_path = dir.join("memory");
    std::fs::write(&state_path, crvmm_snapshot::encode(&state)).unwrap();
    let f = std::fs::File::create(&mem_path).unwrap();
    memory::dump(vm.memory(), &f).unwrap();
    vm.stop().unwrap();
    (state_path, mem_path)
}

fn restore(state: &std::path::Path, mem: &std::path::Path, mode: LoadMode) -> MicroVm {
    let bytes = std::fs::read(state).unwrap();
    let (_, state): (_, MicroVmState) =
        crvmm_snapshot::read(&mut bytes.as_slice(), crvmm_snapshot::DEFAULT_MAX_PAYLOAD).unwrap();
    let memory = memory::load(mem, state.mem_size, mode).unwrap();
    MicroVm::restore(&state, memory, false).unwrap()
}

#[test]
fn counter_counts_on_after_restore_in_a_new_vm() {
    let dir = temp_dir("snap");
    let (mut vm, _) = boot("counter", 1);
    wait_until("the counter", || read_u64(&vm, BUF) > 50_000);
    let (state, mem) = snapshot(&mut vm, &dir);
    let saved = read_u64(&vm, BUF);
    drop(vm);

    for mode in [LoadMode::MapPrivate, LoadMode::ReadAll] {
        let mut vm = restore(&state, &mem, mode);
        assert_eq!(read_u64(&vm, BUF), saved, "memory is the snapshot's");
        let port = attach(&mut vm);
        vm.start().unwrap();
        wait_until("the restored counter to go on", || {
            read_u64(&vm, BUF) > saved + 50_000
        });
        wait_until("port output after restore", || *port.lock().unwrap() > 3);
        vm.stop().unwrap();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_vcpus_both_count_on_after_restore() {
    let dir = temp_dir("snap");
    let (mut vm, _) = boot("smp", 2);
    let slot = |vm: &MicroVm, i: u64| read_u64(vm, BUF + 8 * i);
    wait_until("both vCPUs", || (0..2).all(|i| slot(&vm, i) >> 32 > 1000));
    let (state, mem) = snapshot(&mut vm, &dir);
    let saved: Vec<u64> = (0..2).map(|i| slot(&vm, i)).collect();
    drop(vm);

    let mut vm = restore(&state, &mem, LoadMode::MapPrivate);
    attach(&mut vm);
    vm.start().unwrap();
    for i in 0..2u64 {
        assert_eq!(
            slot(&vm, i) & 0xffff_ffff,
            0xc0de_0000 | i,
            "vCPU {i}'s mark survived"
        );
        wait_until("each restored vCPU to count on", || {
            slot(&vm, i) >> 32 > (saved[i as usize] >> 32) + 1000
        });
    }
    vm.stop().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_state_files_are_refused() {
    let dir = temp_dir("snap");
    let (mut vm, _) = boot("counter", 1);
    wait_until("the counter", || read_u64(&vm, BUF) > 1000);
    let (state, _) = snapshot(&mut vm, &dir);
    drop(vm);
    let good = std::fs::read(&state).unwrap();
    let read = |bytes: &[u8]| {
        crvmm_snapshot::read::<MicroVmState, _>(
            &mut &bytes[..],
            crvmm_snapshot::DEFAULT_MAX_PAYLOAD,
        )
        .map(|_| ())
    };
    assert!(read(&good).is_ok());
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    assert!(read(&flipped).unwrap_err().to_string().contains("corrupt"));
    assert!(read(&good[..good.len() - 9])
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    std::fs::remove_dir_all(dir).unwrap();
}
