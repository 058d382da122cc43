//! The Unix-socket protocol end to end: real sockets, the event handler in
//! a real event manager, the guest driver on the other side.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use event_manager::{EventManager, SubscriberOps};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::virtio::vsock::{UnixBackend, VsockEventHandler, RX_QUEUE, TX_QUEUE};

struct Setup {
    _dir: TempDir,
    path: PathBuf,
    em: EventManager<VsockEventHandler<UnixBackend>>,
    dev: Arc<Mutex<Vsock<UnixBackend>>>,
    drv: VsockDriver,
    seen: Vec<(VsockHeader, Vec<u8>)>,
}

fn setup() -> Setup {
    let dir = TempDir::new_with_prefix("/tmp/crvmm-vsock-").unwrap();
    let path = dir.as_path().join("v.sock");
    let mem = guest_memory(MEM_SIZE);
    let mut drv = VsockDriver::new(&mem, GUEST_CID);
    let dev = Vsock::new(GUEST_CID, UnixBackend::new(&path).unwrap()).unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let status = Arc::new(InterruptStatus::new(Arc::new(CountingInterrupt::default())));
    dev.lock()
        .unwrap()
        .activate(mem, drv.queues(), status, VIRTIO_F_VERSION_1)
        .unwrap();
    let mut em = EventManager::new().unwrap();
    em.add_subscriber(VsockEventHandler::new(dev.clone()).unwrap());
    drv.post_rx(64, RX_LEN);
    let s = Setup {
        _dir: dir,
        path,
        em,
        dev,
        drv,
        seen: Vec::new(),
    };
    s.kick(RX_QUEUE);
    s
}

impl Setup {
    fn kick(&self, queue: usize) {
        self.dev.lock().unwrap().queue_events()[queue]
            .write(1)
            .unwrap();
    }

    fn send(&mut self, op: u16, src: u32, dst: u32, payload: &[u8]) {
        let mut hdr = self.drv.header(op, src, dst);
        hdr.len = payload.len() as u32;
        self.drv.send(&hdr, payload);
        self.kick(TX_QUEUE);
    }

    /// Runs the event loop until `done` holds (packets received so far in
    /// `self.seen`).
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Setup) -> bool) {
        for _ in 0..200 {
            self.em.run_with_timeout(20).unwrap();
            let pkts = self.drv.recv();
            if !pkts.is_empty() {
                self.seen.extend(pkts);
                self.drv.post_rx(64, RX_LEN);
                self.kick(RX_QUEUE);
            }
            self.drv.reclaim_tx();
            if done(self) {
                return;
            }
        }
        panic!(
            "timed out waiting for {what}; packets: {:?}",
            ops(&self.seen)
        );
    }

    fn packet(&self, op: u16, guest_port: u32) -> Option<VsockHeader> {
        self.seen
            .iter()
            .map(|(h, _)| *h)
            .find(|h| h.op == op && h.dst_port == guest_port)
    }

    fn connect(&mut self, guest_port: u32) -> UnixStream {
        let mut client = UnixStream::connect(&self.path).unwrap();
        client
            .write_all(format!("CONNECT {guest_port}\n").as_bytes())
            .unwrap();
        client.set_nonblocking(true).unwrap();
        client
    }
}

fn read_until(s: &mut Setup, client: &mut UnixStream, want: &[u8]) {
    let mut got = Vec::new();
    s.run_until("host data", |_| {
        got.extend(drain(client));
        got.len() >= want.len()
    });
    assert_eq!(got, want);
}

#[test]
fn host_connect_with_a_real_unix_client() {
    let mut s = setup();
    let mut client = s.connect(1024);
    s.run_until("REQUEST", |s| s.packet(op::REQUEST, 1024).is_some());
    let host_port = s.packet(op::REQUEST, 1024).unwrap().src_port;
    s.send(op::RESPONSE, 1024, host_port, &[]);
    read_until(&mut s, &mut client, format!("OK {host_port}\n").as_bytes());

    client.write_all(b"to the guest").unwrap();
    s.run_until("guest data", |s| data_for(&s.seen, 1024) == b"to the guest");
    s.send(op::RW, 1024, host_port, b"to the host");
    read_until(&mut s, &mut client, b"to the host");

    // The guest resets: the host socket is closed.
    s.send(op::RST, 1024, host_port, &[]);
    s.run_until("host EOF", |_| at_eof(&mut client));
}

#[test]
fn guest_connect_to_a_real_unix_listener() {
    let mut s = setup();
    s.send(op::REQUEST, 40000, 52, &[]);
    s.run_until("RST", |s| s.packet(op::RST, 40000).is_some());

    let listener =
        std::os::unix::net::UnixListener::bind(format!("{}_52", s.path.display())).unwrap();
    s.send(op::REQUEST, 40001, 52, &[]);
    s.run_until("RESPONSE", |s| s.packet(op::RESPONSE, 40001).is_some());
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();
    s.send(op::RW, 40001, 52, b"hi host");
    read_until(&mut s, &mut host, b"hi host");
    host.write_all(b"hi guest").unwrap();
    s.run_until("guest data", |s| data_for(&s.seen, 40001) == b"hi guest");
}

#[test]
fn host_client_gone_while_connect_pending_does_not_wedge_the_device() {
    let mut s = setup();
    let client = s.connect(1024);
    s.run_until("REQUEST", |s| s.packet(op::REQUEST, 1024).is_some());
    let first_port = s.packet(op::REQUEST, 1024).unwrap().src_port;
    drop(client);
    // Let the device notice the hang-up before the guest answers.
    for _ in 0..5 {
        s.em.run_with_timeout(10).unwrap();
    }
    s.send(op::RESPONSE, 1024, first_port, &[]);
    s.run_until("RST", |s| s.packet(op::RST, 1024).is_some());
    assert_eq!(s.dev.lock().unwrap().connection_count(), 0);

    // The next client to the same guest port gets through.
    s.seen.clear();
    let mut client = s.connect(1024);
    s.run_until("REQUEST", |s| s.packet(op::REQUEST, 1024).is_some());
    let port = s.packet(op::REQUEST, 1024).unwrap().src_port;
    assert_ne!(port, first_port);
    s.send(op::RESPONSE, 1024, port, &[]);
    read_until(&mut s, &mut client, format!("OK {port}\n").as_bytes());
}
