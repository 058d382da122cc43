//! The agent binary in `--listen-unix` mode, driven by the protocol crate's
//! client over a Unix socket: no VM needed.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crvmm_protocol::{AgentClient, ClientError, ErrorKind, ExecRequest, ExitStatus, Response};

/// A running agent in its own temp dir; killed and cleaned up on drop, so
/// no process is left behind when an assertion fails.
struct Agent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Agent {
    fn start() -> Agent {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crvmm-agent-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("a.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_crvmm-agent"))
            .arg("--listen-unix")
            .arg(&socket)
            .spawn()
            .unwrap();
        let agent = Agent { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the agent did not create its socket"
            );
            thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    fn connect(&self) -> AgentClient<UnixStream> {
        // The socket file appears at bind(), a moment before listen().
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("connect: {e}; retrying");
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot connect to the agent: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        AgentClient::new(stream)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Waits up to `limit` for the agent to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_bad_request(response: &Response) {
    match response {
        Response::Error(e) if e.kind == ErrorKind::BadRequest => {}
        other => panic!("expected a BadRequest error, got {other:?}"),
    }
}

#[test]
fn hello_exec_and_files() {
    let agent = Agent::start();
    let mut client = agent.connect();

    let info = client.hello().unwrap();
    assert_eq!(info.transport, "unix");
    assert_eq!(info.protocol_version, crvmm_protocol::PROTOCOL_VERSION);
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));

    let mut request = ExecRequest::new(["sh", "-c", "cat; echo err >&2; exit 3"]);
    request.stdin = b"in\n".to_vec();
    let out = client.exec(request).unwrap();
    assert_eq!(out.status, ExitStatus::Exited(3));
    assert_eq!(out.stdout, b"in\n");
    assert_eq!(out.stderr, b"err\n");

    let data: Vec<u8> = (0..=255).collect();
    let path = agent.path("file.bin");
    client.write_file(&path, &data, Some(0o600)).unwrap();
    assert_eq!(client.read_file(&path).unwrap(), data);

    match client.read_file(agent.dir.to_str().unwrap()) {
        Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("reading a directory gave {other:?}"),
    }
    match client.exec(ExecRequest::new(["/no/such/program"])) {
        Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("a missing program gave {other:?}"),
    }
}

#[test]
fn malformed_frames_get_errors_and_the_connection_survives() {
    let agent = Agent::start();
    let mut client = agent.connect();

    let reply = client.call_raw(b"not json").unwrap();
    assert_eq!(reply.id, 0);
    assert_bad_request(&reply.response);

    let reply = client.call_raw(br#"{"id":5,"op":"nope"}"#).unwrap();
    assert_eq!(reply.id, 5);
    assert_bad_request(&reply.response);

    assert_eq!(client.hello().unwrap().transport, "unix");
}

#[test]
fn two_clients_are_served_concurrently() {
    let agent = Agent::start();
    let mut slow = agent.connect();
    let mut fast = agent.connect();
    slow.hello().unwrap();

    let sleeper =
        thread::spawn(move || slow.exec(ExecRequest::new(["sleep", "1"])).unwrap().status);
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let out = fast.exec(ExecRequest::new(["echo", "fast"])).unwrap();
    assert_eq!(out.stdout, b"fast\n");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "the second client waited for the first: {:?}",
        started.elapsed()
    );
    assert_eq!(sleeper.join().unwrap(), ExitStatus::Exited(0));
}

#[test]
fn shutdown_exits_cleanly_and_removes_the_socket() {
    let mut agent = Agent::start();
    let mut client = agent.connect();
    client.hello().unwrap();
    client.shutdown().unwrap();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent did not exit after Shutdown");
    assert_eq!(status.code(), Some(0));
    assert!(!agent.socket.exists(), "the socket file is still there");
}
