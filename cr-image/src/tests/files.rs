//! The open files: the files record (working directory, file count), the
//! file records of each kind, and the checkpoint flag that makes fds 0 to
//! 2 inherited; good and damaged.

use super::*;
use crate::builder::FileSpec;
use crate::format::{
    File, Files, FILE_CHR, FILE_DIR, FILE_INHERIT, FILE_REG, MAX_FD, MAX_FILES, O_APPEND,
    O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY,
};

/// Offsets in a file record's payload.
const FD: usize = 0;
const KIND: usize = 4;
const FLAGS: usize = 8;
const FD_FLAGS: usize = 12;
const POS: usize = 16;
const SIZE: usize = 24;
const RDEV: usize = 32;
const PATH_LEN: usize = 40;
const PAD: usize = 44;
const PATH: usize = 48;

/// `O_CLOEXEC`, `O_CREAT`, `O_DSYNC`, `O_DIRECT`, `O_LARGEFILE`,
/// `O_NOATIME`, `O_SYNC` (x86-64).
const O_CLOEXEC: u32 = 0x8_0000;
const O_CREAT: u32 = 0x40;
const O_DSYNC: u32 = 0x1000;
const O_DIRECT: u32 = 0x4000;
const O_LARGEFILE: u32 = 0x8000;
const O_NOATIME: u32 = 0x4_0000;
const O_SYNC: u32 = 0x10_1000;

/// `/dev/null`: 1:3 as `new_encode_dev()` writes it.
const DEV_NULL: u64 = 0x103;

/// `ImageBuilder::new()` in `/srv` with inherited standard fds and a file
/// of each kind: fd 3 a log open for appending (close-on-exec), 4 a
/// directory, 5 `/dev/null`, 7 a configuration file being read.
fn with_files() -> ImageBuilder {
    let mut b = ImageBuilder::new();
    b.set_cwd("/srv").inherit_stdio();
    b.add_file(FileSpec::reg(7, O_RDONLY, 10, 300, "/etc/app.conf"));
    b.add_file(FileSpec::dir(4, 0, "/srv/data"));
    b.add_file(FileSpec::chr(5, O_RDWR, DEV_NULL, "/dev/null"));
    b.add_file(FileSpec::reg(3, O_WRONLY | O_APPEND, 1234, 1234, "/var/log/app.log").cloexec());
    b
}

/// `ImageBuilder::new()` with one open file, fd 3.
fn one_file(f: FileSpec) -> ImageBuilder {
    let mut b = ImageBuilder::new();
    b.add_file(f);
    b
}

/// The regular file `one_file` damages, or a file of another kind.
fn reg() -> FileSpec {
    FileSpec::reg(3, O_RDWR, 5, 10, "/tmp/data")
}

#[test]
fn files_of_each_kind_verify_with_their_summary() {
    let b = with_files();
    let image = b.build();
    let s = check(&image.bytes).unwrap();
    assert_eq!(s.files, 7);
    // header task creds sighand signals files, 7 files, thread regs
    // xstate mm, 5 VMAs, 2 pages.
    assert_eq!(s.records, 6 + 7 + 3 + 1 + 5 + 2);
    assert!(
        s.to_string()
            .contains(": 24 records, 1 threads, 7 open files, 0 pending signals"),
        "{s}"
    );
    let fds: Vec<i32> = b.open_files.iter().map(|f| f.file.fd).collect();
    assert_eq!(fds, [0, 1, 2, 3, 4, 5, 7]);
    let notes = s.notes.join("\n");
    for needle in [
        "working directory /srv: restart changes to it",
        "fd 0 is inherited (CR_CHECKPOINT_INHERIT_STDIO): the caller of restart must have its fd 0 open",
        "fd 2 is inherited",
        "fd 3 (write, close-on-exec, position 1234): restart reopens the regular file \
         /var/log/app.log, which must be there with size 1234 bytes",
        "fd 4 (read, position 0): restart reopens the directory /srv/data",
        "fd 5 (read and write, position 0): restart reopens the character device /dev/null, \
         which must be there (device number 0x103",
        "fd 7 (read, position 10): restart reopens the regular file /etc/app.conf, which must \
         be there with size 300 bytes",
    ] {
        assert!(notes.contains(needle), "no note {needle:?}: {notes}");
    }
    assert!(!notes.contains("more files"), "{notes}");

    // The records as written.
    let entries = entries(&image.bytes);
    assert_eq!(
        entries[5].record,
        Record::Files {
            files: Files {
                nr_files: 7,
                cwd_len: 5
            },
            cwd: "/srv".into()
        }
    );
    for (i, f) in b.open_files.iter().enumerate() {
        let path = (f.file.kind != FILE_INHERIT)
            .then(|| String::from_utf8_lossy(&f.path[..f.path.len() - 1]).into_owned());
        let want = Record::File { file: f.file, path };
        assert_eq!(entries[6 + i].record, want);
    }
    assert!(matches!(entries[13].record, Record::Thread { .. }));

    // No notes on an image without files, in `/`.
    let s = check(&ImageBuilder::new().build().bytes).unwrap();
    let notes = s.notes.join("\n");
    assert!(
        !notes.contains("working directory") && !notes.contains("fd "),
        "{notes}"
    );
}

