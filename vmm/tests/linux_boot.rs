//! Our guest kernel under crvmm's own VMM on this host's KVM (slow: about a
//! minute on a nested PVM host, where everything before interrupts are on
//! is emulated).
//!
//! On a nested PVM host a Linux user space cannot run, so the test follows
//! the kernel to the hand-over to init and checks what the kernel itself
//! did: its serial console, the virtio-mmio vsock device driven to
//! DRIVER_OK, `Run /init`, and a clean end through the i8042 reset line
//! after init dies. On a host that can run user space it also checks that
//! the guest agent answers over vsock.

use std::time::{Duration, Instant};

use crvmm_vmm::api::{self, ApiRequest, ApiResponse, RunState};
use crvmm_vmm::host::HostKvm;
use crvmm_vmm::runtime::{Vmm, VmmConfig};
use crvmm_vmm::vcpus::ExitReason;

mod common;
use common::{guest_file, temp_dir};

const DRIVER_OK: u32 = 4;

/// About 2 minutes on an idle nested-PVM host, several times that on a busy
/// one (everything before interrupts are on is emulated).
const LINUX_BOOT_TIMEOUT: Duration = Duration::from_secs(600);

fn wait_for(log: &std::path::Path, needle: &str, deadline: Instant) -> String {
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the serial log; last lines (newest first):\n{tail}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn linux_boots_to_init_with_console_and_vsock() {
    let dir = temp_dir("linux");
    let host = HostKvm::probe();
    // Unpacking the full initramfs alone takes minutes under a nested PVM
    // host's emulation, and its agent could not run there anyway.
    let initrd = if host.nested_pvm {
        guest_file("init-only.cpio")
    } else {
        guest_file("initramfs.cpio.gz")
    };
    let config = VmmConfig {
        vcpus: 2,
        initrd: Some(initrd),
        ..VmmConfig::new(guest_file("vmlinux"), &dir)
    };
    let log = config.serial_log.clone();
    let api_path = dir.join("api.sock");
    let vmm_config = config.clone();
    let vmm = std::thread::spawn(move || {
        let mut vmm = Vmm::new(&vmm_config).expect("building the VM");
        vmm.run().expect("running the VM")
    });

    // The vsock driver probes before init runs: watch the device reach
    // DRIVER_OK through the control API while the kernel boots.
    let deadline = Instant::now() + LINUX_BOOT_TIMEOUT;
    loop {
        let status = api::call(&api_path, &ApiRequest::Status, Duration::from_secs(10));
        if let Ok(ApiResponse::Ok {
            state,
            vsock_status,
            ..
        }) = &status
        {
            assert_eq!(*state, RunState::Running);
            if vsock_status.expect("the VM has a vsock device") & DRIVER_OK != 0 {
                break;
            }
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the guest's virtio-vsock driver never reached DRIVER_OK ({status:?}); log:\n{tail}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = wait_for(&log, "Run /init as init process", deadline);
    assert!(
        text.contains("console [ttyS0] enabled"),
        "the serial console never came up"
    );
    assert!(
        text.contains(
            "virtio-mmio: Registering device virtio-mmio.0 at 0xd0000000-0xd0000fff, IRQ 5"
        ),
        "{text}"
    );
    assert!(text.contains("Brought up 1 node, 2 CPUs"), "SMP: {text}");

    if host.nested_pvm {
        let reason = vmm.join().unwrap();
        assert_eq!(
            reason,
            ExitReason::GuestShutdown,
            "the guest must end through the i8042 reset"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("Kernel panic") || text.contains("segfault"),
            "{text}"
        );
    } else {
        let mut agent = crvmm_vmm_agent(&dir);
        assert!(agent.hello().unwrap().kernel_release.ends_with("-crvmm"));
        let r = api::call(&api_path, &ApiRequest::Shutdown, Duration::from_secs(10)).unwrap();
        assert!(matches!(r, ApiResponse::Ok { .. }));
        assert_eq!(vmm.join().unwrap(), ExitReason::Stopped);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The agent over crvmm's vsock device, through the Firecracker protocol.
fn crvmm_vmm_agent(
    dir: &std::path::Path,
) -> crvmm_protocol::AgentClient<std::os::unix::net::UnixStream> {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut s = std::os::unix::net::UnixStream::connect(dir.join("vsock.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"CONNECT 1024\n").unwrap();
        let mut line = String::new();
        let ok = BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .is_ok();
        if ok && line.starts_with("OK ") {
            return crvmm_protocol::AgentClient::new(s);
        }
        assert!(
            Instant::now() < deadline,
            "the agent never accepted a vsock connection"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
