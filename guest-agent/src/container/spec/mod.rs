//! The subset of the OCI runtime spec (`config.json`) that crvmm containers
//! support, parsed with the `oci-spec` crate.
//!
//! Two passes. The first walks the raw JSON against the table of supported
//! fields ([`SUPPORTED`]) and refuses any other field by name, including
//! ones `oci-spec` does not know (it would ignore them silently). The
//! second deserializes an `oci_spec::runtime::Spec` and checks the values,
//! giving the [`Config`] the rest of the agent works from.

mod check;
mod fields;
mod mounts;
mod namespace;
#[cfg(test)]
mod tests;

use std::path::{Component, Path};

use oci_spec::runtime::Spec;
use serde_json::Value;

use self::check::check;
use self::fields::{check_fields, SUPPORTED};
pub use self::mounts::{MountConfig, MountKind};
pub use self::namespace::{IdMapping, Namespace};

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
