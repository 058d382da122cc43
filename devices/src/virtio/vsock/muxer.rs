//! The vsock protocol between the guest and the device's connections:
//! packets in from the tx queue, packets out to the rx queue, RST for
//! anything addressed to a connection or port that does not exist. Pure:
//! no guest memory, streams only through [`Connection`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::EventSet;

use super::backend::{HostRequest, Interest, Owner, VsockBackend};
use super::connection::{ConnKey, Connection, ConnectionError, State, BUF_ALLOC};
use super::packet::{op, VsockHeader, TYPE_STREAM};
use super::HOST_CID;
use crate::Chain;

/// Connections the device keeps at most; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// RSTs waiting for rx buffers after which the device stops reading the tx
/// queue, so a guest that sends garbage and posts no rx buffers cannot
/// make it allocate without bound.
pub const MAX_PENDING_RESETS: usize = 256;
/// First host port the device gives host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Every connection of one device.
pub struct Muxer<S> {
    guest_cid: u64,
    conns: HashMap<ConnKey, Connection<S>>,
    by_fd: HashMap<RawFd, ConnKey>,
    rx_queue: VecDeque<ConnKey>,
    queued: HashSet<ConnKey>,
    resets: VecDeque<ConnKey>,
    next_port: u32,
    next_token: u64,
}

impl<S: Read + Write + AsRawFd> Muxer<S> {
    pub fn new(guest_cid: u64) -> Muxer<S> {
        Muxer {
            guest_cid,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            rx_queue: VecDeque::new(),
            queued: HashSet::new(),
            resets: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            next_token: 1,
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there is anything to send to the guest.
    pub fn has_rx_work(&self) -> bool {
        !self.resets.is_empty() || !self.queued.is_empty()
    }

    /// Whether the device should stop reading the tx queue for now.
    pub fn resets_backlogged(&self) -> bool {
        self.resets.len() >= MAX_PENDING_RESETS
    }

    /// Drops every connection (device reset, transport reset): host streams
    /// close, the guest is not told.
    pub fn clear(&mut self) {
        self.conns.clear();
        self.by_fd.clear();
        self.rx_queue.clear();
        self.queued.clear();
        self.resets.clear();
    }

    /// A packet from the guest's tx queue.
    pub fn handle_tx<B>(&mut self, hdr: &VsockHeader, payload: &[u8], backend: &mut B)
    where
        B: VsockBackend<Stream = S>,
    {
        if hdr.src_cid != self.guest_cid {
            log::debug!(
                "vsock: dropped packet from CID {} (guest is {})",
                hdr.src_cid,
                self.guest_cid
            );
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            self.refuse(hdr.op, key);
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                op::REQUEST => self.guest_connect(hdr, key, backend),
                _ => self.refuse(hdr.op, key),
            }
            return;
        };
        conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        let result = match hdr.op {
            op::RW => conn.recv_data(payload),
            op::RESPONSE if conn.host_gone() && conn.state() == State::Connecting => {
                Err(ConnectionError::HostGone)
            }
            op::RESPONSE => conn.establish().and_then(|()| {
                backend
                    .confirm(conn.stream_mut(), key.local_port)
                    .map_err(ConnectionError::Confirm)
            }),
            op::SHUTDOWN => conn.recv_shutdown(hdr.flags),
            op::CREDIT_UPDATE => Ok(()),
            op::CREDIT_REQUEST => {
                conn.request_credit_update();
                Ok(())
            }
            op::RST => {
                self.forget(key);
                return;
            }
            other => Err(ConnectionError::Unexpected {
                op: other,
                state: conn.state(),
            }),
        };
        self.settle(key, result);
    }

    fn guest_connect<B>(&mut self, hdr: &VsockHeader, key: ConnKey, backend: &mut B)
    where
        B: VsockBackend<Stream = S>,
    {
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!(
                "vsock: {MAX_CONNECTIONS} connections open, refusing port {}",
                key.local_port
            );
            self.refuse(hdr.op, key);
            return;
        }
        match backend.connect(key.local_port) {
            Ok(stream) => {
                let token = self.token();
                let mut conn = Connection::guest_initiated(stream, key, token);
                conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
                self.insert(conn);
            }
            Err(e) => {
                log::debug!("vsock: guest connect to host port {}: {e}", key.local_port);
                self.refuse(hdr.op, key);
            }
        }
    }

