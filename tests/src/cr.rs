//! A checkpoint/restart lab in a guest: runs the test programs of
//! `resources/programs/` (`cr_target`, `cr_threads`, `cr_signals`, `cr_files`,
//! `cr_dump`, `cr_restart`, `cr_mangle`, `zstdpipe`) through the agent and
//! reads their results.
//!
//! A target (`cr_target`, `cr_threads`, `cr_signals` or `cr_files` `<dir>`) keeps a
//! counter in `<dir>/state` ("count N") and, on SIGUSR1, checks all of its
//! own state and writes "PASS N" or "FAIL what" to `<dir>/verdict`. A
//! target is named by its directory, which is also in its (restored)
//! command line, so it is found again after a restart.

use std::time::{Duration, Instant};

use crvmm_engine::agent::AgentConnection;
use crvmm_engine::{AgentChannel, Vm};
use crvmm_protocol::{ExecOutput, ExecRequest};

use crate::{GuestImage, Sandbox};

/// Shell functions every lab script can use.
const PRELUDE: &str = r#"
P=/usr/lib/crvmm/programs
CG=/sys/fs/cgroup
# tpid DIR: the pid of the live target whose arguments name DIR.
tpid() {
	for q in $(pidof cr_target cr_threads cr_signals cr_files); do
		if tr '\0' ' ' </proc/$q/cmdline 2>/dev/null | grep -q " $1 "; then
			echo $q
			return
		fi
	done
}
"#;

/// How long a step in the guest may take on a slow, shared host (TCG).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// A booted guest and a connection to its agent.
pub struct CrLab {
    /// The VM (shut down on drop).
    pub vm: Box<dyn Vm>,
    /// Its agent.
    pub agent: AgentConnection,
}

impl CrLab {
    /// Boots a guest with two vCPUs and `mem_mib` of memory.
    pub fn boot(sandbox: &Sandbox, name: &str, mem_mib: u32) -> CrLab {
        let guest = GuestImage::get();
        let mut config = guest.config(name, AgentChannel::Vsock);
        config.vcpus = 2;
        config.mem_mib = mem_mib;
        let vm = sandbox.boot(&config);
        let agent = vm
            .agent_endpoint()
            .connect(Duration::from_secs(30))
            .expect("connecting to the agent");
        CrLab { vm, agent }
    }

    /// Runs `script` with the prelude under `sh -c`; any exit status.
    pub fn sh(&mut self, script: &str) -> ExecOutput {
        let full = format!("{PRELUDE}\n{script}");
        self.agent
            .exec(ExecRequest::new(["sh", "-c", &full]))
            .unwrap_or_else(|e| panic!("agent exec of `{script}`: {e}"))
    }

