//! The subset of the OCI runtime spec (`config.json`) that crvmm containers
//! support, parsed with the `oci-spec` crate.
//!
//! Two passes. The first walks the raw JSON against the table of supported
//! fields ([`SUPPORTED`]) and refuses any other field by name, including
//! ones `oci-spec` does not know (it would ignore them silently). The
//! second deserializes an `oci_spec::runtime::Spec` and checks the values,
//! giving the [`Config`] the rest of the agent works from.

use std::path::{Component, Path};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};
use serde_json::Value;

/// Errors in a `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field outside the supported subset.
    #[error("config.json field `{0}` is not supported by crvmm containers (docs/containers.md lists what is)")]
    Unsupported(String),
    /// A supported field with a value crvmm does not support.
    #[error("config.json field `{field}`: {reason}")]
    UnsupportedValue {
        /// The field, as a path (`mounts[2].type`).
        field: String,
        /// What is not supported.
        reason: String,
    },
    /// A value that is wrong whatever the runtime.
    #[error("config.json field `{field}`: {reason}")]
    Invalid {
        /// The field, as a path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The JSON does not have the shape of a runtime spec.
    #[error("config.json is not a valid OCI runtime spec")]
    Parse(#[source] serde_json::Error),
}

impl SpecError {
    /// True for the errors that name something unsupported rather than
    /// something wrong.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            SpecError::Unsupported(_) | SpecError::UnsupportedValue { .. }
        )
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unsupported_value(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::UnsupportedValue {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The shape of the supported fields: which keys an object may hold.
enum Shape {
    /// Any value; `oci-spec` checks its type.
    Leaf,
    /// An object with only these keys.
    Object(&'static [(&'static str, Shape)]),
    /// An array of elements of this shape.
    Array(&'static Shape),
}

const ID_MAPPING: Shape = Shape::Object(&[
    ("containerID", Shape::Leaf),
    ("hostID", Shape::Leaf),
    ("size", Shape::Leaf),
]);

/// Every field crvmm supports. Anything else is refused by name.
const SUPPORTED: Shape = Shape::Object(&[
    ("ociVersion", Shape::Leaf),
    (
        "root",
        Shape::Object(&[("path", Shape::Leaf), ("readonly", Shape::Leaf)]),
    ),
    ("hostname", Shape::Leaf),
    ("domainname", Shape::Leaf),
    ("annotations", Shape::Leaf),
    (
        "mounts",
        Shape::Array(&Shape::Object(&[
            ("destination", Shape::Leaf),
            ("type", Shape::Leaf),
            ("source", Shape::Leaf),
            ("options", Shape::Leaf),
        ])),
    ),
    (
        "process",
        Shape::Object(&[
            ("terminal", Shape::Leaf),
            ("args", Shape::Leaf),
            ("env", Shape::Leaf),
            ("cwd", Shape::Leaf),
            (
                "user",
                Shape::Object(&[
                    ("uid", Shape::Leaf),
                    ("gid", Shape::Leaf),
                    ("umask", Shape::Leaf),
                    ("additionalGids", Shape::Leaf),
                ]),
            ),
            ("noNewPrivileges", Shape::Leaf),
            (
                "rlimits",
                Shape::Array(&Shape::Object(&[
                    ("type", Shape::Leaf),
                    ("soft", Shape::Leaf),
                    ("hard", Shape::Leaf),
                ])),
            ),
        ]),
    ),
    (
        "linux",
        Shape::Object(&[
            (
                "namespaces",
                Shape::Array(&Shape::Object(&[
                    ("type", Shape::Leaf),
                    ("path", Shape::Leaf),
                ])),
            ),
            ("uidMappings", Shape::Array(&ID_MAPPING)),
            ("gidMappings", Shape::Array(&ID_MAPPING)),
            (
                "resources",
                Shape::Object(&[
                    ("memory", Shape::Object(&[("limit", Shape::Leaf)])),
                    ("pids", Shape::Object(&[("limit", Shape::Leaf)])),
                ]),
            ),
        ]),
    ),
]);

/// Refuses the first field of `value` outside `shape`, by its path.
fn check_fields(value: &Value, shape: &Shape, path: &str) -> Result<(), SpecError> {
    match (shape, value) {
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some((_, child_shape)) = fields.iter().find(|(name, _)| name == key) else {
                    return Err(SpecError::Unsupported(child_path));
                };
                check_fields(child, child_shape, &child_path)?;
            }
            Ok(())
        }
        (Shape::Array(element), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_fields(item, element, &format!("{path}[{i}]"))),
        // Leaves, and values of the wrong type (left to oci-spec to report).
        _ => Ok(()),
    }
}

