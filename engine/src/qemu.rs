//! The QEMU engine: `qemu-system-x86_64 -M microvm -accel tcg`, which runs
//! our whole guest on any host, with nested or no hardware virtualization.
//!
//! The agent channel is virtio-vsock through rust-vmm's `vhost-device-vsock`
//! (host side: Firecracker's `CONNECT <port>` Unix-socket protocol), or a
//! virtio-serial port wired to a Unix socket, which keeps the VM migratable.
//!
//! Whole-VM snapshots go through QEMU's own migration stream ([`snapshot`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crvmm_protocol::{HelloInfo, AGENT_SERIAL_PORT_NAME, AGENT_VSOCK_PORT};

use crate::agent::{self, AgentEndpoint};
use crate::config::{AgentChannel, Console, EngineKind, VmConfig};
use crate::error::EngineError;
use crate::process::{self, log_tail, Supervised};
use crate::qmp::Qmp;
use crate::rundir::{RunDir, VmRecord};
use crate::{kernel, AfterSnapshot, Engine, RestoreOptions, SnapshotInfo, Vm, VmExit};

mod manifest;
mod sha256;
mod snapshot;

pub use manifest::MANIFEST_FILE;
pub use snapshot::SnapshotError;

/// The kernel command line every guest gets: serial console, a reset
/// (which the VMM turns into an exit) on reboot or panic, and no boot-time
/// check that timer interrupts arrive in time (under software emulation on
/// a busy host they can be late, and the kernel would panic).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 no_timer_check";

/// The vsock context id of every guest (each VM has its own vsock device,
/// so they do not collide).
pub const GUEST_CID: u32 = 3;

const QEMU: &str = "qemu-system-x86_64";
const QEMU_INSTALL: &str = "apt-get install -y qemu-system-x86";
const VHOST_VSOCK: &str = "vhost-device-vsock";
const VHOST_VSOCK_INSTALL: &str = "cargo install vhost-device-vsock";

/// Boots guests under QEMU with software emulation.
#[derive(Debug, Clone)]
pub struct QemuEngine {
    qemu: PathBuf,
    run_base: PathBuf,
}

impl QemuEngine {
    /// An engine whose VMs keep their run directories under `run_base`.
    /// Fails, with the command that installs it, when QEMU is missing.
    pub fn new(run_base: impl Into<PathBuf>) -> Result<QemuEngine, EngineError> {
        Ok(QemuEngine {
            qemu: process::find_program(QEMU, QEMU_INSTALL)?,
            run_base: run_base.into(),
        })
    }
}

impl Engine for QemuEngine {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn boot(&self, config: &VmConfig) -> Result<Box<dyn Vm>, EngineError> {
        Ok(Box::new(QemuVm::boot(self, config)?))
    }

    fn restore(&self, dir: &Path, options: &RestoreOptions) -> Result<Box<dyn Vm>, EngineError> {
        Ok(Box::new(snapshot::restore(self, dir, options)?))
    }
}

/// A VM run by QEMU.
pub struct QemuVm {
    name: String,
    /// What it was started from (a restored VM: its snapshot's config).
    config: VmConfig,
    // Field order is drop order: QEMU stops before its vsock backend, and
    // the run directory goes last.
    qemu: Supervised,
    vhost: Option<Supervised>,
    agent: AgentEndpoint,
    serial_log: PathBuf,
    qemu_log: PathBuf,
    qmp_socket: PathBuf,
    exit: Option<VmExit>,
    run_dir: RunDir,
}

/// How QEMU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Boot the kernel.
    Boot,
    /// Wait, with vCPUs stopped, for a migration stream (`migrate-incoming`).
    Incoming,
}

impl QemuVm {
    fn boot(engine: &QemuEngine, config: &VmConfig) -> Result<QemuVm, EngineError> {
        QemuVm::start(engine, config, Launch::Boot)
    }

