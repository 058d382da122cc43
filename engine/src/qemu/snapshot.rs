//! Whole-VM snapshots of QEMU-engine VMs through QEMU's migration stream.
//!
//! Taking one: stop the vCPUs, hand QEMU a file (QMP `getfd`) and
//! `migrate` to `fd:`, so QEMU writes the stream straight into the snapshot
//! directory with no shell or helper process in between (QEMU 7.2 has no
//! `file:` migration, and with `exec:cat` QEMU may report the migration
//! complete before `cat` has written the last bytes). Then a
//! [manifest](super::manifest) records what starts an identical QEMU. All
//! of it goes to `<dir>.tmp-<pid>`, renamed to `<dir>` once complete.
//!
//! Restoring one: check the manifest and every file it names, start QEMU
//! with the command line [`QemuVm::start`] builds for a boot plus `-S
//! -incoming defer`, hand it the stream and `migrate-incoming` from `fd:`.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::manifest::{Manifest, QemuVersion, VmDescription, MANIFEST_FILE, STREAM_FILE};
use super::{Launch, QemuEngine, QemuVm};
use crate::config::AgentChannel;
use crate::error::EngineError;
use crate::process::{self, log_tail};
use crate::qmp::Qmp;
use crate::{AfterSnapshot, RestoreOptions, SnapshotInfo, Vm, VmExit};

