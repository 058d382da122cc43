//! Host-side reader and verifier of the checkpoint images written by the
//! crvmm guest kernel's `checkpoint(2)` (format version 2, defined in
//! `include/uapi/linux/checkpoint.h` of `guest-kernel/patches/0003-*` and
//! described in `docs/checkpoint.md`).
//!
//! An image is a stream of records read front to back: [`Parser`] reads
//! one record at a time from any [`Read`] without seeking, checks it the
//! way `restart(2)` would (and a little more), and keeps only what later
//! checks need (the thread ids, the last file record's fd, the VMA ranges,
//! the last page address), so memory stays bounded whatever the image
//! holds: page data is checksummed and skipped, never kept, and no length
//! read from the image is allocated before it has been checked against the
//! bound of its record type (the largest record read whole, a thread or
//! signals record with the most queued signals, is a little over 8 MiB).
//!
//! Checks the host cannot judge, because they depend on the kernel or the
//! CPU that restarts the image (kernel release, configuration, XSAVE
//! layout, the files it reopens, the descriptors it inherits,
//! permissions), are reported as notes in the [`Summary`].
//!
//! ```no_run
//! # fn main() -> Result<(), crvmm_cr_image::ImageError> {
//! let file = std::fs::File::open("image").expect("open");
//! let summary = crvmm_cr_image::verify(file, &crvmm_cr_image::Limits::default())?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```

#[cfg(any(test, feature = "builder"))]
pub mod builder;
mod checks;
pub mod container;
pub mod format;
mod json;
pub mod kconfig;
mod parser;
mod reader;
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, Read};

use serde::Serialize;

pub use format::RecordType;
pub use json::inspect;
pub use kconfig::KernelConfig;
pub use parser::{Entry, Parser, Record};
pub use verify::Summary;

use format::{errno_name, ARCH_X86_64, FORMAT_VERSION, IMAGE_MAGIC, PAGES_PER_CHUNK, PAGE_SIZE};

/// User address space limit of x86-64 with 4-level paging (`TASK_SIZE_MAX`).
pub const TASK_SIZE_4LEVEL: u64 = (1 << 47) - PAGE_SIZE;
/// User address space limit of x86-64 with 5-level paging (LA57).
pub const TASK_SIZE_5LEVEL: u64 = (1 << 56) - PAGE_SIZE;

/// What the checks assume about the kernel that will restart the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The end of the user address space (`TASK_SIZE`). `None`: the one
    /// the image's config hash names (see [`kconfig`]), or
    /// [`TASK_SIZE_4LEVEL`] if the hash is not recognised.
    pub task_size: Option<u64>,
}

/// Where a problem is: the record (counted from 0, the header), its type
/// when known, and the byte offset in the stream of the faulty field, or
/// of the record when no single field is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct At {
    /// Index of the record.
    pub record: u64,
    /// Its type, once its header has been read and the type is known.
    #[serde(rename = "type")]
    pub kind: Option<RecordType>,
    /// Byte offset from the start of the image.
    pub offset: u64,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}", self.record)?;
        if let Some(kind) = self.kind {
            write!(f, " ({kind})")?;
        }
        write!(f, " at byte {} ({:#x})", self.offset, self.offset)
    }
}

