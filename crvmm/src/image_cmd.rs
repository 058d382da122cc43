//! `crvmm image inspect|verify`: checkpoint images written by the guest
//! kernel's `checkpoint(2)`, and container images (the agent's
//! `container checkpoint`, which hold kernel images), plain or zstd,
//! read and checked on the host (no VM involved).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use crvmm_cr_image::container::{check_container, is_container_image};
use crvmm_cr_image::{Limits, TASK_SIZE_4LEVEL, TASK_SIZE_5LEVEL};

use crate::say;

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Print an image's records as JSON (page data summarised), then its
    /// summary or its problem; exits non-zero if the image is bad.
    Inspect(Source),
    /// Check an image as restart(2) would, and print a one-line summary
    /// (what only the restarting kernel can check goes to stderr as notes).
    Verify(Source),
}

#[derive(Args)]
struct Source {
    /// The image file, or `-` for standard input.
    file: PathBuf,
    /// Paging of the kernel that will restart the image, which sets where
    /// user space ends: `auto` takes what the image's config hash says,
    /// else 4-level.
    #[arg(long, value_enum, default_value = "auto")]
    paging: Paging,
}

#[derive(Clone, Copy, ValueEnum)]
enum Paging {
    Auto,
    #[value(name = "4-level")]
    FourLevel,
    #[value(name = "5-level")]
    FiveLevel,
}

impl Source {
    fn limits(&self) -> Limits {
        let task_size = match self.paging {
            Paging::Auto => None,
            Paging::FourLevel => Some(TASK_SIZE_4LEVEL),
            Paging::FiveLevel => Some(TASK_SIZE_5LEVEL),
        };
        Limits { task_size }
    }

    /// The image's name for messages, whether it is a container image, and
    /// a reader of it (decompressed if it is zstd).
    fn open(&self) -> anyhow::Result<(String, bool, Box<dyn Read>)> {
        let (name, raw): (String, Box<dyn Read>) = if self.file == Path::new("-") {
            ("standard input".into(), Box::new(io::stdin().lock()))
        } else {
            let file = File::open(&self.file)
                .with_context(|| format!("opening {}", self.file.display()))?;
            (self.file.display().to_string(), Box::new(file))
        };
        let mut input = BufReader::with_capacity(1 << 16, raw);
        let head = input
            .fill_buf()
            .with_context(|| format!("reading {name}"))?;
        let input: Box<dyn Read> = if head.starts_with(&ZSTD_MAGIC) {
            let decoder = zstd::stream::read::Decoder::with_buffer(input)
                .with_context(|| format!("starting to decompress {name}"))?;
            Box::new(decoder)
        } else {
            Box::new(input)
        };
        let mut input = BufReader::with_capacity(1 << 16, input);
        let head = input
            .fill_buf()
            .with_context(|| format!("reading {name}"))?;
        let container = is_container_image(head);
        Ok((name, container, Box::new(input)))
    }
}

pub fn image(args: ImageArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ImageCommand::Inspect(source) => inspect(&source),
        ImageCommand::Verify(source) => verify(&source),
    }
}

fn verify(source: &Source) -> anyhow::Result<ExitCode> {
    let (name, container, input) = source.open()?;
    if container {
        return verify_container(&name, input, &source.limits());
    }
    let summary = crvmm_cr_image::verify(input, &source.limits())
        .with_context(|| format!("{name} is not a good checkpoint image"))?;
    println!("{name}: {summary}");
    for note in &summary.notes {
        say!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(source: &Source) -> anyhow::Result<ExitCode> {
    let (name, container, input) = source.open()?;
    if container {
        return inspect_container(&name, input, &source.limits());
    }
    let out = BufWriter::new(io::stdout().lock());
    match crvmm_cr_image::inspect(input, &source.limits(), out) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("writing the JSON"),
        Ok(verdict) => {
            verdict.with_context(|| format!("{name} is not a good checkpoint image"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The zstd frame magic, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn verify_container(name: &str, input: Box<dyn Read>, limits: &Limits) -> anyhow::Result<ExitCode> {
    let check = check_container(input, limits, false)
        .with_context(|| format!("{name} is not a good container image"))?;
    if let Some((p, e)) = check.first_bad() {
        anyhow::bail!(
            "{name}: the kernel image of process {} (pid {}) is bad: {e}",
            p.index,
            p.pid
        );
    }
    let m = &check.manifest;
    println!(
        "{name}: container image of {:?}, {} processes, {} bytes, digest {}, kernel {}",
        m.id,
        check.processes.len(),
        check.bytes,
        check.digest,
        m.kernel_release
    );
    for p in &check.processes {
        if let Ok(summary) = &p.verdict {
            println!("  process {} (pid {}): {summary}", p.index, p.pid);
            for note in &summary.notes {
                say!("note: process {}: {note}", p.index);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect_container(
    name: &str,
    input: Box<dyn Read>,
    limits: &Limits,
) -> anyhow::Result<ExitCode> {
    let check = check_container(input, limits, true)
        .with_context(|| format!("{name} is not a good container image"))?;
    let mut out = serde_json::to_value(&check)?;
    out["kind"] = "container".into();
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some((p, e)) = check.first_bad() {
        anyhow::bail!(
            "{name}: the kernel image of process {} is bad: {e}",
            p.index
        );
    }
    Ok(ExitCode::SUCCESS)
}
