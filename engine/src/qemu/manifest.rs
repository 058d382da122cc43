//! The manifest of a QEMU-engine snapshot: what it takes to start an
//! identical QEMU and to check that nothing the snapshot depends on changed.
//!
//! A snapshot directory holds two files:
//!
//! - `memory-and-devices`: QEMU's migration stream (RAM, vCPUs, devices) as
//!   its `migrate` command wrote it;
//! - `manifest.json`: this module's [`Manifest`]:
//!
//! ```json
//! { "format": "crvmm-qemu-snapshot", "version": 1, "engine": "qemu",
//!   "qemu": { "major": 7, "minor": 2, "micro": 22, "package": "Debian ..." },
//!   "created_unix_secs": 1796014837,
//!   "vm": { "mem_mib": 256, "vcpus": 1, "agent_channel": "serial",
//!           "extra_cmdline": "",
//!           "kernel": { "path": "/.../vmlinux", "size": 15600560, "sha256": "..." },
//!           "initrd": { "path": "/.../initramfs.cpio.gz", "size": ..., "sha256": "..." } },
//!   "stream": { "path": "memory-and-devices", "size": ..., "sha256": "..." } }
//! ```
//!
//! Compatibility policy: `format` is the magic and `version` the format
//! version; a reader accepts its own version only and refuses others with an
//! error naming both. Fields may be added with a default and no version bump
//! (readers ignore fields they do not know); removing a field or changing
//! its meaning bumps the version. The stream is QEMU's own: it loads into
//! the same QEMU major.minor version (stable updates keep their migration
//! format), so that is checked too. Integrity: every file a restore reads is
//! recorded with its size and SHA-256 and checked before QEMU starts; a
//! manifest above 1 MiB is refused unread.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sha256;
use super::snapshot::SnapshotError;
use crate::config::{AgentChannel, Console, VmConfig};

/// The manifest's file name in a snapshot directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The migration stream's file name in a snapshot directory.
pub const STREAM_FILE: &str = "memory-and-devices";
/// The manifest's magic.
pub const FORMAT: &str = "crvmm-qemu-snapshot";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The largest manifest a restore reads.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A snapshot's description (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub version: u64,
    /// The engine that took the snapshot: `qemu`.
    pub engine: String,
    /// The QEMU that wrote the stream.
    pub qemu: QemuVersion,
    /// When the snapshot was taken (seconds since the Unix epoch).
    pub created_unix_secs: u64,
    /// The machine to start.
    pub vm: VmDescription,
    /// The migration stream, relative to the snapshot directory.
    pub stream: FileDigest,
}

/// A QEMU version as `query-version` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QemuVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Micro (stable update) version.
    pub micro: u64,
    /// The distribution's package version, if any.
    #[serde(default)]
    pub package: String,
}

impl QemuVersion {
    /// Parses the `return` value of QMP `query-version`.
    pub fn from_qmp(reply: &Value) -> Option<QemuVersion> {
        let qemu = &reply["qemu"];
        Some(QemuVersion {
            major: qemu["major"].as_u64()?,
            minor: qemu["minor"].as_u64()?,
            micro: qemu["micro"].as_u64()?,
            package: reply["package"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
    }

    /// True when a stream written by `self` loads into `host`.
    pub fn loads_into(&self, host: &QemuVersion) -> bool {
        (self.major, self.minor) == (host.major, host.minor)
    }
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        if !self.package.is_empty() {
            write!(f, " ({})", self.package)?;
        }
        Ok(())
    }
}

/// What the restored QEMU is started with: the snapshot's [`VmConfig`]
/// without what belongs to the new VM (its name and console).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmDescription {
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The agent channel (always serial: vsock does not migrate).
    pub agent_channel: AgentChannel,
    /// The kernel command line after the engine's base.
    pub extra_cmdline: String,
    /// The kernel.
    pub kernel: FileDigest,
    /// The initramfs.
    pub initrd: Option<FileDigest>,
}

/// A file, its size and its SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileDigest {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: String,
}

impl FileDigest {
    /// Reads and fingerprints the file at `path`, recording it as `recorded`.
    fn of(path: &Path, recorded: &Path, role: &'static str) -> Result<FileDigest, SnapshotError> {
        let (size, sha256) = sha256::file(path).map_err(|source| SnapshotError::Missing {
            role,
            path: path.to_owned(),
            source,
        })?;
        Ok(FileDigest {
            path: recorded.to_owned(),
            size,
            sha256,
        })
    }
}

