//! The VM's devices, created fresh or from a snapshot's states, wired to
//! irqfds, the buses and the event loop.

use std::fs::File;
use std::sync::{Arc, Mutex};

use crvmm_devices::i8042::{I8042State, I8042, I8042_BASE, I8042_PORTS};
use crvmm_devices::serial::{Serial, SerialArgs, SerialState, COM1_BASE, SERIAL_PORTS};
use crvmm_devices::virtio::mmio::{MmioTransport, MmioTransportArgs, MmioTransportState, MMIO_LEN};
use crvmm_devices::virtio::vsock::{UnixBackend, Vsock, VsockEventHandler, VsockState};
use event_manager::{EventManager, SubscriberOps};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::console::ConsoleOut;
use super::{Subscriber, VmmConfig, VmmError, VsockConfig};
use crate::arch::x86_64::layout::{VIRTIO_IRQ_START, VIRTIO_MMIO_START};
use crate::builder::{BuildError, MicroVm};
use crate::irq::IrqLine;

/// COM1's IRQ.
const SERIAL_IRQ: u32 = 4;
/// The keyboard controller's IRQ.
const I8042_IRQ: u32 = 1;

/// Every device's saved state.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceStates {
    /// The UART.
    pub serial: SerialState,
    /// The keyboard controller.
    pub i8042: I8042State,
    /// The vsock device and its transport, when the VM has one.
    pub vsock: Option<VsockStates>,
}

/// The vsock device's saved state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VsockStates {
    /// The device (its guest CID).
    pub device: VsockState,
    /// The virtio-mmio transport and its queues.
    pub transport: MmioTransportState,
}

type VsockDevice = Arc<Mutex<Vsock<UnixBackend>>>;

/// Handles on the live devices.
pub struct Devices {
    pub serial: Arc<Mutex<Serial<ConsoleOut>>>,
    i8042: Arc<Mutex<I8042>>,
    vsock: Option<(VsockDevice, Arc<Mutex<MmioTransport>>)>,
    /// Raised when the guest resets through the i8042.
    pub reset: EventFd,
    /// Raised when the UART has taken all queued console input.
    pub drained: EventFd,
}

impl Devices {
    /// Creates the devices (from `states` when restoring) and puts them on
    /// `vm`'s buses and `em`.
    pub fn attach(
        vm: &mut MicroVm,
        em: &mut EventManager<Subscriber>,
        config: &VmmConfig,
        states: Option<&DeviceStates>,
    ) -> Result<Devices, VmmError> {
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd);
        let clone = |e: &EventFd| e.try_clone().map_err(VmmError::EventFd);
        let log = File::create(&config.serial_log)
            .map_err(|e| VmmError::SerialLog(config.serial_log.clone(), e))?;
        let drained = evt()?;
        let args = SerialArgs {
            interrupt: Arc::new(irq(vm, SERIAL_IRQ)?),
            out: ConsoleOut::new(log, config.console),
            input_drained: Some(clone(&drained)?),
        };
        let serial = match states {
            Some(s) => Serial::restore(args, &s.serial).map_err(|e| device("serial", e))?,
            None => Serial::new(args),
        };
        let serial = Arc::new(Mutex::new(serial));
        vm.pio_bus_mut()
            .insert(serial.clone(), COM1_BASE, SERIAL_PORTS)
            .map_err(BuildError::from)?;

        let reset = evt()?;
        let kbd_irq = Arc::new(irq(vm, I8042_IRQ)?);
        let i8042 = match states {
            Some(s) => {
                I8042::restore(clone(&reset)?, kbd_irq, &s.i8042).map_err(|e| device("i8042", e))?
            }
            None => I8042::new(clone(&reset)?, kbd_irq),
        };
        let i8042 = Arc::new(Mutex::new(i8042));
        vm.pio_bus_mut()
            .insert(i8042.clone(), I8042_BASE, I8042_PORTS)
            .map_err(BuildError::from)?;

        let saved_vsock = states.and_then(|s| s.vsock.as_ref());
        let vsock = match (&config.vsock, saved_vsock) {
            (Some(v), saved) => Some(attach_vsock(vm, em, v, saved)?),
            (None, Some(_)) => {
                return Err(VmmError::Device(
                    "vsock",
                    "the snapshot has a vsock device: give the restored VM one".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(Devices {
            serial,
            i8042,
            vsock,
            reset,
            drained,
        })
    }

    /// Every device's state (the VM is paused).
    pub fn save(&self) -> DeviceStates {
        DeviceStates {
            serial: self.serial.lock().expect("serial lock").save(),
            i8042: self.i8042.lock().expect("i8042 lock").save(),
            vsock: self.vsock.as_ref().map(|(dev, transport)| {
                // One lock at a time: the transport's save locks the device
                // too, and a guard kept alive to the end of a larger
                // expression would deadlock it.
                let device = dev.lock().expect("vsock lock").save();
                let transport = transport.lock().expect("transport lock").save();
                VsockStates { device, transport }
            }),
        }
    }

    /// The vsock transport's status register.
    pub fn vsock_status(&self) -> Option<u32> {
        self.vsock
            .as_ref()
            .map(|(_, t)| t.lock().expect("transport lock").status())
    }
}

fn device(name: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> VmmError {
    VmmError::Device(name, Box::new(e))
}

pub(super) fn irq(vm: &MicroVm, gsi: u32) -> Result<IrqLine, VmmError> {
    IrqLine::new(vm.vm(), gsi).map_err(|e| VmmError::Build(BuildError::Vm(e)))
}

/// Creates (or restores) the vsock device, its transport and event handler.
/// A restored device tells the guest its transport was reset, so the
/// guest's listeners survive and connections from before the snapshot close.
fn attach_vsock(
    vm: &mut MicroVm,
    em: &mut EventManager<Subscriber>,
    config: &VsockConfig,
    saved: Option<&VsockStates>,
) -> Result<(VsockDevice, Arc<Mutex<MmioTransport>>), VmmError> {
    let backend = UnixBackend::new(&config.uds_path).map_err(|e| device("vsock", e))?;
    let dev = match saved {
        Some(s) => Vsock::restore(backend, &s.device),
        None => Vsock::new(config.guest_cid.into(), backend),
    }
    .map_err(|e| device("vsock", e))?;
    let dev = Arc::new(Mutex::new(dev));
    let args = MmioTransportArgs {
        mem: vm.memory().clone(),
        device: dev.clone(),
        interrupt: Arc::new(irq(vm, VIRTIO_IRQ_START)?),
    };
    let transport = match saved {
        Some(s) => MmioTransport::restore(args, &s.transport),
        None => MmioTransport::new(args),
    }
    .map_err(|e| device("virtio-mmio", e))?;
    if saved.is_some() && dev.lock().expect("vsock lock").is_active() {
        dev.lock()
            .expect("vsock lock")
            .reset_transport()
            .map_err(|e| device("vsock", e))?;
    }
    let transport = Arc::new(Mutex::new(transport));
    vm.mmio_bus_mut()
        .insert(transport.clone(), VIRTIO_MMIO_START, MMIO_LEN)
        .map_err(BuildError::from)?;
    let handler = VsockEventHandler::new(dev.clone()).map_err(|e| device("vsock", e))?;
    em.add_subscriber(std::sync::Arc::new(Mutex::new(handler)));
    Ok((dev, transport))
}
