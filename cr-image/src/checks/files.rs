//! The field checks of the open files: the files record (the number of
//! file records, the working directory) and each file record, as restart
//! makes them before it reopens anything. Whether the file records' fds
//! increase, and whether there are as many as announced, is `verify`'s.

use std::mem::{offset_of, size_of};

use super::Ctx;
use crate::format::{
    c_str, named, File, Files, Named, Wire, FD_CLOEXEC, FILE_CHR, FILE_DELETED, FILE_DIR,
    FILE_EVENTFD, FILE_FLAGS_MASK, FILE_INHERIT, FILE_PIPE, FILE_REG, FILE_UNIX, MAX_DELETED,
    MAX_FD, MAX_FILES, MAX_PATH, O_ACCMODE, O_DIRECT, O_RDONLY, O_RDWR,
};
use crate::ImageError;

/// The largest file position or size (`loff_t` is signed).
const LOFF_MAX: u64 = i64::MAX as u64;

/// `cr_read_files()`: the count of file records and the working directory.
pub(crate) fn files(ctx: &Ctx, payload: &[u8], len: u32) -> Result<(Files, String), ImageError> {
    let f = Files::from_bytes(payload);
    let nr = named!(Files, f.nr_files);
    if f.nr_files > MAX_FILES {
        return Err(ctx.bad(nr, "more than CR_MAX_FILES (65536) file records"));
    }
    let cwd_len = named!(Files, f.cwd_len);
    if f.cwd_len < 2 || f.cwd_len > MAX_PATH {
        let problem = "the working directory's path has 2 to CR_MAX_PATH (4096) bytes";
        return Err(ctx.bad(cwd_len, problem));
    }
    let expected = size_of::<Files>() as u64 + u64::from(f.cwd_len);
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(cwd_len, len, expected));
    }
    let cwd = path(ctx, size_of::<Files>(), "cwd", payload, "")?;
    Ok((f, cwd))
}

/// What a file record is checked against besides its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileCheck {
    /// Its index among the image's file records, from 0.
    pub index: u32,
    /// Whether the header has `CR_CHECKPOINT_INHERIT_STDIO`.
    pub inherit_stdio: bool,
}

