//! Socketpairs of a frozen container (unnamed AF_UNIX sockets), saved
//! once for all the processes that hold them, with what each socket has
//! queued (see `cr-image/src/container/sockets.rs`).
//!
//! `sock_diag` (in the container's network namespace) tells which socket
//! is whose peer. A socket's queue is read without taking it: a copy of
//! the descriptor (`pidfd_getfd`) peeks through it message by message
//! from an offset that moves on (`SO_PEEK_OFF`), which is put back after.
//! A queued message that carries descriptors fails the checkpoint (they
//! would have to be saved too). Sockets with a name, or connected to one,
//! are left to the kernel, which refuses them by fd; so is every other
//! kind of socket.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crvmm_cr_image::container::pipes::CT_MAX_PIPE_BYTES;
use crvmm_cr_image::container::sockets::SOCK_STREAM;
use crvmm_cr_image::container::{ProcessEntry, SocketPairEntry, SocketSide};

use super::dump::DumpError;
use super::fds::{holders, outsiders, refuse_outside, Key, Kind};
use super::unix_diag::unix_sockets;

/// The largest message read at a time (unix datagrams are smaller).
const MAX_MESSAGE: usize = 1 << 20;

/// The socketpairs found, with the queues of each: side 0's, then side
/// 1's.
#[derive(Debug, Default)]
pub struct Sockets {
    /// For the manifest.
    pub entries: Vec<SocketPairEntry>,
    /// Two per entry.
    pub queues: Vec<Vec<u8>>,
}

/// The socketpairs of `processes` (the container's, frozen); `init` is
/// the guest pid of its init, whose network namespace is asked.
pub fn collect(processes: &[ProcessEntry], init: i32) -> Result<Sockets, DumpError> {
    let holders = holders(processes, Kind::Socket)?;
    if holders.is_empty() {
        return Ok(Sockets::default());
    }
    let diag = unix_sockets(init as u32).map_err(|source| DumpError::Proc {
        pid: init as u32,
        file: "ns/net (sock_diag)",
        source,
    })?;
    let keys: HashSet<Key> = holders.keys().copied().collect();
    let outside = outsiders(processes, &keys);
    let mut done = HashSet::new();
    let mut out = Sockets::default();
    for &(dev, ino) in holders.keys() {
        let Some(info) = diag.get(&ino) else {
            continue; // not AF_UNIX: the kernel refuses it
        };
        let peer_named = diag.get(&info.peer).is_some_and(|p| p.named);
        if info.named || peer_named || !done.insert(ino) {
            continue; // the kernel refuses it, or its pair is done
        }
        done.insert(info.peer);
        let sides = [ino, info.peer].map(|i| {
            let key = (dev, i);
            (
                i,
                holders.get(&key).cloned().unwrap_or_default(),
                outside.get(&key),
            )
        });
        if let Some(&outsider) = sides.iter().find_map(|s| s.2) {
            let all = sides
                .iter()
                .flat_map(|s| s.1.iter())
                .map(|(e, _, c)| (e.pid, e.fd, c));
            refuse_outside(all, outsider, "a socket")?;
            continue; // standard descriptors: the restorer's instead
        }
        let mut entry = SocketPairEntry {
            kind: info.kind,
            sides: Default::default(),
        };
        for (s, (id, ends, _)) in sides.into_iter().enumerate() {
            let (bytes, messages) = match ends.first() {
                Some((end, guest_pid, comm)) => read_queue(*guest_pid as u32, end.fd, info.kind)
                    .map_err(|e| match e {
                        Queue::Io(source) => DumpError::Proc {
                            pid: *guest_pid as u32,
                            file: "fd (socket queue)",
                            source,
                        },
                        Queue::Refused(what) => DumpError::Pipe {
                            pid: end.pid,
                            comm: comm.clone(),
                            fd: end.fd,
                            what,
                        },
                    })?,
                None => (Vec::new(), Vec::new()),
            };
            entry.sides[s] = SocketSide {
                id: if id == 0 { 0 } else { id },
                ends: ends.into_iter().map(|(e, ..)| e).collect(),
                queued: bytes.len() as u32,
                messages,
            };
            out.queues.push(bytes);
        }
        out.entries.push(entry);
    }
    Ok(out)
}

enum Queue {
    Io(io::Error),
    Refused(String),
}

