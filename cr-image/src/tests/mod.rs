//! Unit tests on images from the builder: good images in every shape
//! (here), damage to the stream's structure (`stream.rs`) and to fields
//! (`fields.rs`), threads, queued signals, interval timers and restart
//! blocks (`threads.rs`), open files and the checkpoint flag (`files.rs`).
//! Each test of a damaged image asserts the error variant and where it
//! points.

mod fields;
mod files;
mod stream;
mod threads;

use std::io::{self, Read};

use crate::builder::{layout, page_data, Image, ImageBuilder};
use crate::format::{RecordType, Vma, PAGE_SIZE};
use crate::{
    inspect, verify, At, Entry, ImageError, KernelConfig, Limits, Parser, Record, Summary,
    TASK_SIZE_4LEVEL, TASK_SIZE_5LEVEL,
};

fn check(bytes: &[u8]) -> Result<Summary, ImageError> {
    verify(bytes, &Limits::default())
}

/// The error a damaged image gives.
fn error_of(bytes: &[u8]) -> ImageError {
    match check(bytes) {
        Ok(s) => panic!("a damaged image verified: {s}"),
        Err(e) => e,
    }
}

/// The error an image built by `b` gives.
fn built_error(b: &ImageBuilder) -> ImageError {
    error_of(&b.build().bytes)
}

