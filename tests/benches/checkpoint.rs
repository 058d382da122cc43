//! In-kernel checkpoint/restart figures for one process with 8, 32 and
//! 128 MiB of patterned memory (or the sizes given), in a QEMU guest:
//! freeze time, checkpoint time, image size against the process's memory,
//! zstd-compressed size, and restart time.
//!
//! `cargo bench -p crvmm-tests --bench checkpoint [-- RUNS [MIB...]]`.
//!
//! Restart is timed two ways: "restart, whole image" runs `cr_restart` on a
//! copy of the image whose trailer checksum is damaged, so the kernel does
//! all of the work (reads every record, maps and fills every page) and then
//! kills it at the trailer check: the agent's exec time of that is the cost
//! of a restart to its last step. "to first count" is the host-observed time
//! from starting a real restart until the restored process writes a new
//! count (it counts every 100 ms, so this includes up to one tick).
//!
//! A second table takes thread count as its axis: `cr_threads` with 8, 16
//! and 64 threads (each in a futex wait, a sleep, a poll or counting),
//! checkpointed, killed and restarted; the same columns.
//!
//! Prints figures, asserts nothing about speed: these machines are shared
//! and noisy, and the guest runs under TCG.

use std::time::{Duration, Instant};

use crvmm_protocol::ExecRequest;
use crvmm_tests::bench::{median, runs_and_sizes};
use crvmm_tests::cr::CrLab;
use crvmm_tests::{unique_name, Sandbox};

#[derive(Default)]
struct Figures {
    freeze: Vec<f64>,
    checkpoint: Vec<f64>,
    image: Vec<u64>,
    zstd: Vec<u64>,
    restart_whole: Vec<f64>,
    first_count: Vec<f64>,
}

fn main() {
    let (runs, sizes) = runs_and_sizes(3, &[8, 32, 128]);
    let largest = sizes.iter().copied().max().unwrap_or(8);
    let sandbox = Sandbox::new();
    // The image lives in tmpfs next to the process: room for both, twice.
    let mem = (largest * 4 + 256).max(384);
    let mut lab = CrLab::boot(&sandbox, &unique_name("cr-bench"), mem);
    println!(
        "crvmm in-kernel checkpoint/restart benchmark (QEMU TCG guest, 2 vCPUs, \
         {mem} MiB): {runs} runs per size, medians"
    );
    println!(
        "{:>8} {:>9} {:>11} {:>10} {:>7} {:>10} {:>13} {:>14}",
        "process",
        "freeze",
        "checkpoint",
        "image",
        "ratio",
        "zstd",
        "restart(all)",
        "to first count"
    );
    for mib in sizes {
        let mut f = Figures::default();
        for _ in 0..runs {
            measure(&mut lab, mib, &mut f);
        }
        let image = median(&f.image);
        println!(
            "{:>4} MiB {:>6.1} ms {:>8.1} ms {:>6.1} MiB {:>7.3} {:>6.1} MiB {:>10.1} ms {:>11.1} ms",
            mib,
            median(&f.freeze) * 1e3,
            median(&f.checkpoint) * 1e3,
            image as f64 / (1 << 20) as f64,
            image as f64 / (u64::from(mib) << 20) as f64,
            median(&f.zstd) as f64 / (1 << 20) as f64,
            median(&f.restart_whole) * 1e3,
            median(&f.first_count) * 1e3,
        );
    }
    println!(
        "{:>8} {:>9} {:>11} {:>10} {:>7} {:>10} {:>13} {:>14}",
        "threads", "freeze", "checkpoint", "image", "", "", "", "to first count"
    );
    for threads in [8, 16, 64] {
        let mut f = Figures::default();
        for _ in 0..runs {
            measure_threads(&mut lab, threads, &mut f);
        }
        println!(
            "{:>8} {:>6.1} ms {:>8.1} ms {:>6.2} MiB {:>7} {:>10} {:>13} {:>11.1} ms",
            threads,
            median(&f.freeze) * 1e3,
            median(&f.checkpoint) * 1e3,
            median(&f.image) as f64 / (1 << 20) as f64,
            "",
            "",
            "",
            median(&f.first_count) * 1e3,
        );
    }
    lab.shutdown();
    sandbox.assert_clean();
}

