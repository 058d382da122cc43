//! The open files of a process: `struct cr_files` (the number of FILE
//! records and the working directory's path, which follows it) and one
//! open file descriptor, `struct cr_file` (its path follows it), with the
//! checkpoint flag that makes the standard descriptors inherited.

use serde::{Serialize, Serializer};

#[cfg(any(test, feature = "builder"))]
use super::wire::put;
use super::{Le, Wire};

/// `CR_CHECKPOINT_INHERIT_STDIO`: descriptors 0, 1 and 2 are not saved
/// but marked [`FILE_INHERIT`]: the process restarts with those of the
/// caller of restart. Pipe ends, unix sockets and eventfds among them are
/// saved as [`FILE_PIPE`], [`FILE_UNIX`] and [`FILE_EVENTFD`], which the
/// caller may satisfy with a file of its choosing.
pub const CHECKPOINT_INHERIT_STDIO: u32 = 0x1;
/// `CR_FLAGS_MASK`: every checkpoint flag, the only header flags.
pub const CHECKPOINT_FLAGS_MASK: u32 = CHECKPOINT_INHERIT_STDIO;

/// `CR_MAX_FILES`: the most FILE records an image holds.
pub const MAX_FILES: u32 = 65536;
/// `CR_MAX_FD`: no descriptor is this high (`NR_OPEN`).
pub const MAX_FD: u32 = 1 << 20;

/// `CR_FILE_REG`: a regular file, reopened by path.
pub const FILE_REG: u32 = 1;
/// `CR_FILE_DIR`: a directory, reopened by path.
pub const FILE_DIR: u32 = 2;
/// `CR_FILE_CHR`: a character device, reopened by path.
pub const FILE_CHR: u32 = 3;
/// `CR_FILE_INHERIT`: the restart caller's own descriptor (stdio).
pub const FILE_INHERIT: u32 = 4;
/// `CR_FILE_DELETED`: a regular file deleted while open; its `size` bytes
/// of content follow the path it had.
pub const FILE_DELETED: u32 = 5;
/// `CR_FILE_PIPE`: an end of a pipe or FIFO, which the restart caller puts
/// at its descriptor: `rdev` is the pipe's inode number (the same in every
/// image of one checkpoint), `size` the bytes it held, the path a FIFO's
/// (none for a pipe).
pub const FILE_PIPE: u32 = 6;
/// `CR_FILE_UNIX`: an unnamed AF_UNIX socket (a socketpair's), which the
/// restart caller puts at its descriptor: `rdev` is its inode number,
/// `size` its peer's (0: gone), `sock_type` its type; no path.
pub const FILE_UNIX: u32 = 7;
/// `CR_FILE_EVENTFD`: an eventfd, which the restart caller puts at its
/// descriptor (the caller saves its count); no path.
pub const FILE_EVENTFD: u32 = 8;
/// `CR_MAX_DELETED`: the largest deleted file saved.
pub const MAX_DELETED: u64 = 32 << 20;

/// `CR_FILE_FLAGS_MASK`: the `open(2)` status flags kept (access mode,
/// `O_APPEND`, `O_NONBLOCK`, `O_DSYNC`, `O_DIRECT`, `O_LARGEFILE`,
/// `O_NOATIME`, `O_SYNC`; x86-64 values).
pub const FILE_FLAGS_MASK: u32 = 0x14_dc03;
/// `O_ACCMODE`: the access mode bits of the status flags.
pub const O_ACCMODE: u32 = 0x3;
/// `O_RDONLY`.
pub const O_RDONLY: u32 = 0x0;
/// `O_WRONLY`.
pub const O_WRONLY: u32 = 0x1;
/// `O_RDWR`.
pub const O_RDWR: u32 = 0x2;
/// `O_APPEND`.
pub const O_APPEND: u32 = 0x400;
/// `O_NONBLOCK`.
pub const O_NONBLOCK: u32 = 0x800;
/// `O_DIRECT` (packet mode, for a pipe).
pub const O_DIRECT: u32 = 0x4000;
/// `CR_FD_CLOEXEC`: the descriptor is closed on `execve()`.
pub const FD_CLOEXEC: u32 = 0x1;

/// The name of a `CR_FILE_*` kind, if defined.
pub fn file_kind_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        FILE_REG => "reg",
        FILE_DIR => "dir",
        FILE_CHR => "chr",
        FILE_INHERIT => "inherit",
        FILE_DELETED => "deleted",
        FILE_PIPE => "pipe",
        FILE_UNIX => "unix",
        FILE_EVENTFD => "eventfd",
        _ => return None,
    })
}

/// `struct cr_files` (the working directory's path follows it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Files {
    /// FILE records that follow the record, in increasing fd order.
    pub nr_files: u32,
    /// Bytes of the working directory's path, with its NUL.
    pub cwd_len: u32,
}

impl Wire for Files {
    fn decode(r: &mut Le<'_>) -> Self {
        Files {
            nr_files: r.u32(),
            cwd_len: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.nr_files.to_le_bytes());
        put(out, &self.cwd_len.to_le_bytes());
    }
}

/// `struct cr_file`: one open descriptor (its path follows it). Shown
/// with its kind by name and `fd_flags` as `cloexec`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct File {
    /// The descriptor.
    pub fd: i32,
    /// `CR_FILE_*`; shown by name.
    #[serde(serialize_with = "kind_name")]
    pub kind: u32,
    /// `open(2)` status flags, within `CR_FILE_FLAGS_MASK`.
    pub flags: u32,
    /// `CR_FD_CLOEXEC`; shown as a boolean.
    #[serde(rename = "cloexec", serialize_with = "cloexec")]
    pub fd_flags: u32,
    /// The file position.
    pub pos: u64,
    /// A regular file's size at checkpoint, which restart checks.
    pub size: u64,
    /// A character device's number (`new_encode_dev()`).
    pub rdev: u64,
    /// Bytes of path that follow, with its NUL (0 for an inherited one).
    pub path_len: u32,
    /// A socket's type (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_SEQPACKET`
    /// 5) for [`FILE_UNIX`]; zero for the other kinds.
    #[serde(skip_serializing_if = "is_zero")]
    pub sock_type: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn kind_name<S: Serializer>(kind: &u32, s: S) -> Result<S::Ok, S::Error> {
    match file_kind_name(*kind) {
        Some(name) => s.serialize_str(name),
        None => s.serialize_u32(*kind),
    }
}

fn cloexec<S: Serializer>(fd_flags: &u32, s: S) -> Result<S::Ok, S::Error> {
    // The verifier refuses any other bit before a record is shown.
    s.serialize_bool(fd_flags & FD_CLOEXEC != 0)
}

impl Wire for File {
    fn decode(r: &mut Le<'_>) -> Self {
        File {
            fd: r.i32(),
            kind: r.u32(),
            flags: r.u32(),
            fd_flags: r.u32(),
            pos: r.u64(),
            size: r.u64(),
            rdev: r.u64(),
            path_len: r.u32(),
            sock_type: r.u32(),
        }
    }

    #[cfg(any(test, feature = "builder"))]
    fn encode(&self, out: &mut Vec<u8>) {
        put(out, &self.fd.to_le_bytes());
        put(out, &self.kind.to_le_bytes());
        put(out, &self.flags.to_le_bytes());
        put(out, &self.fd_flags.to_le_bytes());
        put(out, &self.pos.to_le_bytes());
        put(out, &self.size.to_le_bytes());
        put(out, &self.rdev.to_le_bytes());
        put(out, &self.path_len.to_le_bytes());
        put(out, &self.sock_type.to_le_bytes());
    }
}
