//! A guest vsock driver over [`QueueDriver`]s: posts rx and event buffers,
//! sends packets on the tx queue, reads what the device returned.

use std::collections::HashMap;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{Buf, QueueDriver};
use crate::virtio::vsock::packet::{VsockHeader, HDR_LEN, MAX_PAYLOAD, TYPE_STREAM};
use crate::virtio::vsock::{HOST_CID, QUEUE_SIZE};
use crate::GuestMemoryMmap;

/// Bytes of one data slot: a header and the largest payload, rounded up.
pub const SLOT_LEN: u64 = ((HDR_LEN + MAX_PAYLOAD) as u64).next_multiple_of(0x1000);
/// Where data slots start in guest memory (the rings sit below).
pub const DATA_START: u64 = 0x10_0000;
/// The receive buffer the driver advertises unless a test says otherwise.
pub const GUEST_BUF_ALLOC: u32 = 256 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    Rx,
    Tx,
    Event,
}

/// The guest side of a vsock device.
pub struct VsockDriver {
    mem: GuestMemoryMmap,
    /// The receive queue.
    pub rx: QueueDriver,
    /// The transmit queue.
    pub tx: QueueDriver,
    /// The event queue.
    pub event: QueueDriver,
    guest_cid: u64,
    free_slots: Vec<u64>,
    slots: HashMap<(Which, u16), Vec<u64>>,
    staged: Vec<u64>,
    scratch: Vec<u8>,
}

impl VsockDriver {
    /// A driver for a guest with `guest_cid`, its rings at the bottom of
    /// `mem` and data slots above [`DATA_START`].
    pub fn new(mem: &GuestMemoryMmap, guest_cid: u64) -> VsockDriver {
        let step = QueueDriver::footprint(QUEUE_SIZE);
        let end = mem.last_addr().0 + 1;
        VsockDriver {
            mem: mem.clone(),
            rx: QueueDriver::new(mem, 0, QUEUE_SIZE),
            tx: QueueDriver::new(mem, step, QUEUE_SIZE),
            event: QueueDriver::new(mem, 2 * step, QUEUE_SIZE),
            guest_cid,
            free_slots: (0..(end - DATA_START) / SLOT_LEN)
                .rev()
                .map(|i| DATA_START + i * SLOT_LEN)
                .collect(),
            slots: HashMap::new(),
            staged: Vec::new(),
            scratch: vec![0; SLOT_LEN as usize],
        }
    }

    /// The device's view of the three queues, configured and ready.
    pub fn queues(&self) -> Vec<Queue> {
        [&self.rx, &self.tx, &self.event]
            .iter()
            .map(|q| q.device_queue(QUEUE_SIZE))
            .collect()
    }

    /// A header from the guest: the guest's CID to the host's, a stream,
    /// [`GUEST_BUF_ALLOC`] and `fwd_cnt` 0.
    pub fn header(&self, op: u16, src_port: u32, dst_port: u32) -> VsockHeader {
        VsockHeader {
            src_cid: self.guest_cid,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: GUEST_BUF_ALLOC,
            fwd_cnt: 0,
        }
    }

    fn slot(&mut self) -> u64 {
        self.free_slots
            .pop()
            .expect("guest memory has a free data slot")
    }

    /// Posts up to `count` rx buffers of `len` bytes (at most a slot);
    /// returns how many fitted in the queue.
    pub fn post_rx(&mut self, count: usize, len: u32) -> usize {
        assert!(u64::from(len) <= SLOT_LEN);
        (0..count).take_while(|_| self.post(Which::Rx, len)).count()
    }

    /// Posts up to `count` 4-byte event buffers.
    pub fn post_events(&mut self, count: usize) -> usize {
        (0..count)
            .take_while(|_| self.post(Which::Event, 4))
            .count()
    }

    fn post(&mut self, which: Which, len: u32) -> bool {
        let addr = self.slot();
        let queue = if which == Which::Rx {
            &mut self.rx
        } else {
            &mut self.event
        };
        match queue.add(&[Buf {
            addr,
            len,
            writable: true,
        }]) {
            Some(head) => {
                self.slots.insert((which, head), vec![addr]);
                true
            }
            None => {
                self.free_slots.push(addr);
                false
            }
        }
    }

