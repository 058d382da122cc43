//! The transport against a recording device: the Linux probe sequence,
//! every negotiation rule, and garbage from a hostile driver.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_mmio as r;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::testing::{
    guest_memory, linux_probe, mmio_read, mmio_write, CountingInterrupt, QueueDriver,
};
use crate::virtio::interrupt::{INT_CONFIG, INT_USED_RING};
use crate::virtio::read_config_bytes;

const MAX_SIZES: [u16; 2] = [256, 16];
const DEVICE_BIT: u64 = 1 << 3;
const OFFERED: u64 = VIRTIO_F_VERSION_1 | DEVICE_BIT;
const CONFIG: [u8; 12] = *b"crvm-config!";

struct Recorder {
    events: Vec<EventFd>,
    config: [u8; 12],
    activated: Option<(Vec<u16>, u64)>,
    interrupt: Option<Arc<InterruptStatus>>,
    queues: Vec<Queue>,
    resets: usize,
    refuse: bool,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            events: MAX_SIZES
                .iter()
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            config: CONFIG,
            activated: None,
            interrupt: None,
            queues: Vec::new(),
            resets: 0,
            refuse: false,
        }
    }
}

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        42
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &MAX_SIZES
    }

    fn features(&self) -> u64 {
        OFFERED
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let range = start..start.saturating_add(data.len());
        if let Some(dst) = self.config.get_mut(range) {
            dst.copy_from_slice(data);
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }

    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<InterruptStatus>,
        features: u64,
    ) -> Result<(), VirtioError> {
        if self.refuse {
            return Err(VirtioError::QueueNotReady(1));
        }
        if self.activated.is_some() {
            return Err(VirtioError::AlreadyActive);
        }
        self.activated = Some((queues.iter().map(|q| q.size()).collect(), features));
        self.interrupt = Some(interrupt);
        self.queues = queues;
        Ok(())
    }

    fn active_queues(&self) -> Option<&[Queue]> {
        self.activated.as_ref().map(|_| self.queues.as_slice())
    }

    fn reset(&mut self) {
        self.activated = None;
        self.queues.clear();
        self.resets += 1;
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    dev: Arc<Mutex<Recorder>>,
    mmio: MmioTransport,
    irq: Arc<CountingInterrupt>,
    rings: Vec<QueueDriver>,
}

fn rig() -> Rig {
    let mem = guest_memory(1 << 20);
    let dev = Arc::new(Mutex::new(Recorder::new()));
    let irq = Arc::new(CountingInterrupt::default());
    let args = MmioTransportArgs {
        mem: mem.clone(),
        device: dev.clone(),
        interrupt: irq.clone(),
    };
    let mmio = MmioTransport::new(args).unwrap();
    let rings = vec![
        QueueDriver::new(&mem, 0x1000, 128),
        QueueDriver::new(&mem, 0x8000, 16),
    ];
    Rig {
        mem,
        dev,
        mmio,
        irq,
        rings,
    }
}

impl Rig {
    fn probe(&mut self, accept: u64) -> u32 {
        let rings: Vec<&QueueDriver> = self.rings.iter().collect();
        linux_probe(&mut self.mmio, accept, &rings)
    }

    fn read(&mut self, reg: u32) -> u32 {
        mmio_read(&mut self.mmio, u64::from(reg))
    }

    fn write(&mut self, reg: u32, value: u32) {
        mmio_write(&mut self.mmio, u64::from(reg), value)
    }

