//! vsock throughput through the device core: 256 MiB host to guest and
//! guest to host over one connection, with the in-memory guest driver on one
//! side and a Unix socket pair on the other, on one thread. Prints MiB/s;
//! asserts nothing about speed.
//!
//! `cargo bench -p crvmm-devices --bench vsock_throughput`

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crvmm_devices::testing::vsock::VsockDriver;
use crvmm_devices::testing::{guest_memory, CountingInterrupt};
use crvmm_devices::virtio::vsock::packet::{op, HDR_LEN};
use crvmm_devices::virtio::vsock::{HostRequest, Interest, Vsock, VsockBackend, BUF_ALLOC};
use crvmm_devices::virtio::{InterruptStatus, VirtioDevice, VIRTIO_F_VERSION_1};
use vmm_sys_util::epoll::EventSet;

/// Bytes each way under `cargo bench`.
const TOTAL: usize = 256 << 20;
/// Bytes each way when run without `--bench` (as a smoke test).
const SMOKE: usize = 8 << 20;
const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 40000;
const HOST_PORT: u32 = 52;
/// What Linux advertises by default.
const GUEST_BUF_ALLOC: u32 = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// Every guest connect gets one end of a socket pair; the bench keeps the other.
#[derive(Default)]
struct PairBackend {
    host_end: Option<UnixStream>,
    device_fd: RawFd,
}

impl VsockBackend for PairBackend {
    type Stream = UnixStream;

    fn connect(&mut self, _port: u32) -> io::Result<UnixStream> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        self.device_fd = ours.as_raw_fd();
        self.host_end = Some(theirs);
        Ok(ours)
    }

    fn take_request(&mut self) -> Option<HostRequest<UnixStream>> {
        None
    }

    fn confirm(&mut self, _stream: &mut UnixStream, _local_port: u32) -> io::Result<()> {
        Ok(())
    }

    fn interest(&self, _out: &mut Vec<Interest>) {}

    fn process(&mut self, _fd: RawFd, _events: EventSet) {}
}

struct Bench {
    dev: Vsock<PairBackend>,
    drv: VsockDriver,
    host: UnixStream,
    /// The device end of the connection, as the event loop would name it.
    stream: Interest,
}

fn connect() -> Bench {
    let mem = guest_memory(64 << 20);
    let mut drv = VsockDriver::new(&mem, GUEST_CID);
    let mut dev = Vsock::new(GUEST_CID, PairBackend::default()).expect("device");
    let status = Arc::new(InterruptStatus::new(Arc::new(CountingInterrupt::default())));
    dev.activate(mem, drv.queues(), status, VIRTIO_F_VERSION_1)
        .expect("activate");
    drv.post_rx(1, (HDR_LEN + 4096) as u32);
    let mut req = drv.header(op::REQUEST, GUEST_PORT, HOST_PORT);
    req.buf_alloc = GUEST_BUF_ALLOC;
    drv.send(&req, &[]);
    dev.process_tx_queue().expect("tx");
    assert_eq!(drv.recv().first().map(|(h, _)| h.op), Some(op::RESPONSE));
    let host = dev.backend_mut().host_end.take().expect("connected");
    let mut watched = Vec::new();
    dev.interest(&mut watched);
    let stream = watched
        .into_iter()
        .find(|i| i.fd == dev.backend().device_fd)
        .expect("watched");
    Bench {
        dev,
        drv,
        host,
        stream,
    }
}

/// Host writes, the device fills rx buffers of `rx_len` bytes, the guest
/// consumes and returns credit every half buffer, as Linux does.
fn host_to_guest(total: usize, rx_len: u32) -> Duration {
    let mut b = connect();
    b.drv.recv();
    b.drv.post_rx(256, rx_len);
    let chunk = vec![0xa5u8; CHUNK];
    let (mut sent, mut received, mut credited) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    while received < total {
        while sent < total {
            match b.host.write(&chunk[..CHUNK.min(total - sent)]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("host write: {e}"),
            }
        }
        b.dev
            .process_stream_event(b.stream.fd, b.stream.token, EventSet::IN)
            .expect("rx");
        let mut got = 0;
        let packets = b.drv.recv_with(|h, p| {
            if h.op == op::RW {
                got += p.len();
            }
        });
        received += got;
        b.drv.post_rx(packets, rx_len);
        if received - credited >= GUEST_BUF_ALLOC as usize / 2 || received == total {
            credited = received;
            let mut update = b.drv.header(op::CREDIT_UPDATE, GUEST_PORT, HOST_PORT);
            update.buf_alloc = GUEST_BUF_ALLOC;
            update.fwd_cnt = received as u32;
            b.drv.send(&update, &[]);
            b.dev.process_tx_queue().expect("tx");
            b.drv.reclaim_tx();
        } else {
            b.dev.process_rx_queue().expect("rx");
        }
    }
    start.elapsed()
}

/// The guest sends 64 KiB packets as its credit allows, the host reads.
fn guest_to_host(total: usize) -> Duration {
    let mut b = connect();
    b.drv.post_rx(256, (HDR_LEN + 4096) as u32);
    let chunk = vec![0x5au8; CHUNK];
    let mut buf = vec![0u8; 1 << 20];
    let (mut sent, mut received, mut host_fwd) = (0usize, 0usize, 0u32);
    let start = Instant::now();
    while received < total {
        loop {
            let in_flight = (sent as u32).wrapping_sub(host_fwd);
            let n = CHUNK.min(total - sent);
            if n == 0
                || in_flight as usize + n > BUF_ALLOC as usize
                || b.drv.tx.free_descriptors() < 2
            {
                break;
            }
            let mut rw = b.drv.header(op::RW, GUEST_PORT, HOST_PORT);
            rw.len = n as u32;
            b.drv.send(&rw, &chunk[..n]);
            sent += n;
        }
        b.dev.process_tx_queue().expect("tx");
        b.drv.reclaim_tx();
        loop {
            match b.host.read(&mut buf) {
                Ok(0) => panic!("host end closed"),
                Ok(n) => received += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("host read: {e}"),
            }
        }
        b.dev
            .process_stream_event(b.stream.fd, b.stream.token, EventSet::OUT)
            .expect("flush");
        let packets = b.drv.recv_with(|h, _| host_fwd = h.fwd_cnt);
        b.drv.post_rx(packets, (HDR_LEN + 4096) as u32);
        b.dev.process_rx_queue().expect("rx");
    }
    start.elapsed()
}

fn report(what: &str, total: usize, took: Duration) {
    let mib = (total >> 20) as f64;
    println!(
        "{what:<40} {mib:>4} MiB in {:>6.3} s = {:>8.1} MiB/s",
        took.as_secs_f64(),
        mib / took.as_secs_f64()
    );
}

fn main() {
    let total = if std::env::args().any(|a| a == "--bench") {
        TOTAL
    } else {
        SMOKE
    };
    let small = (HDR_LEN + 4096) as u32;
    let large = (HDR_LEN + CHUNK) as u32;
    report(
        "host->guest (4 KiB rx buffers)",
        total,
        host_to_guest(total, small),
    );
    report(
        "host->guest (64 KiB rx buffers)",
        total,
        host_to_guest(total, large),
    );
    report("guest->host (64 KiB packets)", total, guest_to_host(total));
}
