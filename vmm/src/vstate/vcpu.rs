//! One vCPU: its start state (CPUID, MSRs, registers, LAPIC) and one
//! `KVM_RUN` with the exit routed to the port-I/O or MMIO bus.

use crvmm_devices::bus::Bus;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};

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
    /// Reading a part of the vCPU's state for a snapshot failed.
    #[error("KVM_GET_{0} failed")]
    Save(&'static str, #[source] kvm_ioctls::Error),
    /// Loading a part of a snapshot's vCPU state failed.
    #[error("KVM_SET_{0} failed")]
    Restore(&'static str, #[source] kvm_ioctls::Error),
    /// The snapshot's CPUID has a feature this host's KVM cannot give.
    #[error("the snapshot's vCPU uses CPUID leaf {leaf:#x} register {reg} bits {bits:#x}, which this host cannot provide")]
    MissingCpuFeature {
        /// CPUID leaf.
        leaf: u32,
        /// The register (eax, ebx, ecx, edx).
        reg: &'static str,
        /// The missing bits.
        bits: u32,
    },
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

/// Everything KVM holds for one vCPU, as a snapshot saves it.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index.
    pub index: u8,
    /// The CPUID it was given.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Every MSR KVM could read.
    pub msrs: Vec<kvm_msr_entry>,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE and extended state.
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debug_regs: kvm_debugregs,
    /// The local APIC.
    pub lapic: kvm_lapic_state,
    /// Runnable, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs.
    pub vcpu_events: kvm_vcpu_events,
    /// The guest TSC frequency, where KVM reports it.
    pub tsc_khz: Option<u32>,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("index", &self.index)
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("msrs", &self.msrs.len())
            .finish_non_exhaustive()
    }
}

/// A configured vCPU.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    msr_list: Vec<u32>,
}

impl Vcpu {
    /// Wraps a vCPU fd created by `Vm::create_vcpu`; `msr_list` is what a
    /// snapshot tries to save (`Vm::msr_index_list`).
    pub fn new(index: u8, fd: VcpuFd, msr_list: Vec<u32>) -> Vcpu {
        Vcpu {
            index,
            fd,
            msr_list,
        }
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

    /// Reads the vCPU's whole state. Call only while it is not running.
    pub fn save_state(&self) -> Result<VcpuState, VcpuError> {
        let get = |what| move |e| VcpuError::Save(what, e);
        let cpuid = self
            .fd
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(get("CPUID2"))?
            .as_slice()
            .to_vec();
        Ok(VcpuState {
            index: self.index,
            cpuid,
            msrs: self.read_msrs()?,
            regs: self.fd.get_regs().map_err(get("REGS"))?,
            sregs: self.fd.get_sregs().map_err(get("SREGS"))?,
            xsave: self.fd.get_xsave().map_err(get("XSAVE"))?,
            xcrs: self.fd.get_xcrs().map_err(get("XCRS"))?,
            debug_regs: self.fd.get_debug_regs().map_err(get("DEBUGREGS"))?,
            lapic: self.fd.get_lapic().map_err(get("LAPIC"))?,
            mp_state: self.fd.get_mp_state().map_err(get("MP_STATE"))?,
            vcpu_events: self.fd.get_vcpu_events().map_err(get("VCPU_EVENTS"))?,
            tsc_khz: self.fd.get_tsc_khz().ok(),
        })
    }

    /// Reads every MSR of the index list that KVM will read; KVM stops a
    /// batch at the first one it refuses, which is skipped.
    fn read_msrs(&self) -> Result<Vec<kvm_msr_entry>, VcpuError> {
        let mut saved = Vec::with_capacity(self.msr_list.len());
        let mut rest: &[u32] = &self.msr_list;
        while !rest.is_empty() {
            let batch: Vec<kvm_msr_entry> = rest
                .iter()
                .take(kvm_bindings::KVM_MAX_MSR_ENTRIES)
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&batch).expect("batch within KVM_MAX_MSR_ENTRIES");
            let n = self
                .fd
                .get_msrs(&mut msrs)
                .map_err(|e| VcpuError::Save("MSRS", e))?;
            saved.extend_from_slice(&msrs.as_slice()[..n]);
            let consumed = if n < batch.len() { n + 1 } else { n };
            rest = &rest[consumed..];
        }
        Ok(saved)
    }

