//! Replacing a file so that a reader, or a crash at any moment, sees either
//! the old contents or the new ones, never a mix and never a partial file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why an atomic write failed. The previous file, if any, is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}")]
pub struct AtomicWriteError {
    /// What was being done.
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Writes `path` by streaming into a temporary file in the same directory
/// (`fill` gets the open file), syncing it, renaming it over `path`, and
/// syncing the directory. On any error the temporary file is removed.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<u64, AtomicWriteError>
where
    F: FnOnce(&mut File) -> io::Result<u64>,
{
    let err = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| AtomicWriteError { op, path, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        let written = fill(&mut file).map_err(err("write", &tmp))?;
        file.flush().map_err(err("write", &tmp))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(err("rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("sync directory", dir))?;
        Ok(written)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "crvmm-atomic-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_the_file() {
        let d = dir();
        let p = d.join("state");
        fs::write(&p, b"old").unwrap();
        write_atomic(&p, |f| f.write_all(b"new contents").map(|_| 12)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_nothing() {
        let d = dir();
        let p = d.join("state");
        fs::write(&p, b"old").unwrap();
        let err = write_atomic(&p, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.op, "write");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn missing_directory_is_an_error() {
        let err = write_atomic(Path::new("/nonexistent-dir/x"), |_| Ok(0)).unwrap_err();
        assert_eq!(err.op, "create");
    }
}