    /// Starts QEMU for `config`; boot and restore build the same machine.
    fn start(
        engine: &QemuEngine,
        config: &VmConfig,
        launch: Launch,
    ) -> Result<QemuVm, EngineError> {
        config.validate().map_err(EngineError::Config)?;
        kernel::probe(&config.kernel)?;
        if let Some(initrd) = &config.initrd {
            std::fs::File::open(initrd).map_err(|source| EngineError::Initrd {
                path: initrd.clone(),
                source,
            })?;
        }
        let vhost_bin = match config.agent_channel {
            AgentChannel::Vsock => Some(process::find_program(VHOST_VSOCK, VHOST_VSOCK_INSTALL)?),
            AgentChannel::Serial => None,
        };
        let run_dir = RunDir::create(&engine.run_base, &config.name)?;
        let serial_log = run_dir.join("serial.log");
        let qemu_log = run_dir.join("qemu.log");
        let qmp_socket = run_dir.join("qmp.sock");

        let mut args = base_args(config, &serial_log, &qmp_socket);
        let (vhost, agent) = match vhost_bin {
            Some(bin) => {
                let backend = run_dir.join("vhost-vsock.sock");
                let uds_path = run_dir.join("vsock.sock");
                let log = run_dir.join("vhost-vsock.log");
                let mut cmd = Command::new(bin);
                cmd.arg("--vm").arg(format!(
                    "guest-cid={GUEST_CID},socket={},uds-path={}",
                    backend.display(),
                    uds_path.display()
                ));
                redirect(&mut cmd, &log)?;
                let mut vhost = Supervised::spawn(cmd, true)?;
                process::wait_for_path(&backend, &mut vhost, &log, Duration::from_secs(10))?;
                args.extend(vsock_args(&backend));
                let agent = AgentEndpoint::Vsock {
                    uds_path,
                    port: AGENT_VSOCK_PORT,
                };
                (Some(vhost), agent)
            }
            None => {
                let socket = run_dir.join("agent.sock");
                args.extend(serial_agent_args(&socket));
                (None, AgentEndpoint::Serial { socket })
            }
        };

        if launch == Launch::Incoming {
            args.extend(["-S", "-incoming", "defer"].map(String::from));
        }
        let mut cmd = Command::new(&engine.qemu);
        cmd.args(&args);
        let terminal = config.console == Console::Terminal;
        if terminal {
            cmd.stdin(Stdio::inherit());
            cmd.stdout(Stdio::inherit());
            cmd.stderr(open_log(&qemu_log)?);
        } else {
            redirect(&mut cmd, &qemu_log)?;
        }
        // On a terminal QEMU must stay in our process group to read the tty.
        let qemu = Supervised::spawn(cmd, !terminal)?;
        let vm = QemuVm {
            name: config.name.clone(),
            config: config.clone(),
            qemu,
            vhost,
            agent,
            serial_log,
            qemu_log,
            qmp_socket,
            exit: None,
            run_dir,
        };
        vm.run_dir.write_record(&VmRecord {
            name: vm.name.clone(),
            engine: EngineKind::Qemu,
            owner_pid: std::process::id(),
            vmm_pid: vm.qemu.pid(),
            agent: vm.agent.clone(),
            serial_log: vm.serial_log.clone(),
            control_socket: vm.qmp_socket.clone(),
        })?;
        Ok(vm)
    }

    /// The tail of the serial log, and of QEMU's own log if it said anything.
    fn diagnostics(&self) -> String {
        let serial = log_tail(&self.serial_log, 25);
        let qemu = log_tail(&self.qemu_log, 10);
        match (serial.trim().is_empty(), qemu.trim().is_empty()) {
            (_, true) => serial,
            (true, false) => format!("(empty)\nQEMU said:\n{qemu}"),
            (false, false) => format!("{serial}\nQEMU said:\n{qemu}"),
        }
    }

    /// A QMP connection to the VM, which must not have exited.
    fn control(&self) -> Result<Qmp, EngineError> {
        if let Some(exit) = &self.exit {
            return Err(EngineError::State {
                operation: "control the VM",
                reason: format!("it has exited ({exit})"),
            });
        }
        Qmp::connect(&self.qmp_socket, Duration::from_secs(10))
    }

    fn qmp(&self, command: &str) -> Result<(), EngineError> {
        self.control()?.execute(command, None)?;
        Ok(())
    }

    /// Checks that the vsock backend still runs; a VM without it has no agent.
    fn check_vhost(&mut self) -> Result<(), EngineError> {
        if let Some(vhost) = self.vhost.as_mut() {
            if let Some(status) = vhost.try_wait() {
                return Err(EngineError::HelperExited {
                    program: vhost.program().into(),
                    status,
                    log_tail: log_tail(&self.run_dir.join("vhost-vsock.log"), 20),
                });
            }
        }
        Ok(())
    }
}

impl Vm for QemuVm {
    fn name(&self) -> &str {
        &self.name
    }

    fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    fn serial_log(&self) -> &Path {
        &self.serial_log
    }

    fn agent_endpoint(&self) -> &AgentEndpoint {
        &self.agent
    }

