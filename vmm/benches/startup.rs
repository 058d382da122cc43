//! crvmm's KVM VMM: start-up time to the first guest instruction, and the
//! resident memory the VMM adds. Prints figures and ratios; asserts nothing
//! about speed (these machines are shared and noisy).
//!
//! `cargo bench -p crvmm-vmm --bench startup [-- RUNS]`
//!
//! vsock throughput with the in-memory driver is the devices crate's
//! benchmark: `cargo bench -p crvmm-devices --bench vsock_throughput`.

use std::time::{Duration, Instant};

use crvmm_vmm::arch::x86_64::cpuid::CpuidPolicy;
use crvmm_vmm::builder::{Boot, MicroVm, VmSpec};
use crvmm_vmm::host::HostKvm;

/// `out 0xf4, al` with al = 7: the payload's first instruction ends the VM.
const EXIT_AT_ONCE: [u8; 6] = [0xb0, 0x07, 0xe6, 0xf4, 0xeb, 0xfe];

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn spec(mem_mib: u64) -> VmSpec {
    VmSpec {
        mem_size: mem_mib << 20,
        vcpus: 1,
        boot: Boot::Payload {
            code: EXIT_AT_ONCE.to_vec(),
            arg: 0,
        },
        cpuid: CpuidPolicy {
            nested_pvm: HostKvm::probe().nested_pvm,
        },
        track_dirty: false,
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    println!("crvmm KVM VMM benchmark: {runs} runs");
    let mut create = Vec::new();
    let mut to_first = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut vm = MicroVm::create(&spec(128)).unwrap();
        let built = t.elapsed();
        vm.start().unwrap();
        vm.wait_exit(Duration::from_secs(30))
            .expect("the payload exits");
        assert_eq!(vm.debug_exit_code(), Some(7));
        to_first.push(t.elapsed());
        create.push(built);
        vm.stop().unwrap();
    }
    create.sort();
    to_first.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = |v: &[Duration]| v[v.len() / 2];
    println!(
        "build VM (memory, KVM VM, vCPU, tables)  median {:>7.2} ms  min {:>7.2} ms",
        ms(med(&create)),
        ms(create[0])
    );
    println!(
        "start-up to first guest instruction       median {:>7.2} ms  min {:>7.2} ms",
        ms(med(&to_first)),
        ms(to_first[0])
    );

    for mem in [128u64, 512, 2048] {
        let before = rss_kib();
        let mut vm = MicroVm::create(&spec(mem)).unwrap();
        vm.start().unwrap();
        vm.wait_exit(Duration::from_secs(30));
        let during = rss_kib();
        vm.stop().unwrap();
        drop(vm);
        println!(
            "resident memory added by a {mem:>4} MiB VM: {:>6} KiB ({:.3}% of guest memory)",
            during.saturating_sub(before),
            during.saturating_sub(before) as f64 / (mem * 1024) as f64 * 100.0
        );
    }
}
