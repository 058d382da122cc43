//! Transports and the request loop they share.
//!
//! Every connection runs [`serve`]: read a frame, decode it, dispatch it,
//! write the answer. Guest mode serves vsock (a thread per connection) and
//! the virtio-serial port (one loop, a session per host connection); the
//! `--listen-unix` mode serves a Unix socket for host tests.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crvmm_protocol::frame::{self, FrameError};
use crvmm_protocol::{
    AgentError, ErrorKind, Request, RequestEnvelope, Response, ResponseEnvelope,
    AGENT_SERIAL_PORT_NAME, AGENT_VSOCK_PORT, MAX_FRAME_LEN,
};

use crate::container::{checkpoint, restore};
use crate::serial::{self, SerialPort};
use crate::shutdown::{self, ShutdownMode};
use crate::vsock::{self, VsockListener};
use crate::{handlers, log};

/// How long guest mode looks for its channels before it says none came.
const DISCOVERY_WINDOW: Duration = Duration::from_secs(10);

/// Errors of the servers.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something that is not a socket is in the way of the socket path.
    #[error("{0} exists and is not a socket")]
    PathInUse(PathBuf),
    /// Removing a stale socket failed.
    #[error("failed to remove the stale socket {path}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Binding the Unix socket failed.
    #[error("failed to listen on {path}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed the stream between frames.
    Closed,
    /// A read or write failed, or a frame was too large to skip.
    Failed,
}

/// Answers requests on `stream` until it closes or fails.
pub fn serve<S: Read + Write>(mut stream: S, transport: &str, shutdown: &ShutdownMode) -> Ended {
    loop {
        let frame = match frame::read_frame(&mut stream) {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return Ended::Closed,
            Err(FrameError::TooLarge(len)) => {
                // The body cannot be skipped safely: answer, then hang up.
                log!("{transport}: closing the connection after a {len}-byte frame");
                let message =
                    format!("frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit");
                let _ = send(&mut stream, 0, error(ErrorKind::TooLarge, message));
                return Ended::Failed;
            }
            Err(e) => {
                log!("{transport}: {}", log::chain(&e));
                return Ended::Failed;
            }
        };
        if frame.skipped > 0 {
            log!(
                "{transport}: skipped {} bytes before a frame",
                frame.skipped
            );
        }
        let (id, response, is_shutdown) = match decode(&frame.body) {
            Ok(envelope) => {
                let is_shutdown = envelope.request == Request::Shutdown;
                // Checkpoint and restore move their image over this stream.
                let response = match envelope.request {
                    Request::ContainerCheckpoint(request) => {
                        checkpoint::serve(request, &mut stream, transport)
                    }
                    Request::ContainerRestore(request) => {
                        restore::serve(request, &mut stream, transport)
                    }
                    request => handlers::handle(request, transport),
                };
                (envelope.id, response, is_shutdown)
            }
            Err((id, response)) => (id, response, false),
        };
        if let Err(e) = send(&mut stream, id, response) {
            log!("{transport}: {}", log::chain(&e));
            return Ended::Failed;
        }
        if is_shutdown {
            shutdown::begin(shutdown);
        }
    }
}

/// Decodes a request, or builds the BadRequest answer and the id it goes
/// to: the request's own if the body is JSON with a numeric `id`, else 0.
fn decode(body: &[u8]) -> Result<RequestEnvelope, (u64, Response)> {
    serde_json::from_slice(body).map_err(|e| {
        let id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("id")?.as_u64())
            .unwrap_or(0);
        (
            id,
            error(ErrorKind::BadRequest, format!("invalid request: {e}")),
        )
    })
}

fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error(AgentError::new(kind, message))
}

/// Writes the answer; one too large for a frame becomes an error answer.
fn send<W: Write>(stream: &mut W, id: u64, response: Response) -> Result<(), FrameError> {
    let body =
        serde_json::to_vec(&ResponseEnvelope { id, response }).expect("responses always serialize");
    match frame::write_frame(stream, &body) {
        Err(FrameError::TooLarge(len)) => {
            let message = format!("the {len}-byte answer exceeds the frame limit");
            let body = serde_json::to_vec(&ResponseEnvelope {
                id,
                response: error(ErrorKind::TooLarge, message),
            })
            .expect("responses always serialize");
            frame::write_frame(stream, &body)
        }
        other => other,
    }
}

