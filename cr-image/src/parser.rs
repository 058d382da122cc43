//! [`Parser`]: the records of an image one at a time, read by `reader` and
//! checked by `verify` as they come.

use std::io::Read;

use serde::Serialize;

use crate::format::{
    Creds, File, Files, ImageHeader, Mm, PosixTimer, RecordType, Regs, Sighand, Siginfo,
    SignalsHeader, Task, Thread, Trailer, Vma, XstateHeader, MAX_RECORD, PAGES_PER_CHUNK,
    PAGE_SIZE,
};
use crate::reader::{Head, RecordReader};
use crate::verify::{Summary, Verifier};
use crate::{ImageError, Limits};

/// A record, decoded. Page data is summarised, never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// `CR_REC_HEADER`.
    Header(ImageHeader),
    /// `CR_REC_TASK`.
    Task(Box<Task>),
    /// `CR_REC_CREDS`.
    Creds {
        /// The fixed part.
        #[serde(flatten)]
        creds: Creds,
        /// Supplementary groups.
        groups: Vec<u32>,
    },
    /// `CR_REC_SIGHAND`.
    Sighand(Box<Sighand>),
    /// `CR_REC_SIGNALS`.
    Signals {
        /// The fixed part: interval timers, the queue's length.
        #[serde(flatten)]
        signals: SignalsHeader,
        /// The process-wide queue.
        pending: Vec<Siginfo>,
        /// The POSIX timers.
        timers: Vec<PosixTimer>,
    },
    /// `CR_REC_FILES`.
    Files {
        /// The fixed part: the number of file records.
        #[serde(flatten)]
        files: Files,
        /// The working directory.
        cwd: String,
    },
    /// `CR_REC_FILE`.
    File {
        /// The fixed part: fd, kind, flags, position.
        #[serde(flatten)]
        file: File,
        /// The path it is reopened by (none for an inherited descriptor).
        path: Option<String>,
    },
    /// `CR_REC_THREAD`.
    Thread {
        /// The fixed part: the thread's own state and restart block.
        #[serde(flatten)]
        thread: Box<Thread>,
        /// Its own queued signals.
        pending: Vec<Siginfo>,
    },
    /// `CR_REC_REGS`.
    Regs(Box<Regs>),
    /// `CR_REC_XSTATE` (the XSAVE buffer is not kept).
    Xstate(XstateHeader),
    /// `CR_REC_MM`.
    Mm(Box<Mm>),
    /// `CR_REC_VMA`.
    Vma {
        /// The fixed part.
        #[serde(flatten)]
        vma: Vma,
        /// The file of a file mapping.
        path: Option<String>,
    },
    /// `CR_REC_PAGES`.
    Pages(PagesSummary),
    /// `CR_REC_ERROR`: the checkpoint failed.
    Error {
        /// The negative errno.
        errno: i32,
        /// Its name.
        name: &'static str,
        /// The kernel's log line.
        message: String,
    },
    /// `CR_REC_TRAILER`.
    Trailer(Trailer),
}

/// A pages record without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PagesSummary {
    /// Pages in the record (0: the end of the page data).
    pub nr_pages: u32,
    /// The first page's address.
    pub first: Option<u64>,
    /// The last page's address.
    pub last: Option<u64>,
}

/// A record and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Index of the record, from 0.
    pub index: u64,
    /// Offset of its record header.
    pub offset: u64,
    /// Its payload length.
    pub len: u32,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
}

/// Reads and checks an image record by record.
pub struct Parser<R> {
    reader: RecordReader<R>,
    verifier: Verifier,
    /// The verdict on an image that ended with an error record.
    failed: Option<ImageError>,
    summary: Option<Summary>,
    stopped: bool,
}

impl<R: Read> Parser<R> {
    /// A parser of the image in `input` (buffered here: any `Read` will do).
    pub fn new(input: R, limits: Limits) -> Self {
        Parser {
            reader: RecordReader::new(input),
            verifier: Verifier::new(limits),
            failed: None,
            summary: None,
            stopped: false,
        }
    }

    /// The next record, checked. `Ok(None)` once a good image has ended
    /// (then [`Parser::summary`] is set). After an error record, the next
    /// call returns [`ImageError::CheckpointFailed`]; after any error, the
    /// parser stops and returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Entry>, ImageError> {
        if self.stopped {
            return Ok(None);
        }
        if let Some(e) = self.failed.take() {
            self.stopped = true;
            return Err(e);
        }
        if self.summary.is_some() {
            self.stopped = true;
            return Ok(None);
        }
        let entry = self.step();
        self.stopped = entry.is_err();
        entry.map(Some)
    }

    /// The summary of a good image, once it has been read to its end.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    /// The verdict once `next_record` has returned `Ok(None)`: the summary.
    /// (An error naming the position if called before the end.)
    pub(crate) fn end(&self) -> Result<Summary, ImageError> {
        self.summary.clone().ok_or(ImageError::Truncated {
            at: self.reader.next_at(),
            what: "before its trailer",
        })
    }

    fn step(&mut self) -> Result<Entry, ImageError> {
        let Some(head) = self.reader.read_head()? else {
            return Err(ImageError::Truncated {
                at: self.reader.next_at(),
                what: self.verifier.missing(),
            });
        };
        let Some(kind) = RecordType::from_u32(head.raw_type) else {
            return Err(ImageError::UnknownType {
                at: self.reader.at_record(head.offset),
                found: head.raw_type,
            });
        };
        self.reader.set_kind(kind);
        let at = self.reader.at_record(head.offset);
        self.verifier.check_order(kind, at)?;
        let (min, max) = kind.len_bounds();
        let max = max.min(MAX_RECORD);
        if head.len < min || head.len > max {
            return Err(ImageError::BadLength {
                at: self.reader.at_record(head.offset.saturating_add(4)),
                len: head.len,
                min,
                max,
            });
        }
        let record = if kind == RecordType::Pages {
            self.pages(&head)?
        } else {
            let payload = self.reader.read_payload(head.len, "inside the payload")?;
            self.reader.read_padding(head.len)?;
            self.verifier.record(kind, &head, &payload)?
        };
        match &record {
            Record::Trailer(_) => {
                if !self.reader.at_end()? {
                    let at = self.reader.next_at();
                    return Err(ImageError::TrailingData { at });
                }
                let bytes = self.reader.offset();
                self.summary = self.verifier.summary(bytes, head.index);
            }
            Record::Error { errno, message, .. } => {
                self.failed = Some(ImageError::CheckpointFailed {
                    at,
                    errno: *errno,
                    message: message.clone(),
                });
            }
            _ => {}
        }
        Ok(Entry {
            index: head.index,
            offset: head.offset,
            len: head.len,
            record,
        })
    }

    /// A pages record: counts, addresses and checks; the data is only
    /// checksummed.
    fn pages(&mut self, head: &Head) -> Result<Record, ImageError> {
        let mut fixed = [0u8; 8];
        self.reader.read_exact(&mut fixed, "inside the payload")?;
        let n = self.verifier.pages_header(head, &fixed)? as usize;
        let mut raw = [0u8; 8 * PAGES_PER_CHUNK as usize];
        let raw = raw.get_mut(..n * 8).unwrap_or_default();
        self.reader.read_exact(raw, "inside the page addresses")?;
        let addrs: Vec<u64> = raw
            .chunks_exact(8)
            .map(|a| u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]))
            .collect();
        let record = self.verifier.page_addresses(head, &addrs)?;
        self.reader
            .skip(n as u64 * PAGE_SIZE, "inside the page data")?;
        self.reader.read_padding(head.len)?;
        Ok(record)
    }
}
