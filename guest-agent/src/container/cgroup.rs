//! A container's cgroup v2 group: `/sys/fs/cgroup/crvmm/<id>`.
//!
//! The freezer (`cgroup.freeze`, then `frozen 1` in `cgroup.events`),
//! `memory.max` and `pids.max`, `cgroup.kill`, and removal. The parent
//! groups get the controllers a limit needs in their `cgroup.subtree_control`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Where the guest mounts cgroup2 (see `init.rs`).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The group under the root that holds every container's group.
pub const PARENT_GROUP: &str = "crvmm";

/// The longest pause between two looks at `cgroup.events`.
const MAX_POLL: Duration = Duration::from_millis(10);

/// Errors of cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The kernel lacks a controller a limit needs.
    #[error("the guest kernel has no {0} cgroup controller (cgroup.controllers of {1})")]
    NoController(&'static str, PathBuf),
    /// A group with this name already exists (a leftover, or a race).
    #[error("cgroup {0} already exists")]
    Exists(PathBuf),
    /// Creating a group failed.
    #[error("failed to create cgroup {path}")]
    Create {
        /// The group's directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading a control file failed.
    #[error("failed to read {path}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a control file failed.
    #[error("failed to write {value:?} to {path}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not every process froze within the time allowed.
    #[error("cgroup {path} did not freeze within {waited_ms} ms (thawed again)")]
    FreezeTimeout {
        /// The group.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Processes were still in the group when it was to be removed.
    #[error("cgroup {path} still holds processes after {waited_ms} ms")]
    StillPopulated {
        /// The group.
        path: PathBuf,
        /// How long we waited.
        waited_ms: u64,
    },
    /// Removing the group failed.
    #[error("failed to remove cgroup {path}")]
    Remove {
        /// The group.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Limits from `linux.resources`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// `pids.max`.
    pub pids: Option<u64>,
}

/// One container's group.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `<root>/crvmm/<id>` with `limits`, enabling the controllers
    /// it needs on the way.
    pub fn create(root: &Path, id: &str, limits: Limits) -> Result<Cgroup, CgroupError> {
        let parent = root.join(PARENT_GROUP);
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: parent,
                    source,
                })
            }
        }
        // Always enable what exists (its statistics are useful); insist on
        // what a limit needs.
        let available = read(&root.join("cgroup.controllers"))?;
        let available: Vec<&str> = available.split_whitespace().collect();
        let mut wanted = Vec::new();
        for (name, needed) in [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
        ] {
            if available.contains(&name) {
                wanted.push(name);
            } else if needed {
                return Err(CgroupError::NoController(name, root.to_owned()));
            }
        }
        for dir in [root, parent.as_path()] {
            let control = dir.join("cgroup.subtree_control");
            let enabled = read(&control)?;
            let missing: Vec<String> = wanted
                .iter()
                .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write(&control, &missing.join(" "))?;
            }
        }

        let path = parent.join(id);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists(path))
            }
            Err(source) => return Err(CgroupError::Create { path, source }),
        }
        let cgroup = Cgroup { path };
        let limited = [("memory.max", limits.memory), ("pids.max", limits.pids)]
            .into_iter()
            .filter_map(|(file, limit)| Some((file, limit?)))
            .try_for_each(|(file, limit)| write(&cgroup.path.join(file), &limit.to_string()));
        if let Err(e) = limited {
            let _ = fs::remove_dir(&cgroup.path);
            return Err(e);
        }
        Ok(cgroup)
    }

    /// A group that already exists (for a container adopted by restore).
    #[allow(dead_code, reason = "for checkpoint/restore (issue 6, part B)")]
    pub fn existing(path: PathBuf) -> Cgroup {
        Cgroup { path }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The group's directory, open: what `clone3(CLONE_INTO_CGROUP)` takes.
    pub fn open_dir(&self) -> Result<File, CgroupError> {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|source| CgroupError::Read {
                path: self.path.clone(),
                source,
            })
    }

    /// `cgroup.procs` open for writing: writing "0" to it moves the writer.
    pub fn open_procs(&self) -> Result<File, CgroupError> {
        let path = self.path.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| CgroupError::Read { path, source })
    }

    /// The processes in the group (guest PIDs).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let text = read(&self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// The `cgroup.events` keys, read now.
    pub fn events(&self) -> Result<Events, CgroupError> {
        Ok(Events::parse(&read(&self.path.join("cgroup.events"))?))
    }

    /// True when every process of the group is frozen.
    pub fn is_frozen(&self) -> bool {
        self.events().is_ok_and(|e| e.frozen)
    }

    /// Freezes the group and waits until the kernel reports it frozen. On
    /// timeout the group is thawed again, so a failed freeze changes
    /// nothing. `timeout` zero looks once.
    pub fn freeze(&self, timeout: Duration) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.freeze"), "1")?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if self.events()?.frozen {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                let _ = self.thaw();
                return Err(CgroupError::FreezeTimeout {
                    path: self.path.clone(),
                    waited_ms: waited.as_millis() as u64,
                });
            }
            thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Lets the group's processes run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.freeze"), "0")
    }

    /// SIGKILL to every process in the group (frozen ones too).
    pub fn kill(&self) -> Result<(), CgroupError> {
        write(&self.path.join("cgroup.kill"), "1")
    }

    /// Waits until the group is empty, then removes it.
    pub fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let started = Instant::now();
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if started.elapsed() >= timeout {
                        return Err(CgroupError::StillPopulated {
                            path: self.path.clone(),
                            waited_ms: timeout.as_millis() as u64,
                        });
                    }
                    thread::sleep(MAX_POLL);
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// What `cgroup.events` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// `populated 1`: the group or a descendant holds a process.
    pub populated: bool,
    /// `frozen 1`: every process is frozen.
    pub frozen: bool,
}

