//! Tests of the parser: the basic spec, and the fields and values it
//! refuses, by name.

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
