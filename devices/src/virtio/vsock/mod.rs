//! virtio-vsock (device ID 19), with the host side speaking Firecracker's
//! Unix-socket protocol.
//!
//! - [`packet`]: the wire format, parsed from descriptor chains with checked
//!   guest-memory accesses.
//! - `connection`, `muxer`: one connection's state and credit; the protocol
//!   between the guest and all connections (RST for strangers).
//! - [`Vsock`] (`device`): the device core, queues to muxer.
//! - [`VsockBackend`] (`backend`): the trait to the host side;
//!   [`UnixBackend`] (`unix`) implements the Unix-socket protocol.
//! - [`VsockEventHandler`] (`event_handler`): the event-manager glue.
//!
//! Wiring, for the VMM: build `Arc<Mutex<Vsock<UnixBackend>>>`, give one
//! handle to an [`MmioTransport`](crate::virtio::mmio::MmioTransport) on the
//! MMIO bus and the other to a [`VsockEventHandler`] added to the event
//! manager. Optionally register each of `Vsock::queue_events()[i]` as a KVM
//! ioeventfd at transport base + 0x50 with datamatch `i` (32-bit).

mod backend;
mod connection;
mod device;
mod event_handler;
mod muxer;
pub mod packet;
mod unix;

#[cfg(test)]
mod tests;

pub use backend::{HostRequest, Interest, Owner, VsockBackend};
pub use connection::{ConnectionError, BUF_ALLOC};
pub use device::{Vsock, VsockError, VsockState};
pub use event_handler::{EventHandlerError, VsockEventHandler};
pub use muxer::{MAX_CONNECTIONS, MAX_PENDING_RESETS};
pub use unix::{UnixBackend, UnixBackendError, MAX_CONNECT_LINE, MAX_WAITING_CLIENTS};

/// The virtio device ID of vsock.
pub const VSOCK_DEVICE_ID: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
/// The host's context ID.
pub const HOST_CID: u64 = 2;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (device to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (guest to device).
pub const TX_QUEUE: usize = 1;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 2;
