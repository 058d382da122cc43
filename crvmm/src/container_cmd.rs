//! `crvmm container ... --vm <vm>`: containers run by a guest's agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use crvmm_protocol::{BasicSpec, ContainerInfo, ExecRequest, DEFAULT_ROOTFS};

use crate::agent_cmd;

#[derive(Args)]
pub struct ContainerArgs {
    /// The running VM whose agent runs the containers.
    #[arg(long, global = true, value_name = "NAME|SOCKET")]
    vm: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the agent's answer.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    timeout: u64,
    #[command(subcommand)]
    command: ContainerCommand,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Create a container from a config.json, or from flags and a command;
    /// it starts at once unless --no-start.
    Create(CreateArgs),
    /// Restore a container from an image (`container checkpoint`), in this
    /// VM or another; the image comes from a file, standard input or a
    /// file in the guest.
    Restore(crate::container_restore_cmd::RestoreArgs),
    /// Checkpoint a container: pre-dump hook, freeze, dump, thaw or kill,
    /// post-dump hook; the image streams to a host file (or stdout), a
    /// guest file, or both.
    Checkpoint(crate::container_checkpoint_cmd::CheckpointArgs),
    /// Start a container created with --no-start.
    Start {
        /// The container.
        id: String,
    },
    /// List the VM's containers.
    List,
    /// Show one container.
    State {
        /// The container.
        id: String,
    },
    /// Run a program inside a running container; exits with its exit code.
    Exec {
        /// The container.
        id: String,
        /// Environment variables added to the container's (KEY=VALUE).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory inside the container.
        #[arg(long)]
        cwd: Option<String>,
        /// Kill the program after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        kill_after: Option<u64>,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Freeze every process of a container (cgroup freezer).
    Freeze {
        /// The container.
        id: String,
        /// Give up (and thaw again) after this many milliseconds.
        #[arg(long, value_name = "MS")]
        wait_ms: Option<u64>,
    },
    /// Thaw a frozen container.
    Thaw {
        /// The container.
        id: String,
    },
    /// Send a signal to a container's init (SIGKILL ends all its processes).
    Kill {
        /// The container.
        id: String,
        /// Signal name (TERM, SIGUSR1) or number.
        #[arg(long, short, default_value = "KILL")]
        signal: String,
        /// Signal every process of the container's cgroup, not only its init.
        #[arg(long)]
        all: bool,
    },
    /// Delete a stopped (or never started) container; --force kills a running one.
    Delete {
        /// The container.
        id: String,
        /// Kill it first if it still runs.
        #[arg(long, short)]
        force: bool,
    },
    /// Print the output of a container's init.
    Logs {
        /// The container.
        id: String,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// The new container's identifier.
    #[arg(long)]
    id: String,
    /// An OCI runtime-spec config.json (the supported subset: docs/containers.md).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["hostname", "rootfs", "memory", "pids", "env", "cwd", "argv"]
    )]
    config: Option<PathBuf>,
    /// Hostname (the container gets a UTS namespace in any case).
    #[arg(long)]
    hostname: Option<String>,
    /// Root file system: a guest directory, mounted read-only.
    #[arg(long, default_value = DEFAULT_ROOTFS)]
    rootfs: String,
    /// Memory limit in bytes (K, M, G suffixes: powers of 1024).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Process limit (pids.max).
    #[arg(long)]
    pids: Option<u64>,
    /// Environment variables added to the defaults (KEY=VALUE).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    cwd: Option<String>,
    /// Set the container up but wait for `crvmm container start`.
    #[arg(long)]
    no_start: bool,
    /// The command and its arguments (without --config).
    #[arg(last = true)]
    argv: Vec<String>,
}

