//! Damage to the stream: header, record order, lengths, padding,
//! truncation, checksum, trailer, error records, trailing data.

use super::*;
use crate::builder::{pages_payload, reseal, Failure};
use crate::format::{IMAGE_MAGIC, PAGE_ENTRY_LEN};

#[test]
fn bad_magic() {
    let mut bytes = ImageBuilder::new().build().bytes;
    bytes[8] ^= 0xff;
    let e = error_of(&bytes);
    assert!(matches!(e, ImageError::BadMagic { found, .. } if found == IMAGE_MAGIC ^ 0xff));
    assert_eq!(e.at(), at(0, RecordType::Header, 8));
    assert!(e.to_string().contains("not a checkpoint image"), "{e}");
}

#[test]
fn other_version() {
    // Versions 1 (no thread records), 2 (no pipes), 3 (no POSIX timers)
    // and 4 (no shared memory) are no longer read, nor any other.
    for version in [1, 2, 3, 4, 6, 0] {
        let mut b = ImageBuilder::new();
        b.header.version = version;
        let e = built_error(&b);
        assert!(
            matches!(e, ImageError::Version { found, .. } if found == version),
            "{e}"
        );
        assert_eq!(e.at(), at(0, RecordType::Header, 16));
        assert!(e.to_string().contains("this build reads version 5"), "{e}");
    }
}

#[test]
fn other_arch_and_page_size() {
    let mut b = ImageBuilder::new();
    b.header.arch = 2;
    let e = built_error(&b);
    assert!(matches!(e, ImageError::Arch { found: 2, .. }), "{e}");
    assert_eq!(e.at().offset, 20);

    let mut b = ImageBuilder::new();
    b.header.page_size = 16384;
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::PageSize { found: 16384, .. }),
        "{e}"
    );
    assert_eq!(e.at().offset, 24);
}

#[test]
fn header_fields() {
    let mut b = ImageBuilder::new();
    b.header.release = [b'x'; 72];
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::Field { ref field, .. } if field == "release"),
        "{e}"
    );

    // CR_CHECKPOINT_INHERIT_STDIO is the only flag.
    for flags in [2, 3, 0x100, u32::MAX] {
        let mut b = ImageBuilder::new();
        b.header.flags = flags;
        let e = built_error(&b);
        assert!(
            matches!(e, ImageError::Field { ref field, value, .. } if field == "flags" && value == u64::from(flags)),
            "{e}"
        );
        assert_eq!(e.at(), at(0, RecordType::Header, 8 + 20));
        assert!(e.to_string().contains("unknown checkpoint flags"), "{e}");
    }
    // The flag alone (no fd was open to inherit) is fine.
    let mut b = ImageBuilder::new();
    b.header.flags = 1;
    check(&b.build().bytes).unwrap();
}

#[test]
fn not_an_image() {
    // No header first: a task record.
    let image = ImageBuilder::new().build();
    let task = image.span(RecordType::Task, 0);
    let e = error_of(&image.bytes[task.offset..]);
    assert!(
        matches!(e, ImageError::UnexpectedRecord { found: RecordType::Task, expected, .. } if expected.contains("header")),
        "{e}"
    );
    // Text.
    let e = error_of(b"#!/bin/sh\necho hello\n");
    assert!(matches!(e, ImageError::UnknownType { .. }), "{e}");
    // Nothing.
    let e = error_of(b"");
    assert!(matches!(e, ImageError::Truncated { what, .. } if what.contains("header")));
}

#[test]
fn unknown_and_misplaced_records() {
    let image = ImageBuilder::new().build();
    let creds = image.span(RecordType::Creds, 0);
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, creds.offset, 16);
    let e = error_of(&bytes);
    assert!(
        matches!(e, ImageError::UnknownType { found: 16, .. }),
        "{e}"
    );
    assert_eq!(e.at().record, 2);
    assert_eq!(e.at().offset, creds.offset as u64);

    // A sighand record where the creds record belongs.
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, creds.offset, RecordType::Sighand as u32);
    let e = error_of(&bytes);
    let ImageError::UnexpectedRecord {
        expected, found, ..
    } = e
    else {
        panic!("{e}");
    };
    assert_eq!((expected, found), ("the creds record", RecordType::Sighand));
}

