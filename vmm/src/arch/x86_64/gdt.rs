//! The boot GDT and the segment registers derived from it.

use kvm_bindings::kvm_segment;

/// Builds a GDT descriptor from `flags` (access byte and flags nibble in
/// the positions of bits 8-15 and 12-15 of the descriptor's upper word, as
/// written in the Intel SDM: e.g. 0xa09b for 64-bit code), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Descriptor flags.
pub mod flags {
    /// 64-bit code, present, ring 0, readable.
    pub const CODE64: u16 = 0xa09b;
    /// 32-bit code (PVH entry), present, ring 0, readable.
    pub const CODE32: u16 = 0xc09b;
    /// Data, present, ring 0, writable, 4 KiB granularity.
    pub const DATA: u16 = 0xc093;
    /// 64-bit TSS (busy).
    pub const TSS: u16 = 0x808b;
}

/// The GDT for an entry in `long_mode` (64-bit code) or 32-bit protected
/// mode: null, code, data, TSS. Selectors are index * 8.
pub fn boot_gdt(long_mode: bool) -> [u64; 4] {
    let code = if long_mode {
        flags::CODE64
    } else {
        flags::CODE32
    };
    [
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(flags::DATA, 0, 0xfffff),
        gdt_entry(flags::TSS, 0, 0xfffff),
    ]
}

/// The segment register KVM expects for GDT entry `index` holding `entry`.
pub fn segment(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = bit(55);
    kvm_segment {
        base,
        // With 4 KiB granularity the limit counts pages.
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_decodes() {
        let gdt = boot_gdt(true);
        let cs = segment(gdt[1], 1);
        assert_eq!(cs.selector, 8);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(
            (cs.present, cs.dpl, cs.s, cs.l, cs.db, cs.g),
            (1, 0, 1, 1, 0, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
    }

    #[test]
    fn code32_and_data_decode() {
        let gdt = boot_gdt(false);
        let cs = segment(gdt[1], 1);
        assert_eq!((cs.l, cs.db), (0, 1));
        let ds = segment(gdt[2], 2);
        assert_eq!((ds.selector, ds.type_, ds.db, ds.s), (16, 3, 1, 1));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = segment(e, 3);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.unusable, 0);
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
