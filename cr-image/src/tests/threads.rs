//! What format version 2 added: thread records (their order, count, ids
//! and restart blocks), the signals record (interval timers) and queued
//! signals, good and damaged.

use super::*;
use crate::builder::{reseal, user_signal, ThreadSpec, SI_QUEUE, SI_TKILL, SI_USER};
use crate::format::{
    Itimer, Restart, Siginfo, FUTEX_CLOCKRT, FUTEX_SHARED, MAX_PENDING, MAX_THREADS, SIGINFO_SIZE,
};
use crate::format::{PosixTimer, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID};

/// Offset of the restart block in a thread record.
const RESTART: usize = 96;
/// Bytes of a thread record's and a signals record's fixed parts.
const THREAD_LEN: usize = 136;
const SIGNALS_LEN: usize = 56;

/// `ImageBuilder::new()` with threads `75..75 + extra`.
fn threaded(extra: i32) -> ImageBuilder {
    let mut b = ImageBuilder::new();
    for tid in 75..75 + extra {
        b.add_thread(tid);
    }
    b
}

/// An image of eight threads in every state: queued signals of their own
/// and shared, armed interval timers, and each kind of restart block.
fn busy() -> ImageBuilder {
    let mut b = threaded(7);
    b.signals.itimer[0] = Itimer {
        value: 250_000_000,
        interval: 1_000_000_000,
    };
    b.signals.itimer[2] = Itimer {
        value: 5_000,
        interval: 0,
    };
    b.queue_shared(user_signal(10, SI_USER, 1, 0, 0))
        .queue_shared(user_signal(34, SI_QUEUE, 1, 1000, 0xdead_beef))
        .queue_shared(user_signal(34, SI_QUEUE, 1, 1000, 7));
    b.leader().queue(user_signal(12, SI_TKILL, 74, 0, 0));
    let futex = layout::ANON + 0x2000;
    let restarts = [
        Restart::nanosleep(1, 123_456_789_000, 0),
        Restart::nanosleep(0, 1_800_000_001_000_000_000, layout::STACK + 0x1e100),
        Restart::futex(futex, 0, u32::MAX, 0, 0),
        Restart::futex(futex + 4, 1, 1, FUTEX_SHARED | FUTEX_CLOCKRT, 99),
        Restart::poll(layout::HEAP, 3, Some(42_000)),
        Restart::poll(0, 0, None),
    ];
    for (t, r) in b.threads[1..].iter_mut().zip(restarts) {
        t.thread.restart = r;
    }
    b.threads[3].queue(Siginfo::new(64, 0, SI_TKILL));
    let last: &mut ThreadSpec = b.threads.last_mut().unwrap();
    last.queue(Siginfo::new(1, 5, 1))
        .queue(Siginfo::new(63, 0, -60));
    b
}

#[test]
fn eight_busy_threads_verify_with_their_summary() {
    let b = busy();
    let image = b.build();
    let s = check(&image.bytes).unwrap();
    // header task creds sighand signals files, 8 x 3, mm, 5 VMAs, 2 pages.
    assert_eq!(s.records, 6 + 8 * 3 + 1 + 5 + 2);
    assert_eq!(s.threads, 8);
    assert_eq!(s.pending_signals, 3 + 1 + 1 + 2);
    assert_eq!((s.armed_itimers, s.restart_blocks), (2, 6));
    assert!(s
        .to_string()
        .contains(": 38 records, 8 threads, 0 open files, 7 pending signals, 5 VMAs"));
    let notes = s.notes.join("\n");
    assert!(
        notes.contains("8 threads: restart gives each but the first its thread id (75, 76, 77, 78, 79, 80, 81)"),
        "{notes}"
    );
    // The threads' XSAVE states agree: one note.
    assert_eq!(notes.matches("XSAVE state").count(), 1, "{notes}");

    // The records: every thread's group in order.
    let entries = entries(&image.bytes);
    for (i, t) in b.threads.iter().enumerate() {
        let at = 6 + 3 * i;
        let want = Record::Thread {
            thread: Box::new(t.thread),
            pending: t.pending.clone(),
        };
        assert_eq!(entries[at].record, want);
        assert_eq!(entries[at + 1].record, Record::Regs(Box::new(t.regs)));
        assert_eq!(entries[at + 2].record, Record::Xstate(t.xstate));
    }
    let signals = Record::Signals {
        signals: b.signals,
        pending: b.shared_pending.clone(),
        timers: Vec::new(),
    };
    assert_eq!(entries[4].record, signals);
}

