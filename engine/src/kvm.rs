//! The KVM engine: crvmm's own VMM (`crvmm-vmm`) running in this process.
//! The VMM's event loop runs on a thread of its own and the vCPUs on theirs;
//! other `crvmm` processes reach it through its control API socket and the
//! vsock device's Unix socket, both in the run directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crvmm_protocol::{HelloInfo, AGENT_VSOCK_PORT};
use crvmm_vmm::api::{self, ApiRequest, ApiResponse};
use crvmm_vmm::host::HostKvm;
use crvmm_vmm::loader::ElfEntry;
use crvmm_vmm::runtime::{Vmm, VmmConfig, VmmError, VsockConfig};
use crvmm_vmm::vcpus::ExitReason;

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
        })
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

    fn restore(&self, _dir: &Path, _options: &RestoreOptions) -> Result<Box<dyn Vm>, EngineError> {
        Err(EngineError::State {
            operation: "restore a kvm-engine snapshot",
            reason: "not implemented yet".into(),
        })
    }
}

type VmmThread = JoinHandle<Result<ExitReason, VmmError>>;

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
        let run_dir = RunDir::create(&engine.run_base, &config.name)?;
        let uds_path = run_dir.join("vsock.sock");
        let api_socket = run_dir.join("api.sock");
        let serial_log = run_dir.join("serial.log");
        let vmm_config = VmmConfig {
            mem_mib: config.mem_mib,
            vcpus: config.vcpus,
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            extra_cmdline: config.extra_cmdline.clone(),
            elf_entry: ElfEntry::Linux64,
            serial_log: serial_log.clone(),
            console: config.console == Console::Terminal,
            vsock: Some(VsockConfig {
                uds_path: uds_path.clone(),
                guest_cid: GUEST_CID,
            }),
            api_socket: Some(api_socket.clone()),
            nested_pvm: engine.host.nested_pvm,
            payload: None,
        };
        // The VMM is built on its own thread (its event loop lives there);
        // the build result comes back before this returns.
        let (built_tx, built_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("vmm-{}", config.name))
            .spawn(move || {
                let mut vmm = match Vmm::new(&vmm_config) {
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
            name: config.name.clone(),
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
                Ok(Ok(ExitReason::Stopped)) => VmExit::Vmm("stopped".into()),
                Ok(Ok(ExitReason::GuestHalted)) => VmExit::Vmm("the guest halted".into()),
                Ok(Ok(ExitReason::Error(e))) => VmExit::Vmm(e),
                Ok(Err(e)) => VmExit::Vmm(crvmm_vmm::error_chain(&e)),
                Err(_) => VmExit::Vmm("the VMM thread panicked".into()),
            });
        }
        Ok(self.exit.clone())
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<VmExit, EngineError> {
        if let Some(exit) = self.try_wait()? {
            return Ok(exit);
        }
        let asked = self
            .agent
            .connect(Duration::from_secs(5))
            .map_err(EngineError::from)
            .and_then(|mut c| c.shutdown().map_err(EngineError::from));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(exit) = self.try_wait()? {
                return Ok(exit);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        asked.and(Err(EngineError::State {
            operation: "shut down the guest",
            reason: format!("it did not stop within {timeout:?} and was stopped"),
        }))
    }

    fn snapshot(
        &mut self,
        _dir: &Path,
        _after: AfterSnapshot,
    ) -> Result<SnapshotInfo, EngineError> {
        Err(EngineError::State {
            operation: "snapshot a kvm-engine VM",
            reason: "not implemented yet".into(),
        })
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