#[test]
fn inspect_shows_the_cwd_and_each_file() {
    let (json, verdict) = inspect_json(&with_files().build().bytes);
    assert_eq!(verdict.unwrap().files, 7);
    let records = json["records"].as_array().unwrap();
    let files = &records[5];
    assert_eq!(files["type"], "files");
    assert_eq!(files["nr_files"], 7);
    assert_eq!(files["cwd"], "/srv");
    let want = [
        serde_json::json!({"fd": 0, "kind": "inherit", "flags": 0, "cloexec": false, "pos": 0,
            "size": 0, "rdev": 0, "path": null}),
        serde_json::json!({"fd": 3, "kind": "reg", "flags": 0x401, "cloexec": true,
            "pos": 1234, "size": 1234, "rdev": 0, "path": "/var/log/app.log"}),
        serde_json::json!({"fd": 4, "kind": "dir", "flags": 0, "cloexec": false, "pos": 0,
            "size": 0, "rdev": 0, "path": "/srv/data"}),
        serde_json::json!({"fd": 5, "kind": "chr", "flags": 2, "cloexec": false, "pos": 0,
            "size": 0, "rdev": 0x103, "path": "/dev/null"}),
        serde_json::json!({"fd": 7, "kind": "reg", "flags": 0, "cloexec": false, "pos": 10,
            "size": 300, "rdev": 0, "path": "/etc/app.conf"}),
    ];
    for (record, want) in [
        &records[6],
        &records[9],
        &records[10],
        &records[11],
        &records[12],
    ]
    .into_iter()
    .zip(want)
    {
        assert_eq!(record["type"], "file");
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&record[key], value, "{key} of {record}");
        }
        assert!(record.get("sock_type").is_none() && record.get("fd_flags").is_none());
    }
    assert_eq!(json["summary"]["files"], 7);
}

#[test]
fn every_flag_and_extreme_verifies() {
    let big = i64::MAX as u64;
    let all = O_WRONLY | O_APPEND | O_NONBLOCK | O_DSYNC | O_DIRECT | O_LARGEFILE | O_NOATIME;
    let good = [
        FileSpec::reg(0, O_RDWR | O_SYNC, big, big, "/f"),
        FileSpec::reg(MAX_FD as i32 - 1, all, 0, 0, "/f").cloexec(),
        FileSpec::dir(9, big, "/").cloexec(),
        FileSpec::dir(9, 0, "/d").cloexec(),
        FileSpec::chr(1, O_WRONLY | O_NONBLOCK, u64::MAX, "/dev/tty"),
        FileSpec::chr(2, O_RDONLY, 0, "/dev/x"),
        FileSpec::chr(2, O_RDWR, 0, "/dev/x"),
        // Paths of any bytes but NUL, up to CR_MAX_PATH with the NUL.
        FileSpec::reg(3, O_RDONLY, 0, 0, &format!("/{}", "a".repeat(4094))),
        FileSpec::reg(3, O_RDONLY, 0, 0, "/\u{e9}t\u{e9}\n /x"),
    ];
    for f in good {
        let b = one_file(f.clone());
        let s = check(&b.build().bytes).unwrap_or_else(|e| panic!("{:?}: {e}", f.file));
        assert_eq!(s.files, 1);
    }
    // The longest working directory.
    let mut b = ImageBuilder::new();
    b.set_cwd(&format!("/{}", "d".repeat(4094)));
    assert_eq!(b.files.cwd_len, 4096);
    check(&b.build().bytes).unwrap();
    // Inherited fds with cloexec, and only some of them.
    let mut b = ImageBuilder::new();
    b.header.flags = 1;
    b.add_file(FileSpec::inherit(2).cloexec());
    b.add_file(reg());
    check(&b.build().bytes).unwrap();
}

