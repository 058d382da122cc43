//! A minimal client for QEMU's QMP control socket: enough to stop, continue
//! and quit a VM, to ask its status, and to hand it a file descriptor (for
//! migration streams).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::EngineError;

/// An open, negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `path`, reads the greeting and leaves negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, EngineError> {
        let fail = |reason: String| EngineError::Qmp {
            command: "connect".into(),
            reason,
        };
        let stream =
            UnixStream::connect(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| fail(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(fail(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; events that arrive
    /// meanwhile are skipped.
    pub fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, EngineError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = args {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| qmp_err(command, e.to_string()))?;
        self.reply(command)
    }

    /// Passes `fd` to QEMU under `name` (QMP `getfd`), for commands that
    /// take `fd:<name>`, such as `migrate` and `migrate-incoming`.
    pub fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), EngineError> {
        const COMMAND: &str = "getfd";
        let mut line = json!({ "execute": COMMAND, "arguments": { "fdname": name } }).to_string();
        line.push('\n');
        let sent = send_with_fd(&self.writer, line.as_bytes(), fd)
            .map_err(|e| qmp_err(COMMAND, e.to_string()))?;
        // QEMU takes the descriptor with the first bytes; send any rest plainly.
        self.writer
            .write_all(&line.as_bytes()[sent..])
            .map_err(|e| qmp_err(COMMAND, e.to_string()))?;
        self.reply(COMMAND).map(drop)
    }

    /// The VM's run state as QEMU names it (`running`, `paused`,
    /// `postmigrate`, `inmigrate`, ...).
    pub fn status(&mut self) -> Result<String, EngineError> {
        let reply = self.execute("query-status", None)?;
        reply["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| qmp_err("query-status", format!("unexpected reply {reply}")))
    }

    /// Reads up to the answer to `command`, skipping asynchronous events.
    fn reply(&mut self, command: &str) -> Result<Value, EngineError> {
        loop {
            let reply = self.read_message(command)?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let desc = err["desc"].as_str().unwrap_or("unknown error");
                return Err(qmp_err(command, desc.to_owned()));
            }
        }
    }

    fn read_message(&mut self, command: &str) -> Result<Value, EngineError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(qmp_err(command, "QEMU closed the control socket".into())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| qmp_err(command, format!("bad reply {line:?}: {e}"))),
            Err(e) => Err(qmp_err(command, e.to_string())),
        }
    }
}

/// Sends `bytes` with `fd` attached (`SCM_RIGHTS`); returns how many bytes
/// went out.
fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<usize> {
    let raw = fd.as_raw_fd();
    // Room for one cmsghdr and one int, aligned like a cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(std::mem::size_of_val(&raw) as u32) as usize,
            libc::CMSG_LEN(std::mem::size_of_val(&raw) as u32) as usize,
        )
    };
    assert!(space <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `control`, which is at least `space`
    // bytes and aligned for cmsghdr, so the first header and its data fit.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
    }
    loop {
        // SAFETY: msg and everything it points to (iov, bytes, control)
        // live across the call; the stream's fd is open.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn qmp_err(command: &str, reason: String) -> EngineError {
    EngineError::Qmp {
        command: command.into(),
        reason,
    }
}