fn put_u32(bytes: &mut [u8], off: usize, v: u32) {
    bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], off: usize, v: u64) {
    bytes[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn at(record: usize, kind: RecordType, offset: usize) -> At {
    At {
        record: record as u64,
        kind: Some(kind),
        offset: offset as u64,
    }
}

/// Index of a span in the image's records.
fn index_of(image: &Image, kind: RecordType, nth: usize) -> usize {
    let span = image.span(kind, nth);
    image.records.iter().position(|s| *s == span).unwrap()
}

/// The image without its `nth` record of `kind` (records after it are
/// where they were, less its length).
fn without(image: &Image, kind: RecordType, nth: usize) -> Vec<u8> {
    let span = image.span(kind, nth);
    let mut bytes = image.bytes[..span.offset].to_vec();
    bytes.extend_from_slice(&image.bytes[span.end()..]);
    bytes
}

/// The field a `Field` error names, or a panic.
fn field_of(e: &ImageError) -> &str {
    match e {
        ImageError::Field { field, .. } | ImageError::BeyondUserSpace { field, .. } => field,
        e => panic!("not a field error: {e}"),
    }
}

/// Builds `b`, expects a field error in the `nth` record of `kind`, on
/// `field` at `offset` of the payload; returns the error.
fn expect_field(
    b: &ImageBuilder,
    kind: RecordType,
    nth: usize,
    field: &str,
    offset: usize,
) -> ImageError {
    let image = b.build();
    let e = error_of(&image.bytes);
    assert_eq!(field_of(&e), field, "{e}");
    let span = image.span(kind, nth);
    let want = at(index_of(&image, kind, nth), kind, span.payload() + offset);
    assert_eq!(e.at(), want, "{e}");
    e
}

fn entries(bytes: &[u8]) -> Vec<Entry> {
    let mut parser = Parser::new(bytes, Limits::default());
    let mut out = Vec::new();
    while let Some(e) = parser.next_record().unwrap() {
        out.push(e);
    }
    assert!(parser.summary().is_some());
    out
}

#[test]
fn good_image_verifies_with_its_summary() {
    let image = ImageBuilder::new().build();
    let s = check(&image.bytes).unwrap();
    // header task creds sighand signals files thread regs xstate mm,
    // 5 VMAs, 1 + 1 pages.
    assert_eq!(s.records, 17);
    assert_eq!((s.threads, s.files, s.pending_signals), (1, 0, 0));
    assert_eq!((s.armed_itimers, s.restart_blocks), (0, 0));
    assert_eq!(s.bytes, image.bytes.len() as u64);
    assert_eq!((s.comm.as_str(), s.pid), ("cr_target", 74));
    assert_eq!(s.release, "6.12.117-crvmm");
    assert_eq!(s.kernel_config, Some(KernelConfig::CRVMM_4LEVEL));
    assert_eq!(s.task_size, TASK_SIZE_4LEVEL);
    assert_eq!((s.vmas, s.file_vmas), (5, 2));
    assert_eq!((s.pages, s.page_records), (7, 1));
    assert_eq!(s.first_page, Some(layout::DATA));
    assert_eq!(s.last_page, Some(layout::STACK + 0x1e000));
    let trailer = image.span(RecordType::Trailer, 0).payload();
    let crc = u32::from_le_bytes(image.bytes[trailer + 16..trailer + 20].try_into().unwrap());
    assert_eq!(s.checksum, crc);
    let notes = s.notes.join("\n");
    for needle in ["6.12.117-crvmm", "config hash", "XSAVE", "/bin/cr_target"] {
        assert!(notes.contains(needle), "no note on {needle}: {notes}");
    }
    assert!(s
        .to_string()
        .starts_with("good checkpoint image of cr_target (pid 74)"));
}

#[test]
fn records_round_trip() {
    let b = ImageBuilder::new();
    let image = b.build();
    let entries = entries(&image.bytes);
    assert_eq!(entries.len(), image.records.len());
    for (e, span) in entries.iter().zip(&image.records) {
        assert_eq!((e.offset, e.len), (span.offset as u64, span.len));
    }
    assert_eq!(entries[0].record, Record::Header(b.header));
    assert_eq!(entries[1].record, Record::Task(Box::new(b.task)));
    let creds = Record::Creds {
        creds: b.creds,
        groups: b.groups.clone(),
    };
    assert_eq!(entries[2].record, creds);
    assert_eq!(entries[3].record, Record::Sighand(Box::new(b.sighand)));
    let signals = Record::Signals {
        signals: b.signals,
        pending: Vec::new(),
        timers: Vec::new(),
    };
    assert_eq!(entries[4].record, signals);
    let files = Record::Files {
        files: b.files,
        cwd: "/".into(),
    };
    assert_eq!(entries[5].record, files);
    let t = &b.threads[0];
    let thread = Record::Thread {
        thread: Box::new(t.thread),
        pending: Vec::new(),
    };
    assert_eq!(entries[6].record, thread);
    assert_eq!(entries[7].record, Record::Regs(Box::new(t.regs)));
    assert_eq!(entries[8].record, Record::Xstate(t.xstate));
    assert_eq!(entries[9].record, Record::Mm(Box::new(b.mm)));
    for (i, v) in b.vmas.iter().enumerate() {
        let path = (!v.path.is_empty()).then(|| layout::PATH.to_string());
        let want = Record::Vma { vma: v.vma, path };
        assert_eq!(entries[10 + i].record, want);
    }
    let Record::Pages(p) = &entries[15].record else {
        panic!("not pages: {:?}", entries[15]);
    };
    assert_eq!(
        (p.nr_pages, p.first, p.last),
        (7, Some(b.pages[0]), Some(b.pages[6]))
    );
    let Record::Pages(p) = &entries[16].record else {
        panic!("not pages: {:?}", entries[16]);
    };
    assert_eq!(p.nr_pages, 0);
    let Record::Trailer(t) = &entries[17].record else {
        panic!("not the trailer: {:?}", entries[17]);
    };
    assert_eq!(t.nr_records, 17);
}

#[test]
fn minimal_image_verifies() {
    let s = check(&ImageBuilder::minimal().build().bytes).unwrap();
    assert_eq!((s.records, s.vmas, s.pages, s.page_records), (11, 0, 0, 0));
    assert_eq!((s.first_page, s.last_page), (None, None));
}

#[test]
fn pages_split_over_records_and_full_records() {
    let mut b = ImageBuilder::new();
    b.pages_per_record = 3;
    let s = check(&b.build().bytes).unwrap();
    assert_eq!((s.pages, s.page_records), (7, 3));

    // A full record of 256 pages, then more: 300 heap pages.
    let mut b = ImageBuilder::new();
    let heap = layout::HEAP;
    b.vmas[2].vma.end = heap + 300 * PAGE_SIZE;
    b.mm.brk = b.vmas[2].vma.end;
    b.pages = (0..300).map(|i| heap + i * PAGE_SIZE).collect();
    let s = check(&b.build().bytes).unwrap();
    assert_eq!((s.pages, s.page_records), (300, 2));
}

/// Returns the data in pieces of at most 3 bytes, and `Interrupted` now
/// and then, as a pipe or a slow socket may.
struct Trickle<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(3).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn reads_a_trickling_stream() {
    let image = ImageBuilder::new().build();
    let input = Trickle {
        data: &image.bytes,
        calls: 0,
    };
    let s = verify(input, &Limits::default()).unwrap();
    assert_eq!(s.bytes, image.bytes.len() as u64);
}

/// Fails after `left` bytes.
struct Broken<'a>(&'a [u8]);

impl Read for Broken<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn read_errors_are_reported_where_they_happen() {
    let image = ImageBuilder::new().build();
    let cut = image.span(RecordType::Pages, 0).payload() + 100;
    let e = verify(Broken(&image.bytes[..cut]), &Limits::default()).unwrap_err();
    let ImageError::Io { at, source } = e else {
        panic!("not an I/O error: {e}");
    };
    assert_eq!(source.to_string(), "disk on fire");
    assert_eq!(at.offset, cut as u64);
    assert_eq!(at.kind, Some(RecordType::Pages));
}

#[test]
fn page_data_is_not_kept() {
    // The builder's pages differ, so the checksum covers each one.
    assert_ne!(page_data(layout::HEAP), page_data(layout::HEAP + PAGE_SIZE));
    let image = ImageBuilder::new().build();
    let json = serde_json::to_string(&entries(&image.bytes)).unwrap();
    assert!(json.len() < 16 << 10, "{} bytes of JSON", json.len());
}

#[test]
fn the_config_hash_sets_the_user_space_limit() {
    // Made under LA57: a VMA above 47 bits is fine...
    let mut b = ImageBuilder::new();
    b.header.config_hash = KernelConfig {
        task_size: TASK_SIZE_5LEVEL,
        ..KernelConfig::CRVMM_4LEVEL
    }
    .hash();
    let high = 1u64 << 50;
    b.vmas.push(crate::builder::VmaSpec::new(
        high,
        high + PAGE_SIZE,
        3,
        9,
        0,
        "",
    ));
    b.mm.nr_vmas += 1;
    let s = check(&b.build().bytes).unwrap();
    assert_eq!(s.task_size, TASK_SIZE_5LEVEL);

    // ...unless the caller says restart runs with 4-level paging.
    let limits = Limits {
        task_size: Some(TASK_SIZE_4LEVEL),
    };
    let e = verify(&b.build().bytes[..], &limits).unwrap_err();
    assert!(
        matches!(e, ImageError::BeyondUserSpace { ref field, .. } if field == "end"),
        "{e}"
    );

    // An unknown hash: 4-level limits, and a note that says so.
    b.header.config_hash = 0x1234;
    let e = built_error(&b);
    assert!(matches!(e, ImageError::BeyondUserSpace { limit, .. } if limit == TASK_SIZE_4LEVEL));
    b.vmas.pop();
    b.mm.nr_vmas -= 1;
    let s = check(&b.build().bytes).unwrap();
    assert_eq!(s.kernel_config, None);
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("not a configuration this build knows")));
}

