//! Shared memory objects in container images: SHM records after the
//! queues, in order, within each object; manifests checked.

use super::super::format::*;
use super::super::*;
use super::{bad_what, image_of, manifest};

fn with_shm() -> Manifest {
    let mut m = manifest(&[(1, 0), (7, 1)]);
    m.shared_memory = vec![
        ShmEntry {
            kind: ShmKind::Anon,
            id: 1234,
            size: 1 << 20,
            pids: vec![1, 7],
            ..ShmEntry::default()
        },
        ShmEntry {
            kind: ShmKind::Sysv,
            id: 5,
            size: 12388,
            key: 0x4352_0001,
            mode: 0o640,
            uid: 1000,
            gid: 100,
            ..ShmEntry::default()
        },
    ];
    m
}

/// SHM records: (index, offset, bytes).
type Parts = [(u32, u64, Vec<u8>)];

/// An image of `m` with SHM records `parts`.
fn shm_image(m: &Manifest, parts: &Parts) -> Vec<u8> {
    image_of(m, |w| {
        for (i, offset, bytes) in parts {
            w.shm(*i, *offset, bytes).unwrap();
        }
    })
}

#[test]
fn shared_memory_comes_after_the_header_in_chunks_and_in_order() {
    let mut m = with_shm();
    m.shared_memory[0].size = 2 << 20;
    // 1.5 MiB in one call: a record of 1 MiB, then one of the rest.
    let big: Vec<u8> = (0..3 << 19).map(|i| (i % 251) as u8).collect();
    let bytes = shm_image(&m, &[(0, 4096, big.clone()), (1, 8192, vec![9; 4196])]);
    let mut r = ContainerReader::new(&bytes[..]);
    let mut got = Vec::new();
    while let Some(ev) = r.next_event().unwrap() {
        match ev {
            Event::Shm {
                index,
                offset,
                data,
            } => got.push((index, offset, data.to_vec())),
            Event::Process { .. } => assert_eq!(got.len(), 3, "shared memory comes first"),
            _ => {}
        }
    }
    let want = [
        (0, 4096, big[..1 << 20].to_vec()),
        (0, 4096 + (1 << 20), big[1 << 20..].to_vec()),
        (1, 8192, vec![9; 4196]),
    ];
    assert_eq!(got, want);
    assert_eq!(r.manifest().unwrap().shared_memory, m.shared_memory);
    // A writer refuses shared memory once a process started.
    let mut w = ContainerWriter::new(Vec::new(), &m).unwrap();
    w.begin_process(1).unwrap();
    assert!(w.shm(0, 0, b"x").is_err());
}

#[test]
fn shared_memory_records_must_fit_their_object_in_order() {
    let m = with_shm();
    let cases: [(&Parts, &str); 4] = [
        (&[(1, 12388, vec![1])], "outside its 12388 bytes"),
        (&[(0, 8192, vec![1]), (0, 4096, vec![1])], "out of order"),
        (&[(1, 0, vec![1]), (0, 0, vec![1])], "out of order"),
        (&[(2, 0, vec![1])], "object 2, not in the manifest"),
    ];
    for (parts, want) in cases {
        let bytes = shm_image(&m, parts);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(want), "{parts:?}: {what}");
    }
    // Overflowing offsets are refused, not wrapped.
    let bytes = shm_image(&m, &[(0, u64::MAX - 1, vec![1, 2, 3])]);
    assert!(ContainerReader::new(&bytes[..]).verify().is_err());
}

#[test]
fn shared_memory_manifests_are_checked() {
    type Spoil = fn(&mut Manifest);
    let cases: [(Spoil, &str); 7] = [
        (|m| m.shared_memory[0].size = 0, "size 0"),
        (|m| m.shared_memory[0].pids = vec![], "no process maps it"),
        (|m| m.shared_memory[0].pids = vec![1, 99], "pid 99"),
        (|m| m.shared_memory[0].key = 3, "SysV fields"),
        (|m| m.shared_memory[1].mode = 0o4777, "mode"),
        (|m| m.shared_memory[1].removed = true, "still has a key"),
        (
            |m| m.shared_memory.push(m.shared_memory[1].clone()),
            "id 5 twice",
        ),
    ];
    for (spoil, want) in cases {
        let mut m = with_shm();
        spoil(&mut m);
        let bytes = shm_image(&m, &[]);
        let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
        assert!(what.contains(want), "{want}: {what}");
    }
    // Removed without a key is fine.
    let mut m = with_shm();
    m.shared_memory[1].key = 0;
    m.shared_memory[1].removed = true;
    assert!(ContainerReader::new(&shm_image(&m, &[])[..])
        .verify()
        .is_ok());
}

/// An SHM record too short for its fixed part is refused, not read past.
#[test]
fn a_short_shared_memory_record_is_refused() {
    let m = with_shm();
    let mut w = ContainerWriter::new(Vec::new(), &m).unwrap();
    w.record(CT_REC_SHM, &[0u8; 4]).unwrap();
    let (bytes, _) = w.finish().unwrap();
    let what = bad_what(ContainerReader::new(&bytes[..]).verify().unwrap_err());
    assert!(what.contains("malformed shared memory record"), "{what}");
}
