//! Virtio: the MMIO transport and the devices behind it.
//!
//! A device model implements [`VirtioDevice`]; [`mmio::MmioTransport`] owns
//! the register state machine a driver talks to and hands the device its
//! queues, guest memory and [`InterruptStatus`] when the driver sets
//! DRIVER_OK. The guest notifies queues through the device's
//! [`VirtioDevice::queue_events`]: the transport raises them on a
//! QueueNotify write, or KVM does without a VM exit when the VMM registers
//! them as ioeventfds.

pub mod interrupt;
pub mod mmio;
pub mod queue;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::InterruptStatus;
pub use queue::QueueState;

use crate::GuestMemoryMmap;

/// Feature bit: the device and driver follow virtio 1.0 or later.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Device status bits a driver writes (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The driver gave up on the device.
    pub const FAILED: u32 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FAILED;
}

/// Errors of device activation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VirtioError {
    /// The transport handed over a different number of queues.
    #[error("device takes {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device has.
        expected: usize,
        /// Queues handed over.
        got: usize,
    },
    /// A queue the device needs was not made ready by the driver.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// The device is already active.
    #[error("device is already active")]
    AlreadyActive,
    /// The driver did not accept VIRTIO_F_VERSION_1.
    #[error("driver did not accept VIRTIO_F_VERSION_1")]
    LegacyDriver,
}

/// A virtio device model, as its transport sees it.
pub trait VirtioDevice: Send {
    /// The virtio device ID (19 for vsock).
    fn device_type(&self) -> u32;

    /// The largest size of each of the device's queues, in queue order.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers; must include [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;

    /// Reads configuration space at `offset`; bytes past its end read as 0
    /// (`data` arrives zeroed).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes configuration space at `offset`; the device ignores (and
    /// logs) writes outside its writable fields.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// One EventFd a queue, raised when the driver notifies that queue.
    fn queue_events(&self) -> &[EventFd];

    /// Starts the device: the driver set DRIVER_OK with `features`
    /// negotiated and `queues` configured.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<InterruptStatus>,
        features: u64,
    ) -> Result<(), VirtioError>;

    /// The queues of an active device, with their progress (for snapshots);
    /// `None` before activation.
    fn active_queues(&self) -> Option<&[Queue]>;

    /// The driver reset the device: drop the queues, the memory and all
    /// in-flight work, and wait for the next activation.
    fn reset(&mut self);
}

/// Copies configuration bytes at `offset` from `config` into `data`; leaves
/// `data` as it is when the range does not lie inside `config`.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) -> bool {
    let range = usize::try_from(offset)
        .ok()
        .and_then(|start| Some(start..start.checked_add(data.len())?));
    match range.and_then(|r| config.get(r)) {
        Some(src) => {
            data.copy_from_slice(src);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounds_checked() {
        let config = [1u8, 2, 3, 4];
        let mut two = [0u8; 2];
        assert!(read_config_bytes(&config, 2, &mut two));
        assert_eq!(two, [3, 4]);
        let mut two = [0u8; 2];
        assert!(!read_config_bytes(&config, 3, &mut two));
        assert!(!read_config_bytes(&config, u64::MAX, &mut two));
        assert_eq!(two, [0, 0]);
    }
}
