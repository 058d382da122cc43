//! The host side of Firecracker's vsock Unix-socket protocol.
//!
//! Host-initiated: the backend listens on `uds_path`; a client connects and
//! writes `CONNECT <port>\n`; once the guest accepts, the client reads
//! `OK <host port>\n` and the stream is the connection; if the guest
//! refuses, the client's socket is closed. Guest-initiated: a guest
//! connecting to host port `P` reaches whoever listens on `<uds_path>_P`;
//! nobody there means a reset.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::EventSet;

use super::backend::{HostRequest, Interest, Owner, VsockBackend};

/// Longest `CONNECT <port>\n` line accepted.
pub const MAX_CONNECT_LINE: usize = 32;
/// Host clients in the handshake or waiting for the guest, at most; past
/// that the listener is not polled and clients wait in its backlog.
pub const MAX_WAITING_CLIENTS: usize = 64;

const LISTENER_TOKEN: u64 = 0;

/// Errors of the Unix backend.
#[derive(Debug, thiserror::Error)]
pub enum UnixBackendError {
    /// Binding the listening socket failed.
    #[error("listen on {path}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Making the listener non-blocking failed.
    #[error("make the listener on {path} non-blocking")]
    NonBlocking {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// A host client that has not finished its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    token: u64,
}

/// Outcome of reading a handshake.
enum Progress {
    Waiting,
    Done(u32),
    Failed(String),
}

/// A vsock backend that speaks the Unix-socket protocol.
pub struct UnixBackend {
    path: PathBuf,
    listener: UnixListener,
    handshakes: HashMap<RawFd, Handshake>,
    ready: VecDeque<HostRequest<UnixStream>>,
    next_token: u64,
}

impl UnixBackend {
    /// Listens on `path` (which must not exist; it is removed on drop).
    pub fn new(path: impl Into<PathBuf>) -> Result<UnixBackend, UnixBackendError> {
        let path = path.into();
        let listener = UnixListener::bind(&path).map_err(|source| UnixBackendError::Bind {
            path: path.clone(),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| UnixBackendError::NonBlocking {
                path: path.clone(),
                source,
            })?;
        Ok(UnixBackend {
            path,
            listener,
            handshakes: HashMap::new(),
            ready: VecDeque::new(),
            next_token: LISTENER_TOKEN,
        })
    }

    /// The listening socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket a guest connect to host port `port` reaches.
    pub fn port_path(&self, port: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!("_{port}"));
        PathBuf::from(p)
    }

    fn waiting(&self) -> usize {
        self.handshakes.len() + self.ready.len()
    }

    fn accept(&mut self) {
        while self.waiting() < MAX_WAITING_CLIENTS {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("vsock: host client dropped: {e}");
                        continue;
                    }
                    self.next_token += 1;
                    let token = self.next_token;
                    let hs = Handshake {
                        stream,
                        line: Vec::with_capacity(MAX_CONNECT_LINE),
                        token,
                    };
                    self.handshakes.insert(hs.stream.as_raw_fd(), hs);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("vsock: accept on {}: {e}", self.path.display());
                    break;
                }
            }
        }
    }

    fn handshake(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        match read_connect(hs) {
            Progress::Waiting => {}
            Progress::Done(port) => {
                if let Some(hs) = self.handshakes.remove(&fd) {
                    self.ready.push_back(HostRequest {
                        stream: hs.stream,
                        port,
                    });
                }
            }
            Progress::Failed(why) => {
                log::debug!("vsock: host client dropped: {why}");
                self.handshakes.remove(&fd);
            }
        }
    }
}

/// Reads the `CONNECT` line one byte at a time, so that nothing the client
/// sends after it is consumed here.
fn read_connect(hs: &mut Handshake) -> Progress {
    loop {
        let mut byte = [0u8];
        match hs.stream.read(&mut byte) {
            Ok(0) => return Progress::Failed("closed during the handshake".into()),
            Ok(_) if byte[0] == b'\n' => return parse_connect(&hs.line),
            Ok(_) if hs.line.len() == MAX_CONNECT_LINE => {
                return Progress::Failed("CONNECT line too long".into())
            }
            Ok(_) => hs.line.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Waiting,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Progress::Failed(e.to_string()),
        }
    }
}

