use super::format::*;
use super::*;

mod shm;

fn manifest(pids: &[(i32, i32)]) -> Manifest {
    Manifest {
        id: "c1".into(),
        created: 1,
        kernel_release: "6.12.117-crvmm".into(),
        kernel_format: 1,
        spec: serde_json::json!({"ociVersion": "1.0.2"}),
        namespaces: vec!["pid".into(), "mount".into()],
        hostname: Some("box".into()),
        processes: pids
            .iter()
            .enumerate()
            .map(|(i, &(pid, ppid))| ProcessEntry {
                index: i as u32,
                pid,
                ppid,
                ..Default::default()
            })
            .collect(),
        leave_running: false,
        zombies: Vec::new(),
        clocks: None,
        pipes: Vec::new(),
        socketpairs: Vec::new(),
        eventfds: Vec::new(),
        shared_memory: Vec::new(),
    }
}

/// An image of processes `pids` whose kernel images are `sizes` bytes.
fn image(pids: &[(i32, i32)], sizes: &[usize]) -> (Vec<u8>, Written) {
    let mut w = ContainerWriter::new(Vec::new(), &manifest(pids)).unwrap();
    for (&(pid, _), &size) in pids.iter().zip(sizes) {
        w.begin_process(pid).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        w.data(&data).unwrap();
        w.end_process().unwrap();
    }
    w.finish().unwrap()
}

fn read_all(bytes: &[u8]) -> Result<(Manifest, Vec<Vec<u8>>), ContainerError> {
    let mut r = ContainerReader::new(bytes);
    let mut images = Vec::new();
    let mut manifest = None;
    while let Some(ev) = r.next_event()? {
        match ev {
            Event::Header(m) => manifest = Some(*m),
            Event::Process { .. } => images.push(Vec::new()),
            Event::Data(d) => images.last_mut().unwrap().extend_from_slice(d),
            Event::Queue { .. }
            | Event::Shm { .. }
            | Event::ProcessEnd { .. }
            | Event::End { .. } => {}
        }
    }
    Ok((manifest.unwrap(), images))
}

pub(super) fn bad_what(err: ContainerError) -> String {
    match err {
        ContainerError::Bad { what, .. } => what,
        other => panic!("expected a Bad record error, got {other:?}"),
    }
}

#[test]
fn round_trip_with_chunks_and_a_tree() {
    let pids = [(1, 0), (7, 1), (9, 7)];
    let sizes = [CT_MAX_CHUNK * 2 + 5, 0, 4096];
    let (bytes, written) = image(&pids, &sizes);
    assert_eq!(written.bytes, bytes.len() as u64);
    assert!(is_container_image(&bytes));
    let (m, images) = read_all(&bytes).unwrap();
    assert_eq!(m, manifest(&pids));
    let lens: Vec<usize> = images.iter().map(Vec::len).collect();
    assert_eq!(lens, sizes);
    assert_eq!(images[0][1000], (1000 * 7 % 251) as u8);
    let (_, n, digest) = ContainerReader::new(&bytes[..]).verify().unwrap();
    assert_eq!((n, digest), (written.bytes, written.digest));
}

#[test]
fn every_truncation_is_refused() {
    let (bytes, _) = image(&[(1, 0)], &[3000]);
    for cut in (0..bytes.len()).step_by(7) {
        let err = ContainerReader::new(&bytes[..cut]).verify().unwrap_err();
        assert!(
            matches!(
                err,
                ContainerError::Truncated(_) | ContainerError::NotContainer(_)
            ),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let (bytes, _) = image(&[(1, 0)], &[3000]);
    for at in (0..bytes.len()).step_by(13) {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        assert!(
            ContainerReader::new(&b[..]).verify().is_err(),
            "flip at {at}"
        );
    }
}

#[test]
fn data_damage_is_named_by_process_digest() {
    let (mut bytes, _) = image(&[(1, 0)], &[3000]);
    // Header record, then PROCESS (8 + 8), then DATA: its payload.
    let header_len = 8 + le_u32(&bytes, 4) as usize;
    let header_len = header_len + padding(header_len);
    bytes[header_len + 16 + 8 + 100] ^= 1;
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("process 0: digest mismatch"), "{what}");
}

#[test]
fn structure_errors() {
    // Not a container image at all.
    let err = ContainerReader::new(&[1u8, 0, 0, 0, 8, 0, 0, 0][..])
        .verify()
        .unwrap_err();
    assert!(matches!(err, ContainerError::NotContainer(_)), "{err:?}");

    // Absurd length: refused before allocating.
    let (mut bytes, _) = image(&[(1, 0)], &[10]);
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("over the limit"), "{what}");

    // Bytes after the trailer.
    let (mut bytes, _) = image(&[(1, 0)], &[10]);
    bytes.push(0);
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("after the trailer"), "{what}");

    // A process missing: the manifest names two, the stream has one.
    let mut w = ContainerWriter::new(Vec::new(), &manifest(&[(1, 0), (2, 1)])).unwrap();
    w.begin_process(1).unwrap();
    w.end_process().unwrap();
    let (bytes, _) = w.finish().unwrap();
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("1 of 2 processes"), "{what}");

    // A process that is not the manifest's next one.
    let mut w = ContainerWriter::new(Vec::new(), &manifest(&[(1, 0)])).unwrap();
    w.begin_process(5).unwrap();
    w.end_process().unwrap();
    let (bytes, _) = w.finish().unwrap();
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("out of order"), "{what}");
}

