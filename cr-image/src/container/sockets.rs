//! Socketpairs (AF_UNIX, unnamed) shared by the processes of a container.
//!
//! Like a pipe (`pipes.rs`), a socketpair is saved once by the agent: a
//! [`SocketPairEntry`] in the manifest says which process holds which of
//! its two sockets at which fd; each socket's receive queue is a QUEUE
//! record (datagram and seqpacket sockets keep their message boundaries:
//! `messages` gives each length). The kernel saves each end as a
//! `CR_FILE_UNIX` record and leaves it to the caller of restart, as it
//! does a pipe end.

use serde::{Deserialize, Serialize};

use super::format::Manifest;
use super::pipes::CT_MAX_PIPE_BYTES;

/// `SOCK_STREAM`.
pub const SOCK_STREAM: u32 = 1;
/// `SOCK_DGRAM`.
pub const SOCK_DGRAM: u32 = 2;
/// `SOCK_SEQPACKET`.
pub const SOCK_SEQPACKET: u32 = 5;
/// The most socketpairs one image holds.
pub const CT_MAX_SOCKETPAIRS: usize = 4096;
/// The most messages one socket's queue holds in an image.
pub const CT_MAX_MESSAGES: usize = 65536;

/// One socketpair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketPairEntry {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub kind: u32,
    /// Its two sockets. A side no process holds any more is closed after
    /// restore (its peer sees end-of-file), and its queue is empty.
    pub sides: [SocketSide; 2],
}

/// One socket of a pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSide {
    /// Its inode at the checkpoint (informational; 0: closed).
    pub id: u64,
    /// The descriptors that hold it.
    pub ends: Vec<SocketEnd>,
    /// The bytes in its receive queue: its QUEUE record.
    pub queued: u32,
    /// For datagram and seqpacket sockets, each queued message's length,
    /// in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<u32>,
}

/// One descriptor of a process on a socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketEnd {
    /// The process, by its pid in the container.
    pub pid: i32,
    /// The descriptor.
    pub fd: i32,
}

/// Checks the manifest's socketpairs; `taken` holds the (pid, fd) pairs
/// already given (to pipes).
pub(crate) fn check_sockets(
    m: &Manifest,
    taken: &mut std::collections::HashSet<(i32, i32)>,
) -> Result<(), String> {
    if m.socketpairs.len() > CT_MAX_SOCKETPAIRS {
        return Err(format!("{} socketpairs", m.socketpairs.len()));
    }
    for (i, pair) in m.socketpairs.iter().enumerate() {
        let bad = |what: String| Err(format!("socketpair {i}: {what}"));
        if ![SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET].contains(&pair.kind) {
            return bad(format!("type {}", pair.kind));
        }
        if pair.sides.iter().all(|s| s.ends.is_empty()) {
            return bad("no process holds it".into());
        }
        for side in &pair.sides {
            if side.queued as usize > CT_MAX_PIPE_BYTES
                || (side.ends.is_empty() && side.queued != 0)
            {
                return bad(format!("{} bytes queued", side.queued));
            }
            let sum: u64 = side.messages.iter().map(|&n| u64::from(n)).sum();
            let boundaries = pair.kind != SOCK_STREAM;
            if side.messages.len() > CT_MAX_MESSAGES
                || (!boundaries && !side.messages.is_empty())
                || (boundaries && sum != u64::from(side.queued))
            {
                return bad(format!(
                    "{} messages of {sum} bytes for {} queued",
                    side.messages.len(),
                    side.queued
                ));
            }
            for end in &side.ends {
                check_end(m, taken, end).or_else(bad)?;
            }
        }
    }
    Ok(())
}

/// One descriptor of a shared object: a process of the image, a valid fd
/// not given to another object (`taken`).
pub(crate) fn check_end(
    m: &Manifest,
    taken: &mut std::collections::HashSet<(i32, i32)>,
    end: &SocketEnd,
) -> Result<(), String> {
    if !m.processes.iter().any(|p| p.pid == end.pid) {
        return Err(format!("pid {} is no process of the image", end.pid));
    }
    if !(0..1 << 20).contains(&end.fd) || !taken.insert((end.pid, end.fd)) {
        return Err(format!("pid {} fd {} is taken or no fd", end.pid, end.fd));
    }
    Ok(())
}

/// The length of QUEUE record `i` of `m`: the pipes' first, then each
/// socketpair's two sides.
pub(crate) fn queue_len(m: &Manifest, i: usize) -> Option<usize> {
    if let Some(pipe) = m.pipes.get(i) {
        return Some(pipe.buffered as usize);
    }
    let i = i - m.pipes.len();
    let pair = m.socketpairs.get(i / 2)?;
    Some(pair.sides[i % 2].queued as usize)
}

/// How many QUEUE records `m` calls for.
pub(crate) fn queue_count(m: &Manifest) -> usize {
    m.pipes.len() + 2 * m.socketpairs.len()
}