#[test]
fn inspect_shows_threads_signals_and_timers() {
    let b = busy();
    let (json, verdict) = inspect_json(&b.build().bytes);
    assert!(verdict.is_ok(), "{verdict:?}");
    let records = json["records"].as_array().unwrap();
    let signals = &records[4];
    assert_eq!(signals["type"], "signals");
    assert_eq!(
        signals["itimer"]["real"],
        serde_json::json!({"value": 250_000_000, "interval": 1_000_000_000})
    );
    assert_eq!(signals["itimer"]["virtual"]["value"], 0);
    assert_eq!(signals["itimer"]["prof"]["value"], 5000);
    assert_eq!(signals["nr_pending"], 3);
    let shared = signals["pending"].as_array().unwrap();
    assert_eq!(shared.len(), 3);
    assert_eq!(
        (&shared[1]["signo"], &shared[1]["errno"], &shared[1]["code"]),
        (&34.into(), &0.into(), &(-1).into())
    );
    // si_pid 1, si_uid 1000, si_value 0xdeadbeef: bytes 12 to 48 in hex.
    let data = shared[1]["data"].as_str().unwrap();
    assert_eq!(data.len(), 72);
    assert!(
        data.starts_with("0000000001000000e8030000efbeadde"),
        "{data}"
    );
    let kinds: Vec<_> = (0..8)
        .map(|i| records[6 + 3 * i]["restart"]["kind"].clone())
        .collect();
    let want = [
        "none",
        "nanosleep",
        "nanosleep",
        "futex",
        "futex",
        "poll",
        "poll",
        "none",
    ];
    assert_eq!(kinds, want.map(serde_json::Value::from));
    let leader = &records[6];
    assert_eq!(
        (&leader["tid"], &leader["comm"]),
        (&74.into(), &"cr_target".into())
    );
    assert_eq!(leader["pending"][0]["signo"], 12);
    assert_eq!(leader["pending"][0]["code"], -6);
    assert_eq!(records[9]["comm"], "cr_worker");
    assert_eq!(records[9]["tid"], 75);
    assert_eq!(records[9]["restart"]["clockid"], 1);
    assert_eq!(records[9]["restart"]["expires"], 123_456_789_000u64);
    let last = &records[6 + 3 * 7];
    assert_eq!(last["tid"], 81);
    let signos: Vec<_> = last["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["signo"].clone(), p["code"].clone()))
        .collect();
    assert_eq!(signos, [(1.into(), 1.into()), (63.into(), (-60).into())]);
    let summary = &json["summary"];
    assert_eq!(summary["threads"], 8);
    assert_eq!(summary["pending_signals"], 7);
    assert_eq!(summary["armed_itimers"], 2);
    assert_eq!(summary["restart_blocks"], 6);
}

#[test]
fn the_most_threads_and_queued_signals() {
    // CR_MAX_PENDING queued signals in the whole image: all but one on the
    // process, the last on the last thread; one more is refused.
    let build = |on_last: u32| {
        let mut b = threaded(MAX_THREADS as i32 - 1);
        for signo in (1..=64)
            .filter(|s| ![9, 19].contains(s))
            .cycle()
            .take(MAX_PENDING as usize - 1)
        {
            b.queue_shared(Siginfo::new(signo, 0, SI_USER));
        }
        let last = b.threads.last_mut().unwrap();
        last.pending = vec![Siginfo::new(2, 0, 0); on_last as usize];
        last.thread.nr_pending = on_last;
        b.build()
    };
    let image = build(1);
    let s = check(&image.bytes).unwrap();
    assert_eq!(s.threads, MAX_THREADS);
    assert_eq!(s.pending_signals, u64::from(MAX_PENDING));
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("4096 threads: ") && n.contains(", ...)")));
    let signals = image.span(RecordType::Signals, 0);
    assert_eq!(
        signals.len as usize,
        SIGNALS_LEN + (65536 - 1) * SIGINFO_SIZE
    );
    let (min, max) = RecordType::Thread.len_bounds();
    assert_eq!((min, max), (136, 136 + 65536 * 128));

    let err = check(&build(2).bytes).unwrap_err().to_string();
    assert!(
        err.contains("nr_pending") && err.contains("65537 queued signals in the image"),
        "{err}"
    );
}

