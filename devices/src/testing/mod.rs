//! Test support, public so that benchmarks can use it too: a guest-side
//! split-virtqueue driver, a vsock driver on top of it, a counting
//! [`Interrupt`] and a shared output buffer. Test code: it panics on misuse.

pub mod vsock;

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::{BusDevice, GuestMemoryMmap, Interrupt};

/// An interrupt line that counts its edges.
#[derive(Debug, Default)]
pub struct CountingInterrupt {
    count: AtomicUsize,
}

impl CountingInterrupt {
    /// Edges so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingInterrupt {
    fn trigger(&self) -> io::Result<()> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A `Write` whose bytes the test reads back.
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("buffer lock").clone()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Anonymous guest memory of `size` bytes at address 0.
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
}

/// A buffer in a descriptor chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Guest address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// The driver side of one split virtqueue in guest memory.
pub struct QueueDriver {
    mem: GuestMemoryMmap,
    size: u16,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    free: Vec<u16>,
    avail_idx: u16,
    used_seen: u16,
    chains: HashMap<u16, Vec<u16>>,
}

impl QueueDriver {
    /// Bytes the rings of a queue of `size` take, rounded up to 16.
    pub fn footprint(size: u16) -> u64 {
        let n = u64::from(size);
        let used = (16 * n + 6 + 2 * n).next_multiple_of(4);
        (used + 6 + 8 * n).next_multiple_of(16)
    }

    /// Lays out a queue of `size` at `base` (16-aligned) and zeroes its rings.
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> QueueDriver {
        let n = u64::from(size);
        let avail_ring = base + 16 * n;
        let used_ring = (avail_ring + 6 + 2 * n).next_multiple_of(4);
        let zeros = vec![0u8; Self::footprint(size) as usize];
        mem.write_slice(&zeros, GuestAddress(base))
            .expect("rings in memory");
        QueueDriver {
            mem: mem.clone(),
            size,
            desc_table: base,
            avail_ring,
            used_ring,
            free: (0..size).rev().collect(),
            avail_idx: 0,
            used_seen: 0,
            chains: HashMap::new(),
        }
    }

    /// Descriptor table, available ring and used ring addresses.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc_table, self.avail_ring, self.used_ring)
    }

    /// The queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The device's view of this queue, configured and ready.
    pub fn device_queue(&self, max_size: u16) -> Queue {
        let mut q = Queue::new(max_size).expect("max size");
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.desc_table))
            .expect("aligned");
        q.try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .expect("aligned");
        q.try_set_used_ring_address(GuestAddress(self.used_ring))
            .expect("aligned");
        q.set_ready(true);
        q
    }

    /// Descriptors not in use.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains the device has not returned yet.
    pub fn in_flight(&self) -> usize {
        self.chains.len()
    }

    /// Makes a chain of `bufs` available; `None` without enough descriptors.
    pub fn add(&mut self, bufs: &[Buf]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return None;
        }
        let idx: Vec<u16> = (0..bufs.len())
            .map(|_| self.free.pop().expect("checked"))
            .collect();
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let flags =
                if last { 0 } else { DESC_F_NEXT } | if b.writable { DESC_F_WRITE } else { 0 };
            let next = if last { 0 } else { idx[i + 1] };
            self.write_desc(idx[i], b.addr, b.len, flags, next);
        }
        let head = idx[0];
        self.chains.insert(head, idx);
        let slot = self.avail_ring + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(self.avail_ring + 2))
            .expect("avail idx");
        Some(head)
    }

    /// Rewrites descriptor `index`, to build malformed chains.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_table + 16 * u64::from(index);
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem
            .write_slice(&raw, GuestAddress(at))
            .expect("descriptor table");
    }

    /// Makes `head` available as it is, chain or not, to feed the device
    /// garbage.
    pub fn push_raw_head(&mut self, head: u16) {
        let slot = self.avail_ring + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write_avail_idx(self.avail_idx);
    }

    /// Sets the available ring's index directly, to feed the device garbage.
    pub fn write_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.avail_ring + 2))
            .expect("avail idx");
    }

    /// The next chain the device returned: head and bytes written.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(self.used_ring + 2))
            .expect("used idx");
        if u16::from_le(idx) == self.used_seen {
            return None;
        }
        let elem = self.used_ring + 4 + 8 * u64::from(self.used_seen % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(elem)).expect("used elem");
        let len: u32 = self
            .mem
            .read_obj(GuestAddress(elem + 4))
            .expect("used elem");
        self.used_seen = self.used_seen.wrapping_add(1);
        let head = u32::from_le(id) as u16;
        if let Some(idx) = self.chains.remove(&head) {
            self.free.extend(idx);
        }
        Some((head, u32::from_le(len)))
    }
}

