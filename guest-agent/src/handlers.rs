//! Turns one decoded request into its response. Shutdown only answers here;
//! the server starts it once the answer is sent (see [`crate::shutdown`]).

use crvmm_protocol::{
    AgentError, ContainerInfo, HelloInfo, Request, Response, MAX_CAPTURE, MAX_FILE_LEN,
    PROTOCOL_VERSION,
};

use crate::container::{self, ContainerError, Registry};
use crate::{exec, files, log};

/// Carries out `request`, which arrived over `transport`.
pub fn handle(request: Request, transport: &str) -> Response {
    match request {
        Request::Hello => Response::Hello(hello(transport)),
        Request::Exec(exec) => match exec::run(exec, MAX_CAPTURE) {
            Ok(output) => Response::Exec(output),
            Err(e) => error(e.kind(), &e),
        },
        Request::ReadFile { path } => match files::read(&path, MAX_FILE_LEN) {
            Ok(data) => Response::File { data },
            Err(e) => error(e.kind(), &e),
        },
        Request::WriteFile { path, data, mode } => {
            match files::write(&path, &data, mode, MAX_FILE_LEN) {
                Ok(()) => Response::Done,
                Err(e) => error(e.kind(), &e),
            }
        }
        Request::Shutdown => Response::Done,
        Request::ContainerCreate(create) => one(container::create(registry(), create)),
        Request::ContainerStart { container } => one(container::start(registry(), &container)),
        Request::ContainerList => Response::Containers {
            containers: container::list(registry()),
        },
        Request::ContainerState { container } => one(container::state(registry(), &container)),
        Request::ContainerExec(request) => {
            match container::exec(registry(), request, MAX_CAPTURE) {
                Ok(output) => Response::Exec(output),
                Err(e) => error(e.kind(), &e),
            }
        }
        Request::ContainerFreeze {
            container,
            timeout_ms,
        } => one(container::freeze(registry(), &container, timeout_ms)),
        Request::ContainerThaw { container } => one(container::thaw(registry(), &container)),
        Request::ContainerKill(kill) => one(container::kill(registry(), kill)),
        // The server hands these to the container module with the stream.
        Request::ContainerCheckpoint(_) | Request::ContainerRestore(_) => {
            Response::Error(AgentError::new(
                crvmm_protocol::ErrorKind::Internal,
                "checkpoint and restore are served on the connection's stream",
            ))
        }
        Request::ContainerDelete { container, force } => {
            match container::delete(registry(), &container, force) {
                Ok(()) => Response::Done,
                Err(e) => error(e.kind(), &e),
            }
        }
    }
}

fn registry() -> &'static Registry {
    Registry::global()
}

/// The answer to a request about one container.
fn one(result: Result<ContainerInfo, ContainerError>) -> Response {
    match result {
        Ok(container) => Response::Container {
            container: Box::new(container),
        },
        Err(e) => error(e.kind(), &e),
    }
}

fn error(kind: crvmm_protocol::ErrorKind, e: &dyn std::error::Error) -> Response {
    Response::Error(AgentError::new(kind, log::chain(e)))
}

fn hello(transport: &str) -> HelloInfo {
    HelloInfo {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel_release: kernel_release(),
        uptime_ms: std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|text| parse_uptime_ms(&text))
            .unwrap_or(0),
        transport: transport.to_owned(),
    }
}

/// `uname -r`, or an empty string if uname fails.
/// The running kernel's release (`uname -r`), or empty if uname fails.
pub(crate) fn kernel_release() -> String {
    // SAFETY: utsname is a struct of byte arrays, for which all zeroes is a
    // valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes only into the struct it is given, which lives
    // for the whole call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The first field of `/proc/uptime` ("12345.67 ...") in milliseconds.
fn parse_uptime_ms(text: &str) -> Option<u64> {
    let seconds = text.split_whitespace().next()?;
    let (whole, frac) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: u64 = whole.parse().ok()?;
    let frac = format!("{frac:0<3}");
    let millis: u64 = frac.get(..3)?.parse().ok()?;
    whole.checked_mul(1000)?.checked_add(millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::TempDir;
    use crvmm_protocol::{ErrorKind, ExecRequest, ExitStatus};

    fn expect_error(response: Response, kind: ErrorKind) -> String {
        match response {
            Response::Error(e) if e.kind == kind => e.message,
            other => panic!("expected a {kind} error, got {other:?}"),
        }
    }

    #[test]
    fn hello_describes_the_agent() {
        let Response::Hello(info) = handle(Request::Hello, "unix") else {
            panic!("not a hello");
        };
        assert_eq!(info.protocol_version, PROTOCOL_VERSION);
        assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.transport, "unix");
        assert!(!info.kernel_release.is_empty());
        assert!(info.uptime_ms > 0);
    }

    #[test]
    fn uptime_parsing() {
        assert_eq!(parse_uptime_ms("12345.67 999.00\n"), Some(12_345_670));
        assert_eq!(parse_uptime_ms("3.5"), Some(3_500));
        assert_eq!(parse_uptime_ms("7"), Some(7_000));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x.1"), None);
    }

    #[test]
    fn exec_results_and_errors() {
        let request = ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"]);
        let Response::Exec(out) = handle(Request::Exec(request), "unix") else {
            panic!("not an exec result");
        };
        assert_eq!(out.status, ExitStatus::Exited(3));
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );

        let missing = ExecRequest::new(["/no/such/program"]);
        let message = expect_error(handle(Request::Exec(missing), "unix"), ErrorKind::NotFound);
        assert!(message.contains("/no/such/program"), "{message}");
        expect_error(
            handle(Request::Exec(ExecRequest::default()), "unix"),
            ErrorKind::BadRequest,
        );
    }

    #[test]
    fn file_requests() {
        let dir = TempDir::new("handlers");
        let path = dir.path("f");
        let data: Vec<u8> = (0..=255).collect();
        let write = Request::WriteFile {
            path: path.clone(),
            data: data.clone(),
            mode: None,
        };
        assert_eq!(handle(write, "unix"), Response::Done);
        assert_eq!(
            handle(Request::ReadFile { path }, "unix"),
            Response::File { data }
        );
        let dir_path = dir.0.to_str().unwrap().to_owned();
        let message = expect_error(
            handle(
                Request::ReadFile {
                    path: dir_path.clone(),
                },
                "unix",
            ),
            ErrorKind::BadRequest,
        );
        assert!(message.contains(&dir_path), "{message}");
    }
}