    fn activated(&self) -> Option<(Vec<u16>, u64)> {
        self.dev.lock().unwrap().activated.clone()
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    fn negotiate(&mut self) {
        self.write(r::VIRTIO_MMIO_STATUS, 0);
        self.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
        self.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(r::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.write(r::VIRTIO_MMIO_DRIVER_FEATURES, 1);
        self.write(
            r::VIRTIO_MMIO_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(self.read(r::VIRTIO_MMIO_STATUS) & status::FEATURES_OK, 0);
    }
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

#[test]
fn linux_probe_activates_the_device() {
    let mut rig = rig();
    assert_eq!(rig.read(r::VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rig.read(r::VIRTIO_MMIO_VERSION), 2);
    assert_eq!(rig.read(r::VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(rig.read(r::VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    assert_eq!(rig.probe(u64::MAX), ALL_OK);
    assert_eq!(rig.activated(), Some((vec![128, 16], OFFERED)));
    // Read back what the driver configured.
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 1);
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no third queue");
    assert_eq!(
        rig.read(r::VIRTIO_MMIO_SHM_LEN_LOW),
        u32::MAX,
        "no shared memory"
    );
}

#[test]
fn config_space_interrupts_and_notifications() {
    let mut rig = rig();
    let mut word = [0u8; 4];
    rig.mmio.read(0x100 + 5, &mut word);
    assert_eq!(&word, b"conf");
    let mut byte = [0u8; 1];
    rig.mmio.read(0x100 + 11, &mut byte);
    assert_eq!(&byte, b"!");
    rig.mmio.read(0x100 + 10, &mut word);
    assert_eq!(word, [0; 4], "past the end reads zero");
    rig.mmio.write(0x100, b"CR");
    rig.mmio.read(0x100, &mut word);
    assert_eq!(&word, b"CRvm");

    // Notifications only reach a started device.
    rig.write(r::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(rig.dev.lock().unwrap().events[0].read().is_err());
    rig.probe(u64::MAX);
    rig.write(r::VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    assert_eq!(rig.dev.lock().unwrap().events[1].read().unwrap(), 1);
    rig.write(r::VIRTIO_MMIO_QUEUE_NOTIFY, 7);

    // The device interrupts; the driver reads and acknowledges.
    let interrupt = rig.dev.lock().unwrap().interrupt.clone().unwrap();
    interrupt.signal_used_queue().unwrap();
    interrupt.signal_config_change().unwrap();
    assert_eq!(rig.irq.count(), 2);
    assert_eq!(
        rig.read(r::VIRTIO_MMIO_INTERRUPT_STATUS),
        INT_USED_RING | INT_CONFIG
    );
    assert_eq!(rig.read(r::VIRTIO_MMIO_CONFIG_GENERATION), 1);
    rig.write(r::VIRTIO_MMIO_INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(rig.read(r::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
}

#[test]
fn features_ok_needs_version_1_and_offered_features_only() {
    let mut rig = rig();
    // A legacy driver that does not accept VERSION_1.
    let s = rig.probe(DEVICE_BIT);
    assert_eq!(s & status::FEATURES_OK, 0);
    assert_eq!(rig.activated(), None);
    // A driver that claims a feature the device never offered.
    rig.write(r::VIRTIO_MMIO_STATUS, 0);
    rig.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
    rig.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE | status::DRIVER);
    rig.write(r::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    rig.write(r::VIRTIO_MMIO_DRIVER_FEATURES, 1 | 0x8000);
    rig.write(
        r::VIRTIO_MMIO_STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS) & status::FEATURES_OK, 0);
    // The features the device offers, accepted in full.
    assert_eq!(rig.probe(u64::MAX), ALL_OK);
}

#[test]
fn invalid_queue_values_are_ignored() {
    let mut rig = rig();
    rig.negotiate();
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 1);
    for size in [0, 3, 24, 32, 1 << 16] {
        rig.write(r::VIRTIO_MMIO_QUEUE_NUM, size);
    }
    assert_eq!(rig.mmio.queues[1].size(), 16, "max size kept");
    rig.write(r::VIRTIO_MMIO_QUEUE_NUM, 8);
    assert_eq!(rig.mmio.queues[1].size(), 8);
    // Misaligned addresses are refused.
    rig.write(r::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1008);
    rig.write(r::VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2001);
    rig.write(r::VIRTIO_MMIO_QUEUE_USED_LOW, 0x3002);
    assert_eq!(rig.mmio.queues[1].desc_table(), 0);
    // Rings outside guest memory: the queue does not become ready.
    rig.write(r::VIRTIO_MMIO_QUEUE_USED_HIGH, 1);
    rig.write(r::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 0);
    rig.write(r::VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
    rig.write(r::VIRTIO_MMIO_QUEUE_USED_LOW, 0xffff0);
    rig.write(r::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(
        rig.read(r::VIRTIO_MMIO_QUEUE_READY),
        0,
        "used ring runs past the end"
    );
    rig.write(r::VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
    rig.write(r::VIRTIO_MMIO_QUEUE_READY, 2);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 0);
    rig.write(r::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 1);
    // No address change while ready.
    rig.write(r::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x4000);
    assert_eq!(rig.mmio.queues[1].desc_table(), 0);
}

#[test]
fn writes_in_the_wrong_phase_are_ignored() {
    let mut rig = rig();
    // Queue set-up before FEATURES_OK.
    rig.write(r::VIRTIO_MMIO_QUEUE_NUM, 64);
    assert_eq!(rig.mmio.queues[0].size(), 256);
    // DRIVER_OK, FEATURES_OK or DRIVER without their prerequisites.
    for s in [status::DRIVER_OK, status::FEATURES_OK, status::DRIVER] {
        rig.write(r::VIRTIO_MMIO_STATUS, s);
        assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS), 0);
    }
    // Features before DRIVER.
    rig.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
    rig.write(r::VIRTIO_MMIO_DRIVER_FEATURES, 0xffff);
    assert_eq!(rig.mmio.driver_features, 0);
    rig.negotiate();
    // Features after FEATURES_OK, clearing a status bit, unknown bits.
    rig.write(r::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    rig.write(r::VIRTIO_MMIO_DRIVER_FEATURES, 0xffff);
    assert_eq!(rig.mmio.driver_features, VIRTIO_F_VERSION_1);
    rig.write(r::VIRTIO_MMIO_STATUS, status::ACKNOWLEDGE);
    rig.write(r::VIRTIO_MMIO_STATUS, 0x1f | 0x20);
    let expected = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS), expected);
    // The driver cannot claim DEVICE_NEEDS_RESET.
    rig.write(r::VIRTIO_MMIO_STATUS, expected | status::DEVICE_NEEDS_RESET);
    assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS), expected);
    // After DRIVER_OK, the queues are frozen.
    let rings: Vec<&QueueDriver> = rig.rings.iter().collect();
    linux_probe(&mut rig.mmio, u64::MAX, &rings);
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 0);
    rig.write(r::VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 1);
    // FAILED is always accepted.
    rig.write(r::VIRTIO_MMIO_STATUS, ALL_OK | status::FAILED);
    assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS), ALL_OK | status::FAILED);
}

#[test]
fn a_device_that_cannot_start_needs_reset() {
    let mut rig = rig();
    rig.dev.lock().unwrap().refuse = true;
    let s = rig.probe(u64::MAX);
    assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(rig.read(r::VIRTIO_MMIO_INTERRUPT_STATUS) & INT_CONFIG, 0);
    assert_eq!(rig.irq.count(), 1);
    // A notify does not reach a device that is not running.
    rig.write(r::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(rig.dev.lock().unwrap().events[0].read().is_err());
    // Reset recovers.
    rig.dev.lock().unwrap().refuse = false;
    assert_eq!(rig.probe(u64::MAX), ALL_OK);
    assert_eq!(
        rig.read(r::VIRTIO_MMIO_INTERRUPT_STATUS),
        0,
        "reset cleared it"
    );
}

#[test]
fn reset_returns_to_the_initial_state() {
    let mut rig = rig();
    rig.probe(u64::MAX);
    rig.write(r::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(rig.read(r::VIRTIO_MMIO_STATUS), 0);
    assert_eq!(rig.activated(), None);
    assert!(
        rig.dev.lock().unwrap().resets >= 2,
        "the probe resets first, then ours"
    );
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(rig.read(r::VIRTIO_MMIO_QUEUE_READY), 0);
    assert_eq!(rig.mmio.queues[0].size(), 256);
    assert_eq!(rig.mmio.driver_features, 0);
    assert_eq!(rig.probe(u64::MAX), ALL_OK);
}

#[test]
fn garbage_accesses_never_panic() {
    let mut rig = rig();
    rig.probe(u64::MAX);
    // A deterministic stream of random offsets, sizes and values.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let r = next();
        let offset = match r % 4 {
            0 => r >> 32,
            1 => (r >> 8) % 0x200,
            2 => ((r >> 8) % 0x40) * 4,
            _ => u64::MAX - (r >> 60),
        };
        let len = [0, 1, 2, 3, 4, 5, 8, 16][(r >> 4) as usize % 8];
        let mut buf = vec![0u8; len];
        if r & 1 == 0 {
            rig.mmio.read(offset, &mut buf);
        } else {
            buf.iter_mut().for_each(|b| *b = next() as u8);
            rig.mmio.write(offset, &buf);
        }
    }
    // Whatever state that left, a reset and a new probe work.
    assert_eq!(rig.probe(u64::MAX), ALL_OK);
}

#[test]
fn save_mutate_restore_compare() {
    let mut rig = rig();
    rig.probe(u64::MAX);
    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 1);
    let interrupt = rig.dev.lock().unwrap().interrupt.clone().unwrap();
    interrupt.signal_config_change().unwrap();
    rig.dev.lock().unwrap().queues[0].set_next_avail(7);
    let saved = rig.mmio.save();
    assert_eq!(
        saved.queues[0].next_avail, 7,
        "the device's progress is saved"
    );
    let json = serde_json::to_string(&saved).unwrap();

    rig.write(r::VIRTIO_MMIO_QUEUE_SEL, 0);
    rig.write(r::VIRTIO_MMIO_INTERRUPT_ACK, INT_CONFIG);
    assert_ne!(rig.mmio.save(), saved);

    let back: MmioTransportState = serde_json::from_str(&json).unwrap();
    let dev = Arc::new(Mutex::new(Recorder::new()));
    let irq = Arc::new(CountingInterrupt::default());
    let args = MmioTransportArgs {
        mem: rig.mem.clone(),
        device: dev.clone(),
        interrupt: irq.clone(),
    };
    let restored = MmioTransport::restore(args, &back).unwrap();
    assert_eq!(restored.save(), saved);
    assert_eq!(
        dev.lock().unwrap().activated,
        Some((vec![128, 16], OFFERED))
    );
    assert_eq!(irq.count(), 1, "the pending interrupt is raised again");
}

#[test]
fn restore_rejects_invalid_state() {
    let mut rig = rig();
    rig.probe(u64::MAX);
    let good = rig.mmio.save();
    let restore = |state: &MmioTransportState| {
        let args = MmioTransportArgs {
            mem: rig.mem.clone(),
            device: Arc::new(Mutex::new(Recorder::new())),
            interrupt: Arc::new(CountingInterrupt::default()),
        };
        MmioTransport::restore(args, state).map(|_| ())
    };
    let mut s = good.clone();
    s.queues[0].size = 96;
    assert!(matches!(
        restore(&s),
        Err(MmioError::Queue { index: 0, .. })
    ));
    let mut s = good.clone();
    s.queues[1].max_size = 32;
    assert!(matches!(
        restore(&s),
        Err(MmioError::Queue { index: 1, .. })
    ));
    let mut s = good.clone();
    s.queues[1].desc_table = 1 << 40;
    assert!(matches!(
        restore(&s),
        Err(MmioError::Queue { index: 1, .. })
    ));
    let mut s = good.clone();
    s.queues.pop();
    assert!(matches!(
        restore(&s),
        Err(MmioError::QueueCount {
            saved: 1,
            device: 2
        })
    ));
    let s = MmioTransportState {
        status: status::DRIVER_OK,
        ..good.clone()
    };
    assert!(matches!(restore(&s), Err(MmioError::Status(4))));
    let s = MmioTransportState {
        driver_features: 1 << 20,
        ..good.clone()
    };
    assert!(matches!(restore(&s), Err(MmioError::Features { .. })));
    assert!(restore(&good).is_ok());
}
