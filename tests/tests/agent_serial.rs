//! The agent over virtio-serial, the channel that keeps a QEMU VM
//! migratable; and VM control (pause, resume, shutdown) through the engine.

use std::time::{Duration, Instant};

use crvmm_engine::{AgentChannel, VmExit};
use crvmm_protocol::ExecRequest;
use crvmm_tests::{unique_name, GuestImage, Sandbox};

#[test]
fn serial_channel_serves_the_agent() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let mut vm = sandbox.boot(&guest.config(&unique_name("serial"), AgentChannel::Serial));
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();
    assert_eq!(agent.hello().unwrap().transport, "serial");
    let out = agent.exec(ExecRequest::new(["uname", "-r"])).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), guest.release);
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    agent.write_file("/tmp/s", &data, None).unwrap();
    assert_eq!(agent.read_file("/tmp/s").unwrap(), data);

    // A second client after the first went away (the port has one host end).
    drop(agent);
    let mut again = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();
    assert!(again
        .exec(ExecRequest::new(["true"]))
        .unwrap()
        .status
        .success());
    drop(again);

    assert_eq!(
        vm.shutdown(Duration::from_secs(60)).unwrap(),
        VmExit::GuestShutdown
    );
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn pause_stops_the_guest_clock_and_resume_continues() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    // Serial: a request sent to a paused guest and then abandoned is
    // harmless there (see vsock_survives_pause_and_resume for vsock).
    let mut vm = sandbox.boot(&guest.config(&unique_name("pause"), AgentChannel::Serial));
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();
    // A guest process counts in a file; while paused it cannot advance.
    agent
        .exec(ExecRequest::new([
            "sh",
            "-c",
            "(i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; \
             sleep 0.05; done) >/dev/null 2>&1 &",
        ]))
        .unwrap();
    let read = |agent: &mut crvmm_engine::agent::AgentConnection| -> u64 {
        let raw = agent.read_file("/tmp/n").unwrap();
        let text = String::from_utf8_lossy(&raw);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("/tmp/n holds {text:?}"))
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = read(&mut agent);
    assert!(before > 0, "the counter runs");
    drop(agent);

    vm.pause().unwrap();
    // While paused the agent cannot answer at all.
    let mut paused = vm.agent_endpoint().connect(Duration::from_secs(2));
    let answered = paused.as_mut().map(|a| a.hello().is_ok()).unwrap_or(false);
    assert!(!answered, "a paused guest must not answer");
    drop(paused);
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));

    vm.resume().unwrap();
    vm.wait_agent(Duration::from_secs(60)).unwrap();
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();
    let after_resume = read(&mut agent);
    assert!(after_resume >= before, "the count is kept across the pause");
    // Poll: on a busy host the emulated guest can be slow to tick.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = read(&mut agent);
    while later <= after_resume {
        assert!(
            Instant::now() < deadline,
            "the counter does not go on after resume ({after_resume} -> {later})"
        );
        std::thread::sleep(Duration::from_millis(100));
        later = read(&mut agent);
    }
    assert!(paused_at.elapsed() >= Duration::from_secs(1));
    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}