/// Runs `inspect` and parses its output.
fn inspect_json(bytes: &[u8]) -> (serde_json::Value, Result<Summary, ImageError>) {
    let mut out = Vec::new();
    let verdict = inspect(bytes, &Limits::default(), &mut out).unwrap();
    let json = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)));
    (json, verdict)
}

#[test]
fn inspect_writes_every_record_and_the_summary() {
    let b = ImageBuilder::new();
    let (json, verdict) = inspect_json(&b.build().bytes);
    assert!(verdict.is_ok());
    let records = json["records"].as_array().unwrap();
    assert_eq!(records.len(), 18);
    let header = &records[0];
    assert_eq!(header["type"], "header");
    assert_eq!(header["magic"], "0x474d49524b435243");
    assert_eq!(header["version"], 5);
    assert_eq!(header["release"], "6.12.117-crvmm");
    assert_eq!(records[1]["comm"], "cr_target");
    assert_eq!(records[1]["nr_threads"], 1);
    assert_eq!(records[1]["rlim"][7]["max"], 4096);
    assert_eq!(records[2]["groups"], serde_json::json!([0, 10]));
    assert_eq!(records[3]["action"][0]["signal"], 10);
    assert_eq!(records[4]["type"], "signals");
    assert_eq!(records[4]["itimer"]["real"]["value"], 0);
    assert_eq!(records[4]["pending"], serde_json::json!([]));
    assert_eq!(records[5]["type"], "files");
    assert_eq!(records[5]["nr_files"], 0);
    assert_eq!(records[5]["cwd"], "/");
    assert_eq!(records[6]["type"], "thread");
    assert_eq!(records[6]["tid"], 74);
    assert_eq!(records[6]["comm"], "cr_target");
    assert_eq!(records[6]["restart"]["kind"], "none");
    assert_eq!(records[7]["gregs"]["cs"], 0x33);
    assert_eq!(records[9]["auxv"][2], serde_json::json!([33, layout::VDSO]));
    assert_eq!(records[10]["path"], layout::PATH);
    assert_eq!(records[12]["path"], serde_json::Value::Null);
    assert_eq!(records[15]["type"], "pages");
    assert_eq!(records[15]["nr_pages"], 7);
    assert_eq!(records[15]["first"], layout::DATA);
    assert_eq!(records[17]["type"], "trailer");
    assert_eq!(json["summary"]["pages"], 7);
    assert_eq!(json["summary"]["threads"], 1);
    assert_eq!(json["summary"]["files"], 0);
    assert_eq!(json["problem"], serde_json::Value::Null);
}