/// Why an image is not a good checkpoint image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading the input failed.
    #[error("{at}: reading the image failed")]
    Io {
        /// Where.
        at: At,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stream ends early.
    #[error("{at}: the image ends {what}")]
    Truncated {
        /// Where the data ends.
        at: At,
        /// What is missing ("before the task record", "inside the page data"...).
        what: &'static str,
    },
    /// A record type the format does not define.
    #[error("{at}: unknown record type {found}")]
    UnknownType {
        /// The record header.
        at: At,
        /// The type found.
        found: u32,
    },
    /// A known record type out of order.
    #[error("{at}: expected {expected}, found a {found} record")]
    UnexpectedRecord {
        /// The record header.
        at: At,
        /// What the order of the format wants here.
        expected: &'static str,
        /// What is there.
        found: RecordType,
    },
    /// A record length outside the bounds of its type (or `CR_MAX_RECORD`).
    #[error("{at}: length {len} not in [{min}, {max}]")]
    BadLength {
        /// The record header's length field.
        at: At,
        /// The length.
        len: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A record length that disagrees with the counts in its payload.
    #[error("{at}: record length {len} does not match its contents ({expected} bytes)")]
    LengthMismatch {
        /// The count field that disagrees.
        at: At,
        /// The record header's length.
        len: u32,
        /// The length the payload's counts imply.
        expected: u64,
    },
    /// Padding after a payload that is not zero.
    #[error("{at}: padding byte {value:#04x} is not zero")]
    Padding {
        /// The padding byte.
        at: At,
        /// Its value.
        value: u8,
    },
    /// The header's magic is wrong: not a checkpoint image.
    #[error("{at}: not a checkpoint image: magic {found:#018x}, expected {IMAGE_MAGIC:#018x}")]
    BadMagic {
        /// The magic field.
        at: At,
        /// Its value.
        found: u64,
    },
    /// A format version this build does not read.
    #[error("{at}: image format version {found}, this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version field.
        at: At,
        /// Its value.
        found: u32,
    },
    /// An architecture other than x86-64.
    #[error("{at}: image arch {found}, the format defines only x86-64 ({ARCH_X86_64})")]
    Arch {
        /// The arch field.
        at: At,
        /// Its value.
        found: u32,
    },
    /// A page size other than x86-64's.
    #[error("{at}: page size {found}, x86-64 has {PAGE_SIZE}")]
    PageSize {
        /// The page size field.
        at: At,
        /// Its value.
        found: u32,
    },
    /// A field out of its range.
    #[error("{at}: field `{field}` = {value:#x}: {problem}")]
    Field {
        /// The field.
        at: At,
        /// Its name, as in the uapi header (`rlim[7].cur`, `gregs.ip`...).
        field: String,
        /// Its value (strings: their length).
        value: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// An address at or beyond the end of the user address space.
    #[error("{at}: field `{field}` = {value:#x} is beyond the user address space (which ends at {limit:#x})")]
    BeyondUserSpace {
        /// The field.
        at: At,
        /// Its name.
        field: String,
        /// The address.
        value: u64,
        /// `TASK_SIZE` used.
        limit: u64,
    },
    /// A VMA that starts before the previous one ends.
    #[error("{at}: VMA start {start:#x} is below the end {prev_end:#x} of the previous VMA: VMAs must increase and not overlap")]
    VmaOrder {
        /// The VMA's start field.
        at: At,
        /// Its start.
        start: u64,
        /// The previous VMA's end.
        prev_end: u64,
    },
    /// Fewer or more thread records than the task record announces.
    #[error("{at}: the task record announces {declared} threads, found {found} thread records")]
    ThreadCount {
        /// The record where the count goes wrong.
        at: At,
        /// `nr_threads`.
        declared: u32,
        /// Thread records found (at least this many when there are too many).
        found: u32,
    },
    /// Two thread records with the same thread id.
    #[error(
        "{at}: thread id {tid} is also the thread of record {first}: thread ids must be distinct"
    )]
    DuplicateTid {
        /// The `tid` field of the second.
        at: At,
        /// The thread id.
        tid: i32,
        /// The index of the first thread record with it.
        first: u64,
    },
    /// A POSIX timer signals a thread that is not one of the image's.
    #[error("{at}: POSIX timer {id} signals thread {tid}, which is not a thread of the image")]
    TimerThread {
        /// The memory record, read once every thread is.
        at: At,
        /// The timer's id.
        id: i32,
        /// The thread it names.
        tid: i32,
    },
    /// Fewer or more file records than the files record announces.
    #[error("{at}: the files record announces {declared} file records, found {found}")]
    FileCount {
        /// The record where the count goes wrong.
        at: At,
        /// `nr_files`.
        declared: u32,
        /// File records found (at least this many when there are too many).
        found: u32,
    },
    /// A file record whose fd is not above the previous file record's.
    #[error(
        "{at}: fd {fd} is not above the fd {prev} of the previous file record: file records \
         must be in increasing fd order, each fd once"
    )]
    FdOrder {
        /// The `fd` field.
        at: At,
        /// Its value.
        fd: i32,
        /// The previous file record's fd.
        prev: i32,
    },
    /// Fewer or more VMA records than the mm record announces.
    #[error("{at}: the mm record announces {declared} VMA records, found {found}")]
    VmaCount {
        /// The record where the count goes wrong.
        at: At,
        /// `nr_vmas`.
        declared: u64,
        /// VMA records found (at least this many when there are too many).
        found: u64,
    },
    /// A pages record with more than `CR_PAGES_PER_CHUNK` pages.
    #[error("{at}: {nr_pages} pages in one record, at most {PAGES_PER_CHUNK} are allowed")]
    TooManyPages {
        /// The `nr_pages` field.
        at: At,
        /// Its value.
        nr_pages: u32,
    },
    /// A page address not above the previous page.
    #[error(
        "{at}: page {addr:#x} is below {min:#x}: page addresses must increase over the whole image"
    )]
    PageOrder {
        /// The address.
        at: At,
        /// Its value.
        addr: u64,
        /// The end of the previous page.
        min: u64,
    },
    /// A page address in no VMA.
    #[error("{at}: page {addr:#x} is outside every VMA")]
    PageOutsideVma {
        /// The address.
        at: At,
        /// Its value.
        addr: u64,
    },
    /// A page address in a VMA that takes no pages.
    #[error(
        "{at}: page {addr:#x} is in VMA {start:#x}-{end:#x}, which is not flagged CR_VMA_PAGES"
    )]
    PageNotAllowed {
        /// The address.
        at: At,
        /// Its value.
        addr: u64,
        /// The VMA's start.
        start: u64,
        /// The VMA's end.
        end: u64,
    },
    /// The trailer's magic is wrong.
    #[error("{at}: bad trailer magic {found:#018x}")]
    TrailerMagic {
        /// The magic field.
        at: At,
        /// Its value.
        found: u64,
    },
    /// The trailer's record count is wrong.
    #[error("{at}: the trailer counts {trailer} records before it, the image has {counted}")]
    RecordCount {
        /// The count field.
        at: At,
        /// Its value.
        trailer: u64,
        /// Records actually before the trailer.
        counted: u64,
    },
    /// The trailer's CRC-32 does not match the bytes before it.
    #[error("{at}: checksum mismatch: the trailer says CRC-32 {stored:#010x}, the image's is {computed:#010x}")]
    Checksum {
        /// The checksum field.
        at: At,
        /// Its value.
        stored: u32,
        /// CRC-32 of every byte before the trailer's record header.
        computed: u32,
    },
    /// The image of a checkpoint that failed: it ends with an error record.
    #[error("{at}: the checkpoint failed with {} ({errno}): {message}", errno_name(*errno))]
    CheckpointFailed {
        /// The error record.
        at: At,
        /// The negative errno.
        errno: i32,
        /// The kernel's log line.
        message: String,
    },
    /// Bytes after the trailer (or after an error record).
    #[error("{at}: unexpected data after the end of the image")]
    TrailingData {
        /// The first byte after the end.
        at: At,
    },
}

