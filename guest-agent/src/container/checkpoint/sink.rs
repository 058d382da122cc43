//! Where a container image goes while it is written: optionally through
//! zstd, then to every destination at once — data frames on the request's
//! connection and a file in the guest. Nothing is kept in memory beyond one
//! chunk.
//!
//! A destination that fails is remembered in the shared [`SinkStatus`] and
//! left out from then on; the writes that fed it still succeed as long as
//! another destination is healthy, so that the bytes a compressor or the
//! image writer hands over are never offered twice. The dump checks the
//! status after every write and stops at the first failure.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crvmm_protocol::transfer::{write_data, MAX_DATA_CHUNK};
use crvmm_protocol::FrameError;

/// Bytes gathered before they go out: one data frame, one file write.
const CHUNK: usize = 256 * 1024;

/// The zstd level: the container is frozen while its image is compressed,
/// so speed matters more than the last percent of size.
pub const ZSTD_LEVEL: i32 = 1;

/// A destination of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Data frames on the request's connection.
    Stream,
    /// The guest file.
    File,
}

/// What happened to the destinations, readable while the image writer owns
/// the sink (and from the stall watchdog's thread).
#[derive(Debug, Default)]
pub struct SinkStatus {
    failure: Mutex<Option<(Destination, io::Error)>>,
    stored: AtomicU64,
    progress: AtomicU64,
}

impl SinkStatus {
    /// The first destination that failed, if any.
    pub fn failed(&self) -> Option<Destination> {
        self.lock().as_ref().map(|(d, _)| *d)
    }

    /// The first failure: which destination, and its error (a copy).
    pub fn error(&self) -> Option<(Destination, io::Error)> {
        self.lock().as_ref().map(|(d, e)| {
            let copy = match e.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::new(e.kind(), e.to_string()),
            };
            (*d, copy)
        })
    }

    /// Bytes handed to the destinations (compressed, when zstd).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Counts bytes of kernel images read: the dump moves on.
    pub fn advance(&self, bytes: u64) {
        self.progress.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of kernel images read so far.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    fn record(&self, destination: Destination, error: io::Error) {
        let mut failure = self.lock();
        if failure.is_none() {
            *failure = Some((destination, error));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Destination, io::Error)>> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A guest file written under a temporary name: renamed to its final name
/// by [`PartFile::commit`], removed if dropped before.
pub struct PartFile {
    path: PathBuf,
    part: PathBuf,
    file: Option<File>,
}

impl PartFile {
    /// Creates `<path>.part` (replacing a leftover of an earlier attempt).
    pub fn create(path: &Path) -> io::Result<PartFile> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&part)?;
        Ok(PartFile {
            path: path.to_owned(),
            part,
            file: Some(file),
        })
    }

    /// The temporary name.
    #[cfg(test)]
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Makes the file durable and gives it its final name.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        fs::rename(&self.part, &self.path)?;
        // Committed: nothing for Drop to remove.
        self.part = PathBuf::new();
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.part.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

/// The destinations, behind a buffer of one chunk.
pub struct FanOut<'a, S: Write> {
    stream: Option<&'a mut S>,
    file: Option<PartFile>,
    status: &'a SinkStatus,
    buf: Vec<u8>,
}

impl<'a, S: Write> FanOut<'a, S> {
    /// Destinations `stream` and `file` (at least one); failures go to
    /// `status`.
    pub fn new(stream: Option<&'a mut S>, file: Option<PartFile>, status: &'a SinkStatus) -> Self {
        FanOut {
            stream,
            file,
            status,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    /// True while at least one destination takes bytes.
    fn healthy(&self) -> bool {
        let failed = self.status.failed();
        (self.stream.is_some() && failed != Some(Destination::Stream))
            || (self.file.is_some() && failed != Some(Destination::File))
    }

    /// Sends the buffered bytes to every healthy destination.
    fn emit(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let failed = self.status.failed();
        if let Some(stream) = self.stream.as_deref_mut() {
            if failed != Some(Destination::Stream) {
                let sent = self
                    .buf
                    .chunks(MAX_DATA_CHUNK)
                    .try_for_each(|chunk| write_data(stream, chunk))
                    .map_err(|e| match e {
                        FrameError::Write(e) => e,
                        other => io::Error::other(other.to_string()),
                    })
                    .and_then(|()| stream.flush());
                if let Err(e) = sent {
                    self.status.record(Destination::Stream, e);
                }
            }
        }
        if let Some(file) = self.file.as_mut().and_then(|f| f.file.as_mut()) {
            if failed != Some(Destination::File) {
                if let Err(e) = file.write_all(&self.buf) {
                    self.status.record(Destination::File, e);
                }
            }
        }
        self.status
            .stored
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
    }

    /// Sends what is buffered; returns the guest file, if any, to commit.
    pub fn finish(mut self) -> Option<PartFile> {
        self.emit();
        self.file.take()
    }
}

impl<S: Write> Write for FanOut<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.healthy() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "every destination of the image failed",
            ));
        }
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK {
            self.emit();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit();
        if self.healthy() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "every destination of the image failed",
            ))
        }
    }
}

