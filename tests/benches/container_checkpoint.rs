//! Container checkpoint figures, in a QEMU guest: a container running
//! `counter MiB` (8, 32 and 128 MiB of patterned memory, or the sizes
//! given) is checkpointed by the agent with `leave_running`, its image
//! streamed over vsock to the host and counted there. For each size:
//! freeze time, dump time, downtime (freeze to thaw), the whole request,
//! the image size and the streaming rate; then the same with zstd in the
//! guest: its size and its downtime (the container stays frozen while its
//! image is compressed); and the dump time to a guest file instead of the
//! stream (the same work without vsock); and the restore of the streamed
//! image as a new container in the same guest (host-observed: sending the
//! image, checking it, rebuilding the container, until every process runs).
//!
//! A second table takes the number of processes as its axis: a container
//! of 1, 4 and 16 processes (`counter 1` each, one of them its init):
//! dump time, downtime, image size and restore time.
//!
//! `cargo bench -p crvmm-tests --bench container_checkpoint [-- RUNS [MIB...]]`.
//!
//! Prints figures, asserts nothing about speed: these machines are shared
//! and noisy, and the guest runs under TCG.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_engine::{AgentChannel, Vm};
use crvmm_protocol::{
    BasicSpec, CheckpointReport, ContainerCheckpoint, ContainerRestore, ExecRequest,
};
use crvmm_tests::bench::{median, runs_and_sizes};
use crvmm_tests::{unique_name, GuestImage, Sandbox};

#[derive(Default)]
struct Figures {
    freeze: Vec<f64>,
    dump: Vec<f64>,
    downtime: Vec<f64>,
    total: Vec<f64>,
    image: Vec<u64>,
    rate: Vec<f64>,
    zstd: Vec<u64>,
    zstd_downtime: Vec<f64>,
    file_dump: Vec<f64>,
    restore: Vec<f64>,
}

/// Keeps the stream (for the restore) and counts it.
#[derive(Default)]
struct Keep(Vec<u8>);

impl Write for Keep {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() {
    let (runs, sizes) = runs_and_sizes(3, &[8, 32, 128]);
    let largest = sizes.iter().copied().max().unwrap_or(8);
    // The container, its restored copy and the kernel's buffers.
    let mem = (largest * 3 + 256).max(384);
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let mut config = guest.config(&unique_name("ct-ckpt-bench"), AgentChannel::Vsock);
    config.vcpus = 2;
    config.mem_mib = mem;
    let vm = sandbox.boot(&config);
    let mut agent = connect(vm.as_ref());
    println!(
        "crvmm container checkpoint benchmark (QEMU TCG guest, 2 vCPUs, {mem} MiB; image \
         streamed over vsock, leave_running): {runs} runs per size, medians"
    );
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>14} {:>13} {:>10}",
        "counter",
        "freeze",
        "dump",
        "downtime",
        "total",
        "image",
        "rate",
        "zstd",
        "zstd downtime",
        "dump to file",
        "restore"
    );
    for mib in sizes {
        let id = format!("bench{mib}");
        let spec = BasicSpec::new([
            "/usr/lib/crvmm/programs/counter".to_owned(),
            mib.to_string(),
            "/tmp/state".to_owned(),
        ]);
        agent.container_create(&id, spec.to_json(), true).unwrap();
        wait_counting(&mut agent, &id);
        let mut f = Figures::default();
        for _ in 0..runs {
            let (report, secs, image) = checkpoint(vm.as_ref(), &id, false, None);
            f.freeze.push(report.freeze_us as f64 / 1e3);
            f.dump.push(report.dump_us as f64 / 1e3);
            f.downtime.push(report.downtime_us as f64 / 1e3);
            f.total.push(report.total_us as f64 / 1e3);
            f.image.push(report.image_bytes);
            f.rate.push(report.stored_bytes as f64 / 1e6 / secs);
            f.restore
                .push(restore(vm.as_ref(), &format!("{id}r"), &image));
            agent.container_delete(&format!("{id}r"), true).unwrap();
            let (report, _, _) = checkpoint(vm.as_ref(), &id, true, None);
            f.zstd.push(report.stored_bytes);
            f.zstd_downtime.push(report.downtime_us as f64 / 1e3);
            let file = "/tmp/bench.img";
            let (report, _, _) = checkpoint(vm.as_ref(), &id, false, Some(file));
            f.file_dump.push(report.dump_us as f64 / 1e3);
            agent.exec(ExecRequest::new(["rm", file])).unwrap();
        }
        println!(
            "{:>4} MiB {:>6.1} ms {:>7.0} ms {:>7.0} ms {:>7.0} ms {:>6.1} MiB {:>4.1} MB/s {:>6.1} MiB {:>11.0} ms {:>10.0} ms {:>7.0} ms",
            mib,
            median(&f.freeze),
            median(&f.dump),
            median(&f.downtime),
            median(&f.total),
            mebibytes(median(&f.image)),
            median(&f.rate),
            mebibytes(median(&f.zstd)),
            median(&f.zstd_downtime),
            median(&f.file_dump),
            median(&f.restore),
        );
        agent.container_delete(&id, true).unwrap();
    }
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>10}",
        "processes", "dump", "downtime", "image", "restore"
    );
    for procs in [1u32, 4, 16] {
        let id = format!("procs{procs}");
        let script = format!(
            "P=/usr/lib/crvmm/programs; for i in $(seq 2 {procs}); do $P/counter 1 /tmp/s$i & done; \
             exec $P/counter 1 /tmp/state"
        );
        let spec = BasicSpec::new(["sh".to_owned(), "-c".to_owned(), script]);
        agent.container_create(&id, spec.to_json(), true).unwrap();
        wait_counting(&mut agent, &id);
        let mut f = Figures::default();
        for _ in 0..runs {
            let (report, _, image) = checkpoint(vm.as_ref(), &id, false, None);
            assert_eq!(report.processes, procs, "{report:?}");
            f.dump.push(report.dump_us as f64 / 1e3);
            f.downtime.push(report.downtime_us as f64 / 1e3);
            f.image.push(report.image_bytes);
            f.restore
                .push(restore(vm.as_ref(), &format!("{id}r"), &image));
            agent.container_delete(&format!("{id}r"), true).unwrap();
        }
        println!(
            "{:>9} {:>7.0} ms {:>7.0} ms {:>6.1} MiB {:>7.0} ms",
            procs,
            median(&f.dump),
            median(&f.downtime),
            mebibytes(median(&f.image)),
            median(&f.restore),
        );
        agent.container_delete(&id, true).unwrap();
    }
    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