#[test]
fn inspect_of_a_damaged_image_shows_the_records_before_and_the_problem() {
    let mut b = ImageBuilder::new();
    b.vmas[3].vma.start = layout::HEAP + 0x1000;
    let image = b.build();
    let (json, verdict) = inspect_json(&image.bytes);
    assert!(matches!(verdict, Err(ImageError::VmaOrder { .. })));
    assert_eq!(json["records"].as_array().unwrap().len(), 13);
    assert_eq!(json["summary"], serde_json::Value::Null);
    let problem = &json["problem"];
    assert_eq!(problem["record"], 13);
    assert_eq!(problem["type"], "vma");
    assert_eq!(problem["offset"], image.span(RecordType::Vma, 3).payload());
    assert!(problem["message"]
        .as_str()
        .unwrap()
        .contains("VMAs must increase"));
}

#[test]
fn vma_records_decode_all_fields() {
    let image = ImageBuilder::new().build();
    let e = &entries(&image.bytes)[11];
    let Record::Vma { vma, path } = &e.record else {
        panic!("not a VMA: {e:?}");
    };
    let want = Vma {
        start: layout::DATA,
        end: layout::HEAP,
        pgoff: 2,
        prot: 3,
        flags: 0x0a,
        path_len: 15,
        pad: 0,
        shm_id: 0,
    };
    assert_eq!((vma, path.as_deref()), (&want, Some(layout::PATH)));
}
