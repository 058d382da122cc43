//! One vsock connection: its state, both directions' credit, and its host
//! stream.
//!
//! Guest to host: the device advertises [`BUF_ALLOC`] bytes of buffer; data
//! the host stream cannot take right away waits in `tx_buf`, and `fwd_cnt`
//! counts what reached the stream. A guest that sends beyond its credit is
//! reset. Host to guest: the device reads from the stream only as much as
//! the guest's credit (`buf_alloc - (rx_cnt - fwd_cnt)`) and the rx buffer
//! allow, so data the guest cannot take yet stays in the host socket.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::EventSet;

use super::packet::{op, SHUTDOWN_RCV, SHUTDOWN_SEND};

/// Receive buffer the device advertises for each connection.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Consumed bytes after which the device tells the guest unasked.
const CREDIT_UPDATE_AT: u32 = BUF_ALLOC / 4;

/// A connection's ports: the host side's and the guest side's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Host port (what the guest connected to, or what the device picked).
    pub local_port: u32,
    /// Guest port.
    pub peer_port: u32,
}

/// Why a connection is reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Writing to the host stream failed.
    #[error("write to the host stream")]
    HostWrite(#[source] io::Error),
    /// Reading from the host stream failed.
    #[error("read from the host stream")]
    HostRead(#[source] io::Error),
    /// Telling the host client that the guest accepted failed.
    #[error("confirm the connection to the host client")]
    Confirm(#[source] io::Error),
    /// The host client went away before the guest accepted.
    #[error("host client closed before the guest accepted")]
    HostGone,
    /// The guest sent more than its credit allows.
    #[error("guest exceeded its credit: {buffered} bytes buffered, {BUF_ALLOC} allowed")]
    CreditExceeded {
        /// Bytes the data would need.
        buffered: usize,
    },
    /// The guest sent data after it shut its sending side.
    #[error("guest sent data after SHUTDOWN")]
    DataAfterShutdown,
    /// The guest sent an operation the connection's state does not allow.
    #[error("unexpected operation {op} while {state:?}")]
    Unexpected {
        /// Operation.
        op: u16,
        /// State.
        state: State,
    },
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows.
    Established,
}

/// A packet the connection wants sent to the guest (payload in the buffer
/// `next_rx` was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Operation.
    pub op: u16,
    /// SHUTDOWN flags.
    pub flags: u32,
    /// Payload bytes.
    pub len: usize,
}

impl Outgoing {
    fn control(op: u16) -> Outgoing {
        Outgoing {
            op,
            flags: 0,
            len: 0,
        }
    }
}

const PENDING_REQUEST: u8 = 1;
const PENDING_RESPONSE: u8 = 2;
const PENDING_CREDIT_UPDATE: u8 = 4;

/// One connection and its host stream.
pub struct Connection<S> {
    stream: S,
    key: ConnKey,
    token: u64,
    state: State,
    pending: u8,
    tx_buf: VecDeque<u8>,
    fwd_cnt: Wrapping<u32>,
    fwd_cnt_sent: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    credit_requested: bool,
    host_readable: bool,
    host_hup: bool,
    host_eof: bool,
    host_write_shut: bool,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
}

impl<S: Read + Write + AsRawFd> Connection<S> {
    fn new(stream: S, key: ConnKey, token: u64, state: State, pending: u8) -> Connection<S> {
        Connection {
            stream,
            key,
            token,
            state,
            pending,
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            fwd_cnt_sent: Wrapping(0),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            credit_requested: false,
            // Try a first read: the host side may have written already.
            host_readable: state == State::Established,
            host_hup: false,
            host_eof: false,
            host_write_shut: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
        }
    }

    /// The guest connected to a host port and the backend found a stream:
    /// established, RESPONSE to send.
    pub fn guest_initiated(stream: S, key: ConnKey, token: u64) -> Connection<S> {
        Connection::new(stream, key, token, State::Established, PENDING_RESPONSE)
    }

    /// A host client asked for a guest port: REQUEST to send.
    pub fn host_initiated(stream: S, key: ConnKey, token: u64) -> Connection<S> {
        Connection::new(stream, key, token, State::Connecting, PENDING_REQUEST)
    }

    pub fn key(&self) -> ConnKey {
        self.key
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn fwd_cnt(&self) -> u32 {
        self.fwd_cnt.0
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Credit information from any packet of the guest.
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
    }

    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub((self.rx_cnt - self.peer_fwd_cnt).0)
    }

    /// The REQUEST never reached the guest and the host client is gone:
    /// the connection can vanish without telling anyone.
    pub fn abandoned_unannounced(&self) -> bool {
        self.host_hup && self.pending & PENDING_REQUEST != 0
    }

    /// Whether the host client hung up.
    pub fn host_gone(&self) -> bool {
        self.host_hup
    }

    /// The guest accepted a host-initiated connection (the backend has
    /// confirmed it to the host client).
    pub fn establish(&mut self) -> Result<(), ConnectionError> {
        if self.state != State::Connecting || self.pending & PENDING_REQUEST != 0 {
            return Err(ConnectionError::Unexpected {
                op: op::RESPONSE,
                state: self.state,
            });
        }
        self.state = State::Established;
        self.host_readable = true;
        Ok(())
    }

    /// The guest asked for credit information.
    pub fn request_credit_update(&mut self) {
        self.pending |= PENDING_CREDIT_UPDATE;
    }

    /// Data from the guest.
    pub fn recv_data(&mut self, mut data: &[u8]) -> Result<(), ConnectionError> {
        if self.state != State::Established {
            return Err(ConnectionError::Unexpected {
                op: op::RW,
                state: self.state,
            });
        }
        if self.peer_shut_send {
            return Err(ConnectionError::DataAfterShutdown);
        }
        while self.tx_buf.is_empty() && !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(ConnectionError::HostWrite(ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.fwd_cnt += n as u32;
                    data = &data[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectionError::HostWrite(e)),
            }
        }
        if !data.is_empty() {
            let buffered = self.tx_buf.len() + data.len();
            if buffered > BUF_ALLOC as usize {
                return Err(ConnectionError::CreditExceeded { buffered });
            }
            self.tx_buf.extend(data);
        }
        self.note_consumed();
        Ok(())
    }

    /// SHUTDOWN from the guest.
    pub fn recv_shutdown(&mut self, flags: u32) -> Result<(), ConnectionError> {
        self.peer_shut_rcv |= flags & SHUTDOWN_RCV != 0;
        self.peer_shut_send |= flags & SHUTDOWN_SEND != 0;
        self.flush()
    }

    /// Events on the host stream.
    pub fn stream_event(&mut self, events: EventSet) -> Result<(), ConnectionError> {
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
            self.host_hup = true;
            self.host_readable = true;
        }
        if events.contains(EventSet::IN) {
            self.host_readable = true;
        }
        if events.contains(EventSet::OUT) || self.host_hup {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes buffered guest data to the host stream; half-closes the
    /// stream once the guest will send no more and all of it is written.
    fn flush(&mut self) -> Result<(), ConnectionError> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnectionError::HostWrite(ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += n as u32;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectionError::HostWrite(e)),
            }
        }
        if self.tx_buf.is_empty() && self.peer_shut_send && !self.host_write_shut {
            self.host_write_shut = true;
            // SAFETY: shutdown(2) on the descriptor of the stream this
            // connection owns; it reads and writes no memory of ours.
            let rc = unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
            if rc != 0 {
                log::debug!(
                    "vsock: half-close {:?}: {}",
                    self.key,
                    io::Error::last_os_error()
                );
            }
        }
        self.note_consumed();
        Ok(())
    }

    fn note_consumed(&mut self) {
        if (self.fwd_cnt - self.fwd_cnt_sent).0 >= CREDIT_UPDATE_AT {
            self.pending |= PENDING_CREDIT_UPDATE;
        }
    }

    fn wants_host_data(&self) -> bool {
        self.state == State::Established && !self.host_eof && !self.peer_shut_rcv
    }

    /// Whether `next_rx` may produce a packet.
    pub fn has_rx_work(&self) -> bool {
        self.pending != 0
            || (self.wants_host_data()
                && self.host_readable
                && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// The next packet for the guest: control packets first, then data read
    /// from the host stream into `buf` (at most the guest's credit).
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Result<Option<Outgoing>, ConnectionError> {
        for (bit, op) in [
            (PENDING_REQUEST, op::REQUEST),
            (PENDING_RESPONSE, op::RESPONSE),
        ] {
            if self.pending & bit != 0 {
                self.pending &= !bit;
                return Ok(Some(Outgoing::control(op)));
            }
        }
        if self.wants_host_data() && self.host_readable {
            let credit = self.peer_credit() as usize;
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return Ok(Some(Outgoing::control(op::CREDIT_REQUEST)));
                }
            } else if !buf.is_empty() {
                let n = credit.min(buf.len());
                match self.stream.read(&mut buf[..n]) {
                    Ok(0) => {
                        self.host_eof = true;
                        self.host_readable = false;
                        let flags = if self.host_hup {
                            SHUTDOWN_SEND | SHUTDOWN_RCV
                        } else {
                            SHUTDOWN_SEND
                        };
                        return Ok(Some(Outgoing {
                            op: op::SHUTDOWN,
                            flags,
                            len: 0,
                        }));
                    }
                    Ok(len) => {
                        self.rx_cnt += len as u32;
                        return Ok(Some(Outgoing {
                            op: op::RW,
                            flags: 0,
                            len,
                        }));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.host_readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnectionError::HostRead(e)),
                }
            }
        }
        if self.pending & PENDING_CREDIT_UPDATE != 0 {
            return Ok(Some(Outgoing::control(op::CREDIT_UPDATE)));
        }
        Ok(None)
    }

    /// A packet carrying our credit went out: the guest knows `fwd_cnt`.
    pub fn credit_sent(&mut self) {
        self.fwd_cnt_sent = self.fwd_cnt;
        self.pending &= !PENDING_CREDIT_UPDATE;
    }

    /// Both directions are done: the device resets the connection and
    /// forgets it.
    pub fn finished(&self) -> bool {
        self.state == State::Established
            && self.peer_shut_send
            && self.tx_buf.is_empty()
            && (self.host_eof || self.peer_shut_rcv)
    }

    /// What to watch the host stream for; `None` once it hung up (a hung-up
    /// descriptor would be reported again and again).
    pub fn interest(&self) -> Option<EventSet> {
        if self.host_hup {
            return None;
        }
        let mut events = EventSet::empty();
        if self.wants_host_data() && !self.host_readable {
            events |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            events |= EventSet::OUT;
        }
        Some(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const KEY: ConnKey = ConnKey {
        local_port: 1024,
        peer_port: 5000,
    };

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn established() -> (Connection<UnixStream>, UnixStream) {
        let (ours, host) = pair();
        let mut c = Connection::guest_initiated(ours, KEY, 1);
        c.update_peer_credit(4096, 0);
        assert_eq!(c.next_rx(&mut [0; 64]).unwrap().unwrap().op, op::RESPONSE);
        (c, host)
    }

    #[test]
    fn reads_no_more_than_the_guest_credit() {
        let (mut c, mut host) = established();
        host.write_all(&[7u8; 10_000]).unwrap();
        let mut buf = vec![0u8; 65536];
        assert_eq!(c.next_rx(&mut buf).unwrap().unwrap().len, 4096);
        // Out of credit: one CREDIT_REQUEST, then nothing; the rest stays in the socket.
        assert_eq!(c.next_rx(&mut buf).unwrap().unwrap().op, op::CREDIT_REQUEST);
        assert!(c.next_rx(&mut buf).unwrap().is_none());
        assert!(!c.has_rx_work());
        c.update_peer_credit(4096, 4096);
        assert!(c.has_rx_work());
        assert_eq!(c.next_rx(&mut buf).unwrap().unwrap().len, 4096);
        c.update_peer_credit(4096, 8192);
        assert_eq!(c.next_rx(&mut buf).unwrap().unwrap().len, 10_000 - 8192);
        assert!(c.next_rx(&mut buf).unwrap().is_none());
        assert_eq!(c.interest(), Some(EventSet::IN));
    }

    #[test]
    fn buffers_what_the_host_cannot_take_and_enforces_credit() {
        let (mut c, mut host) = established();
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0;
        while sent < BUF_ALLOC as usize {
            c.recv_data(&chunk).unwrap();
            sent += chunk.len();
        }
        assert!(c.interest().unwrap().contains(EventSet::OUT));
        // The host socket is full and so is our buffer: one more is over credit.
        let err = (0..16).find_map(|_| c.recv_data(&chunk).err());
        assert!(matches!(err, Some(ConnectionError::CreditExceeded { .. })));
        let mut sink = vec![0u8; 1 << 20];
        let mut got = 0;
        while let Ok(n) = host.read(&mut sink) {
            got += n;
            c.stream_event(EventSet::OUT).unwrap();
        }
        assert_eq!(c.fwd_cnt() as usize, got);
        assert_eq!(c.next_rx(&mut []).unwrap().unwrap().op, op::CREDIT_UPDATE);
    }

    #[test]
    fn closes_once_both_sides_are_done() {
        let (mut c, host) = established();
        c.recv_shutdown(SHUTDOWN_SEND).unwrap();
        assert!(!c.finished());
        drop(host);
        c.stream_event(EventSet::HANG_UP).unwrap();
        let out = c.next_rx(&mut [0; 16]).unwrap().unwrap();
        assert_eq!(
            (out.op, out.flags),
            (op::SHUTDOWN, SHUTDOWN_SEND | SHUTDOWN_RCV)
        );
        assert!(c.finished());
        assert_eq!(c.interest(), None);
    }

    #[test]
    fn response_before_request_is_unexpected() {
        let (ours, _host) = pair();
        let mut c = Connection::host_initiated(ours, KEY, 1);
        assert!(c.establish().is_err());
        assert_eq!(c.next_rx(&mut []).unwrap().unwrap().op, op::REQUEST);
        assert!(matches!(
            c.recv_data(b"x"),
            Err(ConnectionError::Unexpected { .. })
        ));
        c.establish().unwrap();
        assert_eq!(c.state(), State::Established);
    }
}
