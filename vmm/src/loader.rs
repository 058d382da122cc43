//! Puts the kernel, command line and initramfs into guest memory, and
//! writes what the kernel reads at entry.

use crvmm_devices::GuestMemoryMmap;
use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::x86_64::boot::{self, BootInfo};
use crate::arch::x86_64::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, INITRD_ADDR_MAX, MMIO_GAP_START,
};
use crate::arch::x86_64::regs::EntryMode;

/// Errors of loading.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A file cannot be opened.
    #[error("cannot open {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// The kernel is neither a usable ELF nor a bzImage.
    #[error("cannot load kernel {0}")]
    Kernel(PathBuf, #[source] linux_loader::loader::Error),
    /// The command line is too long or invalid.
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// Writing the command line failed.
    #[error("cannot write the kernel command line")]
    WriteCmdline(#[source] linux_loader::loader::Error),
    /// The initramfs does not fit below the kernel's limit.
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory below {limit:#x}")]
    InitrdTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The highest address it may end at.
        limit: u64,
    },
    /// Reading the initramfs into memory failed.
    #[error("cannot read initramfs {0}")]
    ReadInitrd(PathBuf, #[source] vm_memory::GuestMemoryError),
    /// Writing the boot structures failed.
    #[error("cannot write boot information")]
    Boot(#[from] boot::BootError),
    /// A payload does not fit.
    #[error("payload of {0} bytes does not fit in guest memory")]
    PayloadTooLarge(usize),
}

/// How to enter the loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The entry protocol.
    pub mode: EntryMode,
    /// The guest physical entry address.
    pub addr: u64,
}

/// Which entry to prefer for an ELF vmlinux that has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ElfEntry {
    /// The 64-bit entry (`startup_64`), with a zero page.
    #[default]
    Linux64,
    /// The PVH entry when the kernel has one.
    Pvh,
}

/// Loads `kernel` (ELF vmlinux or bzImage), `cmdline` and `initrd`, writes
/// the zero page or PVH start info, and returns where to start.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    cmdline: &str,
    initrd: Option<&Path>,
    prefer: ElfEntry,
) -> Result<Entry, LoaderError> {
    let mut file = File::open(kernel).map_err(|e| LoaderError::Open(kernel.into(), e))?;
    let himem = Some(GuestAddress(HIMEM_START));
    let (result, entry) = match Elf::load(mem, None, &mut file, himem) {
        Ok(r) => {
            let entry = match (prefer, r.pvh_boot_cap) {
                (ElfEntry::Pvh, PvhBootCapability::PvhEntryPresent(addr)) => Entry {
                    mode: EntryMode::Pvh,
                    addr: addr.0,
                },
                _ => Entry {
                    mode: EntryMode::Linux64,
                    addr: r.kernel_load.0,
                },
            };
            (r, entry)
        }
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber,
        )) => {
            let r = BzImage::load(mem, None, &mut file, himem)
                .map_err(|e| LoaderError::Kernel(kernel.into(), e))?;
            // The 64-bit entry of a bzImage is 0x200 past its load address.
            let addr = r.kernel_load.0 + 0x200;
            (
                r,
                Entry {
                    mode: EntryMode::Linux64,
                    addr,
                },
            )
        }
        Err(e) => return Err(LoaderError::Kernel(kernel.into(), e)),
    };

    let mut line = Cmdline::new(CMDLINE_MAX_SIZE).map_err(LoaderError::Cmdline)?;
    line.insert_str(cmdline).map_err(LoaderError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &line).map_err(LoaderError::WriteCmdline)?;
    let cmdline_len = line
        .as_cstring()
        .map_err(LoaderError::Cmdline)?
        .as_bytes()
        .len();

    let initrd = match initrd {
        Some(path) => Some(load_initrd(mem, path, result.kernel_end)?),
        None => None,
    };
    let info = BootInfo {
        mem_size: mem.iter().map(|r| r.len()).sum(),
        cmdline_len,
        initrd,
    };
    match entry.mode {
        EntryMode::Pvh => boot::write_pvh_start_info(mem, &info)?,
        _ => boot::write_zero_page(mem, &info, result.setup_header)?,
    }
    Ok(entry)
}

/// Loads the initramfs as high as possible below the kernel's limit and the
/// MMIO gap, page-aligned, above the kernel.
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<(u64, u64), LoaderError> {
    let mut file = File::open(path).map_err(|e| LoaderError::Open(path.into(), e))?;
    let size = file
        .metadata()
        .map_err(|e| LoaderError::Open(path.into(), e))?
        .len();
    let ram_end = mem.last_addr().0.min(MMIO_GAP_START - 1) + 1;
    let limit = ram_end.min(INITRD_ADDR_MAX + 1);
    let addr = limit.checked_sub(size).map(|a| a & !0xfff);
    let Some(addr) = addr.filter(|a| *a >= kernel_end) else {
        return Err(LoaderError::InitrdTooLarge {
            path: path.into(),
            size,
            limit,
        });
    };
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| LoaderError::ReadInitrd(path.into(), e))?;
    Ok((addr, size))
}

/// Copies a flat payload to `addr` (for tests and probes).
pub fn load_payload(mem: &GuestMemoryMmap, code: &[u8], addr: u64) -> Result<(), LoaderError> {
    mem.write_slice(code, GuestAddress(addr))
        .map_err(|_| LoaderError::PayloadTooLarge(code.len()))
}