impl From<io::Error> for Queue {
    fn from(e: io::Error) -> Self {
        Queue::Io(e)
    }
}

fn last_error() -> Queue {
    Queue::Io(io::Error::last_os_error())
}

/// `pid`'s socket at `fd`, copied into the agent.
fn copy_of(pid: u32, fd: i32) -> Result<OwnedFd, Queue> {
    // SAFETY: pidfd_open makes a new descriptor, owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(last_error());
    }
    // SAFETY: new and owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd makes a new descriptor (close-on-exec), owned
    // below.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(last_error());
    }
    // SAFETY: new and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}

fn peek_offset(sock: &OwnedFd, value: Option<i32>) -> Result<i32, Queue> {
    let mut v: libc::c_int = value.unwrap_or(0);
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let p = (&mut v as *mut libc::c_int).cast();
    // SAFETY: get/setsockopt of one int from/into a live variable.
    let rc = unsafe {
        match value {
            Some(_) => libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                p,
                len,
            ),
            None => libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEEK_OFF,
                p,
                &mut len,
            ),
        }
    };
    if rc < 0 {
        return Err(last_error());
    }
    Ok(v)
}

/// The bytes queued on `pid`'s socket at `fd`, left there, and for
/// datagram kinds each message's length.
fn read_queue(pid: u32, fd: i32, kind: u32) -> Result<(Vec<u8>, Vec<u32>), Queue> {
    let sock = copy_of(pid, fd)?;
    let before = peek_offset(&sock, None)?;
    peek_offset(&sock, Some(0))?;
    let read = peek_all(&sock, kind);
    // The socket is the container's: its offset goes back as it was.
    let put_back = peek_offset(&sock, Some(before));
    let read = read?;
    put_back?;
    Ok(read)
}

fn peek_all(sock: &OwnedFd, kind: u32) -> Result<(Vec<u8>, Vec<u32>), Queue> {
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut control = [0u64; 64];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; its pointers are set below to
        // live buffers of the lengths given.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        // SAFETY: recvmsg into the buffers `msg` points to.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Err(Queue::Io(e));
        }
        if carries_fds(&msg) {
            return Err(Queue::Refused(
                "a socket with descriptors in flight (SCM_RIGHTS)".into(),
            ));
        }
        if n == 0 {
            break; // the end of a stream, or an empty datagram (not kept)
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Queue::Refused(format!(
                "a socket with a message over {MAX_MESSAGE} bytes queued"
            )));
        }
        bytes.extend_from_slice(&buf[..n as usize]);
        if kind != SOCK_STREAM {
            messages.push(n as u32);
        }
        if bytes.len() > CT_MAX_PIPE_BYTES {
            return Err(Queue::Refused(format!(
                "a socket with over {CT_MAX_PIPE_BYTES} bytes queued"
            )));
        }
    }
    Ok((bytes, messages))
}

/// Whether a peeked message brought descriptors (which are closed here).
fn carries_fds(msg: &libc::msghdr) -> bool {
    let mut found = false;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within msg_controllen; SCM_RIGHTS data is an array of ints.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                found = true;
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..n {
                    libc::close(data.add(i).read_unaligned());
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    #[test]
    fn a_streams_queue_is_read_and_left_in_it() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello, ").unwrap();
        a.write_all(b"world").unwrap();
        let (bytes, messages) = read_queue(std::process::id(), b.as_raw_fd(), SOCK_STREAM)
            .map_err(|_| ())
            .unwrap();
        assert_eq!(bytes, b"hello, world");
        assert!(messages.is_empty());
        let mut got = [0u8; 12];
        std::io::Read::read_exact(&mut &b, &mut got).unwrap();
        assert_eq!(&got, b"hello, world");
    }

    #[test]
    fn datagrams_keep_their_boundaries() {
        let (a, b) = UnixDatagram::pair().unwrap();
        for m in [&b"one"[..], b"two!", b"three"] {
            a.send(m).unwrap();
        }
        let (bytes, messages) = read_queue(std::process::id(), b.as_raw_fd(), 2)
            .map_err(|_| ())
            .unwrap();
        assert_eq!(bytes, b"onetwo!three");
        assert_eq!(messages, [3, 4, 5]);
        let mut buf = [0u8; 16];
        assert_eq!(b.recv(&mut buf).unwrap(), 3, "still queued, in order");
    }
}
