//! Device tests: a guest driver in anonymous guest memory on one side,
//! socket pairs or real Unix sockets on the other; no KVM.

mod connections;
mod credit;
mod malformed;
mod transport;
mod unix_backend;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use vmm_sys_util::epoll::EventSet;

use super::backend::{HostRequest, Interest, Owner, VsockBackend};
use super::packet::{op, VsockHeader};
use super::Vsock;
use crate::testing::vsock::VsockDriver;
use crate::testing::{guest_memory, CountingInterrupt};
use crate::virtio::{InterruptStatus, VirtioDevice, VIRTIO_F_VERSION_1};

pub const GUEST_CID: u64 = 3;
pub const MEM_SIZE: usize = 64 << 20;
/// Rx buffers as Linux posts them: a header and 4 KiB.
pub const RX_LEN: u32 = 44 + 4096;

/// A backend of socket pairs: the test holds the host ends.
#[derive(Default)]
pub struct PairBackend {
    listening: HashSet<u32>,
    accepted: HashMap<u32, VecDeque<UnixStream>>,
    requests: VecDeque<HostRequest<UnixStream>>,
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

impl PairBackend {
    /// A host service listens on `port`.
    pub fn listen(&mut self, port: u32) {
        self.listening.insert(port);
    }

    /// The host end of the oldest guest connection to `port`.
    pub fn accept(&mut self, port: u32) -> Option<UnixStream> {
        self.accepted.get_mut(&port)?.pop_front()
    }

    /// A host client asks for guest port `port`; returns its end.
    pub fn host_connect(&mut self, port: u32) -> UnixStream {
        let (ours, theirs) = nonblocking_pair();
        self.requests.push_back(HostRequest { stream: ours, port });
        theirs
    }
}

impl VsockBackend for PairBackend {
    type Stream = UnixStream;

    fn connect(&mut self, port: u32) -> io::Result<UnixStream> {
        if !self.listening.contains(&port) {
            return Err(ErrorKind::ConnectionRefused.into());
        }
        let (ours, theirs) = nonblocking_pair();
        self.accepted.entry(port).or_default().push_back(theirs);
        Ok(ours)
    }

    fn take_request(&mut self) -> Option<HostRequest<UnixStream>> {
        self.requests.pop_front()
    }

    fn confirm(&mut self, stream: &mut UnixStream, local_port: u32) -> io::Result<()> {
        stream.write_all(format!("OK {local_port}\n").as_bytes())
    }

    fn interest(&self, _out: &mut Vec<Interest>) {}

    fn process(&mut self, _fd: RawFd, _events: EventSet) {}
}

/// A started device and its guest driver.
pub struct Harness<B: VsockBackend = PairBackend> {
    pub dev: Vsock<B>,
    pub drv: VsockDriver,
    pub irq: Arc<CountingInterrupt>,
}

pub fn harness() -> Harness {
    harness_with(PairBackend::default())
}

pub fn harness_with<B: VsockBackend>(backend: B) -> Harness<B> {
    let mem = guest_memory(MEM_SIZE);
    let drv = VsockDriver::new(&mem, GUEST_CID);
    let mut dev = Vsock::new(GUEST_CID, backend).expect("device");
    let irq = Arc::new(CountingInterrupt::default());
    let status = Arc::new(InterruptStatus::new(irq.clone()));
    dev.activate(mem, drv.queues(), status, VIRTIO_F_VERSION_1)
        .expect("activate");
    Harness { dev, drv, irq }
}

impl<B: VsockBackend> Harness<B> {
    /// Sends one packet and lets the device process it.
    pub fn send(&mut self, hdr: &VsockHeader, payload: &[u8]) {
        let mut hdr = *hdr;
        hdr.len = payload.len() as u32;
        self.drv.send(&hdr, payload);
        self.pump();
    }

    /// Sends a control packet from guest port `src` to host port `dst`.
    pub fn send_op(&mut self, op: u16, src: u32, dst: u32) {
        let hdr = self.drv.header(op, src, dst);
        self.send(&hdr, &[]);
    }

