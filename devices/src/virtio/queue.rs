//! Saved virtqueue state, and the checks a queue passes before a device
//! may use it.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use crate::GuestMemoryMmap;

/// Errors of queue restore.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The saved queue was made for a device with another maximum size.
    #[error("saved queue has maximum size {saved}, the device {device}")]
    MaxSize {
        /// Saved maximum.
        saved: u16,
        /// The device's maximum.
        device: u16,
    },
    /// The saved values are invalid (size, alignment).
    #[error("invalid saved queue")]
    Invalid(#[source] virtio_queue::Error),
    /// A ready queue's rings do not lie in guest memory.
    #[error("saved queue's rings lie outside guest memory")]
    OutsideMemory,
}

/// A split virtqueue's configuration and progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// The device's maximum size.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// The driver made the queue ready.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available (driver) ring.
    pub avail_ring: u64,
    /// Guest address of the used (device) ring.
    pub used_ring: u64,
    /// Next available-ring entry the device will read.
    pub next_avail: u16,
    /// Next used-ring entry the device will write.
    pub next_used: u16,
    /// VIRTIO_RING_F_EVENT_IDX was negotiated.
    pub event_idx: bool,
}

impl QueueState {
    /// The state of `queue`.
    pub fn of(queue: &Queue) -> QueueState {
        let s = queue.state();
        QueueState {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
        }
    }

    /// A queue in this state, for a device whose maximum is `max_size`.
    pub fn restore(&self, max_size: u16, mem: &GuestMemoryMmap) -> Result<Queue, QueueError> {
        if self.max_size != max_size {
            return Err(QueueError::MaxSize {
                saved: self.max_size,
                device: max_size,
            });
        }
        let queue = Queue::try_from(virtio_queue::QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(QueueError::Invalid)?;
        if queue.ready() && !rings_in_memory(&queue, mem) {
            return Err(QueueError::OutsideMemory);
        }
        Ok(queue)
    }
}

/// Whether a queue size is one a driver may choose.
pub fn valid_size(size: u16, max_size: u16) -> bool {
    size.is_power_of_two() && size <= max_size
}

/// Whether the three rings of `queue`, at its current size, lie in `mem`.
pub fn rings_in_memory(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    let n = usize::from(queue.size());
    let fits = |addr: u64, len: usize, access| mem.check_range(GuestAddress(addr), len, access);
    fits(queue.desc_table(), 16 * n, Permissions::Read)
        && fits(queue.avail_ring(), 6 + 2 * n, Permissions::Read)
        && fits(queue.used_ring(), 6 + 8 * n, Permissions::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn ready_queue() -> Queue {
        let mut q = Queue::new(256).unwrap();
        q.set_size(64);
        q.try_set_desc_table_address(GuestAddress(0x1000)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(0x2000)).unwrap();
        q.try_set_used_ring_address(GuestAddress(0x3000)).unwrap();
        q.set_next_avail(5);
        q.set_next_used(4);
        q.set_ready(true);
        q
    }

    #[test]
    fn round_trips() {
        let state = QueueState::of(&ready_queue());
        let back = state.restore(256, &mem()).unwrap();
        assert_eq!(QueueState::of(&back), state);
    }

    #[test]
    fn rejects_bad_saved_queues() {
        let good = QueueState::of(&ready_queue());
        let m = mem();
        assert!(matches!(
            good.restore(128, &m),
            Err(QueueError::MaxSize { .. })
        ));
        let odd = QueueState { size: 48, ..good };
        assert!(matches!(odd.restore(256, &m), Err(QueueError::Invalid(_))));
        let big = QueueState { size: 512, ..good };
        assert!(matches!(big.restore(256, &m), Err(QueueError::Invalid(_))));
        let misaligned = QueueState {
            desc_table: 0x1008,
            ..good
        };
        assert!(matches!(
            misaligned.restore(256, &m),
            Err(QueueError::Invalid(_))
        ));
        let outside = QueueState {
            used_ring: 0xfff0,
            ..good
        };
        assert!(matches!(
            outside.restore(256, &m),
            Err(QueueError::OutsideMemory)
        ));
        // A queue that is not ready may point anywhere.
        let idle = QueueState {
            ready: false,
            ..outside
        };
        assert!(idle.restore(256, &m).is_ok());
    }

    #[test]
    fn sizes() {
        assert!(valid_size(1, 256) && valid_size(256, 256));
        assert!(!valid_size(0, 256) && !valid_size(3, 256) && !valid_size(512, 256));
    }
}
