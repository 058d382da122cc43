//! Guest memory: anonymous mappings laid out by `arch::x86_64::layout`.

use crvmm_devices::GuestMemoryMmap;
use vm_memory::GuestAddress;

use crate::arch::x86_64::layout::ram_regions;

/// The smallest guest: room for the boot structures and a payload.
pub const MIN_MEM_SIZE: u64 = 2 << 20;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is too small or not page-aligned.
    #[error("guest memory of {0} bytes: must be a multiple of 4 KiB and at least 2 MiB")]
    BadSize(u64),
    /// mmap failed.
    #[error("cannot map {0} bytes of guest memory")]
    Map(u64, #[source] vm_memory::mmap::FromRangesError),
}

/// Maps `size` bytes of anonymous guest memory.
pub fn create(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEM_SIZE || !size.is_multiple_of(4096) {
        return Err(MemoryError::BadSize(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(size)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map(size, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn creates_and_checks_sizes() {
        let m = create(16 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        m.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert!(matches!(create(1 << 20), Err(MemoryError::BadSize(_))));
        assert!(matches!(
            create((16 << 20) + 1),
            Err(MemoryError::BadSize(_))
        ));
    }
}
