//! `crvmm image inspect|verify` end to end on images from the builder of
//! `crvmm-cr-image`: no VM is booted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crvmm_cr_image::builder::{
    layout, user_signal, Failure, FileSpec, ImageBuilder, SI_QUEUE, SI_TKILL,
};
use crvmm_cr_image::format::{Itimer, RecordType, Restart, Siginfo};
use crvmm_cr_image::{KernelConfig, TASK_SIZE_5LEVEL};

const CRVMM: &str = env!("CARGO_BIN_EXE_crvmm");

/// Runs `crvmm image ARGS`, with `stdin` as its standard input.
fn crvmm_image(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(CRVMM)
        .arg("image")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // A writer thread, so that a large image cannot deadlock the pipes.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `bytes` to `name` in `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn verify_accepts_a_good_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new().build();
    let path = write(dir.path(), "good.img", &image.bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{}: good checkpoint image of cr_target (pid 74) from kernel 6.12.117-crvmm: 17 records, 1 threads, 0 open files, 0 pending signals, 5 VMAs, 7 pages in 1 page records, {} bytes",
            path.display(),
            image.bytes.len()
        )),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("note: written by kernel 6.12.117-crvmm"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: config hash 0x5bb90bddf6265d98"),
        "{stderr}"
    );
}

#[test]
fn verify_names_record_offset_and_field_of_damage() {
    let dir = tempfile::tempdir().unwrap();

    // A flipped byte in page data: the checksum.
    let image = ImageBuilder::new().build();
    let mut bytes = image.bytes.clone();
    let data = image.span(RecordType::Pages, 0).payload() + 8 + 7 * 8 + 100;
    bytes[data] ^= 4;
    let path = write(dir.path(), "flipped.img", &bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let trailer = image.span(RecordType::Trailer, 0).payload() + 16;
    let stderr = text(&out.stderr);
    let want = format!(
        "crvmm: error: {} is not a good checkpoint image: record 17 (trailer) at byte {trailer} ({trailer:#x}): checksum mismatch",
        path.display()
    );
    assert!(stderr.starts_with(&want), "{stderr}");

    // A VMA in the kernel half: the field.
    let mut b = ImageBuilder::new();
    b.vmas[4].vma.start = 0xffff_8000_0000_0000;
    b.vmas[4].vma.end = 0xffff_8000_0001_0000;
    let image = b.build();
    let path = write(dir.path(), "kernel-vma.img", &image.bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    let end = image.span(RecordType::Vma, 4).payload() + 8;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "record 14 (vma) at byte {end} ({end:#x}): field `end` = 0xffff800000010000 is beyond the user address space"
        )),
        "{stderr}"
    );

    // Truncated.
    let path = write(dir.path(), "short.img", &image.bytes[..1000]);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("at byte 1000 (0x3e8): the image ends inside the payload"));
}

#[test]
fn verify_reports_a_failed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ImageBuilder::new();
    b.failure = Some(Failure {
        after: 17,
        errno: -16,
        message: "thawed during checkpoint: image discarded".into(),
    });
    let path = write(dir.path(), "failed.img", &b.build().bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "the checkpoint failed with EBUSY (-16): thawed during checkpoint: image discarded"
        ),
        "{stderr}"
    );
}