#[test]
fn each_restart_kind_verifies() {
    let futex = layout::ANON + 0x100;
    let mut good = vec![
        Restart::default(),
        Restart::poll(0, 0, None),
        Restart::poll(TASK_SIZE_4LEVEL - 1, 1 << 20, Some(i64::MAX as u64)),
        Restart::poll(layout::HEAP, 1, Some(0)),
        Restart::futex(futex, 7, 1, 0, 0),
        Restart::futex(TASK_SIZE_4LEVEL - 4, 0, u32::MAX, 3, i64::MAX as u64),
    ];
    for clock in [0, 1, 7, 11] {
        good.push(Restart::nanosleep(clock, 0, 0));
        good.push(Restart::nanosleep(
            clock,
            i64::MAX as u64,
            TASK_SIZE_4LEVEL - 16,
        ));
    }
    for r in good {
        let mut b = ImageBuilder::new();
        b.leader().thread.restart = r;
        let s = check(&b.build().bytes).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(s.restart_blocks, u32::from(r.kind != 0));
    }
}

#[test]
fn restart_block_rules() {
    let futex = Restart::futex(layout::ANON + 0x100, 0, 1, 0, 0);
    let sleep = Restart::nanosleep(1, 5, 0);
    let poll = Restart::poll(layout::HEAP, 2, Some(5));
    let late = i64::MAX as u64 + 1;
    let cases: Vec<(Restart, &str, usize)> = vec![
        (Restart { kind: 4, ..sleep }, "restart.kind", 0),
        (
            Restart {
                kind: u32::MAX,
                ..sleep
            },
            "restart.kind",
            0,
        ),
        (Restart { pad: 1, ..sleep }, "restart.pad", 36),
        (
            Restart {
                pad: 1,
                ..Restart::default()
            },
            "restart.pad",
            36,
        ),
        // NONE: nothing set.
        (
            Restart {
                clockid: 1,
                ..Restart::default()
            },
            "restart.clockid",
            4,
        ),
        (
            Restart {
                expires: 1,
                ..Restart::default()
            },
            "restart.expires",
            8,
        ),
        (
            Restart {
                addr: 0x1000,
                ..Restart::default()
            },
            "restart.addr",
            16,
        ),
        (
            Restart {
                val: 1,
                ..Restart::default()
            },
            "restart.val",
            24,
        ),
        (
            Restart {
                bitset: 1,
                ..Restart::default()
            },
            "restart.bitset",
            28,
        ),
        (
            Restart {
                flags: 1,
                ..Restart::default()
            },
            "restart.flags",
            32,
        ),
        // NANOSLEEP: four clocks, a time, rmtp in user space, nothing else.
        (
            Restart {
                clockid: 2,
                ..sleep
            },
            "restart.clockid",
            4,
        ),
        (
            Restart {
                clockid: 3,
                ..sleep
            },
            "restart.clockid",
            4,
        ),
        (
            Restart {
                clockid: 12,
                ..sleep
            },
            "restart.clockid",
            4,
        ),
        (
            Restart {
                expires: late,
                ..sleep
            },
            "restart.expires",
            8,
        ),
        (
            Restart {
                addr: TASK_SIZE_4LEVEL,
                ..sleep
            },
            "restart.addr",
            16,
        ),
        (Restart { val: 1, ..sleep }, "restart.val", 24),
        (Restart { bitset: 1, ..sleep }, "restart.bitset", 28),
        (Restart { flags: 1, ..sleep }, "restart.flags", 32),
        // FUTEX: an aligned user address, known flags, a bitset, no clock.
        (Restart { addr: 0, ..futex }, "restart.addr", 16),
        (
            Restart {
                addr: futex.addr + 2,
                ..futex
            },
            "restart.addr",
            16,
        ),
        (
            Restart {
                addr: TASK_SIZE_4LEVEL,
                ..futex
            },
            "restart.addr",
            16,
        ),
        (Restart { flags: 4, ..futex }, "restart.flags", 32),
        (Restart { bitset: 0, ..futex }, "restart.bitset", 28),
        (
            Restart {
                clockid: 1,
                ..futex
            },
            "restart.clockid",
            4,
        ),
        (
            Restart {
                expires: late,
                ..futex
            },
            "restart.expires",
            8,
        ),
        // POLL: a user address, at most 2^20 descriptors, flags 0 or 1,
        // a time only with flags 1, no clock or bitset.
        (
            Restart {
                addr: TASK_SIZE_4LEVEL,
                ..poll
            },
            "restart.addr",
            16,
        ),
        (
            Restart {
                val: (1 << 20) + 1,
                ..poll
            },
            "restart.val",
            24,
        ),
        (Restart { flags: 2, ..poll }, "restart.flags", 32),
        (Restart { clockid: 1, ..poll }, "restart.clockid", 4),
        (Restart { bitset: 1, ..poll }, "restart.bitset", 28),
        (
            Restart {
                expires: late,
                ..poll
            },
            "restart.expires",
            8,
        ),
        (Restart { flags: 0, ..poll }, "restart.expires", 8),
    ];
    for (r, field, off) in cases {
        // In the second thread, to see the checks are each thread's.
        let mut b = threaded(1);
        b.threads[1].thread.restart = r;
        let e = expect_field(&b, RecordType::Thread, 1, field, RESTART + off);
        if field == "restart.addr" && r.addr >= TASK_SIZE_4LEVEL {
            assert!(matches!(e, ImageError::BeyondUserSpace { .. }), "{e}");
        } else {
            assert!(matches!(e, ImageError::Field { .. }), "{e}");
        }
    }
}

