//! The second pass: the checks of the values of a deserialized spec,
//! which build the [`Config`].

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};

use super::mounts::check_mount;
use super::{
    absolute, invalid, unsupported_value, Config, IdMapping, Namespace, Rlimit, SpecError,
};

/// Checks the values of a spec whose fields are all supported.
pub(super) fn check(spec: &Spec) -> Result<Config, SpecError> {
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
