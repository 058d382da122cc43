//! Shared memory of a frozen container, saved once for all its processes
//! (see `cr-image/src/container/shm.rs`):
//!
//! - shared anonymous memory: every `/dev/zero (deleted)` mapping marked
//!   shared in `/proc/<pid>/maps`, known by its inode number (the `shm_id`
//!   the kernel writes in the VMA records), read through
//!   `/proc/<pid>/map_files`;
//! - SysV segments: every segment of the container's IPC namespace,
//!   listed from `/proc/sysvipc/shm` by a thread that entered it, and read
//!   through a read-only attachment of the agent's (dropped at once: the
//!   content is read through `/proc/self/map_files`).
//!
//! Only the parts that are not zero are written (holes are skipped with
//! `SEEK_DATA`, untouched pages are never allocated by the read).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crvmm_cr_image::container::{ContainerWriter, ProcessEntry, ShmEntry, ShmKind};

use super::super::spec::Namespace;
use super::dump::DumpError;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;
/// What a shared anonymous mapping is called in `/proc/<pid>/maps`.
const ANON_NAME: &str = "/dev/zero (deleted)";

/// The container's shared memory: the manifest's entries and a descriptor
/// on each object to read its content from.
#[derive(Default)]
pub struct SharedMemory {
    /// The manifest's entries.
    pub entries: Vec<ShmEntry>,
    files: Vec<File>,
}

/// One shared mapping of a process, from its `maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMap {
    /// Its range.
    pub start: u64,
    /// Its end.
    pub end: u64,
    /// The object's inode number.
    pub ino: u64,
    /// Shared anonymous memory (else a SysV segment: `/SYSV...`).
    pub anon: bool,
}

/// The shared anonymous and SysV mappings in `maps` text.
pub fn shared_maps(maps: &str) -> Vec<SharedMap> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), _, _, Some(ino)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        let anon = path == ANON_NAME;
        let sysv = path.starts_with("/SYSV") && path.ends_with(" (deleted)");
        if perms.as_bytes().get(3) != Some(&b's') || !(anon || sysv) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let parsed = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            ino.parse(),
        );
        if let (Ok(start), Ok(end), Ok(ino)) = parsed {
            out.push(SharedMap {
                start,
                end,
                ino,
                anon,
            });
        }
    }
    out
}

/// The shared memory of `processes` (the container's, frozen); `ipc_ns`:
/// the container has an IPC namespace of its own, entered through its
/// init (guest pid `init`).
pub fn collect(
    processes: &[ProcessEntry],
    init: i32,
    ipc_ns: bool,
) -> Result<SharedMemory, DumpError> {
    let mut found = SharedMemory::default();
    let mut sysv_user = None;
    for p in processes {
        let gpid = p.guest_pid as u32;
        let proc_error = |file, source| DumpError::Proc {
            pid: gpid,
            file,
            source,
        };
        let maps = std::fs::read_to_string(format!("/proc/{gpid}/maps"))
            .map_err(|e| proc_error("maps", e))?;
        for map in shared_maps(&maps) {
            if !map.anon {
                sysv_user.get_or_insert((p, map.ino));
                continue;
            }
            let known = found
                .entries
                .iter_mut()
                .find(|e| e.kind == ShmKind::Anon && e.id == map.ino);
            if let Some(entry) = known {
                if !entry.pids.contains(&p.pid) {
                    entry.pids.push(p.pid);
                }
                continue;
            }
            let path = format!("/proc/{gpid}/map_files/{:x}-{:x}", map.start, map.end);
            let file = File::open(&path).map_err(|e| proc_error("map_files", e))?;
            let size = file
                .metadata()
                .map_err(|e| proc_error("map_files", e))?
                .len();
            found.entries.push(ShmEntry {
                kind: ShmKind::Anon,
                id: map.ino,
                size,
                pids: vec![p.pid],
                ..ShmEntry::default()
            });
            found.files.push(file);
        }
    }
    if ipc_ns {
        for (entry, file) in sysv_segments(init)? {
            found.entries.push(entry);
            found.files.push(file);
        }
    } else if let Some((p, id)) = sysv_user {
        return Err(DumpError::Shared {
            pid: p.pid,
            comm: p.comm.clone(),
            what: format!(
                "SysV shm segment {id} of an IPC namespace the container shares with the guest"
            ),
        });
    }
    Ok(found)
}

impl SharedMemory {
    /// Writes every object's content, the parts that are not zero.
    pub fn write<W: io::Write>(&self, writer: &mut ContainerWriter<W>) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        for (i, (entry, file)) in self.entries.iter().zip(&self.files).enumerate() {
            let mut pos = 0;
            while let Some((data, hole)) = next_data(file, pos, entry.size)? {
                let mut at = data;
                while at < hole {
                    let n = ((hole - at) as usize).min(CHUNK);
                    file.read_exact_at(&mut buf[..n], at)?;
                    for (off, run) in nonzero_runs(&buf[..n]) {
                        writer.shm(i as u32, at + off as u64, run)?;
                    }
                    at += n as u64;
                }
                pos = hole;
            }
        }
        Ok(())
    }
}

/// The next range of `file` at or after `pos` that may hold data (below
/// `size`), as (start, end); none past the last.
fn next_data(file: &File, pos: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= size {
        return Ok(None);
    }
    let seek = |from: u64, whence| {
        // SAFETY: lseek on a descriptor we own; no memory is passed.
        unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) }
    };
    let data = seek(pos, libc::SEEK_DATA);
    if data < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    let hole = seek(data as u64, libc::SEEK_HOLE);
    if hole < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((data as u64, (hole as u64).min(size))))
}

