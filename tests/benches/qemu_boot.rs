//! QEMU-engine figures: cold boot to agent-ready, and agent round-trip
//! latency (hello, and exec of `true`), for both agent channels.
//!
//! `cargo bench -p crvmm-tests --bench qemu_boot [-- BOOTS [CALLS]]`.
//! Prints figures, asserts nothing about speed: these machines are shared
//! and noisy, so compare the ratios printed within one run.

use std::time::{Duration, Instant};

use crvmm_engine::{AgentChannel, Engine};
use crvmm_protocol::ExecRequest;
use crvmm_tests::bench::median;
use crvmm_tests::{GuestImage, Sandbox, AGENT_TIMEOUT};

struct Figures {
    boot: Vec<Duration>,
    hello: Vec<Duration>,
    exec: Vec<Duration>,
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let boots: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let calls: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let guest = GuestImage::get();
    println!(
        "crvmm QEMU engine benchmark: {boots} cold boots, {calls} calls per kind, per channel"
    );
    let mut results = Vec::new();
    for (label, channel) in [
        ("vsock", AgentChannel::Vsock),
        ("serial", AgentChannel::Serial),
    ] {
        let f = measure(&guest, channel, boots, calls);
        println!(
            "{label:>6}: boot to agent-ready  median {:>8.1} ms  min {:>8.1} ms",
            ms(median(&f.boot)),
            ms(*f.boot.iter().min().unwrap())
        );
        println!(
            "{label:>6}: hello round trip      p50 {:>8.3} ms  p99 {:>8.3} ms",
            ms(median(&f.hello)),
            ms(percentile(&f.hello, 99))
        );
        println!(
            "{label:>6}: exec `true` round trip p50 {:>8.3} ms  p99 {:>8.3} ms",
            ms(median(&f.exec)),
            ms(percentile(&f.exec, 99))
        );
        results.push((label, f));
    }
    let (v, s) = (&results[0].1, &results[1].1);
    println!(
        "ratios (serial / vsock): boot {:.2}, hello {:.2}, exec {:.2}; exec / hello on vsock {:.1}",
        ratio(median(&s.boot), median(&v.boot)),
        ratio(median(&s.hello), median(&v.hello)),
        ratio(median(&s.exec), median(&v.exec)),
        ratio(median(&v.exec), median(&v.hello)),
    );
}

fn measure(guest: &GuestImage, channel: AgentChannel, boots: usize, calls: usize) -> Figures {
    let sandbox = Sandbox::new();
    let engine = sandbox.qemu();
    let mut f = Figures {
        boot: Vec::new(),
        hello: Vec::new(),
        exec: Vec::new(),
    };
    for i in 0..boots {
        let started = Instant::now();
        let mut vm = engine
            .boot(&guest.config(&format!("bench{i}"), channel))
            .unwrap();
        vm.wait_agent(AGENT_TIMEOUT).unwrap();
        f.boot.push(started.elapsed());
        if i + 1 == boots {
            let mut agent = vm
                .agent_endpoint()
                .connect(Duration::from_secs(30))
                .unwrap();
            for _ in 0..calls {
                let t = Instant::now();
                agent.hello().unwrap();
                f.hello.push(t.elapsed());
            }
            for _ in 0..calls.div_ceil(4) {
                let t = Instant::now();
                assert!(agent
                    .exec(ExecRequest::new(["true"]))
                    .unwrap()
                    .status
                    .success());
                f.exec.push(t.elapsed());
            }
        }
    }
    sandbox.assert_clean();
    f
}

fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut sorted = v.to_vec();
    sorted.sort();
    sorted[(sorted.len() - 1) * p / 100]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