impl ImageError {
    /// Where the problem is.
    pub fn at(&self) -> At {
        match self {
            Self::Io { at, .. }
            | Self::Truncated { at, .. }
            | Self::UnknownType { at, .. }
            | Self::UnexpectedRecord { at, .. }
            | Self::BadLength { at, .. }
            | Self::LengthMismatch { at, .. }
            | Self::Padding { at, .. }
            | Self::BadMagic { at, .. }
            | Self::Version { at, .. }
            | Self::Arch { at, .. }
            | Self::PageSize { at, .. }
            | Self::Field { at, .. }
            | Self::BeyondUserSpace { at, .. }
            | Self::ThreadCount { at, .. }
            | Self::DuplicateTid { at, .. }
            | Self::TimerThread { at, .. }
            | Self::FileCount { at, .. }
            | Self::FdOrder { at, .. }
            | Self::VmaOrder { at, .. }
            | Self::VmaCount { at, .. }
            | Self::TooManyPages { at, .. }
            | Self::PageOrder { at, .. }
            | Self::PageOutsideVma { at, .. }
            | Self::PageNotAllowed { at, .. }
            | Self::TrailerMagic { at, .. }
            | Self::RecordCount { at, .. }
            | Self::Checksum { at, .. }
            | Self::CheckpointFailed { at, .. }
            | Self::TrailingData { at } => *at,
        }
    }
}

/// Reads and checks a whole image; returns its summary.
pub fn verify<R: Read>(input: R, limits: &Limits) -> Result<Summary, ImageError> {
    let mut parser = Parser::new(input, *limits);
    while parser.next_record()?.is_some() {}
    parser.end()
}