fn parse_connect(line: &[u8]) -> Progress {
    let port = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|p| p.trim_end_matches('\r').parse::<u32>().ok());
    match port {
        Some(port) => Progress::Done(port),
        None => Progress::Failed(format!("bad handshake {:?}", String::from_utf8_lossy(line))),
    }
}

impl VsockBackend for UnixBackend {
    type Stream = UnixStream;

    fn connect(&mut self, port: u32) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(self.port_path(port))?;
        stream.set_nonblocking(true)?;
        Ok(stream)
    }

    fn take_request(&mut self) -> Option<HostRequest<UnixStream>> {
        self.ready.pop_front()
    }

    fn confirm(&mut self, stream: &mut UnixStream, local_port: u32) -> io::Result<()> {
        stream.write_all(format!("OK {local_port}\n").as_bytes())
    }

    fn interest(&self, out: &mut Vec<Interest>) {
        if self.waiting() < MAX_WAITING_CLIENTS {
            out.push(Interest {
                fd: self.listener.as_raw_fd(),
                owner: Owner::Backend,
                token: LISTENER_TOKEN,
                events: EventSet::IN,
            });
        }
        out.extend(self.handshakes.iter().map(|(&fd, hs)| Interest {
            fd,
            owner: Owner::Backend,
            token: hs.token,
            events: EventSet::IN,
        }));
    }

    fn process(&mut self, fd: RawFd, _events: EventSet) {
        if fd == self.listener.as_raw_fd() {
            self.accept();
            // A client may have written its line before we accepted it.
            let fds: Vec<RawFd> = self.handshakes.keys().copied().collect();
            for fd in fds {
                self.handshake(fd);
            }
        } else {
            self.handshake(fd);
        }
    }
}

impl Drop for UnixBackend {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("vsock: remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempdir::TempDir;

    fn backend() -> (TempDir, UnixBackend) {
        let dir = TempDir::new_with_prefix("/tmp/crvmm-vsock-").unwrap();
        let b = UnixBackend::new(dir.as_path().join("v.sock")).unwrap();
        (dir, b)
    }

    fn pump(b: &mut UnixBackend) {
        let mut fds = Vec::new();
        b.interest(&mut fds);
        for i in fds {
            b.process(i.fd, EventSet::IN);
        }
    }

    #[test]
    fn handshake_yields_a_request_and_keeps_later_bytes() {
        let (_dir, mut b) = backend();
        let mut client = UnixStream::connect(b.path()).unwrap();
        client.write_all(b"CONNECT 1024\nhello").unwrap();
        pump(&mut b);
        let mut req = b.take_request().expect("request");
        assert_eq!(req.port, 1024);
        let mut rest = [0u8; 5];
        req.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");
        b.confirm(&mut req.stream, 1 << 30).unwrap();
        let mut ok = [0u8; 14];
        client.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"OK 1073741824\n");
    }

    #[test]
    fn bad_handshakes_are_closed() {
        let (_dir, mut b) = backend();
        let mut bad = UnixStream::connect(b.path()).unwrap();
        bad.write_all(b"HELLO 1\n").unwrap();
        let mut long = UnixStream::connect(b.path()).unwrap();
        long.write_all(&[b'9'; 100]).unwrap();
        let slow = UnixStream::connect(b.path()).unwrap();
        pump(&mut b);
        assert!(b.take_request().is_none());
        let mut buf = [0u8; 1];
        assert_eq!(bad.read(&mut buf).unwrap(), 0, "closed");
        assert_eq!(b.handshakes.len(), 1, "the silent client still waits");
        drop(slow);
        pump(&mut b);
        assert!(b.handshakes.is_empty());
    }

    #[test]
    fn guest_connects_reach_port_sockets() {
        let (_dir, mut b) = backend();
        assert!(b.connect(52).is_err());
        let listener = UnixListener::bind(b.port_path(52)).unwrap();
        let _stream = b.connect(52).unwrap();
        listener.accept().unwrap();
        let path = b.path().to_path_buf();
        drop(b);
        assert!(!path.exists(), "listening socket removed");
    }
}
