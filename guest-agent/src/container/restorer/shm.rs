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
        let mut at = 0;
        while at < s.size {
            let to = addr.cast::<u8>().add(at).cast();
            let n = libc::pread(s.content, to, s.size - at, at as libc::off_t);
            if n <= 0 {
                fail(p, Step::RestoreShm, i);
            }
            at += n as usize;
        }
        libc::shmdt(addr);
    }
}
