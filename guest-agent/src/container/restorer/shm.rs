//! Shared memory at restore, in the container: the init makes every SysV
//! segment of the image again in the container's new IPC namespace, with
//! its id (`shm_next_id`), key, owner and mode, and copies its content in
//! from the agent's memfd; restart then attaches it by id. Each process
//! gives restart the shared anonymous objects it maps (the agent made
//! them, see `restore/shm.rs`), by id, as `struct cr_shm_fd`.

use std::ffi::CString;
use std::os::fd::RawFd;

use super::super::child::{Prepared, Step};
use super::fail;

/// `struct cr_shm_fd` of the kernel's `linux/checkpoint.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in super::super) struct CrShmFd {
    /// The object's id in the image (its VMA records' `shm_id`).
    pub(in super::super) id: u64,
    /// The caller's descriptor on it.
    pub(in super::super) fd: i32,
    pub(in super::super) pad: u32,
}

/// A SysV segment to make again.
#[derive(Debug, Clone)]
pub(in super::super) struct Segment {
    /// Its id, as `shm_next_id` takes it ("5\n").
    pub(in super::super) next_id: CString,
    pub(in super::super) id: i32,
    pub(in super::super) key: i32,
    pub(in super::super) size: usize,
    pub(in super::super) mode: u32,
    pub(in super::super) uid: u32,
    pub(in super::super) gid: u32,
    /// The memfd with its content.
    pub(in super::super) content: RawFd,
}

/// The shared memory of a restore.
#[derive(Debug, Clone, Default)]
pub(in super::super) struct ShmPlan {
    pub(in super::super) segments: Vec<Segment>,
    /// For each process (by index), what restart is given.
    pub(in super::super) provided: Vec<Vec<CrShmFd>>,
}

// ---- In the child: system calls only. ----

/// Makes every segment (in the init, before the tree).
pub(in super::super) fn make_segments(p: &Prepared, plan: &ShmPlan) {
    for (i, s) in plan.segments.iter().enumerate() {
        make_segment(p, s, i);
    }
}

fn make_segment(p: &Prepared, s: &Segment, i: usize) {
    // SAFETY: plain system calls in the single-threaded child, on data
    // prepared before the clone; the attachment is the child's own and
    // is written only within its size.
    unsafe {
        let fd = libc::open(
            c"/proc/sys/kernel/shm_next_id".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        let text = s.next_id.as_bytes();
        if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) != text.len() as isize {
            fail(p, Step::RestoreShm, i);
        }
        libc::close(fd);
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | s.mode as i32;
        let id = libc::shmget(s.key, s.size, flags);
        if id != s.id {
            fail(p, Step::RestoreShm, i);
        }
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) < 0 {
            fail(p, Step::RestoreShm, i);
        }
        let (uid, gid) = (ds.shm_perm.uid, ds.shm_perm.gid);
        ds.shm_perm.uid = s.uid;
        ds.shm_perm.gid = s.gid;
        ds.shm_perm.mode = s.mode as _;
        // Owner ids the container's user namespace does not map (the
        // agent saw them from the guest's) stay the restorer's.
        if libc::shmctl(id, libc::IPC_SET, &mut ds) < 0 {
            ds.shm_perm.uid = uid;
            ds.shm_perm.gid = gid;
            if libc::shmctl(id, libc::IPC_SET, &mut ds) < 0 {
                fail(p, Step::RestoreShm, i);
            }
        }
        let addr = libc::shmat(id, std::ptr::null(), 0);
        if addr as isize == -1 {
            fail(p, Step::RestoreShm, i);
        }
        if !copy_data(s.content, addr.cast(), s.size) {
            fail(p, Step::RestoreShm, i);
        }
        libc::shmdt(addr);
    }
}

/// Copies what memfd `from` holds (its data, not its holes: those stay
/// zero and take no page) to the `size` bytes at `to`; false on an error.
///
/// # Safety
///
/// `to` must be writable for `size` bytes.
unsafe fn copy_data(from: RawFd, to: *mut u8, size: usize) -> bool {
    let mut at = 0;
    while at < size {
        // SAFETY: lseek on a descriptor of this process.
        let data = unsafe { libc::lseek(from, at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data after `at`.
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from, data, libc::SEEK_HOLE) };
        if hole < data {
            return false;
        }
        at = data as usize;
        let end = (hole as usize).min(size);
        while at < end {
            // SAFETY: `at..end` is within the `size` writable bytes.
            let n = unsafe { libc::pread(from, to.add(at).cast(), end - at, at as libc::off_t) };
            if n <= 0 {
                return false;
            }
            at += n as usize;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn only_the_data_of_the_memfd_is_copied() {
        let file = std::fs::File::from(super::super::super::memfd("test").unwrap());
        file.set_len(5 * 4096 + 10).unwrap();
        file.write_all_at(b"abc", 2 * 4096 + 1).unwrap();
        file.write_all_at(b"end", 5 * 4096 + 7).unwrap();
        // What is not copied keeps its bytes: the holes are not written.
        let mut to = vec![7u8; 5 * 4096 + 10];
        // SAFETY: `to` is writable for its length.
        assert!(unsafe { super::copy_data(file.as_raw_fd(), to.as_mut_ptr(), to.len()) });
        assert_eq!(&to[2 * 4096 + 1..2 * 4096 + 4], b"abc");
        assert_eq!(&to[5 * 4096 + 7..], b"end");
        assert_eq!(to[0], 7, "a hole is left alone");
    }
}