    /// Sends a packet: the header in one descriptor, the payload (if any)
    /// in a second; `hdr.len` is sent as given.
    pub fn send(&mut self, hdr: &VsockHeader, payload: &[u8]) -> u16 {
        let mut bufs = vec![self.stage(&hdr.to_bytes())];
        if !payload.is_empty() {
            bufs.push(self.stage(payload));
        }
        self.send_chain(&bufs).expect("tx queue has room")
    }

    /// Writes `data` into a fresh slot, which the next chain sent holds
    /// until the device returns it.
    pub fn stage(&mut self, data: &[u8]) -> Buf {
        let addr = self.slot();
        self.mem
            .write_slice(data, GuestAddress(addr))
            .expect("slot in memory");
        self.staged.push(addr);
        Buf {
            addr,
            len: data.len() as u32,
            writable: false,
        }
    }

    /// Makes `bufs` (staged or any addresses) available on the tx queue as
    /// one chain.
    pub fn send_chain(&mut self, bufs: &[Buf]) -> Option<u16> {
        let reserved = std::mem::take(&mut self.staged);
        let head = self.tx.add(bufs);
        match head {
            Some(head) => {
                self.slots.insert((Which::Tx, head), reserved);
            }
            None => self.free_slots.extend(reserved),
        }
        head
    }

    /// Takes back the tx chains the device consumed; returns how many.
    pub fn reclaim_tx(&mut self) -> usize {
        let mut n = 0;
        while let Some((head, _)) = self.tx.pop_used() {
            self.release(Which::Tx, head);
            n += 1;
        }
        n
    }

    fn release(&mut self, which: Which, head: u16) -> Vec<u64> {
        let slots = self.slots.remove(&(which, head)).unwrap_or_default();
        self.free_slots.extend(&slots);
        slots
    }

    /// Calls `f` with every packet the device put in rx buffers (the
    /// buffers are not re-posted). Returns how many.
    pub fn recv_with(&mut self, mut f: impl FnMut(&VsockHeader, &[u8])) -> usize {
        let mut n = 0;
        while let Some((head, len)) = self.rx.pop_used() {
            let addr = self.release(Which::Rx, head)[0];
            let len = (len as usize).min(self.scratch.len());
            self.mem
                .read_slice(&mut self.scratch[..len], GuestAddress(addr))
                .expect("rx slot");
            n += 1;
            if len < HDR_LEN {
                continue;
            }
            let raw: &[u8; HDR_LEN] = self.scratch[..HDR_LEN].try_into().expect("header bytes");
            let hdr = VsockHeader::parse(raw);
            let end = (HDR_LEN + hdr.len as usize).min(len);
            f(&hdr, &self.scratch[HDR_LEN..end]);
        }
        n
    }

    /// Every packet the device put in rx buffers, with its payload.
    pub fn recv(&mut self) -> Vec<(VsockHeader, Vec<u8>)> {
        let mut out = Vec::new();
        self.recv_with(|h, p| out.push((*h, p.to_vec())));
        out
    }

    /// Every event the device put in event buffers.
    pub fn recv_events(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some((head, len)) = self.event.pop_used() {
            let addr = self.release(Which::Event, head)[0];
            if len == 4 {
                out.push(
                    self.mem
                        .read_obj::<u32>(GuestAddress(addr))
                        .expect("event slot"),
                );
            }
        }
        out
    }
}

/// Whether `hdr` is an `op` packet for the connection `host_port` <->
/// `guest_port`, from the host.
pub fn is(hdr: &VsockHeader, op: u16, host_port: u32, guest_port: u32) -> bool {
    hdr.op == op
        && hdr.src_port == host_port
        && hdr.dst_port == guest_port
        && hdr.src_cid == HOST_CID
}

/// Convenience for tests: the op of each packet.
pub fn ops(packets: &[(VsockHeader, Vec<u8>)]) -> Vec<u16> {
    packets.iter().map(|(h, _)| h.op).collect()
}
