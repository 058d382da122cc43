//! Snapshot directories of the KVM engine:
//!
//! ```text
//! <dir>/state    the VmmSnapshot, in crvmm-snapshot's container (magic,
//!                version, CBOR, CRC64), at most 16 MiB
//! <dir>/memory   guest memory, regions back to back (docs/snapshot-format.md)
//! ```
//!
//! A snapshot is written into `<dir>.partial-<pid>` and renamed to `<dir>`
//! once both files are complete and synced, so a snapshot killed halfway
//! never looks complete, and a directory that exists is never touched.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::devices::{DeviceStates, Devices};
use super::VmmConfig;
use crate::builder::{MicroVm, MicroVmState};
use crate::vstate::memory::{self, DirtyMap, LoadMode, MemoryFileError};
use crvmm_devices::GuestMemoryMmap;

/// The state file's name.
pub const STATE_FILE: &str = "state";
/// The memory file's name.
pub const MEMORY_FILE: &str = "memory";

/// What the VM does after its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// Run on.
    Resume,
    /// Stay paused.
    Pause,
    /// End.
    Exit,
}

/// What the memory file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemoryImage {
    /// Every page.
    Full,
    /// Only the pages written since the parent snapshot (the file is
    /// sparse: other pages are holes); restore applies it on the parent.
    Diff {
        /// The parent snapshot directory (absolute).
        parent: PathBuf,
        /// Which pages this file holds.
        dirty: DirtyMap,
    },
}

/// Longest diff chain restore follows.
pub const MAX_CHAIN: usize = 64;

/// Everything in the state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmmSnapshot {
    /// The crvmm version that wrote it.
    pub crvmm_version: String,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// Whether the VM ran with the nested-PVM quirks.
    pub nested_pvm: bool,
    /// KVM's part: vCPUs, interrupt controllers, timer, clock.
    pub machine: MicroVmState,
    /// The devices.
    pub devices: DeviceStates,
    /// Full memory, or a diff on a parent. Required: a reader that did not
    /// know it would read a diff's sparse file as full memory.
    pub memory: MemoryImage,
}

/// What a snapshot wrote.
#[derive(Debug, Clone)]
pub struct SnapshotSummary {
    /// The directory.
    pub dir: PathBuf,
    /// Bytes in its files.
    pub bytes: u64,
    /// How long the guest was paused for it.
    pub downtime: Duration,
    /// How long it took.
    pub total: Duration,
}

