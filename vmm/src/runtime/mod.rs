//! A running crvmm VM: the [`MicroVm`](crate::builder::MicroVm) plus its
//! devices (16550 UART, i8042, virtio-vsock over virtio-mmio), the event
//! loop that serves them, the control API, and the console.
//!
//! The loop runs on the thread that calls [`Vmm::run`]; vCPUs run on their
//! own threads. Everything that changes VM state (pause, resume, stop)
//! happens on the loop thread, in answer to an API request or an exit event.

mod cmdline;
mod console;
mod control;

pub use cmdline::kernel_cmdline;

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crvmm_devices::i8042::{I8042, I8042_BASE, I8042_PORTS};
use crvmm_devices::serial::{Serial, SerialArgs, COM1_BASE, SERIAL_PORTS};
use crvmm_devices::virtio::mmio::{MmioTransport, MmioTransportArgs, MMIO_LEN};
use crvmm_devices::virtio::vsock::{UnixBackend, Vsock, VsockEventHandler};
use crvmm_devices::GuestMemoryMmap;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::{ApiRequest, ApiResponse, ApiServer, RunState};
use crate::arch::x86_64::cpuid::CpuidPolicy;
use crate::arch::x86_64::layout::{VIRTIO_IRQ_START, VIRTIO_MMIO_START};
use crate::builder::{Boot, BuildError, MicroVm, VmSpec};
use crate::irq::IrqLine;
use crate::loader::ElfEntry;
use crate::vcpus::ExitReason;
use console::ConsoleOut;
use control::{Control, Pending};

/// COM1's IRQ.
const SERIAL_IRQ: u32 = 4;
/// The keyboard controller's IRQ.
const I8042_IRQ: u32 = 1;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The host side of the guest's vsock device.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The Unix socket host clients connect to (`CONNECT <port>`); guest
    /// connections to host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
    /// The guest's context id (3 or more).
    pub guest_cid: u32,
}

/// Everything a VM is made of.
#[derive(Debug, Clone)]
pub struct VmmConfig {
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Appended to the command line crvmm builds.
    pub extra_cmdline: String,
    /// Which vmlinux entry to use.
    pub elf_entry: ElfEntry,
    /// The serial console is always written here.
    pub serial_log: PathBuf,
    /// Also show the console on stdout and feed it from stdin.
    pub console: bool,
    /// The vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// Where to serve the control API, if anywhere.
    pub api_socket: Option<PathBuf>,
    /// Apply the nested-PVM quirks (CPUID masking, kernel parameters).
    pub nested_pvm: bool,
    /// Run this 64-bit payload instead of `kernel` (tests and probes; it
    /// ends the VM by writing an exit code to port 0xf4).
    pub payload: Option<Vec<u8>>,
}