impl VmDescription {
    /// Describes `config`, fingerprinting its kernel and initramfs.
    pub fn of(config: &VmConfig) -> Result<VmDescription, SnapshotError> {
        let kernel = FileDigest::of(&config.kernel, &config.kernel, "kernel")?;
        let initrd = match &config.initrd {
            Some(path) => Some(FileDigest::of(path, path, "initramfs")?),
            None => None,
        };
        Ok(VmDescription {
            mem_mib: config.mem_mib,
            vcpus: config.vcpus,
            agent_channel: config.agent_channel,
            extra_cmdline: config.extra_cmdline.clone(),
            kernel,
            initrd,
        })
    }
}

impl Manifest {
    /// A manifest for a stream of `stream` (inside the snapshot directory).
    pub fn new(qemu: QemuVersion, vm: VmDescription, stream: &Path) -> Result<Self, SnapshotError> {
        let created_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            engine: "qemu".into(),
            qemu,
            created_unix_secs,
            vm,
            stream: FileDigest::of(stream, Path::new(STREAM_FILE), "migration stream")?,
        })
    }

    /// The manifest as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("manifests always serialize");
        json.push(b'\n');
        json
    }

    /// Reads and checks `dir`'s manifest: magic, version, engine, fields.
    pub fn read(dir: &Path) -> Result<Manifest, SnapshotError> {
        let path = dir.join(MANIFEST_FILE);
        let missing = |source| SnapshotError::Missing {
            role: "manifest",
            path: path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes))
            .map_err(missing)?;
        let bad = |reason: String| SnapshotError::BadManifest {
            path: path.clone(),
            reason,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!("it is larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        // Magic, version and engine first, so that another format or
        // version is named as such rather than as a missing field.
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if value["format"] != FORMAT {
            return Err(bad(format!(
                "its format is {}, not {FORMAT:?}",
                value["format"]
            )));
        }
        match value["version"].as_u64() {
            Some(FORMAT_VERSION) => {}
            Some(found) => return Err(SnapshotError::Version { path, found }),
            None => return Err(bad(format!("bad version {}", value["version"]))),
        }
        if value["engine"] != "qemu" {
            return Err(SnapshotError::WrongEngine {
                path,
                engine: value["engine"].to_string(),
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        manifest.check_fields().map_err(bad)?;
        Ok(manifest)
    }

    fn check_fields(&self) -> Result<(), String> {
        if self.stream.path != Path::new(STREAM_FILE) {
            return Err(format!(
                "the stream must be {STREAM_FILE:?}, not {:?}",
                self.stream.path
            ));
        }
        let digests = [
            Some(&self.vm.kernel),
            self.vm.initrd.as_ref(),
            Some(&self.stream),
        ];
        for digest in digests.into_iter().flatten() {
            let hex = digest
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if digest.sha256.len() != 64 || !hex {
                return Err(format!(
                    "the sha256 of {} is not 64 hex digits",
                    digest.path.display()
                ));
            }
        }
        Ok(())
    }

    /// The config that starts the snapshot's machine as VM `name`.
    pub fn config(&self, name: &str, console: Console) -> VmConfig {
        VmConfig {
            name: name.into(),
            kernel: self.vm.kernel.path.clone(),
            initrd: self.vm.initrd.as_ref().map(|d| d.path.clone()),
            extra_cmdline: self.vm.extra_cmdline.clone(),
            mem_mib: self.vm.mem_mib,
            vcpus: self.vm.vcpus,
            agent_channel: self.vm.agent_channel,
            console,
        }
    }

    /// Checks that the stream in `dir`, the kernel and the initramfs are
    /// the files the snapshot recorded; returns the stream's path. Sizes
    /// are compared first, so a truncated or missing file is named at once.
    pub fn verify(&self, dir: &Path) -> Result<PathBuf, SnapshotError> {
        let stream = dir.join(&self.stream.path);
        let mut files = vec![(&self.stream, stream.clone(), "migration stream")];
        files.push((&self.vm.kernel, self.vm.kernel.path.clone(), "kernel"));
        if let Some(initrd) = &self.vm.initrd {
            files.push((initrd, initrd.path.clone(), "initramfs"));
        }
        for (recorded, path, role) in &files {
            let size = std::fs::metadata(path)
                .map_err(|source| SnapshotError::Missing {
                    role,
                    path: path.clone(),
                    source,
                })?
                .len();
            if size != recorded.size {
                return Err(mismatch(
                    role,
                    path,
                    format!("it has {size} bytes, the manifest says {}", recorded.size),
                ));
            }
        }
        // Hash them side by side: the stream is the big one.
        let results: Vec<Result<(), SnapshotError>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|(recorded, path, role)| {
                    s.spawn(move || {
                        let found = FileDigest::of(path, path, role)?;
                        if found.sha256 == recorded.sha256 {
                            Ok(())
                        } else {
                            Err(mismatch(
                                role,
                                path,
                                format!(
                                    "its sha256 is {}, the manifest says {}",
                                    found.sha256, recorded.sha256
                                ),
                            ))
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("hashing threads do not panic"))
                .collect()
        });
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(stream)
    }
}

/// The error for a file whose size or digest differs from the manifest's:
/// the stream is corrupt, a kernel or initramfs changed.
fn mismatch(role: &'static str, path: &Path, what: String) -> SnapshotError {
    if role == "migration stream" {
        SnapshotError::Corrupt {
            path: path.to_owned(),
            reason: what,
        }
    } else {
        SnapshotError::Changed {
            role,
            path: path.to_owned(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_dir() -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"kernel bytes").unwrap();
        let stream = dir.path().join(STREAM_FILE);
        std::fs::write(&stream, vec![7u8; 5000]).unwrap();
        let config = VmConfig::new("x", &kernel);
        let qemu = QemuVersion {
            major: 7,
            minor: 2,
            micro: 22,
            package: String::new(),
        };
        let manifest = Manifest::new(qemu, VmDescription::of(&config).unwrap(), &stream).unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_json()).unwrap();
        (dir, manifest)
    }

    fn edit(dir: &Path, change: impl FnOnce(&mut Value)) {
        let path = dir.join(MANIFEST_FILE);
        let mut value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        change(&mut value);
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    }

    #[test]
    fn written_manifest_reads_back_and_verifies() {
        let (dir, manifest) = snapshot_dir();
        let read = Manifest::read(dir.path()).unwrap();
        assert_eq!(read, manifest);
        assert_eq!(
            read.verify(dir.path()).unwrap(),
            dir.path().join(STREAM_FILE)
        );
        let config = read.config("y", Console::LogOnly);
        assert_eq!((config.name.as_str(), config.mem_mib), ("y", 256));
    }

    #[test]
    fn other_versions_engines_and_garbage_are_refused() {
        let (dir, _) = snapshot_dir();
        edit(dir.path(), |v| v["version"] = 2.into());
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("format version 2"), "{err}");

        let (dir, _) = snapshot_dir();
        edit(dir.path(), |v| v["engine"] = "kvm".into());
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("\"kvm\" engine"), "{err}");

        let (dir, _) = snapshot_dir();
        edit(dir.path(), |v| {
            v["stream"]["path"] = "../../etc/passwd".into()
        });
        assert!(matches!(
            Manifest::read(dir.path()),
            Err(SnapshotError::BadManifest { .. })
        ));

        let (dir, _) = snapshot_dir();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{\"format\": 1").unwrap();
        assert!(matches!(
            Manifest::read(dir.path()),
            Err(SnapshotError::BadManifest { .. })
        ));

        let (dir, _) = snapshot_dir();
        let huge = vec![b' '; MAX_MANIFEST_BYTES as usize + 10];
        std::fs::write(dir.path().join(MANIFEST_FILE), huge).unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn changed_files_are_named() {
        let (dir, manifest) = snapshot_dir();
        let stream = dir.path().join(STREAM_FILE);
        let mut bytes = std::fs::read(&stream).unwrap();
        bytes[2500] ^= 1;
        std::fs::write(&stream, &bytes).unwrap();
        let err = manifest.verify(dir.path()).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("sha256"), "{err}");

        std::fs::write(&stream, &bytes[..100]).unwrap();
        let err = manifest.verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("100 bytes"), "{err}");

        std::fs::write(&stream, vec![7u8; 5000]).unwrap();
        std::fs::write(&manifest.vm.kernel.path, b"kernel BYTES").unwrap();
        let err = manifest.verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("kernel") && err.contains("changed"), "{err}");
    }
}
