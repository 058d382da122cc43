//! Operations on a VM owned by another `crvmm` process, found through its
//! run-directory record.

use std::time::{Duration, Instant};

use crvmm_vmm::api::ApiRequest;

use crate::config::EngineKind;
use crate::error::EngineError;
use crate::qmp::Qmp;
use crate::rundir::{pid_alive, VmRecord};

/// Stops the VM's vCPUs.
pub fn pause(record: &VmRecord) -> Result<(), EngineError> {
    control(record, "stop")
}

/// Lets a paused VM run again.
pub fn resume(record: &VmRecord) -> Result<(), EngineError> {
    control(record, "cont")
}

/// Whether the VM's vCPUs run: `running`, `paused`, or the engine's word.
pub fn status(record: &VmRecord) -> Result<String, EngineError> {
    match record.engine {
        EngineKind::Qemu => {
            let ret = Qmp::connect(&record.control_socket, Duration::from_secs(5))?
                .execute("query-status", None)?;
            Ok(ret["status"].as_str().unwrap_or("unknown").to_owned())
        }
        EngineKind::Kvm => crate::kvm::status_of(&record.control_socket, &ApiRequest::Status),
    }
}

/// Writes a whole-VM snapshot of a VM another `crvmm` process owns; with
/// `diff`, only the pages changed since its previous snapshot (KVM engine,
/// VM started with dirty tracking).
pub fn snapshot(
    record: &VmRecord,
    dir: &std::path::Path,
    after: crate::AfterSnapshot,
    diff: bool,
) -> Result<crate::SnapshotInfo, EngineError> {
    match record.engine {
        EngineKind::Kvm => crate::kvm::snapshot_via_api(&record.control_socket, dir, after, diff),
        EngineKind::Qemu if diff => Err(EngineError::State {
            operation: "take a diff snapshot",
            reason: "the qemu engine writes full snapshots only".into(),
        }),
        EngineKind::Qemu => {
            let run_dir = record
                .serial_log
                .parent()
                .unwrap_or(std::path::Path::new("."));
            crate::owner::snapshot(run_dir, dir, after)
        }
    }
}

/// Asks the guest to shut down through its agent; if that fails or the
/// owner has not ended the VM within `timeout`, sends the owner SIGTERM,
/// which tears the VM down.
pub fn stop(record: &VmRecord, timeout: Duration) -> Result<(), EngineError> {
    let asked = record
        .agent
        .connect(Duration::from_secs(5))
        .map_err(EngineError::from)
        .and_then(|mut c| c.shutdown().map_err(EngineError::from));
    if asked.is_ok() && wait_gone(record.owner_pid, timeout) {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(record.owner_pid).unwrap_or(0);
    if pid > 0 {
        // SAFETY: sending a signal has no memory-safety preconditions; the
        // pid comes from a record whose owner was alive when it was read.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if wait_gone(record.owner_pid, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(EngineError::State {
            operation: "stop the VM",
            reason: format!("its owner process {pid} did not exit"),
        })
    }
}

fn control(record: &VmRecord, command: &str) -> Result<(), EngineError> {
    match record.engine {
        EngineKind::Qemu => {
            Qmp::connect(&record.control_socket, Duration::from_secs(5))?.execute(command, None)?;
            Ok(())
        }
        EngineKind::Kvm => {
            let request = if command == "stop" {
                ApiRequest::Pause
            } else {
                ApiRequest::Resume
            };
            crate::kvm::control(&record.control_socket, &request)
        }
    }
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
