//! The KVM VM: its file descriptor, in-kernel irqchip and PIT, memory slots,
//! and interrupt lines.

use crvmm_devices::GuestMemoryMmap;
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
    CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// Errors of VM set-up, each naming the KVM operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// KVM lacks a capability crvmm needs.
    #[error("KVM lacks the {0} capability")]
    MissingCap(&'static str),
    /// `KVM_CREATE_VM` failed.
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// `KVM_SET_TSS_ADDR` failed.
    #[error("KVM_SET_TSS_ADDR failed")]
    SetTss(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_IRQCHIP` failed.
    #[error("KVM_CREATE_IRQCHIP failed")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_PIT2` failed.
    #[error("KVM_CREATE_PIT2 failed")]
    CreatePit(#[source] kvm_ioctls::Error),
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("KVM_SET_USER_MEMORY_REGION failed for slot {0}")]
    SetMemory(u32, #[source] kvm_ioctls::Error),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_VCPU` failed.
    #[error("KVM_CREATE_VCPU failed for vCPU {0}")]
    CreateVcpu(u8, #[source] kvm_ioctls::Error),
    /// `KVM_IRQFD` failed.
    #[error("KVM_IRQFD failed for GSI {0}")]
    Irqfd(u32, #[source] kvm_ioctls::Error),
    /// `KVM_GET_MSR_INDEX_LIST` failed.
    #[error("KVM_GET_MSR_INDEX_LIST failed")]
    MsrIndexList(#[source] kvm_ioctls::Error),
    /// Reading VM state for a snapshot failed.
    #[error("KVM_GET_{0} failed")]
    Save(&'static str, #[source] kvm_ioctls::Error),
    /// Loading VM state from a snapshot failed.
    #[error("KVM_SET_{0} failed")]
    Restore(&'static str, #[source] kvm_ioctls::Error),
}

/// The VM-wide state KVM holds: interrupt controllers, timer, clock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    /// The master 8259.
    pub pic_master: kvm_irqchip,
    /// The slave 8259.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
    /// The 8254 PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("clock_ns", &self.clock.clock)
            .finish_non_exhaustive()
    }
}

/// A KVM VM with an in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Creates the VM and its in-kernel interrupt controllers and timer.
    pub fn new() -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for (cap, name) in [
            (Cap::Irqchip, "IRQCHIP"),
            (Cap::Pit2, "PIT2"),
            (Cap::UserMemory, "USER_MEMORY"),
            (Cap::Irqfd, "IRQFD"),
            (Cap::Ioeventfd, "IOEVENTFD"),
            (Cap::SetTssAddr, "SET_TSS_ADDR"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(VmError::SetTss)?;
        fd.create_irq_chip().map_err(VmError::CreateIrqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::CreatePit)?;
        Ok(Vm { kvm, fd })
    }

    /// Gives every region of `mem` to KVM as a memory slot; with
    /// `dirty_log`, KVM records which pages the guest writes.
    pub fn register_memory(&self, mem: &GuestMemoryMmap, dirty_log: bool) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .expect("a mapped region has a host address");
            let region = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: if dirty_log {
                    kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
            };
            // SAFETY: the region's host mapping belongs to `mem`, which the
            // caller keeps alive as long as the VM (the builder owns both).
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(|e| VmError::SetMemory(slot, e))?;
        }
        Ok(())
    }

    /// The CPUID entries KVM can offer on this host.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::SupportedCpuid)
    }

    /// Creates vCPU `index`.
    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, VmError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(|e| VmError::CreateVcpu(index, e))
    }

    /// The pages of memory slot `slot` (of `size` bytes) the guest wrote
    /// since the last call, one bit per 4 KiB page; reading clears them.
    pub fn dirty_log(&self, slot: u32, size: usize) -> Result<Vec<u64>, VmError> {
        self.fd
            .get_dirty_log(slot, size)
            .map_err(|e| VmError::Save("DIRTY_LOG", e))
    }

    /// The MSRs this host's KVM can save and restore.
    pub fn msr_index_list(&self) -> Result<Vec<u32>, VmError> {
        self.kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .map_err(VmError::MsrIndexList)
    }

    /// Reads the interrupt controllers, the PIT and kvmclock.
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let chip = |id| {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.fd.get_irqchip(&mut c).map(|()| c)
        };
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER).map_err(|e| VmError::Save("IRQCHIP", e))?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE).map_err(|e| VmError::Save("IRQCHIP", e))?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC).map_err(|e| VmError::Save("IRQCHIP", e))?,
            pit: self.fd.get_pit2().map_err(|e| VmError::Save("PIT2", e))?,
            clock: self.fd.get_clock().map_err(|e| VmError::Save("CLOCK", e))?,
        })
    }

    /// Loads what [`Vm::save_state`] read, into a VM created by [`Vm::new`].
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmError> {
        self.fd
            .set_pit2(&state.pit)
            .map_err(|e| VmError::Restore("PIT2", e))?;
        // Only the time may be set; KVM refuses its read-only flags.
        let clock = kvm_clock_data {
            clock: state.clock.clock,
            ..Default::default()
        };
        self.fd
            .set_clock(&clock)
            .map_err(|e| VmError::Restore("CLOCK", e))?;
        for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
            self.fd
                .set_irqchip(chip)
                .map_err(|e| VmError::Restore("IRQCHIP", e))?;
        }
        Ok(())
    }

    /// Wires `fd` so that writing it raises GSI `gsi`.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(|e| VmError::Irqfd(gsi, e))
    }
}