    /// Posts rx buffers, then runs the device until nothing moves: queues,
    /// and every host stream the device watches, as an event loop would.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            self.dev.process_tx_queue().expect("tx");
            self.drv.reclaim_tx();
            let mut wanted = Vec::new();
            self.dev.interest(&mut wanted);
            let ready = poll(&wanted);
            if ready.is_empty() {
                return;
            }
            for (i, events) in ready {
                match i.owner {
                    Owner::Backend => self
                        .dev
                        .process_backend_event(i.fd, events)
                        .expect("backend"),
                    Owner::Connection => self
                        .dev
                        .process_stream_event(i.fd, i.token, events)
                        .expect("stream"),
                }
            }
        }
        panic!("device never settled");
    }

    /// Posts `n` rx buffers and pumps.
    pub fn post_rx(&mut self, n: usize) {
        self.drv.post_rx(n, RX_LEN);
        self.dev.process_rx_queue().expect("rx");
        self.pump();
    }

    /// Every packet the device sent since the last call.
    pub fn recv(&mut self) -> Vec<(VsockHeader, Vec<u8>)> {
        self.drv.recv()
    }
}

/// Which of `wanted` are ready now (poll(2) with no timeout).
fn poll(wanted: &[Interest]) -> Vec<(Interest, EventSet)> {
    let mut fds: Vec<libc::pollfd> = wanted
        .iter()
        .map(|i| {
            let mut events = 0;
            if i.events.contains(EventSet::IN) {
                events |= libc::POLLIN;
            }
            if i.events.contains(EventSet::OUT) {
                events |= libc::POLLOUT;
            }
            libc::pollfd {
                fd: i.fd,
                events,
                revents: 0,
            }
        })
        .collect();
    // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()`
    // pollfd structs; poll(2) writes only their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    let mut out = Vec::new();
    for (i, p) in wanted.iter().zip(&fds) {
        let mut ev = EventSet::empty();
        for (bit, set) in [
            (libc::POLLIN, EventSet::IN),
            (libc::POLLOUT, EventSet::OUT),
            (libc::POLLHUP, EventSet::HANG_UP),
            (libc::POLLERR, EventSet::ERROR),
        ] {
            if p.revents & bit != 0 {
                ev |= set;
            }
        }
        if !ev.is_empty() {
            out.push((*i, ev));
        }
    }
    out
}

/// Reads what is in `s` now (non-blocking).
pub fn drain(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return out,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether the peer of `s` closed (EOF now, no data).
pub fn at_eof(s: &mut UnixStream) -> bool {
    matches!(s.read(&mut [0u8; 1]), Ok(0))
}

/// Data payloads of RW packets for `guest_port`, concatenated.
pub fn data_for(packets: &[(VsockHeader, Vec<u8>)], guest_port: u32) -> Vec<u8> {
    packets
        .iter()
        .filter(|(h, _)| h.op == op::RW && h.dst_port == guest_port)
        .flat_map(|(_, p)| p.iter().copied())
        .collect()
}

/// The ops of `packets`.
pub fn ops(packets: &[(VsockHeader, Vec<u8>)]) -> Vec<u16> {
    packets.iter().map(|(h, _)| h.op).collect()
}

/// Host-initiated connection to `guest_port`, accepted by the guest; returns
/// the host client's stream (past its `OK` line) and the host port.
pub fn host_connection(h: &mut Harness, guest_port: u32) -> (UnixStream, u32) {
    let mut client = h.dev.backend_mut().host_connect(guest_port);
    h.pump();
    let pkts = h.recv();
    let req = pkts
        .iter()
        .find(|(p, _)| p.op == op::REQUEST && p.dst_port == guest_port);
    let host_port = req.expect("REQUEST to the guest").0.src_port;
    h.send_op(op::RESPONSE, guest_port, host_port);
    let ok = drain(&mut client);
    assert_eq!(ok, format!("OK {host_port}\n").as_bytes());
    (client, host_port)
}
