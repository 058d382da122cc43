//! Guest physical memory layout of a crvmm x86-64 VM.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries), IDT right after it (empty)
//! 0x0000_6000  PVH start info, then its memory map
//! 0x0000_7000  zero page (Linux boot_params)
//! 0x0000_8ff0  initial stack pointer (grows down)
//! 0x0000_9000  PML4, PDPT at 0xa000, 4 page directories at 0xb000..0xf000
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA, reserved up to 1 MiB; the MP table at 0xf_0000
//! 0x0010_0000  kernel (or payload), then RAM; initramfs at the top of low RAM
//! 0xc000_0000  MMIO gap (1 GiB): virtio-mmio devices, IOAPIC, LAPIC
//! 0x1_0000_0000  RAM above 3 GiB continues here
//! ```

/// The GDT.
pub const GDT_START: u64 = 0x500;
/// The IDT (empty: interrupts are off until the guest sets its own).
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// The PVH memory map, after the start info.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Most PVH memory-map entries we write.
pub const PVH_MEMMAP_MAX: usize = 8;
/// Linux's zero page.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// The boot stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The page-map level 4.
pub const PML4_START: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPT_START: u64 = 0xa000;
/// The first of 4 page directories (2 MiB pages, identity map of 4 GiB).
pub const PD_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Its maximum size, the terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// The extended BIOS data area (reserved in the e820 map).
pub const EBDA_START: u64 = 0x9_fc00;
/// Where high memory, and the kernel, start.
pub const HIMEM_START: u64 = 0x10_0000;
/// The MP table, in the BIOS area Linux scans for it (0xf0000-0xfffff).
pub const MPTABLE_START: u64 = 0xf_0000;
/// Start of the hole below 4 GiB for device MMIO.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of that hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The first virtio-mmio device; each takes [`VIRTIO_MMIO_SIZE`].
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The MMIO window of one virtio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The first GSI given to virtio devices (IRQs 0-4 are legacy devices).
pub const VIRTIO_IRQ_START: u32 = 5;
/// The IOAPIC.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs.
pub const APIC_START: u64 = 0xfee0_0000;
/// The highest address an initramfs may end at (Linux's default
/// `initrd_addr_max`).
pub const INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// The TSS KVM needs on Intel hosts (3 pages just below the BIOS area).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

// The page tables end before the command line, which ends before the EBDA.
const _: () = assert!(PD_START + 0x4000 <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);

/// RAM regions for `mem_size` bytes of guest memory: one below the MMIO
/// gap and, when it does not fit there, one above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(0, 256 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let r = ram_regions(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, MMIO_GAP_START),
                (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)
            ]
        );
        assert_eq!(r.iter().map(|(_, s)| s).sum::<u64>(), 4 << 30);
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        let areas = [
            (GDT_START, 0x20),
            (IDT_START, 0x8),
            (PVH_INFO_START, 0x40),
            (PVH_MEMMAP_START, 24 * PVH_MEMMAP_MAX as u64),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPT_START, 0x1000),
            (PD_START, 0x4000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        for (i, (a, la)) in areas.iter().enumerate() {
            for (b, lb) in &areas[i + 1..] {
                assert!(a + la <= *b || b + lb <= *a, "{a:#x} overlaps {b:#x}");
            }
        }
    }
}