/// A namespace a container can have of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespace {
    /// User and group IDs (optional; needs ID mappings).
    User,
    /// Mount points (always: the root file system needs it).
    Mount,
    /// Process IDs.
    Pid,
    /// Hostname and domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Network devices and stack.
    Network,
}

impl Namespace {
    /// The name in `config.json` and in the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mount",
            Namespace::Pid => "pid",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Network => "network",
        }
    }

    /// The file in `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mnt",
            Namespace::Pid => "pid",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Network => "net",
        }
    }

    /// The `CLONE_NEW*` flag that creates it.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Network => libc::CLONE_NEWNET,
        }
    }
}

/// One range of an ID mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First ID inside the container.
    pub container_id: u32,
    /// First ID outside.
    pub host_id: u32,
    /// Number of IDs.
    pub size: u32,
}

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

/// A resource limit for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*`.
    pub resource: libc::c_int,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A container's configuration, checked: what the agent builds from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The root file system, an absolute guest path.
    pub rootfs: String,
    /// Mount it read-only.
    pub readonly: bool,
    /// Hostname (needs a UTS namespace).
    pub hostname: Option<String>,
    /// NIS domain name (needs a UTS namespace).
    pub domainname: Option<String>,
    /// Mounts, in order.
    pub mounts: Vec<MountConfig>,
    /// The program and its arguments.
    pub args: Vec<String>,
    /// Its environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Its working directory inside the container.
    pub cwd: String,
    /// User ID inside the container.
    pub uid: u32,
    /// Group ID inside the container.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// File mode creation mask.
    pub umask: Option<u32>,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privileges: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Namespaces of its own, sorted (user first).
    pub namespaces: Vec<Namespace>,
    /// UID mappings of its user namespace.
    pub uid_mappings: Vec<IdMapping>,
    /// GID mappings of its user namespace.
    pub gid_mappings: Vec<IdMapping>,
    /// `memory.max` in bytes.
    pub memory_limit: Option<u64>,
    /// `pids.max`.
    pub pids_limit: Option<u64>,
}

impl Config {
    /// True when the container has a namespace of this kind.
    pub fn has(&self, ns: Namespace) -> bool {
        self.namespaces.contains(&ns)
    }

    /// The `PATH` of the process's environment, if it sets one.
    pub fn path_env(&self) -> Option<&str> {
        self.env.iter().find_map(|kv| kv.strip_prefix("PATH="))
    }
}

/// Parses and checks a `config.json`; returns the parsed spec (kept as
/// the container's record) and the configuration.
pub fn parse(value: &Value) -> Result<(Spec, Config), SpecError> {
    if !value.is_object() {
        return Err(invalid("(top level)", "must be a JSON object"));
    }
    check_fields(value, &SUPPORTED, "")?;
    let spec: Spec = serde_json::from_value(value.clone()).map_err(SpecError::Parse)?;
    let config = check(&spec)?;
    Ok((spec, config))
}

