//! Pipes, FIFOs and socketpairs at restore: the init makes every one of
//! the image again, fills it with the bytes it held, and keeps its ends at
//! "slots" (descriptors above every one the image uses); each process then
//! puts its ends at their saved descriptors just before `restart(2)`,
//! which checks and keeps them (`CR_FILE_PIPE`, `CR_FILE_UNIX`) and closes
//! the rest.
//!
//! Channel `i` (the pipes, then the socketpairs, then the eventfds) has
//! three slots from `base + 3i`: a pipe its read end, its write end and,
//! for a FIFO, a read-write end; a socketpair its two sockets; an eventfd
//! itself. A socket's queue is sent to it through its peer, message by
//! message; an eventfd's count is written to it.
//! Every descriptor the restorer brings from the agent is above the last
//! slot (see [`PipePlan::floor`]), so no `dup2` lands on one of them.
//!
//! Two descriptors of the image on the same end of one pipe share one
//! open file after restore (as they do after `pipe()` and `fork()`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crvmm_cr_image::container::Manifest;

use super::super::child::{Prepared, Step};
use super::fail;

/// Slots start at least this high (above the standard descriptors and a
/// few free ones for making the pipes).
const MIN_BASE: i32 = 8;

/// One pipe or socketpair to make again.
#[derive(Debug, Clone)]
pub(in super::super) enum Channel {
    Pipe {
        /// A FIFO's path in the container (none: an anonymous pipe).
        fifo: Option<CString>,
        /// Its buffer size.
        size: i32,
        /// The bytes it held.
        data: Vec<u8>,
    },
    Socketpair {
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        kind: i32,
        /// Each side's queue: its bytes and, for datagrams, each message's
        /// length.
        queues: [(Vec<u8>, Vec<u32>); 2],
    },
    Eventfd {
        /// Its count.
        count: u64,
        /// Made with `EFD_SEMAPHORE`.
        semaphore: bool,
    },
}

/// One end a process gets.
#[derive(Debug, Clone, Copy)]
pub(in super::super) struct RestoreEnd {
    /// The process, by index.
    pub(in super::super) proc: usize,
    /// The channel, by index.
    pub(in super::super) channel: usize,
    /// Its descriptor in the process.
    pub(in super::super) fd: i32,
    /// Its slot in the channel: for a pipe `O_RDONLY`, `O_WRONLY` or
    /// `O_RDWR`, for a socketpair the side.
    pub(in super::super) slot: u32,
}

/// The pipes of a restore.
#[derive(Debug, Clone, Default)]
pub(in super::super) struct PipePlan {
    pub(in super::super) channels: Vec<Channel>,
    pub(in super::super) ends: Vec<RestoreEnd>,
    /// The first slot.
    pub(in super::super) base: i32,
}

impl PipePlan {
    /// The plan for `manifest`'s pipes and socketpairs, with `queues`
    /// their bytes in the order of the image's QUEUE records.
    pub(in super::super) fn new(manifest: &Manifest, queues: Vec<Vec<u8>>) -> PipePlan {
        let mut ends = Vec::new();
        let mut highest = -1;
        let position = |pid| manifest.processes.iter().position(|p| p.pid == pid);
        let mut add = |channel, pid, fd, slot| {
            // The reader checked that the process is there.
            if let Some(proc) = position(pid) {
                highest = highest.max(fd);
                ends.push(RestoreEnd {
                    proc,
                    channel,
                    fd,
                    slot,
                });
            }
        };
        for (channel, entry) in manifest.pipes.iter().enumerate() {
            for end in &entry.ends {
                add(channel, end.pid, end.fd, end.access);
            }
        }
        let first_pair = manifest.pipes.len();
        for (k, pair) in manifest.socketpairs.iter().enumerate() {
            for (side, s) in pair.sides.iter().enumerate() {
                for end in &s.ends {
                    add(first_pair + k, end.pid, end.fd, side as u32);
                }
            }
        }
        let first_eventfd = first_pair + manifest.socketpairs.len();
        for (k, e) in manifest.eventfds.iter().enumerate() {
            for end in &e.ends {
                add(first_eventfd + k, end.pid, end.fd, 0);
            }
        }
        let mut queues = queues.into_iter();
        let mut channels: Vec<Channel> = manifest
            .pipes
            .iter()
            .map(|entry| Channel::Pipe {
                fifo: entry
                    .fifo
                    .as_ref()
                    .map(|p| CString::new(p.as_str()).expect("the reader refused a NUL")),
                size: entry.size as i32,
                data: queues.next().unwrap_or_default(),
            })
            .collect();
        for pair in &manifest.socketpairs {
            let [a, b] = &pair.sides;
            channels.push(Channel::Socketpair {
                kind: pair.kind as i32,
                queues: [
                    (queues.next().unwrap_or_default(), a.messages.clone()),
                    (queues.next().unwrap_or_default(), b.messages.clone()),
                ],
            });
        }
        channels.extend(manifest.eventfds.iter().map(|e| Channel::Eventfd {
            count: e.count,
            semaphore: e.semaphore,
        }));
        PipePlan {
            channels,
            ends,
            base: (highest + 1).max(MIN_BASE),
        }
    }

    /// Slot `slot` of channel `channel`.
    fn slot(&self, channel: usize, slot: u32) -> RawFd {
        self.base + 3 * channel as i32 + slot as i32
    }

    /// Descriptors the restorer brings must be at least this high; 0 when
    /// there are no pipes.
    pub(in super::super) fn floor(&self) -> i32 {
        if self.channels.is_empty() {
            0
        } else {
            self.slot(self.channels.len(), 0)
        }
    }
}