/// `cr_read_file()`, less reopening the file: one descriptor, its flags,
/// position and kind, and its path. Problems are prefixed with the file's
/// index and fd, as restart's log lines are.
pub(crate) fn file(
    ctx: &Ctx,
    payload: &[u8],
    len: u32,
    check: FileCheck,
) -> Result<(File, Option<String>), ImageError> {
    let f = File::from_bytes(payload);
    let prefix = format!("file {} (fd {}): ", check.index, f.fd);
    let bad = |field: Named, problem: &str| ctx.bad(field, format!("{prefix}{problem}"));
    let fd = Named {
        name: "fd",
        offset: offset_of!(File, fd),
        value: u64::from(f.fd as u32),
    };
    let kind = named!(File, f.kind);
    let flags = named!(File, f.flags);
    let pos = named!(File, f.pos);
    let size = named!(File, f.size);
    let rdev = named!(File, f.rdev);
    let path_len = named!(File, f.path_len);
    let sock_type = named!(File, f.sock_type);
    if f.kind != FILE_UNIX && f.sock_type != 0 {
        return Err(bad(sock_type, "must be zero but for a unix socket"));
    }
    if f.fd < 0 || f.fd as u32 >= MAX_FD {
        return Err(bad(fd, "not a descriptor (0 to CR_MAX_FD - 1, 1048575)"));
    }
    if !(FILE_REG..=FILE_EVENTFD).contains(&f.kind) {
        return Err(bad(
            kind,
            "not a file kind (CR_FILE_REG to CR_FILE_EVENTFD)",
        ));
    }
    if f.flags & !FILE_FLAGS_MASK != 0 {
        return Err(bad(
            flags,
            "open flags beyond CR_FILE_FLAGS_MASK (0x14dc03)",
        ));
    }
    if f.flags & O_ACCMODE == O_ACCMODE {
        return Err(bad(
            flags,
            "access mode 3 is none of O_RDONLY, O_WRONLY, O_RDWR",
        ));
    }
    if f.fd_flags & !FD_CLOEXEC != 0 {
        let problem = "descriptor flags other than CR_FD_CLOEXEC";
        return Err(bad(named!(File, f.fd_flags), problem));
    }
    if f.pos > LOFF_MAX {
        return Err(bad(pos, "beyond the largest file position (i64::MAX)"));
    }
    let zero = |fields: &[Named], what: &str| match fields.iter().find(|field| field.value != 0) {
        Some(&field) => Err(bad(field, &format!("must be zero for {what}"))),
        None => Ok(()),
    };
    if f.kind == FILE_INHERIT {
        zero(
            &[path_len, flags, pos, size, rdev],
            "an inherited descriptor (CR_FILE_INHERIT)",
        )?;
        if f.fd > 2 {
            return Err(bad(fd, "only descriptors 0, 1 and 2 are inherited"));
        }
        if !check.inherit_stdio {
            let problem = "an inherited descriptor needs the header flag \
                           CR_CHECKPOINT_INHERIT_STDIO";
            return Err(bad(kind, problem));
        }
    } else if f.kind == FILE_EVENTFD {
        zero(&[path_len, pos, size, rdev], "an eventfd")?;
        if f.flags & O_ACCMODE != O_RDWR || f.flags & O_DIRECT != 0 {
            return Err(bad(flags, "an eventfd is open O_RDWR, without O_DIRECT"));
        }
    } else if f.kind == FILE_UNIX {
        // An unnamed socket, open read-write, of a type unix sockets have.
        zero(&[path_len, pos], "a unix socket")?;
        if ![1, 2, 5].contains(&f.sock_type) {
            return Err(bad(
                sock_type,
                "not SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET",
            ));
        }
        if f.flags & O_ACCMODE != O_RDWR || f.flags & O_DIRECT != 0 {
            return Err(bad(flags, "a socket is open O_RDWR, without O_DIRECT"));
        }
    } else if f.kind == FILE_PIPE {
        // A pipe has no path, a FIFO one; only a FIFO is open O_RDWR.
        if f.path_len != 0 && (f.path_len < 2 || f.path_len > MAX_PATH) {
            return Err(bad(
                path_len,
                "a FIFO's path has 2 to CR_MAX_PATH (4096) bytes",
            ));
        }
        zero(&[pos], "a pipe end")?;
        if f.flags & O_DIRECT != 0 {
            return Err(bad(flags, "a pipe end in packet mode (O_DIRECT)"));
        }
        if f.flags & O_ACCMODE == O_RDWR && f.path_len == 0 {
            return Err(bad(flags, "only a FIFO is open O_RDWR"));
        }
    } else if f.path_len < 2 || f.path_len > MAX_PATH {
        return Err(bad(path_len, "a path has 2 to CR_MAX_PATH (4096) bytes"));
    }
    match f.kind {
        FILE_REG => {
            zero(&[rdev], "a regular file")?;
            if f.size > LOFF_MAX {
                return Err(bad(size, "beyond the largest file size (i64::MAX)"));
            }
        }
        FILE_DIR => {
            if f.flags & O_ACCMODE != O_RDONLY {
                return Err(bad(flags, "a directory is open O_RDONLY"));
            }
            zero(&[size, rdev], "a directory")?;
        }
        FILE_CHR => zero(&[size], "a character device")?,
        FILE_DELETED => {
            zero(&[rdev], "a deleted file")?;
            if f.size > MAX_DELETED {
                let problem = "a deleted file's content is at most CR_MAX_DELETED (32 MiB)";
                return Err(bad(size, problem));
            }
        }
        _ => {}
    }
    let content = if f.kind == FILE_DELETED { f.size } else { 0 };
    let expected = size_of::<File>() as u64 + u64::from(f.path_len) + content;
    if u64::from(len) != expected {
        return Err(ctx.length_mismatch(path_len, len, expected));
    }
    let no_path = [FILE_INHERIT, FILE_UNIX, FILE_EVENTFD].contains(&f.kind);
    if no_path || (f.kind == FILE_PIPE && f.path_len == 0) {
        return Ok((f, None));
    }
    let end = size_of::<File>() + f.path_len as usize;
    let path = path(ctx, size_of::<File>(), "path", &payload[..end], &prefix)?;
    Ok((f, Some(path)))
}

/// The path at `off` to the end of `payload`, whose length the record's
/// has been checked against: absolute, its only NUL its last byte.
fn path(
    ctx: &Ctx,
    off: usize,
    name: &str,
    payload: &[u8],
    prefix: &str,
) -> Result<String, ImageError> {
    let bytes = payload.get(off..).unwrap_or_default();
    let value = bytes.len() as u64;
    if bytes.iter().position(|&b| b == 0) != Some(bytes.len().saturating_sub(1)) {
        let problem = format!("{prefix}not one NUL-terminated string of {value} bytes");
        return Err(ctx.field(off, name, value, problem));
    }
    if bytes.first() != Some(&b'/') {
        let problem = format!("{prefix}not an absolute path");
        return Err(ctx.field(off, name, value, problem));
    }
    Ok(c_str(bytes))
}
