//! ReadFile and WriteFile.
//!
//! Reads take regular files only and check the size before reading.
//! Writes go to a temporary file in the target's directory that is renamed
//! over the target once complete, so a failed write never leaves half a file.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crvmm_protocol::ErrorKind;

/// Permission bits of a file that did not exist before, unless the request
/// names others.
pub const DEFAULT_MODE: u32 = 0o644;

/// Errors of file requests.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Paths must be absolute.
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    /// The path ends in no file name (`/`, `/a/..`).
    #[error("{0} does not name a file")]
    NoFileName(String),
    /// Only regular files can be read.
    #[error("{path} is a {what}, not a regular file")]
    NotRegular {
        /// The requested path.
        path: String,
        /// What it is instead.
        what: &'static str,
    },
    /// The file or data exceeds the protocol's limit.
    #[error("{path} is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// The requested path.
        path: String,
        /// Its size, or at least this much when it grew while read.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Permission bits beyond 0o7777.
    #[error("mode {0:#o} is not a permission mode")]
    BadMode(u32),
    /// Opening the file to read failed.
    #[error("failed to open {path}")]
    Open {
        /// The requested path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading the file failed.
    #[error("failed to read {path}")]
    Read {
        /// The requested path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be created.
    #[error("failed to create a temporary file for {path}")]
    CreateTemp {
        /// The requested path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the temporary file failed.
    #[error("failed to write the new contents of {path}")]
    Write {
        /// The requested path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Renaming the temporary file over the target failed.
    #[error("failed to replace {path}")]
    Rename {
        /// The requested path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl FilesError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FilesError::NotAbsolute(_)
            | FilesError::NoFileName(_)
            | FilesError::NotRegular { .. }
            | FilesError::BadMode(_) => ErrorKind::BadRequest,
            FilesError::TooLarge { .. } => ErrorKind::TooLarge,
            FilesError::Open { source, .. }
            | FilesError::Read { source, .. }
            | FilesError::CreateTemp { source, .. }
            | FilesError::Write { source, .. }
            | FilesError::Rename { source, .. } => source.into(),
        }
    }
}

fn absolute(path: &str) -> Result<&Path, FilesError> {
    let p = Path::new(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(FilesError::NotAbsolute(path.to_owned()))
    }
}

/// Reads the regular file at `path`, at most `max` bytes.
pub fn read(path: &str, max: usize) -> Result<Vec<u8>, FilesError> {
    let p = absolute(path)?;
    let open_error = |source| FilesError::Open {
        path: path.to_owned(),
        source,
    };
    let read_error = |source| FilesError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO must not hang before we can refuse it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)
        .map_err(open_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(FilesError::NotRegular {
            path: path.to_owned(),
            what: describe(&meta.file_type()),
        });
    }
    let too_large = |len| FilesError::TooLarge {
        path: path.to_owned(),
        len,
        max,
    };
    if meta.len() > max as u64 {
        return Err(too_large(meta.len()));
    }
    // The size may be 0 (procfs) or grow while we read: cap the read too.
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if data.len() > max {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
}

fn describe(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Creates or replaces the file at `path` with `data`. Without `mode`, a
/// replaced file keeps its permission bits and a new one gets
/// [`DEFAULT_MODE`].
pub fn write(path: &str, data: &[u8], mode: Option<u32>, max: usize) -> Result<(), FilesError> {
    let p = absolute(path)?;
    if data.len() > max {
        return Err(FilesError::TooLarge {
            path: path.to_owned(),
            len: data.len() as u64,
            max,
        });
    }
    if let Some(mode) = mode.filter(|m| m & !0o7777 != 0) {
        return Err(FilesError::BadMode(mode));
    }
    let (Some(dir), Some(_)) = (p.parent(), p.file_name()) else {
        return Err(FilesError::NoFileName(path.to_owned()));
    };
    let mode = mode
        .or_else(|| {
            fs::metadata(p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.permissions().mode() & 0o7777)
        })
        .unwrap_or(DEFAULT_MODE);

    let temp = temp_path(dir);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|source| FilesError::CreateTemp {
            path: path.to_owned(),
            source,
        })?;
    let result = fill(&mut file, data, mode)
        .map_err(|source| FilesError::Write {
            path: path.to_owned(),
            source,
        })
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, p).map_err(|source| FilesError::Rename {
                path: path.to_owned(),
                source,
            })
        });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes the contents, sets the exact mode (no umask) and syncs the data,