    fn wait_agent(&mut self, timeout: Duration) -> Result<HelloInfo, EngineError> {
        let endpoint = self.agent.clone();
        let waited = agent::wait_ready(&endpoint, timeout, || {
            if let Some(exit) = self.try_wait()? {
                return Err(EngineError::GuestExited {
                    status: exit.to_string(),
                    serial_tail: self.diagnostics(),
                });
            }
            self.check_vhost()
        })?;
        waited.map_err(|secs| EngineError::AgentTimeout {
            secs,
            serial_tail: self.diagnostics(),
        })
    }

    fn pause(&mut self) -> Result<(), EngineError> {
        self.qmp("stop")
    }

    fn resume(&mut self) -> Result<(), EngineError> {
        self.qmp("cont")
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, EngineError> {
        if self.exit.is_none() {
            self.exit = self.qemu.try_wait().map(|status| {
                // With -no-reboot QEMU exits 0 when the guest resets.
                if status == "exit status: 0" {
                    VmExit::GuestShutdown
                } else {
                    VmExit::Vmm(status)
                }
            });
        }
        Ok(self.exit.clone())
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<VmExit, EngineError> {
        crate::shutdown_through_agent(self, timeout)
    }

    fn snapshot(&mut self, dir: &Path, after: AfterSnapshot) -> Result<SnapshotInfo, EngineError> {
        snapshot::take(self, dir, after)
    }

    fn kill(&mut self) {
        self.qemu.stop(Duration::from_secs(2));
        if let Some(vhost) = self.vhost.as_mut() {
            vhost.stop(Duration::from_millis(500));
        }
        if self.exit.is_none() {
            self.exit = Some(VmExit::Vmm("killed".into()));
        }
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn base_args(config: &VmConfig, serial_log: &Path, qmp: &Path) -> Vec<String> {
    let mem = config.mem_mib;
    let mut cmdline = String::from(BASE_CMDLINE);
    if !config.extra_cmdline.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&config.extra_cmdline);
    }
    let console = match config.console {
        Console::LogOnly => format!("file,id=con0,path={}", serial_log.display()),
        Console::Terminal => format!("stdio,id=con0,signal=on,logfile={}", serial_log.display()),
    };
    let mut args: Vec<String> = [
        "-name",
        &config.name,
        "-M",
        "microvm,x-option-roms=off,rtc=off,acpi=off,memory-backend=mem",
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        &format!("{mem}M"),
        "-smp",
        &config.vcpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        &console,
        "-serial",
        "chardev:con0",
        "-qmp",
        &format!("unix:{},server=on,wait=off", qmp.display()),
        "-kernel",
        &config.kernel.display().to_string(),
        "-append",
        &cmdline,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(initrd) = &config.initrd {
        args.push("-initrd".into());
        args.push(initrd.display().to_string());
    }
    args
}

fn vsock_args(backend: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=vsock0,path={}", backend.display()),
        "-device".into(),
        // The backend, not the device, owns the guest CID.
        "vhost-user-vsock-device,chardev=vsock0".into(),
    ]
}

fn serial_agent_args(socket: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-device".into(),
        "-chardev".into(),
        format!(
            "socket,id=agent0,path={},server=on,wait=off",
            socket.display()
        ),
        "-device".into(),
        format!("virtserialport,chardev=agent0,name={AGENT_SERIAL_PORT_NAME}"),
    ]
}

fn open_log(path: &Path) -> Result<std::fs::File, EngineError> {
    std::fs::File::create(path).map_err(|source| EngineError::Spawn {
        program: format!("(log file {})", path.display()),
        source,
    })
}

fn redirect(cmd: &mut Command, log: &Path) -> Result<(), EngineError> {
    let out = open_log(log)?;
    let err = out.try_clone().map_err(|source| EngineError::Spawn {
        program: format!("(log file {})", log.display()),
        source,
    })?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_console_agent_and_no_reboot() {
        let mut config = VmConfig::new("t", "/k");
        config.initrd = Some("/i".into());
        config.extra_cmdline = "quiet".into();
        let mut args = base_args(
            &config,
            Path::new("/r/serial.log"),
            Path::new("/r/qmp.sock"),
        );
        args.extend(serial_agent_args(Path::new("/r/agent.sock")));
        let joined = args.join(" ");
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains(&format!("-append {BASE_CMDLINE} quiet")));
        assert!(joined.contains("-initrd /i"));
        assert!(joined.contains("file,id=con0,path=/r/serial.log"));
        assert!(joined.contains("name=org.crvmm.agent"));
        assert!(joined.contains("size=256M,share=on"));
    }
}