fn connect(vm: &dyn Vm) -> AgentConnection {
    vm.agent_endpoint()
        .connect(Duration::from_secs(300))
        .expect("connecting to the agent")
}

/// Restores `image` as container `id`; the host-observed milliseconds.
fn restore(vm: &dyn Vm, id: &str, image: &[u8]) -> f64 {
    let mut agent = connect(vm);
    let request = ContainerRestore {
        container: id.into(),
        guest_file: None,
    };
    let started = Instant::now();
    agent
        .container_restore(request, &mut &image[..], &mut |_| {})
        .unwrap_or_else(|e| panic!("restore of {id}: {e}"));
    started.elapsed().as_secs_f64() * 1e3
}

/// One checkpoint on a connection of its own, streamed (or written to
/// `guest_file` instead); the report, the host-observed seconds and the
/// streamed image.
fn checkpoint(
    vm: &dyn Vm,
    id: &str,
    zstd: bool,
    guest_file: Option<&str>,
) -> (CheckpointReport, f64, Vec<u8>) {
    let mut agent = connect(vm);
    let request = ContainerCheckpoint {
        container: id.into(),
        stream: guest_file.is_none(),
        guest_file: guest_file.map(str::to_owned),
        leave_running: true,
        zstd,
        ..Default::default()
    };
    let mut kept = Keep::default();
    let started = Instant::now();
    let report = agent
        .container_checkpoint(request, &mut kept, &mut |_| {})
        .unwrap_or_else(|e| panic!("checkpoint of {id}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    let streamed = if guest_file.is_none() {
        report.stored_bytes
    } else {
        0
    };
    assert_eq!(kept.0.len() as u64, streamed);
    (report, secs, kept.0)
}

/// Waits until the container's counter has written its state file twice.
fn wait_counting(agent: &mut AgentConnection, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let read = |agent: &mut AgentConnection| {
        let out = agent
            .container_exec(id, ExecRequest::new(["cat", "/tmp/state"]))
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    while read(agent).unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "{id} never counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mebibytes(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