#[test]
fn inspect_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let image = ImageBuilder::new().build();
    let path = write(dir.path(), "good.img", &image.bytes);
    let out = crvmm_image(&["inspect", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = json["records"].as_array().unwrap();
    assert_eq!(records.len(), 18);
    let header = &records[0];
    assert_eq!(header["type"], "header");
    assert_eq!(header["index"], 0);
    assert_eq!(header["offset"], 0);
    assert_eq!(header["magic"], "0x474d49524b435243");
    assert_eq!(header["version"], 5);
    assert_eq!(header["page_size"], 4096);
    assert_eq!(header["release"], "6.12.117-crvmm");
    assert_eq!(records[1]["comm"], "cr_target");
    assert_eq!(records[1]["nr_threads"], 1);
    assert_eq!(records[4]["type"], "signals");
    assert_eq!(records[5]["type"], "files");
    assert_eq!(records[5]["cwd"], "/");
    assert_eq!(records[6]["type"], "thread");
    assert_eq!(records[6]["tid"], 74);
    assert_eq!(records[10]["type"], "vma");
    assert_eq!(records[10]["start"], layout::TEXT);
    assert_eq!(records[10]["path"], layout::PATH);
    let pages = &records[15];
    assert_eq!(pages["type"], "pages");
    assert_eq!(pages["nr_pages"], 7);
    assert_eq!(pages["first"], layout::DATA);
    assert_eq!(pages["last"], layout::STACK + 0x1e000);
    assert_eq!(records[16]["nr_pages"], 0);
    assert_eq!(records[17]["type"], "trailer");
    assert_eq!(records[17]["nr_records"], 17);
    let summary = &json["summary"];
    assert_eq!(summary["pages"], 7);
    assert_eq!(summary["vmas"], 5);
    assert_eq!(summary["threads"], 1);
    assert_eq!(summary["bytes"], image.bytes.len());
    assert_eq!(json["problem"], serde_json::Value::Null);
}

#[test]
fn inspect_of_a_damaged_image_prints_what_it_read_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ImageBuilder::new();
    b.pages.swap(1, 2);
    let path = write(dir.path(), "order.img", &b.build().bytes);
    let out = crvmm_image(&["inspect", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["records"].as_array().unwrap().len(), 15);
    assert_eq!(json["summary"], serde_json::Value::Null);
    assert_eq!(json["problem"]["record"], 15);
    assert_eq!(json["problem"]["type"], "pages");
    assert!(text(&out.stderr).contains("page addresses must increase"));
}

#[test]
fn reads_standard_input() {
    let image = ImageBuilder::new().build();
    let out = crvmm_image(&["verify", "-"], Some(&image.bytes));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("standard input: good checkpoint image"));

    let out = crvmm_image(&["inspect", "-"], Some(&image.bytes));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["records"], 17);

    let out = crvmm_image(
        &["verify", "-"],
        Some(&image.bytes[..image.bytes.len() - 1]),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("standard input is not a good checkpoint image"));
}

