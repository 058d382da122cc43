//! A minimal client for QEMU's QMP control socket: enough to stop, continue
//! and quit a VM and to ask its status.

use std::io::{BufRead, BufReader, Write};
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
        loop {
            let reply = self.read_message(command)?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let desc = err["desc"].as_str().unwrap_or("unknown error");
                return Err(qmp_err(command, desc.to_owned()));
            }
            // Anything else is an asynchronous event.
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

fn qmp_err(command: &str, reason: String) -> EngineError {
    EngineError::Qmp {
        command: command.into(),
        reason,
    }
}
