//! Shared harness for tests that boot real guests: finds the guest
//! artifacts, boots VMs in private run directories, and checks that nothing
//! is left behind.
//!
//! The artifacts come from `scripts/build-guest.sh` (which `make test` runs
//! first) and are found in `target/guest/`, or in `$CRVMM_GUEST_DIR`. A test
//! that cannot find them fails and says how to build them: it never skips.

pub mod bench;
pub mod cli;
pub mod cr;
pub mod ct;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crvmm_engine::qemu::QemuEngine;
use crvmm_engine::{AgentChannel, Engine, Vm, VmConfig};

/// How long a test waits for a guest agent (TCG boots in about a second,
/// but a loaded CI machine can be much slower).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a test follows a Linux boot under crvmm's KVM engine on a
/// nested PVM host, where it is emulated: about 2 minutes on an idle
/// machine, several times that on a busy one.
pub const LINUX_BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// The guest kernel and initramfs under test.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// ELF vmlinux with PVH note.
    pub vmlinux: PathBuf,
    /// bzImage of the same build.
    pub bzimage: PathBuf,
    /// The initramfs with the agent as /init.
    pub initramfs: PathBuf,
    /// An initramfs whose `/init` exits at once.
    pub init_only: PathBuf,
    /// The kernel release string the build reported.
    pub release: String,
}

impl GuestImage {
    /// Locates the built guest, or panics with the command that builds it.
    pub fn get() -> GuestImage {
        let dir = std::env::var_os("CRVMM_GUEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/guest"));
        let file = |name: &str| {
            let path = dir.join(name);
            assert!(
                path.exists(),
                "{} is missing: build the guest first with scripts/build-guest.sh (or `make test`)",
                path.display()
            );
            path
        };
        let release = std::fs::read_to_string(file("release"))
            .expect("reading the guest's release file")
            .trim()
            .to_owned();
        GuestImage {
            vmlinux: file("vmlinux"),
            bzimage: file("bzImage"),
            initramfs: file("initramfs.cpio.gz"),
            init_only: file("init-only.cpio"),
            release,
        }
    }

    /// A VM config for this guest named `name`. It boots the ELF vmlinux,
    /// or the bzImage if `$CRVMM_GUEST_KERNEL` is `bzImage` (the debug
    /// variant's KASAN vmlinux does not boot by PVH under QEMU).
    pub fn config(&self, name: &str, channel: AgentChannel) -> VmConfig {
        let kernel = match std::env::var("CRVMM_GUEST_KERNEL").as_deref() {
            Ok("bzImage") => &self.bzimage,
            _ => &self.vmlinux,
        };
        VmConfig {
            initrd: Some(self.initramfs.clone()),
            agent_channel: channel,
            ..VmConfig::new(name, kernel)
        }
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_owned()
}

/// A private run-directory base, so parallel tests never collide and the
/// leak check can look for anything that still refers to it.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A new, empty base under /tmp (short, for Unix socket paths).
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("crvmm-t")
                .tempdir_in("/tmp")
                .expect("creating a run-directory base"),
        }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// A QEMU engine whose VMs live in this sandbox.
    pub fn qemu(&self) -> QemuEngine {
        QemuEngine::new(self.base()).expect("QEMU must be installed (make test installs it)")
    }

    /// crvmm's own KVM engine, its VMs in this sandbox.
    pub fn kvm(&self) -> crvmm_engine::kvm::KvmEngine {
        crvmm_engine::kvm::KvmEngine::new(self.base()).expect("/dev/kvm must be usable")
    }

    /// Boots `config` under QEMU and waits for its agent.
    ///
    /// A guest whose agent does not come up is booted once more, with a
    /// warning and its serial log on stderr: rarely (seen twice in a few
    /// hundred boots, on a loaded host) a TCG guest stops printing during
    /// its early device set-up, before any of our user space runs, and
    /// that must not fail a test about something else. A second failure
    /// fails the test.
    pub fn boot(&self, config: &VmConfig) -> Box<dyn Vm> {
        let mut vm = self.qemu().boot(config).expect("booting the guest");
        if let Err(e) = vm.wait_agent(AGENT_TIMEOUT) {
            eprintln!(
                "warning: the agent of {} did not come up ({e}); booting it once more",
                config.name
            );
            vm.kill();
            drop(vm);
            vm = self.qemu().boot(config).expect("booting the guest again");
            if let Err(e) = vm.wait_agent(AGENT_TIMEOUT) {
                panic!("the agent of {} did not come up, twice: {e}", config.name);
            }
        }
        vm
    }

    /// Asserts that no process refers to this sandbox and no file is left
    /// in it: every VMM, vsock backend, socket and log is gone.
    pub fn assert_clean(&self) {
        let procs = processes_mentioning(self.base());
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let left: Vec<_> = std::fs::read_dir(self.base())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "files left behind: {left:?}");
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Processes (pid, command line) whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

/// A VM name unique within the test binary.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Waits until the file at `path` contains `needle`; returns its text.
/// Panics with the file's last lines after `timeout`.
pub fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return text;
        }
        if std::time::Instant::now() >= deadline {
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            panic!(
                "{needle:?} never appeared in {}; last lines, newest first:\n{}",
                path.display(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
