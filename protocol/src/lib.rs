//! The crvmm agent protocol: one module shared by the host client and the
//! guest agent, so the two sides cannot drift apart.
//!
//! A connection carries frames (see [`frame`]); each frame holds one JSON
//! message (see [`message`]). The host sends a [`message::RequestEnvelope`],
//! the agent answers with exactly one [`message::ResponseEnvelope`] carrying
//! the same `id`. `docs/agent-protocol.md` describes the format for people.

mod b64;
pub mod client;
pub mod container;
pub mod frame;
pub mod message;
pub mod transfer;

/// Protocol revision. Bumped only for changes an old peer would misread;
/// new optional fields do not bump it.
pub const PROTOCOL_VERSION: u32 = 1;

/// The AF_VSOCK port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The name of the virtio-serial port the agent serves, as the guest sees
/// it in `/sys/class/virtio-ports/*/name`.
pub const AGENT_SERIAL_PORT_NAME: &str = "org.crvmm.agent";

pub use client::{AgentClient, ClientError};
pub use container::*;
pub use frame::{FrameError, MAX_FRAME_LEN};
pub use message::*;
pub use transfer::{CheckpointReport, ContainerCheckpoint, ContainerRestore};
