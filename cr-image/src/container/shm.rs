//! Shared memory of a container: MAP_SHARED anonymous mappings and SysV
//! shm segments.
//!
//! The kernel saves a shared mapping in the image of each process that
//! has it (a VMA record with the object's id: `CR_VMA_SHMEM` with its
//! inode number, `CR_VMA_SYSV` with the segment's id) but not the memory,
//! which belongs to no single process. The agent saves each object once:
//! a [`ShmEntry`] in the manifest and its content in SHM records after the
//! QUEUE records, `(index, offset, bytes)`, only the parts that are not
//! zero. At restore it makes each object again with that content: it gives
//! a shared anonymous object to every process that maps it (restart maps
//! it), and makes each SysV segment again, with its id, key, owner and
//! mode, in the new container's IPC namespace (restart attaches it).

use serde::{Deserialize, Serialize};

use super::format::Manifest;

/// The most shared memory objects one image holds (`CR_MAX_SHM`).
pub const CT_MAX_SHM: usize = 4096;
/// The largest object (1 TiB): far above what a guest holds, far below
/// what overflows an offset.
pub const CT_MAX_SHM_SIZE: u64 = 1 << 40;
/// Bytes of an SHM payload before the data: index, pad, offset.
pub const SHM_FIXED: usize = 16;
/// The largest SysV id (an `int`).
const MAX_SYSV_ID: u64 = i32::MAX as u64;

/// What kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShmKind {
    /// `MAP_SHARED | MAP_ANONYMOUS` memory, shared by `fork()`.
    #[default]
    Anon,
    /// A SysV shm segment (`shmget`).
    Sysv,
}

/// One shared memory object of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmEntry {
    /// Anonymous or SysV.
    pub kind: ShmKind,
    /// Anonymous: its inode number at the checkpoint (the `shm_id` of its
    /// VMA records); SysV: the segment's id, which it keeps.
    pub id: u64,
    /// Its size in bytes.
    pub size: u64,
    /// SysV: its key (0: `IPC_PRIVATE`, as after `IPC_RMID`).
    #[serde(default)]
    pub key: i32,
    /// SysV: its permission bits (0o777 at most).
    #[serde(default)]
    pub mode: u32,
    /// SysV: its owner's user and group ids, as the agent saw them.
    #[serde(default)]
    pub uid: u32,
    /// See `uid`.
    #[serde(default)]
    pub gid: u32,
    /// SysV: removed (`IPC_RMID`) while still attached: it goes when the
    /// last process detaches it.
    #[serde(default)]
    pub removed: bool,
    /// Anonymous: the processes that map it (container pids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<i32>,
}

/// Checks the manifest's shared memory objects.
pub(crate) fn check_shm(m: &Manifest) -> Result<(), String> {
    let all = &m.shared_memory;
    if all.len() > CT_MAX_SHM {
        return Err(format!("{} shared memory objects", all.len()));
    }
    for (i, e) in all.iter().enumerate() {
        let bad = |what: String| Err(format!("shared memory object {i}: {what}"));
        if e.size == 0 || e.size > CT_MAX_SHM_SIZE {
            return bad(format!("size {}", e.size));
        }
        if all[..i].iter().any(|o| o.kind == e.kind && o.id == e.id) {
            return bad(format!("id {} twice", e.id));
        }
        match e.kind {
            ShmKind::Anon => {
                let sysv_fields = e.key != 0 || e.mode != 0 || e.uid != 0 || e.gid != 0;
                if sysv_fields || e.removed {
                    return bad("SysV fields on anonymous memory".into());
                }
                if e.pids.is_empty() {
                    return bad("no process maps it".into());
                }
                for (k, pid) in e.pids.iter().enumerate() {
                    if !m.processes.iter().any(|p| p.pid == *pid) || e.pids[..k].contains(pid) {
                        return bad(format!("pid {pid} is not a process of the image, or twice"));
                    }
                }
            }
            ShmKind::Sysv => {
                if e.id > MAX_SYSV_ID || e.mode > 0o777 || !e.pids.is_empty() {
                    return bad(format!("id {} mode {:#o}", e.id, e.mode));
                }
                if e.removed && e.key != 0 {
                    return bad("removed, but still has a key".into());
                }
            }
        }
    }
    Ok(())
}

/// Checks that an SHM record of object `index` at `offset` with `len`
/// bytes may come after one of object `last.0` that ended at `last.1`.
pub(crate) fn check_data(
    m: &Manifest,
    last: (u32, u64),
    index: u32,
    offset: u64,
    len: usize,
) -> Result<(), String> {
    let Some(entry) = m.shared_memory.get(index as usize) else {
        return Err(format!(
            "shared memory data for object {index}, not in the manifest"
        ));
    };
    let after = if index == last.0 { last.1 } else { 0 };
    let end = offset.checked_add(len as u64);
    if index < last.0 || offset < after || len == 0 || end.is_none_or(|e| e > entry.size) {
        return Err(format!(
            "shared memory data of object {index} at {offset} ({len} bytes) out of order or \
             outside its {} bytes",
            entry.size
        ));
    }
    Ok(())
}