/// The name QEMU knows the stream's descriptor by.
const STREAM_FD: &str = "crvmm-stream";
/// The migration bandwidth limit for snapshots, bytes/s: none in effect.
const UNTHROTTLED: u64 = 1 << 40;
/// How long a migration to or from a local file may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a QEMU-engine snapshot cannot be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The target directory is already there.
    #[error("snapshot directory {0} already exists")]
    Exists(PathBuf),
    /// The VM has a device QEMU cannot migrate.
    #[error(
        "cannot snapshot a VM whose agent channel is vsock: QEMU cannot migrate its \
         vhost-user-vsock device; boot the VM with the serial agent channel \
         (`crvmm run --channel serial`) to snapshot it"
    )]
    VsockChannel,
    /// QEMU refuses to migrate a VM a migration left stopped.
    #[error("the VM is still stopped by its previous snapshot; resume it before taking another")]
    StoppedByMigration,
    /// A file operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// QEMU could not write the migration stream.
    #[error("QEMU failed to write the migration stream: {reason}{}", qemu_said(.qemu_log))]
    Save {
        /// QEMU's reason.
        reason: String,
        /// The end of QEMU's log.
        qemu_log: String,
    },
    /// QEMU could not load the migration stream.
    #[error("QEMU could not load the migration stream {path}: {reason}{}", qemu_said(.qemu_log))]
    Load {
        /// The stream.
        path: PathBuf,
        /// QEMU's reason.
        reason: String,
        /// The end of QEMU's log.
        qemu_log: String,
    },
    /// The manifest is unreadable as one.
    #[error("{path} is not a valid snapshot manifest: {reason}")]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest has a format version this build does not read.
    #[error(
        "snapshot manifest {path} has format version {found}; this build reads version {}",
        super::manifest::FORMAT_VERSION
    )]
    Version {
        /// The manifest.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// The snapshot belongs to another engine.
    #[error("snapshot manifest {path} was written by the {engine} engine, not qemu")]
    WrongEngine {
        /// The manifest.
        path: PathBuf,
        /// Its engine, as written.
        engine: String,
    },
    /// The host's QEMU cannot load the stream.
    #[error(
        "the snapshot was taken with QEMU {taken} and this host runs QEMU {host}; \
         QEMU loads streams of its own major.minor version only"
    )]
    QemuVersion {
        /// The version that wrote the stream.
        taken: String,
        /// The host's.
        host: String,
    },
    /// A file the snapshot needs cannot be read.
    #[error("the snapshot's {role} {path} cannot be read")]
    Missing {
        /// What the file is for.
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel or initramfs is not the one the snapshot was taken with.
    #[error("the {role} {path} changed since the snapshot was taken: {what}")]
    Changed {
        /// What the file is for.
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// How it differs.
        what: String,
    },
    /// The migration stream is not what was written.
    #[error("the migration stream {path} is corrupt: {reason}")]
    Corrupt {
        /// The stream.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
}

fn qemu_said(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!("; QEMU said:\n{log}")
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

/// [`Vm::snapshot`] for QEMU.
pub(super) fn take(
    vm: &mut QemuVm,
    dir: &Path,
    after: AfterSnapshot,
) -> Result<SnapshotInfo, EngineError> {
    let started = Instant::now();
    vm.try_wait()?;
    if vm.config.agent_channel == AgentChannel::Vsock {
        return Err(SnapshotError::VsockChannel.into());
    }
    if dir.symlink_metadata().is_ok() {
        return Err(SnapshotError::Exists(dir.to_owned()).into());
    }
    let mut qmp = vm.control()?;
    let was_running = match qmp.status()?.as_str() {
        "postmigrate" => return Err(SnapshotError::StoppedByMigration.into()),
        status => status == "running",
    };
    let tmp = temporary_path(dir)?;
    if tmp.symlink_metadata().is_ok() {
        // Left by a process that had our pid and died mid-snapshot.
        fs::remove_dir_all(&tmp).map_err(io_err("remove the stale", &tmp))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err("create", &tmp))?;

    let result = write_snapshot(vm, &mut qmp, &tmp, dir, was_running, after);
    let (bytes, downtime) = match result {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            if was_running {
                // Harmless if the VM already runs; useless if QEMU is gone.
                let _ = vm.qmp("cont");
            }
            return Err(e);
        }
    };
    if after == AfterSnapshot::Exit {
        let _ = qmp.execute("quit", None);
        vm.qemu.wait_timeout(Duration::from_secs(10));
        vm.exit = Some(VmExit::Stopped);
        vm.kill();
    }
    Ok(SnapshotInfo {
        dir: dir.to_owned(),
        bytes,
        downtime,
        total: started.elapsed(),
    })
}

/// Stops the VM, writes stream and manifest into `tmp`, resumes the VM if
/// `after` says so and renames `tmp` to `dir`. Returns the bytes written
/// and the guest's downtime: from `stop` to `cont`, or to the stream being
/// complete when the VM stays stopped (the same instant, so the modes
/// compare); zero if it was stopped already.
fn write_snapshot(
    vm: &mut QemuVm,
    qmp: &mut Qmp,
    tmp: &Path,
    dir: &Path,
    was_running: bool,
    after: AfterSnapshot,
) -> Result<(u64, Duration), EngineError> {
    let qemu = qmp.execute("query-version", None)?;
    let qemu = QemuVersion::from_qmp(&qemu).ok_or_else(|| EngineError::Qmp {
        command: "query-version".into(),
        reason: format!("unexpected reply {qemu}"),
    })?;
    // Hashed before the stop, so that it does not compete with QEMU for
    // the CPU while the guest is down.
    let vm_description = VmDescription::of(&vm.config)?;
    let stream = tmp.join(STREAM_FILE);
    let stopped = Instant::now();
    if was_running {
        qmp.execute("stop", None)?;
    }
    let file = save_stream(vm, qmp, &stream)?;
    if was_running && after == AfterSnapshot::Resume {
        qmp.execute("cont", None)?;
    }
    let downtime = if was_running {
        stopped.elapsed()
    } else {
        Duration::ZERO
    };
    // Durable before the rename makes it look complete, not before `cont`.
    file.sync_all().map_err(io_err("sync", &stream))?;
    let manifest = Manifest::new(qemu, vm_description, &stream)?;
    let json = manifest.to_json();
    write_synced(&tmp.join(MANIFEST_FILE), &json)?;
    sync_path(tmp)?;
    rename_no_replace(tmp, dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_path(parent)?;
    }
    Ok((manifest.stream.size + json.len() as u64, downtime))
}

/// Has QEMU migrate into a new file at `path` and waits for the end;
/// returns the file, not yet synced.
fn save_stream(vm: &mut QemuVm, qmp: &mut Qmp, path: &Path) -> Result<File, EngineError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    // QEMU throttles migrations to 128 MiB/s by default: meant for
    // networks, pure downtime for a local file.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": UNTHROTTLED })),
    )?;
    qmp.send_fd(STREAM_FD, file.as_fd())?;
    qmp.execute("migrate", Some(json!({ "uri": format!("fd:{STREAM_FD}") })))
        .map_err(|e| SnapshotError::Save {
            reason: e.to_string(),
            qemu_log: String::new(),
        })?;
    if let Err(reason) = wait_migration(vm, qmp) {
        if vm.qemu.try_wait().is_none() {
            let _ = qmp.execute("migrate_cancel", None);
        }
        return Err(SnapshotError::Save {
            reason,
            qemu_log: log_tail(&vm.qemu_log, 10),
        }
        .into());
    }
    Ok(file)
}

