//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2).
//!
//! [`MmioTransport`] is the register file a driver sees at the device's MMIO
//! window ([`MMIO_LEN`] bytes; Linux finds it through
//! `virtio_mmio.device=4K@<base>:<irq>` on the command line). It owns the
//! status state machine, feature negotiation and queue configuration, and
//! hands a [`VirtioDevice`] its queues on DRIVER_OK.
//!
//! The guest is untrusted: accesses of the wrong size, to unknown offsets,
//! or in the wrong phase of initialisation are ignored and logged (within a
//! budget); queue sizes and ring addresses are checked before a queue may
//! become ready; a device that cannot start sets DEVICE_NEEDS_RESET. No
//! guest value can make it panic.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_bindings::virtio_mmio as reg;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::queue::{rings_in_memory, valid_size, QueueError};
use super::{status, InterruptStatus, VirtioDevice, VirtioError, VIRTIO_F_VERSION_1};
use crate::{guest_warn, BusDevice, Chain, GuestMemoryMmap, Interrupt, WarnBudget};

mod state;
#[cfg(test)]
mod tests;

pub use state::MmioTransportState;

/// Bytes of MMIO space a transport decodes.
pub const MMIO_LEN: u64 = 0x1000;
/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The transport version: 2, modern only.
pub const VERSION: u32 = 2;
/// Our vendor ID: "crvm", little-endian.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"crvm");

const CONFIG_START: u64 = reg::VIRTIO_MMIO_CONFIG as u64;
const KNOWN_STATUS: u32 = status::ACKNOWLEDGE
    | status::DRIVER
    | status::FEATURES_OK
    | status::DRIVER_OK
    | status::DEVICE_NEEDS_RESET
    | status::FAILED;
/// Status steps in the order a driver takes them, each with its prerequisite.
const STATUS_STEPS: [(u32, u32); 4] = [
    (status::ACKNOWLEDGE, 0),
    (status::DRIVER, status::ACKNOWLEDGE),
    (status::FEATURES_OK, status::DRIVER),
    (status::DRIVER_OK, status::FEATURES_OK),
];