#[test]
fn page_data_must_end_with_an_empty_pages_record() {
    // No empty pages record: cut it out, fix the count and checksum.
    let image = ImageBuilder::new().build();
    let empty = image.span(RecordType::Pages, 1);
    let mut bytes = image.bytes[..empty.offset].to_vec();
    let trailer = &image.bytes[empty.end()..];
    bytes.extend_from_slice(trailer);
    let n = bytes.len();
    put_u64(&mut bytes, n - 16, 16);
    assert!(reseal(&mut bytes));
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::UnexpectedRecord {
                found: RecordType::Trailer,
                expected: "a pages record",
                ..
            }
        ),
        "{e}"
    );

    // A pages record after the empty one.
    let mut bytes = image.bytes[..empty.end()].to_vec();
    let payload = pages_payload(&[layout::STACK + 0x1e000]);
    bytes.extend_from_slice(&(RecordType::Pages as u32).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let e = error_of(&bytes);
    assert!(
        matches!(e, ImageError::UnexpectedRecord { found: RecordType::Pages, expected, .. } if expected.contains("trailer")),
        "{e}"
    );
}

#[test]
fn every_truncation_is_reported_where_the_data_ends() {
    let image = ImageBuilder::minimal().build();
    for cut in 0..image.bytes.len() {
        let e = error_of(&image.bytes[..cut]);
        let ImageError::Truncated { at, .. } = e else {
            panic!("cut at {cut}: {e}");
        };
        assert_eq!(at.offset, cut as u64, "cut at {cut}: {e}");
    }
}

/// The `what` of the truncation of `bytes` at `cut`.
fn truncated_in(bytes: &[u8], cut: usize) -> &'static str {
    match error_of(&bytes[..cut]) {
        ImageError::Truncated { what, .. } => what,
        e => panic!("cut at {cut}: {e}"),
    }
}

#[test]
fn truncation_names_the_region() {
    let image = ImageBuilder::new().build();
    let bytes = &image.bytes;
    let vma = image.span(RecordType::Vma, 0); // has padding
    let pages = image.span(RecordType::Pages, 0);
    let trailer = image.span(RecordType::Trailer, 0);
    let cases = [
        (0, "before its header record"),
        (5, "inside a record header"),
        (
            image.span(RecordType::Task, 0).offset,
            "before the task record",
        ),
        (
            image.span(RecordType::Mm, 0).offset + 100,
            "inside the payload",
        ),
        (vma.payload() + vma.len as usize, "inside the padding"),
        (
            vma.offset,
            "before all the VMA records the mm record announces",
        ),
        (pages.payload() + 4, "inside the payload"),
        (pages.payload() + 8 + 12, "inside the page addresses"),
        (pages.payload() + 8 + 7 * 8, "inside the page data"),
        (pages.payload() + 8 + 7 * 8 + 9000, "inside the page data"),
        (
            pages.end(),
            "before the empty pages record that ends the page data",
        ),
        (trailer.offset, "before its trailer"),
        (trailer.offset + 20, "inside the payload"),
    ];
    for (cut, what) in cases {
        assert_eq!(truncated_in(bytes, cut), what, "cut at {cut}");
    }
    // Each record is cut in its header, its payload, its padding.
    for span in &image.records {
        for cut in [
            span.offset + 3,
            span.payload() + span.len as usize / 2,
            span.end() - 1,
        ] {
            assert!(matches!(
                error_of(&bytes[..cut]),
                ImageError::Truncated { .. }
            ));
        }
    }
}