impl Events {
    fn parse(text: &str) -> Events {
        let mut events = Events::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("populated", v)) => events.populated = v.trim() == "1",
                Some(("frozen", v)) => events.frozen = v.trim() == "1",
                _ => {}
            }
        }
        events
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One write(2) of `value`, as control files want (truncating, as a
/// shell's `>` does, which cgroupfs ignores).
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_events() {
        assert_eq!(
            Events::parse("populated 1\nfrozen 0\n"),
            Events {
                populated: true,
                frozen: false
            }
        );
        assert_eq!(
            Events::parse("populated 0\nfrozen 1\n"),
            Events {
                populated: false,
                frozen: true
            }
        );
        assert_eq!(Events::parse(""), Events::default());
    }

    /// A directory that looks like a cgroup2 root to `create`: control
    /// files are plain files there.
    #[test]
    fn create_enables_controllers_and_writes_limits() {
        let dir = std::env::temp_dir().join(format!("crvmm-cgroup-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(PARENT_GROUP)).unwrap();
        fs::write(dir.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        fs::write(
            dir.join(PARENT_GROUP).join("cgroup.subtree_control"),
            "memory",
        )
        .unwrap();
        let limits = Limits {
            memory: Some(1 << 20),
            pids: Some(7),
        };
        // An existing group is refused (after the controllers were enabled
        // in both parents, each only where missing).
        fs::create_dir_all(dir.join(PARENT_GROUP).join("c1")).unwrap();
        assert!(matches!(
            Cgroup::create(&dir, "c1", limits),
            Err(CgroupError::Exists(_))
        ));
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids"
        );
        assert_eq!(
            fs::read_to_string(dir.join(PARENT_GROUP).join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );
        fs::remove_dir(dir.join(PARENT_GROUP).join("c1")).unwrap();
        // memory.max does not exist in a plain directory: writing the limit
        // fails and the half-made group is removed again.
        let err = Cgroup::create(&dir, "c1", limits).unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
        assert!(!dir.join(PARENT_GROUP).join("c1").exists());
        // A limit on a controller the kernel lacks is refused by name.
        fs::write(dir.join("cgroup.controllers"), "cpu\n").unwrap();
        let err = Cgroup::create(&dir, "c2", limits).unwrap_err();
        assert!(
            err.to_string().contains("no memory cgroup controller"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