pub fn container(base: &Path, args: ContainerArgs) -> anyhow::Result<ExitCode> {
    let Some(vm) = args.vm.as_deref() else {
        bail!(
            "which VM? name it with --vm NAME (crvmm list shows them), or give the path \
             of its vsock device's socket"
        );
    };
    // Read local inputs before connecting.
    let spec = match &args.command {
        ContainerCommand::Create(create) => Some(spec_of(create)?),
        _ => None,
    };
    if let ContainerCommand::Checkpoint(checkpoint) = args.command {
        // It opens a connection of its own, which the stream uses up.
        let timeout = Duration::from_secs(args.timeout);
        crate::container_checkpoint_cmd::checkpoint(base, vm, args.json, timeout, checkpoint)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = agent_cmd::connect(base, vm, Duration::from_secs(args.timeout))?;
    let json = args.json;
    let info = match args.command {
        ContainerCommand::Create(create) => {
            let spec = spec.expect("read above");
            client.container_create(&create.id, spec, !create.no_start)?
        }
        ContainerCommand::Start { id } => client.container_start(&id)?,
        ContainerCommand::Checkpoint(_) => unreachable!("served above"),
        ContainerCommand::Restore(restore) => {
            crate::container_restore_cmd::restore(&mut client, restore)?
        }
        ContainerCommand::State { id } => {
            let info = client.container_state(&id)?;
            if json {
                print_json(serde_json::to_value(&info)?)?;
            } else {
                print_details(&info);
            }
            return Ok(ExitCode::SUCCESS);
        }
        ContainerCommand::List => {
            let list = client.container_list()?;
            if json {
                print_json(serde_json::to_value(&list)?)?;
            } else {
                print_table(&list);
            }
            return Ok(ExitCode::SUCCESS);
        }
        ContainerCommand::Exec {
            id,
            env,
            cwd,
            kill_after,
            argv,
        } => {
            let request = ExecRequest {
                env: parse_env(&env)?,
                cwd,
                timeout_ms: kill_after.map(|s| s * 1000),
                ..ExecRequest::new(argv)
            };
            let out = client.container_exec(&id, request)?;
            if json {
                print_json(serde_json::to_value(&out)?)?;
            } else {
                std::io::stdout().write_all(&out.stdout)?;
                std::io::stderr().write_all(&out.stderr)?;
                if out.truncated {
                    crate::say!("crvmm: output was truncated");
                }
            }
            return Ok(agent_cmd::exit_code(out.status));
        }
        ContainerCommand::Freeze { id, wait_ms } => client.container_freeze(&id, wait_ms)?,
        ContainerCommand::Thaw { id } => client.container_thaw(&id)?,
        ContainerCommand::Kill { id, signal, all } => {
            client.container_kill(&id, Some(parse_signal(&signal)?), all)?
        }
        ContainerCommand::Delete { id, force } => {
            client.container_delete(&id, force)?;
            if json {
                print_json(serde_json::json!({ "id": id, "deleted": true }))?;
            } else {
                println!("{id}: deleted");
            }
            return Ok(ExitCode::SUCCESS);
        }
        ContainerCommand::Logs { id } => {
            let info = client.container_state(&id)?;
            let log = client
                .read_file(&info.log)
                .with_context(|| format!("reading {} in the guest", info.log))?;
            std::io::stdout().write_all(&log)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if json {
        print_json(serde_json::to_value(&info)?)?;
    } else {
        println!("{}", summary(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// The spec to send: the file's, or one built from the flags.
fn spec_of(args: &CreateArgs) -> anyhow::Result<serde_json::Value> {
    if let Some(path) = &args.config {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()));
    }
    if args.argv.is_empty() {
        bail!("give the command after `--` (crvmm container create --id ID -- CMD ARGS...), or --config FILE");
    }
    let mut spec = BasicSpec::new(args.argv.clone());
    spec.hostname = args.hostname.clone();
    spec.rootfs = args.rootfs.clone();
    spec.memory = args.memory;
    spec.pids = args.pids;
    for (key, value) in parse_env(&args.env)? {
        spec.env.retain(|kv| !kv.starts_with(&format!("{key}=")));
        spec.env.push(format!("{key}={value}"));
    }
    if let Some(cwd) = &args.cwd {
        spec.cwd = cwd.clone();
    }
    Ok(spec.to_json())
}

fn parse_env(env: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    env.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

/// `1048576`, `512K`, `64M`, `2G` (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))
}

/// A signal name (`TERM`, `sigterm`, `SIGTERM`) or number.
fn parse_signal(text: &str) -> anyhow::Result<i32> {
    if let Ok(number) = text.parse() {
        return Ok(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => bail!("unknown signal {text:?} (a number, or HUP INT QUIT KILL USR1 USR2 PIPE ALRM TERM CONT STOP)"),
    };
    Ok(number)
}

fn print_json(value: serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `c1: running, pid 123` or `c1: stopped (exit code 3), pid 123`.
fn summary(info: &ContainerInfo) -> String {
    format!("{}: {}, pid {}", info.id, status_text(info), info.pid)
}

fn status_text(info: &ContainerInfo) -> String {
    match info.exit {
        Some(exit) => format!("{} ({exit})", info.status),
        None => info.status.to_string(),
    }
}

fn print_table(list: &[ContainerInfo]) {
    println!(
        "{:<20} {:<28} {:>7}  {:<16} ROOTFS",
        "ID", "STATUS", "PID", "HOSTNAME"
    );
    for info in list {
        println!(
            "{:<20} {:<28} {:>7}  {:<16} {}",
            info.id,
            status_text(info),
            info.pid,
            info.hostname.as_deref().unwrap_or("-"),
            info.rootfs
        );
    }
}

fn print_details(info: &ContainerInfo) {
    println!("id:         {}", info.id);
    println!("status:     {}", status_text(info));
    println!("pid:        {}", info.pid);
    println!("hostname:   {}", info.hostname.as_deref().unwrap_or("-"));
    println!("rootfs:     {}", info.rootfs);
    println!("cgroup:     {}", info.cgroup);
    println!("namespaces: {}", info.namespaces.join(" "));
    println!("log:        {}", info.log);
    println!(
        "created:    {} ms since the epoch (guest clock)",
        info.created_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert!(parse_signal("BOGUS").is_err());
    }
}