#[test]
fn nonzero_padding() {
    let image = ImageBuilder::new().build();
    let vma = image.span(RecordType::Vma, 0);
    let pad = vma.payload() + vma.len as usize;
    assert!(pad < vma.end());
    let mut bytes = image.bytes.clone();
    bytes[pad] = 0x20;
    let e = error_of(&bytes);
    assert!(matches!(e, ImageError::Padding { value: 0x20, .. }), "{e}");
    assert_eq!(e.at(), at(10, RecordType::Vma, pad));

    // Padding of the creds record, with one group.
    let mut b = ImageBuilder::new();
    b.groups = vec![5];
    b.creds.ngroups = 1;
    let mut image = b.build();
    let creds = image.span(RecordType::Creds, 0);
    image.bytes[creds.end() - 1] = 1;
    let e = error_of(&image.bytes);
    assert!(matches!(e, ImageError::Padding { value: 1, .. }), "{e}");
    assert_eq!(e.at().offset, creds.end() as u64 - 1);
}

#[test]
fn flipped_byte_in_page_data_fails_the_checksum() {
    let image = ImageBuilder::new().build();
    let pages = image.span(RecordType::Pages, 0);
    let data = pages.payload() + 8 + 7 * 8;
    let trailer = image.span(RecordType::Trailer, 0);
    for off in [data, data + 5000, pages.end() - 1] {
        let mut bytes = image.bytes.clone();
        bytes[off] ^= 0x01;
        let e = error_of(&bytes);
        let ImageError::Checksum {
            at,
            stored,
            computed,
        } = e
        else {
            panic!("flip at {off}: {e}");
        };
        assert_ne!(stored, computed);
        assert_eq!(
            at,
            super::at(17, RecordType::Trailer, trailer.payload() + 16)
        );
    }
    // Also in the XSAVE buffer, which is not otherwise checked.
    let xstate = image.span(RecordType::Xstate, 0);
    let mut bytes = image.bytes.clone();
    bytes[xstate.payload() + 16 + 100] ^= 0x80;
    assert!(matches!(error_of(&bytes), ImageError::Checksum { .. }));
}

#[test]
fn wrong_trailer() {
    let image = ImageBuilder::new().build();
    let t = image.span(RecordType::Trailer, 0).payload();

    let mut bytes = image.bytes.clone();
    put_u64(&mut bytes, t + 8, 18);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::RecordCount {
                trailer: 18,
                counted: 17,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.at().offset, t as u64 + 8);

    let mut bytes = image.bytes.clone();
    bytes[t] ^= 0x10;
    let e = error_of(&bytes);
    assert!(matches!(e, ImageError::TrailerMagic { .. }), "{e}");

    let mut bytes = image.bytes.clone();
    bytes.extend_from_slice(b"more");
    let e = error_of(&bytes);
    assert!(matches!(e, ImageError::TrailingData { .. }), "{e}");
    assert_eq!(e.at().offset, image.bytes.len() as u64);
}

#[test]
fn absurd_lengths_are_refused_before_reading() {
    let image = ImageBuilder::new().build();
    for (kind, len) in [
        (RecordType::Header, 0),
        (RecordType::Task, 297),
        (RecordType::Task, 360), // v1's
        (RecordType::Signals, 55),
        (RecordType::Signals, 56 + 65536 * 128 + 4096 * 48 + 1),
        (RecordType::Thread, 135),
        (RecordType::Thread, u32::MAX),
        (RecordType::Creds, 79),
        (RecordType::Creds, u32::MAX),
        (RecordType::Xstate, 16 + 65537),
        (RecordType::Vma, u32::MAX),
        (RecordType::Pages, 7),
        (RecordType::Pages, u32::MAX),
        (RecordType::Trailer, 1 << 30),
    ] {
        let span = image.span(kind, 0);
        let mut bytes = image.bytes.clone();
        put_u32(&mut bytes, span.offset + 4, len);
        let e = error_of(&bytes);
        let (min, max) = kind.len_bounds();
        assert!(
            matches!(e, ImageError::BadLength { len: l, min: a, max: b, .. } if l == len && (a, b) == (min, max)),
            "{kind} {len}: {e}"
        );
        assert_eq!(e.at().offset, span.offset as u64 + 4);
    }

    // More pages in a record than the kernel writes: the length is too long.
    let mut b = ImageBuilder::new();
    let heap = layout::HEAP;
    b.vmas[2].vma.end = heap + 300 * PAGE_SIZE;
    b.pages = (0..300).map(|i| heap + i * PAGE_SIZE).collect();
    b.pages_per_record = 257;
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::BadLength { len, .. } if u64::from(len) == 8 + 257 * PAGE_ENTRY_LEN),
        "{e}"
    );

    // Counts that disagree with the length.
    let xstate = image.span(RecordType::Xstate, 0);
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, xstate.payload() + 8, 1000);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 848,
                expected: 1016,
                ..
            }
        ),
        "{e}"
    );

    let vma = image.span(RecordType::Vma, 0);
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, vma.payload() + 32, u32::MAX);
    let e = error_of(&bytes);
    assert!(
        matches!(e, ImageError::LengthMismatch { len: 63, .. }),
        "{e}"
    );
    assert_eq!(e.at().offset, vma.payload() as u64 + 32);
}

