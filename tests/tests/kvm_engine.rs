//! crvmm's own VMM behind the engine interface: boot, the run-directory
//! record, control through the API from the record (as another `crvmm`
//! process would), and teardown that leaves nothing behind. On a host that
//! can run a Linux user space, the guest agent is exercised too.

use std::time::Duration;

use crvmm_engine::rundir;
use crvmm_engine::{remote, AgentChannel, Engine, EngineKind};
use crvmm_protocol::ExecRequest;
use crvmm_tests::{unique_name, GuestImage, Sandbox, AGENT_TIMEOUT};

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
