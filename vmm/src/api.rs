//! The control API: one JSON object per line on a Unix socket, one
//! response line per request. The socket is `<run dir>/api.sock`.
//!
//! ```text
//! -> {"action":"status"}
//! <- {"result":"ok","state":"running","vcpus":2,"mem_mib":256,"vsock_status":15}
//! -> {"action":"pause"}
//! <- {"result":"ok","state":"paused","vcpus":2,"mem_mib":256}
//! -> {"action":"bogus"}
//! <- {"result":"error","message":"unknown variant `bogus`, ..."}
//! ```
//!
//! The server thread only parses and answers; the VMM's event loop carries
//! the request out (see [`ApiServer`]), so VM state is touched by one thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The longest request line accepted.
pub const MAX_REQUEST_LEN: usize = 64 << 10;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ApiRequest {
    /// The VM's state.
    Status,
    /// Park every vCPU.
    Pause,
    /// Run again.
    Resume,
    /// End the VM now (the guest is not asked; use the agent for that).
    Shutdown,
    /// Pause, write a snapshot into `dir` (which must not exist), then
    /// resume, stay paused or end as `after` says.
    SnapshotCreate {
        /// The snapshot directory.
        dir: std::path::PathBuf,
        /// What the VM does afterwards (default: resume).
        #[serde(default = "resume")]
        after: crate::runtime::snapshot::After,
        /// Write only the pages changed since this VM's previous snapshot.
        #[serde(default)]
        diff: bool,
    },
}

fn resume() -> crate::runtime::snapshot::After {
    crate::runtime::snapshot::After::Resume
}

/// The VM's run state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Not started yet.
    Created,
    /// vCPUs run.
    Running,
    /// vCPUs parked.
    Paused,
    /// The VM has ended.
    Exited,
}

impl RunState {
    /// The name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Exited => "exited",
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApiResponse {
    /// Done; the VM's state after the request.
    Ok {
        /// The run state.
        state: RunState,
        /// vCPU count.
        vcpus: u8,
        /// Guest memory in MiB.
        mem_mib: u64,
        /// The vsock device's virtio status register (bit 2: DRIVER_OK),
        /// when the VM has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vsock_status: Option<u32>,
    },
    /// A snapshot was written.
    Snapshot {
        /// Bytes in its files.
        bytes: u64,
        /// How long the guest was paused for it, in ms.
        downtime_ms: u64,
        /// How long it took, in ms.
        total_ms: u64,
    },
    /// Not done, and why.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Errors of the API server and client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket cannot be created.
    #[error("cannot listen on {0}")]
    Bind(PathBuf, #[source] std::io::Error),
    /// An eventfd or thread cannot be created.
    #[error("cannot start the API server")]
    Start(#[source] std::io::Error),
    /// The client cannot reach the server.
    #[error("cannot connect to the VM's API socket {0}")]
    Connect(PathBuf, #[source] std::io::Error),
    /// The exchange failed.
    #[error("API request failed")]
    Io(#[source] std::io::Error),
    /// The server answered something unreadable.
    #[error("unreadable API response {0:?}")]
    BadResponse(String),
}

/// A request waiting for the event loop, with the way back to its client.
pub struct PendingRequest {
    /// The request.
    pub request: ApiRequest,
    reply: mpsc::Sender<ApiResponse>,
}

impl PendingRequest {
    /// Sends the answer to the waiting client.
    pub fn respond(self, response: ApiResponse) {
        let _ = self.reply.send(response);
    }
}

/// The listening side. Requests arrive on [`ApiServer::requests`]; the
/// event fd from [`ApiServer::wake_fd`] is written for each, so an event
/// loop can sleep on it.
pub struct ApiServer {
    requests: mpsc::Receiver<PendingRequest>,
    wake: EventFd,
    path: PathBuf,
}

impl ApiServer {
    /// Listens on `path` and serves clients on a background thread.
    pub fn start(path: &Path) -> Result<ApiServer, ApiError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| ApiError::Bind(path.into(), e))?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(ApiError::Start)?;
        let thread_wake = wake.try_clone().map_err(ApiError::Start)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for stream in listener.incoming().map_while(Result::ok) {
                    let tx = tx.clone();
                    let wake = thread_wake.try_clone();
                    std::thread::spawn(move || {
                        if let Ok(wake) = wake {
                            serve(stream, &tx, &wake);
                        }
                    });
                }
            })
            .map_err(ApiError::Start)?;
        Ok(ApiServer {
            requests: rx,
            wake,
            path: path.into(),
        })
    }

    /// Written once per incoming request.
    pub fn wake_fd(&self) -> &EventFd {
        &self.wake
    }

    /// The next waiting request, if any.
    pub fn next_request(&self) -> Option<PendingRequest> {
        let _ = self.wake.read();
        self.requests.try_recv().ok()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, tx: &mpsc::Sender<PendingRequest>, wake: &EventFd) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream).take(u64::MAX);
    loop {
        reader.set_limit(MAX_REQUEST_LEN as u64 + 1);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if line.len() > MAX_REQUEST_LEN {
            ApiResponse::Error {
                message: format!("request longer than {MAX_REQUEST_LEN} bytes"),
            }
        } else {
            match serde_json::from_str::<ApiRequest>(&line) {
                Ok(request) => dispatch(request, tx, wake),
                Err(e) => ApiResponse::Error {
                    message: e.to_string(),
                },
            }
        };
        let mut out = serde_json::to_string(&response).expect("responses serialize");
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() || line.len() > MAX_REQUEST_LEN {
            return;
        }
    }
}