/// Errors of snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The target already exists.
    #[error("snapshot directory {0} already exists")]
    Exists(PathBuf),
    /// A file operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading the VM's state failed.
    #[error("cannot read the VM's state")]
    Save(#[source] crate::builder::BuildError),
    /// The memory file.
    #[error("guest memory")]
    Memory(#[from] MemoryFileError),
    /// The state file is unusable.
    #[error("snapshot state {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crvmm_snapshot::StateFileError,
    },
    /// The state file holds impossible values.
    #[error("snapshot state is inconsistent: {0}")]
    Inconsistent(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

/// Writes the snapshot of a paused VM into `dir`: a diff on `parent` when
/// given (the VM must track dirty pages since that snapshot), else full.
/// A VM that tracks dirty pages has them cleared either way.
pub fn create(
    dir: &Path,
    vm: &MicroVm,
    devices: &Devices,
    config: &VmmConfig,
    parent: Option<&Path>,
) -> Result<SnapshotSummary, SnapshotError> {
    let started = Instant::now();
    if dir.exists() {
        return Err(SnapshotError::Exists(dir.into()));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = dir.with_file_name(format!("{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io("create", &partial))?;
    let result = write_files(&partial, vm, devices, config, parent).and_then(|bytes| {
        fs::rename(&partial, dir).map_err(io("rename into place", dir))?;
        if let Some(parent) = dir.parent() {
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(bytes)
    });
    match result {
        Ok(bytes) => Ok(SnapshotSummary {
            dir: dir.into(),
            bytes,
            downtime: started.elapsed(),
            total: started.elapsed(),
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn write_files(
    dir: &Path,
    vm: &MicroVm,
    devices: &Devices,
    config: &VmmConfig,
    parent: Option<&Path>,
) -> Result<u64, SnapshotError> {
    let dirty = if vm.tracks_dirty() {
        Some(vm.dirty_pages().map_err(SnapshotError::Save)?)
    } else {
        None
    };
    let memory = match (parent, dirty) {
        (Some(parent), Some(dirty)) => MemoryImage::Diff {
            parent: parent.to_owned(),
            dirty,
        },
        (Some(_), None) => {
            return Err(SnapshotError::Inconsistent(
                "a diff snapshot needs a VM that tracks dirty pages".into(),
            ))
        }
        (None, _) => MemoryImage::Full,
    };
    let snap = VmmSnapshot {
        crvmm_version: env!("CARGO_PKG_VERSION").into(),
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        nested_pvm: config.nested_pvm,
        machine: vm.save_state().map_err(SnapshotError::Save)?,
        devices: devices.save(),
        memory,
    };
    let mem_path = dir.join(MEMORY_FILE);
    let f = File::create(&mem_path).map_err(io("create", &mem_path))?;
    let mem_bytes = match &snap.memory {
        MemoryImage::Full => memory::dump(vm.memory(), &f)?,
        MemoryImage::Diff { dirty, .. } => memory::dump_dirty(vm.memory(), dirty, &f)?,
    };
    f.sync_all().map_err(io("sync", &mem_path))?;
    let state_path = dir.join(STATE_FILE);
    let state_bytes = crvmm_snapshot::write_atomic(&state_path, |f| {
        crvmm_snapshot::write(f, &snap).map_err(std::io::Error::other)
    })
    .map_err(|e| SnapshotError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })?;
    Ok(mem_bytes + state_bytes)
}

/// Reads and checks a snapshot's state file (size cap, checksum, version).
pub fn read_state(dir: &Path) -> Result<VmmSnapshot, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let mut f = File::open(&path).map_err(io("open", &path))?;
    let (_, snap): (_, VmmSnapshot) =
        crvmm_snapshot::read(&mut f, crvmm_snapshot::DEFAULT_MAX_PAYLOAD)
            .map_err(|source| SnapshotError::State { path, source })?;
    if snap.machine.vcpus.len() != usize::from(snap.vcpus) || snap.vcpus == 0 {
        return Err(SnapshotError::Inconsistent(format!(
            "{} vCPU states for {} vCPUs",
            snap.machine.vcpus.len(),
            snap.vcpus
        )));
    }
    if snap.machine.mem_size != u64::from(snap.mem_mib) << 20 {
        return Err(SnapshotError::Inconsistent(format!(
            "memory size {} bytes for {} MiB",
            snap.machine.mem_size, snap.mem_mib
        )));
    }
    Ok(snap)
}

/// Reads a snapshot: its state, and its memory (checked against the state's
/// size) mapped or read as `mode` says. A diff is applied on its parent's
/// memory, recursively down to a full snapshot.
pub fn load(dir: &Path, mode: LoadMode) -> Result<(VmmSnapshot, GuestMemoryMmap), SnapshotError> {
    let snap = read_state(dir)?;
    let mem = load_memory(dir, &snap, mode, 0)?;
    Ok((snap, mem))
}

fn load_memory(
    dir: &Path,
    snap: &VmmSnapshot,
    mode: LoadMode,
    depth: usize,
) -> Result<GuestMemoryMmap, SnapshotError> {
    let size = snap.machine.mem_size;
    match &snap.memory {
        MemoryImage::Full => Ok(memory::load(&dir.join(MEMORY_FILE), size, mode)?),
        MemoryImage::Diff { parent, dirty } => {
            if depth >= MAX_CHAIN {
                return Err(SnapshotError::Inconsistent(format!(
                    "diff chain longer than {MAX_CHAIN} snapshots"
                )));
            }
            dirty.check(size).map_err(SnapshotError::Inconsistent)?;
            let parent_snap = read_state(parent).map_err(|e| {
                SnapshotError::Inconsistent(format!(
                    "parent snapshot {} of the diff in {}: {}",
                    parent.display(),
                    dir.display(),
                    crate::error_chain(&e)
                ))
            })?;
            if parent_snap.machine.mem_size != size {
                return Err(SnapshotError::Inconsistent(format!(
                    "parent snapshot {} has {} bytes of memory, the diff {size}",
                    parent.display(),
                    parent_snap.machine.mem_size
                )));
            }
            let mem = load_memory(parent, &parent_snap, mode, depth + 1)?;
            memory::apply_dirty(&mem, dirty, &dir.join(MEMORY_FILE))?;
            Ok(mem)
        }
    }
}
