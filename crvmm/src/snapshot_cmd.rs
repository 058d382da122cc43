//! `crvmm snapshot create|restore|inspect`: whole-VM snapshots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use crvmm_engine::kvm::KvmEngine;
use crvmm_engine::qemu::{QemuEngine, MANIFEST_FILE as QEMU_MANIFEST};
use crvmm_engine::{remote, rundir, AfterSnapshot, Engine, RestoreOptions};

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Pause a running VM and write a snapshot of it into DIR (must not exist).
    Create {
        /// The VM's name.
        vm: String,
        /// The snapshot directory.
        dir: PathBuf,
        /// What the VM does afterwards.
        #[arg(long, value_enum, default_value = "resume")]
        after: AfterChoice,
        /// Write only the pages changed since the VM's previous snapshot
        /// (kvm engine, started with --track-dirty); restore follows the chain.
        #[arg(long)]
        diff: bool,
    },
    /// Bring a VM back from a snapshot and stay attached until it ends.
    Restore {
        /// The snapshot directory.
        dir: PathBuf,
        /// The restored VM's name.
        #[arg(long, default_value = "vm")]
        name: String,
        /// Keep it paused (`crvmm resume` lets it run).
        #[arg(long)]
        paused: bool,
        /// Record dirty pages, so later snapshots of it can be diffs.
        #[arg(long)]
        track_dirty: bool,
        /// Read the memory file in full instead of mapping it (pages then
        /// load on demand, and the snapshot must stay in place).
        #[arg(long)]
        read_memory: bool,
        /// Put the vsock device's host socket here instead of in the run
        /// directory.
        #[arg(long, value_name = "PATH")]
        vsock_uds: Option<PathBuf>,
    },
    /// Print a snapshot's state as JSON.
    Inspect {
        /// The snapshot directory.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AfterChoice {
    Resume,
    Pause,
    Exit,
}

pub fn snapshot(base: &Path, args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SnapshotCommand::Create {
            vm,
            dir,
            after,
            diff,
        } => {
            let record = rundir::find(base, &vm)?;
            let after = match after {
                AfterChoice::Resume => AfterSnapshot::Resume,
                AfterChoice::Pause => AfterSnapshot::Pause,
                AfterChoice::Exit => AfterSnapshot::Exit,
            };
            let info = remote::snapshot(&record, &dir, after, diff)?;
            crate::say!(
                "crvmm: snapshot of {vm:?} in {}: {:.1} MiB, guest paused {} ms, {} ms in all",
                info.dir.display(),
                info.bytes as f64 / (1 << 20) as f64,
                info.downtime.as_millis(),
                info.total.as_millis()
            );
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Restore {
            dir,
            name,
            paused,
            track_dirty,
            read_memory,
            vsock_uds,
        } => {
            let stop = crate::run::stop_flag()?;
            let engine: Box<dyn Engine> = if is_qemu_snapshot(&dir) {
                Box::new(QemuEngine::new(base)?)
            } else {
                Box::new(KvmEngine::new(base)?.track_dirty(track_dirty))
            };
            let options = RestoreOptions {
                paused,
                read_memory,
                vsock_uds,
                ..RestoreOptions::new(name)
            };
            let started = std::time::Instant::now();
            let vm = engine
                .restore(&dir, &options)
                .with_context(|| format!("restoring {}", dir.display()))?;
            crate::run::note(
                false,
                &format!(
                    "VM {:?} restored from {} in {} ms ({}); run directory {}",
                    vm.name(),
                    dir.display(),
                    started.elapsed().as_millis(),
                    if paused { "paused" } else { "running" },
                    vm.run_dir().display()
                ),
            );
            crate::run::supervise(vm, false, &stop)
        }
        SnapshotCommand::Inspect { dir } if is_qemu_snapshot(&dir) => {
            let manifest = std::fs::read_to_string(dir.join(QEMU_MANIFEST))
                .with_context(|| format!("reading {}", dir.join(QEMU_MANIFEST).display()))?;
            print!("{manifest}");
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Inspect { dir } => {
            let state = crvmm_vmm::runtime::snapshot::read_state(&dir)
                .with_context(|| format!("reading the snapshot in {}", dir.display()))?;
            let mut out = std::io::stdout().lock();
            let written = serde_json::to_writer_pretty(&mut out, &state)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out));
            match written {
                // A reader that stopped early (`| head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                other => other
                    .map(|()| ExitCode::SUCCESS)
                    .context("writing the JSON"),
            }
        }
    }
}

/// A QEMU-engine snapshot has a manifest; the KVM engine writes `state` and
/// `memory` instead.
fn is_qemu_snapshot(dir: &Path) -> bool {
    dir.join(QEMU_MANIFEST).exists()
}
