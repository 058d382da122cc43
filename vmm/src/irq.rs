//! Device interrupt lines backed by KVM irqfds: a device's `trigger()`
//! writes an eventfd that KVM turns into an edge on a GSI.

use std::io;

use crvmm_devices::Interrupt;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vstate::vm::{Vm, VmError};

/// One GSI, wired to the in-kernel irqchip.
pub struct IrqLine {
    evt: EventFd,
    gsi: u32,
}

impl IrqLine {
    /// Creates an eventfd and registers it as irqfd for `gsi`.
    pub fn new(vm: &Vm, gsi: u32) -> Result<IrqLine, VmError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| {
            VmError::Irqfd(
                gsi,
                kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        vm.register_irqfd(&evt, gsi)?;
        Ok(IrqLine { evt, gsi })
    }

    /// The GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl Interrupt for IrqLine {
    fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }
}
