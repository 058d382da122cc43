//! The descriptors of the container's processes that other processes may
//! share, pipes and sockets, found in `/proc/<pid>/fd`; and which of them
//! a guest process outside the container holds too.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crvmm_cr_image::container::ProcessEntry;

use super::dump::DumpError;

/// A pipe or socket, known by (device, inode).
pub type Key = (u64, u64);

/// One descriptor on a pipe, FIFO or socket.
#[derive(Debug, Clone)]
pub struct SharedFd {
    /// The descriptor.
    pub fd: i32,
    /// What it is open on.
    pub key: Key,
    /// Its link text (`pipe:[N]`, `socket:[N]`, a FIFO's path).
    pub link: String,
    /// A socket (else a pipe or FIFO).
    pub socket: bool,
}

/// The descriptors of guest process `pid` on pipes, FIFOs and sockets.
pub fn shared_fds(pid: u32) -> Result<Vec<SharedFd>, DumpError> {
    let dir = format!("/proc/{pid}/fd");
    let proc_error = |source| DumpError::Proc {
        pid,
        file: "fd",
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(proc_error)? {
        let entry = entry.map_err(proc_error)?;
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        // Through the link: the open file's own inode.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let kind = meta.file_type();
        if !kind.is_fifo() && !kind.is_socket() {
            continue;
        }
        let link = std::fs::read_link(&path).map_err(proc_error)?;
        out.push(SharedFd {
            fd,
            key: (meta.dev(), meta.ino()),
            link: link.to_string_lossy().into_owned(),
            socket: kind.is_socket(),
        });
    }
    Ok(out)
}

/// For each of `keys` that a guest process outside `processes` holds, one
/// such process.
pub fn outsiders(processes: &[ProcessEntry], keys: &HashSet<Key>) -> HashMap<Key, u32> {
    let inside: HashSet<u32> = processes.iter().map(|p| p.guest_pid as u32).collect();
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if inside.contains(&pid) {
            continue;
        }
        // A process that goes away meanwhile holds nothing.
        for shared in shared_fds(pid).unwrap_or_default() {
            if keys.contains(&shared.key) {
                found.entry(shared.key).or_insert(pid);
            }
        }
    }
    found
}
