//! The Intel MultiProcessor table (spec 1.4), which tells a guest without
//! ACPI how many CPUs it has and how ISA interrupts reach the IOAPIC.
//! Written at [`MPTABLE_START`], in the BIOS area Linux scans.

use crvmm_devices::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{APIC_START, IOAPIC_START, MPTABLE_START};

/// IOAPIC pins (one per GSI).
pub const IOAPIC_PINS: u8 = 24;
/// The most vCPUs the table (and our APIC id scheme) supports.
pub const MAX_VCPUS: u8 = 254;

/// Errors writing the table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// Zero vCPUs, or more than fit.
    #[error("cannot describe {0} vCPUs in the MP table (1..={MAX_VCPUS})")]
    VcpuCount(u8),
    /// The table did not fit in guest memory.
    #[error("cannot write the MP table")]
    Write(#[source] vm_memory::GuestMemoryError),
}

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;

/// The table's bytes for `vcpus` processors: floating pointer, then the
/// configuration table right after it.
pub fn build(vcpus: u8) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus + 1;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..vcpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        entries.extend([ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend(0x600u32.to_le_bytes()); // signature: family 6
        entries.extend(0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend([0u8; 8]);
        count += 1;
    }
    entries.extend([ENTRY_BUS, 0]);
    entries.extend(b"ISA   ");
    count += 1;
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend((IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        entries.extend([
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            0,
            0,
            0,
            irq,
            ioapic_id,
            irq,
        ]);
        count += 1;
    }
    // LINT0 of every local APIC is the 8259 (ExtINT), LINT1 is NMI.
    entries.extend([ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend([ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let config_addr = MPTABLE_START as u32 + 16;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend(b"PCMP");
    config.extend(((44 + entries.len()) as u16).to_le_bytes());
    config.push(4); // spec revision 1.4
    config.push(0); // checksum, set below
    config.extend(b"CRVMM   ");
    config.extend(b"crvmm microV");
    config.extend(0u32.to_le_bytes()); // OEM table
    config.extend(0u16.to_le_bytes());
    config.extend(count.to_le_bytes());
    config.extend((APIC_START as u32).to_le_bytes());
    config.extend([0u8; 4]); // extended table length, checksum, reserved
    config.extend(entries);
    config[7] = checksum(&config);

    let mut table = Vec::with_capacity(16 + config.len());
    table.extend(b"_MP_");
    table.extend(config_addr.to_le_bytes());
    table.extend([1, 4, 0, 0, 0, 0, 0, 0]); // length 16 bytes, revision 1.4
    table[10] = checksum(&table);
    table.extend(config);
    Ok(table)
}

/// Writes the table for `vcpus` processors into guest memory.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let table = build(vcpus)?;
    mem.write_slice(&table, GuestAddress(MPTABLE_START))
        .map_err(MpTableError::Write)
}

/// The byte that makes the sum of `bytes` zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_pointers_are_valid() {
        let t = build(4).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let config_addr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(config_addr, MPTABLE_START + 16);
        let config = &t[16..];
        assert_eq!(&config[..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(sum(config), 0);
    }

    #[test]
    fn one_processor_entry_per_vcpu_with_one_bsp() {
        let t = build(3).unwrap();
        let config = &t[16..];
        let count = u16::from_le_bytes([config[34], config[35]]);
        assert_eq!(count, 3 + 1 + 1 + u16::from(IOAPIC_PINS) + 2);
        let cpus: Vec<&[u8]> = config[44..44 + 60].chunks(20).collect();
        assert!(cpus.iter().all(|c| c[0] == ENTRY_PROCESSOR));
        assert_eq!(cpus.iter().filter(|c| c[3] & CPU_BSP != 0).count(), 1);
        assert_eq!(cpus.iter().map(|c| c[1]).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn vcpu_count_is_checked() {
        assert!(matches!(build(0), Err(MpTableError::VcpuCount(0))));
        assert!(build(MAX_VCPUS).is_ok());
        assert!(build(255).is_err());
    }

    #[test]
    fn largest_table_fits_in_the_bios_area() {
        assert!(build(MAX_VCPUS).unwrap().len() < 0x1_0000);
    }
}