/// Checks the values of a spec whose fields are all supported.
fn check(spec: &Spec) -> Result<Config, SpecError> {
    if !spec.version().starts_with("1.") {
        return Err(unsupported_value(
            "ociVersion",
            format!("version {:?}: crvmm supports 1.x", spec.version()),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "is required"))?;
    let rootfs = absolute("root.path", root.path())?;
    if rootfs == "/" {
        return Err(invalid("root.path", "must not be the guest's own root"));
    }

    let linux = spec.linux().as_ref();
    let mut namespaces = Vec::new();
    for (i, ns) in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("linux.namespaces[{i}]");
        if ns.path().is_some() {
            return Err(unsupported_value(
                format!("{field}.path"),
                "joining an existing namespace is not supported",
            ));
        }
        let kind = match ns.typ() {
            LinuxNamespaceType::User => Namespace::User,
            LinuxNamespaceType::Mount => Namespace::Mount,
            LinuxNamespaceType::Pid => Namespace::Pid,
            LinuxNamespaceType::Uts => Namespace::Uts,
            LinuxNamespaceType::Ipc => Namespace::Ipc,
            LinuxNamespaceType::Network => Namespace::Network,
            other => {
                return Err(unsupported_value(
                    format!("{field}.type"),
                    format!("namespace type {other:?} is not supported"),
                ))
            }
        };
        if namespaces.contains(&kind) {
            return Err(invalid(
                format!("{field}.type"),
                format!("{} is listed twice", kind.name()),
            ));
        }
        namespaces.push(kind);
    }
    namespaces.sort();
    if !namespaces.contains(&Namespace::Mount) {
        return Err(unsupported_value(
            "linux.namespaces",
            "must include a mount namespace (the root file system is mounted in it)",
        ));
    }

    let mapping = |field: &str, list: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        list.into_iter()
            .flatten()
            .map(|m| IdMapping {
                container_id: m.container_id(),
                host_id: m.host_id(),
                size: m.size(),
            })
            .enumerate()
            .map(|(i, m)| {
                if m.size == 0 {
                    Err(invalid(format!("{field}[{i}].size"), "must not be 0"))
                } else {
                    Ok(m)
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let uid_mappings = mapping(
        "linux.uidMappings",
        linux.and_then(|l| l.uid_mappings().as_ref()),
    )?;
    let gid_mappings = mapping(
        "linux.gidMappings",
        linux.and_then(|l| l.gid_mappings().as_ref()),
    )?;
    let user_ns = namespaces.contains(&Namespace::User);
    if user_ns && (uid_mappings.is_empty() || gid_mappings.is_empty()) {
        return Err(invalid(
            "linux.uidMappings",
            "a user namespace needs uidMappings and gidMappings",
        ));
    }
    if !user_ns && (!uid_mappings.is_empty() || !gid_mappings.is_empty()) {
        return Err(invalid(
            "linux.uidMappings",
            "ID mappings need a user namespace in linux.namespaces",
        ));
    }

    let uts = namespaces.contains(&Namespace::Uts);
    for (field, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if let Some(name) = value {
            if !uts {
                return Err(invalid(field, "needs a uts namespace in linux.namespaces"));
            }
            if name.len() > 64 || name.contains('\0') {
                return Err(invalid(field, "must be at most 64 bytes, without NUL"));
            }
        }
    }

    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| check_mount(i, m))
        .collect::<Result<Vec<_>, _>>()?;

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "is required"))?;
    if process.terminal() == Some(true) {
        return Err(unsupported_value(
            "process.terminal",
            "containers have no terminal: their output goes to a log file",
        ));
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(invalid("process.args", "must name a program"));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("process.args", "must not contain NUL"));
    }
    let env = process.env().clone().unwrap_or_default();
    if let Some(bad) = env.iter().find(|kv| !kv.contains('=') || kv.contains('\0')) {
        return Err(invalid("process.env", format!("{bad:?} is not KEY=VALUE")));
    }
    let cwd = absolute("process.cwd", process.cwd())?;
    let user = process.user();
    let rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            resource: rlimit_resource(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();

    let resources = linux.and_then(|l| l.resources().as_ref());
    let memory_limit = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|&l| l != -1)
        .map(|l| {
            u64::try_from(l)
                .ok()
                .filter(|&l| l > 0)
                .ok_or_else(|| invalid("linux.resources.memory.limit", "must be positive or -1"))
        })
        .transpose()?;
    let pids_limit = resources
        .and_then(|r| r.pids().as_ref())
        .map(|p| p.limit())
        .and_then(|l| u64::try_from(l).ok().filter(|&l| l > 0));

    Ok(Config {
        rootfs,
        readonly: root.readonly().unwrap_or(false),
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        mounts,
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        rlimits,
        namespaces,
        uid_mappings,
        gid_mappings,
        memory_limit,
        pids_limit,
    })
}

