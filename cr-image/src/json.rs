//! [`inspect`]: an image as one JSON document, written as its records are
//! read, one record a line, so that the output of a large image is never
//! held in memory either:
//!
//! ```text
//! {"records":[
//! {"index":0,"offset":0,"len":120,"type":"header","magic":"0x474d49524b435243",...},
//! ...
//! {"index":17,"offset":33568,"len":24,"type":"trailer",...}
//! ],
//! "summary":{"bytes":33600,"records":17,...,"notes":[...]},
//! "problem":null}
//! ```
//!
//! A bad image has the records read before the problem, `"summary":null`,
//! and `"problem":{"message":...,"record":N,"type":...,"offset":B}`.

use std::io::{self, Read, Write};

use serde::Serialize;

use crate::{At, ImageError, Limits, Parser, Summary};

/// Where and what the problem of a bad image is.
#[derive(Serialize)]
struct Problem {
    message: String,
    #[serde(flatten)]
    at: At,
}

/// Writes the image read from `input` to `out` as JSON (page data
/// summarised) and returns the verdict on it, the same as [`crate::verify`]'s.
/// The outer error is a failure to write `out`.
pub fn inspect<R: Read, W: Write>(
    input: R,
    limits: &Limits,
    mut out: W,
) -> io::Result<Result<Summary, ImageError>> {
    let mut parser = Parser::new(input, *limits);
    out.write_all(b"{\"records\":[")?;
    let mut separator: &[u8] = b"\n";
    let verdict = loop {
        match parser.next_record() {
            Ok(Some(entry)) => {
                out.write_all(separator)?;
                serde_json::to_writer(&mut out, &entry)?;
                separator = b",\n";
            }
            Ok(None) => break parser.end(),
            Err(e) => break Err(e),
        }
    };
    out.write_all(b"\n],\n\"summary\":")?;
    serde_json::to_writer(&mut out, &verdict.as_ref().ok())?;
    out.write_all(b",\n\"problem\":")?;
    let problem = verdict.as_ref().err().map(|e| Problem {
        message: e.to_string(),
        at: e.at(),
    });
    serde_json::to_writer(&mut out, &problem)?;
    out.write_all(b"}\n")?;
    out.flush()?;
    Ok(verdict)
}