#[test]
fn the_most_files() {
    let mut b = ImageBuilder::minimal();
    for fd in 0..MAX_FILES as i32 {
        b.open_files
            .push(FileSpec::reg(fd * 16, O_RDONLY, 0, 1, "/lib/x.so"));
    }
    b.files.nr_files = MAX_FILES;
    let s = check(&b.build().bytes).unwrap();
    assert_eq!(s.files, MAX_FILES);
    // A note for the first eight, one for the rest.
    assert_eq!(
        s.notes
            .iter()
            .filter(|n| n.contains("restart reopens the regular file"))
            .count(),
        8
    );
    assert!(
        s.notes
            .iter()
            .any(|n| n.starts_with("65528 more files: restart reopens them by path")),
        "{:?}",
        s.notes
    );
    b.files.nr_files = MAX_FILES + 1;
    let e = expect_field(&b, RecordType::Files, 0, "nr_files", 0);
    assert!(e.to_string().contains("CR_MAX_FILES"), "{e}");
}

#[test]
fn files_record_fields() {
    let mut b = ImageBuilder::new();
    b.files.nr_files = u32::MAX;
    expect_field(&b, RecordType::Files, 0, "nr_files", 0);

    // A working directory of 2 to 4096 bytes...
    for cwd_len in [0, 1, 4097, u32::MAX] {
        let mut b = ImageBuilder::new();
        b.files.cwd_len = cwd_len;
        let e = expect_field(&b, RecordType::Files, 0, "cwd_len", 4);
        assert!(e.to_string().contains("2 to CR_MAX_PATH (4096)"), "{e}");
    }
    // ...all of the record's payload after the fixed part...
    let mut b = ImageBuilder::new();
    b.files.cwd_len = 3;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 10,
                expected: 11,
                ..
            }
        ),
        "{e}"
    );
    let files = image.span(RecordType::Files, 0);
    assert_eq!(e.at(), at(5, RecordType::Files, files.payload() + 4));
    // ...one absolute, NUL-terminated path.
    for cwd in [&b"/srv"[..], b"/s\0v\0", b"srv\0", b"\0\0", b"//\0\0"] {
        let mut b = ImageBuilder::new();
        b.cwd = cwd.to_vec();
        b.files.cwd_len = cwd.len() as u32;
        expect_field(&b, RecordType::Files, 0, "cwd", 8);
    }
    let mut b = ImageBuilder::new();
    b.set_cwd("/");
    check(&b.build().bytes).unwrap();
}

#[test]
fn file_record_fields() {
    type Change = fn(&mut File);
    let cases: [(Change, &str, usize); 11] = [
        (|f| f.sock_type = 1, "sock_type", PAD),
        (|f| f.fd = -1, "fd", FD),
        (|f| f.fd = i32::MIN, "fd", FD),
        (|f| f.fd = MAX_FD as i32, "fd", FD),
        (|f| f.kind = 0, "kind", KIND),
        (|f| f.kind = 9, "kind", KIND),
        (|f| f.kind = u32::MAX, "kind", KIND),
        (|f| f.flags |= O_CLOEXEC, "flags", FLAGS),
        (|f| f.flags |= O_CREAT, "flags", FLAGS),
        (|f| f.fd_flags = 2, "fd_flags", FD_FLAGS),
        (|f| f.pos = i64::MAX as u64 + 1, "pos", POS),
    ];
    for (change, field, offset) in cases {
        let mut b = one_file(reg());
        change(&mut b.open_files[0].file);
        let e = expect_field(&b, RecordType::File, 0, field, offset);
        assert!(matches!(e, ImageError::Field { .. }), "{e}");
    }
    // Access mode 3, in each kind that has flags.
    for f in [reg(), FileSpec::chr(3, 0, 0, "/dev/x")] {
        let mut b = one_file(f);
        b.open_files[0].file.flags |= 3;
        let e = expect_field(&b, RecordType::File, 0, "flags", FLAGS);
        assert!(e.to_string().contains("access mode 3"), "{e}");
    }
    // The problem names the file and its fd, as restart's log does.
    let mut b = with_files();
    b.open_files[4].file.fd_flags = 3;
    let e = expect_field(&b, RecordType::File, 4, "fd_flags", FD_FLAGS);
    assert!(
        e.to_string()
            .contains("field `fd_flags` = 0x3: file 4 (fd 4): descriptor flags other than"),
        "{e}"
    );
}