/// The runs of `buf` made of pages that are not all zero, as (offset,
/// bytes).
pub fn nonzero_runs(buf: &[u8]) -> Vec<(usize, &[u8])> {
    const PAGE: usize = 4096;
    let mut runs = Vec::new();
    let mut start = None;
    for (k, page) in buf.chunks(PAGE).enumerate() {
        let zero = page.iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(k * PAGE),
            (true, Some(s)) => {
                runs.push((s, &buf[s..k * PAGE]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, &buf[s..]));
    }
    runs
}

/// One line of `/proc/sysvipc/shm`: key, id, perms (octal), size, ...,
/// uid and gid (fields 8 and 9).
pub fn parse_sysvipc(line: &str) -> Option<ShmEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 9 {
        return None;
    }
    let mode = u32::from_str_radix(f[2], 8).ok()?;
    Some(ShmEntry {
        kind: ShmKind::Sysv,
        key: f[0].parse().ok()?,
        id: f[1].parse().ok()?,
        mode: mode & 0o777,
        size: f[3].parse().ok()?,
        uid: f[7].parse().ok()?,
        gid: f[8].parse().ok()?,
        // SHM_DEST
        removed: mode & 0o1000 != 0,
        ..ShmEntry::default()
    })
}

/// Every segment of the IPC namespace of guest process `init`, with a
/// descriptor on each (from a thread that enters the namespace).
fn sysv_segments(init: i32) -> Result<Vec<(ShmEntry, File)>, DumpError> {
    let segments = Namespace::Ipc.run_in(init, || {
        let list = std::fs::read_to_string("/proc/sysvipc/shm")?;
        let entries = list.lines().skip(1).filter_map(parse_sysvipc);
        entries
            .map(|entry| open_segment(&entry).map(|file| (entry, file)))
            .collect()
    });
    segments.map_err(|source| DumpError::Proc {
        pid: init as u32,
        file: "sysvipc/shm",
        source,
    })
}

/// A descriptor on segment `entry`: attached read-only, opened through
/// `/proc/self/map_files`, detached.
fn open_segment(entry: &ShmEntry) -> io::Result<File> {
    let id = entry.id as libc::c_int;
    // SAFETY: shmat maps the segment somewhere new; nothing is read from
    // it here, and it is detached below.
    let addr = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
    if addr as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    let len = entry.size.div_ceil(4096) * 4096;
    let start = addr as u64;
    let path = format!("/proc/self/map_files/{start:x}-{:x}", start + len);
    let file = File::open(path);
    // SAFETY: detaches the attachment made above, which nothing uses.
    unsafe { libc::shmdt(addr) };
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_anonymous_and_sysv_mappings_are_found_in_maps() {
        let maps = "\
7f0000000000-7f0000100000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)
7f0000100000-7f0000101000 r--s 00100000 00:01 1234                       /dev/zero (deleted)
7f0000200000-7f0000203000 rw-s 00000000 00:01 5                          /SYSV43520001 (deleted)
7f0000300000-7f0000301000 rw-p 00000000 00:00 0 
7f0000400000-7f0000401000 rw-s 00000000 00:01 77                         /memfd:x (deleted)
7f0000500000-7f0000501000 r--p 00000000 08:01 99                         /dev/zero (deleted)";
        let found = shared_maps(maps);
        let got: Vec<_> = found.iter().map(|m| (m.start, m.ino, m.anon)).collect();
        assert_eq!(
            got,
            [
                (0x7f00_0000_0000, 1234, true),
                (0x7f00_0010_0000, 1234, true),
                (0x7f00_0020_0000, 5, false)
            ]
        );
    }

    #[test]
    fn a_sysvipc_line_gives_key_id_mode_size_owner_and_removal() {
        let line = "  1129447425          5      1640       12388     7     9      2     0     0     0     0 1 2 3 12288 0";
        let e = parse_sysvipc(line).unwrap();
        assert_eq!(
            (e.key, e.id, e.mode, e.size, e.uid, e.gid, e.removed),
            (1_129_447_425, 5, 0o640, 12388, 0, 0, true)
        );
        assert!(parse_sysvipc("key shmid perms").is_none());
    }

    #[test]
    fn zero_pages_are_left_out() {
        let mut buf = vec![0u8; 5 * 4096 + 100];
        buf[4096] = 1;
        buf[2 * 4096 + 5] = 2;
        buf[5 * 4096 + 99] = 3;
        let runs: Vec<_> = nonzero_runs(&buf)
            .iter()
            .map(|(o, r)| (*o, r.len()))
            .collect();
        assert_eq!(runs, [(4096, 2 * 4096), (5 * 4096, 100)]);
    }

    #[test]
    fn a_shared_anonymous_object_is_read_through_map_files_without_its_holes() {
        let len = 64 * 4096;
        // SAFETY: a new shared anonymous mapping, unmapped at the end.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        // SAFETY: within the mapping made above.
        unsafe { *(addr as *mut u8).add(10 * 4096 + 3) = 7 };
        let start = addr as u64;
        let path = format!("/proc/self/map_files/{start:x}-{:x}", start + len as u64);
        let Ok(file) = File::open(path) else {
            // Not root: map_files needs CAP_SYS_ADMIN.
            // SAFETY: unmaps the mapping made above.
            unsafe { libc::munmap(addr, len) };
            return;
        };
        let data = next_data(&file, 0, len as u64).unwrap().unwrap();
        assert!(data.0 <= 10 * 4096 && data.1 > 10 * 4096, "{data:?}");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, 10 * 4096 + 3).unwrap();
        assert_eq!(byte[0], 7);
        drop(file);
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(addr, len) };
    }
}
