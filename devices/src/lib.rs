//! crvmm's device models.
//!
//! Every device core is a pure state machine: register reads and writes in,
//! guest-memory effects and interrupts out, no KVM calls. The VMM
//! (`crvmm-vmm`) routes vCPU exits to them through [`bus::Bus`] and raises
//! their interrupts through an [`Interrupt`] it implements with an irqfd;
//! tests implement it with a counter ([`testing::CountingInterrupt`]).
//!
//! - [`serial`]: the 16550 UART (vm-superio) on the port-I/O bus.
//! - [`i8042`]: the keyboard controller, enough for Linux to probe it and to
//!   reboot through it.
//! - [`virtio`]: the virtio-mmio transport and the vsock device.
//! - [`testing`]: a guest-side virtqueue driver and helpers, for the unit
//!   tests and the benchmarks.

pub mod bus;
pub mod i8042;
pub mod serial;
pub mod testing;
pub mod virtio;

use std::io;

/// Guest memory as the devices see it: anonymous or file-backed mappings
/// with a dirty bitmap, so that what devices write shows up in dirty-page
/// tracking for snapshots. The VMM must build its memory with this type.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;

/// A device's interrupt line, as the device sees it.
pub trait Interrupt: Send + Sync {
    /// Raises the line (edge-triggered: one call, one interrupt).
    fn trigger(&self) -> io::Result<()>;
}

/// A device on a port-I/O or MMIO bus.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// How many guest-caused warnings one device may still log: a guest that
/// hammers a register with garbage must not flood the host's log.
#[derive(Debug)]
pub(crate) struct WarnBudget(u32);

impl WarnBudget {
    /// Warnings a device logs before it goes quiet.
    pub(crate) const DEFAULT: u32 = 64;

    pub(crate) const fn new() -> WarnBudget {
        WarnBudget(Self::DEFAULT)
    }

    /// True while the budget lasts; says once that it ran out.
    pub(crate) fn take(&mut self) -> bool {
        match self.0 {
            0 => false,
            1 => {
                self.0 = 0;
                log::warn!("further guest errors of this device are not logged");
                true
            }
            _ => {
                self.0 -= 1;
                true
            }
        }
    }
}

impl Default for WarnBudget {
    fn default() -> Self {
        WarnBudget::new()
    }
}

/// Logs a guest-caused warning if the device's budget allows it.
macro_rules! guest_warn {
    ($budget:expr, $($arg:tt)+) => {
        if $budget.take() {
            log::warn!($($arg)+);
        }
    };
}
pub(crate) use guest_warn;

/// Shows an error with all its causes, `outer: inner: innermost`.
pub(crate) struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}
