//! Console logging: one line per message on stderr, which is `/dev/console`
//! in the guest. Write errors are ignored: PID 1 must never panic on a log.

use std::fmt::Write as _;

/// Writes one `crvmm-agent: ...` line to stderr.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

/// Writes `crvmm-agent: <message>` and a newline to stderr in one write.
pub fn line(message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let text = format!("crvmm-agent: {message}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// An error and its chain of causes on one line: `outer: cause: root cause`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