/// `cr_threads` with `threads` threads: checkpoint, kill, restart.
fn measure_threads(lab: &mut CrLab, threads: u32, f: &mut Figures) {
    let dir = "/tmp/tbench";
    let args = format!("{dir} {threads}");
    let pid = lab.start_program("cr_threads", &args, dir, "tbench");
    let at_dump = dump_and_kill(lab, pid, dir, "tbench", f);
    let start = Instant::now();
    lab.sh_ok("$P/cr_restart /tmp/tbench.img </dev/null >/dev/null 2>&1 &");
    lab.wait_count_above(dir, at_dump);
    f.first_count.push(start.elapsed().as_secs_f64());
    let verdict = lab.verify(dir);
    assert!(verdict.starts_with("PASS"), "{threads} threads: {verdict}");
    lab.kill_target(dir);
    lab.sh_ok("rm /tmp/tbench.img");
}

/// Checkpoints target `pid` of `dir` (cgroup `CG/name`) into
/// `/tmp/<name>.img` and kills it; records freeze, checkpoint and image
/// size; returns the count at the checkpoint.
fn dump_and_kill(lab: &mut CrLab, pid: u32, dir: &str, name: &str, f: &mut Figures) -> u64 {
    lab.wait_count_above(dir, 2);
    let out = lab.sh(&format!("$P/cr_dump -k {pid} $CG/{name} /tmp/{name}.img"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cr_dump: {err}");
    f.freeze.push(field(&err, "freeze "));
    f.checkpoint.push(field(&err, "checkpoint "));
    f.image.push(bytes_of(&err));
    lab.kill_target(dir);
    lab.count(dir).unwrap()
}

/// The number after `after` in cr_dump's summary line
/// ("cr_dump: pid N: B bytes, freeze F s, checkpoint C s").
fn field(err: &str, after: &str) -> f64 {
    let at = err
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {err}"))
        + after.len();
    err[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn measure(lab: &mut CrLab, mib: u32, f: &mut Figures) {
    let dir = "/tmp/bench";
    let pid = lab.start_target(dir, mib, "bench", "");
    let at_dump = dump_and_kill(lab, pid, dir, "bench", f);

    let zst = lab.sh_ok("$P/zstdpipe -1 </tmp/bench.img | wc -c");
    f.zstd.push(zst.trim().parse().unwrap());

    // Trailer checksum (record type 11, offset 16) damaged: all the work,
    // then killed at the check.
    lab.sh_ok("$P/cr_mangle /tmp/bench.img /tmp/bench.bad 11 0 16 4 0 >/dev/null");
    let out = lab
        .agent
        .exec(ExecRequest::new([
            "/usr/lib/crvmm/programs/cr_restart",
            "/tmp/bench.bad",
        ]))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{out:?}"
    );
    f.restart_whole.push(out.duration_us as f64 / 1e6);
    lab.sh_ok("rm /tmp/bench.bad");

    let start = Instant::now();
    lab.sh_ok("$P/cr_restart /tmp/bench.img </dev/null >/dev/null 2>&1 &");
    lab.wait_count_above(dir, at_dump);
    f.first_count.push(start.elapsed().as_secs_f64());
    lab.kill_target(dir);
    lab.sh_ok("rm /tmp/bench.img");
    std::thread::sleep(Duration::from_millis(100));
}

/// B in "pid N: B bytes".
fn bytes_of(text: &str) -> u64 {
    let end = text.find(" bytes").expect("byte count");
    text[..end]
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("byte count")
}
