//! The vsock wire format: the 44-byte little-endian `virtio_vsock_hdr`, and
//! reading and writing packets in descriptor chains with checked guest
//! memory accesses only.

use std::io::{self, Read, Write};

use virtio_queue::{DescriptorChain, Writer};
use vm_memory::bitmap::MS;

use crate::GuestMemoryMmap;

/// Bytes of a packet header.
pub const HDR_LEN: usize = 44;
/// Largest payload the device sends or accepts (Linux's largest packet).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The only socket type the device supports.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations.
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused, or torn down).
    pub const RST: u16 = 3;
    /// One or both directions closed.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Credit information, unsolicited or on request.
    pub const CREDIT_UPDATE: u16 = 6;
    /// A request for credit information.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Event-queue event: the transport was reset, every connection is gone.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// Errors of packet parsing: each drops one descriptor chain.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The chain's descriptors are unusable (loop, outside guest memory).
    #[error("invalid descriptor chain")]
    Chain(#[source] virtio_queue::Error),
    /// A tx chain has a device-writable descriptor.
    #[error("device-writable descriptor in a tx chain")]
    WritableInTx,
    /// A tx chain is shorter than a header.
    #[error("tx chain holds {0} bytes, less than a header")]
    ShortHeader(usize),
    /// The header announces more payload than the chain holds.
    #[error("header announces {len} payload bytes, the chain holds {avail}")]
    LenBeyondBuffer {
        /// Announced payload.
        len: u32,
        /// Payload bytes in the chain.
        avail: usize,
    },
    /// The header announces more payload than any packet may carry.
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLong(u32),
    /// An rx chain is shorter than a header.
    #[error("rx chain holds {0} bytes, less than a header")]
    ShortRxBuffer(usize),
    /// Copying from guest memory failed.
    #[error("read guest memory")]
    Read(#[source] io::Error),
    /// Copying to guest memory failed.
    #[error("write guest memory")]
    Write(#[source] io::Error),
}

/// `struct virtio_vsock_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN_*).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// Decodes a header.
    pub fn parse(b: &[u8; HDR_LEN]) -> VsockHeader {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        VsockHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes a header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Reads the packet the guest put in a tx chain: the header, and its
/// payload into `payload[..header.len]`.
pub fn read_tx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    payload: &mut [u8; MAX_PAYLOAD],
) -> Result<VsockHeader, PacketError> {
    if chain.clone().any(|d| d.is_write_only()) {
        return Err(PacketError::WritableInTx);
    }
    let mut reader = chain.reader(mem).map_err(PacketError::Chain)?;
    let avail = reader.available_bytes();
    let mut raw = [0u8; HDR_LEN];
    if avail < HDR_LEN {
        return Err(PacketError::ShortHeader(avail));
    }
    reader.read_exact(&mut raw).map_err(PacketError::Read)?;
    let hdr = VsockHeader::parse(&raw);
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD {
        return Err(PacketError::TooLong(hdr.len));
    }
    if len > avail - HDR_LEN {
        return Err(PacketError::LenBeyondBuffer {
            len: hdr.len,
            avail: avail - HDR_LEN,
        });
    }
    reader
        .read_exact(&mut payload[..len])
        .map_err(PacketError::Read)?;
    Ok(hdr)
}

/// A guest rx buffer being filled with one packet.
pub struct RxBuffer<'m> {
    writer: Writer<'m, MS<'m, GuestMemoryMmap>>,
}

impl<'m> RxBuffer<'m> {
    /// The writable part of an rx chain, if it can hold at least a header.
    pub fn new(
        mem: &'m GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<RxBuffer<'m>, PacketError> {
        let writer = chain.writer(mem).map_err(PacketError::Chain)?;
        if writer.available_bytes() < HDR_LEN {
            return Err(PacketError::ShortRxBuffer(writer.available_bytes()));
        }
        Ok(RxBuffer { writer })
    }

    /// Payload bytes the buffer can take after the header.
    pub fn payload_capacity(&self) -> usize {
        (self.writer.available_bytes() - HDR_LEN).min(MAX_PAYLOAD)
    }

    /// Writes the packet; returns the bytes written, for the used ring.
    pub fn write(mut self, hdr: &VsockHeader, payload: &[u8]) -> Result<u32, PacketError> {
        self.writer
            .write_all(&hdr.to_bytes())
            .map_err(PacketError::Write)?;
        self.writer.write_all(payload).map_err(PacketError::Write)?;
        // At most HDR_LEN + MAX_PAYLOAD bytes: fits.
        Ok(u32::try_from(self.writer.bytes_written()).unwrap_or(u32::MAX))
    }
}
