//! Shared memory at restore, the agent's side: while the image is read,
//! each object of the manifest is made and filled, in the agent's memory.
//!
//! - A shared anonymous object is made as one (`MAP_SHARED |
//!   MAP_ANONYMOUS`, so it is again a `/dev/zero` object, as before) and
//!   opened through `/proc/self/map_files`: that descriptor is what
//!   restart maps in every process that had it.
//! - A SysV segment can only be made in the new container's IPC
//!   namespace: its content waits in a memfd, which the container's init
//!   copies into the segment it makes (`restorer/shm.rs`).
//!
//! The agent's own mappings go once the image is read; the descriptors
//! keep the objects.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crvmm_cr_image::container::{ShmEntry, ShmKind};

/// The objects of one restore, being filled.
#[derive(Default)]
pub struct Staged {
    objects: Vec<Object>,
}

struct Object {
    fd: OwnedFd,
    addr: *mut u8,
    len: usize,
}

impl Staged {
    /// Makes every object of `entries`, empty (zero).
    pub fn new(entries: &[ShmEntry]) -> io::Result<Staged> {
        let mut staged = Staged::default();
        for (i, e) in entries.iter().enumerate() {
            let object = match e.kind {
                ShmKind::Anon => anonymous(e.size),
                ShmKind::Sysv => staging(e.size, i),
            };
            staged.objects.push(object.map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("making shared memory object {i} ({} bytes): {err}", e.size),
                )
            })?);
        }
        Ok(staged)
    }

    /// Puts `data` at `offset` of object `index` (the reader checked that
    /// it fits).
    pub fn fill(&mut self, index: u32, offset: u64, data: &[u8]) {
        let Some(o) = self.objects.get(index as usize) else {
            return;
        };
        let at = offset as usize;
        if at.checked_add(data.len()).is_some_and(|end| end <= o.len) {
            // SAFETY: within the object's live mapping, which nothing
            // else reads or writes now.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), o.addr.add(at), data.len()) };
        }
    }

    /// Unmaps the agent's view; the descriptors, in the manifest's order.
    pub fn into_fds(mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.objects)
            .into_iter()
            .map(|o| {
                unmap(o.addr, o.len);
                o.fd
            })
            .collect()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for o in &self.objects {
            unmap(o.addr, o.len);
        }
    }
}

fn unmap(addr: *mut u8, len: usize) {
    // SAFETY: a mapping made by `map` and unmapped once (its object is
    // taken out of the list, or the list is dropped).
    unsafe { libc::munmap(addr.cast(), len) };
}

fn page_len(size: u64) -> io::Result<usize> {
    usize::try_from(size.div_ceil(4096) * 4096).map_err(|_| io::Error::other("too large"))
}

/// A new shared mapping of `len` bytes of `fd` (-1: anonymous).
fn map(len: usize, fd: i32) -> io::Result<*mut u8> {
    let anon = if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
    // SAFETY: a new mapping anywhere; no existing memory is touched.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE | anon,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.cast())
}

fn anonymous(size: u64) -> io::Result<Object> {
    let len = page_len(size)?;
    let addr = map(len, -1)?;
    let start = addr as usize;
    let path = format!("/proc/self/map_files/{start:x}-{:x}", start + len);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => Ok(Object {
            fd: file.into(),
            addr,
            len,
        }),
        Err(e) => {
            unmap(addr, len);
            Err(e)
        }
    }
}

fn staging(size: u64, index: usize) -> io::Result<Object> {
    let len = page_len(size)?;
    let fd = super::super::memfd(&format!("crvmm-shm-{index}"))?;
    // SAFETY: ftruncate on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = map(len, fd.as_raw_fd())?;
    Ok(Object { fd, addr, len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    #[test]
    fn objects_are_made_filled_and_given_as_descriptors() {
        let entries = [
            ShmEntry {
                kind: ShmKind::Sysv,
                id: 3,
                size: 5000,
                ..ShmEntry::default()
            },
            ShmEntry {
                kind: ShmKind::Anon,
                id: 9,
                size: 8192,
                pids: vec![1],
                ..ShmEntry::default()
            },
        ];
        let mut staged = match Staged::new(&entries) {
            Ok(s) => s,
            // Not root: map_files needs CAP_SYS_ADMIN.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return,
            Err(e) => panic!("{e}"),
        };
        staged.fill(0, 4990, b"0123456789");
        staged.fill(1, 4096, b"abc");
        staged.fill(1, 8190, b"too long");
        let files: Vec<File> = staged.into_fds().into_iter().map(File::from).collect();
        assert_eq!(files[0].metadata().unwrap().len(), 5000);
        assert_eq!(files[1].metadata().unwrap().len(), 8192);
        let mut buf = [0u8; 10];
        files[0].read_exact_at(&mut buf, 4990).unwrap();
        assert_eq!(&buf, b"0123456789");
        files[1].read_exact_at(&mut buf[..3], 4096).unwrap();
        assert_eq!(&buf[..3], b"abc");
        files[1].read_exact_at(&mut buf[..2], 8190).unwrap();
        assert_eq!(&buf[..2], [0, 0]);
    }
}
