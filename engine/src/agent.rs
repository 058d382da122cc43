//! How the host reaches a guest agent, recorded in a VM's run directory so
//! any `crvmm` process can connect.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crvmm_protocol::{AgentClient, ClientError, HelloInfo};

use crate::error::EngineError;
use crate::vsock::{self, VsockError};

/// A connected agent client.
pub type AgentConnection = AgentClient<UnixStream>;

/// The host end of the agent channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum AgentEndpoint {
    /// A vsock device's Unix socket and the agent's guest port.
    Vsock {
        /// The device's host-side socket (`CONNECT <port>` protocol).
        uds_path: PathBuf,
        /// The agent's vsock port.
        port: u32,
    },
    /// A Unix socket wired to the agent's virtio-serial port.
    Serial {
        /// The socket.
        socket: PathBuf,
    },
}

impl AgentEndpoint {
    /// True for the virtio-serial channel, whose host end is a byte stream
    /// shared by successive clients.
    pub fn is_serial(&self) -> bool {
        matches!(self, AgentEndpoint::Serial { .. })
    }

    /// Opens a connection; `timeout` bounds the connection set-up and every
    /// later read and write on it (change it with `stream_mut()`).
    pub fn connect(&self, timeout: Duration) -> Result<AgentConnection, VsockError> {
        let stream = match self {
            AgentEndpoint::Vsock { uds_path, port } => vsock::connect(uds_path, *port, timeout)?,
            AgentEndpoint::Serial { socket } => {
                let connect_err = |source| VsockError::Connect {
                    path: socket.clone(),
                    source,
                };
                let s = UnixStream::connect(socket).map_err(connect_err)?;
                s.set_read_timeout(Some(timeout)).map_err(connect_err)?;
                s.set_write_timeout(Some(timeout)).map_err(connect_err)?;
                s
            }
        };
        Ok(AgentClient::new(stream))
    }
}

/// Polls the agent at `endpoint` with `hello` until it answers (`Ok(Ok)`),
/// `timeout` passes (`Ok(Err(seconds waited))`), or `alive` reports that the
/// VM is gone (its error is returned).
///
/// A serial line is polled every half second on one connection. A vsock
/// `CONNECT` is never abandoned early: vhost-device-vsock 0.3.0 stops
/// answering any later connection if a host client goes away while its
/// request is still queued for the guest (as it is while the guest driver
/// is not up). The guest answers every request in the end, with OK or, while
/// nothing listens, a reset.
pub(crate) fn wait_ready(
    endpoint: &AgentEndpoint,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), EngineError>,
) -> Result<Result<HelloInfo, f64>, EngineError> {
    let started = Instant::now();
    let mut conn = None;
    loop {
        alive()?;
        if conn.is_none() {
            let attempt = if endpoint.is_serial() {
                Duration::from_millis(500)
            } else {
                timeout
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_secs(1))
            };
            conn = endpoint.connect(attempt).ok();
        }
        if let Some(client) = conn.as_mut() {
            match client.hello() {
                Ok(info) => return Ok(Ok(info)),
                // A quiet serial line: keep the connection, ask again.
                Err(e) if e.is_timeout() && endpoint.is_serial() => {}
                Err(e @ ClientError::Version { .. }) => return Err(e.into()),
                Err(_) => conn = None,
            }
        }
        if started.elapsed() >= timeout {
            return Ok(Err(started.elapsed().as_secs_f64()));
        }
        if conn.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