    /// A host client asks for a guest port: the guest gets a REQUEST from a
    /// fresh host port.
    pub fn host_request(&mut self, req: HostRequest<S>) {
        if self.conns.len() >= MAX_CONNECTIONS {
            log::warn!("vsock: {MAX_CONNECTIONS} connections open, dropping a host client");
            return;
        }
        let key = loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|k| k.local_port == port) {
                break ConnKey {
                    local_port: port,
                    peer_port: req.port,
                };
            }
        };
        let token = self.token();
        self.insert(Connection::host_initiated(req.stream, key, token));
    }

    /// Events on the host stream of the connection with `token` (events for
    /// a connection that is gone, whose descriptor number may be reused
    /// already, are dropped).
    pub fn stream_event(&mut self, fd: RawFd, token: u64, events: EventSet) {
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&key).filter(|c| c.token() == token) else {
            return;
        };
        let result = conn.stream_event(events);
        if conn.abandoned_unannounced() {
            log::debug!(
                "vsock: host client for guest port {} left early",
                key.peer_port
            );
            self.forget(key);
            return;
        }
        self.settle(key, result);
    }

    /// The next packet for the guest, its payload in `buf[..len]`.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(VsockHeader, usize)> {
        if let Some(key) = self.resets.pop_front() {
            return Some((self.header(key, op::RST, 0, 0, 0), 0));
        }
        let mut deferred = Vec::new();
        let mut found = None;
        while let Some(key) = self.rx_queue.pop_front() {
            if !self.queued.remove(&key) {
                continue;
            }
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            match conn.next_rx(buf) {
                Ok(Some(out)) => {
                    let fwd_cnt = conn.fwd_cnt();
                    conn.credit_sent();
                    found = Some((
                        self.header(key, out.op, out.flags, out.len, fwd_cnt),
                        out.len,
                    ));
                    self.settle(key, Ok(()));
                    break;
                }
                Ok(None) if conn.has_rx_work() => deferred.push(key),
                Ok(None) => {}
                Err(e) => {
                    self.settle(key, Err(e));
                    found = self
                        .resets
                        .pop_front()
                        .map(|k| (self.header(k, op::RST, 0, 0, 0), 0));
                    break;
                }
            }
        }
        for key in deferred {
            self.enqueue(key);
        }
        found
    }

    /// Appends what to watch on the connections' host streams.
    pub fn interest(&self, out: &mut Vec<Interest>) {
        out.extend(self.conns.values().filter_map(|c| {
            let events = c.interest()?;
            Some(Interest {
                fd: c.fd(),
                owner: Owner::Connection,
                token: c.token(),
                events,
            })
        }));
    }

    fn header(&self, key: ConnKey, op: u16, flags: u32, len: usize, fwd_cnt: u32) -> VsockHeader {
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            // Payloads come from buffers of at most MAX_PAYLOAD bytes.
            len: u32::try_from(len).unwrap_or(u32::MAX),
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn insert(&mut self, conn: Connection<S>) {
        let key = conn.key();
        self.by_fd.insert(conn.fd(), key);
        self.conns.insert(key, conn);
        self.enqueue(key);
    }

    fn enqueue(&mut self, key: ConnKey) {
        if self.queued.insert(key) {
            self.rx_queue.push_back(key);
        }
    }

    /// Answers a packet for no connection with RST (never an RST with one).
    fn refuse(&mut self, op: u16, key: ConnKey) {
        if op != op::RST {
            self.resets.push_back(key);
        }
    }

    fn forget(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            self.by_fd.remove(&conn.fd());
        }
        self.queued.remove(&key);
    }

    /// After a connection changed: reset it on error, close it when both
    /// sides are done, queue it when it has something for the guest.
    fn settle(&mut self, key: ConnKey, result: Result<(), ConnectionError>) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        match result {
            Err(e) => {
                log::debug!("vsock: reset {key:?}: {}", Chain(&e));
                self.forget(key);
                self.resets.push_back(key);
            }
            Ok(()) if conn.finished() => {
                self.forget(key);
                self.resets.push_back(key);
            }
            Ok(()) if conn.has_rx_work() => self.enqueue(key),
            Ok(()) => {}
        }
    }
}
