//! The host side of the protocol, generic over the byte stream so tests can
//! plug in an in-memory pipe and the engines a vsock or serial connection.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::container::{ContainerCreate, ContainerExec, ContainerInfo, ContainerKill};
use crate::frame::{self, FrameError};
use crate::message::*;

/// Errors of an agent call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Sending the request failed.
    #[error("failed to send the request to the agent")]
    Send(#[source] FrameError),
    /// No complete response came back.
    #[error("failed to receive the agent's response")]
    Receive(#[source] FrameError),
    /// A response arrived that is not valid JSON for this protocol.
    #[error("the agent sent a response this client cannot decode")]
    Decode(#[source] serde_json::Error),
    /// The agent answered with an error.
    #[error("the agent refused the request")]
    Agent(#[source] AgentError),
    /// The agent answered with a response of the wrong type.
    #[error("the agent answered {got} to a {expected} request")]
    UnexpectedResponse {
        /// The request's op.
        expected: &'static str,
        /// A short description of what came back.
        got: String,
    },
    /// Writing a streamed image to its destination failed.
    #[error("failed to write the image")]
    Sink(#[source] std::io::Error),
    /// Reading an image to send failed.
    #[error("failed to read the image")]
    Source(#[source] std::io::Error),
    /// The agent speaks a protocol revision this client does not.
    #[error("the agent speaks protocol {agent}, this client speaks {client}")]
    Version {
        /// The agent's revision.
        agent: u32,
        /// Ours.
        client: u32,
    },
}

impl ClientError {
    /// True when the call failed because a read or write timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Send(e) | ClientError::Receive(e) if e.is_timeout())
    }
}

/// A connection to a guest agent.
pub struct AgentClient<S> {
    stream: S,
    next_id: u64,
}

impl<S: Read + Write> AgentClient<S> {
    /// Wraps an open connection. Call [`AgentClient::hello`] first to check
    /// the agent's protocol version.
    ///
    /// Request ids start at a value unique to this client (time and a
    /// per-process counter), so a client that reconnects to a serial line
    /// never mistakes a reply meant for an earlier client for its own.
    pub fn new(stream: S) -> Self {
        Self::with_first_id(stream, unique_first_id())
    }

    /// Like [`AgentClient::new`] with a chosen first request id (not 0).
    pub fn with_first_id(stream: S, first_id: u64) -> Self {
        AgentClient {
            stream,
            next_id: first_id.max(1),
        }
    }

    /// Takes the next request id (for calls that frame their own traffic).
    pub(crate) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The underlying stream, for example to change its timeouts.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Sends `request` and returns the agent's response, whatever it is.
    ///
    /// Responses to earlier requests (left over on a serial line after a
    /// client went away mid-call) are recognised by their `id` and skipped.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::to_vec(&RequestEnvelope { id, request })
            .expect("requests always serialize");
        frame::write_frame(&mut self.stream, &body).map_err(ClientError::Send)?;
        loop {
            let frame = frame::read_frame(&mut self.stream).map_err(ClientError::Receive)?;
            let envelope: ResponseEnvelope =
                serde_json::from_slice(&frame.body).map_err(ClientError::Decode)?;
            if envelope.id == id {
                return Ok(envelope.response);
            }
        }
    }

    /// Sends raw bytes as one frame and returns the decoded response; for
    /// tests of the agent's handling of malformed requests.
    pub fn call_raw(&mut self, body: &[u8]) -> Result<ResponseEnvelope, ClientError> {
        frame::write_frame(&mut self.stream, body).map_err(ClientError::Send)?;
        let frame = frame::read_frame(&mut self.stream).map_err(ClientError::Receive)?;
        serde_json::from_slice(&frame.body).map_err(ClientError::Decode)
    }

    /// Handshake: returns the agent's identity, or an error when its
    /// protocol revision differs from ours.
    pub fn hello(&mut self) -> Result<HelloInfo, ClientError> {
        match self.call(Request::Hello)? {
            Response::Hello(info) if info.protocol_version == crate::PROTOCOL_VERSION => Ok(info),
            Response::Hello(info) => Err(ClientError::Version {
                agent: info.protocol_version,
                client: crate::PROTOCOL_VERSION,
            }),
            other => Err(unexpected("hello", other)),
        }
    }

    /// Runs a program to completion in the guest.
    pub fn exec(&mut self, request: ExecRequest) -> Result<ExecOutput, ClientError> {
        match self.call(Request::Exec(request))? {
            Response::Exec(out) => Ok(out),
            other => Err(unexpected("exec", other)),
        }
    }

    /// Reads a guest file.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, ClientError> {
        let path = path.to_owned();
        match self.call(Request::ReadFile { path })? {
            Response::File { data } => Ok(data),
            other => Err(unexpected("read_file", other)),
        }
    }

    /// Writes a guest file, replacing it if it exists.
    pub fn write_file(
        &mut self,
        path: &str,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        let request = Request::WriteFile {
            path: path.to_owned(),
            data: data.to_vec(),
            mode,
        };
        match self.call(request)? {
            Response::Done => Ok(()),
            other => Err(unexpected("write_file", other)),
        }
    }

    /// Asks the guest to shut down. The agent answers before it starts, so
    /// a successful return means the shutdown has begun.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        match self.call(Request::Shutdown)? {
            Response::Done => Ok(()),
            other => Err(unexpected("shutdown", other)),
        }
    }

    /// Creates a container from an OCI `config.json`; with `start`, its
    /// program runs before this returns.
    pub fn container_create(
        &mut self,
        container: &str,
        spec: serde_json::Value,
        start: bool,
    ) -> Result<ContainerInfo, ClientError> {
        let request = Request::ContainerCreate(ContainerCreate {
            container: container.to_owned(),
            spec,
            start,
        });
        self.call_container(request, "container_create")
    }

    /// Lets a created container run its program.
    pub fn container_start(&mut self, container: &str) -> Result<ContainerInfo, ClientError> {
        let container = container.to_owned();
        self.call_container(Request::ContainerStart { container }, "container_start")
    }

    /// Every container of the guest, sorted by identifier.
    pub fn container_list(&mut self) -> Result<Vec<ContainerInfo>, ClientError> {
        match self.call(Request::ContainerList)? {
            Response::Containers { containers } => Ok(containers),
            other => Err(unexpected("container_list", other)),
        }
    }

    /// One container's state.
    pub fn container_state(&mut self, container: &str) -> Result<ContainerInfo, ClientError> {
        let container = container.to_owned();
        self.call_container(Request::ContainerState { container }, "container_state")
    }

    /// Runs a program to completion inside a running container.
    pub fn container_exec(
        &mut self,
        container: &str,
        exec: ExecRequest,
    ) -> Result<ExecOutput, ClientError> {
        let request = Request::ContainerExec(ContainerExec {
            container: container.to_owned(),
            exec,
        });
        match self.call(request)? {
            Response::Exec(out) => Ok(out),
            other => Err(unexpected("container_exec", other)),
        }
    }

    /// Freezes a container; fails (and leaves it thawed) when it is not
    /// frozen within `timeout_ms` (the agent's default when `None`).
    pub fn container_freeze(
        &mut self,
        container: &str,
        timeout_ms: Option<u64>,
    ) -> Result<ContainerInfo, ClientError> {
        let request = Request::ContainerFreeze {
            container: container.to_owned(),
            timeout_ms,
        };
        self.call_container(request, "container_freeze")
    }

    /// Thaws a frozen container.
    pub fn container_thaw(&mut self, container: &str) -> Result<ContainerInfo, ClientError> {
        let container = container.to_owned();
        self.call_container(Request::ContainerThaw { container }, "container_thaw")
    }

    /// Sends `signal` (default SIGKILL) to the container's init, or with
    /// `all` to every process in its cgroup.
    pub fn container_kill(
        &mut self,
        container: &str,
        signal: Option<i32>,
        all: bool,
    ) -> Result<ContainerInfo, ClientError> {
        let request = Request::ContainerKill(ContainerKill {
            container: container.to_owned(),
            signal,
            all,
        });
        self.call_container(request, "container_kill")
    }

    /// Removes a container (with `force`, even a running one).
    pub fn container_delete(&mut self, container: &str, force: bool) -> Result<(), ClientError> {
        let request = Request::ContainerDelete {
            container: container.to_owned(),
            force,
        };
        match self.call(request)? {
            Response::Done => Ok(()),
            other => Err(unexpected("container_delete", other)),
        }
    }

    fn call_container(
        &mut self,
        request: Request,
        op: &'static str,
    ) -> Result<ContainerInfo, ClientError> {
        match self.call(request)? {
            Response::Container { container } => Ok(*container),
            other => Err(unexpected(op, other)),
        }
    }
}

