//! Where the guest's serial output goes: always the log file, and the
//! terminal too when the console is attached.

use std::fs::File;
use std::io::{self, Write};

/// The UART's output sink.
pub struct ConsoleOut {
    log: File,
    stdout: bool,
}

impl ConsoleOut {
    /// Writes to `log`, and to stdout when `stdout` is set.
    pub fn new(log: File, stdout: bool) -> ConsoleOut {
        ConsoleOut { log, stdout }
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.log.write_all(buf)?;
        if self.stdout {
            // A closed terminal must not stop the guest: the log has it all.
            let mut out = io::stdout().lock();
            let _ = out.write_all(buf).and_then(|()| out.flush());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.log.flush()
    }
}
