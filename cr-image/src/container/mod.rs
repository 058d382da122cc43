//! Container images: what the guest agent streams out of a VM when it
//! checkpoints a container, and reads back to restore it. They bundle the
//! kernel's per-process images with the agent's manifest (spec, namespaces,
//! process tree). Format: [`format`] and `docs/container-image.md`.

mod check;
pub mod eventfds;
pub mod format;
pub mod pipes;
mod reader;
pub mod shm;
pub mod sockets;
mod writer;

pub use check::{check_container, ChannelReader, ContainerCheck, ProcessCheck};
pub use eventfds::EventfdEntry;
pub use format::{hex, Clocks, Digest, Manifest, ProcessEntry, ZombieEntry};
pub use pipes::{PipeEnd, PipeEntry};
pub use reader::{ContainerError, ContainerReader, Event};
pub use shm::{ShmEntry, ShmKind};
pub use sockets::{SocketEnd, SocketPairEntry, SocketSide};
pub use writer::{ContainerWriter, Written};

/// True if `bytes` (the start of a stream) look like a container image.
pub fn is_container_image(bytes: &[u8]) -> bool {
    bytes.len() >= 16
        && format::le_u32(bytes, 0) == format::CT_REC_HEADER
        && format::le_u64(bytes, 8) == format::CT_MAGIC
}

#[cfg(test)]
mod tests;