#[test]
fn too_many_pages_in_a_record() {
    let image = ImageBuilder::new().build();
    let pages = image.span(RecordType::Pages, 0);
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, pages.payload(), 257);
    let e = error_of(&bytes);
    assert!(
        matches!(e, ImageError::TooManyPages { nr_pages: 257, .. }),
        "{e}"
    );
    assert_eq!(e.at(), at(15, RecordType::Pages, pages.payload()));

    put_u32(&mut bytes, pages.payload(), 6);
    let e = error_of(&bytes);
    assert!(matches!(e, ImageError::LengthMismatch { .. }), "{e}");
}

#[test]
fn failed_checkpoint_is_reported_as_such() {
    let mut b = ImageBuilder::new();
    b.failure = Some(Failure {
        after: 17,
        errno: -16,
        message: "thawed during checkpoint: image discarded".into(),
    });
    let image = b.build();
    let e = error_of(&image.bytes);
    let ImageError::CheckpointFailed {
        at,
        errno,
        ref message,
    } = e
    else {
        panic!("{e}");
    };
    assert_eq!(errno, -16);
    assert_eq!(message, "thawed during checkpoint: image discarded");
    assert_eq!(
        at,
        super::at(
            17,
            RecordType::Error,
            image.span(RecordType::Error, 0).offset
        )
    );
    assert!(
        e.to_string()
            .contains("the checkpoint failed with EBUSY (-16)"),
        "{e}"
    );

    // The parser shows the error record first.
    let mut parser = Parser::new(&image.bytes[..], Limits::default());
    let mut last = None;
    while let Ok(Some(entry)) = parser.next_record() {
        last = Some(entry);
    }
    assert!(matches!(
        last.unwrap().record,
        Record::Error {
            errno: -16,
            name: "EBUSY",
            ..
        }
    ));
    assert!(parser.summary().is_none());

    // A checkpoint refused before it wrote anything: only an error record.
    b.failure = Some(Failure {
        after: 0,
        errno: -95,
        message: "resource shared mapping 0x7f0000000000-0x7f0000001000: not supported".into(),
    });
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::CheckpointFailed { errno: -95, .. }),
        "{e}"
    );
    assert_eq!(e.at().record, 0);

    // An error record whose message length disagrees with the record's.
    let mut image = b.build();
    image.bytes[4] -= 1;
    let e = error_of(&image.bytes);
    assert!(matches!(e, ImageError::LengthMismatch { .. }), "{e}");
}

#[test]
fn error_messages_name_record_offset_and_field() {
    let mut b = ImageBuilder::new();
    b.vmas[4].vma.start = 0xffff_8000_0000_0000;
    b.vmas[4].vma.end = 0xffff_8000_0001_0000;
    let image = b.build();
    let e = error_of(&image.bytes);
    let end = image.span(RecordType::Vma, 4).payload() + 8;
    assert_eq!(
        e.to_string(),
        format!(
            "record 14 (vma) at byte {end} ({end:#x}): field `end` = 0xffff800000010000 is \
             beyond the user address space (which ends at 0x7ffffffff000)"
        )
    );
}
