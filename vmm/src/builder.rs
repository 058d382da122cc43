//! Assembles a microVM: guest memory, the KVM VM, the loaded kernel (or
//! payload), boot tables, and configured vCPUs; then runs, pauses, resumes
//! and stops it.

use crvmm_devices::GuestMemoryMmap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crvmm_devices::bus::{Bus, BusError};
use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::cpuid::CpuidPolicy;
use crate::arch::x86_64::layout::HIMEM_START;
use crate::arch::x86_64::mptable::{self, MpTableError};
use crate::arch::x86_64::regs::{self, EntryMode, RegsError};
use crate::debug_port::{DebugExit, DEBUG_EXIT_PORT};
use crate::loader::{self, ElfEntry, Entry, LoaderError};
use crate::vcpus::{self, ExitReason, VcpuHandle, VcpuState, VcpusError};
use crate::vstate::memory::{self, MemoryError};
use crate::vstate::vcpu::{Vcpu, VcpuError, VcpuState as VcpuSnapshot};
use crate::vstate::vm::{Vm, VmError, VmState};

/// What to boot.
#[derive(Debug, Clone)]
pub enum Boot {
    /// A Linux kernel.
    Linux {
        /// ELF vmlinux or bzImage.
        kernel: PathBuf,
        /// The command line.
        cmdline: String,
        /// The initramfs.
        initrd: Option<PathBuf>,
        /// Which entry of a vmlinux to use.
        entry: ElfEntry,
    },
    /// A flat 64-bit payload loaded at 1 MiB and entered at its first byte
    /// on every vCPU (`rdi` = vCPU index, `rsi` = `arg`). Port 0xf4 ends it.
    Payload {
        /// The machine code.
        code: Vec<u8>,
        /// Passed in `rsi`.
        arg: u64,
    },
}

/// A VM to build.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Guest memory in bytes.
    pub mem_size: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// What runs.
    pub boot: Boot,
    /// CPUID quirks for this host.
    pub cpuid: CpuidPolicy,
    /// Record which pages change, for diff snapshots.
    pub track_dirty: bool,
}

