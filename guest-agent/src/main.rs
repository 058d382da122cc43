//! crvmm-agent: the guest side of the crvmm agent protocol.
//!
//! In the guest it is `/init`: PID 1 mounts the pseudo file systems, forks
//! the agent server and then only reaps orphans (see [`init`]). The server
//! listens on AF_VSOCK port 1024 and on the virtio-serial port
//! `org.crvmm.agent` (see [`server`]). On a host, `--listen-unix` serves the
//! same protocol on a Unix socket for tests, with no init duties.

#[macro_use]
mod log;

mod container;
mod exec;
mod files;
mod handlers;
mod init;
mod serial;
mod server;
mod shutdown;
mod vsock;

use std::path::PathBuf;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: crvmm-agent [--guest | --listen-unix PATH | --help]

  (no flags)          guest mode: as PID 1, do init duties, then serve the agent
                      protocol on vsock port 1024 and the virtio-serial port
                      org.crvmm.agent; Shutdown reboots the machine
  --guest             guest mode even when not PID 1 (no init duties)
  --listen-unix PATH  serve the protocol on a Unix socket at PATH (for host
                      tests); Shutdown only ends this process
  --help              print this text
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Guest { forced: bool },
    ListenUnix(PathBuf),
    Help,
}

fn parse_args(args: &[String]) -> anyhow::Result<Command> {
    match args {
        [] => Ok(Command::Guest { forced: false }),
        [flag] if flag == "--guest" => Ok(Command::Guest { forced: true }),
        [flag] if flag == "--help" || flag == "-h" => Ok(Command::Help),
        [flag, path] if flag == "--listen-unix" => Ok(Command::ListenUnix(path.into())),
        [flag] if flag == "--listen-unix" => bail!("--listen-unix needs a socket path"),
        _ => bail!("unexpected arguments {args:?}"),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(e) => {
            eprint!("crvmm-agent: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::ListenUnix(path) => {
            server::run_unix(&path).with_context(|| format!("serving on {}", path.display()))
        }
        Command::Guest { forced } => {
            if nix::unistd::getpid().as_raw() == 1 {
                // Returns only in the forked agent process; PID 1 stays in
                // the reaper loop for good.
                init::run();
            } else if !forced {
                bail!(
                    "guest mode runs as PID 1 (/init); pass --guest to serve the guest \
                     channels anyway (Shutdown then reboots this machine), or \
                     --listen-unix PATH for host tests"
                );
            }
            server::run_guest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Command> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&args)
    }

    #[test]
    fn parses_flags() {
        assert_eq!(parse(&[]).unwrap(), Command::Guest { forced: false });
        assert_eq!(
            parse(&["--guest"]).unwrap(),
            Command::Guest { forced: true }
        );
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(
            parse(&["--listen-unix", "/tmp/a.sock"]).unwrap(),
            Command::ListenUnix("/tmp/a.sock".into())
        );
        assert!(parse(&["--listen-unix"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--guest", "--listen-unix", "/x"]).is_err());
    }
}
