//! The header's config hash: `cr_config_hash()` of the kernel's
//! `kernel/checkpoint/image.c`, recomputed here for every configuration a
//! crvmm x86-64 guest kernel can have, so that an image's hash tells which
//! one wrote it, and with it the end of the user address space that restart
//! checks addresses against.
//!
//! The kernel hashes ten u64 values (little endian) with `crc32_le()`:
//! `lo = crc32_le(~0, v)`, `hi = crc32_le(lo, v)`, hash `hi << 32 | lo`.
//! `crc32_le` is zlib's CRC-32 without the final inversion, so
//! `lo = !crc32(v)` and `hi = !crc32(v ++ v)`.

use crc::{Crc, CRC_32_ISO_HDLC};
use serde::Serialize;

use crate::format::{FORMAT_VERSION, NLIMITS, NR_GREGS, NSIG, PAGE_SIZE};
use crate::{TASK_SIZE_4LEVEL, TASK_SIZE_5LEVEL};

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// The kernel constants an image's config hash covers, besides those the
/// format fixes (version, page size, register, signal and rlimit counts,
/// the 64-bit capability word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelConfig {
    /// `TASK_SIZE_MAX`: where user space ends (depends on LA57 at run time).
    pub task_size: u64,
    /// `CONFIG_X86_5LEVEL`.
    pub five_level: bool,
    /// `CONFIG_RSEQ`.
    pub rseq: bool,
    /// `AT_VECTOR_SIZE`: words of the saved auxiliary vector.
    pub at_vector_size: u64,
}

impl KernelConfig {
    /// The crvmm guest kernel (6.12, `guest-kernel/config/crvmm.config`)
    /// on a CPU without LA57.
    pub const CRVMM_4LEVEL: KernelConfig = KernelConfig {
        task_size: TASK_SIZE_4LEVEL,
        five_level: true,
        rseq: true,
        at_vector_size: 50,
    };

    /// Its config hash.
    pub fn hash(&self) -> u64 {
        let values = [
            u64::from(FORMAT_VERSION),
            PAGE_SIZE,
            self.task_size,
            (NR_GREGS * 8) as u64, // sizeof(struct user_regs_struct)
            NSIG as u64,
            NLIMITS as u64,
            8, // sizeof(kernel_cap_t)
            u64::from(self.five_level),
            u64::from(self.rseq),
            self.at_vector_size,
        ];
        let mut once = Vec::with_capacity(values.len() * 8);
        for v in values {
            once.extend_from_slice(&v.to_le_bytes());
        }
        let lo = !CRC32.checksum(&once);
        let mut digest = CRC32.digest();
        digest.update(&once);
        digest.update(&once);
        let hi = !digest.finalize();
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// The configuration whose hash is `hash`, among those an x86-64
    /// kernel of this format can have: 4-level paging (with or without
    /// `CONFIG_X86_5LEVEL`) or 5-level, with or without rseq, and any even
    /// `AT_VECTOR_SIZE` from 40 to the image's 64 auxv words.
    pub fn recognise(hash: u64) -> Option<KernelConfig> {
        let paging = [
            (TASK_SIZE_4LEVEL, false),
            (TASK_SIZE_4LEVEL, true),
            (TASK_SIZE_5LEVEL, true),
        ];
        for (task_size, five_level) in paging {
            for rseq in [true, false] {
                for at_vector_size in (40..=64).step_by(2) {
                    let config = KernelConfig {
                        task_size,
                        five_level,
                        rseq,
                        at_vector_size,
                    };
                    if config.hash() == hash {
                        return Some(config);
                    }
                }
            }
        }
        None
    }
}

impl std::fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paging = if self.task_size == TASK_SIZE_5LEVEL {
            "5-level paging"
        } else {
            "4-level paging"
        };
        write!(
            f,
            "x86-64, {paging} (user space ends at {:#x}), CONFIG_X86_5LEVEL={}, CONFIG_RSEQ={}, AT_VECTOR_SIZE {}",
            self.task_size,
            if self.five_level { 'y' } else { 'n' },
            if self.rseq { 'y' } else { 'n' },
            self.at_vector_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes the kernel logged in `guest-kernel/patches-wip/test/`:
    /// the default build on a 4-level CPU and the debug build under LA57.
    #[test]
    fn hashes_match_the_kernels() {
        assert_eq!(KernelConfig::CRVMM_4LEVEL.hash(), 0x1095_888b_86b8_3dcc);
        let debug = KernelConfig::recognise(0x4466_7237_c968_8fb7).unwrap();
        assert_eq!(debug.task_size, TASK_SIZE_5LEVEL);
        assert_eq!(
            KernelConfig::recognise(0x1095_888b_86b8_3dcc),
            Some(KernelConfig::CRVMM_4LEVEL)
        );
        assert_eq!(KernelConfig::recognise(1), None);
    }
}
