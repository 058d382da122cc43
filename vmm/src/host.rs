//! What this host's KVM can do, read without creating a VM.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `KVM_GET_API_VERSION`, `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version there has ever been.
const KVM_API_VERSION: i32 = 12;

/// The state of `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmDevice {
    /// No `/dev/kvm`: the host has no KVM module loaded or no virtualization.
    Missing,
    /// It exists but cannot be opened read-write.
    NoAccess(String),
    /// It answered `KVM_GET_API_VERSION` with an unexpected version.
    WrongApi(i32),
    /// Usable.
    Available,
}

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKvm {
    /// The state of `/dev/kvm`.
    pub device: KvmDevice,
    /// True when KVM is the nested PVM hypervisor (`kvm_pvm` module): it runs
    /// small guest payloads but faults on a Linux guest's first system call.
    pub nested_pvm: bool,
}

impl HostKvm {
    /// Probes `/dev/kvm` and `/sys/module/kvm_pvm`.
    pub fn probe() -> HostKvm {
        Self::probe_at(Path::new("/dev/kvm"), Path::new("/sys/module"))
    }

    /// Probes with other paths (for tests).
    pub fn probe_at(dev_kvm: &Path, sys_module: &Path) -> HostKvm {
        HostKvm {
            device: probe_device(dev_kvm),
            nested_pvm: sys_module.join("kvm_pvm").exists(),
        }
    }

    /// `Ok` when a Linux guest with a user space can run on this KVM;
    /// otherwise one sentence saying why not.
    pub fn linux_guest_support(&self) -> Result<(), String> {
        match &self.device {
            KvmDevice::Missing => Err("this host has no /dev/kvm".into()),
            KvmDevice::NoAccess(e) => Err(format!("/dev/kvm cannot be opened ({e})")),
            KvmDevice::WrongApi(v) => Err(format!("/dev/kvm speaks KVM API {v}, not 12")),
            KvmDevice::Available if self.nested_pvm => Err(
                "this host's /dev/kvm is the nested PVM hypervisor (kvm_pvm), which runs small \
                 guest payloads but not a Linux user space"
                    .into(),
            ),
            KvmDevice::Available => Ok(()),
        }
    }
}

fn probe_device(path: &Path) -> KvmDevice {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return KvmDevice::Missing,
        Err(e) => return KvmDevice::NoAccess(e.to_string()),
    };
    // SAFETY: the fd is open for the duration of the call and
    // KVM_GET_API_VERSION takes no argument and writes no memory.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version == KVM_API_VERSION {
        KvmDevice::Available
    } else {
        KvmDevice::WrongApi(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_reported() {
        let dir = std::env::temp_dir();
        let host = HostKvm::probe_at(Path::new("/nonexistent/kvm"), &dir);
        assert_eq!(host.device, KvmDevice::Missing);
        assert!(host
            .linux_guest_support()
            .unwrap_err()
            .contains("no /dev/kvm"));
    }

    #[test]
    fn a_file_that_is_not_kvm_fails_the_api_check() {
        let file = std::env::temp_dir().join(format!("crvmm-fake-kvm-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let host = HostKvm::probe_at(&file, Path::new("/nonexistent"));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(host.device, KvmDevice::WrongApi(-1)));
    }

    #[test]
    fn nested_pvm_is_detected_from_sysfs() {
        let sys = tempfile_dir();
        std::fs::create_dir(sys.join("kvm_pvm")).unwrap();
        let host = HostKvm {
            device: KvmDevice::Available,
            nested_pvm: HostKvm::probe_at(Path::new("/nonexistent"), &sys).nested_pvm,
        };
        std::fs::remove_dir_all(&sys).unwrap();
        assert!(host.nested_pvm);
        assert!(host.linux_guest_support().unwrap_err().contains("kvm_pvm"));
    }

    #[test]
    fn this_host_probe_is_consistent() {
        let host = HostKvm::probe();
        let pvm_on_disk = Path::new("/sys/module/kvm_pvm").exists();
        assert_eq!(host.nested_pvm, pvm_on_disk);
        if Path::new("/dev/kvm").exists() && host.device == KvmDevice::Available {
            assert_eq!(host.linux_guest_support().is_ok(), !pvm_on_disk);
        }
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "crvmm-sys-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