#[test]
fn itimers_are_at_most_ktime_max() {
    for (timer, interval, off) in [(0, false, 0), (1, true, 24), (2, false, 32)] {
        let mut b = ImageBuilder::new();
        let t = &mut b.signals.itimer[timer];
        if interval {
            t.interval = i64::MAX as u64 + 1;
        } else {
            t.value = u64::MAX;
        }
        let name = format!(
            "itimer[{timer}].{}",
            if interval { "interval" } else { "value" }
        );
        expect_field(&b, RecordType::Signals, 0, &name, off);
    }
    let mut b = ImageBuilder::new();
    b.signals.itimer = [Itimer {
        value: i64::MAX as u64,
        interval: i64::MAX as u64,
    }; 3];
    assert_eq!(check(&b.build().bytes).unwrap().armed_itimers, 3);
    // An interval on a disarmed timer is kept as it is.
    b.signals.itimer[1].value = 0;
    assert_eq!(check(&b.build().bytes).unwrap().armed_itimers, 2);

    // A count of timers the record has no room for.
    let mut b = ImageBuilder::new();
    b.signals.nr_timers = 1;
    let e = error_of(&b.build().bytes);
    assert!(
        e.to_string()
            .contains("record length 56 does not match its contents (104 bytes)"),
        "{e}"
    );
}

