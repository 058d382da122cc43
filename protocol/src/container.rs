//! Container requests and answers: containers that the agent runs inside
//! the guest from an OCI runtime-spec `config.json` (see
//! `docs/containers.md` for the subset it accepts).
//!
//! The container's identifier travels as `container`, never `id`: `id` is
//! the request's own identifier in the envelope the request is flattened
//! into. Answers nest the container in a `container` (or `containers`)
//! field for the same reason.

use serde::{Deserialize, Serialize};

use crate::message::{ExecRequest, ExitStatus};

/// The longest container identifier the agent accepts.
pub const MAX_CONTAINER_ID_LEN: usize = 64;

/// The root file system the guest's initramfs provides for containers:
/// busybox in `/bin` and the test programs in `/usr/lib/crvmm/programs`.
pub const DEFAULT_ROOTFS: &str = "/usr/share/crvmm/rootfs";

/// Create a container and, if `start`, start its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCreate {
    /// The new container's identifier: 1 to 64 characters of
    /// `[A-Za-z0-9_.-]`, starting with a letter or digit.
    pub container: String,
    /// The OCI runtime-spec `config.json`, as JSON.
    pub spec: serde_json::Value,
    /// Start the process at once (default false: `container_start` does).
    #[serde(default)]
    pub start: bool,
}

/// Run a program inside a running container, to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExec {
    /// The container.
    pub container: String,
    /// The program, as for `exec`; `cwd` is inside the container (default:
    /// the container process's `cwd`), and `env` is added to the container
    /// process's environment.
    pub exec: ExecRequest,
}

/// Signal a container's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerKill {
    /// The container.
    pub container: String,
    /// The signal number (default 9, SIGKILL).
    #[serde(default)]
    pub signal: Option<i32>,
    /// Signal every process of the container's cgroup rather than only its
    /// init (default false). Killing the init with SIGKILL ends every
    /// process of its PID namespace anyway.
    #[serde(default)]
    pub all: bool,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Set up; its process waits for `container_start` before it runs the
    /// spec's program.
    Created,
    /// Its program runs.
    Running,
    /// Its cgroup is frozen.
    Frozen,
    /// Its init has exited; `exit` says how.
    Stopped,
}

impl std::fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Frozen => "frozen",
            ContainerStatus::Stopped => "stopped",
        })
    }
}

/// What the agent knows of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The identifier it was created with.
    pub id: String,
    /// Where it is in its life.
    pub status: ContainerStatus,
    /// The PID of its init in the guest (the agent's PID namespace).
    pub pid: u32,
    /// How the init ended, once `status` is `stopped`.
    #[serde(default)]
    pub exit: Option<ExitStatus>,
    /// Its hostname, when it has a UTS namespace and the spec names one.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Its root file system, a directory of the guest.
    pub rootfs: String,
    /// Its cgroup v2 directory in the guest.
    pub cgroup: String,
    /// The namespaces it has of its own (`pid`, `mount`, `uts`, `ipc`,
    /// `network`, `user`).
    pub namespaces: Vec<String>,
    /// When it was created, in milliseconds since the Unix epoch (guest
    /// clock).
    pub created_ms: u64,
    /// The guest file that receives its init's standard output and error.
    pub log: String,
}

/// A default `config.json` for a container that runs `args`: the
/// convenience behind `crvmm container create -- cmd ...` and the tests.
///
/// PID, mount, UTS, IPC and network namespaces; `proc` on `/proc`, a small
/// tmpfs on `/dev` (the agent adds the standard devices), a tmpfs on
/// `/tmp`; the root file system read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicSpec {
    /// The program and its arguments.
    pub args: Vec<String>,
    /// The hostname (default: none, the container keeps an empty one).
    pub hostname: Option<String>,
    /// The root file system (default [`DEFAULT_ROOTFS`]).
    pub rootfs: String,
    /// Mount the root file system read-only (default true).
    pub readonly: bool,
    /// Environment, `KEY=VALUE` (default: `PATH`, `HOME`, `TERM`).
    pub env: Vec<String>,
    /// Working directory (default `/`).
    pub cwd: String,
    /// `memory.max` in bytes.
    pub memory: Option<u64>,
    /// `pids.max`.
    pub pids: Option<u64>,
    /// Give the container a user namespace mapping its root to this host
    /// UID and GID (65536 ids).
    pub user_ns_base: Option<u32>,
}

