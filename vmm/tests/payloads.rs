//! crvmm on this host's KVM with purpose-built payloads (no Linux): each
//! proves one path through the VMM by what the guest does.
//!
//! Payloads are assembled from `tests/payloads/*.S` with binutils at test
//! time. These tests need `/dev/kvm`; they run on every machine of this
//! project, nested PVM included.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crvmm_devices::BusDevice;
use crvmm_vmm::arch::x86_64::cpuid::CpuidPolicy;
use crvmm_vmm::builder::{Boot, MicroVm, VmSpec};
use crvmm_vmm::host::HostKvm;
use crvmm_vmm::vcpus::{ExitReason, VcpuState};
use vm_memory::{Bytes, GuestAddress};

mod common;
use common::assemble;

/// Where payloads find their data buffer.
const BUF: u64 = 0x20_0000;

fn spec(code: Vec<u8>, vcpus: u8) -> VmSpec {
    VmSpec {
        mem_size: 16 << 20,
        vcpus,
        boot: Boot::Payload { code, arg: BUF },
        cpuid: CpuidPolicy {
            nested_pvm: HostKvm::probe().nested_pvm,
        },
        track_dirty: false,
    }
}

/// Every write a probe saw: (offset, bytes).
type WriteLog = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records every byte written, answers reads with a fixed value.
struct Probe {
    written: WriteLog,
    answer: u32,
}

impl Probe {
    fn new(answer: u32) -> (Arc<Mutex<Probe>>, WriteLog) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe {
            written: Arc::clone(&written),
            answer,
        };
        (Arc::new(Mutex::new(probe)), written)
    }
}

impl BusDevice for Probe {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let bytes = self.answer.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes[i % 4];
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.written.lock().unwrap().push((offset, data.to_vec()));
    }
}

fn bytes_of(log: &WriteLog) -> Vec<u8> {
    log.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn payload_round_trips_serial_pio_mmio_and_memory() {
    let mut vm = MicroVm::create(&spec(assemble("io"), 1)).unwrap();
    let (serial, serial_out) = Probe::new(0);
    let (pio, pio_out) = Probe::new(0x5a);
    let (mmio, mmio_out) = Probe::new(0x1234_5678);
    vm.pio_bus_mut().insert(serial, 0x3f8, 8).unwrap();
    vm.pio_bus_mut().insert(pio, 0x500, 2).unwrap();
    vm.mmio_bus_mut().insert(mmio, 0xd000_0000, 0x1000).unwrap();
    vm.memory().write_obj(41u64, GuestAddress(BUF)).unwrap();
    vm.start().unwrap();

    assert_eq!(
        vm.wait_exit(Duration::from_secs(60)),
        Some(ExitReason::GuestShutdown)
    );
    assert_eq!(vm.debug_exit_code(), Some(0x11));
    assert_eq!(
        String::from_utf8(bytes_of(&serial_out)).unwrap(),
        "hello from the payload\n"
    );
    assert_eq!(
        *pio_out.lock().unwrap(),
        vec![(1, vec![0x5b])],
        "read 0x5a, wrote it + 1"
    );
    assert_eq!(
        *mmio_out.lock().unwrap(),
        vec![(4, (!0x1234_5678u32).to_le_bytes().to_vec())]
    );
    let result: u64 = vm.memory().read_obj(GuestAddress(BUF + 8)).unwrap();
    assert_eq!(
        result, 42,
        "the guest read the host's value and wrote back value + 1"
    );
    vm.stop().unwrap();
}

#[test]
fn several_vcpus_run_at_once() {
    const N: u8 = 4;
    let mut vm = MicroVm::create(&spec(assemble("smp"), N)).unwrap();
    let (port, port_out) = Probe::new(0);
    vm.pio_bus_mut().insert(port, 0x502, 1).unwrap();
    vm.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let slot =
        |vm: &MicroVm, i: u64| -> u64 { vm.memory().read_obj(GuestAddress(BUF + 8 * i)).unwrap() };
    while (0..u64::from(N)).any(|i| slot(&vm, i) & 0xffff_ffff != 0xc0de_0000 | i) {
        assert!(
            Instant::now() < deadline,
            "not every vCPU ran: {:?}",
            vm.vcpu_states()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut reported = bytes_of(&port_out);
    reported.sort();
    assert_eq!(reported, (0..N).collect::<Vec<_>>());
    // All of them keep running: each slot's upper half grows.
    let before: Vec<u64> = (0..u64::from(N)).map(|i| slot(&vm, i) >> 32).collect();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..u64::from(N) {
        assert!(
            slot(&vm, i) >> 32 > before[i as usize],
            "vCPU {i} stopped counting"
        );
    }
    assert!(vm.vcpu_states().iter().all(|s| *s == VcpuState::Running));
    vm.stop().unwrap();
}

#[test]
fn pause_freezes_and_resume_continues_the_count() {
    let mut vm = MicroVm::create(&spec(assemble("counter"), 1)).unwrap();
    let (port, _) = Probe::new(0);
    vm.pio_bus_mut().insert(port, 0x503, 1).unwrap();
    vm.start().unwrap();
    let count = |vm: &MicroVm| -> u64 { vm.memory().read_obj(GuestAddress(BUF)).unwrap() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&vm) < 10_000 {
        assert!(Instant::now() < deadline, "the counter does not run");
        std::thread::sleep(Duration::from_millis(5));
    }

    vm.pause().unwrap();
    assert_eq!(vm.vcpu_states(), vec![VcpuState::Paused]);
    let frozen = count(&vm);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&vm), frozen, "a paused guest must not count");

    vm.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&vm) <= frozen + 10_000 {
        assert!(
            Instant::now() < deadline,
            "the counter did not go on after resume"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    vm.stop().unwrap();
    assert!(matches!(
        vm.vcpu_states()[0],
        VcpuState::Exited(ExitReason::Stopped)
    ));
}

#[test]
fn unknown_ports_read_as_all_ones_and_writes_are_ignored() {
    // The io payload with no devices at all: serial writes and MMIO go
    // nowhere, reads see 0xff; the payload still reaches its exit.
    let mut vm = MicroVm::create(&spec(assemble("io"), 1)).unwrap();
    vm.start().unwrap();
    assert_eq!(
        vm.wait_exit(Duration::from_secs(60)),
        Some(ExitReason::GuestShutdown)
    );
    assert_eq!(vm.debug_exit_code(), Some(0x11));
    vm.stop().unwrap();
}