#[test]
fn manifest_trees_are_checked() {
    for (pids, why) in [
        (&[][..], "0 processes"),
        (&[(1, 0), (3, 2)][..], "parent 2 not before it"),
        (&[(1, 0), (1, 1)][..], "pid 1 twice"),
        (&[(2, 1)][..], "parent 1 not before it"),
        (&[(0, 0)][..], "pid 0"),
    ] {
        let w = ContainerWriter::new(Vec::new(), &manifest(pids)).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(why), "{pids:?}: {what}");
    }
}

#[test]
fn zombies_are_checked() {
    let zombie = |pid, ppid, status| ZombieEntry {
        pid,
        ppid,
        status,
        ..Default::default()
    };
    let good = [zombie(3, 1, 7 << 8), zombie(4, 2, 9), zombie(5, 2, 0x86)];
    let bad = [
        (zombie(2, 1, 0), "zombie entry 0 (pid 2"),
        (zombie(0, 1, 0), "zombie entry 0 (pid 0"),
        (zombie(3, 7, 0), "zombie 3 has parent 7"),
        (zombie(3, 3, 0), "zombie 3 has parent 3"),
        (zombie(3, 1, 0x7f), "status 0x7f"),
        (zombie(3, 1, 65), "status 0x41"),
        (zombie(3, 1, 0x10100), "status 0x10100"),
        (zombie(3, 1, 0x101), "status 0x101"),
    ];
    let with = |zombies: Vec<ZombieEntry>| {
        let mut m = manifest(&[(1, 0), (2, 1)]);
        m.zombies = zombies;
        let mut w = ContainerWriter::new(Vec::new(), &m).unwrap();
        for pid in [1, 2] {
            w.begin_process(pid).unwrap();
            w.data(b"image").unwrap();
            w.end_process().unwrap();
        }
        w.finish().unwrap().0
    };
    let (read, _) = read_all(&with(good.to_vec())).unwrap();
    assert_eq!(read.zombies, good);
    let twice = with(vec![good[0].clone(), good[0].clone()]);
    let what = bad_what(ContainerReader::new(&twice[..]).verify().unwrap_err());
    assert!(what.contains("zombie entry 1 (pid 3"), "{what}");
    for (z, why) in bad {
        let bytes = with(vec![z]);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(why), "{why}: {what}");
    }
    assert!(!ZombieEntry::status_valid(-1));
    assert!(ZombieEntry::status_valid(255 << 8));
}