/// Serves the protocol on a Unix socket at `path` until a Shutdown request,
/// which removes the socket and exits the process with status 0.
pub fn run_unix(path: &Path) -> Result<(), ServerError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServerError::RemoveStale {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => return Err(ServerError::PathInUse(path.to_owned())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::BindUnix {
        path: path.to_owned(),
        source,
    })?;
    log!("listening on unix socket {}", path.display());
    let mode = ShutdownMode::ExitProcess {
        socket: Some(path.to_owned()),
    };
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let mode = mode.clone();
                thread::spawn(move || serve(stream, "unix", &mode));
            }
            Err(e) => {
                log!("unix: failed to accept a connection: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    unreachable!("UnixListener::incoming never ends")
}

/// Guest mode: serves vsock and the virtio-serial port, whichever exist.
pub fn run_guest() -> ! {
    let started = Instant::now();
    let mut vsock_up = false;
    let mut serial_up = false;
    let mut warned = false;
    let mut logged_errors = Vec::new();
    loop {
        if !vsock_up {
            match start_vsock() {
                Ok(up) => vsock_up = up,
                Err(e) => log_once(&mut logged_errors, log::chain(&e)),
            }
        }
        if !serial_up {
            match start_serial() {
                Ok(up) => serial_up = up,
                Err(e) => log_once(&mut logged_errors, log::chain(&e)),
            }
        }
        if vsock_up && serial_up {
            break;
        }
        if started.elapsed() < DISCOVERY_WINDOW {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        if vsock_up || serial_up {
            let (up, down) = if vsock_up {
                ("vsock", "serial")
            } else {
                ("serial", "vsock")
            };
            log!("serving on {up} only; no {down} channel appeared");
            break;
        }
        if !warned {
            log!(
                "no agent channel after {} s (no vsock device, no virtio-serial port {}); \
                 still looking every second",
                DISCOVERY_WINDOW.as_secs(),
                AGENT_SERIAL_PORT_NAME
            );
            warned = true;
        }
        thread::sleep(Duration::from_secs(1));
    }
    loop {
        thread::park();
    }
}

fn log_once(logged: &mut Vec<String>, message: String) {
    if !logged.contains(&message) {
        log!("{message}");
        logged.push(message);
    }
}

/// Starts the vsock listener if the guest has a vsock device.
fn start_vsock() -> Result<bool, vsock::VsockError> {
    let Some(cid) = vsock::local_cid() else {
        return Ok(false);
    };
    let listener = VsockListener::bind(AGENT_VSOCK_PORT)?;
    log!("vsock channel up: cid {cid} port {AGENT_VSOCK_PORT}");
    thread::spawn(move || loop {
        match listener.accept() {
            Ok(stream) => {
                thread::spawn(move || serve(stream, "vsock", &ShutdownMode::RebootGuest));
            }
            Err(e) => {
                log!("{}", log::chain(&e));
                thread::sleep(Duration::from_millis(100));
            }
        }
    });
    Ok(true)
}

/// Starts serving the virtio-serial port if the kernel has it.
fn start_serial() -> Result<bool, serial::SerialError> {
    let sysfs = Path::new(serial::SYSFS_PORTS);
    let Some(device) = serial::find_port(sysfs, Path::new("/dev"), AGENT_SERIAL_PORT_NAME) else {
        return Ok(false);
    };
    let mut port = SerialPort::open(&device)?;
    log!(
        "serial channel up: {} ({AGENT_SERIAL_PORT_NAME})",
        device.display()
    );
    thread::spawn(move || loop {
        // One session per host connection; an error costs a pause so a
        // broken port cannot spin.
        if serve(&mut port, "serial", &ShutdownMode::RebootGuest) == Ended::Failed {
            thread::sleep(Duration::from_secs(1));
        }
    });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream fed from a buffer whose writes are recorded.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn run(frames: &[&[u8]], raw_tail: &[u8]) -> (Ended, Vec<ResponseEnvelope>) {
        let mut input = Vec::new();
        for body in frames {
            frame::write_frame(&mut input, body).unwrap();
        }
        input.extend_from_slice(raw_tail);
        let mut stream = Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        let mode = ShutdownMode::ExitProcess { socket: None };
        let ended = serve(&mut stream, "test", &mode);
        let mut output = Cursor::new(stream.output);
        let mut responses = Vec::new();
        while let Ok(f) = frame::read_frame(&mut output) {
            responses.push(serde_json::from_slice(&f.body).unwrap());
        }
        (ended, responses)
    }

    fn bad_request_id(envelope: &ResponseEnvelope) -> u64 {
        match &envelope.response {
            Response::Error(e) if e.kind == ErrorKind::BadRequest => envelope.id,
            other => panic!("expected BadRequest, got {other:?}"),
        }
    }

    #[test]
    fn bad_frames_get_errors_and_the_stream_stays_usable() {
        let (ended, responses) = run(
            &[
                b"not json",
                br#"{"id":5,"op":"nope"}"#,
                br#"{"id":6,"op":"read_file"}"#,
                br#"{"id":7,"op":"hello"}"#,
            ],
            b"",
        );
        assert_eq!(ended, Ended::Closed);
        assert_eq!(responses.len(), 4);
        assert_eq!(bad_request_id(&responses[0]), 0);
        assert_eq!(bad_request_id(&responses[1]), 5);
        assert_eq!(bad_request_id(&responses[2]), 6);
        assert_eq!(responses[3].id, 7);
        assert!(matches!(&responses[3].response, Response::Hello(i) if i.transport == "test"));
    }

    #[test]
    fn oversized_frame_is_answered_then_closed() {
        let mut tail = b"CRVA".to_vec();
        tail.extend((MAX_FRAME_LEN + 1).to_le_bytes());
        let (ended, responses) = run(&[br#"{"id":1,"op":"hello"}"#], &tail);
        assert_eq!(ended, Ended::Failed);
        assert_eq!(responses.len(), 2);
        assert!(matches!(
            &responses[1],
            ResponseEnvelope { id: 0, response: Response::Error(e) } if e.kind == ErrorKind::TooLarge
        ));
    }

    #[test]
    fn truncated_frame_ends_the_connection() {
        let (ended, responses) = run(&[], b"CRVA\x10\0\0\0{\"id\"");
        assert_eq!(ended, Ended::Failed);
        assert!(responses.is_empty());
    }
}
