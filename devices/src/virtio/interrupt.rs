//! The interrupt status a virtio device shares with its transport.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::Interrupt;

/// InterruptStatus bit: a queue has new used buffers.
pub const INT_USED_RING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the configuration space changed.
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// Why the device interrupted the driver, plus the line to do it: the
/// device sets bits and raises the line, the driver reads InterruptStatus
/// and acknowledges through the transport.
pub struct InterruptStatus {
    status: AtomicU32,
    config_generation: AtomicU32,
    line: Arc<dyn Interrupt>,
}

impl InterruptStatus {
    /// Nothing pending, generation 0.
    pub fn new(line: Arc<dyn Interrupt>) -> InterruptStatus {
        InterruptStatus {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            line,
        }
    }

    /// Tells the driver that a queue has used buffers.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.status.fetch_or(INT_USED_RING, Ordering::SeqCst);
        self.line.trigger()
    }

    /// Tells the driver that the configuration space changed (or that the
    /// device needs a reset); bumps the configuration generation.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.line.trigger()
    }

    /// The pending bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The configuration generation the driver reads around config reads.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Puts back saved bits and generation, and raises the line again if
    /// anything is pending (the driver may not have seen it).
    pub(crate) fn restore(&self, status: u32, config_generation: u32) -> io::Result<()> {
        self.status
            .store(status & (INT_USED_RING | INT_CONFIG), Ordering::SeqCst);
        self.config_generation
            .store(config_generation, Ordering::SeqCst);
        if self.status() != 0 {
            self.line.trigger()?;
        }
        Ok(())
    }

    /// Clears the pending bits (device reset).
    pub(crate) fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for InterruptStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptStatus")
            .field("status", &self.status())
            .field("config_generation", &self.config_generation())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CountingInterrupt;

    #[test]
    fn bits_are_set_acked_and_counted() {
        let irq = Arc::new(CountingInterrupt::default());
        let s = InterruptStatus::new(irq.clone());
        s.signal_used_queue().unwrap();
        s.signal_config_change().unwrap();
        assert_eq!(s.status(), INT_USED_RING | INT_CONFIG);
        assert_eq!(s.config_generation(), 1);
        assert_eq!(irq.count(), 2);
        s.ack(INT_USED_RING);
        assert_eq!(s.status(), INT_CONFIG);
        s.restore(0xff, 7).unwrap();
        assert_eq!((s.status(), s.config_generation(), irq.count()), (3, 7, 3));
    }
}
