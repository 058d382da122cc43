//! Checking a container image whole: its own structure (the reader) and,
//! as they stream by, each process's kernel image (the kernel image
//! verifier, on a thread fed chunk by chunk, so memory stays bounded).

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use serde::Serialize;

use super::reader::{ContainerError, ContainerReader, Event};
use super::Manifest;
use crate::{ImageError, Limits, Summary};

/// One process of a checked container image.
#[derive(Debug, Serialize)]
pub struct ProcessCheck {
    /// Its position in the image.
    pub index: u32,
    /// Its pid in the container.
    pub pid: i32,
    /// Bytes of its kernel image.
    pub bytes: u64,
    /// The kernel image's verdict, or (for `inspect`) its records as JSON.
    #[serde(skip)]
    pub verdict: Result<Summary, ImageError>,
    /// `inspect` only: the kernel image's records and summary, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<serde_json::Value>,
}

/// A checked container image.
#[derive(Debug, Serialize)]
pub struct ContainerCheck {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its size.
    pub bytes: u64,
    /// The trailer's digest, in hex.
    pub digest: String,
    /// Its processes.
    pub processes: Vec<ProcessCheck>,
}

impl ContainerCheck {
    /// The first process whose kernel image is bad.
    pub fn first_bad(&self) -> Option<(&ProcessCheck, &ImageError)> {
        self.processes
            .iter()
            .find_map(|p| p.verdict.as_ref().err().map(|e| (p, e)))
    }
}

/// Reads and checks a container image and every kernel image in it; with
/// `json`, also collects each kernel image's records (`crvmm image
/// inspect`). The container's own structure failing is the error; a bad
/// kernel image is reported in its [`ProcessCheck`].
pub fn check_container<R: Read>(
    input: R,
    limits: &Limits,
    json: bool,
) -> Result<ContainerCheck, ContainerError> {
    let mut reader = ContainerReader::new(input);
    let mut processes = Vec::new();
    std::thread::scope(|scope| {
        let mut current: Option<Running<'_>> = None;
        loop {
            match reader.next_event()? {
                Some(Event::Header(_) | Event::Queue { .. } | Event::Shm { .. }) => {}
                Some(Event::Process { index, pid }) => {
                    current = Some(Running::start(scope, index, pid, *limits, json));
                }
                Some(Event::Data(bytes)) => {
                    if let Some(running) = current.as_mut() {
                        running.feed(bytes);
                    }
                }
                Some(Event::ProcessEnd { .. }) => {
                    if let Some(running) = current.take() {
                        processes.push(running.finish());
                    }
                }
                Some(Event::End { bytes, digest }) => {
                    let manifest = reader.manifest().cloned().unwrap_or_default();
                    return Ok(ContainerCheck {
                        manifest,
                        bytes,
                        digest: super::format::hex(&digest),
                        processes: std::mem::take(&mut processes),
                    });
                }
                None => return Err(ContainerError::Truncated("after the end")),
            }
        }
    })
}

type Outcome = (Result<Summary, ImageError>, Option<serde_json::Value>);

/// A kernel image being checked on its own thread.
struct Running<'scope> {
    index: u32,
    pid: i32,
    bytes: u64,
    tx: Option<SyncSender<Vec<u8>>>,
    handle: ScopedJoinHandle<'scope, Outcome>,
}

impl<'scope> Running<'scope> {
    fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        index: u32,
        pid: i32,
        limits: Limits,
        json: bool,
    ) -> Self {
        let (tx, rx) = sync_channel(4);
        let input = ChannelReader::new(rx);
        let handle = scope.spawn(move || {
            if !json {
                return (crate::verify(input, &limits), None);
            }
            let mut out = Vec::new();
            let verdict = match crate::inspect(input, &limits, &mut out) {
                Ok(verdict) => verdict,
                Err(e) => return (Err(io_error(e)), None),
            };
            (verdict, serde_json::from_slice(&out).ok())
        });
        Running {
            index,
            pid,
            bytes: 0,
            tx: Some(tx),
            handle,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        // A verifier that already failed stops reading: drop the rest.
        if let Some(tx) = &self.tx {
            if tx.send(bytes.to_vec()).is_err() {
                self.tx = None;
            }
        }
    }

    fn finish(mut self) -> ProcessCheck {
        self.tx = None;
        let (verdict, kernel) = self
            .handle
            .join()
            .unwrap_or_else(|_| (Err(io_error(io::Error::other("verifier panicked"))), None));
        ProcessCheck {
            index: self.index,
            pid: self.pid,
            bytes: self.bytes,
            verdict,
            kernel,
        }
    }
}

fn io_error(source: io::Error) -> ImageError {
    ImageError::Io {
        at: crate::At {
            record: 0,
            kind: None,
            offset: 0,
        },
        source,
    }
}

/// Chunks from a channel, as a byte stream that ends when every sender is
/// gone: feeds a reader on another thread while the bytes arrive.
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    /// A reader of what `rx` receives.
    pub fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
