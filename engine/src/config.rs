//! What a VM is made of, independent of the engine that runs it.

use std::path::PathBuf;

/// Which engine runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// QEMU with software emulation (TCG): runs anywhere, slower.
    Qemu,
    /// crvmm's own VMM on /dev/kvm.
    Kvm,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` honours width and alignment, so tables line up.
        f.pad(match self {
            EngineKind::Qemu => "qemu",
            EngineKind::Kvm => "kvm",
        })
    }
}

/// The channel the host uses to reach the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentChannel {
    /// virtio-vsock; host side is Firecracker's Unix-socket protocol.
    Vsock,
    /// A virtio-serial port; keeps a QEMU VM migratable (snapshottable).
    Serial,
}

/// Where the guest's serial console goes. It is always also logged to the
/// run directory's `serial.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Only to the log file.
    LogOnly,
    /// To this process's terminal as well (input too).
    Terminal,
}

/// A VM to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The VM's name: letters, digits, `-` and `_`; names its run directory.
    pub name: String,
    /// ELF `vmlinux` (with a PVH note) or `bzImage`.
    pub kernel: PathBuf,
    /// Initramfs (cpio, optionally compressed).
    pub initrd: Option<PathBuf>,
    /// Appended to the engine's base kernel command line.
    pub extra_cmdline: String,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// How the host reaches the agent.
    pub agent_channel: AgentChannel,
    /// Where the serial console goes.
    pub console: Console,
}

impl VmConfig {
    /// A config with the defaults for `kernel`: 256 MiB, 1 vCPU, vsock, the
    /// console logged only.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            name: name.into(),
            kernel: kernel.into(),
            initrd: None,
            extra_cmdline: String::new(),
            mem_mib: 256,
            vcpus: 1,
            agent_channel: AgentChannel::Vsock,
            console: Console::LogOnly,
        }
    }

    /// Checks the values that do not depend on the engine.
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=65536).contains(&self.mem_mib) {
            return Err(format!(
                "memory of {} MiB is outside 16..=65536",
                self.mem_mib
            ));
        }
        if !(1..=64).contains(&self.vcpus) {
            return Err(format!("{} vCPUs is outside 1..=64", self.vcpus));
        }
        if self.extra_cmdline.contains('\n') {
            return Err("the kernel command line may not contain a newline".into());
        }
        crate::rundir::validate_name(&self.name).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(VmConfig::new("a", "/k").validate(), Ok(()));
    }

    #[test]
    fn rejects_out_of_range_values() {
        let mut c = VmConfig::new("a", "/k");
        c.mem_mib = 8;
        assert!(c.validate().unwrap_err().contains("8 MiB"));
        let mut c = VmConfig::new("a", "/k");
        c.vcpus = 0;
        assert!(c.validate().unwrap_err().contains("vCPUs"));
        let c = VmConfig::new("../etc", "/k");
        assert!(c.validate().is_err());
    }
}
