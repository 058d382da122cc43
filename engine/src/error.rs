use std::io;
use std::path::PathBuf;

use crate::kernel::KernelError;
use crate::qemu::SnapshotError;
use crate::rundir::RunDirError;
use crate::vsock::VsockError;

/// Errors of the engines. Messages name the operation; causes are chained.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The kernel file is missing or not a kernel.
    #[error("invalid --kernel")]
    Kernel(#[from] KernelError),
    /// The initramfs file cannot be used.
    #[error("cannot use initramfs {path}")]
    Initrd {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid VM configuration: {0}")]
    Config(String),
    /// A host program the engine needs is not installed.
    #[error("{program} not found; install it with: {install}")]
    MissingProgram {
        /// The program.
        program: String,
        /// The command that installs it.
        install: String,
    },
    /// The run directory could not be set up.
    #[error("cannot set up the VM's run directory")]
    RunDir(#[from] RunDirError),
    /// A host process could not be started.
    #[error("failed to start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A helper process ended while the VM needed it.
    #[error("{program} exited early ({status}){}", tail_suffix(.log_tail))]
    HelperExited {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The VM ended before the agent answered.
    #[error("the VM exited ({status}) before its agent answered{}", tail_suffix(.serial_tail))]
    GuestExited {
        /// The VMM's exit status.
        status: String,
        /// The end of the serial log.
        serial_tail: String,
    },
    /// The agent did not answer in time.
    #[error("the guest agent did not answer within {secs:.1} s{}", tail_suffix(.serial_tail))]
    AgentTimeout {
        /// The time waited.
        secs: f64,
        /// The end of the serial log.
        serial_tail: String,
    },
    /// Connecting to the agent failed.
    #[error("cannot connect to the guest agent")]
    AgentConnect(#[from] VsockError),
    /// The agent connection broke or the agent refused a request.
    #[error("agent request failed")]
    Agent(#[from] crvmm_protocol::ClientError),
    /// A QMP (QEMU control) command failed.
    #[error("QEMU control command `{command}` failed: {reason}")]
    Qmp {
        /// The command.
        command: String,
        /// QEMU's answer or the I/O failure.
        reason: String,
    },
    /// A QEMU-engine snapshot could not be taken or restored; the message
    /// names the file or the step.
    #[error(transparent)]
    QemuSnapshot(#[from] SnapshotError),
    /// The operation is not possible in the VM's current state.
    #[error("cannot {operation}: {reason}")]
    State {
        /// What was asked.
        operation: &'static str,
        /// Why not.
        reason: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::from("; the serial log is empty")
    } else {
        format!("; last lines of the serial log:\n{tail}")
    }
}
