//! Pipes and FIFOs of a frozen container, saved once for all the
//! processes that hold them (the kernel saves each end, see
//! `cr-image/src/container/pipes.rs`).
//!
//! Every descriptor of every process is looked at in `/proc/<pid>/fd`; a
//! pipe is known by its inode. The bytes a pipe holds are read without
//! taking them: through a new read descriptor on it (`/proc/<pid>/fd/<n>`
//! opened again), `tee(2)` copies them into a pipe of our own, which is
//! read. The container is frozen, so nothing moves meanwhile.
//!
//! A pipe that a process outside the container also holds cannot be made
//! again as it was. As standard input or output (descriptors 0 to 2) it
//! becomes whatever the restorer gives (the new container's); anywhere
//! else it fails the checkpoint, naming the process, the fd and the
//! outsider.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crvmm_cr_image::container::pipes::CT_MAX_PIPE_BYTES;
use crvmm_cr_image::container::{PipeEnd, PipeEntry, ProcessEntry};

use super::dump::DumpError;
use super::fds::{fdinfo, field, outsiders, refuse_outside, shared_fds, Kind, SharedFd};

/// The pipes found, with the bytes of each.
#[derive(Debug, Default)]
pub struct Pipes {
    /// For the manifest.
    pub entries: Vec<PipeEntry>,
    /// Their bytes, in the same order.
    pub data: Vec<Vec<u8>>,
}

/// One pipe while it is being found.
struct Found {
    fifo: Option<String>,
    /// Ends, with the guest pid and command of their process.
    ends: Vec<(PipeEnd, i32, String)>,
    /// A guest process outside the container that holds it too.
    outsider: Option<u32>,
}

/// The pipes of `processes` (the container's, frozen); `rootfs` is the
/// container's root, which FIFO paths are made relative to.
pub fn collect(processes: &[ProcessEntry], rootfs: &str) -> Result<Pipes, DumpError> {
    let mut found: BTreeMap<(u64, u64), Found> = BTreeMap::new();
    for p in processes {
        for SharedFd { fd, key, link, .. } in shared_fds(p.guest_pid as u32)?
            .into_iter()
            .filter(|s| s.kind == Kind::Fifo)
        {
            let access = access_of(p.guest_pid as u32, fd)?;
            let fifo = match link.strip_prefix("pipe:") {
                Some(_) => None,
                None => Some(in_root(&link, rootfs)),
            };
            let end = PipeEnd {
                pid: p.pid,
                fd,
                access,
            };
            let entry = found.entry(key).or_insert(Found {
                fifo,
                ends: Vec::new(),
                outsider: None,
            });
            entry.ends.push((end, p.guest_pid, p.comm.clone()));
        }
    }
    if found.is_empty() {
        return Ok(Pipes::default());
    }
    let keys = found.keys().copied().collect();
    for (key, pid) in outsiders(processes, &keys) {
        if let Some(pipe) = found.get_mut(&key) {
            pipe.outsider = Some(pid);
        }
    }
    let mut pipes = Pipes::default();
    for ((_, ino), mut pipe) in found {
        if let Some(outsider) = pipe.outsider {
            let all = pipe.ends.iter().map(|(e, _, c)| (e.pid, e.fd, c));
            refuse_outside(all, outsider, "a pipe")?;
            // Standard descriptors: the restorer's instead.
            continue;
        }
        pipe.ends.sort_by_key(|(e, ..)| (e.pid, e.fd));
        let (first, guest_pid, comm) = pipe.ends[0].clone();
        let (size, data) = contents(guest_pid as u32, first.fd).map_err(|e| match e {
            Contents::Io(source) => DumpError::Proc {
                pid: guest_pid as u32,
                file: "fd (pipe contents)",
                source,
            },
            Contents::TooFull(n) => DumpError::Pipe {
                pid: first.pid,
                comm,
                fd: first.fd,
                what: format!("a pipe holding {n} bytes, at most {CT_MAX_PIPE_BYTES} supported"),
            },
        })?;
        pipes.entries.push(PipeEntry {
            id: ino,
            fifo: pipe.fifo,
            size,
            buffered: data.len() as u32,
            ends: pipe.ends.into_iter().map(|(e, ..)| e).collect(),
        });
        pipes.data.push(data);
    }
    Ok(pipes)
}

