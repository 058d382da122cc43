//! Bad input and misbehaving guests give clear errors and leave nothing
//! behind.

use std::time::{Duration, Instant};

use crvmm_engine::{AgentChannel, Engine, EngineError, VmConfig};
use crvmm_tests::{unique_name, GuestImage, Sandbox};

#[test]
fn missing_or_non_kernel_files_are_refused() {
    let sandbox = Sandbox::new();
    let engine = sandbox.qemu();
    let err = engine
        .boot(&VmConfig::new("k1", "/no/such/vmlinux"))
        .err()
        .expect("a missing kernel must fail");
    assert!(matches!(err, EngineError::Kernel(_)));
    assert!(format!("{:?}", err).contains("/no/such/vmlinux"));

    let not_kernel = sandbox.base().join("notes.txt");
    std::fs::write(&not_kernel, "just some text\n").unwrap();
    let err = engine
        .boot(&VmConfig::new("k2", &not_kernel))
        .err()
        .unwrap();
    assert!(std::error::Error::source(&err)
        .unwrap()
        .to_string()
        .contains("is not a Linux kernel"));
    std::fs::remove_file(&not_kernel).unwrap();

    // A truncated vmlinux is refused before QEMU is started.
    let guest = GuestImage::get();
    let truncated = sandbox.base().join("vmlinux.cut");
    let bytes = std::fs::read(&guest.vmlinux).unwrap();
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let err = engine.boot(&VmConfig::new("k3", &truncated)).err().unwrap();
    assert!(matches!(err, EngineError::Kernel(_)), "{err:?}");
    std::fs::remove_file(&truncated).unwrap();

    let mut config = guest.config("k4", AgentChannel::Vsock);
    config.initrd = Some("/no/such/initrd".into());
    assert!(matches!(
        engine.boot(&config).err().unwrap(),
        EngineError::Initrd { .. }
    ));
    sandbox.assert_clean();
}

#[test]
fn guest_that_never_answers_times_out_with_the_serial_log() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    // Boot a shell as init instead of the agent: the guest runs, silent.
    let mut config = guest.config(&unique_name("silent"), AgentChannel::Vsock);
    config.extra_cmdline = "rdinit=/bin/sh".into();
    let mut vm = sandbox.qemu().boot(&config).unwrap();
    let started = Instant::now();
    let err = vm.wait_agent(Duration::from_secs(15)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let msg = err.to_string();
    assert!(matches!(err, EngineError::AgentTimeout { .. }), "{msg}");
    assert!(
        msg.contains("Run /bin/sh as init process"),
        "no serial tail in: {msg}"
    );
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn guest_that_dies_at_boot_is_reported_at_once() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    // No initramfs: the kernel cannot find a root file system and panics.
    let mut config = guest.config(&unique_name("panic"), AgentChannel::Serial);
    config.initrd = None;
    let mut vm = sandbox.qemu().boot(&config).unwrap();
    let started = Instant::now();
    let err = vm.wait_agent(Duration::from_secs(120)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::GuestExited { .. }), "{msg}");
    assert!(
        msg.contains("Kernel panic"),
        "no panic in the serial tail: {msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "noticed long after the exit"
    );
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn name_in_use_is_refused() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let name = unique_name("dup");
    let vm = sandbox.boot(&guest.config(&name, AgentChannel::Serial));
    let err = sandbox
        .qemu()
        .boot(&guest.config(&name, AgentChannel::Serial))
        .err()
        .unwrap();
    assert!(format!("{err:?}").contains("InUse"), "{err:?}");
    drop(vm);
    sandbox.assert_clean();
}
