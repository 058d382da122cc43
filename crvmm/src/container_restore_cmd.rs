//! `crvmm container restore`: sends a container image to a guest's agent,
//! which rebuilds the container and restarts its processes.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use crvmm_engine::agent::AgentConnection;
use crvmm_protocol::{ContainerInfo, ContainerRestore};

#[derive(Args)]
pub struct RestoreArgs {
    /// The new container's id (the checkpointed one's, or another).
    id: String,
    /// The image file, or `-` for standard input (plain or zstd).
    #[arg(short, long, value_name = "FILE", conflicts_with = "guest_file")]
    input: Option<PathBuf>,
    /// Restore from this image file inside the guest instead.
    #[arg(long, value_name = "PATH")]
    guest_file: Option<String>,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Restores; returns the restored container's state.
pub fn restore(client: &mut AgentConnection, args: RestoreArgs) -> anyhow::Result<ContainerInfo> {
    let request = ContainerRestore {
        container: args.id.clone(),
        guest_file: args.guest_file.clone(),
    };
    let mut source: Box<dyn Read> = match (&args.input, &args.guest_file) {
        (Some(path), _) if path.as_os_str() == "-" => Box::new(io::stdin().lock()),
        (Some(path), _) => Box::new(
            File::open(path).with_context(|| format!("opening the image {}", path.display()))?,
        ),
        (None, Some(_)) => Box::new(io::empty()),
        (None, None) => bail!("which image? give --input FILE (or -) or --guest-file PATH"),
    };
    let show = args.progress || io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut progress = |bytes: u64| {
        if show && last.elapsed().as_millis() >= 500 {
            last = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            crate::say!(
                "crvmm: sent {:.1} MiB ({:.1} MiB/s)",
                bytes as f64 / 1048576.0,
                bytes as f64 / 1048576.0 / secs
            );
        }
    };
    let info = client
        .container_restore(request, &mut source, &mut progress)
        .with_context(|| format!("restoring container {:?}", args.id))?;
    if show {
        crate::say!(
            "crvmm: restored {} in {:.2} s",
            args.id,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(info)
}