/// A siginfo damaged by `change`, queued third on the shared queue and on
/// the second thread's: the error names `pending[2].field` at `off` in it.
fn expect_siginfo_error(change: fn(&mut Siginfo), field: &str, off: usize) {
    let good = || user_signal(10, SI_QUEUE, 1, 0, 3);
    let mut bad = good();
    change(&mut bad);
    let name = format!("pending[2].{field}");

    let mut b = ImageBuilder::new();
    b.queue_shared(good())
        .queue_shared(good())
        .queue_shared(bad);
    let e = expect_field(
        &b,
        RecordType::Signals,
        0,
        &name,
        SIGNALS_LEN + 2 * 128 + off,
    );
    assert!(matches!(e, ImageError::Field { .. }), "{e}");

    let mut b = threaded(2);
    b.threads[1].queue(good()).queue(good()).queue(bad);
    let e = expect_field(&b, RecordType::Thread, 1, &name, THREAD_LEN + 2 * 128 + off);
    assert!(matches!(e, ImageError::Field { .. }), "{e}");
}

fn set_i32(si: &mut Siginfo, off: usize, v: i32) {
    si.info[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn siginfo_rules() {
    expect_siginfo_error(|si| set_i32(si, 0, 0), "si_signo", 0);
    expect_siginfo_error(|si| set_i32(si, 0, 65), "si_signo", 0);
    expect_siginfo_error(|si| set_i32(si, 0, -1), "si_signo", 0);
    expect_siginfo_error(|si| set_i32(si, 0, 9), "si_signo", 0);
    expect_siginfo_error(|si| set_i32(si, 0, 19), "si_signo", 0);
    expect_siginfo_error(|si| set_i32(si, 8, -2), "si_code", 8);
    expect_siginfo_error(|si| si.info[48] = 1, "info[48]", 48);
    expect_siginfo_error(|si| si.info[127] = 0x80, "info[127]", 127);
    expect_siginfo_error(|si| si.info[100..].fill(0xff), "info[100]", 100);

    let mut b = ImageBuilder::new();
    b.queue_shared(Siginfo::new(9, 0, 0));
    let e = built_error(&b);
    assert!(e.to_string().contains("SIGKILL"), "{e}");

    // Every other signal, any errno and code but SI_TIMER, and anything in
    // the 48 bytes the kernel keeps, are fine.
    let mut b = ImageBuilder::new();
    for signo in (1..=64).filter(|s| ![9, 19].contains(s)) {
        let mut si = Siginfo::new(signo, -signo, signo - 70);
        si.info[12..48].fill(signo as u8);
        b.queue_shared(si);
    }
    b.queue_shared(Siginfo::new(1, i32::MIN, -1))
        .queue_shared(Siginfo::new(64, 0, -3))
        .queue_shared(Siginfo::new(64, 0, i32::MAX));
    assert_eq!(check(&b.build().bytes).unwrap().pending_signals, 62 + 3);
}

#[test]
fn pending_counts_must_match_the_length() {
    // Signals record: one more and one fewer than are there.
    for (nr, n) in [(2, 1), (0, 1), (1, 0)] {
        let mut b = ImageBuilder::new();
        b.shared_pending = vec![Siginfo::new(10, 0, 0); n];
        b.signals.nr_pending = nr;
        let image = b.build();
        let e = error_of(&image.bytes);
        let len = (SIGNALS_LEN + n * 128) as u32;
        let expected = (SIGNALS_LEN + nr as usize * 128) as u64;
        assert!(
            matches!(e, ImageError::LengthMismatch { len: l, expected: x, .. } if (l, x) == (len, expected)),
            "{e}"
        );
        let signals = image.span(RecordType::Signals, 0);
        let want = at(4, RecordType::Signals, signals.payload() + 48);
        assert_eq!(e.at(), want);
    }
    // Thread record.
    let mut b = threaded(1);
    b.threads[1].queue(Siginfo::new(10, 0, 0));
    b.threads[1].thread.nr_pending = 3;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 264,
                expected: 520,
                ..
            }
        ),
        "{e}"
    );
    let thread = image.span(RecordType::Thread, 1);
    assert_eq!(e.at(), at(9, RecordType::Thread, thread.payload() + 20));

    // More than CR_MAX_PENDING: the count itself, before the length.
    let mut b = ImageBuilder::new();
    b.signals.nr_pending = MAX_PENDING + 1;
    let e = expect_field(&b, RecordType::Signals, 0, "nr_pending", 48);
    assert!(e.to_string().contains("CR_MAX_PENDING"), "{e}");
    let mut b = ImageBuilder::new();
    b.leader().thread.nr_pending = u32::MAX;
    expect_field(&b, RecordType::Thread, 0, "nr_pending", 20);
}