/// so the rename publishes a complete file.
fn fill(file: &mut File, data: &[u8], mode: u32) -> io::Result<()> {
    file.write_all(data)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    file.sync_all()
}

/// A fresh name in `dir` that no other writer (thread or agent) uses.
fn temp_path(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".crvmm-agent-{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crvmm_protocol::MAX_FILE_LEN;

    /// A directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("crvmm-agent-test-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn path(&self, name: &str) -> String {
            self.0.join(name).to_str().unwrap().to_owned()
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn round_trip_all_byte_values() {
        let dir = TempDir::new("files");
        let path = dir.path("data.bin");
        let data: Vec<u8> = (0..=255).collect();
        write(&path, &data, None, MAX_FILE_LEN).unwrap();
        assert_eq!(read(&path, MAX_FILE_LEN).unwrap(), data);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, DEFAULT_MODE);
        assert_eq!(dir.entries(), ["data.bin"]);
    }

    #[test]
    fn mode_is_exact_and_kept_on_replace() {
        let dir = TempDir::new("mode");
        let path = dir.path("script");
        write(&path, b"#!/bin/sh\n", Some(0o755), MAX_FILE_LEN).unwrap();
        write(&path, b"#!/bin/sh\ntrue\n", None, MAX_FILE_LEN).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        assert_eq!(read(&path, MAX_FILE_LEN).unwrap(), b"#!/bin/sh\ntrue\n");
        let err = write(&path, b"", Some(0o100644), MAX_FILE_LEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn write_into_missing_directory_fails_cleanly() {
        let dir = TempDir::new("missing");
        let err = write(&dir.path("nope/file"), b"x", None, MAX_FILE_LEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("nope/file"), "{err}");
        assert!(dir.entries().is_empty());
    }

    #[test]
    fn failed_rename_leaves_no_temp_file() {
        let dir = TempDir::new("rename");
        fs::create_dir(dir.0.join("sub")).unwrap();
        fs::write(dir.0.join("sub/keep"), b"x").unwrap();
        // Renaming a file over a non-empty directory fails.
        let err = write(&dir.path("sub"), b"data", None, MAX_FILE_LEN).unwrap_err();
        assert!(matches!(err, FilesError::Rename { .. }), "{err:?}");
        assert_eq!(dir.entries(), ["sub"]);
    }

    #[test]
    fn relative_paths_are_refused() {
        assert_eq!(
            write("rel/x", b"", None, MAX_FILE_LEN).unwrap_err().kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(
            read("rel/x", MAX_FILE_LEN).unwrap_err().kind(),
            ErrorKind::BadRequest
        );
        assert_eq!(
            write("/", b"", None, MAX_FILE_LEN).unwrap_err().kind(),
            ErrorKind::BadRequest
        );
    }

    #[test]
    fn reading_a_directory_or_device_is_a_bad_request() {
        let dir = TempDir::new("dir");
        let err = read(dir.path("").trim_end_matches('/'), MAX_FILE_LEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.to_string().contains(dir.0.to_str().unwrap()), "{err}");
        assert!(err.to_string().contains("directory"), "{err}");
        let err = read("/dev/null", MAX_FILE_LEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = TempDir::new("nf");
        assert_eq!(
            read(&dir.path("x"), MAX_FILE_LEN).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn size_limits() {
        let dir = TempDir::new("size");
        let path = dir.path("big");
        fs::write(&path, vec![7u8; 100]).unwrap();
        assert_eq!(read(&path, 99).unwrap_err().kind(), ErrorKind::TooLarge);
        assert_eq!(read(&path, 100).unwrap().len(), 100);
        let err = write(&dir.path("new"), &[0u8; 100], None, 99).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert_eq!(dir.entries(), ["big"]);
    }
}