/// Errors of building or running the VMM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Building the VM failed.
    #[error("cannot build the VM")]
    Build(#[from] BuildError),
    /// A device could not be created.
    #[error("cannot create the {0} device")]
    Device(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    /// The serial log cannot be created.
    #[error("cannot create the serial log {0}")]
    SerialLog(PathBuf, #[source] std::io::Error),
    /// The event loop failed.
    #[error("the event loop failed: {0}")]
    EventLoop(String),
    /// The control API could not start.
    #[error("cannot start the control API")]
    Api(#[from] crate::api::ApiError),
    /// An eventfd.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

/// A built VM with its devices and event loop.
pub struct Vmm {
    em: EventManager<Subscriber>,
    pending: Arc<Mutex<Pending>>,
    serial: Arc<Mutex<Serial<ConsoleOut>>>,
    vsock: Option<Arc<Mutex<MmioTransport>>>,
    api: Option<ApiServer>,
    state: RunState,
    mem_mib: u64,
    vcpus: u8,
    // Last: vCPU threads stop before the devices they use go away.
    vm: MicroVm,
}

impl Vmm {
    /// Builds the VM, its devices and the control API; nothing runs yet.
    pub fn new(config: &VmmConfig) -> Result<Vmm, VmmError> {
        let has_vsock = config.vsock.is_some();
        let boot = match &config.payload {
            Some(code) => Boot::Payload {
                code: code.clone(),
                arg: 0,
            },
            None => Boot::Linux {
                kernel: config.kernel.clone(),
                cmdline: kernel_cmdline(config.nested_pvm, has_vsock, &config.extra_cmdline),
                initrd: config.initrd.clone(),
                entry: config.elf_entry,
            },
        };
        let spec = VmSpec {
            mem_size: u64::from(config.mem_mib) << 20,
            vcpus: config.vcpus,
            boot,
            cpuid: CpuidPolicy {
                nested_pvm: config.nested_pvm,
            },
        };
        let mut vm = MicroVm::create(&spec)?;
        let mut em =
            EventManager::<Subscriber>::new().map_err(|e| VmmError::EventLoop(e.to_string()))?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd);

        let log = File::create(&config.serial_log)
            .map_err(|e| VmmError::SerialLog(config.serial_log.clone(), e))?;
        let drained = evt()?;
        let serial = Arc::new(Mutex::new(Serial::new(SerialArgs {
            interrupt: Arc::new(irq(&vm, SERIAL_IRQ)?),
            out: ConsoleOut::new(log, config.console),
            input_drained: Some(drained.try_clone().map_err(VmmError::EventFd)?),
        })));
        vm.pio_bus_mut()
            .insert(serial.clone(), COM1_BASE, SERIAL_PORTS)
            .map_err(BuildError::from)?;

        let reset = evt()?;
        let i8042 = I8042::new(
            reset.try_clone().map_err(VmmError::EventFd)?,
            Arc::new(irq(&vm, I8042_IRQ)?),
        );
        vm.pio_bus_mut()
            .insert(Arc::new(Mutex::new(i8042)), I8042_BASE, I8042_PORTS)
            .map_err(BuildError::from)?;

        let vsock = match &config.vsock {
            Some(v) => Some(add_vsock(&mut vm, &mut em, v)?),
            None => None,
        };

        let api = match &config.api_socket {
            Some(path) => Some(ApiServer::start(path)?),
            None => None,
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let control = Control::new(
            Arc::clone(&pending),
            vm.exit_event().try_clone().map_err(VmmError::EventFd)?,
            reset,
            api.as_ref()
                .map(|a| a.wake_fd().try_clone())
                .transpose()
                .map_err(VmmError::EventFd)?,
            drained,
            config.console,
        );
        em.add_subscriber(Arc::new(Mutex::new(control)));
        Ok(Vmm {
            em,
            pending,
            serial,
            vsock,
            api,
            state: RunState::Created,
            mem_mib: config.mem_mib.into(),
            vcpus: config.vcpus,
            vm,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    /// The code a payload wrote to the debug-exit port, if any.
    pub fn debug_exit_code(&self) -> Option<u32> {
        self.vm.debug_exit_code()
    }

    /// The vsock transport's device status register (0 before the guest
    /// driver touches it; DRIVER_OK is bit 2).
    pub fn vsock_driver_status(&self) -> Option<u32> {
        self.vsock
            .as_ref()
            .map(|t| t.lock().expect("transport lock").status())
    }

    /// Starts the vCPUs and serves events until the VM ends; returns why.
    pub fn run(&mut self) -> Result<ExitReason, VmmError> {
        self.vm.start()?;
        self.state = RunState::Running;
        loop {
            self.em
                .run()
                .map_err(|e| VmmError::EventLoop(e.to_string()))?;
            if let Some(reason) = self.handle_pending()? {
                self.vm.stop()?;
                self.state = RunState::Exited;
                return Ok(reason);
            }
        }
    }

    /// Acts on what the control subscriber saw; `Some` ends the loop.
    fn handle_pending(&mut self) -> Result<Option<ExitReason>, VmmError> {
        let (exit, reset, api, input, drained) = {
            let mut p = self.pending.lock().expect("pending lock");
            (
                std::mem::take(&mut p.vm_exit),
                std::mem::take(&mut p.guest_reset),
                std::mem::take(&mut p.api),
                std::mem::take(&mut p.input),
                std::mem::take(&mut p.drained),
            )
        };
        if !input.is_empty() || drained {
            self.feed_console(input);
        }
        if reset {
            return Ok(Some(ExitReason::GuestShutdown));
        }
        if exit {
            if let Some(reason) = self.vm.exit_reason() {
                return Ok(Some(reason));
            }
        }
        if api {
            while let Some(request) = self.api.as_ref().and_then(ApiServer::next_request) {
                let stop = request.request == ApiRequest::Shutdown;
                let response = self.serve(&request.request);
                request.respond(response);
                if stop {
                    return Ok(Some(ExitReason::Stopped));
                }
            }
        }
        Ok(None)
    }

    fn serve(&mut self, request: &ApiRequest) -> ApiResponse {
        let result = match request {
            ApiRequest::Status | ApiRequest::Shutdown => Ok(()),
            ApiRequest::Pause => self.vm.pause().map(|()| self.state = RunState::Paused),
            ApiRequest::Resume => self.vm.resume().map(|()| self.state = RunState::Running),
        };
        match result {
            Ok(()) => ApiResponse::Ok {
                state: if *request == ApiRequest::Shutdown {
                    RunState::Exited
                } else {
                    self.state
                },
                vcpus: self.vcpus,
                mem_mib: self.mem_mib,
                vsock_status: self.vsock_driver_status(),
            },
            Err(e) => ApiResponse::Error {
                message: crate::error_chain(&e),
            },
        }
    }

    /// Queues console input; what the UART cannot take yet waits for its
    /// drained event.
    fn feed_console(&mut self, input: Vec<u8>) {
        let mut serial = self.serial.lock().expect("serial lock");
        let mut p = self.pending.lock().expect("pending lock");
        p.backlog.extend(input);
        let waiting: Vec<u8> = p.backlog.iter().copied().collect();
        if let Ok(n) = serial.enqueue_input(&waiting) {
            p.backlog.drain(..n);
        }
    }
}

fn irq(vm: &MicroVm, gsi: u32) -> Result<IrqLine, VmmError> {
    IrqLine::new(vm.vm(), gsi).map_err(|e| VmmError::Build(BuildError::Vm(e)))
}

/// Creates the vsock device, its virtio-mmio transport and event handler.
fn add_vsock(
    vm: &mut MicroVm,
    em: &mut EventManager<Subscriber>,
    config: &VsockConfig,
) -> Result<Arc<Mutex<MmioTransport>>, VmmError> {
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| VmmError::Device("vsock", e);
    let backend = UnixBackend::new(&config.uds_path).map_err(|e| boxed(Box::new(e)))?;
    let device = Arc::new(Mutex::new(
        Vsock::new(config.guest_cid.into(), backend).map_err(|e| boxed(Box::new(e)))?,
    ));
    let transport = MmioTransport::new(MmioTransportArgs {
        mem: vm.memory().clone(),
        device: device.clone(),
        interrupt: Arc::new(irq(vm, VIRTIO_IRQ_START)?),
    })
    .map_err(|e| boxed(Box::new(e)))?;
    let transport = Arc::new(Mutex::new(transport));
    vm.mmio_bus_mut()
        .insert(transport.clone(), VIRTIO_MMIO_START, MMIO_LEN)
        .map_err(BuildError::from)?;
    let handler = VsockEventHandler::new(device).map_err(|e| boxed(Box::new(e)))?;
    em.add_subscriber(Arc::new(Mutex::new(handler)));
    Ok(transport)
}