#[test]
fn kind_rules() {
    type Change = fn(&mut File);
    let cases: Vec<(FileSpec, Change, &str, usize)> = vec![
        // A regular file: a path, no device, a size that is a loff_t.
        (reg(), |f| f.rdev = 1, "rdev", RDEV),
        (reg(), |f| f.size = i64::MAX as u64 + 1, "size", SIZE),
        (reg(), |f| f.size = u64::MAX, "size", SIZE),
        // A directory: read only, no size, no device.
        (
            FileSpec::dir(3, 0, "/d"),
            |f| f.flags = O_WRONLY,
            "flags",
            FLAGS,
        ),
        (
            FileSpec::dir(3, 0, "/d"),
            |f| f.flags = O_RDWR,
            "flags",
            FLAGS,
        ),
        (FileSpec::dir(3, 0, "/d"), |f| f.size = 4096, "size", SIZE),
        (FileSpec::dir(3, 0, "/d"), |f| f.rdev = 1, "rdev", RDEV),
        // A character device: no size.
        (
            FileSpec::chr(3, 2, 1, "/dev/x"),
            |f| f.size = 1,
            "size",
            SIZE,
        ),
        // Inherited: nothing but its fd (and cloexec), 0 to 2.
        (FileSpec::inherit(1), |f| f.flags = O_WRONLY, "flags", FLAGS),
        (FileSpec::inherit(1), |f| f.pos = 1, "pos", POS),
        (FileSpec::inherit(1), |f| f.size = 1, "size", SIZE),
        (FileSpec::inherit(1), |f| f.rdev = DEV_NULL, "rdev", RDEV),
        (FileSpec::inherit(1), |f| f.fd = 3, "fd", FD),
        (FileSpec::inherit(1), |f| f.pos = u64::MAX, "pos", POS),
    ];
    for (spec, change, field, offset) in cases {
        let mut b = one_file(spec);
        b.header.flags = 1;
        change(&mut b.open_files[0].file);
        let e = expect_field(&b, RecordType::File, 0, field, offset);
        assert!(matches!(e, ImageError::Field { .. }), "{e}");
    }
    // Inherited fds need the header flag.
    let mut b = with_files();
    b.header.flags = 0;
    let e = expect_field(&b, RecordType::File, 0, "kind", KIND);
    assert!(e.to_string().contains("CR_CHECKPOINT_INHERIT_STDIO"), "{e}");
    // And have no path.
    let mut b = one_file(FileSpec::new(0, FILE_INHERIT, 0, "/dev/tty"));
    b.header.flags = 1;
    expect_field(&b, RecordType::File, 0, "path_len", PATH_LEN);
}

#[test]
fn file_paths() {
    // Every kind reopened by path needs one of 2 to 4096 bytes.
    for kind in [FILE_REG, FILE_DIR, FILE_CHR] {
        for path_len in [0, 1, 4097, u32::MAX] {
            let mut b = one_file(FileSpec::new(3, kind, O_RDONLY, "/x"));
            b.open_files[0].file.path_len = path_len;
            b.open_files[0].path.truncate(path_len.min(2) as usize);
            let e = expect_field(&b, RecordType::File, 0, "path_len", PATH_LEN);
            assert!(e.to_string().contains("2 to CR_MAX_PATH"), "{e}");
        }
    }
    // A path_len that disagrees with the record's length.
    let mut b = one_file(reg());
    b.open_files[0].file.path_len = 4;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 58,
                expected: 52,
                ..
            }
        ),
        "{e}"
    );
    let file = image.span(RecordType::File, 0);
    assert_eq!(e.at(), at(6, RecordType::File, file.payload() + PATH_LEN));
    // Without its NUL, a NUL inside, relative.
    for path in [&b"/tmp/data"[..], b"/tmp\0data\0", b"tmp/data\0", b"\0\0"] {
        let mut b = one_file(reg());
        b.open_files[0].path = path.to_vec();
        b.open_files[0].file.path_len = path.len() as u32;
        let e = expect_field(&b, RecordType::File, 0, "path", PATH);
        assert!(e.to_string().contains("file 0 (fd 3): "), "{e}");
    }
}