#[test]
fn a_length_not_a_whole_number_of_siginfos() {
    let image = ImageBuilder::new().build();
    let signals = image.span(RecordType::Signals, 0);
    let mut bytes = image.bytes[..signals.payload() + SIGNALS_LEN].to_vec();
    put_u32(&mut bytes, signals.offset + 4, 56 + 64);
    bytes.extend_from_slice(&[0; 64]);
    bytes.extend_from_slice(&image.bytes[signals.end()..]);
    let e = error_of(&bytes);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 120,
                expected: 56,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn thread_ids_are_distinct() {
    let mut b = threaded(3);
    b.threads[3].thread.tid = 75;
    let image = b.build();
    let e = error_of(&image.bytes);
    let first = index_of(&image, RecordType::Thread, 1) as u64;
    assert!(
        matches!(e, ImageError::DuplicateTid { tid: 75, first: f, .. } if f == first),
        "{e}"
    );
    let thread = image.span(RecordType::Thread, 3);
    let want = at(
        index_of(&image, RecordType::Thread, 3),
        RecordType::Thread,
        thread.payload() + 16,
    );
    assert_eq!(e.at(), want);
    assert!(e.to_string().contains("thread ids must be distinct"), "{e}");

    // The leader's too.
    let mut b = threaded(1);
    b.threads[1].thread.tid = 74;
    assert!(matches!(
        built_error(&b),
        ImageError::DuplicateTid {
            tid: 74,
            first: 6,
            ..
        }
    ));
}

#[test]
fn thread_count_must_match_the_task_record() {
    // Announced 3, found 2: the mm record comes too early.
    let mut b = threaded(1);
    b.task.nr_threads = 3;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::ThreadCount {
                declared: 3,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    let mm = image.span(RecordType::Mm, 0);
    assert_eq!(e.at(), at(12, RecordType::Mm, mm.offset));
    assert!(
        e.to_string().contains("announces 3 threads, found 2"),
        "{e}"
    );

    // Announced 1, found 2: the second thread record is one too many.
    let mut b = threaded(1);
    b.task.nr_threads = 1;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::ThreadCount {
                declared: 1,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.at().record, 9);
    assert_eq!(
        e.at().offset,
        image.span(RecordType::Thread, 1).offset as u64
    );
}

/// The expected and found records of an order error.
fn order_error(bytes: &[u8]) -> (&'static str, RecordType, u64) {
    match error_of(bytes) {
        ImageError::UnexpectedRecord {
            at,
            expected,
            found,
        } => (expected, found, at.record),
        e => panic!("not an order error: {e}"),
    }
}

#[test]
fn thread_records_in_their_place() {
    let image = threaded(2).build();
    // No thread record before a group's regs.
    let bytes = without(&image, RecordType::Thread, 0);
    assert_eq!(
        order_error(&bytes),
        ("a thread record", RecordType::Regs, 6)
    );
    let bytes = without(&image, RecordType::Thread, 2);
    assert_eq!(
        order_error(&bytes),
        ("a thread record", RecordType::Regs, 12)
    );
    // No regs, no xstate in a group.
    let bytes = without(&image, RecordType::Regs, 1);
    assert_eq!(
        order_error(&bytes),
        ("the thread's regs record", RecordType::Xstate, 10)
    );
    let bytes = without(&image, RecordType::Xstate, 0);
    assert_eq!(
        order_error(&bytes),
        ("the thread's xstate record", RecordType::Thread, 8)
    );
    // No signals record.
    let bytes = without(&image, RecordType::Signals, 0);
    assert_eq!(
        order_error(&bytes),
        ("the signals record", RecordType::Files, 4)
    );

    // The signals record after the files record and the first thread group.
    let signals = image.span(RecordType::Signals, 0);
    let group_end = image.span(RecordType::Xstate, 0).end();
    let mut bytes = image.bytes[..signals.offset].to_vec();
    bytes.extend_from_slice(&image.bytes[signals.end()..group_end]);
    bytes.extend_from_slice(&image.bytes[signals.offset..signals.end()]);
    bytes.extend_from_slice(&image.bytes[group_end..]);
    assert_eq!(
        order_error(&bytes),
        ("the signals record", RecordType::Files, 4)
    );

    // Regs and xstate swapped in the second group.
    let regs = image.span(RecordType::Regs, 1);
    let xstate = image.span(RecordType::Xstate, 1);
    let mut bytes = image.bytes[..regs.offset].to_vec();
    bytes.extend_from_slice(&image.bytes[xstate.offset..xstate.end()]);
    bytes.extend_from_slice(&image.bytes[regs.offset..regs.end()]);
    bytes.extend_from_slice(&image.bytes[xstate.end()..]);
    assert_eq!(
        order_error(&bytes),
        ("the thread's regs record", RecordType::Xstate, 10)
    );

    // A thread record before the task's, or among the VMAs.
    let task = image.span(RecordType::Task, 0);
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, task.offset, RecordType::Thread as u32);
    assert_eq!(
        order_error(&bytes),
        ("the task record", RecordType::Thread, 1)
    );
    let mut bytes = image.bytes.clone();
    let vma = image.span(RecordType::Vma, 1);
    put_u32(&mut bytes, vma.offset, RecordType::Thread as u32);
    assert_eq!(
        order_error(&bytes),
        ("a vma record", RecordType::Thread, 17)
    );
}

#[test]
fn truncation_in_the_thread_groups() {
    let image = threaded(1).build();
    let bytes = &image.bytes;
    let cases = [
        (
            image.span(RecordType::Signals, 0).offset,
            "before the signals record",
        ),
        (
            image.span(RecordType::Thread, 0).offset,
            "before all the thread records the task record announces",
        ),
        (
            image.span(RecordType::Thread, 1).offset,
            "before all the thread records the task record announces",
        ),
        (
            image.span(RecordType::Regs, 1).offset,
            "before the regs record",
        ),
        (
            image.span(RecordType::Xstate, 1).offset,
            "before the xstate record",
        ),
        (image.span(RecordType::Mm, 0).offset, "before the mm record"),
        (
            image.span(RecordType::Thread, 1).payload() + 100,
            "inside the payload",
        ),
    ];
    for (cut, what) in cases {
        match error_of(&bytes[..cut]) {
            ImageError::Truncated { what: w, at } => {
                assert_eq!((w, at.offset), (what, cut as u64), "cut at {cut}")
            }
            e => panic!("cut at {cut}: {e}"),
        }
    }
}

#[test]
fn every_truncation_of_a_threaded_image_is_reported_where_the_data_ends() {
    let mut b = threaded(2);
    b.vmas.clear();
    b.mm.nr_vmas = 0;
    b.pages.clear();
    b.queue_shared(Siginfo::new(10, 0, 0));
    b.threads[2].queue(Siginfo::new(12, 0, SI_TKILL));
    b.threads[2].thread.restart = Restart::poll(0, 0, None);
    let image = b.build();
    for cut in 0..image.bytes.len() {
        let e = error_of(&image.bytes[..cut]);
        let ImageError::Truncated { at, .. } = e else {
            panic!("cut at {cut}: {e}");
        };
        assert_eq!(at.offset, cut as u64, "cut at {cut}: {e}");
    }
    check(&image.bytes).unwrap();
}

#[test]
fn damage_in_a_queued_signal_is_found_once_resealed() {
    // A flipped si_signo with the checksum made right: the field check.
    let mut b = ImageBuilder::new();
    b.leader().queue(Siginfo::new(10, 0, 0));
    let image = b.build();
    let thread = image.span(RecordType::Thread, 0);
    let mut bytes = image.bytes.clone();
    bytes[thread.payload() + THREAD_LEN] = 19;
    assert!(reseal(&mut bytes));
    let e = error_of(&bytes);
    assert_eq!(field_of(&e), "pending[0].si_signo");
}

#[test]
fn failed_checkpoint_among_the_threads() {
    let mut b = threaded(3);
    b.failure = Some(crate::builder::Failure {
        after: 9,
        errno: -4,
        message: "interrupted".into(),
    });
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::CheckpointFailed { errno: -4, .. }),
        "{e}"
    );
    assert_eq!(e.at().record, 9);
}

