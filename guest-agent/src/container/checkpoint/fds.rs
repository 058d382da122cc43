//! The descriptors of the container's processes that other processes may
//! share, pipes, sockets and eventfds, found in `/proc/<pid>/fd`; and
//! which of them a guest process outside the container holds too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crvmm_cr_image::container::{ProcessEntry, SocketEnd};

use super::dump::DumpError;

/// A pipe or socket, known by (device, inode); an eventfd (they all share
/// one inode) by (0, its `eventfd-id`).
pub type Key = (u64, u64);

/// What a shared descriptor is open on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// An eventfd.
    Eventfd,
}

/// One descriptor on a pipe, FIFO or socket.
#[derive(Debug, Clone)]
pub struct SharedFd {
    /// The descriptor.
    pub fd: i32,
    /// What it is open on.
    pub key: Key,
    /// Its link text (`pipe:[N]`, `socket:[N]`, a FIFO's path).
    pub link: String,
    /// What it is.
    pub kind: Kind,
}

/// The descriptors of guest process `pid` on pipes, FIFOs, sockets and
/// eventfds.
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
        let file_type = meta.file_type();
        let link = std::fs::read_link(&path).map_err(proc_error)?;
        let link = link.to_string_lossy().into_owned();
        let (kind, key) = if file_type.is_fifo() {
            (Kind::Fifo, (meta.dev(), meta.ino()))
        } else if file_type.is_socket() {
            (Kind::Socket, (meta.dev(), meta.ino()))
        } else if link == "anon_inode:[eventfd]" {
            let info = fdinfo(pid, fd).map_err(proc_error)?;
            match field(&info, "eventfd-id:").and_then(|v| v.parse().ok()) {
                Some(id) => (Kind::Eventfd, (0, id)),
                None => continue,
            }
        } else {
            continue;
        };
        out.push(SharedFd {
            fd,
            key,
            link,
            kind,
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

/// The text of `/proc/<pid>/fdinfo/<fd>`.
pub fn fdinfo(pid: u32, fd: i32) -> std::io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
}

/// The value of the fdinfo line that starts with `name`, trimmed.
pub fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// A descriptor of a container process on a shared object: the end
/// (container pid and fd), its guest pid and its command name.
pub type Holder = (SocketEnd, i32, String);

/// The descriptors of `processes` on objects of `kind`, by object.
pub fn holders(
    processes: &[ProcessEntry],
    kind: Kind,
) -> Result<BTreeMap<Key, Vec<Holder>>, DumpError> {
    let mut found: BTreeMap<Key, Vec<Holder>> = BTreeMap::new();
    for p in processes {
        for shared in shared_fds(p.guest_pid as u32)? {
            if shared.kind == kind {
                let end = SocketEnd {
                    pid: p.pid,
                    fd: shared.fd,
                };
                let holder = (end, p.guest_pid, p.comm.clone());
                found.entry(shared.key).or_default().push(holder);
            }
        }
    }
    Ok(found)
}

/// For an object `what` (a pipe, a socket...) that guest process
/// `outsider` holds too: the refusal if a container process holds it
/// elsewhere than at fds 0 to 2 (which become the restorer's).
/// `ends` are (container pid, fd, command name).
pub fn refuse_outside<'a>(
    ends: impl IntoIterator<Item = (i32, i32, &'a String)>,
    outsider: u32,
    what: &str,
) -> Result<(), DumpError> {
    match ends.into_iter().find(|&(_, fd, _)| fd > 2) {
        Some((pid, fd, comm)) => Err(DumpError::Pipe {
            pid,
            comm: comm.clone(),
            fd,
            what: format!("{what} shared with guest process {outsider}, outside the container"),
        }),
        None => Ok(()),
    }
}