/// An absolute path without `..` as a string.
fn absolute(field: &str, path: &Path) -> Result<String, SpecError> {
    let text = path
        .to_str()
        .filter(|t| !t.contains('\0'))
        .ok_or_else(|| invalid(field, "must be UTF-8 without NUL"))?;
    if !path.is_absolute() {
        return Err(invalid(field, format!("{text:?} is not an absolute path")));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(field, format!("{text:?} must not contain `..`")));
    }
    Ok(text.to_owned())
}

fn check_mount(i: usize, m: &oci_spec::runtime::Mount) -> Result<MountConfig, SpecError> {
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

fn rlimit_resource(typ: PosixRlimitType) -> libc::c_int {
    // The libc constants are u32 for glibc; every value fits an int.
    let resource = match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    };
    resource as libc::c_int
}

#[cfg(test)]
mod tests {
    use super::*;
    use crvmm_protocol::BasicSpec;
    use serde_json::json;

    fn basic() -> Value {
        let mut spec = BasicSpec::new(["sh", "-c", "echo hi"]);
        spec.hostname = Some("box".into());
        spec.memory = Some(64 << 20);
        spec.pids = Some(20);
        spec.to_json()
    }

    fn error_of(value: Value) -> String {
        parse(&value).unwrap_err().to_string()
    }

    #[test]
    fn basic_spec_parses() {
        let (_, config) = parse(&basic()).unwrap();
        assert_eq!(config.rootfs, crvmm_protocol::DEFAULT_ROOTFS);
        assert!(config.readonly);
        assert_eq!(config.hostname.as_deref(), Some("box"));
        assert_eq!(config.args, ["sh", "-c", "echo hi"]);
        assert_eq!(config.cwd, "/");
        assert_eq!(config.path_env(), Some("/bin:/sbin:/usr/bin:/usr/sbin"));
        assert_eq!(
            config.namespaces,
            [
                Namespace::Mount,
                Namespace::Pid,
                Namespace::Uts,
                Namespace::Ipc,
                Namespace::Network
            ]
        );
        assert_eq!(config.memory_limit, Some(64 << 20));
        assert_eq!(config.pids_limit, Some(20));
        assert_eq!(config.mounts.len(), 3);
        assert_eq!(config.mounts[0].kind, MountKind::Proc);
        assert_eq!(
            config.mounts[0].flags,
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV
        );
        assert_eq!(config.mounts[1].kind, MountKind::Tmpfs);
        assert_eq!(config.mounts[1].data.as_deref(), Some("mode=755,size=1m"));
        assert_eq!(config.mounts[2].destination, "/tmp");
        assert_eq!(config.mounts[2].data.as_deref(), Some("mode=1777"));
    }

    #[test]
    fn unknown_and_unsupported_fields_are_named() {
        let mut spec = basic();
        spec["linux"]["seccomp"] = json!({});
        assert!(error_of(spec).contains("`linux.seccomp` is not supported"));

        let mut spec = basic();
        spec["process"]["argz"] = json!(["x"]);
        assert!(error_of(spec).contains("`process.argz`"));

        let mut spec = basic();
        spec["mounts"][1]["uidMappings"] = json!([]);
        assert!(error_of(spec).contains("`mounts[1].uidMappings`"));

        let mut spec = basic();
        spec["linux"]["resources"]["memory"]["swap"] = json!(1);
        assert!(error_of(spec).contains("`linux.resources.memory.swap`"));

        let mut spec = basic();
        spec["hooks"] = json!({});
        let err = parse(&spec).unwrap_err();
        assert!(err.is_unsupported());
        assert!(err.to_string().contains("`hooks`"));
    }