/// Polls `query-migrate` until the migration completes, fails, QEMU exits
/// or [`MIGRATION_TIMEOUT`] passes; errors are QEMU's reason.
fn wait_migration(vm: &mut QemuVm, qmp: &mut Qmp) -> Result<(), String> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let reply = match qmp.execute("query-migrate", None) {
            Ok(reply) => reply,
            Err(e) => {
                // QEMU exits when an incoming migration fails: say so.
                return Err(match vm.qemu.wait_timeout(Duration::from_secs(2)) {
                    Some(status) => format!("QEMU exited ({status})"),
                    None => e.to_string(),
                });
            }
        };
        match reply["status"].as_str().unwrap_or_default() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let desc = reply["error-desc"].as_str().unwrap_or("no reason given");
                return Err(format!("migration {}: {desc}", reply["status"]));
            }
            _ => {}
        }
        if let Some(status) = vm.qemu.try_wait() {
            return Err(format!("QEMU exited ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not complete after {MIGRATION_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`crate::Engine::restore`] for QEMU.
pub(super) fn restore(
    engine: &QemuEngine,
    dir: &Path,
    options: &RestoreOptions,
) -> Result<QemuVm, EngineError> {
    let manifest = Manifest::read(dir)?;
    let stream_path = manifest.verify(dir)?;
    let config = manifest.config(&options.name, options.console);
    // From here on, dropping `vm` on an error stops QEMU and removes its
    // run directory.
    let mut vm = QemuVm::start(engine, &config, Launch::Incoming)?;
    process::wait_for_path(
        &vm.qmp_socket,
        &mut vm.qemu,
        &vm.qemu_log,
        Duration::from_secs(30),
    )?;
    let mut qmp = vm.control()?;
    let reply = qmp.execute("query-version", None)?;
    let host = QemuVersion::from_qmp(&reply).ok_or_else(|| EngineError::Qmp {
        command: "query-version".into(),
        reason: format!("unexpected reply {reply}"),
    })?;
    if !manifest.qemu.loads_into(&host) {
        return Err(SnapshotError::QemuVersion {
            taken: manifest.qemu.to_string(),
            host: host.to_string(),
        }
        .into());
    }
    let load_err = |vm: &QemuVm, reason: String| SnapshotError::Load {
        path: stream_path.clone(),
        reason,
        qemu_log: log_tail(&vm.qemu_log, 10),
    };
    let stream = File::open(&stream_path).map_err(io_err("open", &stream_path))?;
    qmp.send_fd(STREAM_FD, stream.as_fd())?;
    drop(stream);
    let uri = format!("fd:{STREAM_FD}");
    if let Err(e) = qmp.execute("migrate-incoming", Some(json!({ "uri": uri }))) {
        return Err(load_err(&vm, e.to_string()).into());
    }
    if let Err(reason) = wait_migration(&mut vm, &mut qmp) {
        return Err(load_err(&vm, reason).into());
    }
    match qmp.status()?.as_str() {
        "paused" | "postmigrate" | "prelaunch" => {}
        other => {
            let reason = format!("the VM is {other} after loading, not paused");
            return Err(load_err(&vm, reason).into());
        }
    }
    if !options.paused {
        qmp.execute("cont", None)?;
    }
    Ok(vm)
}

/// `<dir>.tmp-<pid>`, beside `dir`.
fn temporary_path(dir: &Path) -> Result<PathBuf, SnapshotError> {
    let Some(name) = dir.file_name() else {
        return Err(SnapshotError::Io {
            op: "use as a snapshot directory",
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "it has no file name"),
        });
    };
    let mut tmp = OsString::from(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(dir.with_file_name(tmp))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

fn sync_path(path: &Path) -> Result<(), SnapshotError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", path))
}

/// Renames `from` to `to`, failing if `to` appeared meanwhile (a plain
/// rename would replace an empty directory).
fn rename_no_replace(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::from);
    let result = c(from).and_then(|f| {
        let t = c(to)?;
        // SAFETY: both are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(SnapshotError::Exists(to.to_owned()))
        }
        other => other.map_err(io_err("rename the finished snapshot to", to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_path_sits_beside_the_target() {
        let tmp = temporary_path(Path::new("/s/snap")).unwrap();
        assert_eq!(
            tmp,
            PathBuf::from(format!("/s/snap.tmp-{}", std::process::id()))
        );
        assert!(temporary_path(Path::new("/")).is_err());
    }

    #[test]
    fn rename_refuses_to_replace_an_empty_directory() {
        let base = tempfile::tempdir().unwrap();
        let (from, to) = (base.path().join("a"), base.path().join("b"));
        fs::create_dir(&from).unwrap();
        fs::create_dir(&to).unwrap();
        let err = rename_no_replace(&from, &to).unwrap_err();
        assert!(matches!(err, SnapshotError::Exists(_)), "{err}");
        fs::remove_dir(&to).unwrap();
        rename_no_replace(&from, &to).unwrap();
        assert!(to.is_dir() && !from.exists());
    }
}
