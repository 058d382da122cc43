//! What the `image` fuzz target checks of each input, and the seeds it
//! starts from.

use crvmm_cr_image::builder::{
    layout, reseal, user_signal, Failure, FileSpec, ImageBuilder, VmaSpec,
};
use crvmm_cr_image::builder::{SI_QUEUE, SI_TKILL, SI_USER};
use crvmm_cr_image::format::{
    Itimer, PosixTimer, Restart, Siginfo, FILE_EVENTFD, FUTEX_SHARED, MAX_FILES, MAX_THREADS,
    O_APPEND, O_RDONLY, O_RDWR, O_WRONLY, PAGE_SIZE, PROT_READ, PROT_WRITE, VMA_SHMEM, VMA_SYSV,
};
use crvmm_cr_image::{inspect, verify, Limits};

/// Reads `data` as an image with `verify` and with `inspect`, and checks
/// that neither panics (the harness catches that), that both give the same
/// verdict, that `inspect` writes well-formed JSON, and that the verdict is
/// consistent with the input: a good image's summary counts every byte, an
/// error points no further than the input's end. Then does the same with
/// the input's trailer checksum made right, so that mutated images get past
/// the checksum to the end.
pub fn check(data: &[u8]) {
    check_once(data);
    let mut sealed = data.to_vec();
    if reseal(&mut sealed) {
        check_once(&sealed);
    }
}

fn check_once(data: &[u8]) {
    let limits = Limits::default();
    let verdict = verify(data, &limits);
    let mut out = Vec::new();
    let inspected = inspect(data, &limits, &mut out).expect("writing to memory cannot fail");
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
        panic!(
            "inspect wrote bad JSON ({e}): {}",
            String::from_utf8_lossy(&out)
        );
    }
    match (&verdict, &inspected) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert_eq!(a.bytes, data.len() as u64);
            assert!(a.pages <= a.page_records * 256);
            assert!((1..=MAX_THREADS).contains(&a.threads));
            assert!(a.restart_blocks <= a.threads && a.armed_itimers <= 3);
            // Each queued signal takes 128 bytes of the image, each file
            // record at least 56 (48 of them for an inherited fd).
            assert!(a.pending_signals * 128 < a.bytes);
            assert!(a.files <= MAX_FILES && u64::from(a.files) * 56 < a.bytes);
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(a.at().offset <= data.len() as u64, "{a}");
        }
        _ => panic!("verify and inspect disagree: {verdict:?} / {inspected:?}"),
    }
}

/// Small images: valid ones of several shapes (one with threads, queued
/// signals, interval timers and every kind of restart block, one with open
/// files of every kind) and failed checkpoints.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let small = || {
        let mut b = ImageBuilder::minimal();
        b.leader().xstate.size = 576;
        b.leader().xstate.xfeatures = 0x3;
        b.groups = vec![7];
        b.creds.ngroups = 1;
        b
    };
    let mut one_page = small();
    let full = ImageBuilder::new();
    one_page.vmas = full.vmas.clone();
    one_page.mm.nr_vmas = one_page.vmas.len() as u64;
    one_page.pages = vec![layout::HEAP];
    let mut two_records = one_page.clone();
    two_records.pages = vec![layout::DATA, layout::HEAP + PAGE_SIZE];
    two_records.pages_per_record = 1;
    let mut threads = small();
    threads.signals.itimer[0] = Itimer {
        value: 1_000_000,
        interval: 10_000_000,
    };
    threads.queue_shared(user_signal(34, SI_QUEUE, 1, 0, 9));
    threads.add_timer(PosixTimer {
        id: 0,
        clock: 1,
        signo: 35,
        fired: 1,
        value: 7,
        interval: 200_000_000,
        expires: 100_000_000,
        ..PosixTimer::default()
    });
    threads.leader().queue(Siginfo::new(10, 0, SI_USER));
    let futex = layout::ANON + 0x40;
    let restarts = [
        Restart::nanosleep(1, 77_000_000_000, 0),
        Restart::futex(futex, 0, u32::MAX, FUTEX_SHARED, 0),
        Restart::poll(layout::HEAP, 2, Some(5_000_000)),
    ];
    for (tid, restart) in (75..).zip(restarts) {
        threads.add_thread(tid).thread.restart = restart;
    }
    threads.threads[2].queue(user_signal(12, SI_TKILL, 74, 0, 0));
    let mut files = small();
    files.set_cwd("/srv").inherit_stdio();
    files.add_file(FileSpec::reg(3, O_WRONLY | O_APPEND, 77, 77, "/srv/log").cloexec());
    files.add_file(FileSpec::dir(4, 0, "/srv"));
    files.add_file(FileSpec::chr(5, O_RDWR, 0x103, "/dev/null"));
    files.add_file(FileSpec::reg(9, O_RDONLY, 0, 4096, "/etc/passwd"));
    files.add_file(FileSpec::pipe(10, O_RDONLY, 4242, 100, None));
    files.add_file(FileSpec::pipe(11, O_RDWR, 77, 0, Some("/tmp/fifo")));
    files.add_file(FileSpec::unix(12, 2, 900, 901));
    files.add_file(FileSpec::new(13, FILE_EVENTFD, O_RDWR, ""));
    // Shared anonymous memory (at an offset into its object) and a SysV
    // attachment, after the heap.
    let mut shared = one_page.clone();
    for (i, (flags, pgoff, id)) in [(VMA_SHMEM, 3, 1234), (VMA_SYSV, 0, 5)]
        .into_iter()
        .enumerate()
    {
        let start = layout::ANON + 0x10000 * (i as u64 + 1);
        let rw = PROT_READ | PROT_WRITE;
        let mut v = VmaSpec::new(start, start + 0x3000, rw, flags, pgoff, "");
        v.vma.shm_id = id;
        shared.vmas.insert(4 + i, v);
    }
    shared.mm.nr_vmas = shared.vmas.len() as u64;
    let mut failed = one_page.clone();
    failed.failure = Some(Failure {
        after: 15,
        errno: -16,
        message: "thawed during checkpoint: image discarded".into(),
    });
    let mut refused = small();
    refused.failure = Some(Failure {
        after: 0,
        errno: -1,
        message: "no permission: ptrace access to the target denied".into(),
    });
    vec![
        ("minimal", small().build().bytes),
        ("one-page", one_page.build().bytes),
        ("two-records", two_records.build().bytes),
        ("threads", threads.build().bytes),
        ("files", files.build().bytes),
        ("shared", shared.build().bytes),
        ("failed", failed.build().bytes),
        ("refused", refused.build().bytes),
    ]
}
