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

use std::sync::OnceLock;

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

    /// Its config hash (in an image of this build's format version, which
    /// the hash covers).
    pub fn hash(&self) -> u64 {
        self.hash_of_version(FORMAT_VERSION)
    }

    /// Its config hash in an image of format version `version`.
    fn hash_of_version(&self, version: u32) -> u64 {
        let values = [
            u64::from(version),
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
    /// `AT_VECTOR_SIZE` from 40 to the image's 64 auxv words. (Their 78
    /// hashes are computed once per process.)
    pub fn recognise(hash: u64) -> Option<KernelConfig> {
        static KNOWN: OnceLock<Vec<(u64, KernelConfig)>> = OnceLock::new();
        KNOWN
            .get_or_init(|| Self::candidates().map(|c| (c.hash(), c)).collect())
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|&(_, c)| c)
    }

    /// Every configuration `recognise` knows.
    fn candidates() -> impl Iterator<Item = KernelConfig> {
        let paging = [
            (TASK_SIZE_4LEVEL, false),
            (TASK_SIZE_4LEVEL, true),
            (TASK_SIZE_5LEVEL, true),
        ];
        paging.into_iter().flat_map(|(task_size, five_level)| {
            [true, false].into_iter().flat_map(move |rseq| {
                (40..=64)
                    .step_by(2)
                    .map(move |at_vector_size| KernelConfig {
                        task_size,
                        five_level,
                        rseq,
                        at_vector_size,
                    })
            })
        })
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

    /// The hashes the format version 1 kernel logged in
    /// `guest-kernel/patches-wip/test/` (the default build on a 4-level
    /// CPU and the debug build under LA57): the algorithm is the kernel's.
    #[test]
    fn version_1_hashes_match_the_kernels() {
        let v1 = |c: KernelConfig| c.hash_of_version(1);
        assert_eq!(v1(KernelConfig::CRVMM_4LEVEL), 0x1095_888b_86b8_3dcc);
        let debug = KernelConfig {
            task_size: TASK_SIZE_5LEVEL,
            ..KernelConfig::CRVMM_4LEVEL
        };
        assert_eq!(v1(debug), 0x4466_7237_c968_8fb7);
    }

    /// `CRVMM_4LEVEL`'s hash in a version 5 image.
    const HASH_V5_4LEVEL: u64 = 0x5bb9_0bdd_f626_5d98;
    /// The same kernel under LA57 (the debug build's).
    const HASH_V5_LA57_DEBUG: u64 = 0x0f4a_f161_b9f6_efe3;

    /// Each version changes every hash (the version is the first value
    /// hashed); these are computed, with the algorithm checked above.
    #[test]
    fn version_5_hashes() {
        assert_eq!(FORMAT_VERSION, 5);
        let hash = KernelConfig::CRVMM_4LEVEL.hash();
        assert_ne!(hash, 0x1095_888b_86b8_3dcc);
        assert_eq!(hash, HASH_V5_4LEVEL);
        assert_eq!(
            KernelConfig::recognise(HASH_V5_4LEVEL),
            Some(KernelConfig::CRVMM_4LEVEL)
        );
        let debug = KernelConfig::recognise(HASH_V5_LA57_DEBUG).unwrap();
        assert_eq!(debug.task_size, TASK_SIZE_5LEVEL);
        // Older images' hashes are no configuration of version 5.
        assert_eq!(KernelConfig::recognise(0xa4ca_a828_ea01_c58d), None);
        assert_eq!(KernelConfig::recognise(0xca70_6ad5_a2d0_95f3), None);
        assert_eq!(KernelConfig::recognise(0x3503_c920_bef7_0de6), None);
        assert_eq!(KernelConfig::recognise(0x1095_888b_86b8_3dcc), None);
        assert_eq!(KernelConfig::recognise(1), None);
        assert_eq!(KernelConfig::candidates().count(), 78);
    }
}
