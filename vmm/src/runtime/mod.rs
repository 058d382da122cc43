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
mod devices;
pub mod snapshot;

pub use cmdline::kernel_cmdline;
pub use devices::{DeviceStates, VsockStates};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crvmm_devices::GuestMemoryMmap;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

use crate::api::{ApiRequest, ApiResponse, ApiServer, RunState};
use crate::arch::x86_64::cpuid::CpuidPolicy;
use crate::builder::{Boot, BuildError, MicroVm, VmSpec};
use crate::loader::ElfEntry;
use crate::vcpus::ExitReason;
use crate::vstate::memory::LoadMode;
use control::{Control, Pending};
use devices::Devices;
use snapshot::{After, SnapshotError, SnapshotSummary};

pub(crate) type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

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
    /// Record dirty pages, so snapshots after the first can be diffs.
    pub track_dirty: bool,
}

impl VmmConfig {
    /// A 256 MiB, 1-vCPU VM booting `kernel` with a vsock device, its
    /// serial log, vsock socket and API socket in `dir`, and the quirks of
    /// this host.
    pub fn new(kernel: impl Into<PathBuf>, dir: &Path) -> VmmConfig {
        VmmConfig {
            mem_mib: 256,
            vcpus: 1,
            kernel: kernel.into(),
            initrd: None,
            extra_cmdline: String::new(),
            elf_entry: ElfEntry::Linux64,
            serial_log: dir.join("serial.log"),
            console: false,
            vsock: Some(VsockConfig {
                uds_path: dir.join("vsock.sock"),
                guest_cid: 3,
            }),
            api_socket: Some(dir.join("api.sock")),
            nested_pvm: crate::host::HostKvm::probe().nested_pvm,
            payload: None,
            track_dirty: false,
        }
    }
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
    /// Taking or loading a snapshot failed.
    #[error("snapshot failed")]
    Snapshot(#[from] SnapshotError),
}

/// A built VM with its devices and event loop.
pub struct Vmm {
    em: EventManager<Subscriber>,
    pending: Arc<Mutex<Pending>>,
    devices: Devices,
    api: Option<ApiServer>,
    state: RunState,
    start_paused: bool,
    /// The last snapshot taken, the parent of the next diff.
    last_snapshot: Option<PathBuf>,
    config: VmmConfig,
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
            track_dirty: config.track_dirty,
        };
        let vm = MicroVm::create(&spec)?;
        Self::assemble(vm, config, None)
    }

    /// Brings back the VM saved in snapshot directory `dir`. `config` gives
    /// the host side (serial log, vsock socket, API socket, console); its
    /// guest fields (kernel, memory size, vCPUs) are ignored in favour of
    /// the snapshot's. With `paused`, the vCPUs wait for a resume.
    pub fn restore(
        dir: &Path,
        config: &VmmConfig,
        mode: LoadMode,
        paused: bool,
    ) -> Result<Vmm, VmmError> {
        let (snap, memory) = snapshot::load(dir, mode)?;
        let vm = MicroVm::restore(&snap.machine, memory, config.track_dirty)?;
        let config = VmmConfig {
            mem_mib: snap.mem_mib,
            vcpus: snap.vcpus,
            nested_pvm: snap.nested_pvm,
            ..config.clone()
        };
        let mut vmm = Self::assemble(vm, &config, Some(&snap.devices))?;
        vmm.start_paused = paused;
        Ok(vmm)
    }

    fn assemble(
        mut vm: MicroVm,
        config: &VmmConfig,
        states: Option<&DeviceStates>,
    ) -> Result<Vmm, VmmError> {
        let mut em =
            EventManager::<Subscriber>::new().map_err(|e| VmmError::EventLoop(e.to_string()))?;
        let devices = Devices::attach(&mut vm, &mut em, config, states)?;
        let api = match &config.api_socket {
            Some(path) => Some(ApiServer::start(path)?),
            None => None,
        };
        let clone = |e: &vmm_sys_util::eventfd::EventFd| e.try_clone().map_err(VmmError::EventFd);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let control = Control::new(
            Arc::clone(&pending),
            clone(vm.exit_event())?,
            clone(&devices.reset)?,
            api.as_ref().map(|a| clone(a.wake_fd())).transpose()?,
            clone(&devices.drained)?,
            config.console,
        );
        em.add_subscriber(Arc::new(Mutex::new(control)));
        Ok(Vmm {
            em,
            pending,
            devices,
            api,
            state: RunState::Created,
            start_paused: false,
            last_snapshot: None,
            config: config.clone(),
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
        self.devices.vsock_status()
    }

    /// Starts the vCPUs and serves events until the VM ends; returns why.
    pub fn run(&mut self) -> Result<ExitReason, VmmError> {
        self.vm.start()?;
        self.state = RunState::Running;
        if self.start_paused {
            self.vm.pause()?;
            self.state = RunState::Paused;
        }
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

    /// Pauses the VM (if it runs), writes a snapshot into `dir` (with
    /// `diff`, only the pages changed since this VM's previous snapshot),
    /// and then resumes, stays paused or ends as `after` says.
    pub fn snapshot(
        &mut self,
        dir: &Path,
        after: After,
        diff: bool,
    ) -> Result<SnapshotSummary, VmmError> {
        let parent = match (diff, &self.last_snapshot) {
            (false, _) => None,
            (true, Some(parent)) if self.vm.tracks_dirty() => Some(parent.clone()),
            (true, _) => {
                return Err(SnapshotError::Inconsistent(
                    "a diff snapshot needs dirty tracking (crvmm run --track-dirty) and an \
                     earlier snapshot of this VM to diff against"
                        .into(),
                )
                .into())
            }
        };
        let was_paused = self.state == RunState::Paused;
        let started = std::time::Instant::now();
        if !was_paused {
            self.vm.pause()?;
        }
        let result = snapshot::create(
            dir,
            &self.vm,
            &self.devices,
            &self.config,
            parent.as_deref(),
        );
        // A failed snapshot may have cleared the dirty record: the next diff
        // would miss pages, so the next snapshot must be full.
        self.last_snapshot = match &result {
            Ok(_) => Some(std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())),
            Err(_) => None,
        };
        let resume = match (&result, after) {
            (Err(_), _) | (Ok(_), After::Resume) => !was_paused,
            (Ok(_), After::Pause | After::Exit) => false,
        };
        if resume {
            self.vm.resume()?;
        }
        self.state = if resume {
            RunState::Running
        } else {
            RunState::Paused
        };
        let mut summary = result?;
        summary.downtime = if resume {
            started.elapsed()
        } else {
            summary.total
        };
        Ok(summary)
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
                let response = self.serve(&request.request);
                let stop = matches!(request.request, ApiRequest::Shutdown)
                    || matches!(
                        (&request.request, &response),
                        (
                            ApiRequest::SnapshotCreate {
                                after: After::Exit,
                                ..
                            },
                            ApiResponse::Snapshot { .. }
                        )
                    );
                request.respond(response);
                if stop {
                    return Ok(Some(ExitReason::Stopped));
                }
            }
        }
        Ok(None)
    }

    fn serve(&mut self, request: &ApiRequest) -> ApiResponse {
        if let ApiRequest::SnapshotCreate { dir, after, diff } = request {
            return match self.snapshot(dir, *after, *diff) {
                Ok(s) => ApiResponse::Snapshot {
                    bytes: s.bytes,
                    downtime_ms: s.downtime.as_millis() as u64,
                    total_ms: s.total.as_millis() as u64,
                },
                Err(e) => ApiResponse::Error {
                    message: crate::error_chain(&e),
                },
            };
        }
        let result = match request {
            ApiRequest::Status | ApiRequest::Shutdown | ApiRequest::SnapshotCreate { .. } => Ok(()),
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
                vcpus: self.config.vcpus,
                mem_mib: self.config.mem_mib.into(),
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
        let mut serial = self.devices.serial.lock().expect("serial lock");
        let mut p = self.pending.lock().expect("pending lock");
        p.backlog.extend(input);
        let waiting: Vec<u8> = p.backlog.iter().copied().collect();
        if let Ok(n) = serial.enqueue_input(&waiting) {
            p.backlog.drain(..n);
        }
    }
}
