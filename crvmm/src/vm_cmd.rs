//! `crvmm list|pause|resume|stop|host`: VMs owned by other crvmm processes,
//! and what this host can run.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use crvmm_engine::{remote, rundir};
use crvmm_vmm::host::{HostKvm, KvmDevice};

#[derive(Args)]
pub struct VmArg {
    /// The VM's name.
    vm: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON records instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StopArgs {
    /// The VM's name.
    vm: String,
    /// Seconds to wait for a clean shutdown before forcing it.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

pub fn list(base: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    let records = rundir::list(base);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<6} {:<8} {:<8} AGENT",
        "NAME", "ENGINE", "STATE", "PID"
    );
    for r in records {
        let state = remote::status(&r).unwrap_or_else(|_| "unknown".into());
        let channel = match r.agent {
            crvmm_engine::AgentEndpoint::Vsock { .. } => "vsock",
            crvmm_engine::AgentEndpoint::Serial { .. } => "serial",
        };
        println!(
            "{:<20} {:<6} {:<8} {:<8} {channel}",
            r.name, r.engine, state, r.owner_pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn pause(base: &Path, vm: VmArg) -> anyhow::Result<ExitCode> {
    remote::pause(&rundir::find(base, &vm.vm)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn resume(base: &Path, vm: VmArg) -> anyhow::Result<ExitCode> {
    remote::resume(&rundir::find(base, &vm.vm)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn stop(base: &Path, args: StopArgs) -> anyhow::Result<ExitCode> {
    remote::stop(
        &rundir::find(base, &args.vm)?,
        Duration::from_secs(args.timeout),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn host() -> anyhow::Result<ExitCode> {
    let kvm = HostKvm::probe();
    let device = match &kvm.device {
        KvmDevice::Missing => "missing".to_owned(),
        KvmDevice::NoAccess(e) => format!("not accessible ({e})"),
        KvmDevice::WrongApi(v) => format!("unexpected API version {v}"),
        KvmDevice::Available => "available".to_owned(),
    };
    println!("/dev/kvm: {device}");
    println!(
        "nested PVM (kvm_pvm): {}",
        if kvm.nested_pvm { "yes" } else { "no" }
    );
    match kvm.linux_guest_support() {
        Ok(()) => println!("Linux guests on KVM: supported by the host"),
        Err(why) => println!("Linux guests on KVM: no: {why}"),
    }
    for (program, install) in [
        ("qemu-system-x86_64", "apt-get install -y qemu-system-x86"),
        ("vhost-device-vsock", "cargo install vhost-device-vsock"),
    ] {
        match crvmm_engine::find_program(program, install) {
            Ok(path) => println!("{program}: {}", path.display()),
            Err(e) => println!("{program}: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