/// The access mode of `pid`'s `fd` (the `flags:` line of its fdinfo).
fn access_of(pid: u32, fd: i32) -> Result<u32, DumpError> {
    let text = fdinfo(pid, fd).map_err(|source| DumpError::Proc {
        pid,
        file: "fdinfo",
        source,
    })?;
    field(&text, "flags:")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .map(|flags| flags & libc::O_ACCMODE as u32)
        .ok_or_else(|| DumpError::Proc {
            pid,
            file: "fdinfo",
            source: io::Error::new(io::ErrorKind::InvalidData, "no flags line"),
        })
}

/// The path in the container of a FIFO the agent sees at `link`: under
/// the container's `rootfs`, the rest of it; on a mount of the container's
/// own (its `/tmp`, say), which the agent cannot reach, the kernel gives
/// the path from the container's root already. A FIFO that is not there
/// at restore fails it, named.
fn in_root(link: &str, rootfs: &str) -> String {
    let root = rootfs.trim_end_matches('/');
    match link.strip_prefix(root) {
        Some("") if !root.is_empty() => "/".to_owned(),
        Some(rest) if !root.is_empty() && rest.starts_with('/') => rest.to_owned(),
        _ => link.to_owned(),
    }
}

enum Contents {
    Io(io::Error),
    TooFull(usize),
}

impl From<io::Error> for Contents {
    fn from(e: io::Error) -> Self {
        Contents::Io(e)
    }
}

/// The buffer size and bytes of the pipe at `pid`'s `fd`, left in it.
fn contents(pid: u32, fd: i32) -> Result<(u32, Vec<u8>), Contents> {
    let source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("/proc/{pid}/fd/{fd}"))?;
    let src = source.as_raw_fd();
    let mut held: libc::c_int = 0;
    // SAFETY: fcntl and ioctl on a descriptor we own; FIONREAD writes one
    // int into `held`.
    let (size, rc) = unsafe {
        (
            libc::fcntl(src, libc::F_GETPIPE_SZ),
            libc::ioctl(src, libc::FIONREAD, &mut held),
        )
    };
    if size < 0 || rc < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let held = held as usize;
    if held > CT_MAX_PIPE_BYTES {
        return Err(Contents::TooFull(held));
    }
    if held == 0 {
        return Ok((size as u32, Vec::new()));
    }
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two new descriptors, owned below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: both are new and owned by nothing else.
    let (copy_read, copy_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl and tee on descriptors we own. One tee copies every
    // buffer (it always starts at the first; the copy has as many slots).
    let copied = unsafe {
        libc::fcntl(copy_write.as_raw_fd(), libc::F_SETPIPE_SZ, size);
        libc::tee(src, copy_write.as_raw_fd(), held, libc::SPLICE_F_NONBLOCK)
    };
    if copied < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if copied as usize != held {
        return Err(io::Error::other(format!("tee copied {copied} of {held} bytes")).into());
    }
    drop(copy_write);
    let mut data = Vec::with_capacity(held);
    File::from(copy_read).read_to_end(&mut data)?;
    if data.len() != held {
        return Err(io::Error::other(format!("read {} of {held} bytes", data.len())).into());
    }
    Ok((size as u32, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_paths_are_made_relative_to_the_root() {
        let root = "/run/crvmm/c1/rootfs";
        assert_eq!(in_root("/run/crvmm/c1/rootfs/tmp/f", root), "/tmp/f");
        assert_eq!(
            in_root("/run/crvmm/c1/rootfs2/f", root),
            "/run/crvmm/c1/rootfs2/f"
        );
        // On a mount of the container's own: already the container's path.
        assert_eq!(in_root("/tmp/f", root), "/tmp/f");
        assert_eq!(in_root("/tmp/f", "/"), "/tmp/f");
    }

    #[test]
    fn a_pipes_bytes_are_read_and_left_in_it() {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 writes two new descriptors, closed at the end.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let bytes: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
        // SAFETY: writes from a live buffer to our pipe.
        let n = unsafe { libc::write(fds[1], bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n as usize, bytes.len());
        let (size, data) = match contents(std::process::id(), fds[1]) {
            Ok(found) => found,
            Err(Contents::Io(e)) => panic!("{e}"),
            Err(Contents::TooFull(n)) => panic!("{n}"),
        };
        assert_eq!(size, 65536);
        assert_eq!(data, bytes);
        // Still there: read them from the pipe itself.
        let mut again = vec![0u8; bytes.len()];
        // SAFETY: reads into a live buffer of that size.
        let n = unsafe { libc::read(fds[0], again.as_mut_ptr().cast(), again.len()) };
        assert_eq!(n as usize, bytes.len());
        assert_eq!(again, bytes);
        // SAFETY: closes the two descriptors made above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
