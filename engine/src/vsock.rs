//! The host side of Firecracker's virtio-vsock Unix-socket protocol, which
//! vhost-device-vsock and crvmm's own vsock device both speak: connect to the
//! device's Unix socket, send `CONNECT <port>\n`, read `OK <host port>\n`,
//! and from then on the stream is the guest connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest acknowledgement line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_ACK_LEN: usize = 32;

/// Errors of a host-initiated vsock connection.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The device's Unix socket is not there or refuses connections.
    #[error("cannot connect to the vsock socket {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Sending `CONNECT` or reading the answer failed.
    #[error("vsock handshake for guest port {port} failed")]
    Io {
        /// The guest port.
        port: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device closed the connection: nothing listens on the guest port.
    #[error("nothing listens on guest vsock port {port}")]
    Refused {
        /// The guest port.
        port: u32,
    },
    /// The device answered something other than `OK <port>`.
    #[error("unexpected vsock handshake answer {answer:?} for guest port {port}")]
    BadAnswer {
        /// The guest port.
        port: u32,
        /// What came back.
        answer: String,
    },
}

/// Connects to guest `port` through the device socket at `uds_path`.
/// `timeout` bounds the handshake and stays set on the returned stream.
pub fn connect(uds_path: &Path, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
    let mut stream = UnixStream::connect(uds_path).map_err(|source| VsockError::Connect {
        path: uds_path.to_owned(),
        source,
    })?;
    let io_err = |source| VsockError::Io { port, source };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    handshake(&mut stream, port)?;
    Ok(stream)
}

/// Runs the `CONNECT`/`OK` exchange on an open stream and returns the host
/// port the device assigned. Reads byte by byte so no guest data that follows
/// the acknowledgement is consumed.
pub fn handshake<S: Read + Write>(stream: &mut S, port: u32) -> Result<u32, VsockError> {
    let io_err = |source| VsockError::Io { port, source };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(io_err)?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) if line.is_empty() => return Err(VsockError::Refused { port }),
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // vhost-device-vsock resets a connection to a port nobody listens on.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(VsockError::Refused { port })
            }
            Err(e) => return Err(io_err(e)),
        }
        if line.len() > MAX_ACK_LEN {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&line).into_owned();
    answer
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or(VsockError::BadAnswer { port, answer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    struct Peer {
        answer: Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.answer.read(buf)
        }
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn peer(answer: &[u8]) -> Peer {
        Peer {
            answer: Cursor::new(answer.to_vec()),
            sent: Vec::new(),
        }
    }

    #[test]
    fn accepts_ok_and_leaves_following_data() {
        let mut p = peer(b"OK 1073741824\nguest data");
        assert_eq!(handshake(&mut p, 1024).unwrap(), 1_073_741_824);
        assert_eq!(p.sent, b"CONNECT 1024\n");
        let mut rest = String::new();
        p.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "guest data");
    }

    #[test]
    fn closed_connection_means_refused() {
        assert!(matches!(
            handshake(&mut peer(b""), 52),
            Err(VsockError::Refused { port: 52 })
        ));
    }

    #[test]
    fn garbage_answer_is_reported() {
        let err = handshake(&mut peer(b"ERR nope\n"), 7).unwrap_err();
        assert!(matches!(err, VsockError::BadAnswer { ref answer, .. } if answer == "ERR nope"));
    }

    #[test]
    fn endless_answer_is_cut_off() {
        let err = handshake(&mut peer(&[b'x'; 4096]), 7).unwrap_err();
        assert!(matches!(err, VsockError::BadAnswer { ref answer, .. } if answer.len() <= 33));
    }

    #[test]
    fn real_socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).unwrap();
            assert_eq!(&req, b"CONNECT 1024\n");
            s.write_all(b"OK 99\nping").unwrap();
        });
        let mut stream = connect(&path, 1024, Duration::from_secs(5)).unwrap();
        let mut data = [0u8; 4];
        stream.read_exact(&mut data).unwrap();
        assert_eq!(&data, b"ping");
        server.join().unwrap();
    }

    #[test]
    fn missing_socket_names_the_path() {
        let err = connect(Path::new("/nonexistent/v.sock"), 1, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/v.sock"));
    }
}
