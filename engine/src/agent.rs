//! How the host reaches a guest agent, recorded in a VM's run directory so
//! any `crvmm` process can connect.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crvmm_protocol::AgentClient;

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
