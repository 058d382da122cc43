//! The KVM engine: crvmm's own VMM (`crvmm-vmm`) running in this process.
//! The VMM's event loop runs on a thread of its own and the vCPUs on theirs;
//! other `crvmm` processes reach it through its control API socket and the
//! vsock device's Unix socket, both in the run directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crvmm_protocol::{HelloInfo, AGENT_VSOCK_PORT};
use crvmm_vmm::api::{self, ApiRequest, ApiResponse};
use crvmm_vmm::host::HostKvm;
use crvmm_vmm::loader::ElfEntry;
use crvmm_vmm::runtime::snapshot::After;
use crvmm_vmm::runtime::{Vmm, VmmConfig, VmmError, VsockConfig};
use crvmm_vmm::vcpus::ExitReason;
use crvmm_vmm::vstate::memory::LoadMode;

use crate::agent::{self, AgentEndpoint};
use crate::config::{Console, EngineKind, VmConfig};
use crate::error::EngineError;
use crate::process::log_tail;
use crate::rundir::{RunDir, VmRecord};
use crate::{kernel, AfterSnapshot, Engine, RestoreOptions, SnapshotInfo, Vm, VmExit};

/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;

/// Boots guests on this host's KVM with crvmm's own VMM.
#[derive(Debug, Clone)]
pub struct KvmEngine {
    run_base: PathBuf,
    host: HostKvm,
    track_dirty: bool,
}

impl KvmEngine {
    /// An engine whose VMs keep their run directories under `run_base`.
    /// Fails when `/dev/kvm` cannot be used at all; on a nested PVM host it
    /// works, with the quirks that host needs, but a Linux guest stops at
    /// its first system call.
    pub fn new(run_base: impl Into<PathBuf>) -> Result<KvmEngine, EngineError> {
        let host = HostKvm::probe();
        if let Err(why) = host.linux_guest_support() {
            if !host.nested_pvm {
                return Err(EngineError::Config(why));
            }
        }
        Ok(KvmEngine {
            run_base: run_base.into(),
            host,
            track_dirty: false,
        })
    }

    /// Makes its VMs record dirty pages, so that snapshots after the first
    /// can be diffs (it costs a write-protection fault per page per round).
    pub fn track_dirty(mut self, on: bool) -> KvmEngine {
        self.track_dirty = on;
        self
    }

    /// What the host is.
    pub fn host(&self) -> &HostKvm {
        &self.host
    }
}

impl Engine for KvmEngine {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, EngineError> {
        Ok(Box::new(KvmVm::boot(self, config)?))
    }

    fn restore(&self, dir: &Path, options: &RestoreOptions) -> Result<Box<dyn Vm>, EngineError> {
        Ok(Box::new(KvmVm::restore(self, dir, options)?))
    }
}

type VmmThread = JoinHandle<Result<ExitReason, VmmError>>;

/// The guest half of a VMM configuration (unused when restoring: the
/// snapshot has its own).
#[derive(Default)]
struct GuestSide {
    mem_mib: u32,
    vcpus: u8,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    extra_cmdline: String,
    /// The vsock host socket, when not in the run directory.
    vsock_uds: Option<PathBuf>,
}

/// A VM run by crvmm's VMM in this process.
pub struct KvmVm {
    name: String,
    thread: Option<VmmThread>,
    api_socket: PathBuf,
    agent: AgentEndpoint,
    serial_log: PathBuf,
    exit: Option<VmExit>,
    run_dir: RunDir,
}