#[test]
fn a_failed_checkpoint_reads_as_its_error() {
    let mut w = ContainerWriter::new(Vec::new(), &manifest(&[(1, 0)])).unwrap();
    w.begin_process(1).unwrap();
    w.data(b"partial").unwrap();
    let bytes = w.error(95, "resource threads: 2 threads").unwrap();
    match ContainerReader::new(&bytes[..]).verify().unwrap_err() {
        ContainerError::Failed { errno, message } => {
            assert_eq!(errno, 95);
            assert_eq!(message, "resource threads: 2 threads");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_verifies_every_kernel_image() {
    use crate::builder::ImageBuilder;
    let good = ImageBuilder::new().build().bytes;
    let mut bad = good.clone();
    let last = bad.len() - 20;
    bad[last] ^= 1; // the trailer's CRC
    let pids = [(1, 0), (2, 1)];
    let mut w = ContainerWriter::new(Vec::new(), &manifest(&pids)).unwrap();
    for (pid, image) in [(1, &good), (2, &bad)] {
        w.begin_process(pid).unwrap();
        w.data(image).unwrap();
        w.end_process().unwrap();
    }
    let (bytes, written) = w.finish().unwrap();
    let limits = crate::Limits::default();
    let check = check_container(&bytes[..], &limits, false).unwrap();
    assert_eq!(check.bytes, written.bytes);
    assert_eq!(check.processes.len(), 2);
    assert!(check.processes[0].verdict.is_ok());
    let (p, e) = check.first_bad().expect("the second image is bad");
    assert_eq!(p.pid, 2);
    assert!(
        e.to_string().contains("checksum") || e.to_string().contains("trailer"),
        "{e}"
    );

    let json = check_container(&bytes[..], &limits, true).unwrap();
    assert!(json.processes[0].kernel.as_ref().unwrap()["records"].is_array());
}

/// Processes 1 and 7 joined by a pipe holding 60 KiB (7 reads at fd 0, 1
/// writes at fd 4) and a FIFO holding nothing (1 reads and writes at 5).
fn with_pipes() -> (Manifest, Vec<Vec<u8>>) {
    let mut m = manifest(&[(1, 0), (7, 1)]);
    let end = |pid, fd, access| PipeEnd { pid, fd, access };
    m.pipes = vec![
        PipeEntry {
            id: 4242,
            fifo: None,
            size: 65536,
            buffered: 61440,
            ends: vec![end(7, 0, 0), end(1, 4, 1)],
        },
        PipeEntry {
            id: 77,
            fifo: Some("/tmp/fifo".into()),
            size: 4096,
            buffered: 0,
            ends: vec![end(1, 5, 2)],
        },
    ];
    let data = vec![(0..61440).map(|i| (i % 253) as u8).collect(), Vec::new()];
    (m, data)
}

fn pipe_image(m: &Manifest, data: &[Vec<u8>]) -> Vec<u8> {
    image_of(m, |w| {
        for (i, d) in data.iter().enumerate() {
            w.queue(i as u32, d).unwrap();
        }
    })
}

/// An image of `m`: what `before` writes, then a small kernel image for
/// each process.
pub(super) fn image_of(
    m: &Manifest,
    before: impl FnOnce(&mut ContainerWriter<Vec<u8>>),
) -> Vec<u8> {
    let mut w = ContainerWriter::new(Vec::new(), m).unwrap();
    before(&mut w);
    for p in &m.processes {
        w.begin_process(p.pid).unwrap();
        w.data(b"kernel image").unwrap();
        w.end_process().unwrap();
    }
    w.finish().unwrap().0
}

#[test]
fn pipes_are_written_once_before_the_processes() {
    let (m, data) = with_pipes();
    let bytes = pipe_image(&m, &data);
    let mut r = ContainerReader::new(&bytes[..]);
    let mut got = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        match ev {
            Event::Queue { index, data } => got.push((index, data.to_vec())),
            Event::Process { .. } => assert_eq!(got.len(), 2, "pipes come first"),
            _ => {}
        }
    }
    assert_eq!(r.manifest().unwrap().pipes, m.pipes);
    assert_eq!(got, vec![(0, data[0].clone()), (1, Vec::new())]);
    // A writer refuses pipe data once a process started.
    let mut w = ContainerWriter::new(Vec::new(), &m).unwrap();
    w.begin_process(1).unwrap();
    assert!(w.queue(0, &data[0]).is_err());
}

#[test]
fn pipe_records_must_match_the_manifest() {
    let (m, data) = with_pipes();
    // Missing: the second pipe's record.
    let short = pipe_image(&m, &data[..1]);
    let what = bad_what(ContainerReader::new(&short[..]).verify().unwrap_err());
    assert!(
        what.contains("the data of 1 of 2 pipes and sockets"),
        "{what}"
    );
    // A pipe whose record holds other than its manifest's byte count.
    let mut other = data.clone();
    other[0].pop();
    let bytes = pipe_image(&m, &other);
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(
        what.contains("queue record 0: not the manifest's queue 0"),
        "{what}"
    );
    // Damaged bytes are caught by the trailer's digest.
    let mut bytes = pipe_image(&m, &data);
    let at = bytes.len() / 3;
    bytes[at] ^= 1;
    assert!(ContainerReader::new(&bytes[..]).verify().is_err());
}

#[test]
fn pipe_manifests_are_checked() {
    type Change = fn(&mut Manifest);
    let cases: [(Change, &str); 8] = [
        (|m| m.pipes[0].ends[0].pid = 99, "pid 99 is no process"),
        (|m| m.pipes[0].ends[0].access = 2, "access 2"),
        (|m| m.pipes[0].ends[1].fd = -1, "fd -1"),
        (
            |m| {
                let end = m.pipes[0].ends[0];
                m.pipes[1].ends.push(end)
            },
            "taken twice",
        ),
        (|m| m.pipes[0].ends.clear(), "no process holds it"),
        (|m| m.pipes[0].buffered = 65537, "bytes in a buffer"),
        (|m| m.pipes[0].size = 0, "buffer size 0"),
        (|m| m.pipes[1].fifo = Some("tmp/fifo".into()), "FIFO path"),
    ];
    for (change, expected) in cases {
        let (mut m, data) = with_pipes();
        change(&mut m);
        let bytes = pipe_image(&m, &data);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(expected), "{what} (wanted {expected})");
    }
}

/// `with_pipes` and a datagram socketpair: process 7 holds side 0 at fd 3
/// (two messages queued for it), side 1 was closed.
fn with_sockets() -> (Manifest, Vec<Vec<u8>>) {
    let (mut m, mut data) = with_pipes();
    m.socketpairs = vec![SocketPairEntry {
        kind: sockets::SOCK_DGRAM,
        sides: [
            SocketSide {
                id: 900,
                ends: vec![SocketEnd { pid: 7, fd: 3 }],
                queued: 8,
                messages: vec![3, 5],
            },
            SocketSide::default(),
        ],
    }];
    data.push(b"onetwo!!".to_vec());
    data.push(Vec::new());
    (m, data)
}

#[test]
fn socket_queues_follow_the_pipes() {
    let (m, data) = with_sockets();
    let bytes = pipe_image(&m, &data);
    let mut r = ContainerReader::new(&bytes[..]);
    let mut got = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        if let Event::Queue { index, data } = ev {
            got.push((index, data.len()));
        }
    }
    assert_eq!(got, [(0, 61440), (1, 0), (2, 8), (3, 0)]);
    assert_eq!(r.manifest().unwrap().socketpairs, m.socketpairs);
}

