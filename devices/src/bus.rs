//! Address-range routing from vCPU exits to devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::BusDevice;

/// Errors of bus set-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

/// A shared device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Slot {
    len: u64,
    device: SharedDevice,
}

/// A set of non-overlapping address ranges, each owned by one device.
#[derive(Clone, Default)]
pub struct Bus {
    slots: BTreeMap<u64, Slot>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let before = self.slots.range(..end).next_back();
        if before.is_some_and(|(b, s)| b + s.len > base) {
            return Err(BusError::Overlap { base, len });
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    /// The device whose range holds `addr`, with the offset into it.
    pub fn resolve(&self, addr: u64) -> Option<(SharedDevice, u64)> {
        let (base, slot) = self.slots.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < slot.len).then(|| (Arc::clone(&slot.device), offset))
    }

    /// Routes a read; returns false when no device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                dev.lock().expect("device lock poisoned").read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; returns false when no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                dev.lock()
                    .expect("device lock poisoned")
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Echo {
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Echo::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(a.lock().unwrap().last, vec![(0, vec![b'x'])]);
        assert!(!bus.read(0x400, &mut buf));
        assert!(!bus.read(0x3f7, &mut buf));
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Echo::default()));
        bus.insert(dev(), 0x1000, 0x100).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0x10ff, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0xf00, 0x101),
            Err(BusError::Overlap { .. })
        ));
        bus.insert(dev(), 0x1100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
    }
}
