//! The trait between the vsock device and its host side.
//!
//! The device core owns the connections and speaks the vsock protocol with
//! the guest; a backend only makes host streams: it opens one when the guest
//! connects to a host port, and hands over the ones host clients opened
//! towards a guest port. Streams are any `Read + Write + AsRawFd`, used
//! non-blocking, so tests plug in socket pairs.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::EventSet;

/// A host client that asked to reach a guest port.
#[derive(Debug)]
pub struct HostRequest<S> {
    /// The client's stream, non-blocking.
    pub stream: S,
    /// The guest port it wants.
    pub port: u32,
}

/// Who owns a watched file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The backend (listener, clients mid-handshake).
    Backend,
    /// A connection of the device core.
    Connection,
}

/// A file descriptor the event loop should watch, and for what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// The descriptor.
    pub fd: RawFd,
    /// Who handles its events.
    pub owner: Owner,
    /// Unique for the life of the descriptor's owner object, so that a new
    /// object reusing a closed descriptor's number is told apart.
    pub token: u64,
    /// Events wanted; hang-up and error are always reported.
    pub events: EventSet,
}

/// The host side of a vsock device.
pub trait VsockBackend: Send {
    /// Host end of a connection.
    type Stream: Read + Write + AsRawFd + Send;

    /// The guest connects to host port `port`: a non-blocking stream to
    /// whoever serves it, or an error (the guest gets a reset).
    fn connect(&mut self, port: u32) -> io::Result<Self::Stream>;

    /// The next host client waiting to reach the guest, if any.
    fn take_request(&mut self) -> Option<HostRequest<Self::Stream>>;

    /// The guest accepted a host client's connection, which the device
    /// knows as host port `local_port`: tell the client. An error resets the
    /// connection (the client went away).
    fn confirm(&mut self, stream: &mut Self::Stream, local_port: u32) -> io::Result<()>;

    /// Appends the backend's own descriptors to watch.
    fn interest(&self, out: &mut Vec<Interest>);

    /// Handles events on one of the backend's descriptors.
    fn process(&mut self, fd: RawFd, events: EventSet);
}