#[test]
fn fds_increase() {
    // Decreasing, and the same fd twice.
    for (second, third) in [(5, 4), (5, 5), (0, 9)] {
        let mut b = ImageBuilder::new();
        for fd in [3, second, third] {
            b.open_files.push(FileSpec::reg(fd, 0, 0, 0, "/f"));
        }
        b.files.nr_files = 3;
        let image = b.build();
        let e = error_of(&image.bytes);
        let (fd, prev) = if third <= second {
            (third, second)
        } else {
            (second, 3)
        };
        assert!(
            matches!(e, ImageError::FdOrder { fd: f, prev: p, .. } if (f, p) == (fd, prev)),
            "{e}"
        );
        let nth = if third <= second { 2 } else { 1 };
        let span = image.span(RecordType::File, nth);
        let want = at(
            index_of(&image, RecordType::File, nth),
            RecordType::File,
            span.payload(),
        );
        assert_eq!(e.at(), want);
        assert!(e.to_string().contains("increasing fd order"), "{e}");
    }
    // The builder keeps them in order whatever order they are added in.
    let mut b = ImageBuilder::new();
    for fd in [9, 3, 200, 4] {
        b.add_file(FileSpec::reg(fd, 0, 0, 0, "/f"));
    }
    assert_eq!(check(&b.build().bytes).unwrap().files, 4);
}

#[test]
fn file_count_must_match_the_files_record() {
    // Announced 3, found 2: the thread record comes too early.
    let mut b = one_file(reg());
    b.add_file(FileSpec::dir(4, 0, "/"));
    b.files.nr_files = 3;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::FileCount {
                declared: 3,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    let thread = image.span(RecordType::Thread, 0);
    assert_eq!(e.at(), at(8, RecordType::Thread, thread.offset));
    assert!(
        e.to_string()
            .contains("the files record announces 3 file records, found 2"),
        "{e}"
    );

    // Announced 1 (or none), found 2: the second (first) is one too many.
    for declared in [1, 0] {
        b.files.nr_files = declared;
        let image = b.build();
        let e = error_of(&image.bytes);
        assert!(
            matches!(e, ImageError::FileCount { declared: d, found, .. } if d == declared && found == declared + 1),
            "{e}"
        );
        let file = image.span(RecordType::File, declared as usize);
        assert_eq!(
            e.at(),
            at(6 + declared as usize, RecordType::File, file.offset)
        );
    }
}

#[test]
fn files_records_in_their_place() {
    let image = with_files().build();
    let files = image.span(RecordType::Files, 0);
    // No files record: a file record where it belongs.
    let bytes = without(&image, RecordType::Files, 0);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::UnexpectedRecord {
                expected: "the files record",
                found: RecordType::File,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.at().record, 5);
    // An image of the previous draft of format 2: no files records at all.
    let old = ImageBuilder::new().build();
    let bytes = without(&old, RecordType::Files, 0);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::UnexpectedRecord {
                expected: "the files record",
                found: RecordType::Thread,
                ..
            }
        ),
        "{e}"
    );
    // The files record before the signals record.
    let signals = image.span(RecordType::Signals, 0);
    let mut bytes = image.bytes[..signals.offset].to_vec();
    bytes.extend_from_slice(&image.bytes[files.offset..files.end()]);
    bytes.extend_from_slice(&image.bytes[signals.offset..signals.end()]);
    bytes.extend_from_slice(&image.bytes[files.end()..]);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::UnexpectedRecord {
                expected: "the signals record",
                found: RecordType::Files,
                ..
            }
        ),
        "{e}"
    );
    // A second files record among the file records.
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, image.span(RecordType::File, 3).offset, 14);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::UnexpectedRecord {
                expected: "a file record",
                found: RecordType::Files,
                ..
            }
        ),
        "{e}"
    );
    // A file record after the first thread group, and among the VMAs.
    let image = {
        let mut b = one_file(reg());
        b.add_thread(75);
        b.build()
    };
    for (kind, nth, expected) in [
        (RecordType::Thread, 1, "a thread record"),
        (RecordType::Vma, 0, "a vma record"),
        (RecordType::Mm, 0, "the mm record"),
    ] {
        let mut bytes = image.bytes.clone();
        let span = image.span(kind, nth);
        put_u32(&mut bytes, span.offset, RecordType::File as u32);
        let e = error_of(&bytes);
        assert!(
            matches!(e, ImageError::UnexpectedRecord { expected: x, found: RecordType::File, .. } if x == expected),
            "{kind}: {e}"
        );
    }
}

