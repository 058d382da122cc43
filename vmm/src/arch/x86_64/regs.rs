//! Register and page-table contents for the three ways a vCPU can start:
//! Linux's 64-bit boot protocol, PVH (32-bit protected mode, no paging),
//! and 64-bit payloads. Pure functions of the layout; the ioctls that load
//! them live in `vstate::vcpu`.

use crvmm_devices::GuestMemoryMmap;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{boot_gdt, segment};
use super::layout::*;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PAGE_SIZE: u64 = 0x80;

/// How a vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64,
    /// PVH: 32-bit protected mode without paging, `rbx` = start info.
    Pvh,
    /// A test payload in long mode: `rdi` = vCPU index, `rsi` = argument.
    Payload64 {
        /// Passed in `rsi`.
        arg: u64,
    },
}

impl EntryMode {
    fn long_mode(self) -> bool {
        !matches!(self, EntryMode::Pvh)
    }
}

/// Errors writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// The GDT did not fit in guest memory.
    #[error("cannot write the GDT")]
    WriteGdt(#[source] vm_memory::GuestMemoryError),
    /// The IDT did not fit in guest memory.
    #[error("cannot write the IDT")]
    WriteIdt(#[source] vm_memory::GuestMemoryError),
    /// The page tables did not fit in guest memory.
    #[error("cannot write the page tables")]
    WritePageTables(#[source] vm_memory::GuestMemoryError),
}

/// Writes the GDT, an empty IDT, and (for long mode) identity-mapping page
/// tables covering the first 4 GiB with 2 MiB pages.
pub fn write_boot_tables(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<(), RegsError> {
    for (i, entry) in boot_gdt(mode.long_mode()).iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + 8 * i as u64))
            .map_err(RegsError::WriteGdt)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(RegsError::WriteIdt)?;
    if !mode.long_mode() {
        return Ok(());
    }
    let w = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(RegsError::WritePageTables)
    };
    w(PDPT_START | PTE_PRESENT_RW, PML4_START)?;
    for gib in 0..4u64 {
        let pd = PD_START + gib * 0x1000;
        w(pd | PTE_PRESENT_RW, PDPT_START + gib * 8)?;
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            w(addr | PTE_PRESENT_RW | PDE_PAGE_SIZE, pd + i * 8)?;
        }
    }
    Ok(())
}

/// Fills the segment, table and control registers of `sregs` for `mode`
/// (the rest of `sregs`, as KVM reported it, is kept).
pub fn boot_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let gdt = boot_gdt(mode.long_mode());
    let code = segment(gdt[1], 1);
    let data = segment(gdt[2], 2);
    let tss = segment(gdt[3], 3);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    if mode.long_mode() {
        sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
        sregs.cr3 = PML4_START;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
    } else {
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
}

/// General registers for `mode` entering at `entry`; `boot_info` is the
/// zero page or PVH start info; `vcpu_index` goes to payloads.
pub fn boot_regs(mode: EntryMode, entry: u64, vcpu_index: u8) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        EntryMode::Pvh => regs.rbx = PVH_INFO_START,
        EntryMode::Payload64 { arg } => {
            // Each vCPU gets its own 256-byte slice of the boot stack area.
            regs.rsp = BOOT_STACK_POINTER - 0x100 * u64::from(vcpu_index);
            regs.rdi = u64::from(vcpu_index);
            regs.rsi = arg;
        }
    }
    regs
}

/// The FPU state at reset: x87 control word 0x37f, MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn page_tables_identity_map_4_gib() {
        let m = mem();
        write_boot_tables(&m, EntryMode::Linux64).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPT_START | 3);
        for gib in 0..4 {
            let pdpte: u64 = m.read_obj(GuestAddress(PDPT_START + gib * 8)).unwrap();
            assert_eq!(pdpte & !0xfff, PD_START + gib * 0x1000);
        }
        // The PDE mapping 3 GiB + 2 MiB * 5.
        let pde: u64 = m
            .read_obj(GuestAddress(PD_START + 3 * 0x1000 + 5 * 8))
            .unwrap();
        assert_eq!(pde, ((3 << 30) + (5 << 21)) | 0x83);
    }

    #[test]
    fn pvh_writes_no_page_tables() {
        let m = mem();
        write_boot_tables(&m, EntryMode::Pvh).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, 0);
        let code: u64 = m.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(segment(code, 1).db, 1);
    }

    #[test]
    fn long_mode_sregs() {
        let mut s = kvm_sregs::default();
        boot_sregs(&mut s, EntryMode::Linux64);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!((s.cs.l, s.cs.selector, s.ds.selector), (1, 8, 16));
        let mut s = kvm_sregs::default();
        boot_sregs(&mut s, EntryMode::Pvh);
        assert_eq!((s.cr0 & CR0_PG, s.efer, s.cs.l, s.cs.db), (0, 0, 0, 1));
    }

    #[test]
    fn entry_registers() {
        let r = boot_regs(EntryMode::Linux64, 0x100_0200, 0);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100_0200, ZERO_PAGE_START, 2));
        let r = boot_regs(EntryMode::Pvh, 0x100_0000, 0);
        assert_eq!(r.rbx, PVH_INFO_START);
        let r = boot_regs(EntryMode::Payload64 { arg: 9 }, 0x10_0000, 2);
        assert_eq!((r.rdi, r.rsi, r.rsp), (2, 9, BOOT_STACK_POINTER - 0x200));
    }
}