#[test]
fn socketpair_manifests_are_checked() {
    type Change = fn(&mut Manifest);
    let cases: [(Change, &str); 6] = [
        (|m| m.socketpairs[0].kind = 3, "type 3"),
        (
            |m| m.socketpairs[0].sides[0].messages = vec![3, 4],
            "2 messages of 7 bytes",
        ),
        (
            |m| m.socketpairs[0].sides[0].ends.clear(),
            "no process holds it",
        ),
        (|m| m.socketpairs[0].sides[1].queued = 1, "1 bytes queued"),
        (
            |m| m.socketpairs[0].sides[0].ends[0].fd = 0,
            "pid 7 fd 0 is taken",
        ),
        (
            |m| m.socketpairs[0].sides[0].ends[0].pid = 5,
            "pid 5 is no process",
        ),
    ];
    for (change, expected) in cases {
        let (mut m, data) = with_sockets();
        change(&mut m);
        let bytes = pipe_image(&m, &data);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(expected), "{what} (wanted {expected})");
    }
}

#[test]
fn eventfd_manifests_are_checked() {
    let (mut m, data) = with_sockets();
    let end = |pid, fd| SocketEnd { pid, fd };
    m.eventfds = vec![EventfdEntry {
        id: 3,
        count: 5,
        semaphore: true,
        ends: vec![end(1, 20), end(7, 20)],
    }];
    let bytes = pipe_image(&m, &data);
    let mut r = ContainerReader::new(&bytes[..]);
    while r.next_event().unwrap().is_some() {}
    assert_eq!(r.manifest().unwrap().eventfds, m.eventfds);
    type Change = fn(&mut Manifest);
    let cases: [(Change, &str); 3] = [
        (
            |m| m.eventfds[0].count = u64::MAX,
            "count 0xffffffffffffffff",
        ),
        (|m| m.eventfds[0].ends.clear(), "no process holds it"),
        (|m| m.eventfds[0].ends[0].fd = 4, "pid 1 fd 4 is taken"),
    ];
    for (change, expected) in cases {
        let mut m = m.clone();
        change(&mut m);
        let bytes = pipe_image(&m, &data);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(expected), "{what} (wanted {expected})");
    }
}
