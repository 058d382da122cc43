//! Writes the seed corpus: `cargo run --example seeds --no-default-features`
//! (from `cr-image/fuzz`) replaces `corpus/image/seed-*` and
//! `corpus/container/seed-*`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/image");
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        {
            std::fs::remove_file(path)?;
        }
    }
    let seeds = crvmm_cr_image_fuzz::seeds();
    let mut total = 0;
    for (name, bytes) in &seeds {
        // The valid seeds verify, the failed ones say so; no seed panics.
        let verdict = crvmm_cr_image::verify(&bytes[..], &Default::default());
        assert_eq!(
            verdict.is_ok(),
            !["failed", "refused"].contains(name),
            "{name}: {verdict:?}"
        );
        crvmm_cr_image_fuzz::check(bytes);
        total += bytes.len();
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!(
        "wrote {} seeds, {total} bytes, to {}",
        seeds.len(),
        dir.display()
    );
    container_seeds(&seeds)
}

/// Container images that wrap the kernel image seeds: one process each, and
/// one with a three-process tree.
fn container_seeds(kernel: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
    use crvmm_cr_image::container::{
        ContainerWriter, Manifest, PipeEnd, PipeEntry, ProcessEntry, ShmEntry, ShmKind, SocketEnd,
        SocketPairEntry, SocketSide,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/container");
    std::fs::create_dir_all(&dir)?;
    let entry = |index: u32, pid: i32, ppid: i32| ProcessEntry {
        index,
        pid,
        ppid,
        ..Default::default()
    };
    let tree = [entry(0, 1, 0), entry(1, 2, 1), entry(2, 3, 2)];
    let small = kernel.iter().min_by_key(|(_, b)| b.len()).map(|(_, b)| b);
    let small = small.cloned().unwrap_or_default();
    let mut images = vec![("tree", tree.to_vec(), vec![small.clone(); 3])];
    for (name, bytes) in kernel.iter().take(2) {
        images.push((name, vec![entry(0, 1, 0)], vec![bytes.clone()]));
    }
    for (name, processes, data) in images {
        let mut manifest = Manifest {
            id: "seed".into(),
            spec: serde_json::json!({"ociVersion": "1.0.2"}),
            processes: processes.clone(),
            ..Default::default()
        };
        // The tree shares a pipe (5 bytes held) and a datagram socketpair
        // (two messages queued on side 0).
        let mut queues: Vec<&[u8]> = Vec::new();
        if name == "tree" {
            manifest.pipes = vec![PipeEntry {
                id: 1,
                fifo: None,
                size: 65536,
                buffered: 5,
                ends: vec![
                    PipeEnd {
                        pid: 1,
                        fd: 3,
                        access: 0,
                    },
                    PipeEnd {
                        pid: 2,
                        fd: 4,
                        access: 1,
                    },
                ],
            }];
            let side = |pid, fd, queued, messages| SocketSide {
                id: 2,
                ends: vec![SocketEnd { pid, fd }],
                queued,
                messages,
            };
            manifest.socketpairs = vec![SocketPairEntry {
                kind: 2,
                sides: [side(2, 5, 6, vec![2, 4]), side(3, 6, 0, vec![])],
            }];
            queues = vec![&b"hello"[..], b"hither", b""];
            // And shared memory: an anonymous object of processes 1 and
            // 2, a removed SysV segment.
            manifest.shared_memory = vec![
                ShmEntry {
                    kind: ShmKind::Anon,
                    id: 1234,
                    size: 8192,
                    pids: vec![1, 2],
                    ..ShmEntry::default()
                },
                ShmEntry {
                    kind: ShmKind::Sysv,
                    id: 5,
                    size: 100,
                    mode: 0o600,
                    removed: true,
                    ..ShmEntry::default()
                },
            ];
        }
        let mut w = ContainerWriter::new(Vec::new(), &manifest)?;
        for (i, q) in queues.iter().enumerate() {
            w.queue(i as u32, q)?;
        }
        if !manifest.shared_memory.is_empty() {
            w.shm(0, 4096, b"shared")?;
            w.shm(1, 0, b"segment")?;
        }
        for (p, bytes) in processes.iter().zip(&data) {
            w.begin_process(p.pid)?;
            w.data(bytes)?;
            w.end_process()?;
        }
        let (bytes, _) = w.finish()?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("wrote container seeds to {}", dir.display());
    Ok(())
}