    #[test]
    fn unsupported_values_are_named() {
        let mut spec = basic();
        spec["mounts"][0]["type"] = json!("devpts");
        let message = error_of(spec);
        assert!(
            message.contains("mounts[0].type") && message.contains("devpts"),
            "{message}"
        );

        let mut spec = basic();
        spec["mounts"][1]["options"] = json!(["nosuid", "shared"]);
        let message = error_of(spec);
        assert!(message.contains("\"shared\""), "{message}");

        let mut spec = basic();
        spec["linux"]["namespaces"][0] = json!({"type": "cgroup"});
        assert!(error_of(spec).contains("linux.namespaces[0].type"));

        let mut spec = basic();
        spec["linux"]["namespaces"][0]["path"] = json!("/proc/1/ns/pid");
        assert!(error_of(spec).contains("linux.namespaces[0].path"));

        let mut spec = basic();
        spec["process"]["terminal"] = json!(true);
        assert!(error_of(spec).contains("process.terminal"));
    }

    #[test]
    fn invalid_values_are_named() {
        let mut spec = basic();
        spec["linux"]["namespaces"] = json!([{"type": "pid"}]);
        assert!(error_of(spec).contains("must include a mount namespace"));

        let mut spec = basic();
        spec["linux"]["namespaces"] = json!([{"type": "mount"}]);
        assert!(error_of(spec).contains("`hostname`: needs a uts namespace"));

        let mut spec = basic();
        spec["process"]["args"] = json!([]);
        assert!(error_of(spec).contains("process.args"));

        let mut spec = basic();
        spec["root"]["path"] = json!("rootfs");
        assert!(error_of(spec).contains("not an absolute path"));

        let mut spec = basic();
        spec["mounts"][0]["destination"] = json!("/a/../b");
        assert!(error_of(spec).contains("`..`"));

        let mut spec = basic();
        spec["process"]["env"] = json!(["NOEQUALS"]);
        assert!(error_of(spec).contains("process.env"));

        let mut spec = basic();
        spec["process"]["cwd"] = json!(7);
        assert!(error_of(spec).contains("not a valid OCI runtime spec"));

        let mut spec = basic();
        let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.push(json!({"type": "user"}));
        assert!(error_of(spec).contains("uidMappings"));
    }

    #[test]
    fn bind_mounts_and_user_namespaces() {
        let mut spec = basic();
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(json!({
            "destination": "/data", "type": "bind", "source": "/srv",
            "options": ["rbind", "ro"]
        }));
        mounts.push(json!({
            "destination": "/etc/x", "source": "/etc/hostname", "options": ["bind"]
        }));
        let mut basic_user = BasicSpec::new(["true"]);
        basic_user.user_ns_base = Some(100_000);
        spec["linux"]["namespaces"] = basic_user.to_json()["linux"]["namespaces"].clone();
        spec["linux"]["uidMappings"] = basic_user.to_json()["linux"]["uidMappings"].clone();
        spec["linux"]["gidMappings"] = basic_user.to_json()["linux"]["gidMappings"].clone();
        let (_, config) = parse(&spec).unwrap();
        assert_eq!(
            config.mounts[3].kind,
            MountKind::Bind {
                source: "/srv".into(),
                recursive: true
            }
        );
        assert_eq!(config.mounts[3].flags, libc::MS_RDONLY);
        assert_eq!(
            config.mounts[4].kind,
            MountKind::Bind {
                source: "/etc/hostname".into(),
                recursive: false
            }
        );
        assert_eq!(config.namespaces[0], Namespace::User);
        assert_eq!(
            config.uid_mappings,
            [IdMapping {
                container_id: 0,
                host_id: 100_000,
                size: 65536
            }]
        );

        spec["mounts"][3]["options"] = json!(["rbind", "size=1m"]);
        assert!(error_of(spec).contains("bind mounts take no file system options"));
    }
}
