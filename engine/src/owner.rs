//! The owner socket: the `crvmm` process that owns a VM (`crvmm run`,
//! `crvmm snapshot restore`) serves requests that need the VM handle itself,
//! such as a QEMU snapshot, on `<run dir>/owner.sock`. One JSON object per
//! line in, one out:
//!
//! ```text
//! -> {"action":"snapshot","dir":"/abs/path","after":"resume"}
//! <- {"result":"snapshot","bytes":268435456,"downtime_ms":120,"total_ms":130}
//! <- {"result":"error","message":"..."}
//! ```
//!
//! The owner polls [`OwnerServer::poll`] from its supervision loop, so the
//! request runs on the thread that holds the VM.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::{AfterSnapshot, SnapshotInfo, Vm};

/// The socket's file name in a run directory.
pub const OWNER_SOCKET: &str = "owner.sock";
const MAX_LINE: u64 = 64 << 10;

/// What to do after a snapshot, as on the wire: the VMM API's own type.
pub use crvmm_vmm::runtime::snapshot::After;

impl From<After> for AfterSnapshot {
    fn from(a: After) -> AfterSnapshot {
        match a {
            After::Resume => AfterSnapshot::Resume,
            After::Pause => AfterSnapshot::Pause,
            After::Exit => AfterSnapshot::Exit,
        }
    }
}

impl From<AfterSnapshot> for After {
    fn from(a: AfterSnapshot) -> After {
        match a {
            AfterSnapshot::Resume => After::Resume,
            AfterSnapshot::Pause => After::Pause,
            AfterSnapshot::Exit => After::Exit,
        }
    }
}

/// A request to the owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OwnerRequest {
    /// Snapshot the whole VM into `dir`.
    Snapshot {
        /// Absolute path of the snapshot directory (must not exist).
        dir: PathBuf,
        /// What the VM does afterwards.
        after: After,
    },
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OwnerResponse {
    /// The snapshot was written.
    Snapshot {
        /// Bytes written.
        bytes: u64,
        /// Guest pause, in ms.
        downtime_ms: u64,
        /// Whole operation, in ms.
        total_ms: u64,
    },
    /// It failed.
    Error {
        /// Why.
        message: String,
    },
}

/// The listening side, non-blocking.
pub struct OwnerServer {
    listener: UnixListener,
}

impl OwnerServer {
    /// Listens on `<run_dir>/owner.sock`.
    pub fn bind(run_dir: &Path) -> Result<OwnerServer, EngineError> {
        let path = run_dir.join(OWNER_SOCKET);
        let spawn_err = |source| EngineError::Spawn {
            program: format!("the owner socket {}", path.display()),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(spawn_err)?;
        listener.set_nonblocking(true).map_err(spawn_err)?;
        Ok(OwnerServer { listener })
    }

    /// Serves every waiting client, one request each, against `vm`.
    pub fn poll(&self, vm: &mut dyn Vm) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = serve(stream, vm);
        }
    }
}

fn serve(stream: UnixStream, vm: &mut dyn Vm) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut line = String::new();
    BufReader::new(stream).take(MAX_LINE).read_line(&mut line)?;
    let response = match serde_json::from_str::<OwnerRequest>(&line) {
        Err(e) => OwnerResponse::Error {
            message: format!("bad request: {e}"),
        },
        Ok(OwnerRequest::Snapshot { dir, after }) => match vm.snapshot(&dir, after.into()) {
            Ok(info) => OwnerResponse::Snapshot {
                bytes: info.bytes,
                downtime_ms: info.downtime.as_millis() as u64,
                total_ms: info.total.as_millis() as u64,
            },
            Err(e) => OwnerResponse::Error {
                message: crvmm_vmm::error_chain(&e),
            },
        },
    };
    let mut out = serde_json::to_string(&response).expect("responses serialize");
    out.push('\n');
    writer.write_all(out.as_bytes())
}

/// Asks the owner of the VM whose run directory is `run_dir` for a snapshot.
pub fn snapshot(
    run_dir: &Path,
    dir: &Path,
    after: AfterSnapshot,
) -> Result<SnapshotInfo, EngineError> {
    let fail = |reason: String| EngineError::State {
        operation: "snapshot the VM",
        reason,
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let after = After::from(after);
    let socket = run_dir.join(OWNER_SOCKET);
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        fail(format!(
            "cannot reach the VM's owner at {}: {e}",
            socket.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_string(&OwnerRequest::Snapshot {
        dir: dir.clone(),
        after,
    })
    .expect("requests serialize");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    match serde_json::from_str(&answer) {
        Ok(OwnerResponse::Snapshot {
            bytes,
            downtime_ms,
            total_ms,
        }) => Ok(SnapshotInfo {
            dir,
            bytes,
            downtime: Duration::from_millis(downtime_ms),
            total: Duration::from_millis(total_ms),
        }),
        Ok(OwnerResponse::Error { message }) => Err(fail(message)),
        Err(_) => Err(fail(format!(
            "unreadable answer {answer:?} (did the owner die?)"
        ))),
    }
}
