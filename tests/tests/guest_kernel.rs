//! The guest runs our kernel, with our options and patches, and the agent
//! set the guest up as PID 1 should.

use std::io::Read;
use std::time::Duration;

use crvmm_engine::AgentChannel;
use crvmm_protocol::ExecRequest;
use crvmm_tests::{unique_name, GuestImage, Sandbox};

fn run(agent: &mut crvmm_engine::agent::AgentConnection, script: &str) -> String {
    let out = agent.exec(ExecRequest::new(["sh", "-c", script])).unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn guest_runs_our_kernel_with_our_options_and_patches() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let mut config = guest.config(&unique_name("kernel"), AgentChannel::Vsock);
    config.vcpus = 2;
    let vm = sandbox.boot(&config);
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();

    let hello = agent.hello().unwrap();
    assert_eq!(hello.kernel_release, guest.release);
    assert!(
        guest.release.ends_with("-crvmm"),
        "release {:?}",
        guest.release
    );

    // The embedded config is the one we built with.
    let config_gz = agent.read_file("/proc/config.gz").unwrap();
    let mut text = String::new();
    flate_decode(&config_gz).read_to_string(&mut text).unwrap();
    for option in [
        "CONFIG_CHECKPOINT_RESTORE=y",
        "CONFIG_KERNEL_CR=y",
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_VIRTIO_CONSOLE=y",
        "CONFIG_USER_NS=y",
        "CONFIG_PID_NS=y",
        "CONFIG_CGROUPS=y",
        "CONFIG_MEMCG=y",
        "CONFIG_PVH=y",
    ] {
        assert!(
            text.lines().any(|l| l == option),
            "{option} missing from /proc/config.gz"
        );
    }

    // Our patch series is in: its sysfs node answers.
    assert_eq!(
        run(&mut agent, "cat /sys/kernel/checkpoint/format_version"),
        format!("{}\n", crvmm_cr_image::format::FORMAT_VERSION)
    );

    // PID 1 duties: file systems mounted, cgroup v2 with the freezer.
    let mounts = run(&mut agent, "cat /proc/mounts");
    for fs in [
        "proc /proc",
        "sysfs /sys",
        "devtmpfs /dev",
        "cgroup2 /sys/fs/cgroup",
        "tmpfs /tmp",
    ] {
        assert!(mounts.contains(fs), "{fs} not mounted:\n{mounts}");
    }
    let frozen = run(
        &mut agent,
        "mkdir /sys/fs/cgroup/t || exit 1; sleep 100 & pid=$!; \
         echo $pid > /sys/fs/cgroup/t/cgroup.procs || exit 1; \
         echo 1 > /sys/fs/cgroup/t/cgroup.freeze; \
         for i in $(seq 100); do grep -q 'frozen 1' /sys/fs/cgroup/t/cgroup.events && break; sleep 0.1; done; \
         cat /sys/fs/cgroup/t/cgroup.events; \
         grep State /proc/$pid/status; kill -9 $pid",
    );
    assert!(
        frozen.contains("frozen 1"),
        "cgroup freezer did not freeze:\n{frozen}"
    );

    // Namespaces a container needs, the user namespace included.
    let ns = run(
        &mut agent,
        "unshare -r -p -f -m -u -i -n sh -c 'hostname inside; hostname; id -u; echo $$'",
    );
    assert_eq!(ns, "inside\n0\n1\n", "user, pid and uts namespaces");
    assert_eq!(run(&mut agent, "nproc"), "2\n");
    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

#[test]
fn bzimage_boots_too() {
    let sandbox = Sandbox::new();
    let guest = GuestImage::get();
    let mut config = guest.config(&unique_name("bz"), AgentChannel::Vsock);
    config.kernel = guest.bzimage.clone();
    let vm = sandbox.boot(&config);
    let mut agent = vm
        .agent_endpoint()
        .connect(Duration::from_secs(30))
        .unwrap();
    assert_eq!(agent.hello().unwrap().kernel_release, guest.release);
    drop(agent);
    drop(vm);
    sandbox.assert_clean();
}

/// Decompresses gzip with the host's gzip (no extra crate for one test).
fn flate_decode(data: &[u8]) -> std::io::Cursor<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "gzip -dc failed");
    std::io::Cursor::new(out.stdout)
}
