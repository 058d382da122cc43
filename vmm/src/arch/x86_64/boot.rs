//! What a Linux kernel reads at entry: the zero page (64-bit boot protocol)
//! or the PVH start info, each with the e820 memory map, the command line
//! and the initramfs location.

use crvmm_devices::GuestMemoryMmap;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use super::layout::*;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Errors writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The zero page did not fit in guest memory.
    #[error("cannot write the zero page")]
    ZeroPage(#[source] vm_memory::GuestMemoryError),
    /// The PVH structures could not be written.
    #[error("cannot write the PVH start info")]
    StartInfo(#[source] linux_loader::configurator::Error),
}

/// Where the command line and initramfs are, for either protocol.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// Total guest RAM in bytes.
    pub mem_size: u64,
    /// Length of the command line, without its NUL.
    pub cmdline_len: usize,
    /// Guest address and size of the initramfs.
    pub initrd: Option<(u64, u64)>,
}

/// The e820 map: low RAM, the reserved EBDA/BIOS hole, RAM from 1 MiB up to
/// the MMIO gap, and RAM above 4 GiB. Entries are (address, size, type).
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, size) in ram_regions(mem_size) {
        let (start, size) = if start == 0 {
            (HIMEM_START, size.saturating_sub(HIMEM_START))
        } else {
            (start, size)
        };
        if size > 0 {
            map.push((start, size, E820_RAM));
        }
    }
    map
}

/// Writes the zero page for the 64-bit boot protocol. `header` is the
/// bzImage's own setup header, if the kernel is one.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
    header: Option<setup_header>,
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(info.mem_size);
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(BootError::ZeroPage)
}

/// Writes the PVH start info, its memory map and the initramfs module.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootError> {
    let memmap: Vec<hvm_memmap_table_entry> = e820_map(info.mem_size)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let modules_addr = PVH_MEMMAP_START + (memmap.len() * 24) as u64;
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        nr_modules: u32::from(info.initrd.is_some()),
        modlist_paddr: if info.initrd.is_some() {
            modules_addr
        } else {
            0
        },
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if let Some((paddr, size)) = info.initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(modules_addr));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(BootError::StartInfo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    #[test]
    fn e820_covers_ram_and_reserves_the_bios_hole() {
        let map = e820_map(256 << 20);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert_eq!(map[2], (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM));
        let big = e820_map(5 << 30);
        assert_eq!(
            big.last().unwrap(),
            &(MMIO_GAP_END, (5 << 30) - MMIO_GAP_START, E820_RAM)
        );
    }

    #[test]
    fn zero_page_fields() {
        let m = mem(64 << 20);
        let info = BootInfo {
            mem_size: 64 << 20,
            cmdline_len: 12,
            initrd: Some((0x300_0000, 0x1000)),
        };
        write_zero_page(&m, &info, None).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 12);
        assert_eq!({ hdr.ramdisk_image }, 0x300_0000);
        assert_eq!(p.e820_entries, 3);
    }

    #[test]
    fn pvh_start_info_fields() {
        let m = mem(64 << 20);
        let info = BootInfo {
            mem_size: 64 << 20,
            cmdline_len: 5,
            initrd: Some((0x300_0000, 0x2000)),
        };
        write_pvh_start_info(&m, &info).unwrap();
        let s: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(
            (s.magic, s.memmap_entries, s.nr_modules),
            (XEN_HVM_START_MAGIC, 3, 1)
        );
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(s.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 0x2000));
        assert!(s.modlist_paddr >= PVH_MEMMAP_START + 3 * 24);
        assert!(s.modlist_paddr + 32 <= ZERO_PAGE_START);
    }
}