/// Errors of building and running a microVM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The vCPU count is out of range.
    #[error("{0} vCPUs is outside 1..={max}", max = mptable::MAX_VCPUS)]
    VcpuCount(u8),
    /// Guest memory.
    #[error("cannot set up guest memory")]
    Memory(#[from] MemoryError),
    /// The KVM VM.
    #[error("cannot set up the KVM VM")]
    Vm(#[from] VmError),
    /// Loading the kernel or payload.
    #[error("cannot load the guest")]
    Loader(#[from] LoaderError),
    /// Boot tables.
    #[error("cannot write the boot tables")]
    Regs(#[from] RegsError),
    /// The MP table.
    #[error("cannot write the MP table")]
    MpTable(#[from] MpTableError),
    /// A vCPU.
    #[error("cannot set up a vCPU")]
    Vcpu(#[from] VcpuError),
    /// vCPU threads.
    #[error("vCPU control failed")]
    Vcpus(#[from] VcpusError),
    /// A device range.
    #[error("cannot place a device")]
    Bus(#[from] BusError),
    /// An eventfd.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The VM is not in the state the operation needs.
    #[error("cannot {0}: the VM is {1}")]
    State(&'static str, &'static str),
}

/// What KVM holds for a whole VM: the machine part of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct MicroVmState {
    /// Guest memory size in bytes.
    pub mem_size: u64,
    /// Interrupt controllers, PIT, kvmclock.
    pub vm: VmState,
    /// Every vCPU, in index order.
    pub vcpus: Vec<VcpuSnapshot>,
    /// Whether the payload debug-exit port was there.
    pub debug_port: bool,
}

/// A built microVM.
pub struct MicroVm {
    // vCPU threads stop (on drop) before the VM and memory go away.
    handles: Vec<VcpuHandle>,
    vcpus: Vec<Vcpu>,
    pio: Bus,
    mmio: Bus,
    exit_evt: EventFd,
    debug_exit: Arc<Mutex<Option<u32>>>,
    debug_port: bool,
    track_dirty: bool,
    vm: Vm,
    memory: GuestMemoryMmap,
}

impl MicroVm {
    /// Builds the VM; nothing runs until [`MicroVm::start`].
    pub fn create(spec: &VmSpec) -> Result<MicroVm, BuildError> {
        if spec.vcpus == 0 || spec.vcpus > mptable::MAX_VCPUS {
            return Err(BuildError::VcpuCount(spec.vcpus));
        }
        let memory = memory::create(spec.mem_size)?;
        let vm = Vm::new()?;
        vm.register_memory(&memory, spec.track_dirty)?;
        let exit_evt = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
        let debug_exit = Arc::new(Mutex::new(None));
        let mut pio = Bus::new();

        let debug_port = matches!(spec.boot, Boot::Payload { .. });
        let entry = match &spec.boot {
            Boot::Linux {
                kernel,
                cmdline,
                initrd,
                entry,
            } => {
                let e = loader::load_linux(&memory, kernel, cmdline, initrd.as_deref(), *entry)?;
                mptable::write(&memory, spec.vcpus)?;
                e
            }
            Boot::Payload { code, arg } => {
                loader::load_payload(&memory, code, HIMEM_START)?;
                add_debug_port(&mut pio, &debug_exit, &exit_evt)?;
                Entry {
                    mode: EntryMode::Payload64 { arg: *arg },
                    addr: HIMEM_START,
                }
            }
        };
        regs::write_boot_tables(&memory, entry.mode)?;

        let supported = vm.supported_cpuid()?;
        let msr_list = vm.msr_index_list()?;
        let mut vcpus = Vec::with_capacity(spec.vcpus.into());
        for index in 0..spec.vcpus {
            let vcpu = Vcpu::new(index, vm.create_vcpu(index)?, msr_list.clone());
            vcpu.configure(&supported, spec.vcpus, spec.cpuid, entry.mode, entry.addr)?;
            vcpus.push(vcpu);
        }
        Ok(MicroVm {
            handles: Vec::new(),
            vcpus,
            pio,
            mmio: Bus::new(),
            exit_evt,
            debug_exit,
            debug_port,
            track_dirty: spec.track_dirty,
            vm,
            memory,
        })
    }

    /// Rebuilds a VM from a snapshot's machine state and its memory: a new
    /// KVM VM with the saved interrupt controllers, timer and clock, and
    /// vCPUs with their saved state. Devices go on the buses before
    /// [`MicroVm::start`], as after [`MicroVm::create`].
    pub fn restore(
        state: &MicroVmState,
        memory: GuestMemoryMmap,
        track_dirty: bool,
    ) -> Result<MicroVm, BuildError> {
        let count = u8::try_from(state.vcpus.len())
            .ok()
            .filter(|n| (1..=mptable::MAX_VCPUS).contains(n))
            .ok_or(BuildError::VcpuCount(u8::MAX))?;
        let vm = Vm::new()?;
        vm.register_memory(&memory, track_dirty)?;
        vm.restore_state(&state.vm)?;
        let exit_evt = EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)?;
        let debug_exit = Arc::new(Mutex::new(None));
        let mut pio = Bus::new();
        if state.debug_port {
            add_debug_port(&mut pio, &debug_exit, &exit_evt)?;
        }
        let supported = vm.supported_cpuid()?;
        let nested_pvm = crate::host::HostKvm::probe().nested_pvm;
        let msr_list = vm.msr_index_list()?;
        let mut vcpus = Vec::with_capacity(count.into());
        for (index, saved) in (0..count).zip(&state.vcpus) {
            let vcpu = Vcpu::new(index, vm.create_vcpu(index)?, msr_list.clone());
            let available = vcpu.effective_cpuid(&supported, nested_pvm)?;
            vcpu.restore_state(saved, &available)?;
            vcpus.push(vcpu);
        }
        Ok(MicroVm {
            handles: Vec::new(),
            vcpus,
            pio,
            mmio: Bus::new(),
            exit_evt,
            debug_exit,
            debug_port: state.debug_port,
            track_dirty,
            vm,
            memory,
        })
    }

    /// Reads the machine state of a paused VM.
    pub fn save_state(&self) -> Result<MicroVmState, BuildError> {
        if self.handles.is_empty() {
            return Err(BuildError::State("save", "not started"));
        }
        let vcpus = self
            .handles
            .iter()
            .map(|h| h.save(Duration::from_secs(10)))
            .collect::<Result<Vec<_>, _>>()?;
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        Ok(MicroVmState {
            mem_size: self.memory.iter().map(|r| r.len()).sum(),
            vm: self.vm.save_state()?,
            vcpus,
            debug_port: self.debug_port,
        })
    }

    /// Whether the VM records dirty pages.
    pub fn tracks_dirty(&self) -> bool {
        self.track_dirty
    }

    /// The pages written since the last call (by vCPUs, as KVM logged them,
    /// and by devices, through guest memory's own bitmap), in memory-file
    /// order; reading clears both records. Call while paused.
    pub fn dirty_pages(&self) -> Result<memory::DirtyMap, BuildError> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        if !self.track_dirty {
            return Err(BuildError::State("read dirty pages", "not tracking them"));
        }
        let total: u64 = self.memory.iter().map(|r| r.len()).sum();
        let mut map = memory::DirtyMap::clean(total / memory::PAGE_SIZE);
        let mut first_page = 0;
        for (slot, region) in self.memory.iter().enumerate() {
            let pages = region.len() / memory::PAGE_SIZE;
            let kvm = self.vm.dirty_log(slot as u32, region.len() as usize)?;
            // The mapping's own bitmap: writes made through vm-memory.
            let devices = std::ops::Deref::deref(region).bitmap();
            for page in 0..pages {
                let by_vcpu = kvm
                    .get((page / 64) as usize)
                    .is_some_and(|w| w & (1 << (page % 64)) != 0);
                if by_vcpu || devices.is_bit_set(page as usize) {
                    map.set(first_page + page);
                }
            }
            devices.reset();
            first_page += pages;
        }
        Ok(map)
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The KVM VM (to wire device interrupts).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The port-I/O bus; devices must be added before [`MicroVm::start`].
    pub fn pio_bus_mut(&mut self) -> &mut Bus {
        &mut self.pio
    }

    /// The MMIO bus; devices must be added before [`MicroVm::start`].
    pub fn mmio_bus_mut(&mut self) -> &mut Bus {
        &mut self.mmio
    }

    /// Written when the guest ends the VM (shutdown, debug exit, error).
    pub fn exit_event(&self) -> &EventFd {
        &self.exit_evt
    }

    /// Starts one thread per vCPU.
    pub fn start(&mut self) -> Result<(), BuildError> {
        if self.vcpus.is_empty() {
            return Err(BuildError::State("start", "already started"));
        }
        for vcpu in self.vcpus.drain(..) {
            let exit = self.exit_evt.try_clone().map_err(BuildError::EventFd)?;
            let handle = vcpus::spawn(vcpu, self.pio.clone(), self.mmio.clone(), exit)?;
            self.handles.push(handle);
        }
        Ok(())
    }

    /// Parks every vCPU; guest state stays as it is.
    pub fn pause(&self) -> Result<(), BuildError> {
        for h in &self.handles {
            h.pause(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// Lets every vCPU run again.
    pub fn resume(&self) -> Result<(), BuildError> {
        for h in &self.handles {
            h.resume(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// The state of each vCPU.
    pub fn vcpu_states(&self) -> Vec<VcpuState> {
        self.handles.iter().map(VcpuHandle::state).collect()
    }

    /// The code a payload wrote to the debug-exit port, if any.
    pub fn debug_exit_code(&self) -> Option<u32> {
        *self.debug_exit.lock().expect("debug exit lock")
    }

    /// Why the VM ended, once it has: a debug-exit code counts as a guest
    /// shutdown; otherwise the first vCPU's own exit reason.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        if self.debug_exit_code().is_some() {
            return Some(ExitReason::GuestShutdown);
        }
        self.handles.iter().find_map(|h| match h.state() {
            VcpuState::Exited(r) if r != ExitReason::Stopped => Some(r),
            _ => None,
        })
    }

    /// Waits up to `timeout` for the VM to end by itself.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitReason> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.exit_reason() {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops and joins every vCPU thread.
    pub fn stop(&mut self) -> Result<(), BuildError> {
        for h in &mut self.handles {
            h.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }
}

/// Puts the payload debug-exit port on `pio`; it shares the VM's exit event.
fn add_debug_port(
    pio: &mut Bus,
    code: &Arc<Mutex<Option<u32>>>,
    exit_evt: &EventFd,
) -> Result<(), BuildError> {
    let dev = DebugExit::new(
        Arc::clone(code),
        exit_evt.try_clone().map_err(BuildError::EventFd)?,
    );
    pio.insert(Arc::new(Mutex::new(dev)), DEBUG_EXIT_PORT, 1)?;
    Ok(())
}