    /// Runs `script`, which must succeed; returns its standard output.
    pub fn sh_ok(&mut self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `cr_target DIR MIB [mode]` (mode `shared`, `noaltstack` or
    /// empty) in cgroup `CG/cgroup` (created if needed) and waits until it
    /// counts; returns its pid.
    pub fn start_target(&mut self, dir: &str, mib: u32, cgroup: &str, mode: &str) -> u32 {
        let args = format!("{dir} {mib} {mode}");
        self.start_program("cr_target", &args, dir, cgroup)
    }

    /// Starts test program `program` with `args` (which name its `dir`) in
    /// cgroup `CG/cgroup` (created if needed) and waits until it counts;
    /// returns its pid.
    pub fn start_program(&mut self, program: &str, args: &str, dir: &str, cgroup: &str) -> u32 {
        self.sh_ok(&format!(
            "mkdir -p $CG/{cgroup} && rm -rf {dir} && \
             sh -c 'echo $$ > '$CG/{cgroup}'/cgroup.procs; exec '$P'/{program} {args}' \
             </dev/null >/dev/null 2>&1 &"
        ));
        self.wait_count_above(dir, 0);
        self.target_pid(dir)
            .unwrap_or_else(|| panic!("no {program} for {dir} is running"))
    }

    /// The pid of the live target of `dir`, if any.
    pub fn target_pid(&mut self, dir: &str) -> Option<u32> {
        self.sh_ok(&format!("tpid {dir}")).trim().parse().ok()
    }

    /// The target's last count ("count N" in `DIR/state`), if written yet.
    pub fn count(&mut self, dir: &str) -> Option<u64> {
        let state = self.agent.read_file(&format!("{dir}/state")).ok()?;
        let text = String::from_utf8_lossy(&state);
        text.trim().strip_prefix("count ")?.parse().ok()
    }

    /// Waits until the count of `dir` exceeds `n`; returns it.
    pub fn wait_count_above(&mut self, dir: &str, n: u64) -> u64 {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match self.count(dir) {
                Some(c) if c > n => return c,
                last if Instant::now() >= deadline => {
                    let log = self.sh("cat /tmp/*.log 2>/dev/null; dmesg | tail -20");
                    panic!(
                        "{dir}: count never went above {n} (last {last:?});\n{}",
                        String::from_utf8_lossy(&log.stdout)
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Asks the target of `dir` to check itself; returns its verdict
    /// ("PASS N" or "FAIL what").
    pub fn verify(&mut self, dir: &str) -> String {
        let pid = self
            .target_pid(dir)
            .unwrap_or_else(|| panic!("no cr_target for {dir} to verify"));
        self.sh_ok(&format!("rm -f {dir}/verdict && kill -USR1 {pid}"));
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Ok(v) = self.agent.read_file(&format!("{dir}/verdict")) {
                let v = String::from_utf8_lossy(&v).trim().to_owned();
                if !v.is_empty() {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "{dir}: no verdict from {pid}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a target of `dir` runs as a process other than `old`.
    pub fn wait_restarted(&mut self, dir: &str, old: u32) -> u32 {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match self.target_pid(dir) {
                Some(p) if p != old => return p,
                _ if Instant::now() >= deadline => {
                    let log = self.sh("cat /tmp/*.log 2>/dev/null");
                    panic!(
                        "{dir} was not restarted;\n{}",
                        String::from_utf8_lossy(&log.stdout)
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kills the target of `dir` and waits until it is gone.
    pub fn kill_target(&mut self, dir: &str) {
        self.sh_ok(&format!(
            "p=$(tpid {dir}); [ -z \"$p\" ] || kill -9 $p; \
             while [ -n \"$(tpid {dir})\" ]; do sleep 0.1; done"
        ));
    }

    /// Waits until the file `path` in the guest exists; returns its text.
    pub fn wait_file(&mut self, path: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Ok(bytes) = self.agent.read_file(path) {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
            assert!(Instant::now() < deadline, "{path} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that the guest kernel reported no problem: no BUG, WARNING,
    /// oops or KASAN report in its log, and, on a kernel with kmemleak (the
    /// debug variant), no unreferenced object after two scans.
    pub fn assert_kernel_clean(&mut self) {
        let log = self.sh_ok("dmesg");
        let bad = kernel_problems(&log);
        assert!(
            bad.is_empty(),
            "the guest kernel reported:\n{}",
            bad.join("\n")
        );
        let leaks = self.sh_ok(
            "k=/sys/kernel/debug/kmemleak; \
             mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; \
             if [ -e $k ]; then echo scan >$k; sleep 6; echo scan >$k; cat $k; fi",
        );
        assert!(
            !leaks.contains("unreferenced object"),
            "kmemleak found leaks:\n{leaks}"
        );
    }

    /// Checks the kernel log ([`CrLab::assert_kernel_clean`]), then shuts the
    /// guest down.
    pub fn shutdown(mut self) {
        self.assert_kernel_clean();
        self.vm
            .shutdown(Duration::from_secs(30))
            .expect("shutting the guest down");
    }
}

/// The errno a test program printed ("... (errno N...)"), if any.
pub fn printed_errno(out: &ExecOutput) -> Option<i32> {
    let text = String::from_utf8_lossy(&out.stderr);
    let at = text.find("(errno ")? + "(errno ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The lines of a guest kernel log that report a problem: BUG, WARNING,
/// oops, KASAN or UBSAN reports, general protection faults.
pub fn kernel_problems(log: &str) -> Vec<&str> {
    const SIGNS: [&str; 6] = [
        "BUG:",
        "WARNING:",
        "Oops",
        "KASAN",
        "UBSAN",
        "general protection",
    ];
    log.lines()
        .filter(|l| SIGNS.iter().any(|k| l.contains(k)))
        .collect()
}