/// `fd`, moved to `floor` or above (close-on-exec) if it is below.
pub(in super::super) fn above(fd: OwnedFd, floor: i32) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() >= floor {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own makes a new one.
    let raised = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if raised < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raised` is new and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}

// ---- In the child: system calls only. ----

/// Moves `fd` to `slot`.
fn place(p: &Prepared, fd: RawFd, slot: RawFd, pipe: usize) {
    // SAFETY: plain system calls on descriptors of this process.
    unsafe {
        if fd < 0 || libc::dup3(fd, slot, libc::O_CLOEXEC) < 0 {
            fail(p, Step::RestorePipe, pipe);
        }
        libc::close(fd);
    }
}

/// Makes every channel at its slots, filled (in the init, before the
/// tree).
pub(in super::super) fn make_pipes(p: &Prepared, plan: &PipePlan) {
    for (i, channel) in plan.channels.iter().enumerate() {
        match channel {
            Channel::Pipe { fifo, size, data } => make_pipe(p, plan, i, fifo.as_ref(), *size, data),
            Channel::Socketpair { kind, queues } => make_socketpair(p, plan, i, *kind, queues),
            Channel::Eventfd { count, semaphore } => make_eventfd(p, plan, i, *count, *semaphore),
        }
    }
}

fn make_pipe(
    p: &Prepared,
    plan: &PipePlan,
    i: usize,
    fifo: Option<&CString>,
    size: i32,
    data: &[u8],
) {
    let nonblock = libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: plain system calls in the single-threaded child, on a path
    // and bytes prepared before the clone.
    unsafe {
        match fifo {
            None => {
                let mut fds = [-1; 2];
                if libc::pipe2(fds.as_mut_ptr(), nonblock) < 0 {
                    fail(p, Step::RestorePipe, i);
                }
                place(p, fds[0], plan.slot(i, 0), i);
                place(p, fds[1], plan.slot(i, 1), i);
            }
            Some(path) => {
                // Read-write first: then the others open at once.
                for access in [libc::O_RDWR, libc::O_RDONLY, libc::O_WRONLY] {
                    let flags = access | nonblock | libc::O_NOCTTY;
                    let mut fd = libc::open(path.as_ptr(), flags);
                    // A FIFO on a file system the container got new (its
                    // /tmp) is made again, in its directory.
                    let missing = std::io::Error::last_os_error().raw_os_error();
                    if fd < 0 && missing == Some(libc::ENOENT) && access == libc::O_RDWR {
                        libc::mkfifo(path.as_ptr(), 0o600);
                        fd = libc::open(path.as_ptr(), flags);
                    }
                    place(p, fd, plan.slot(i, access as u32), i);
                }
            }
        }
        let writer = plan.slot(i, if fifo.is_some() { 2 } else { 1 });
        // A smaller buffer is kept if this one is not allowed: the bytes
        // still fit unless the pipe was grown to hold them.
        libc::fcntl(writer, libc::F_SETPIPE_SZ, size);
    }
    send_all(
        p,
        plan.slot(i, if fifo.is_some() { 2 } else { 1 }),
        data,
        &[],
        i,
    );
}

fn make_socketpair(
    p: &Prepared,
    plan: &PipePlan,
    i: usize,
    kind: i32,
    queues: &[(Vec<u8>, Vec<u32>); 2],
) {
    let mut fds = [-1; 2];
    let flags = kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two new descriptors into the array.
    if unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) } < 0 {
        fail(p, Step::RestorePipe, i);
    }
    place(p, fds[0], plan.slot(i, 0), i);
    place(p, fds[1], plan.slot(i, 1), i);
    // Each side's queue comes from its peer.
    for (side, (bytes, messages)) in queues.iter().enumerate() {
        send_all(p, plan.slot(i, 1 - side as u32), bytes, messages, i);
    }
}

fn make_eventfd(p: &Prepared, plan: &PipePlan, i: usize, count: u64, semaphore: bool) {
    let sem = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: eventfd makes a new descriptor, placed at its slot.
    let fd = unsafe { libc::eventfd(0, sem | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    place(p, fd, plan.slot(i, 0), i);
    // The count can be above what eventfd() takes: written instead.
    if count > 0 {
        send_all(p, plan.slot(i, 0), &count.to_ne_bytes(), &[8], i);
    }
}

/// Writes `bytes` into `fd`: as they come, or as `messages` of those
/// lengths (one `send` each).
fn send_all(p: &Prepared, fd: RawFd, bytes: &[u8], messages: &[u32], i: usize) {
    let mut at = 0;
    let mut next = messages.iter();
    while at < bytes.len() {
        let len = next.next().map_or(bytes.len() - at, |&n| n as usize);
        let rest = &bytes[at..at + len.min(bytes.len() - at)];
        // SAFETY: writes from a live slice of its length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 || (!messages.is_empty() && n as usize != rest.len()) {
            fail(p, Step::RestorePipe, i);
        }
        at += n as usize;
    }
}

/// Puts process `me`'s ends at their descriptors (after it made its
/// children, which bring their own).
pub(in super::super) fn place_ends(p: &Prepared, plan: &PipePlan, me: usize) {
    for end in plan.ends.iter().filter(|e| e.proc == me) {
        // SAFETY: dup2 between descriptors of this process.
        if unsafe { libc::dup2(plan.slot(end.channel, end.slot), end.fd) } < 0 {
            fail(p, Step::RestorePipe, end.channel);
        }
    }
}
