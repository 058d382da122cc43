//! Engines run a crvmm guest: boot it, connect to its agent, pause and resume
//! it, and tear it down. [`Engine`] and [`Vm`] are the interface; the QEMU
//! engine ([`qemu`]) implements it today, crvmm's own KVM VMM will too.
//!
//! Everything a running VM owns on the host (sockets, logs, its description
//! for other `crvmm` processes) lives in one [`rundir::RunDir`], removed when
//! the VM is torn down.

pub mod agent;
pub mod config;
pub mod kernel;
pub mod kvm;
pub mod owner;
pub mod qemu;
pub mod remote;
pub mod rundir;
pub mod vsock;

mod error;
mod process;
mod qmp;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use agent::AgentEndpoint;
pub use config::{AgentChannel, Console, EngineKind, VmConfig};
pub use error::EngineError;
pub use process::{find_program, log_tail};

use crvmm_protocol::HelloInfo;

/// Something that can boot guests.
pub trait Engine {
    /// The engine's name as the CLI spells it.
    fn name(&self) -> &'static str;

    /// Boots a guest as `config` describes and returns a handle to it. The
    /// guest may still be booting when this returns: call
    /// [`Vm::wait_agent`] to know when it is ready.
    fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, EngineError>;

    /// Brings back a VM from a snapshot directory written by
    /// [`Vm::snapshot`], in this process, under `options.name`. The
    /// restored guest runs (or stays paused, as asked) from the instant the
    /// snapshot was taken. A snapshot that is corrupt, incomplete, from
    /// another engine or for another host fails with an error naming the
    /// problem, and nothing is left running.
    fn restore(&self, dir: &Path, options: &RestoreOptions) -> Result<Box<dyn Vm>, EngineError>;
}

/// What the VM does once its snapshot is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSnapshot {
    /// Run on.
    Resume,
    /// Stay paused.
    Pause,
    /// End the VM (a migration's source).
    Exit,
}

/// How to restore a snapshot.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The restored VM's name (its run directory).
    pub name: String,
    /// Where its console goes.
    pub console: Console,
    /// Leave it paused after loading (default: run).
    pub paused: bool,
    /// KVM engine: read the memory file in full instead of mapping it
    /// copy-on-write (pages then load on demand).
    pub read_memory: bool,
    /// KVM engine: where the vsock device's host socket goes, instead of
    /// the run directory.
    pub vsock_uds: Option<PathBuf>,
}

impl RestoreOptions {
    /// Options for a VM named `name`: console logged, running, memory
    /// mapped, vsock socket in the run directory.
    pub fn new(name: impl Into<String>) -> RestoreOptions {
        RestoreOptions {
            name: name.into(),
            console: Console::LogOnly,
            paused: false,
            read_memory: false,
            vsock_uds: None,
        }
    }
}

/// What a snapshot wrote.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Bytes written, all files together.
    pub bytes: u64,
    /// Time the guest was paused for the snapshot.
    pub downtime: Duration,
    /// Time from the request to the files being complete.
    pub total: Duration,
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset or powered off (a clean shutdown).
    GuestShutdown,
    /// The VMM ended it on request (a snapshot taken with "exit after", or
    /// the control API's shutdown).
    Stopped,
    /// The VMM process ended with this status (a crash or a kill).
    Vmm(String),
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::GuestShutdown => f.write_str("the guest shut down"),
            VmExit::Stopped => f.write_str("stopped on request"),
            VmExit::Vmm(status) => write!(f, "VMM {status}"),
        }
    }
}

/// A running guest. Dropping it tears the VM down (processes, sockets, run
/// directory), whatever state it is in.
pub trait Vm: Send {
    /// The VM's name (also the name of its run directory).
    fn name(&self) -> &str;

    /// Where the VM keeps its sockets and description.
    fn run_dir(&self) -> &Path;

    /// The file the guest's serial console is written to.
    fn serial_log(&self) -> &Path;

    /// How to reach the guest agent.
    fn agent_endpoint(&self) -> &AgentEndpoint;

    /// Waits until the guest agent answers a hello, or `timeout` passes, or
    /// the VM exits. Errors carry the tail of the serial log.
    fn wait_agent(&mut self, timeout: Duration) -> Result<HelloInfo, EngineError>;

    /// Stops all vCPUs; the guest keeps its state.
    fn pause(&mut self) -> Result<(), EngineError>;

    /// Lets a paused guest run again.
    fn resume(&mut self) -> Result<(), EngineError>;

    /// Returns how the VM ended, or `None` while it runs.
    fn try_wait(&mut self) -> Result<Option<VmExit>, EngineError>;

    /// Asks the agent to shut the guest down and waits up to `timeout` for
    /// the VM to end; kills it if it does not.
    fn shutdown(&mut self, timeout: Duration) -> Result<VmExit, EngineError>;

    /// Pauses the guest and writes a snapshot of the whole VM (devices,
    /// vCPUs, memory) into `dir`, which must not exist yet; then resumes,
    /// stays paused or ends the VM as `after` says. The directory is written
    /// under a temporary name and renamed into place when complete, so an
    /// interrupted snapshot never looks complete. On failure the VM resumes
    /// (unless it was paused before) and nothing is left at `dir`.
    fn snapshot(&mut self, dir: &Path, after: AfterSnapshot) -> Result<SnapshotInfo, EngineError>;

    /// Ends the VM at once and removes what it owns on the host.
    fn kill(&mut self);
}

/// The clean shutdown both engines share: ask the guest agent, wait up to
/// `timeout` for the VM to end, and kill it if it does not (or once it has,
/// to reap what it leaves behind).
pub(crate) fn shutdown_through_agent(
    vm: &mut dyn Vm,
    timeout: Duration,
) -> Result<VmExit, EngineError> {
    if let Some(exit) = vm.try_wait()? {
        return Ok(exit);
    }
    let asked = vm
        .agent_endpoint()
        .connect(Duration::from_secs(5))
        .map_err(EngineError::from)
        .and_then(|mut c| c.shutdown().map_err(EngineError::from));
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(exit) = vm.try_wait()? {
            vm.kill();
            return Ok(exit);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    vm.kill();
    asked.and(Err(EngineError::State {
        operation: "shut down the guest",
        reason: format!("it did not stop within {timeout:?} and was killed"),
    }))
}
