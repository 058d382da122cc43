//! QEMU-engine whole-VM snapshot figures for 128 MiB, 512 MiB and 2 GiB
//! guests (or the sizes given) whose
//! workload dirties a quarter of their memory: snapshot downtime, total time
//! and bytes (with Resume and with Exit), and restore time (the `restore`
//! call, which verifies the files and loads the stream, and to agent-ready).
//!
//! `cargo bench -p crvmm-tests --bench qemu_snapshot [-- RUNS [MIB...]]`.
//! Prints figures, asserts nothing about speed: these machines are shared
//! and noisy.

use std::time::{Duration, Instant};

use crvmm_engine::{AfterSnapshot, AgentChannel, Engine, RestoreOptions};
use crvmm_protocol::ExecRequest;
use crvmm_tests::bench::median;
use crvmm_tests::{GuestImage, Sandbox, AGENT_TIMEOUT};

#[derive(Default)]
struct Figures {
    resume_downtime: Vec<Duration>,
    resume_total: Vec<Duration>,
    exit_downtime: Vec<Duration>,
    exit_total: Vec<Duration>,
    bytes: Vec<u64>,
    restore_call: Vec<Duration>,
    restore_ready: Vec<Duration>,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let sizes: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![128, 512, 2048]
    } else {
        sizes
    };
    let guest = GuestImage::get();
    println!("crvmm QEMU engine snapshot benchmark: {runs} runs per size, medians");
    for mem_mib in sizes {
        let f = measure(&guest, mem_mib, runs);
        println!(
            "{mem_mib:>4} MiB: stream+manifest {:>7.1} MiB",
            median(&f.bytes) as f64 / (1 << 20) as f64
        );
        println!(
            "{mem_mib:>4} MiB: snapshot+resume  downtime {:>8.1} ms  total {:>8.1} ms",
            ms(median(&f.resume_downtime)),
            ms(median(&f.resume_total))
        );
        println!(
            "{mem_mib:>4} MiB: snapshot+exit    downtime {:>8.1} ms  total {:>8.1} ms",
            ms(median(&f.exit_downtime)),
            ms(median(&f.exit_total))
        );
        println!(
            "{mem_mib:>4} MiB: restore call {:>8.1} ms  to agent-ready {:>8.1} ms",
            ms(median(&f.restore_call)),
            ms(median(&f.restore_ready))
        );
    }
}

fn measure(guest: &GuestImage, mem_mib: u32, runs: usize) -> Figures {
    let sandbox = Sandbox::new();
    let snaps = tempfile::Builder::new()
        .prefix("crvmm-snapbench")
        .tempdir_in("/tmp")
        .unwrap();
    let engine = sandbox.qemu();
    let mut f = Figures::default();
    for i in 0..runs {
        let mut config = guest.config(&format!("bench{i}"), AgentChannel::Serial);
        config.mem_mib = mem_mib;
        let mut vm = engine.boot(&config).unwrap();
        vm.wait_agent(AGENT_TIMEOUT).unwrap();
        let mut agent = vm
            .agent_endpoint()
            .connect(Duration::from_secs(30))
            .unwrap();
        let workload = format!(
            "/usr/lib/crvmm/programs/counter {} /tmp/c >/dev/null 2>&1 &",
            mem_mib / 4
        );
        agent
            .exec(ExecRequest::new(["sh", "-c", &workload]))
            .unwrap();
        // Wait until the pattern is written (the first state line).
        let deadline = Instant::now() + Duration::from_secs(120);
        while agent.read_file("/tmp/c").is_err() {
            assert!(Instant::now() < deadline, "the workload never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(agent);

        let info = vm
            .snapshot(&snaps.path().join(format!("r{i}")), AfterSnapshot::Resume)
            .unwrap();
        f.resume_downtime.push(info.downtime);
        f.resume_total.push(info.total);
        let dir = snaps.path().join(format!("e{i}"));
        let info = vm.snapshot(&dir, AfterSnapshot::Exit).unwrap();
        f.exit_downtime.push(info.downtime);
        f.exit_total.push(info.total);
        f.bytes.push(info.bytes);
        drop(vm);

        let started = Instant::now();
        let options = RestoreOptions::new(format!("restored{i}"));
        let mut restored = engine.restore(&dir, &options).unwrap();
        f.restore_call.push(started.elapsed());
        restored.wait_agent(AGENT_TIMEOUT).unwrap();
        f.restore_ready.push(started.elapsed());
        drop(restored);
    }
    sandbox.assert_clean();
    f
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