fn unique_first_id() -> u64 {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // 36 bits of time (ns) and 8 bits of counter above 20 bits of room:
    // each client gets a range of a million ids of its own.
    let counter = CLIENTS.fetch_add(1, Ordering::Relaxed) & 0xff;
    ((nanos & ((1 << 36) - 1)) << 28 | counter << 20).max(1)
}

pub(crate) fn unexpected(expected: &'static str, got: Response) -> ClientError {
    match got {
        Response::Error(e) => ClientError::Agent(e),
        other => ClientError::UnexpectedResponse {
            expected,
            got: format!("{other:?}").chars().take(80).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Cursor};

    /// A stream whose reads come from a prepared buffer and whose writes are
    /// recorded.
    struct Scripted {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn responses(list: &[ResponseEnvelope]) -> Scripted {
        let mut input = Vec::new();
        for r in list {
            frame::write_frame(&mut input, &serde_json::to_vec(r).unwrap()).unwrap();
        }
        Scripted {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }

    #[test]
    fn skips_stale_responses() {
        let stream = responses(&[
            ResponseEnvelope {
                id: 99,
                response: Response::Done,
            },
            ResponseEnvelope {
                id: 1,
                response: Response::File {
                    data: b"abc".to_vec(),
                },
            },
        ]);
        let mut client = AgentClient::with_first_id(stream, 1);
        assert_eq!(client.read_file("/x").unwrap(), b"abc");
        let sent = frame::read_frame(&mut Cursor::new(&client.stream.output)).unwrap();
        let req: RequestEnvelope = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(req.id, 1);
        assert_eq!(req.request, Request::ReadFile { path: "/x".into() });
    }

    #[test]
    fn agent_errors_surface_as_agent_errors() {
        let err = AgentError::new(ErrorKind::NotFound, "/x: no such file");
        let stream = responses(&[ResponseEnvelope {
            id: 1,
            response: Response::Error(err.clone()),
        }]);
        match AgentClient::with_first_id(stream, 1).read_file("/x") {
            Err(ClientError::Agent(e)) => assert_eq!(e, err),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn version_mismatch_is_reported() {
        let info = HelloInfo {
            protocol_version: crate::PROTOCOL_VERSION + 1,
            agent_version: "9".into(),
            kernel_release: "x".into(),
            uptime_ms: 0,
            transport: "vsock".into(),
        };
        let stream = responses(&[ResponseEnvelope {
            id: 1,
            response: Response::Hello(info),
        }]);
        assert!(matches!(
            AgentClient::with_first_id(stream, 1).hello(),
            Err(ClientError::Version { .. })
        ));
    }

    #[test]
    fn clients_get_distinct_id_ranges() {
        let a = AgentClient::new(responses(&[])).next_id;
        let b = AgentClient::new(responses(&[])).next_id;
        assert_ne!(a, b);
        assert!(a.abs_diff(b) >= 1 << 20);
    }

    #[test]
    fn closed_stream_is_a_receive_error() {
        let mut client = AgentClient::new(responses(&[]));
        assert!(matches!(
            client.call(Request::Hello),
            Err(ClientError::Receive(FrameError::Closed))
        ));
    }
}
