//! The vsock device behind the MMIO transport: probe, notification,
//! transport reset, save and restore.

use std::io::Write;
use std::sync::Mutex;

use super::*;
use crate::testing::{linux_probe, mmio_read, mmio_write};
use crate::virtio::mmio::{MmioError, MmioTransport, MmioTransportArgs, MmioTransportState};
use crate::virtio::status::{DRIVER_OK, FEATURES_OK};
use crate::virtio::vsock::{VsockError, VsockState, TX_QUEUE, VSOCK_DEVICE_ID};
use crate::BusDevice;

const NOTIFY: u64 = 0x50;

#[test]
fn reset_transport_sends_the_event_and_drops_connections() {
    let mut h = harness();
    h.post_rx(8);
    let (mut client, _) = host_connection(&mut h, 1024);
    h.drv.post_events(2);
    h.dev.reset_transport().unwrap();
    assert_eq!(
        h.drv.recv_events(),
        [0],
        "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET"
    );
    assert_eq!(h.dev.connection_count(), 0);
    assert!(at_eof(&mut client));

    // Without an event buffer the event waits for one.
    h.drv.recv_events();
    h.dev.reset_transport().unwrap();
    h.dev.reset_transport().unwrap();
    assert_eq!(h.drv.recv_events(), [0]);
    h.dev.reset_transport().unwrap();
    assert!(h.drv.recv_events().is_empty());
    h.drv.post_events(1);
    h.dev.process_event_queue().unwrap();
    assert_eq!(h.drv.recv_events(), [0]);
}

struct Machine {
    mem: crate::GuestMemoryMmap,
    dev: Arc<Mutex<Vsock<PairBackend>>>,
    mmio: MmioTransport,
    drv: VsockDriver,
}

fn machine() -> Machine {
    let mem = guest_memory(MEM_SIZE);
    let drv = VsockDriver::new(&mem, GUEST_CID);
    let dev = Arc::new(Mutex::new(
        Vsock::new(GUEST_CID, PairBackend::default()).unwrap(),
    ));
    let args = MmioTransportArgs {
        mem: mem.clone(),
        device: dev.clone(),
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let mmio = MmioTransport::new(args).unwrap();
    Machine {
        mem,
        dev,
        mmio,
        drv,
    }
}

#[test]
fn linux_probe_through_mmio_starts_the_device() {
    let mut m = machine();
    assert_eq!(mmio_read(&mut m.mmio, 0x08), VSOCK_DEVICE_ID);
    let status = linux_probe(
        &mut m.mmio,
        VIRTIO_F_VERSION_1,
        &[&m.drv.rx, &m.drv.tx, &m.drv.event],
    );
    assert_eq!(status & (FEATURES_OK | DRIVER_OK), FEATURES_OK | DRIVER_OK);
    assert!(m.dev.lock().unwrap().is_active());
    // The guest CID, as Linux reads it (two 32-bit halves) and whole.
    assert_eq!(mmio_read(&mut m.mmio, 0x100), GUEST_CID as u32);
    assert_eq!(mmio_read(&mut m.mmio, 0x104), 0);
    let mut cid = [0u8; 8];
    m.mmio.read(0x100, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    // A notify raises the queue's EventFd.
    mmio_write(&mut m.mmio, NOTIFY, TX_QUEUE as u32);
    assert_eq!(
        m.dev.lock().unwrap().queue_events()[TX_QUEUE]
            .read()
            .unwrap(),
        1
    );
    // Reset through the status register stops it.
    mmio_write(&mut m.mmio, 0x70, 0);
    assert!(!m.dev.lock().unwrap().is_active());
}

/// Probes, opens a guest connection and moves some data, so that the
/// queues have progressed.
fn busy_machine() -> (Machine, UnixStream) {
    let mut m = machine();
    linux_probe(
        &mut m.mmio,
        VIRTIO_F_VERSION_1,
        &[&m.drv.rx, &m.drv.tx, &m.drv.event],
    );
    m.drv.post_rx(8, RX_LEN);
    m.drv.post_events(4);
    let mut dev = m.dev.lock().unwrap();
    dev.backend_mut().listen(52);
    m.drv.send(&m.drv.header(op::REQUEST, 40000, 52), &[]);
    dev.process_tx_queue().unwrap();
    let mut host = dev.backend_mut().accept(52).unwrap();
    host.write_all(b"hello").unwrap();
    let i = stream(&dev);
    dev.process_stream_event(i.fd, i.token, EventSet::IN)
        .unwrap();
    drop(dev);
    assert_eq!(ops(&m.drv.recv()), [op::RESPONSE, op::RW]);
    (m, host)
}

fn stream(dev: &Vsock<PairBackend>) -> Interest {
    let mut i = Vec::new();
    dev.interest(&mut i);
    i[0]
}

#[test]
fn save_mutate_restore_compare() {
    let (mut m, mut host) = busy_machine();
    let saved_mmio = m.mmio.save();
    let saved_dev = m.dev.lock().unwrap().save();
    assert_eq!(
        saved_mmio.queues[1].next_avail, 1,
        "the tx queue progressed"
    );
    let json = serde_json::to_string(&(&saved_mmio, &saved_dev)).unwrap();

    // Mutate: more traffic, another queue selected.
    host.write_all(b"more").unwrap();
    let mut dev = m.dev.lock().unwrap();
    let i = stream(&dev);
    dev.process_stream_event(i.fd, i.token, EventSet::IN)
        .unwrap();
    drop(dev);
    mmio_write(&mut m.mmio, 0x30, 2);
    assert_ne!(m.mmio.save(), saved_mmio);

    let (mmio_state, dev_state): (MmioTransportState, VsockState) =
        serde_json::from_str(&json).unwrap();
    let dev = Arc::new(Mutex::new(
        Vsock::restore(PairBackend::default(), &dev_state).unwrap(),
    ));
    let args = MmioTransportArgs {
        mem: m.mem.clone(),
        device: dev.clone(),
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    let mmio = MmioTransport::restore(args, &mmio_state).unwrap();
    assert_eq!(mmio.save(), saved_mmio);
    assert_eq!(dev.lock().unwrap().save(), saved_dev);
    assert!(
        dev.lock().unwrap().is_active(),
        "the restore re-activated the device"
    );
    // Connections are not restored: the guest hears of the reset.
    m.drv.recv_events();
    dev.lock().unwrap().reset_transport().unwrap();
    assert_eq!(m.drv.recv_events(), [0]);
}

#[test]
fn restore_rejects_invalid_state() {
    let (m, _host) = busy_machine();
    assert!(matches!(
        Vsock::restore(PairBackend::default(), &VsockState { guest_cid: 2 }),
        Err(VsockError::InvalidCid(2))
    ));
    let mut bad = m.mmio.save();
    bad.queues[0].size = 100;
    let dev = Arc::new(Mutex::new(
        Vsock::new(GUEST_CID, PairBackend::default()).unwrap(),
    ));
    let args = MmioTransportArgs {
        mem: m.mem.clone(),
        device: dev,
        interrupt: Arc::new(CountingInterrupt::default()),
    };
    assert!(matches!(
        MmioTransport::restore(args, &bad),
        Err(MmioError::Queue { index: 0, .. })
    ));
}
