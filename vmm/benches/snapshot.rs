//! Whole-VM snapshots with crvmm's KVM VMM, per guest memory size: snapshot
//! time, guest downtime, bytes written, and restore time to running, for
//! full and diff snapshots. The guest keeps 16 MiB of pages dirty.
//!
//! `cargo bench -p crvmm-vmm --bench snapshot [-- SIZES_MIB...]`
//! (default 128 512 2048). Prints figures; asserts nothing about speed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crvmm_vmm::api::{self, ApiRequest, ApiResponse};
use crvmm_vmm::runtime::snapshot::{After, MEMORY_FILE};
use crvmm_vmm::runtime::{Vmm, VmmConfig};
use crvmm_vmm::testing::{assemble, scratch_dir};
use crvmm_vmm::vstate::memory::LoadMode;

fn config(dir: &Path, tag: &str, mem_mib: u32, code: &[u8]) -> VmmConfig {
    VmmConfig {
        mem_mib,
        serial_log: dir.join(format!("serial-{tag}.log")),
        vsock: None,
        api_socket: Some(dir.join(format!("api-{tag}.sock"))),
        payload: Some(code.to_vec()),
        track_dirty: true,
        ..VmmConfig::new(PathBuf::new(), dir)
    }
}

fn rounds(log: &Path) -> usize {
    std::fs::read(log).unwrap_or_default().len()
}

fn wait_rounds(log: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while rounds(log) < n {
        assert!(Instant::now() < deadline, "the workload stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn snapshot(api_path: &Path, dir: &Path, after: After, diff: bool) -> (u64, Duration, Duration) {
    let request = ApiRequest::SnapshotCreate {
        dir: dir.to_owned(),
        after,
        diff,
    };
    match api::call(api_path, &request, Duration::from_secs(600)).unwrap() {
        ApiResponse::Snapshot {
            bytes,
            downtime_ms,
            total_ms,
        } => (
            bytes,
            Duration::from_millis(downtime_ms),
            Duration::from_millis(total_ms),
        ),
        other => panic!("snapshot failed: {other:?}"),
    }
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![128, 512, 2048]
    } else {
        sizes
    };
    let code = assemble("memtouch");
    println!("crvmm KVM snapshot benchmark (guest keeps 16 MiB dirty)");
    println!(
        "{:>6} {:<5} {:>10} {:>10} {:>10} {:>12} {:>12} {:>12}",
        "MiB", "kind", "written", "on disk", "downtime", "total", "restore map", "restore read"
    );
    for mem in sizes {
        let dir = scratch_dir("bench-snap");
        let c = config(&dir, "src", mem, &code);
        let (log, api_path) = (c.serial_log.clone(), c.api_socket.clone().unwrap());
        let vm = std::thread::spawn(move || Vmm::new(&c).unwrap().run().unwrap());
        wait_rounds(&log, 3);
        let full = dir.join("full");
        let full_figs = snapshot(&api_path, &full, After::Resume, false);
        let seen = rounds(&log);
        wait_rounds(&log, seen + 3);
        let diff = dir.join("diff");
        let diff_figs = snapshot(&api_path, &diff, After::Exit, true);
        vm.join().unwrap();
        for (kind, path, (bytes, downtime, total)) in
            [("full", &full, full_figs), ("diff", &diff, diff_figs)]
        {
            let on_disk = std::fs::metadata(path.join(MEMORY_FILE)).unwrap().blocks() * 512;
            let restore = |mode| {
                let c = config(&dir, "dst", mem, &code);
                let t = Instant::now();
                let vmm = Vmm::restore(path, &c, mode, true).unwrap();
                let took = t.elapsed();
                drop(vmm);
                took
            };
            let (map, read) = (restore(LoadMode::MapPrivate), restore(LoadMode::ReadAll));
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{mem:>6} {kind:<5} {:>8.1}Mi {:>8.1}Mi {:>8.1}ms {:>10.1}ms {:>10.1}ms {:>10.1}ms",
                bytes as f64 / (1 << 20) as f64,
                on_disk as f64 / (1 << 20) as f64,
                ms(downtime),
                ms(total),
                ms(map),
                ms(read)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