impl KvmVm {
    fn boot(engine: &KvmEngine, config: &VmConfig) -> Result<KvmVm, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        kernel::probe(&config.kernel)?;
        if let Some(initrd) = &config.initrd {
            std::fs::File::open(initrd).map_err(|source| EngineError::Initrd {
                path: initrd.clone(),
                source,
            })?;
        }
        let guest = GuestSide {
            mem_mib: config.mem_mib,
            vcpus: config.vcpus,
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            extra_cmdline: config.extra_cmdline.clone(),
            vsock_uds: None,
        };
        Self::launch(engine, &config.name, config.console, guest, Vmm::new)
    }

    fn restore(
        engine: &KvmEngine,
        dir: &Path,
        options: &RestoreOptions,
    ) -> Result<KvmVm, EngineError> {
        crate::rundir::validate_name(&options.name)?;
        // Check the state file here, so a broken snapshot fails before any
        // thread or run directory exists.
        crvmm_vmm::runtime::snapshot::read_state(dir)
            .map_err(|e| EngineError::Config(crvmm_vmm::error_chain(&e)))?;
        let dir = dir.to_owned();
        let paused = options.paused;
        Self::launch(
            engine,
            &options.name,
            options.console,
            GuestSide::default(),
            move |c| Vmm::restore(&dir, c, LoadMode::MapPrivate, paused),
        )
    }

    /// Creates the run directory, builds the VMM with `make` on its own
    /// thread (its event loop lives there), and writes the VM record.
    fn launch(
        engine: &KvmEngine,
        name: &str,
        console: Console,
        guest: GuestSide,
        make: impl FnOnce(&VmmConfig) -> Result<Vmm, VmmError> + Send + 'static,
    ) -> Result<KvmVm, EngineError> {
        let run_dir = RunDir::create(&engine.run_base, name)?;
        let uds_path = guest
            .vsock_uds
            .clone()
            .unwrap_or_else(|| run_dir.join("vsock.sock"));
        let api_socket = run_dir.join("api.sock");
        let serial_log = run_dir.join("serial.log");
        let vmm_config = VmmConfig {
            mem_mib: guest.mem_mib,
            vcpus: guest.vcpus,
            kernel: guest.kernel,
            initrd: guest.initrd,
            extra_cmdline: guest.extra_cmdline,
            elf_entry: ElfEntry::Linux64,
            serial_log: serial_log.clone(),
            console: console == Console::Terminal,
            vsock: Some(VsockConfig {
                uds_path: uds_path.clone(),
                guest_cid: GUEST_CID,
            }),
            api_socket: Some(api_socket.clone()),
            nested_pvm: engine.host.nested_pvm,
            payload: None,
            track_dirty: engine.track_dirty,
        };
        let (built_tx, built_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("vmm-{name}"))
            .spawn(move || {
                let mut vmm = match make(&vmm_config) {
                    Ok(vmm) => {
                        let _ = built_tx.send(Ok(()));
                        vmm
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(crvmm_vmm::error_chain(&e)));
                        return Err(e);
                    }
                };
                vmm.run()
            })
            .map_err(|source| EngineError::Spawn {
                program: "the VMM thread".into(),
                source,
            })?;
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                let _ = thread.join();
                return Err(EngineError::Config(reason));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EngineError::Config(
                    "the VMM thread died while building".into(),
                ));
            }
        }
        let agent = AgentEndpoint::Vsock {
            uds_path,
            port: AGENT_VSOCK_PORT,
        };
        let vm = KvmVm {
            name: name.to_owned(),
            thread: Some(thread),
            api_socket,
            agent,
            serial_log,
            exit: None,
            run_dir,
        };
        vm.run_dir.write_record(&VmRecord {
            name: vm.name.clone(),
            engine: EngineKind::Kvm,
            owner_pid: std::process::id(),
            vmm_pid: std::process::id(),
            agent: vm.agent.clone(),
            serial_log: vm.serial_log.clone(),
            control_socket: vm.api_socket.clone(),
        })?;
        Ok(vm)
    }

    fn api(&self, request: ApiRequest) -> Result<(), EngineError> {
        control(&self.api_socket, &request)
    }
}