/// The image writer's output: zstd or not, then the destinations.
pub enum ImageSink<'a, S: Write> {
    /// Uncompressed.
    Plain(FanOut<'a, S>),
    /// Through a zstd encoder (one frame).
    Zstd(zstd::stream::write::Encoder<'static, FanOut<'a, S>>),
}

impl<'a, S: Write> ImageSink<'a, S> {
    /// A sink into `out`, compressed if `zstd`.
    pub fn new(out: FanOut<'a, S>, zstd: bool) -> io::Result<Self> {
        if zstd {
            Ok(ImageSink::Zstd(zstd::stream::write::Encoder::new(
                out, ZSTD_LEVEL,
            )?))
        } else {
            Ok(ImageSink::Plain(out))
        }
    }

    /// Ends the compressed frame and sends everything; returns the guest
    /// file to commit.
    pub fn finish(self) -> io::Result<Option<PartFile>> {
        let out = match self {
            ImageSink::Plain(out) => out,
            ImageSink::Zstd(encoder) => encoder.finish()?,
        };
        Ok(out.finish())
    }
}

impl<S: Write> Write for ImageSink<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            ImageSink::Plain(out) => out.write(bytes),
            ImageSink::Zstd(encoder) => encoder.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ImageSink::Plain(out) => out.flush(),
            ImageSink::Zstd(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crvmm_protocol::transfer::{read_incoming, Incoming};

    /// A stream that accepts `limit` bytes, then fails.
    struct Breaks {
        taken: Vec<u8>,
        limit: usize,
    }

    impl Write for Breaks {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.taken.len() + bytes.len() > self.limit {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "peer gone"));
            }
            self.taken.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(mut wire: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        while !wire.is_empty() {
            match read_incoming(&mut wire).unwrap() {
                Incoming::Data(bytes) => data.extend(bytes),
                Incoming::Message(_) => panic!("a message among the data"),
            }
        }
        data
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("crvmm-sink-{}-{name}", std::process::id()))
    }

    #[test]
    fn stream_and_file_get_the_same_bytes_in_bounded_frames() {
        let path = temp_path("both");
        let status = SinkStatus::default();
        let mut wire = Vec::new();
        let part = PartFile::create(&path).unwrap();
        let part_path = part.part_path().to_owned();
        let mut sink =
            ImageSink::new(FanOut::new(Some(&mut wire), Some(part), &status), false).unwrap();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        sink.write_all(&data).unwrap();
        sink.flush().unwrap();
        let file = sink.finish().unwrap().unwrap();
        assert!(part_path.exists() && !path.exists());
        file.commit().unwrap();
        assert!(!part_path.exists());
        assert_eq!(fs::read(&path).unwrap(), data);
        assert_eq!(frames(&wire), data);
        assert_eq!(status.stored(), data.len() as u64);
        assert_eq!(status.failed(), None);
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn zstd_output_decompresses_to_the_input() {
        let status = SinkStatus::default();
        let mut wire = Vec::new();
        let mut sink = ImageSink::new(FanOut::new(Some(&mut wire), None, &status), true).unwrap();
        let data = vec![7u8; 3 << 20];
        sink.write_all(&data).unwrap();
        assert!(sink.finish().unwrap().is_none());
        let compressed = frames(&wire);
        assert_eq!(status.stored(), compressed.len() as u64);
        assert!(compressed.len() < data.len() / 100);
        assert_eq!(zstd::stream::decode_all(&compressed[..]).unwrap(), data);
    }

    #[test]
    fn a_failed_stream_is_reported_and_writes_stop_once_nothing_is_left() {
        let status = SinkStatus::default();
        let mut peer = Breaks {
            taken: Vec::new(),
            limit: 100_000,
        };
        let mut sink = ImageSink::new(FanOut::new(Some(&mut peer), None, &status), false).unwrap();
        let data = vec![1u8; CHUNK];
        sink.write_all(&data).unwrap();
        assert_eq!(status.failed(), Some(Destination::Stream));
        let err = sink.write_all(&data).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let (destination, error) = status.error().unwrap();
        assert_eq!(destination, Destination::Stream);
        assert!(error.to_string().contains("peer gone"), "{error}");
    }

    #[test]
    fn a_failed_file_leaves_the_stream_going_and_is_removed() {
        let path = temp_path("fails");
        let status = SinkStatus::default();
        let mut wire = Vec::new();
        let mut part = PartFile::create(&path).unwrap();
        let part_path = part.part_path().to_owned();
        // A read-only descriptor in place of the file: its writes fail.
        part.file = Some(File::open(&part_path).unwrap());
        let mut sink =
            ImageSink::new(FanOut::new(Some(&mut wire), Some(part), &status), false).unwrap();
        sink.write_all(&vec![2u8; CHUNK + 10]).unwrap();
        assert_eq!(status.failed(), Some(Destination::File));
        sink.write_all(b"more").unwrap();
        drop(sink.finish().unwrap());
        assert_eq!(frames(&wire).len(), CHUNK + 14);
        assert!(!part_path.exists() && !path.exists());
    }
}
