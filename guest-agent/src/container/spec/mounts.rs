//! The entries of `mounts`: what a mount is, and the check of one entry
//! (its type, source, destination and options).

use super::{absolute, invalid, unsupported_value, SpecError};

/// What a mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A `proc` file system of the container's PID namespace.
    Proc,
    /// A `sysfs` of the container's network namespace.
    Sysfs,
    /// A new tmpfs.
    Tmpfs,
    /// A bind mount of a guest path.
    Bind {
        /// The guest path (absolute).
        source: String,
        /// `rbind`: with the mounts below the source.
        recursive: bool,
    },
}

/// One entry of `mounts`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Absolute path inside the container.
    pub destination: String,
    /// What to mount.
    pub kind: MountKind,
    /// `MS_*` flags from the options.
    pub flags: libc::c_ulong,
    /// `key=value` options, comma-separated, passed to the file system.
    pub data: Option<String>,
}

pub(super) fn check_mount(
    i: usize,
    m: &oci_spec::runtime::Mount,
) -> Result<MountConfig, SpecError> {
    let field = format!("mounts[{i}]");
    let destination = absolute(&format!("{field}.destination"), m.destination())?;
    if destination == "/" {
        return Err(invalid(
            format!("{field}.destination"),
            "must not be `/` (that is `root`)",
        ));
    }
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    let mut bind = None;
    for option in m.options().iter().flatten() {
        let (set, clear) = match option.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noatime" => (libc::MS_NOATIME, 0),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "bind" => {
                bind = Some(bind.unwrap_or(false));
                (0, 0)
            }
            "rbind" => {
                bind = Some(true);
                (0, 0)
            }
            // Mounts are private in the container's mount namespace anyway.
            "private" | "rprivate" => (0, 0),
            kv if kv.contains('=') && !kv.contains(',') && !kv.contains('\0') => {
                data.push(kv.to_owned());
                (0, 0)
            }
            other => {
                return Err(unsupported_value(
                    format!("{field}.options"),
                    format!("mount option {other:?} is not supported"),
                ))
            }
        };
        flags = (flags | set) & !clear;
    }
    let typ = m.typ().as_deref();
    let kind = if typ == Some("bind") || (typ.is_none() && bind.is_some()) {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| invalid(format!("{field}.source"), "a bind mount needs a source"))?;
        if !data.is_empty() {
            return Err(unsupported_value(
                format!("{field}.options"),
                format!(
                    "bind mounts take no file system options ({})",
                    data.join(",")
                ),
            ));
        }
        MountKind::Bind {
            source: absolute(&format!("{field}.source"), source)?,
            recursive: bind.unwrap_or(false),
        }
    } else {
        let kind = match typ {
            Some("proc") => MountKind::Proc,
            Some("sysfs") => MountKind::Sysfs,
            Some("tmpfs") => MountKind::Tmpfs,
            None => return Err(invalid(format!("{field}.type"), "is required")),
            Some(other) => {
                return Err(unsupported_value(
                    format!("{field}.type"),
                    format!("mount type {other:?} is not supported (proc, sysfs, tmpfs, bind)"),
                ))
            }
        };
        if bind.is_some() {
            return Err(invalid(
                format!("{field}.options"),
                format!("a {} mount cannot be a bind mount", typ.unwrap_or_default()),
            ));
        }
        kind
    };
    Ok(MountConfig {
        destination,
        kind,
        flags,
        data: (!data.is_empty()).then(|| data.join(",")),
    })
}