/// Errors of transport set-up and restore.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The device offers a queue size the virtio spec does not allow.
    #[error("device offers maximum size {size} for queue {index}")]
    QueueMaxSize {
        /// Queue index.
        index: usize,
        /// Offered maximum.
        size: u16,
    },
    /// The device has a different number of notification EventFds than queues.
    #[error("device has {queues} queues but {events} notification EventFds")]
    QueueEvents {
        /// Queues.
        queues: usize,
        /// EventFds.
        events: usize,
    },
    /// The device does not offer VIRTIO_F_VERSION_1.
    #[error("device does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    /// Duplicating a queue's notification EventFd failed.
    #[error("clone the notification EventFd of queue {index}")]
    CloneEventFd {
        /// Queue index.
        index: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The saved transport has a different number of queues than the device.
    #[error("saved transport has {saved} queues, the device {device}")]
    QueueCount {
        /// Saved queues.
        saved: usize,
        /// The device's queues.
        device: usize,
    },
    /// A saved queue is invalid.
    #[error("saved queue {index}")]
    Queue {
        /// Queue index.
        index: usize,
        /// Cause.
        #[source]
        source: QueueError,
    },
    /// The saved status is not one a driver can reach.
    #[error("saved device status {0:#x} is not reachable")]
    Status(u32),
    /// The saved driver features are not a subset of what the device offers.
    #[error("saved driver features {saved:#x} are not offered ({offered:#x})")]
    Features {
        /// Saved driver features.
        saved: u64,
        /// Offered features.
        offered: u64,
    },
    /// Starting the restored device failed.
    #[error("activate the restored device")]
    Activate(#[source] VirtioError),
    /// Raising a restored pending interrupt failed.
    #[error("raise the restored interrupt")]
    Interrupt(#[source] io::Error),
}

/// What a transport is built from.
pub struct MmioTransportArgs {
    /// Guest memory, to check queue addresses and to hand to the device.
    pub mem: GuestMemoryMmap,
    /// The device behind the transport (the VMM keeps another handle for
    /// the device's event loop).
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// The transport's interrupt line.
    pub interrupt: Arc<dyn Interrupt>,
}

/// A virtio-mmio (version 2) transport.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<InterruptStatus>,
    notify: Vec<EventFd>,
    device_type: u32,
    offered: u64,
    max_sizes: Vec<u16>,
    queues: Vec<Queue>,
    status: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    warn: WarnBudget,
}

impl MmioTransport {
    /// A transport in reset state in front of `args.device`.
    pub fn new(args: MmioTransportArgs) -> Result<MmioTransport, MmioError> {
        let dev = lock(&args.device);
        let max_sizes = dev.queue_max_sizes().to_vec();
        let offered = dev.features();
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err(MmioError::NotModern);
        }
        let events = dev.queue_events();
        if events.len() != max_sizes.len() {
            return Err(MmioError::QueueEvents {
                queues: max_sizes.len(),
                events: events.len(),
            });
        }
        let notify = events
            .iter()
            .enumerate()
            .map(|(index, e)| {
                e.try_clone()
                    .map_err(|source| MmioError::CloneEventFd { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let queues = max_sizes
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|_| MmioError::QueueMaxSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let device_type = dev.device_type();
        drop(dev);
        Ok(MmioTransport {
            device: args.device,
            mem: args.mem,
            interrupt: Arc::new(InterruptStatus::new(args.interrupt)),
            notify,
            device_type,
            offered,
            max_sizes,
            queues,
            status: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            warn: WarnBudget::new(),
        })
    }

    /// The interrupt status shared with the device.
    pub fn interrupt_status(&self) -> &Arc<InterruptStatus> {
        &self.interrupt
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn running(&self) -> bool {
        self.status & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET | status::FAILED)
            == status::DRIVER_OK
    }

    /// Feature negotiation is open: DRIVER set, FEATURES_OK not yet.
    fn negotiating(&self) -> bool {
        self.status & (status::DRIVER | status::FEATURES_OK | status::FAILED) == status::DRIVER
    }

    /// Queue set-up is open: FEATURES_OK set, DRIVER_OK not yet.
    fn configuring(&self) -> bool {
        let mask =
            status::FEATURES_OK | status::DRIVER_OK | status::FAILED | status::DEVICE_NEEDS_RESET;
        self.status & mask == status::FEATURES_OK
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        usize::try_from(self.queue_select)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
    }

    fn read_register(&mut self, offset: u32) -> u32 {
        let select = self.queue_select as usize;
        let queue = self.queues.get(select);
        match offset {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            reg::VIRTIO_MMIO_VERSION => VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => self.device_type,
            reg::VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::VIRTIO_MMIO_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            reg::VIRTIO_MMIO_STATUS => self.status,
            reg::VIRTIO_MMIO_CONFIG_GENERATION => self.interrupt.config_generation(),
            // No shared memory regions: length and base all ones.
            reg::VIRTIO_MMIO_SHM_LEN_LOW
            | reg::VIRTIO_MMIO_SHM_LEN_HIGH
            | reg::VIRTIO_MMIO_SHM_BASE_LOW
            | reg::VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            _ => {
                guest_warn!(self.warn, "virtio-mmio: read of register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            reg::VIRTIO_MMIO_QUEUE_NUM
            | reg::VIRTIO_MMIO_QUEUE_READY
            | reg::VIRTIO_MMIO_QUEUE_DESC_LOW
            | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | reg::VIRTIO_MMIO_QUEUE_USED_LOW
            | reg::VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue(offset, value),
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            reg::VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => guest_warn!(
                self.warn,
                "virtio-mmio: write {value:#x} to register {offset:#x}"
            ),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if !self.negotiating() {
            guest_warn!(
                self.warn,
                "virtio-mmio: features written in status {:#x}",
                self.status
            );
            return;
        }
        let value = u64::from(value);
        match self.driver_features_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            sel => {
                if value != 0 {
                    guest_warn!(self.warn, "virtio-mmio: features {value:#x} in word {sel}");
                }
            }
        }
    }

    fn write_queue(&mut self, offset: u32, value: u32) {
        if !self.configuring() {
            guest_warn!(
                self.warn,
                "virtio-mmio: queue written in status {:#x}",
                self.status
            );
            return;
        }
        let mem = self.mem.clone();
        let select = self.queue_select;
        let Some(q) = self.selected_queue() else {
            guest_warn!(self.warn, "virtio-mmio: queue {select} does not exist");
            return;
        };
        let outcome = match offset {
            reg::VIRTIO_MMIO_QUEUE_NUM => match u16::try_from(value) {
                Ok(size) if valid_size(size, q.max_size()) => {
                    q.set_size(size);
                    Ok(())
                }
                _ => Err("invalid size"),
            },
            reg::VIRTIO_MMIO_QUEUE_READY => match value {
                0 => {
                    q.set_ready(false);
                    Ok(())
                }
                1 if rings_in_memory(q, &mem) => {
                    q.set_ready(true);
                    Ok(())
                }
                1 => Err("rings outside guest memory"),
                _ => Err("invalid ready value"),
            },
            _ if q.ready() => Err("address changed while ready"),
            _ => set_address(q, offset, value),
        };
        if let Err(why) = outcome {
            guest_warn!(
                self.warn,
                "virtio-mmio: queue {select} register {offset:#x} = {value:#x}: {why}"
            );
        }
    }

    fn notify(&mut self, value: u32) {
        let evt = usize::try_from(value).ok().and_then(|i| self.notify.get(i));
        match evt {
            Some(evt) if self.running() => {
                if let Err(e) = evt.write(1) {
                    log::error!("virtio-mmio: notify queue {value}: {e}");
                }
            }
            _ => guest_warn!(
                self.warn,
                "virtio-mmio: notify of queue {value} in status {:#x}",
                self.status
            ),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & !KNOWN_STATUS != 0 || value & self.status != self.status {
            guest_warn!(
                self.warn,
                "virtio-mmio: status {:#x} -> {value:#x}",
                self.status
            );
            return;
        }
        let new = value & !self.status;
        if new & status::FAILED != 0 {
            log::warn!(
                "virtio-mmio: the driver gave up on device type {}",
                self.device_type
            );
            self.status |= status::FAILED;
            return;
        }
        if new & status::DEVICE_NEEDS_RESET != 0 {
            guest_warn!(self.warn, "virtio-mmio: driver set DEVICE_NEEDS_RESET");
            return;
        }
        for (bit, needs) in STATUS_STEPS {
            if new & bit == 0 {
                continue;
            }
            if (needs != 0 && self.status & needs == 0)
                || self.status & (status::DEVICE_NEEDS_RESET | status::FAILED) != 0
            {
                guest_warn!(
                    self.warn,
                    "virtio-mmio: status bit {bit:#x} in status {:#x}",
                    self.status
                );
                return;
            }
            match bit {
                status::FEATURES_OK if !self.features_acceptable() => {
                    guest_warn!(
                        self.warn,
                        "virtio-mmio: features {:#x} refused",
                        self.driver_features
                    );
                    return;
                }
                status::DRIVER_OK => {
                    self.status |= bit;
                    self.activate();
                    return;
                }
                _ => self.status |= bit,
            }
        }
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & !self.offered == 0 && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues = self
            .queues
            .iter_mut()
            .map(|q| {
                q.set_event_idx(event_idx);
                copy_queue(q)
            })
            .collect::<Result<Vec<_>, _>>();
        let result = match queues {
            Ok(queues) => lock(&self.device)
                .activate(
                    self.mem.clone(),
                    queues,
                    self.interrupt.clone(),
                    self.driver_features,
                )
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            guest_warn!(
                self.warn,
                "virtio-mmio: device type {} not started: {e}",
                self.device_type
            );
            self.status |= status::DEVICE_NEEDS_RESET;
            if let Err(e) = self.interrupt.signal_config_change() {
                log::error!(
                    "virtio-mmio: raise the needs-reset interrupt: {}",
                    Chain(&e)
                );
            }
        }
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.interrupt.clear();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_START {
            if matches!(data.len(), 1 | 2 | 4 | 8) {
                lock(&self.device).read_config(offset - CONFIG_START, data);
            } else {
                guest_warn!(
                    self.warn,
                    "virtio-mmio: config read of {} bytes",
                    data.len()
                );
            }
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(word) if offset & 3 == 0 => {
                *word = self.read_register(offset as u32).to_le_bytes();
            }
            _ => guest_warn!(
                self.warn,
                "virtio-mmio: read of {} bytes at {offset:#x}",
                data.len()
            ),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            if matches!(data.len(), 1 | 2 | 4 | 8) && self.status & status::FAILED == 0 {
                lock(&self.device).write_config(offset - CONFIG_START, data);
            } else {
                guest_warn!(
                    self.warn,
                    "virtio-mmio: config write of {} bytes",
                    data.len()
                );
            }
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(word) if offset & 3 == 0 => {
                self.write_register(offset as u32, u32::from_le_bytes(word));
            }
            _ => guest_warn!(
                self.warn,
                "virtio-mmio: write of {} bytes at {offset:#x}",
                data.len()
            ),
        }
    }
}

fn lock(device: &Mutex<dyn VirtioDevice>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A second queue with the same configuration and progress.
fn copy_queue(q: &Queue) -> Result<Queue, virtio_queue::Error> {
    Queue::try_from(q.state())
}

/// Sets one half of one of a queue's ring addresses, if the result is
/// aligned as the ring needs.
fn set_address(q: &mut Queue, offset: u32, value: u32) -> Result<(), &'static str> {
    let merge = |old: u64, high: bool| {
        if high {
            (old & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        }
    };
    let result = match offset {
        reg::VIRTIO_MMIO_QUEUE_DESC_LOW | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => {
            let addr = merge(q.desc_table(), offset == reg::VIRTIO_MMIO_QUEUE_DESC_HIGH);
            q.try_set_desc_table_address(GuestAddress(addr))
        }
        reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
            let addr = merge(q.avail_ring(), offset == reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH);
            q.try_set_avail_ring_address(GuestAddress(addr))
        }
        _ => {
            let addr = merge(q.used_ring(), offset == reg::VIRTIO_MMIO_QUEUE_USED_HIGH);
            q.try_set_used_ring_address(GuestAddress(addr))
        }
    };
    result.map_err(|_| "misaligned address")
}