    /// What CPUID this vCPU would really present, given `supported`. On an
    /// ordinary host that is `supported` itself. A nested PVM host ignores
    /// the table set with `KVM_SET_CPUID2` and its vCPUs present the host's
    /// own CPUID (more than `KVM_GET_SUPPORTED_CPUID` reports), so there it
    /// is read back from the vCPU.
    pub fn effective_cpuid(&self, supported: &CpuId, nested_pvm: bool) -> Result<CpuId, VcpuError> {
        if !nested_pvm {
            return Ok(supported.clone());
        }
        self.fd.set_cpuid2(supported).map_err(VcpuError::SetCpuid)?;
        self.fd
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VcpuError::Save("CPUID2", e))
    }

    /// Loads a saved state, in the order KVM needs: CPUID first (it
    /// decides what the rest may hold), the TSC frequency, then registers,
    /// the LAPIC after the special registers (APIC base), MSRs, and pending
    /// events last. CPUID features the host cannot give (`available`, from
    /// [`Vcpu::effective_cpuid`]) are refused first.
    pub fn restore_state(&self, state: &VcpuState, available: &CpuId) -> Result<(), VcpuError> {
        check_cpuid(&state.cpuid, available.as_slice())?;
        let set = |what| move |e| VcpuError::Restore(what, e);
        let cpuid = CpuId::from_entries(&state.cpuid)
            .map_err(|_| VcpuError::Restore("CPUID2", kvm_ioctls::Error::new(libc::E2BIG)))?;
        self.fd.set_cpuid2(&cpuid).map_err(set("CPUID2"))?;
        if let Some(khz) = state.tsc_khz {
            // Not every host can scale the TSC; the guest's clock source
            // then follows the host TSC, as after a migration.
            if let Err(e) = self.fd.set_tsc_khz(khz) {
                log::warn!("vCPU {}: cannot set the TSC to {khz} kHz: {e}", self.index);
            }
        }
        self.fd
            .set_mp_state(state.mp_state)
            .map_err(set("MP_STATE"))?;
        self.fd.set_regs(&state.regs).map_err(set("REGS"))?;
        self.fd.set_sregs(&state.sregs).map_err(set("SREGS"))?;
        // SAFETY: the xsave buffer comes from KVM_GET_XSAVE of the same
        // layout (a fixed 4 KiB kvm_xsave), so KVM reads no more than it holds.
        unsafe { self.fd.set_xsave(&state.xsave) }.map_err(set("XSAVE"))?;
        self.fd.set_xcrs(&state.xcrs).map_err(set("XCRS"))?;
        self.fd
            .set_debug_regs(&state.debug_regs)
            .map_err(set("DEBUGREGS"))?;
        self.fd.set_lapic(&state.lapic).map_err(set("LAPIC"))?;
        for chunk in state.msrs.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
            let msrs = Msrs::from_entries(chunk).expect("chunk within KVM_MAX_MSR_ENTRIES");
            let n = self.fd.set_msrs(&msrs).map_err(set("MSRS"))?;
            if n != chunk.len() {
                return Err(VcpuError::PartialMsrs {
                    set: n,
                    wanted: chunk.len(),
                });
            }
        }
        self.fd
            .set_vcpu_events(&state.vcpu_events)
            .map_err(set("VCPU_EVENTS"))?;
        Ok(())
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

/// Refuses a saved CPUID whose feature bits (leaves 0x1, 0x7, 0x8000_0001)
/// are not all among what this host's KVM supports, naming the first gap.
pub fn check_cpuid(
    saved: &[kvm_cpuid_entry2],
    supported: &[kvm_cpuid_entry2],
) -> Result<(), VcpuError> {
    for want in saved
        .iter()
        .filter(|e| matches!(e.function, 0x1 | 0x7 | 0x8000_0001))
    {
        // The subleaf index counts only where KVM marks it significant.
        let have = supported.iter().find(|e| {
            e.function == want.function
                && (e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0
                    || e.index == want.index)
        });
        let regs = |e: &kvm_cpuid_entry2| [("ebx", e.ebx), ("ecx", e.ecx), ("edx", e.edx)];
        for (i, (reg, bits)) in regs(want).into_iter().enumerate() {
            // Leaf 0x1 EBX holds ids and counts, not features; ECX bit 31 is
            // the hypervisor bit crvmm sets itself.
            let bits = match (want.function, reg) {
                (0x1, "ebx") => 0,
                (0x1, "ecx") => bits & !(1 << 31),
                _ => bits,
            };
            let host = have.map_or(0, |h| regs(h)[i].1);
            let missing = bits & !host;
            if missing != 0 {
                return Err(VcpuError::MissingCpuFeature {
                    leaf: want.function,
                    reg,
                    bits: missing,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_check_names_the_missing_feature() {
        let host = [leaf(0x1, 0b1011), leaf(0x7, 0)];
        assert!(check_cpuid(&[leaf(0x1, 0b0011 | (1 << 31))], &host).is_ok());
        match check_cpuid(&[leaf(0x1, 0b0111)], &host) {
            Err(VcpuError::MissingCpuFeature {
                leaf: 1,
                reg: "ecx",
                bits: 0b0100,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let err = check_cpuid(&[leaf(0x8000_0001, 1)], &host).unwrap_err();
        assert!(err.to_string().contains("0x80000001"), "{err}");
    }
}