/// A 32-bit register read, as a driver does it.
pub fn mmio_read(dev: &mut dyn BusDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// A 32-bit register write, as a driver does it.
pub fn mmio_write(dev: &mut dyn BusDevice, offset: u64, value: u32) {
    dev.write(offset, &value.to_le_bytes());
}

/// What Linux's virtio-mmio driver does to a version-2 device, from reset
/// to DRIVER_OK: accepts the offered features in `accept`, sets up
/// `queues` (the driver's rings), and returns the final status. Panics if
/// the device is not a virtio-mmio v2 device.
pub fn linux_probe(dev: &mut dyn BusDevice, accept: u64, queues: &[&QueueDriver]) -> u32 {
    use crate::virtio::status::*;
    use virtio_bindings::virtio_mmio as r;
    let reg = |o: u32| u64::from(o);
    assert_eq!(
        mmio_read(dev, reg(r::VIRTIO_MMIO_MAGIC_VALUE)),
        crate::virtio::mmio::MAGIC
    );
    assert_eq!(mmio_read(dev, reg(r::VIRTIO_MMIO_VERSION)), 2);
    assert_ne!(mmio_read(dev, reg(r::VIRTIO_MMIO_DEVICE_ID)), 0);
    mmio_read(dev, reg(r::VIRTIO_MMIO_VENDOR_ID));
    mmio_write(dev, reg(r::VIRTIO_MMIO_STATUS), 0);
    let add_status = |dev: &mut dyn BusDevice, bit: u32| {
        let s = mmio_read(dev, reg(r::VIRTIO_MMIO_STATUS));
        mmio_write(dev, reg(r::VIRTIO_MMIO_STATUS), s | bit);
        mmio_read(dev, reg(r::VIRTIO_MMIO_STATUS))
    };
    add_status(dev, ACKNOWLEDGE);
    add_status(dev, DRIVER);
    mmio_write(dev, reg(r::VIRTIO_MMIO_DEVICE_FEATURES_SEL), 1);
    let high = mmio_read(dev, reg(r::VIRTIO_MMIO_DEVICE_FEATURES));
    mmio_write(dev, reg(r::VIRTIO_MMIO_DEVICE_FEATURES_SEL), 0);
    let low = mmio_read(dev, reg(r::VIRTIO_MMIO_DEVICE_FEATURES));
    let features = ((u64::from(high) << 32) | u64::from(low)) & accept;
    mmio_write(dev, reg(r::VIRTIO_MMIO_DRIVER_FEATURES_SEL), 1);
    mmio_write(
        dev,
        reg(r::VIRTIO_MMIO_DRIVER_FEATURES),
        (features >> 32) as u32,
    );
    mmio_write(dev, reg(r::VIRTIO_MMIO_DRIVER_FEATURES_SEL), 0);
    mmio_write(dev, reg(r::VIRTIO_MMIO_DRIVER_FEATURES), features as u32);
    if add_status(dev, FEATURES_OK) & FEATURES_OK == 0 {
        return mmio_read(dev, reg(r::VIRTIO_MMIO_STATUS));
    }
    for (i, q) in queues.iter().enumerate() {
        mmio_write(dev, reg(r::VIRTIO_MMIO_QUEUE_SEL), i as u32);
        assert_eq!(
            mmio_read(dev, reg(r::VIRTIO_MMIO_QUEUE_READY)),
            0,
            "queue {i} already live"
        );
        let max = mmio_read(dev, reg(r::VIRTIO_MMIO_QUEUE_NUM_MAX));
        assert!(
            u32::from(q.size()) <= max,
            "queue {i}: size {} > max {max}",
            q.size()
        );
        mmio_write(dev, reg(r::VIRTIO_MMIO_QUEUE_NUM), u32::from(q.size()));
        let (desc, avail, used) = q.addresses();
        for (low_reg, addr) in [
            (r::VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
            (r::VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail),
            (r::VIRTIO_MMIO_QUEUE_USED_LOW, used),
        ] {
            mmio_write(dev, reg(low_reg), addr as u32);
            mmio_write(dev, reg(low_reg + 4), (addr >> 32) as u32);
        }
        mmio_write(dev, reg(r::VIRTIO_MMIO_QUEUE_READY), 1);
    }
    add_status(dev, DRIVER_OK)
}
