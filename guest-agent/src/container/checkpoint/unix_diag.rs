//! The AF_UNIX sockets of a network namespace, as `sock_diag(7)` lists
//! them: for each socket inode its type, whether it has a name (bound) and
//! the inode of its peer. Nothing else tells which two sockets make a
//! socketpair.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::super::spec::Namespace;

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `UDIAG_SHOW_NAME | UDIAG_SHOW_PEER`.
const SHOW: u32 = 0x1 | 0x4;
/// Attribute types of a `unix_diag_msg`.
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
/// `struct nlmsghdr`, `struct unix_diag_msg`: bytes.
const NLMSG_HDR: usize = 16;
const DIAG_MSG: usize = 16;

/// One AF_UNIX socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixSocket {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: u32,
    /// It has a name (a path or an abstract one).
    pub named: bool,
    /// Its peer's inode (0: none).
    pub peer: u64,
}

/// The AF_UNIX sockets of the network namespace of guest process `pid`,
/// by inode.
pub fn unix_sockets(pid: u32) -> io::Result<HashMap<u64, UnixSocket>> {
    Namespace::Network.run_in(pid as i32, query)
}

fn query() -> io::Result<HashMap<u64, UnixSocket>> {
    // SAFETY: socket() makes a new descriptor, owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: new and owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(NLMSG_HDR + 24);
    req.extend(((NLMSG_HDR + 24) as u32).to_ne_bytes());
    req.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend(((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend(1u32.to_ne_bytes()); // seq
    req.extend(0u32.to_ne_bytes()); // port
    req.extend([libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    req.extend(u32::MAX.to_ne_bytes()); // every state
    req.extend(0u32.to_ne_bytes()); // any inode
    req.extend(SHOW.to_ne_bytes());
    req.extend([0u8; 8]); // cookie
                          // SAFETY: sends from a live buffer of its length.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into a live buffer of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if parse(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Parses one datagram of netlink messages into `out`; true at the end
/// of the dump.
fn parse(mut b: &[u8], out: &mut HashMap<u64, UnixSocket>) -> io::Result<bool> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed sock_diag answer");
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDR || len > b.len() {
            return Err(bad());
        }
        let kind = u16_at(b, 4);
        let msg = &b[NLMSG_HDR..len];
        match kind as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = if msg.len() >= 4 {
                    -(u32_at(msg, 0) as i32)
                } else {
                    0
                };
                return Err(io::Error::from_raw_os_error(errno));
            }
            _ => {
                if msg.len() < DIAG_MSG {
                    return Err(bad());
                }
                let ino = u64::from(u32_at(msg, 4));
                let mut socket = UnixSocket {
                    kind: u32::from(msg[1]),
                    named: false,
                    peer: 0,
                };
                let mut attrs = &msg[DIAG_MSG..];
                while attrs.len() >= 4 {
                    let alen = u16_at(attrs, 0) as usize;
                    if alen < 4 || alen > attrs.len() {
                        return Err(bad());
                    }
                    match u16_at(attrs, 2) {
                        UNIX_DIAG_NAME => socket.named = true,
                        UNIX_DIAG_PEER if alen >= 8 => socket.peer = u64::from(u32_at(attrs, 4)),
                        _ => {}
                    }
                    attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
                }
                out.insert(ino, socket);
            }
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;
    use std::os::unix::net::UnixStream;

    fn ino(fd: &impl AsRawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    #[test]
    fn a_socketpair_is_two_unnamed_peers() {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixDatagram::pair().unwrap();
        let all = unix_sockets(std::process::id()).unwrap();
        let (ia, ib) = (ino(&a), ino(&b));
        assert_eq!(
            all[&ia],
            UnixSocket {
                kind: 1,
                named: false,
                peer: ib
            }
        );
        assert_eq!(all[&ib].peer, ia);
        assert_eq!(
            all[&ino(&c)],
            UnixSocket {
                kind: 2,
                named: false,
                peer: ino(&d)
            }
        );
        let dir = std::env::temp_dir().join(format!("crvmm-diag-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let bound = UnixDatagram::bind(&dir).unwrap();
        assert!(unix_sockets(std::process::id()).unwrap()[&ino(&bound)].named);
        let _ = std::fs::remove_file(&dir);
    }
}