/// A timer on the monotonic clock every 300 ms, signalling SIGRTMIN+4.
fn timer(id: i32) -> PosixTimer {
    PosixTimer {
        id,
        clock: 1,
        notify: SIGEV_SIGNAL,
        signo: 38,
        tid: 0,
        fired: 0,
        value: 0x1234,
        interval: 300_000_000,
        expires: 120_000_000,
    }
}

#[test]
fn posix_timers_verify_with_their_ids() {
    let mut b = ImageBuilder::new();
    b.add_thread(76);
    b.queue_shared(user_signal(10, SI_QUEUE, 1, 0, 3));
    b.add_timer(timer(0));
    b.add_timer(PosixTimer {
        notify: SIGEV_THREAD_ID,
        tid: 76,
        fired: 1,
        ..timer(3)
    });
    b.add_timer(PosixTimer {
        clock: 0,
        ..timer(9)
    });
    let s = check(&b.build().bytes).unwrap();
    assert!(
        s.notes.iter().any(|n| n.contains("POSIX timers 0, 3, 9")),
        "{:?}",
        s.notes
    );
    assert_eq!(s.pending_signals, 1);
    // A thread the image does not have.
    let mut b = ImageBuilder::new();
    b.add_timer(PosixTimer {
        notify: SIGEV_THREAD_ID,
        tid: 99,
        ..timer(0)
    });
    let e = error_of(&b.build().bytes);
    assert!(
        e.to_string().contains("POSIX timer 0 signals thread 99"),
        "{e}"
    );
}

#[test]
fn posix_timer_fields() {
    type Change = fn(&mut PosixTimer);
    let cases: [(Change, &str); 9] = [
        (|t| t.id = -1, "timers[0].id"),
        (|t| t.clock = 2, "timers[0].clock"),
        (|t| t.notify = 2, "timers[0].notify"),
        (|t| t.notify = SIGEV_NONE, "timers[0].notify"),
        (|t| t.signo = 65, "timers[0].signo"),
        (|t| t.tid = 5, "timers[0].tid"),
        (|t| t.fired = 2, "timers[0].fired"),
        (|t| t.interval = u64::MAX, "timers[0].interval"),
        (|t| t.expires = i64::MAX as u64 + 1, "timers[0].expires"),
    ];
    for (change, field) in cases {
        let mut b = ImageBuilder::new();
        let mut t = timer(0);
        change(&mut t);
        b.add_timer(t);
        let e = error_of(&b.build().bytes);
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    // Ids increase.
    let mut b = ImageBuilder::new();
    b.add_timer(timer(4));
    b.add_timer(timer(4));
    let e = error_of(&b.build().bytes);
    assert!(e.to_string().contains("timers[1].id"), "{e}");
}
