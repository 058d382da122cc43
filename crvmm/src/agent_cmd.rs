//! `crvmm agent <vm> ...`: requests to a running guest's agent.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use crvmm_engine::agent::AgentConnection;
use crvmm_engine::{remote, rundir};
use crvmm_protocol::{ExecRequest, ExitStatus};

#[derive(Args)]
pub struct AgentArgs {
    /// The VM's name.
    vm: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    request: AgentRequest,
}

#[derive(Subcommand)]
enum AgentRequest {
    /// Check the agent answers; print its version and the guest kernel.
    Hello,
    /// Run a program in the guest; exits with its exit code.
    Exec {
        /// Environment variables for the program (KEY=VALUE).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory in the guest.
        #[arg(long)]
        cwd: Option<String>,
        /// Kill the program after this many seconds.
        #[arg(long)]
        kill_after: Option<u64>,
        /// Print the result as JSON instead of the program's output.
        #[arg(long)]
        json: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Copy a guest file to the host (or to stdout with `-`).
    Get {
        /// Path in the guest.
        guest: String,
        /// Path on the host, or `-`.
        host: PathBuf,
    },
    /// Copy a host file into the guest.
    Put {
        /// Path on the host.
        host: PathBuf,
        /// Path in the guest.
        guest: String,
        /// Permission bits in octal.
        #[arg(long, value_parser = parse_octal)]
        mode: Option<u32>,
    },
    /// Shut the guest down.
    Shutdown,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))
}

/// Connects to the agent of the running VM `vm`.
/// Connects to the agent of `vm`: a VM name (`crvmm list`), or the path
/// of a vsock device's Unix socket (Firecracker's host protocol), which
/// reaches the agent of any VM whose guest runs it, crvmm's or not.
pub fn connect(base: &Path, vm: &str, timeout: Duration) -> anyhow::Result<AgentConnection> {
    if vm.contains('/') {
        return connect_socket(Path::new(vm), timeout);
    }
    let record = rundir::find(base, vm)?;
    // A paused guest cannot answer, and a vsock request left waiting on one
    // wedges vhost-device-vsock 0.3.0: refuse before connecting.
    if remote::status(&record).is_ok_and(|s| s == "paused") {
        bail!("VM {vm:?} is paused; resume it first: crvmm resume {vm}");
    }
    record
        .agent
        .connect(timeout)
        .with_context(|| format!("connecting to the agent of VM {vm:?}"))
}

fn connect_socket(path: &Path, timeout: Duration) -> anyhow::Result<AgentConnection> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--vm {}: no such vsock socket", path.display()))?;
    if !meta.file_type().is_socket() {
        bail!(
            "--vm {}: not a Unix socket (give a VM name, or a vsock device's socket)",
            path.display()
        );
    }
    let endpoint = crvmm_engine::agent::AgentEndpoint::Vsock {
        uds_path: path.to_path_buf(),
        port: crvmm_protocol::AGENT_VSOCK_PORT,
    };
    endpoint
        .connect(timeout)
        .with_context(|| format!("connecting to the agent through {}", path.display()))
}

pub fn agent(base: &Path, args: AgentArgs) -> anyhow::Result<ExitCode> {
    let mut client = connect(base, &args.vm, Duration::from_secs(args.timeout))?;
    match args.request {
        AgentRequest::Hello => {
            let info = client.hello()?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        AgentRequest::Exec {
            env,
            cwd,
            kill_after,
            json,
            argv,
        } => {
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            let request = ExecRequest {
                env,
                cwd,
                timeout_ms: kill_after.map(|s| s * 1000),
                ..ExecRequest::new(argv)
            };
            let out = client.exec(request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                std::io::stdout().write_all(&out.stdout)?;
                std::io::stderr().write_all(&out.stderr)?;
                if out.truncated {
                    crate::say!("crvmm: output was truncated");
                }
            }
            return Ok(exit_code(out.status));
        }
        AgentRequest::Get { guest, host } => {
            let data = client.read_file(&guest)?;
            if host.as_os_str() == "-" {
                std::io::stdout().write_all(&data)?;
            } else {
                std::fs::write(&host, &data)
                    .with_context(|| format!("writing {}", host.display()))?;
            }
        }
        AgentRequest::Put { host, guest, mode } => {
            let data =
                std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
            client.write_file(&guest, &data, mode)?;
        }
        AgentRequest::Shutdown => client.shutdown()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The shell's convention: the exit code, 128 + signal, or 124 on timeout.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    let code = match status {
        ExitStatus::Exited(c) => c,
        ExitStatus::Signaled(s) => 128 + s,
        ExitStatus::TimedOut => 124,
    };
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}
