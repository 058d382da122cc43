//! `crvmm`: boot guests, talk to their agents, control running VMs.

mod agent_cmd;
mod container_checkpoint_cmd;
mod container_cmd;
mod container_restore_cmd;
mod image_cmd;
mod run;
mod snapshot_cmd;
mod vm_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A microVM monitor for checkpoint/restart of Linux containers.
#[derive(Parser)]
#[command(name = "crvmm", version, about)]
struct Cli {
    /// Where running VMs keep their sockets and records [default: $CRVMM_RUN_DIR,
    /// $XDG_RUNTIME_DIR/crvmm, /run/crvmm (root) or /tmp/crvmm-<uid>].
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest and stay attached until it ends (Ctrl-C tears it down).
    Run(run::RunArgs),
    /// Talk to the agent of a running VM.
    Agent(agent_cmd::AgentArgs),
    /// Containers in a running VM: create, exec, freeze, kill, delete (--vm NAME).
    Container(container_cmd::ContainerArgs),
    /// List running VMs.
    List(vm_cmd::ListArgs),
    /// Stop a running VM's vCPUs.
    Pause(vm_cmd::VmArg),
    /// Let a paused VM run again.
    Resume(vm_cmd::VmArg),
    /// Shut a running VM down (through its agent; forcefully if it does not answer).
    Stop(vm_cmd::StopArgs),
    /// Whole-VM snapshots: create, restore, inspect.
    Snapshot(snapshot_cmd::SnapshotArgs),
    /// Checkpoint images of the guest kernel's checkpoint(2): inspect, verify.
    Image(image_cmd::ImageArgs),
    /// Tell what this host can run: KVM, QEMU, the vsock backend.
    Host,
}

/// Prints to stderr like `eprintln!`, but a closed stderr (a reader that went
/// away) is ignored instead of panicking: the VM must not die of it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let base = cli
        .run_dir
        .unwrap_or_else(crvmm_engine::rundir::default_base);
    let result = match cli.command {
        Command::Run(args) => run::run(&base, args),
        Command::Agent(args) => agent_cmd::agent(&base, args),
        Command::Container(args) => container_cmd::container(&base, args),
        Command::List(args) => vm_cmd::list(&base, args),
        Command::Pause(vm) => vm_cmd::pause(&base, vm),
        Command::Resume(vm) => vm_cmd::resume(&base, vm),
        Command::Stop(args) => vm_cmd::stop(&base, args),
        Command::Snapshot(args) => snapshot_cmd::snapshot(&base, args),
        Command::Image(args) => image_cmd::image(args),
        Command::Host => vm_cmd::host(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            say!("crvmm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