#[test]
fn paging_option_overrides_the_config_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ImageBuilder::new();
    b.header.config_hash = KernelConfig {
        task_size: TASK_SIZE_5LEVEL,
        ..KernelConfig::CRVMM_4LEVEL
    }
    .hash();
    b.vmas[4].vma.start = 1 << 50;
    b.vmas[4].vma.end = (1 << 50) + 0x1000;
    b.mm.vdso = 0;
    b.pages.truncate(5);
    let path = write(dir.path(), "la57.img", &b.build().bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = crvmm_image(&["verify", "--paging", "4-level", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("beyond the user address space"));
}

#[test]
fn threads_signals_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ImageBuilder::new();
    b.signals.itimer[0] = Itimer {
        value: 1_000_000,
        interval: 1_000_000,
    };
    b.queue_shared(user_signal(34, SI_QUEUE, 1, 0, 5));
    for tid in 75..78 {
        b.add_thread(tid);
    }
    b.threads[1].thread.restart = Restart::futex(layout::ANON + 0x100, 0, u32::MAX, 0, 0);
    b.threads[2].thread.restart = Restart::nanosleep(1, 5_000_000_000, 0);
    b.threads[3].queue(Siginfo::new(10, 0, SI_TKILL));
    let path = write(dir.path(), "threads.img", &b.build().bytes);

    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("26 records, 4 threads, 0 open files, 2 pending signals, 5 VMAs"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(
            "note: 4 threads: restart gives each but the first its thread id (75, 76, 77)"
        ),
        "{}",
        text(&out.stderr)
    );

    let out = crvmm_image(&["inspect", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = json["records"].as_array().unwrap();
    let signals = &records[4];
    assert_eq!(signals["itimer"]["real"]["interval"], 1_000_000);
    assert_eq!(signals["pending"][0]["signo"], 34);
    assert_eq!(signals["pending"][0]["code"], -1);
    let threads: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "thread")
        .map(|r| (r["tid"].clone(), r["restart"]["kind"].clone()))
        .collect();
    assert_eq!(
        threads,
        [(74, "none"), (75, "futex"), (76, "nanosleep"), (77, "none")]
            .map(|(t, k)| (t.into(), k.into()))
    );
    assert_eq!(records[6 + 3 * 3]["pending"][0]["signo"], 10);
    assert_eq!(json["summary"]["restart_blocks"], 2);
    assert_eq!(json["summary"]["armed_itimers"], 1);

    // A duplicate thread id: named where it is.
    b.threads[3].thread.tid = 75;
    let image = b.build();
    let path = write(dir.path(), "dup.img", &image.bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    let tid = image.span(RecordType::Thread, 3).payload() + 16;
    assert!(
        text(&out.stderr).contains(&format!(
            "record 15 (thread) at byte {tid} ({tid:#x}): thread id 75 is also the thread of record 9"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn open_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ImageBuilder::new();
    b.set_cwd("/srv").inherit_stdio();
    b.add_file(FileSpec::reg(3, 0x401, 120, 120, "/var/log/app.log").cloexec());
    b.add_file(FileSpec::chr(4, 2, 0x103, "/dev/null"));
    let path = write(dir.path(), "files.img", &b.build().bytes);

    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("22 records, 1 threads, 5 open files, 0 pending signals"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    for note in [
        "note: working directory /srv",
        "note: fd 1 is inherited (CR_CHECKPOINT_INHERIT_STDIO)",
        "note: fd 3 (write, close-on-exec, position 120): restart reopens the regular file \
         /var/log/app.log, which must be there with size 120 bytes",
    ] {
        assert!(stderr.contains(note), "{note:?} in {stderr}");
    }

    let out = crvmm_image(&["inspect", arg(&path)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = json["records"].as_array().unwrap();
    assert_eq!(records[5]["type"], "files");
    assert_eq!(records[5]["cwd"], "/srv");
    let files: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "file")
        .map(|r| (r["fd"].clone(), r["kind"].clone(), r["path"].clone()))
        .collect();
    assert_eq!(
        files,
        [
            (0.into(), "inherit".into(), serde_json::Value::Null),
            (1.into(), "inherit".into(), serde_json::Value::Null),
            (2.into(), "inherit".into(), serde_json::Value::Null),
            (3.into(), "reg".into(), "/var/log/app.log".into()),
            (4.into(), "chr".into(), "/dev/null".into()),
        ]
    );
    assert_eq!(records[9]["cloexec"], true);
    assert_eq!(json["summary"]["files"], 5);

    // Without the header flag, the inherited fds are refused.
    b.header.flags = 0;
    let image = b.build();
    let path = write(dir.path(), "no-flag.img", &image.bytes);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    let kind = image.span(RecordType::File, 0).payload() + 4;
    assert!(
        text(&out.stderr).contains(&format!(
            "record 6 (file) at byte {kind} ({kind:#x}): field `kind` = 0x4: file 0 (fd 0): an \
             inherited descriptor needs the header flag CR_CHECKPOINT_INHERIT_STDIO"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn missing_file() {
    let out = crvmm_image(&["verify", "/nonexistent/image"], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("opening /nonexistent/image"));
}

/// A container image holding two builder-made kernel images.
fn container_image(second: &[u8]) -> Vec<u8> {
    use crvmm_cr_image::container::{ContainerWriter, Manifest, ProcessEntry};
    let entry = |index, pid, ppid| ProcessEntry {
        index,
        pid,
        ppid,
        comm: "cr_target".into(),
        ..ProcessEntry::default()
    };
    let manifest = Manifest {
        id: "web".into(),
        kernel_release: "6.12.117-crvmm".into(),
        kernel_format: 4,
        spec: serde_json::json!({"ociVersion": "1.0.2"}),
        processes: vec![entry(0, 1, 0), entry(1, 2, 1)],
        ..Manifest::default()
    };
    let good = ImageBuilder::new().build().bytes;
    let mut w = ContainerWriter::new(Vec::new(), &manifest).unwrap();
    for (pid, image) in [(1, &good[..]), (2, second)] {
        w.begin_process(pid).unwrap();
        w.data(image).unwrap();
        w.end_process().unwrap();
    }
    w.finish().unwrap().0
}

#[test]
fn container_images_plain_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let good = ImageBuilder::new().build().bytes;
    let image = container_image(&good);
    let zst = zstd::encode_all(&image[..], 3).unwrap();
    for (name, bytes) in [("c.img", &image), ("c.img.zst", &zst)] {
        let path = write(dir.path(), name, bytes);
        let out = crvmm_image(&["verify", arg(&path)], None);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("container image of \"web\", 2 processes")
                && stdout.contains("process 1 (pid 2): good checkpoint image of cr_target"),
            "{stdout}"
        );
        let out = crvmm_image(&["inspect", arg(&path)], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["kind"], "container");
        assert_eq!(json["manifest"]["id"], "web");
        assert!(json["processes"][1]["kernel"]["records"].is_array());
    }

    // A damaged kernel image inside an intact container image.
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&99u32.to_le_bytes());
    let path = write(dir.path(), "bad.img", &container_image(&bad));
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("the kernel image of process 1 (pid 2) is bad"),
        "{}",
        text(&out.stderr)
    );

    // A damaged container image: its own digest catches it.
    let mut broken = image.clone();
    let mid = broken.len() / 2;
    broken[mid] ^= 1;
    let path = write(dir.path(), "broken.img", &broken);
    let out = crvmm_image(&["verify", arg(&path)], None);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("not a good container image"),
        "{}",
        text(&out.stderr)
    );
}