fn dispatch(request: ApiRequest, tx: &mpsc::Sender<PendingRequest>, wake: &EventFd) -> ApiResponse {
    // A snapshot writes all of guest memory; everything else is quick.
    let limit = match request {
        ApiRequest::SnapshotCreate { .. } => Duration::from_secs(600),
        _ => Duration::from_secs(30),
    };
    let (reply, answer) = mpsc::channel();
    if tx.send(PendingRequest { request, reply }).is_err() {
        return ApiResponse::Error {
            message: "the VMM is shutting down".into(),
        };
    }
    let _ = wake.write(1);
    answer.recv_timeout(limit).unwrap_or(ApiResponse::Error {
        message: format!("the VMM did not answer within {} s", limit.as_secs()),
    })
}

/// Sends one request to the API socket at `path` and returns the answer.
pub fn call(path: &Path, request: &ApiRequest, timeout: Duration) -> Result<ApiResponse, ApiError> {
    let stream = UnixStream::connect(path).map_err(|e| ApiError::Connect(path.into(), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ApiError::Io)?;
    let mut writer = stream.try_clone().map_err(ApiError::Io)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    writer.write_all(line.as_bytes()).map_err(ApiError::Io)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .take(MAX_REQUEST_LEN as u64)
        .read_line(&mut answer)
        .map_err(ApiError::Io)?;
    serde_json::from_str(&answer).map_err(|_| ApiError::BadResponse(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> (tempfile_path::Dir, PathBuf) {
        let dir = tempfile_path::Dir::new();
        let path = dir.0.join("api.sock");
        (dir, path)
    }

    /// A tiny temp-dir guard, to avoid a dev-dependency for one test module.
    mod tempfile_path {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "crvmm-api-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Answers requests the way an event loop would.
    fn responder(server: ApiServer) -> std::thread::JoinHandle<Vec<ApiRequest>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut state = RunState::Running;
            while seen.len() < 3 {
                match server.next_request() {
                    Some(p) => {
                        state = match p.request {
                            ApiRequest::Pause => RunState::Paused,
                            ApiRequest::Resume => RunState::Running,
                            _ => state,
                        };
                        seen.push(p.request.clone());
                        p.respond(ApiResponse::Ok {
                            state,
                            vcpus: 2,
                            mem_mib: 64,
                            vsock_status: None,
                        });
                    }
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            seen
        })
    }

    #[test]
    fn requests_reach_the_loop_and_answers_come_back() {
        let (_dir, path) = socket();
        let server = ApiServer::start(&path).unwrap();
        let loop_thread = responder(server);
        let t = Duration::from_secs(5);
        let r = call(&path, &ApiRequest::Pause, t).unwrap();
        assert!(matches!(
            r,
            ApiResponse::Ok {
                state: RunState::Paused,
                ..
            }
        ));
        let r = call(&path, &ApiRequest::Status, t).unwrap();
        assert!(matches!(
            r,
            ApiResponse::Ok {
                state: RunState::Paused,
                vcpus: 2,
                ..
            }
        ));
        call(&path, &ApiRequest::Resume, t).unwrap();
        assert_eq!(
            loop_thread.join().unwrap(),
            vec![ApiRequest::Pause, ApiRequest::Status, ApiRequest::Resume]
        );
    }

    #[test]
    fn malformed_and_oversized_requests_get_errors() {
        let (_dir, path) = socket();
        let _server = ApiServer::start(&path).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"action\":\"explode\"}\n").unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let r: ApiResponse = serde_json::from_str(&line).unwrap();
        assert!(matches!(r, ApiResponse::Error { ref message } if message.contains("explode")));
        // The connection survives a bad request...
        s.write_all(b"not json\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("\"error\""));
        // ...but an endless line is cut off and answered once.
        let big = vec![b'x'; MAX_REQUEST_LEN + 10];
        s.write_all(&big).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("longer than"));
    }
}
