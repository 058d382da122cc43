//! crvmm's own VMM behind the engine interface: boot, the run-directory
//! record, control through the API from the record (as another `crvmm`
//! process would), and teardown that leaves nothing behind. On a host that
//! can run a Linux user space, the guest agent is exercised too.

use std::time::Duration;

use crvmm_engine::rundir;
use crvmm_engine::{
    remote, AfterSnapshot, AgentChannel, Engine, EngineKind, RestoreOptions, VmExit,
};
use crvmm_protocol::ExecRequest;
use crvmm_tests::{
    unique_name, wait_for_text, GuestImage, Sandbox, AGENT_TIMEOUT, LINUX_BOOT_TIMEOUT,
};

#[test]
fn kvm_vm_is_controlled_through_its_record_and_cleaned_up() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let engine = sandbox.kvm();
    let name = unique_name("kvm");
    let mut vm = engine
        .boot(&guest.config(&name, AgentChannel::Vsock))
        .unwrap();

    let record = rundir::find(sandbox.base(), &name).unwrap();
    assert_eq!(record.engine, EngineKind::Kvm);
    assert_eq!(record.owner_pid, std::process::id());
    assert!(record.control_socket.exists());
    assert_eq!(remote::status(&record).unwrap(), "running");
    remote::pause(&record).unwrap();
    assert_eq!(remote::status(&record).unwrap(), "paused");
    remote::resume(&record).unwrap();
    assert_eq!(remote::status(&record).unwrap(), "running");
    vm.pause().unwrap();
    assert_eq!(remote::status(&record).unwrap(), "paused");
    vm.resume().unwrap();

    if engine.host().linux_guest_support().is_ok() {
        vm.wait_agent(AGENT_TIMEOUT).unwrap();
        let mut agent = vm
            .agent_endpoint()
            .connect(Duration::from_secs(30))
            .unwrap();
        let out = agent.exec(ExecRequest::new(["uname", "-r"])).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), guest.release);
    }
    assert!(vm.try_wait().unwrap().is_none(), "the VM still runs");
    drop(vm);
    sandbox.assert_clean();
    assert!(rundir::find(sandbox.base(), &name).is_err());
}

#[test]
fn kvm_engine_refuses_bad_kernels_before_building() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let mut config = guest.config("kvm-bad", AgentChannel::Vsock);
    config.kernel = "/etc/hostname".into();
    let err = sandbox.kvm().boot(&config).err().expect("not a kernel");
    assert!(format!("{err:?}").contains("NotAKernel"), "{err:?}");
    sandbox.assert_clean();
}

#[test]
fn linux_snapshotted_mid_boot_goes_on_to_init_after_restore() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let engine = sandbox.kvm();
    let mut config = guest.config(&unique_name("midboot"), AgentChannel::Vsock);
    if engine.host().nested_pvm {
        // The full initramfs takes minutes to unpack there (see docs/kvm-engine.md).
        config.initrd = Some(guest.init_only.clone());
    }
    let mut vm = engine.boot(&config).unwrap();
    let text = wait_for_text(vm.serial_log(), "smp: Brought up", LINUX_BOOT_TIMEOUT);
    assert!(
        !text.contains("Run /init"),
        "the snapshot must be taken mid-boot"
    );
    let snap = sandbox.base().join("midboot.snap");
    let info = vm.snapshot(&snap, AfterSnapshot::Exit).unwrap();
    assert!(info.bytes >= u64::from(config.mem_mib) << 20);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while vm.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VM did not end after its snapshot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vm.try_wait().unwrap(), Some(VmExit::Stopped));
    drop(vm);

    let options = RestoreOptions::new(unique_name("restored"));
    let restored = engine.restore(&snap, &options).unwrap();
    let text = wait_for_text(
        restored.serial_log(),
        "Run /init as init process",
        LINUX_BOOT_TIMEOUT,
    );
    assert!(
        !text.contains("Linux version"),
        "the restored guest went on, it did not boot again"
    );
    drop(restored);
    std::fs::remove_dir_all(&snap).unwrap();
    sandbox.assert_clean();
}

#[test]
fn broken_kvm_snapshots_fail_restore_before_anything_starts() {
    let sandbox = Sandbox::new();
    let engine = sandbox.kvm();
    let dir = sandbox.base().join("empty.snap");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("state"), b"CRVMSNAP garbage").unwrap();
    let options = RestoreOptions::new("broken");
    let err = engine
        .restore(&dir, &options)
        .err()
        .expect("garbage must be refused");
    assert!(
        format!("{err}").contains("invalid VM configuration")
            || format!("{err:?}").contains("state"),
        "{err:?}"
    );
    assert!(
        rundir::find(sandbox.base(), "broken").is_err(),
        "nothing was started"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    sandbox.assert_clean();
}
