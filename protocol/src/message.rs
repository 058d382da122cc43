//! Request and response messages. Every message is a JSON object; requests
//! are tagged by `op`, responses by `result`. Fields marked `#[serde(default)]`
//! may be left out, which is how the protocol grows without a version bump.

use serde::{Deserialize, Serialize};

use crate::container::{ContainerCreate, ContainerExec, ContainerInfo, ContainerKill};
use crate::transfer::{CheckpointReport, ContainerCheckpoint, ContainerRestore};

/// A request with the identifier its response will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub request: Request,
}

/// A response to the request with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The request's identifier, or 0 when the request could not be parsed.
    pub id: u64,
    /// The outcome.
    #[serde(flatten)]
    pub response: Response,
}

/// What the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; also the readiness probe.
    Hello,
    /// Run a program to completion and collect its output.
    Exec(ExecRequest),
    /// Read a whole regular file.
    ReadFile {
        /// Absolute path in the guest.
        path: String,
    },
    /// Create or replace a file with the given bytes.
    WriteFile {
        /// Absolute path in the guest.
        path: String,
        /// The new contents.
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
        /// Permission bits for a newly created file (default 0o644).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Stop the guest: end all processes, sync file systems, and reset the
    /// machine. Both engines run the guest with "exit on reset", so this ends
    /// the VM (a tiny guest kernel has no ACPI power-off to use instead).
    Shutdown,
    /// Create a container from an OCI `config.json` (and maybe start it).
    ContainerCreate(ContainerCreate),
    /// Let a created container's process run its program.
    ContainerStart {
        /// The container.
        container: String,
    },
    /// Every container the agent knows, sorted by identifier.
    ContainerList,
    /// One container's state.
    ContainerState {
        /// The container.
        container: String,
    },
    /// Run a program inside a running container.
    ContainerExec(ContainerExec),
    /// Freeze a container's cgroup and wait until every process is frozen.
    ContainerFreeze {
        /// The container.
        container: String,
        /// Give up (and thaw again) after this many milliseconds (default
        /// 10 000; 0 checks once).
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Thaw a frozen container.
    ContainerThaw {
        /// The container.
        container: String,
    },
    /// Send a signal to a container's init, or to all its processes.
    ContainerKill(ContainerKill),
    /// Checkpoint a container (see [`crate::transfer`] for the stream).
    ContainerCheckpoint(ContainerCheckpoint),
    /// Restore a container from an image (see [`crate::transfer`]).
    ContainerRestore(ContainerRestore),
    /// Forget a container and remove its cgroup.
    ContainerDelete {
        /// The container.
        container: String,
        /// Kill it first if it still runs (default false: refuse).
        #[serde(default)]
        force: bool,
    },
}

/// A program to run in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment variables, added to the agent's minimal environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory (default `/`).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Bytes fed to the program's standard input, which is then closed.
    #[serde(default, with = "crate::b64")]
    pub stdin: Vec<u8>,
    /// Kill the program after this many milliseconds (default: no limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl ExecRequest {
    /// A request that runs `argv` with no input and no time limit.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello(HelloInfo),
    /// Answer to [`Request::Exec`].
    Exec(ExecOutput),
    /// Answer to [`Request::ReadFile`].
    File {
        /// The file's contents.
        #[serde(with = "crate::b64")]
        data: Vec<u8>,
    },
    /// Answer to the container requests that concern one container.
    Container {
        /// Its state after the request (boxed: it is the largest answer).
        container: Box<ContainerInfo>,
    },
    /// Answer to [`Request::ContainerList`].
    Containers {
        /// Every container, sorted by identifier.
        containers: Vec<ContainerInfo>,
    },
    /// Answer to [`Request::ContainerCheckpoint`].
    Checkpointed {
        /// What was done, how long it took, what was written.
        report: Box<CheckpointReport>,
    },
    /// The request was carried out and has nothing to return.
    Done,
    /// The request failed; nothing was changed unless the message says so.
    Error(AgentError),
}

