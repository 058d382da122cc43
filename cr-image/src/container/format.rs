//! The container image format, version 3: constants, the manifest, and the
//! record header shared by the writer and the reader.
//!
//! A container image is a stream of records laid out like the kernel's
//! (`u32 type | u32 len | payload | zero padding to 8 bytes`, little
//! endian), with record types of their own (0x100 and up) so that a reader
//! tells the two kinds apart from the first record:
//!
//! ```text
//! HEADER            magic, version, manifest (JSON)
//! QUEUE *           index, the bytes a pipe or socket of the manifest
//!                   held (v2)
//! SHM *             index, offset, bytes of a shared memory object of
//!                   the manifest, parts that are not zero, in order (v3)
//! ( PROCESS         index, pid in the container
//!   DATA *          the kernel's image of that process, in chunks
//!   PROCESS_END ) * bytes and digest of that kernel image
//! TRAILER           magic, records before it, digest of the stream before it
//! ```
//!
//! A checkpoint that fails after it started writing ends the stream with an
//! ERROR record instead of the rest. See `docs/container-image.md`.
//!
//! Digests are XXH3-128 (little endian): a checksum against damage, fast
//! enough that hashing never holds up a frozen container. Each byte is
//! hashed once: a process's kernel image (the DATA payloads) by its
//! PROCESS_END digest, every other byte of the stream before the trailer
//! (record headers, other payloads, padding) by the trailer's.

use serde::{Deserialize, Serialize};

/// "CRVMMCTR" as a little-endian u64: first field of the header record.
pub const CT_MAGIC: u64 = u64::from_le_bytes(*b"CRVMMCTR");
/// "CRVMMEND": first field of the trailer record.
pub const CT_TRAILER_MAGIC: u64 = u64::from_le_bytes(*b"CRVMMEND");
/// The format version this crate writes; it reads this one and version 1
/// (which has no pipes).
pub const CT_VERSION: u32 = 3;

/// Record types.
pub const CT_REC_HEADER: u32 = 0x100;
/// Starts the kernel image of one process.
pub const CT_REC_PROCESS: u32 = 0x101;
/// A chunk of the current process's kernel image.
pub const CT_REC_DATA: u32 = 0x102;
/// Ends the kernel image of one process.
pub const CT_REC_PROCESS_END: u32 = 0x103;
/// The checkpoint failed: errno and message.
pub const CT_REC_ERROR: u32 = 0x104;
/// The bytes one pipe or socket of the manifest held (version 2).
pub const CT_REC_QUEUE: u32 = 0x105;
/// Record type: bytes of a shared memory object.
pub const CT_REC_SHM: u32 = 0x106;
/// The last record.
pub const CT_REC_TRAILER: u32 = 0x1ff;

/// The largest DATA payload.
pub const CT_MAX_CHUNK: usize = 1 << 20;
/// The largest manifest.
pub const CT_MAX_MANIFEST: usize = 1 << 20;
/// The largest error message.
pub const CT_MAX_MESSAGE: usize = 4096;
/// The most processes one image holds.
pub const CT_MAX_PROCESSES: usize = 4096;

/// Bytes of the header payload before the manifest.
pub const HEADER_FIXED: usize = 24;
/// Bytes of a PROCESS payload.
pub const PROCESS_LEN: usize = 8;
/// Bytes of a PROCESS_END payload.
pub const PROCESS_END_LEN: usize = 32;
/// Bytes of an ERROR payload before the message.
pub const ERROR_FIXED: usize = 8;
/// Bytes of a TRAILER payload.
pub const TRAILER_LEN: usize = 32;

/// A digest: XXH3-128, little endian.
pub type Digest = [u8; 16];

/// A digest in hex, as reports show it.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the agent knows about a container, stored at the head of its image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The container's id when it was checkpointed.
    pub id: String,
    /// Seconds since the epoch at the checkpoint.
    pub created: u64,
    /// The guest kernel's release (restart needs the same).
    pub kernel_release: String,
    /// The kernel image format version (`/sys/kernel/checkpoint/format_version`).
    pub kernel_format: u32,
    /// The container's OCI runtime spec (`config.json`), as given.
    pub spec: serde_json::Value,
    /// Namespaces the container has of its own (`pid`, `mount`, ...).
    pub namespaces: Vec<String>,
    /// Its hostname (UTS namespace).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The processes, parents before children; `index` orders the images.
    pub processes: Vec<ProcessEntry>,
    /// Whether the container was left running after the checkpoint.
    #[serde(default)]
    pub leave_running: bool,
    /// Processes that had exited and were not yet reaped by their parent
    /// (zombies): no kernel image, restore makes each exit again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zombies: Vec<ZombieEntry>,
    /// The container's clocks at the checkpoint, as its processes saw them
    /// (time namespace offsets included): restore puts the new container
    /// in a time namespace that goes on from them, so that they never go
    /// back, in this VM or another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clocks: Option<Clocks>,
    /// The pipes and FIFOs its processes share (see `pipes.rs`); their
    /// bytes follow the header, one QUEUE record each, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipes: Vec<super::pipes::PipeEntry>,
    /// The socketpairs they share (see `sockets.rs`); each one's two
    /// receive queues follow the pipes', side 0 then side 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub socketpairs: Vec<super::sockets::SocketPairEntry>,
    /// The eventfds they share (see `eventfds.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eventfds: Vec<super::eventfds::EventfdEntry>,
    /// Its shared memory (see `shm.rs`); the content follows the QUEUE
    /// records, in SHM records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_memory: Vec<super::shm::ShmEntry>,
}

/// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME`, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    /// `CLOCK_MONOTONIC`.
    pub monotonic_ns: u64,
    /// `CLOCK_BOOTTIME`.
    pub boottime_ns: u64,
}

/// A zombie of the container: exited, waiting for its parent's `wait()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZombieEntry {
    /// Its pid in the container's pid namespace.
    pub pid: i32,
    /// Its parent there: a process of [`Manifest::processes`].
    pub ppid: i32,
    /// Its command name.
    #[serde(default)]
    pub comm: String,
    /// Its process group and session there (0: outside the namespace).
    #[serde(default)]
    pub pgid: i32,
    /// (See `pgid`.)
    #[serde(default)]
    pub sid: i32,
    /// Its wait status, as `waitpid()` reports it: exit code << 8, or the
    /// number of the signal that killed it (core dump bit included).
    pub status: i32,
}

impl ZombieEntry {
    /// Whether `status` is one `waitpid()` can report for an ended
    /// process: exited with a code of 0 to 255, or killed by a signal 1 to
    /// 64 (with or without the core dump bit).
    pub fn status_valid(status: i32) -> bool {
        let sig = status & 0x7f;
        match sig {
            0 => (0..=0xff00).contains(&status) && status & 0xff == 0,
            _ => (1..=64).contains(&sig) && status & !0xff == 0,
        }
    }
}

/// One process of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Position of its image in the stream (0, 1, ...).
    pub index: u32,
    /// Its pid in the container's pid namespace.
    pub pid: i32,
    /// Its parent's pid there (0 for the container's init).
    pub ppid: i32,
    /// Its pid in the guest (informational).
    #[serde(default)]
    pub guest_pid: i32,
    /// Its command name.
    #[serde(default)]
    pub comm: String,
    /// Its process group in the container's pid namespace (0: a group
    /// outside it, which the restored process inherits from the restorer).
    #[serde(default)]
    pub pgid: i32,
    /// Its session there (0 likewise).
    #[serde(default)]
    pub sid: i32,
}

/// Bytes of padding after a payload of `len` bytes.
pub fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Little-endian field readers over a payload known to be long enough.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