#[test]
fn absurd_file_record_lengths() {
    let image = with_files().build();
    for (kind, len) in [
        (RecordType::Files, 7),
        (RecordType::Files, 8 + 4097),
        (RecordType::Files, u32::MAX),
        (RecordType::File, 47),
        (RecordType::File, 48 + 4096 + (32 << 20) + 1),
        (RecordType::File, u32::MAX),
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
    assert_eq!(RecordType::Files.len_bounds(), (8, 8 + 4096));
    assert_eq!(RecordType::File.len_bounds(), (48, 48 + 4096 + (32 << 20)));
}

#[test]
fn truncation_in_the_files() {
    let image = with_files().build();
    let cases = [
        (
            image.span(RecordType::Files, 0).offset,
            "before the files record",
        ),
        (
            image.span(RecordType::File, 0).offset,
            "before all the file records the files record announces",
        ),
        (
            image.span(RecordType::File, 6).offset,
            "before all the file records the files record announces",
        ),
        (
            image.span(RecordType::File, 3).payload() + 50,
            "inside the payload",
        ),
        (
            image.span(RecordType::Thread, 0).offset,
            "before all the thread records the task record announces",
        ),
    ];
    for (cut, what) in cases {
        match error_of(&image.bytes[..cut]) {
            ImageError::Truncated { what: w, at } => {
                assert_eq!((w, at.offset), (what, cut as u64), "cut at {cut}")
            }
            e => panic!("cut at {cut}: {e}"),
        }
    }
    // Every cut of a small image with files, where the data ends.
    let mut b = with_files();
    b.vmas.clear();
    b.mm.nr_vmas = 0;
    b.pages.clear();
    let image = b.build();
    for cut in 0..image.bytes.len() {
        let e = error_of(&image.bytes[..cut]);
        let ImageError::Truncated { at, .. } = e else {
            panic!("cut at {cut}: {e}");
        };
        assert_eq!(at.offset, cut as u64, "cut at {cut}: {e}");
    }
}

#[test]
fn damage_in_a_path_is_found_once_resealed() {
    let image = with_files().build();
    let file = image.span(RecordType::File, 4);
    let mut bytes = image.bytes.clone();
    bytes[file.payload() + PATH + 3] = 0;
    assert!(crate::builder::reseal(&mut bytes));
    let e = error_of(&bytes);
    assert_eq!(field_of(&e), "path");
    assert_eq!(e.at().offset, (file.payload() + PATH) as u64);
}

#[test]
fn failed_checkpoint_among_the_files() {
    let mut b = with_files();
    b.failure = Some(crate::builder::Failure {
        after: 8,
        errno: -9,
        message: "fd 3: not a file restart can reopen".into(),
    });
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::CheckpointFailed { errno: -9, .. }),
        "{e}"
    );
    assert_eq!(e.at().record, 8);
    assert!(e.to_string().contains("EBADF"), "{e}");
}