/// Who the agent is and what it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloInfo {
    /// [`crate::PROTOCOL_VERSION`] as the agent was built.
    pub protocol_version: u32,
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Milliseconds since the guest kernel booted.
    pub uptime_ms: u64,
    /// The channel this connection came in on: `vsock`, `serial` or `unix`.
    pub transport: String,
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal with this number ended it.
    Signaled(i32),
    /// It ran past `timeout_ms` and was killed.
    TimedOut,
}

impl ExitStatus {
    /// True for an exit code of 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
            ExitStatus::TimedOut => write!(f, "timed out"),
        }
    }
}

/// The result of an [`ExecRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// How the program ended.
    pub status: ExitStatus,
    /// Its standard output (at most [`MAX_CAPTURE`] bytes).
    #[serde(with = "crate::b64")]
    pub stdout: Vec<u8>,
    /// Its standard error (at most [`MAX_CAPTURE`] bytes).
    #[serde(with = "crate::b64")]
    pub stderr: Vec<u8>,
    /// True when output past [`MAX_CAPTURE`] was dropped.
    #[serde(default)]
    pub truncated: bool,
    /// Wall time from spawn to exit, in microseconds.
    pub duration_us: u64,
}

/// The most output of each stream an exec returns.
pub const MAX_CAPTURE: usize = 16 << 20;

/// The largest file `read_file` returns and `write_file` accepts.
pub const MAX_FILE_LEN: usize = 32 << 20;

/// A failure reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct AgentError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// What failed, in words, with the object it concerns.
    pub message: String,
}

impl AgentError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AgentError {
            kind,
            message: message.into(),
        }
    }
}

/// Classes of agent failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be decoded, or is not valid.
    BadRequest,
    /// A file or program does not exist.
    NotFound,
    /// The guest refused access.
    PermissionDenied,
    /// Data larger than the protocol allows.
    TooLarge,
    /// Any other I/O failure in the guest.
    Io,
    /// An operation this agent does not provide.
    Unsupported,
    /// An unexpected failure inside the agent.
    Internal,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ErrorKind::BadRequest => "bad request",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Io => "I/O error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(name)
    }
}

impl From<&std::io::Error> for ErrorKind {
    fn from(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_shape_is_stable() {
        let req = RequestEnvelope {
            id: 7,
            request: Request::ReadFile {
                path: "/etc/hostname".into(),
            },
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"id":7,"op":"read_file","path":"/etc/hostname"}"#);
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&json).unwrap(), req);
    }

    #[test]
    fn optional_fields_may_be_omitted() {
        let req: RequestEnvelope =
            serde_json::from_str(r#"{"id":1,"op":"exec","argv":["true"]}"#).unwrap();
        assert_eq!(req.request, Request::Exec(ExecRequest::new(["true"])));
        let req: RequestEnvelope = serde_json::from_str(r#"{"id":2,"op":"shutdown"}"#).unwrap();
        assert_eq!(req.request, Request::Shutdown);
    }

    #[test]
    fn binary_fields_round_trip() {
        let data: Vec<u8> = (0..=255).collect();
        let resp = ResponseEnvelope {
            id: 3,
            response: Response::File { data: data.clone() },
        };
        let json = serde_json::to_vec(&resp).unwrap();
        let back: ResponseEnvelope = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.response, Response::File { data });
    }

    #[test]
    fn exit_status_encoding() {
        let json = serde_json::to_string(&ExitStatus::Signaled(9)).unwrap();
        assert_eq!(json, r#"{"kind":"signaled","value":9}"#);
        let json = serde_json::to_string(&ExitStatus::TimedOut).unwrap();
        assert_eq!(json, r#"{"kind":"timed_out"}"#);
    }

    #[test]
    fn unknown_op_is_rejected() {
        assert!(serde_json::from_str::<RequestEnvelope>(r#"{"id":1,"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn invalid_base64_is_rejected() {
        let bad = r#"{"id":1,"op":"write_file","path":"/x","data":"***"}"#;
        assert!(serde_json::from_str::<RequestEnvelope>(bad).is_err());
    }
}