/// Asks the VMM behind `socket` for a snapshot into `dir`.
pub(crate) fn snapshot_via_api(
    socket: &Path,
    dir: &Path,
    after: AfterSnapshot,
    diff: bool,
) -> Result<SnapshotInfo, EngineError> {
    let after = After::from(after);
    // The VMM writes relative to its own working directory: send it ours.
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let request = ApiRequest::SnapshotCreate {
        dir: dir.clone(),
        after,
        diff,
    };
    let fail = |reason: String| EngineError::State {
        operation: "snapshot the VM",
        reason,
    };
    match api::call(socket, &request, Duration::from_secs(600)) {
        Ok(ApiResponse::Snapshot {
            bytes,
            downtime_ms,
            total_ms,
        }) => Ok(SnapshotInfo {
            dir,
            bytes,
            downtime: Duration::from_millis(downtime_ms),
            total: Duration::from_millis(total_ms),
        }),
        Ok(ApiResponse::Error { message }) => Err(fail(message)),
        Ok(other) => Err(fail(format!("unexpected answer {other:?}"))),
        Err(e) => Err(fail(crvmm_vmm::error_chain(&e))),
    }
}

/// Sends `request` to a KVM-engine VM's API socket.
pub(crate) fn control(socket: &Path, request: &ApiRequest) -> Result<(), EngineError> {
    status_of(socket, request).map(|_| ())
}

/// Sends `request` and returns the VM's run state after it.
pub(crate) fn status_of(socket: &Path, request: &ApiRequest) -> Result<String, EngineError> {
    let fail = |reason: String| EngineError::Qmp {
        command: format!("{request:?}").to_lowercase(),
        reason,
    };
    match api::call(socket, request, Duration::from_secs(30)) {
        Ok(ApiResponse::Ok { state, .. }) => Ok(state.as_str().to_owned()),
        Ok(ApiResponse::Snapshot { .. }) => Ok("paused".into()),
        Ok(ApiResponse::Error { message }) => Err(fail(message)),
        Err(e) => Err(fail(crvmm_vmm::error_chain(&e))),
    }
}

impl Vm for KvmVm {
    fn name(&self) -> &str {
        &self.name
    }

    fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    fn agent_endpoint(&self) -> &AgentEndpoint {
        &self.agent
    }

    fn wait_agent(&mut self, timeout: Duration) -> Result<HelloInfo, EngineError> {
        let endpoint = self.agent.clone();
        let serial_log = self.serial_log.clone();
        let waited = agent::wait_ready(&endpoint, timeout, || match self.try_wait()? {
            Some(exit) => Err(EngineError::GuestExited {
                status: exit.to_string(),
                serial_tail: log_tail(&serial_log, 25),
            }),
            None => Ok(()),
        })?;
        waited.map_err(|secs| EngineError::AgentTimeout {
            secs,
            serial_tail: log_tail(&self.serial_log, 25),
        })
    }

    fn pause(&mut self) -> Result<(), EngineError> {
        self.api(ApiRequest::Pause)
    }

    fn resume(&mut self) -> Result<(), EngineError> {
        self.api(ApiRequest::Resume)
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, EngineError> {
        if self.exit.is_none() && self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let result = self.thread.take().expect("checked").join();
            self.exit = Some(match result {
                Ok(Ok(ExitReason::GuestShutdown)) => VmExit::GuestShutdown,
                Ok(Ok(ExitReason::Stopped)) => VmExit::Stopped,
                Ok(Ok(ExitReason::GuestHalted)) => VmExit::Vmm("the guest halted".into()),
                Ok(Ok(ExitReason::Error(e))) => VmExit::Vmm(e),
                Ok(Err(e)) => VmExit::Vmm(crvmm_vmm::error_chain(&e)),
                Err(_) => VmExit::Vmm("the VMM thread panicked".into()),
            });
        }
        Ok(self.exit.clone())
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<VmExit, EngineError> {
        crate::shutdown_through_agent(self, timeout)
    }

    fn snapshot(&mut self, dir: &Path, after: AfterSnapshot) -> Result<SnapshotInfo, EngineError> {
        snapshot_via_api(&self.api_socket, dir, after, false)
    }

    fn kill(&mut self) {
        if self.thread.is_some() {
            let _ = self.api(ApiRequest::Shutdown);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        if self.exit.is_none() {
            self.exit = Some(VmExit::Vmm("killed".into()));
        }
    }
}

impl Drop for KvmVm {
    fn drop(&mut self) {
        self.kill();
    }
}
