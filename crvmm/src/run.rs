//! `crvmm run`: boot a guest and supervise it until it ends.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use crvmm_engine::kvm::KvmEngine;
use crvmm_engine::qemu::QemuEngine;
use crvmm_engine::{AgentChannel, Console, Engine, VmConfig, VmExit};
use crvmm_vmm::host::HostKvm;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// QEMU with software emulation: runs anywhere.
    Qemu,
    /// crvmm's own VMM on /dev/kvm.
    Kvm,
    /// kvm where it can run a Linux user space, qemu otherwise.
    Auto,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleChoice {
    /// The terminal when stdin is one, else only the log.
    Auto,
    /// This terminal (input and output).
    Terminal,
    /// Only the serial log in the run directory.
    Log,
}

#[derive(Args)]
pub struct RunArgs {
    /// Guest kernel: ELF vmlinux (with PVH note) or bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs to load.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Which engine runs the guest.
    #[arg(long, value_enum, default_value = "auto")]
    engine: EngineChoice,
    /// The VM's name, used by other crvmm commands.
    #[arg(long, default_value = "vm")]
    name: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Agent channel: vsock, or serial (keeps a QEMU VM snapshottable).
    #[arg(long, value_enum, default_value = "vsock")]
    channel: Channel,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    append: String,
    /// Where the serial console goes (it is always logged too).
    #[arg(long, value_enum, default_value = "auto")]
    console: ConsoleChoice,
    /// Record dirty pages so that snapshots after the first can be diffs
    /// (kvm engine).
    #[arg(long)]
    track_dirty: bool,
    /// Seconds to wait for the agent before giving up (0: do not wait).
    #[arg(long, default_value_t = 60)]
    agent_timeout: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Channel {
    Vsock,
    Serial,
}

pub fn run(base: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (engine, agent_can_run) = pick_engine(args.engine, base, args.track_dirty)?;
    let terminal = match args.console {
        ConsoleChoice::Auto => std::io::stdin().is_terminal(),
        ConsoleChoice::Terminal => true,
        ConsoleChoice::Log => false,
    };
    let config = VmConfig {
        initrd: args.initrd,
        extra_cmdline: args.append,
        mem_mib: args.mem_mib,
        vcpus: args.vcpus,
        agent_channel: match args.channel {
            Channel::Vsock => AgentChannel::Vsock,
            Channel::Serial => AgentChannel::Serial,
        },
        console: if terminal {
            Console::Terminal
        } else {
            Console::LogOnly
        },
        ..VmConfig::new(args.name, args.kernel)
    };

    // Set before booting so a Ctrl-C during boot still tears down cleanly.
    let stop = stop_flag()?;
    let started = Instant::now();
    let mut vm = engine.boot(&config)?;
    note(
        terminal,
        &format!(
            "VM {:?} booting with the {} engine; run directory {}",
            vm.name(),
            engine.name(),
            vm.run_dir().display()
        ),
    );
    if args.agent_timeout > 0 && agent_can_run && !stop.load(Ordering::Relaxed) {
        let info = vm.wait_agent(Duration::from_secs(args.agent_timeout))?;
        note(terminal, &format!(
            "agent ready after {:.2} s (kernel {}, agent {}, over {}); try: crvmm agent {} exec -- uname -a",
            started.elapsed().as_secs_f64(),
            info.kernel_release,
            info.agent_version,
            info.transport,
            vm.name()
        ));
    }
    supervise(vm, terminal, &stop)
}

/// A flag that SIGINT and SIGTERM set; install it before creating a VM.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Waits until the VM ends or `stop` is set (then tears it down).
pub fn supervise(
    mut vm: Box<dyn crvmm_engine::Vm>,
    terminal: bool,
    stop: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    // Requests that need this process's VM handle (a QEMU snapshot).
    let owner = crvmm_engine::owner::OwnerServer::bind(vm.run_dir())?;
    loop {
        owner.poll(vm.as_mut());
        if let Some(exit) = vm.try_wait()? {
            return Ok(match exit {
                VmExit::GuestShutdown | VmExit::Stopped => {
                    note(terminal, &exit.to_string());
                    ExitCode::SUCCESS
                }
                exit @ VmExit::Vmm(_) => {
                    crate::say!("crvmm: the VM ended ({exit}); serial log tail:");
                    crate::say!("{}", crvmm_engine::log_tail(vm.serial_log(), 20));
                    ExitCode::FAILURE
                }
            });
        }
        if stop.load(Ordering::Relaxed) {
            note(terminal, "interrupted: tearing the VM down");
            vm.kill();
            return Ok(ExitCode::from(130));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engine to use, and whether its guests can run the agent here.
fn pick_engine(
    choice: EngineChoice,
    base: &Path,
    track_dirty: bool,
) -> anyhow::Result<(Box<dyn Engine>, bool)> {
    let kvm = HostKvm::probe();
    let support = kvm.linux_guest_support();
    match (choice, &support) {
        (EngineChoice::Qemu, _) => Ok((Box::new(QemuEngine::new(base)?), true)),
        (EngineChoice::Kvm, Err(why)) if kvm.nested_pvm => {
            crate::say!(
                "crvmm: {why}: the guest boots to the hand-over to init and stops there \
                 (its first system call faults); use --engine qemu for a whole guest"
            );
            Ok((
                Box::new(KvmEngine::new(base)?.track_dirty(track_dirty)),
                false,
            ))
        }
        (EngineChoice::Kvm, Err(why)) => bail!("--engine kvm: {why}; run with --engine qemu"),
        (EngineChoice::Kvm | EngineChoice::Auto, Ok(())) => Ok((
            Box::new(KvmEngine::new(base)?.track_dirty(track_dirty)),
            true,
        )),
        (EngineChoice::Auto, Err(why)) => {
            crate::say!("crvmm: using the qemu engine: {why}");
            Ok((Box::new(QemuEngine::new(base)?), true))
        }
    }
}

/// Status lines go to stderr; on a raw terminal they need a carriage return.
pub fn note(terminal: bool, msg: &str) {
    if terminal {
        crate::say!("crvmm: {msg}\r");
    } else {
        crate::say!("crvmm: {msg}");
    }
}