#[test]
fn deleted_files_carry_their_content() {
    let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let b = one_file(FileSpec::deleted(9, O_RDWR, 1234, "/tmp/x/gone", &content));
    let s = check(&b.build().bytes).unwrap();
    assert_eq!(s.files, 1);

    // The content's length is the size; at most 32 MiB.
    let mut short = one_file(FileSpec::deleted(9, O_RDWR, 0, "/tmp/x/gone", &content));
    short.open_files[0].file.size -= 1;
    let e = check(&short.build().bytes).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    let mut big = one_file(FileSpec::deleted(9, O_RDWR, 0, "/tmp/x/gone", b""));
    big.open_files[0].file.size = (32 << 20) + 1;
    let e = check(&big.build().bytes).unwrap_err().to_string();
    assert!(e.contains("CR_MAX_DELETED"), "{e}");
    let mut dev = one_file(FileSpec::deleted(9, O_RDWR, 0, "/tmp/x/gone", b"ab"));
    dev.open_files[0].file.rdev = 1;
    let e = check(&dev.build().bytes).unwrap_err().to_string();
    assert!(e.contains("rdev") && e.contains("a deleted file"), "{e}");
}

#[test]
fn pipe_ends_verify_and_are_noted() {
    let mut b = ImageBuilder::new();
    // CR_CHECKPOINT_INHERIT_STDIO. A pipeline's stdin, a pipe's write end
    // and a FIFO open both ways; two unix sockets and an eventfd.
    b.header.flags = 1;
    b.add_file(FileSpec::pipe(0, O_RDONLY, 4242, 60 * 1024, None));
    b.add_file(FileSpec::pipe(4, O_WRONLY | O_NONBLOCK, 4242, 60 * 1024, None).cloexec());
    b.add_file(FileSpec::pipe(5, O_RDWR, 77, 0, Some("/tmp/fifo")));
    b.add_file(FileSpec::unix(6, 2, 900, 901));
    b.add_file(FileSpec::unix(7, 1, 902, 0));
    b.add_file(FileSpec::new(8, crate::format::FILE_EVENTFD, O_RDWR, ""));
    let s = check(&b.build().bytes).unwrap();
    let notes = s.notes.join("\n");
    assert!(
        notes.contains("fd 0 is the read end of a pipe (inode 4242, 61440 bytes"),
        "{notes}"
    );
    assert!(notes.contains("fd 4 is the write end of a pipe"), "{notes}");
    assert!(
        notes.contains("fd 5 is a read-write end of the FIFO /tmp/fifo"),
        "{notes}"
    );
    for want in [
        "fd 6 is a unix datagram socket (inode 900, peer of inode 901)",
        "fd 7 is a unix stream socket (inode 902, whose peer is gone)",
        "fd 8 is an eventfd",
    ] {
        assert!(notes.contains(want), "{want} in {notes}");
    }
}

#[test]
fn pipe_end_rules() {
    type Change = fn(&mut File);
    let anon = || FileSpec::pipe(3, O_RDONLY, 1, 0, None);
    let cases: Vec<(FileSpec, Change, &str, usize)> = vec![
        // A pipe has no position, no packet mode, and only a FIFO is O_RDWR.
        (anon(), |f| f.pos = 1, "pos", POS),
        (anon(), |f| f.flags = O_RDONLY | 0x4000, "flags", FLAGS),
        (anon(), |f| f.flags = O_RDWR, "flags", FLAGS),
    ];
    for (spec, change, field, offset) in cases {
        let mut b = one_file(spec);
        change(&mut b.open_files[0].file);
        let e = expect_field(&b, RecordType::File, 0, field, offset);
        assert!(matches!(e, ImageError::Field { .. }), "{e}");
    }
    // A unix socket: one of three types, read-write, no path or position.
    let sock = || FileSpec::unix(3, 1, 9, 10);
    let cases: Vec<(FileSpec, Change, &str, usize)> = vec![
        (sock(), |f| f.sock_type = 3, "sock_type", PAD),
        (sock(), |f| f.flags = O_RDONLY, "flags", FLAGS),
        (sock(), |f| f.pos = 5, "pos", POS),
    ];
    for (spec, change, field, offset) in cases {
        let mut b = one_file(spec);
        change(&mut b.open_files[0].file);
        expect_field(&b, RecordType::File, 0, field, offset);
    }
    // A FIFO's path is 2 to 4096 bytes.
    let mut b = one_file(FileSpec::pipe(3, O_RDWR, 1, 0, Some("/f")));
    b.open_files[0].file.path_len = 1;
    b.open_files[0].path.truncate(1);
    expect_field(&b, RecordType::File, 0, "path_len", PATH_LEN);
}
