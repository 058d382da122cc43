//! A VM's run directory: `<base>/<name>/` holds its sockets, serial log and
//! `vm.json`, the description other `crvmm` processes use to find it. The
//! directory lives as long as the VM; [`RunDir`] removes it on drop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::agent::AgentEndpoint;
use crate::config::EngineKind;

/// The file in a run directory that describes the VM.
pub const RECORD_FILE: &str = "vm.json";

/// Errors of run-directory handling.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The name cannot name a directory safely.
    #[error("invalid VM name {name:?}: use 1 to 48 letters, digits, '-' or '_'")]
    BadName {
        /// The name.
        name: String,
    },
    /// A live VM already uses the name.
    #[error("a VM named {name:?} is already running (crvmm pid {pid})")]
    InUse {
        /// The name.
        name: String,
        /// The process that owns it.
        pid: u32,
    },
    /// No VM has the name.
    #[error("no running VM named {name:?} in {base}{}", list_suffix(.running))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The run-directory base searched.
        base: PathBuf,
        /// The VMs that are running.
        running: Vec<String>,
    },
    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `vm.json` cannot be parsed.
    #[error("{path} is not a valid VM record")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

fn list_suffix(running: &[String]) -> String {
    if running.is_empty() {
        "; no VMs are running".into()
    } else {
        format!("; running: {}", running.join(", "))
    }
}

/// What `vm.json` records about a running VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmRecord {
    /// The VM's name.
    pub name: String,
    /// The engine running it.
    pub engine: EngineKind,
    /// The `crvmm` process that owns the VM.
    pub owner_pid: u32,
    /// The VMM process (QEMU, or crvmm itself).
    pub vmm_pid: u32,
    /// How to reach the agent.
    pub agent: AgentEndpoint,
    /// The serial log.
    pub serial_log: PathBuf,
    /// The engine's control socket (QMP for QEMU).
    pub control_socket: PathBuf,
}

impl VmRecord {
    /// The VM's run directory: both engines keep their control socket (and
    /// the owner socket) in it.
    pub fn run_dir(&self) -> &Path {
        self.control_socket.parent().unwrap_or(Path::new("."))
    }
}

/// The base directory for run directories: `$CRVMM_RUN_DIR`, else
/// `$XDG_RUNTIME_DIR/crvmm`, else `/run/crvmm` for root and
/// `/tmp/crvmm-<uid>` for others. Kept short: Unix socket paths inside it
/// must fit in 108 bytes.
pub fn default_base() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRVMM_RUN_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("crvmm");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/crvmm")
    } else {
        PathBuf::from(format!("/tmp/crvmm-{uid}"))
    }
}

/// Checks that `name` is safe as a directory name.
pub fn validate_name(name: &str) -> Result<(), RunDirError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RunDirError::BadName { name: name.into() })
    }
}

/// An owned run directory, removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `<base>/<name>`. A directory left by a VM whose owner is gone
    /// is cleared first; one owned by a live process is refused.
    pub fn create(base: &Path, name: &str) -> Result<RunDir, RunDirError> {
        validate_name(name)?;
        let path = base.join(name);
        if path.exists() {
            match read_record(&path) {
                Ok(record) if pid_alive(record.owner_pid) => {
                    return Err(RunDirError::InUse {
                        name: name.into(),
                        pid: record.owner_pid,
                    })
                }
                _ => fs::remove_dir_all(&path).map_err(io_err("remove stale", &path))?,
            }
        }
        fs::create_dir_all(base).map_err(io_err("create", base))?;
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        set_mode(&path, 0o700)?;
        Ok(RunDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }

    /// Writes `vm.json` atomically (temporary file, then rename).
    pub fn write_record(&self, record: &VmRecord) -> Result<(), RunDirError> {
        let tmp = self.join(".vm.json.tmp");
        let json = serde_json::to_vec_pretty(record).expect("records always serialize");
        fs::write(&tmp, json).map_err(io_err("write", &tmp))?;
        let dest = self.join(RECORD_FILE);
        fs::rename(&tmp, &dest).map_err(io_err("rename", &dest))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Reads the record of the VM named `name` under `base`, checking that its
/// owner still runs.
pub fn find(base: &Path, name: &str) -> Result<VmRecord, RunDirError> {
    validate_name(name)?;
    match read_record(&base.join(name)) {
        Ok(record) if pid_alive(record.owner_pid) => Ok(record),
        _ => Err(RunDirError::NotFound {
            name: name.into(),
            base: base.into(),
            running: list(base).into_iter().map(|r| r.name).collect(),
        }),
    }
}

/// The records of all live VMs under `base`, sorted by name.
pub fn list(base: &Path) -> Vec<VmRecord> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut records: Vec<VmRecord> = entries
        .filter_map(|e| read_record(&e.ok()?.path()).ok())
        .filter(|r| pid_alive(r.owner_pid))
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

fn read_record(dir: &Path) -> Result<VmRecord, RunDirError> {
    let path = dir.join(RECORD_FILE);
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| RunDirError::BadRecord { path, source })
}

/// True while process `pid` exists and has not exited. A zombie (exited,
/// not yet reaped by its parent) counts as gone.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    if raw <= 0 || unsafe { libc::kill(raw, 0) } != 0 {
        return false;
    }
    // /proc/<pid>/stat is "pid (comm) STATE ..."; comm may hold spaces or
    // parentheses, so read the state after the last ')'.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            !matches!(stat.rsplit(')').next().map(str::trim_start), Some(s) if s.starts_with('Z'))
        }
        Err(_) => true,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RunDirError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunDirError {
    let path = path.to_owned();
    move |source| RunDirError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, owner_pid: u32) -> VmRecord {
        VmRecord {
            name: name.into(),
            engine: EngineKind::Qemu,
            owner_pid,
            vmm_pid: owner_pid,
            agent: AgentEndpoint::Serial {
                socket: "/x".into(),
            },
            serial_log: "/x.log".into(),
            control_socket: "/x.qmp".into(),
        }
    }

    #[test]
    fn create_record_find_and_remove() {
        let base = tempfile::tempdir().unwrap();
        let dir = RunDir::create(base.path(), "vm1").unwrap();
        dir.write_record(&record("vm1", std::process::id()))
            .unwrap();
        assert_eq!(find(base.path(), "vm1").unwrap().name, "vm1");
        assert_eq!(list(base.path()).len(), 1);
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
        let err = find(base.path(), "vm1").unwrap_err();
        assert!(err.to_string().contains("no VMs are running"), "{err}");
    }

    #[test]
    fn live_owner_blocks_reuse_and_stale_dir_is_cleared() {
        let base = tempfile::tempdir().unwrap();
        let dir = RunDir::create(base.path(), "vm").unwrap();
        dir.write_record(&record("vm", std::process::id())).unwrap();
        assert!(matches!(
            RunDir::create(base.path(), "vm"),
            Err(RunDirError::InUse { .. })
        ));
        // A record whose owner is gone (pid beyond pid_max) is stale.
        dir.write_record(&record("vm", 0x7fff_fff0)).unwrap();
        std::mem::forget(dir);
        let again = RunDir::create(base.path(), "vm").unwrap();
        assert!(!again.join(RECORD_FILE).exists());
    }

    #[test]
    fn zombies_are_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pid_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "an exited child still looks alive"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Not reaped yet: the pid still exists, as a zombie.
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        child.wait().unwrap();
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "..", "x y", &"n".repeat(49)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("crvmm-test_01").unwrap();
    }
}