impl BasicSpec {
    /// A spec running `args` with every default.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BasicSpec {
            args: args.into_iter().map(Into::into).collect(),
            hostname: None,
            rootfs: DEFAULT_ROOTFS.to_owned(),
            readonly: true,
            env: vec![
                "PATH=/bin:/sbin:/usr/bin:/usr/sbin".to_owned(),
                "HOME=/root".to_owned(),
                "TERM=linux".to_owned(),
            ],
            cwd: "/".to_owned(),
            memory: None,
            pids: None,
            user_ns_base: None,
        }
    }

    /// The `config.json` as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let mut namespaces: Vec<Value> = ["pid", "mount", "uts", "ipc", "network"]
            .iter()
            .map(|t| json!({ "type": t }))
            .collect();
        let mut linux = Map::new();
        if let Some(base) = self.user_ns_base {
            namespaces.push(json!({ "type": "user" }));
            let map = json!([{ "containerID": 0, "hostID": base, "size": 65536 }]);
            linux.insert("uidMappings".into(), map.clone());
            linux.insert("gidMappings".into(), map);
        }
        linux.insert("namespaces".into(), Value::Array(namespaces));
        let mut resources = Map::new();
        if let Some(limit) = self.memory {
            resources.insert("memory".into(), json!({ "limit": limit }));
        }
        if let Some(limit) = self.pids {
            resources.insert("pids".into(), json!({ "limit": limit }));
        }
        if !resources.is_empty() {
            linux.insert("resources".into(), Value::Object(resources));
        }
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "root": { "path": self.rootfs, "readonly": self.readonly },
            "process": {
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "user": { "uid": 0, "gid": 0 },
            },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "noexec", "mode=755", "size=1m"] },
                { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "nodev", "mode=1777"] },
            ],
            "linux": Value::Object(linux),
        });
        if let Some(hostname) = &self.hostname {
            spec["hostname"] = json!(hostname);
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use crate::message::*;
    use crate::*;

    fn round_trip(json: &str) -> RequestEnvelope {
        let req: RequestEnvelope = serde_json::from_str(json).unwrap();
        let back = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&back).unwrap(), req);
        req
    }

    #[test]
    fn create_request_shape() {
        let req = RequestEnvelope {
            id: 4,
            request: Request::ContainerCreate(ContainerCreate {
                container: "web".into(),
                spec: serde_json::json!({"ociVersion": "1.0.2"}),
                start: true,
            }),
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"id":4,"op":"container_create","container":"web","spec":{"ociVersion":"1.0.2"},"start":true}"#
        );
        // `start` may be left out.
        let req = round_trip(r#"{"id":5,"op":"container_create","container":"a","spec":{}}"#);
        assert!(matches!(req.request, Request::ContainerCreate(c) if !c.start));
    }

    #[test]
    fn simple_request_shapes() {
        for (json, expected) in [
            (
                r#"{"id":1,"op":"container_start","container":"a"}"#,
                Request::ContainerStart {
                    container: "a".into(),
                },
            ),
            (r#"{"id":1,"op":"container_list"}"#, Request::ContainerList),
            (
                r#"{"id":1,"op":"container_state","container":"a"}"#,
                Request::ContainerState {
                    container: "a".into(),
                },
            ),
            (
                r#"{"id":1,"op":"container_freeze","container":"a"}"#,
                Request::ContainerFreeze {
                    container: "a".into(),
                    timeout_ms: None,
                },
            ),
            (
                r#"{"id":1,"op":"container_freeze","container":"a","timeout_ms":0}"#,
                Request::ContainerFreeze {
                    container: "a".into(),
                    timeout_ms: Some(0),
                },
            ),
            (
                r#"{"id":1,"op":"container_thaw","container":"a"}"#,
                Request::ContainerThaw {
                    container: "a".into(),
                },
            ),
            (
                r#"{"id":1,"op":"container_kill","container":"a"}"#,
                Request::ContainerKill(ContainerKill {
                    container: "a".into(),
                    signal: None,
                    all: false,
                }),
            ),
            (
                r#"{"id":1,"op":"container_kill","container":"a","signal":15,"all":true}"#,
                Request::ContainerKill(ContainerKill {
                    container: "a".into(),
                    signal: Some(15),
                    all: true,
                }),
            ),
            (
                r#"{"id":1,"op":"container_delete","container":"a"}"#,
                Request::ContainerDelete {
                    container: "a".into(),
                    force: false,
                },
            ),
        ] {
            assert_eq!(round_trip(json).request, expected, "{json}");
        }
    }

    #[test]
    fn exec_request_nests_the_program() {
        let req = round_trip(
            r#"{"id":9,"op":"container_exec","container":"a","exec":{"argv":["ps"],"timeout_ms":500}}"#,
        );
        let Request::ContainerExec(exec) = req.request else {
            panic!("not a container_exec");
        };
        assert_eq!(exec.container, "a");
        assert_eq!(
            exec.exec,
            ExecRequest {
                timeout_ms: Some(500),
                ..ExecRequest::new(["ps"])
            }
        );
    }

    fn info() -> ContainerInfo {
        ContainerInfo {
            id: "web".into(),
            status: ContainerStatus::Stopped,
            pid: 42,
            exit: Some(ExitStatus::Signaled(9)),
            hostname: Some("box".into()),
            rootfs: DEFAULT_ROOTFS.into(),
            cgroup: "/sys/fs/cgroup/crvmm/web".into(),
            namespaces: vec!["pid".into(), "mount".into()],
            created_ms: 1_700_000_000_000,
            log: "/run/crvmm/containers/web/init.log".into(),
        }
    }

    #[test]
    fn container_response_shape() {
        let resp = ResponseEnvelope {
            id: 3,
            response: Response::Container {
                container: Box::new(info()),
            },
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(
            json,
            r#"{"id":3,"result":"container","container":{"id":"web","status":"stopped","pid":42,"exit":{"kind":"signaled","value":9},"hostname":"box","rootfs":"/usr/share/crvmm/rootfs","cgroup":"/sys/fs/cgroup/crvmm/web","namespaces":["pid","mount"],"created_ms":1700000000000,"log":"/run/crvmm/containers/web/init.log"}}"#
        );
        assert_eq!(
            serde_json::from_str::<ResponseEnvelope>(&json).unwrap(),
            resp
        );
        // A running container has no exit and may have no hostname.
        let json = r#"{"id":3,"result":"containers","containers":[{"id":"a","status":"running","pid":7,"rootfs":"/r","cgroup":"/c","namespaces":[],"created_ms":1,"log":"/l"}]}"#;
        let resp: ResponseEnvelope = serde_json::from_str(json).unwrap();
        let Response::Containers { containers } = resp.response else {
            panic!("not a list");
        };
        assert_eq!(containers[0].status, ContainerStatus::Running);
        assert_eq!((containers[0].exit, &containers[0].hostname), (None, &None));
    }

    #[test]
    fn basic_spec_is_a_complete_config() {
        let mut spec = BasicSpec::new(["sh", "-c", "sleep 1"]);
        spec.hostname = Some("box".into());
        spec.pids = Some(10);
        let json = spec.to_json();
        assert_eq!(json["root"]["path"], DEFAULT_ROOTFS);
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["args"][2], "sleep 1");
        assert_eq!(json["hostname"], "box");
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 10);
        assert!(json["linux"]["resources"].get("memory").is_none());
        let types: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["pid", "mount", "uts", "ipc", "network"]);
        assert!(json["linux"].get("uidMappings").is_none());

        spec.user_ns_base = Some(100_000);
        let json = spec.to_json();
        assert_eq!(json["linux"]["namespaces"][5]["type"], "user");
        assert_eq!(json["linux"]["uidMappings"][0]["hostID"], 100_000);
    }
}
