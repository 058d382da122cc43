//! One vCPU: its start state (CPUID, MSRs, registers, LAPIC) and one
//! `KVM_RUN` with the exit routed to the port-I/O or MMIO bus.

use crvmm_devices::bus::Bus;
use kvm_bindings::{kvm_mp_state, CpuId, Msrs, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::arch::x86_64::cpuid::{self, CpuidPolicy};
use crate::arch::x86_64::{msr, regs, regs::EntryMode};

/// LAPIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Errors of vCPU set-up and running, each naming the ioctl.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_SET_CPUID2` failed.
    #[error("KVM_SET_CPUID2 failed")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// Building or loading the MSR list failed.
    #[error("KVM_SET_MSRS failed")]
    SetMsrs(#[source] kvm_ioctls::Error),
    /// KVM took fewer MSRs than given.
    #[error("KVM_SET_MSRS set {set} of {wanted} MSRs")]
    PartialMsrs {
        /// How many were set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// `KVM_GET_SREGS` failed.
    #[error("KVM_GET_SREGS failed")]
    GetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_SREGS` failed.
    #[error("KVM_SET_SREGS failed")]
    SetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_REGS` failed.
    #[error("KVM_SET_REGS failed")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_FPU` failed.
    #[error("KVM_SET_FPU failed")]
    SetFpu(#[source] kvm_ioctls::Error),
    /// `KVM_GET_LAPIC`/`KVM_SET_LAPIC` failed.
    #[error("KVM_{0}_LAPIC failed")]
    Lapic(&'static str, #[source] kvm_ioctls::Error),
    /// `KVM_SET_MP_STATE` failed.
    #[error("KVM_SET_MP_STATE failed")]
    SetMpState(#[source] kvm_ioctls::Error),
    /// `KVM_RUN` failed.
    #[error("KVM_RUN failed")]
    Run(#[source] kvm_ioctls::Error),
    /// KVM could not enter the guest.
    #[error("KVM could not enter the guest (hardware entry failure reason {0:#x})")]
    FailEntry(u64),
    /// KVM's instruction emulator gave up at guest address `rip`.
    #[error(
        "KVM internal error at guest rip {rip:#x} (its instruction emulator could not run the \
         guest; on a nested PVM host this means the guest used an instruction it does not \
         emulate)"
    )]
    InternalError {
        /// Where the guest was.
        rip: u64,
    },
}

/// What one `KVM_RUN` ended with, as the vCPU loop needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent {
    /// A device access was handled; run again.
    Handled,
    /// A signal kicked the vCPU out (pause or exit requested).
    Interrupted,
    /// The guest halted with nothing to wake it (only without an irqchip
    /// LAPIC timer, e.g. a payload with interrupts off).
    Halted,
    /// The guest reset or shut down (triple fault, i8042 reset, `reboot=t`).
    Shutdown,
}

/// A configured vCPU.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Wraps a vCPU fd created by `Vm::create_vcpu`.
    pub fn new(index: u8, fd: VcpuFd) -> Vcpu {
        Vcpu { index, fd }
    }

    /// The vCPU's index (and APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Sets CPUID, MSRs, LAPIC and, for vCPU 0 or any payload vCPU, the
    /// registers that start at `entry` in `mode`. Application processors of
    /// a Linux guest keep their reset state and wait for INIT/SIPI.
    pub fn configure(
        &self,
        supported: &CpuId,
        count: u8,
        policy: CpuidPolicy,
        mode: EntryMode,
        entry: u64,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        cpuid::apply(cpuid.as_mut_slice(), self.index, count, policy);
        self.fd.set_cpuid2(&cpuid).map_err(VcpuError::SetCpuid)?;

        let entries = msr::boot_msrs();
        let msrs = Msrs::from_entries(&entries).expect("the boot MSR list is small");
        let set = self.fd.set_msrs(&msrs).map_err(VcpuError::SetMsrs)?;
        if set != entries.len() {
            return Err(VcpuError::PartialMsrs {
                set,
                wanted: entries.len(),
            });
        }
        self.set_lint()?;

        let payload = matches!(mode, EntryMode::Payload64 { .. });
        if self.index == 0 || payload {
            let mut sregs = self.fd.get_sregs().map_err(VcpuError::GetSregs)?;
            regs::boot_sregs(&mut sregs, mode);
            self.fd.set_sregs(&sregs).map_err(VcpuError::SetSregs)?;
            self.fd
                .set_regs(&regs::boot_regs(mode, entry, self.index))
                .map_err(VcpuError::SetRegs)?;
            self.fd
                .set_fpu(&regs::boot_fpu())
                .map_err(VcpuError::SetFpu)?;
        }
        if payload && self.index != 0 {
            // Payload APs start running at once instead of waiting for SIPI.
            let state = kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            };
            self.fd.set_mp_state(state).map_err(VcpuError::SetMpState)?;
        }
        Ok(())
    }

    /// LINT0 delivers the 8259's ExtINT, LINT1 delivers NMI, as the MP
    /// table says.
    fn set_lint(&self) -> Result<(), VcpuError> {
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(|e| VcpuError::Lapic("GET", e))?;
        for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let reg = &mut lapic.regs[offset..offset + 4];
            let bytes: [u8; 4] = std::array::from_fn(|i| reg[i] as u8);
            let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
            for (dst, src) in reg.iter_mut().zip(value.to_le_bytes()) {
                *dst = src as _;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(|e| VcpuError::Lapic("SET", e))
    }

    /// Runs the vCPU until its next exit and handles it.
    pub fn run_once(&mut self, pio: &Bus, mmio: &Bus) -> Result<VcpuEvent, VcpuError> {
        match self.fd.run() {
            Ok(exit) => Ok(match exit {
                VcpuExit::IoIn(port, data) => {
                    if !pio.read(u64::from(port), data) {
                        data.fill(0xff);
                    }
                    VcpuEvent::Handled
                }
                VcpuExit::IoOut(port, data) => {
                    pio.write(u64::from(port), data);
                    VcpuEvent::Handled
                }
                VcpuExit::MmioRead(addr, data) => {
                    if !mmio.read(addr, data) {
                        data.fill(0xff);
                    }
                    VcpuEvent::Handled
                }
                VcpuExit::MmioWrite(addr, data) => {
                    mmio.write(addr, data);
                    VcpuEvent::Handled
                }
                VcpuExit::Hlt => VcpuEvent::Halted,
                VcpuExit::Shutdown | VcpuExit::SystemEvent(..) => VcpuEvent::Shutdown,
                VcpuExit::FailEntry(reason, _) => return Err(VcpuError::FailEntry(reason)),
                VcpuExit::InternalError => {
                    let rip = self.fd.get_regs().map_or(0, |r| r.rip);
                    return Err(VcpuError::InternalError { rip });
                }
                // Other exits (debug, IRQ window, ...) are not requested.
                _ => VcpuEvent::Handled,
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VcpuEvent::Interrupted)
            }
            Err(e) => Err(VcpuError::Run(e)),
        }
    }
}
