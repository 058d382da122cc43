//! Damage to fields: the VMA layout, page addresses, and the range checks
//! of the task, creds, sighand, regs, xstate and mm records, and of the
//! fields the thread record took over from v1's task record.

use super::*;
use crate::builder::VmaSpec;
use crate::format::{
    Rlimit, PROT_READ, PROT_WRITE, VMA_ANON, VMA_EXE, VMA_FILE, VMA_GROWSDOWN, VMA_PAGES,
    VMA_SHMEM, VMA_SYSV,
};

#[test]
fn overlapping_vmas() {
    let mut b = ImageBuilder::new();
    b.vmas[1].vma.end = layout::HEAP + 0x1000;
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(e, ImageError::VmaOrder { start, prev_end, .. } if start == layout::HEAP && prev_end == layout::HEAP + 0x1000),
        "{e}"
    );
    assert_eq!(
        e.at(),
        at(
            12,
            RecordType::Vma,
            image.span(RecordType::Vma, 2).payload()
        )
    );

    // Decreasing.
    let mut b = ImageBuilder::new();
    b.vmas.swap(0, 1);
    assert!(matches!(built_error(&b), ImageError::VmaOrder { .. }));
}

#[test]
fn vma_in_the_kernel_half() {
    let mut b = ImageBuilder::new();
    b.vmas[4].vma.start = 0xffff_8880_0000_0000;
    b.vmas[4].vma.end = 0xffff_8880_0010_0000;
    let e = expect_field(&b, RecordType::Vma, 4, "end", 8);
    assert!(matches!(
        e,
        ImageError::BeyondUserSpace {
            limit: TASK_SIZE_4LEVEL,
            ..
        }
    ));
}

#[test]
fn vma_fields() {
    type Change = fn(&mut Vma);
    let cases: [(Change, &str, usize); 11] = [
        (|v| v.start += 1, "start", 0),
        (|v| v.end = v.start, "end", 8),
        (|v| v.prot = 8, "prot", 24),
        (|v| v.flags |= 0x80, "flags", 28),
        (|v| v.flags = VMA_FILE | VMA_SHMEM, "flags", 28),
        (|v| v.shm_id = 3, "shm_id", 40),
        (|v| v.flags = VMA_ANON | VMA_FILE, "flags", 28),
        (|v| v.flags = VMA_PAGES, "flags", 28),
        (|v| v.flags |= 0x04, "flags", 28),
        (|v| v.pad = 1, "pad", 36),
        (|v| v.pgoff = u64::MAX / 4096, "pgoff", 16),
    ];
    for (change, field, offset) in cases {
        let mut b = ImageBuilder::new();
        change(&mut b.vmas[1].vma);
        expect_field(&b, RecordType::Vma, 1, field, offset);
    }
    // The executable: a file mapping, one at most.
    let mut b = ImageBuilder::new();
    b.vmas[2].vma.flags |= VMA_EXE;
    expect_field(&b, RecordType::Vma, 2, "flags", 28);
    let mut b = ImageBuilder::new();
    b.vmas[0].vma.flags |= VMA_EXE;
    assert!(check(&b.build().bytes).is_ok());
    b.vmas[1].vma.flags |= VMA_EXE;
    expect_field(&b, RecordType::Vma, 1, "flags", 28);
    // The first VMA must not start in page 0 either.
    let mut b = ImageBuilder::new();
    b.vmas[0].vma.start = 0;
    expect_field(&b, RecordType::Vma, 0, "start", 0);
}

/// A shared anonymous mapping and a SysV attachment, each naming its
/// object, with no pages, no path and no stack flag.
#[test]
fn shared_vmas() {
    use crate::builder::layout;
    let rw = PROT_READ | PROT_WRITE;
    let shared = |b: &mut ImageBuilder, flags, pgoff, id| {
        let mut v = VmaSpec::new(
            layout::ANON + 0x10000,
            layout::ANON + 0x13000,
            rw,
            flags,
            pgoff,
            "",
        );
        v.vma.shm_id = id;
        b.vmas.insert(4, v);
        b.mm.nr_vmas += 1;
    };
    for (flags, pgoff, id) in [(VMA_SHMEM, 7, 1234), (VMA_SYSV, 0, 5)] {
        let mut b = ImageBuilder::new();
        shared(&mut b, flags, pgoff, id);
        let s = check(&b.build().bytes).unwrap();
        assert_eq!(s.vmas, 6, "{flags:#x}");
    }
    type Change = fn(&mut Vma);
    let cases: [(Change, &str, usize); 6] = [
        (|v| v.flags |= VMA_PAGES, "flags", 28),
        (|v| v.flags |= VMA_GROWSDOWN, "flags", 28),
        (|v| v.pgoff = 1, "pgoff", 16),
        (|v| v.shm_id = 1 << 31, "shm_id", 40),
        (|v| v.prot = PROT_WRITE, "prot", 24),
        (|v| v.flags = VMA_SHMEM | VMA_SYSV, "flags", 28),
    ];
    for (change, field, offset) in cases {
        let mut b = ImageBuilder::new();
        shared(&mut b, VMA_SYSV, 0, 5);
        change(&mut b.vmas[4].vma);
        expect_field(&b, RecordType::Vma, 4, field, offset);
    }
    let mut b = ImageBuilder::new();
    shared(&mut b, VMA_SHMEM, u64::MAX / 4096, 5);
    expect_field(&b, RecordType::Vma, 4, "pgoff", 16);
}

#[test]
fn vma_paths() {
    // A path without its NUL, with a NUL inside, relative, too short.
    for (path, field, off) in [
        (&b"/bin/cr_target_"[..], "path", 48),
        (b"/bin/cr\0target\0", "path", 48),
        (b"bin/cr_target\0", "path", 48),
        (b"/\0", "", 0),
        (b"\0", "path_len", 32),
    ] {
        let mut b = ImageBuilder::new();
        b.vmas[1].path = path.to_vec();
        b.vmas[1].vma.path_len = path.len() as u32;
        if field.is_empty() {
            check(&b.build().bytes).unwrap();
        } else {
            expect_field(&b, RecordType::Vma, 1, field, off);
        }
    }
    // Anonymous mappings have no path and no offset.
    let mut b = ImageBuilder::new();
    b.vmas[2] = VmaSpec::new(layout::HEAP, layout::HEAP + 0x2000, 3, VMA_ANON, 0, "/x");
    expect_field(&b, RecordType::Vma, 2, "path_len", 32);
    let mut b = ImageBuilder::new();
    b.vmas[2].vma.pgoff = 1;
    expect_field(&b, RecordType::Vma, 2, "pgoff", 16);
}

#[test]
fn vma_over_the_vdso() {
    let mut b = ImageBuilder::new();
    b.vmas[4].vma.end = layout::VVAR + 0x1000;
    expect_field(&b, RecordType::Vma, 4, "start", 0);
    let mut b = ImageBuilder::new();
    b.vmas.push(VmaSpec::new(
        layout::VDSO,
        layout::VDSO + 0x1000,
        5,
        VMA_ANON,
        0,
        "",
    ));
    b.mm.nr_vmas += 1;
    expect_field(&b, RecordType::Vma, 5, "start", 0);
}

#[test]
fn vma_count_must_match_the_mm_record() {
    let mut b = ImageBuilder::new();
    b.mm.nr_vmas = 6;
    let e = built_error(&b);
    assert!(
        matches!(
            e,
            ImageError::VmaCount {
                declared: 6,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.at().record, 15);

    b.mm.nr_vmas = 4;
    let e = built_error(&b);
    assert!(
        matches!(
            e,
            ImageError::VmaCount {
                declared: 4,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.at().record, 14);

    b.mm.nr_vmas = u64::MAX;
    let e = expect_field(&b, RecordType::Mm, 0, "nr_vmas", 104);
    assert!(e.to_string().contains("CR_MAX_VMAS"));
}

#[test]
fn page_outside_any_vma() {
    let mut b = ImageBuilder::new();
    b.pages.insert(3, 0x50_0000);
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(
        matches!(
            e,
            ImageError::PageOutsideVma {
                addr: 0x50_0000,
                ..
            }
        ),
        "{e}"
    );
    let pages = image.span(RecordType::Pages, 0).payload();
    assert_eq!(e.at(), at(15, RecordType::Pages, pages + 8 + 3 * 8));

    // Above the last VMA, and in the first page.
    for addr in [layout::VDSO, 0] {
        let mut b = ImageBuilder::new();
        b.pages = vec![addr];
        let e = built_error(&b);
        assert!(matches!(e, ImageError::PageOutsideVma { .. }), "{e}");
    }
}

#[test]
fn page_in_a_vma_without_pages() {
    let mut b = ImageBuilder::new();
    b.pages.insert(0, layout::TEXT + 0x1000);
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::PageNotAllowed { addr, start, .. } if addr == layout::TEXT + 0x1000 && start == layout::TEXT),
        "{e}"
    );
}

#[test]
fn decreasing_page_addresses() {
    let mut b = ImageBuilder::new();
    b.pages.swap(1, 2);
    let e = built_error(&b);
    assert!(
        matches!(e, ImageError::PageOrder { addr, min, .. } if addr == layout::HEAP && min == layout::HEAP + 0x2000),
        "{e}"
    );
    // The same page twice.
    let mut b = ImageBuilder::new();
    b.pages.insert(1, layout::DATA);
    assert!(matches!(built_error(&b), ImageError::PageOrder { .. }));

    // Increasing over the whole image, not only in a record.
    let mut b = ImageBuilder::new();
    b.pages_per_record = 3;
    b.pages.swap(2, 3);
    let image = b.build();
    let e = error_of(&image.bytes);
    assert!(matches!(e, ImageError::PageOrder { .. }), "{e}");
    assert_eq!(e.at().record, 16);
}

#[test]
fn unaligned_page() {
    let mut b = ImageBuilder::new();
    b.pages[2] += 8;
    expect_field(&b, RecordType::Pages, 0, "addrs[2]", 8 + 16);
}

#[test]
fn pages_record_padding_field() {
    let image = ImageBuilder::new().build();
    let pages = image.span(RecordType::Pages, 0).payload();
    let mut bytes = image.bytes.clone();
    put_u32(&mut bytes, pages + 4, 1);
    let e = error_of(&bytes);
    assert_eq!(field_of(&e), "pad");
}

#[test]
fn task_fields() {
    type Change = fn(&mut ImageBuilder);
    let cases: [(Change, &str, usize); 8] = [
        (|b| b.task.comm = [b'a'; 16], "comm", 0),
        (|b| b.task.nr_rlimits = 15, "nr_rlimits", 28),
        (|b| b.task.nr_threads = 0, "nr_threads", 32),
        (|b| b.task.nr_threads = 4097, "nr_threads", 32),
        (|b| b.task.personality = 0x0010_0001, "personality", 24),
        (|b| b.task.pad = 1, "pad", 36),
        (
            |b| b.task.rlim[3] = Rlimit { cur: 5, max: 4 },
            "rlim[3].cur",
            40 + 3 * 16,
        ),
        (
            |b| b.task.rlim[7].max = u64::MAX,
            "rlim[7].max",
            40 + 7 * 16 + 8,
        ),
    ];
    for (change, field, offset) in cases {
        let mut b = ImageBuilder::new();
        change(&mut b);
        expect_field(&b, RecordType::Task, 0, field, offset);
    }
    // A personality flag beside PER_LINUX is fine (ADDR_NO_RANDOMIZE).
    let mut b = ImageBuilder::new();
    b.task.personality = 0x0004_0000;
    check(&b.build().bytes).unwrap();
}

/// The checks v1 made of the task record, now of each thread record.
#[test]
fn thread_fields() {
    type Change = fn(&mut ImageBuilder);
    let cases: [(Change, &str, usize); 16] = [
        (|b| b.leader().thread.comm = [b'a'; 16], "comm", 0),
        (|b| b.leader().thread.tid = 0, "tid", 16),
        (|b| b.leader().thread.tid = -74, "tid", 16),
        (|b| b.leader().thread.pad = 1, "pad", 68),
        (|b| b.leader().thread.sas_ss_flags = 4, "sas_ss_flags", 48),
        (|b| b.leader().thread.sas_ss_flags = 3, "sas_ss_flags", 48),
        (
            |b| b.leader().thread.sas_ss_flags = 1 << 30,
            "sas_ss_flags",
            48,
        ),
        (
            |b| {
                let t = &mut b.leader().thread;
                t.sas_ss_flags = 2; // SS_DISABLE, with a stack
                t.sas_ss_sp = 0x1000;
            },
            "sas_ss_sp",
            32,
        ),
        (
            |b| {
                let t = &mut b.leader().thread;
                t.sas_ss_flags = 2 | 1 << 31;
                t.sas_ss_size = 0x2000;
            },
            "sas_ss_size",
            40,
        ),
        (
            |b| {
                let t = &mut b.leader().thread;
                t.sas_ss_sp = 0x1000;
                t.sas_ss_size = u64::MAX;
            },
            "sas_ss_size",
            40,
        ),
        (
            |b| {
                let t = &mut b.leader().thread;
                t.sas_ss_sp = TASK_SIZE_4LEVEL - 0x1000;
                t.sas_ss_size = 0x2000;
            },
            "sas_ss_sp + sas_ss_size",
            40,
        ),
        (
            |b| b.leader().thread.clear_child_tid = u64::MAX,
            "clear_child_tid",
            72,
        ),
        (
            |b| b.leader().thread.robust_list = TASK_SIZE_4LEVEL + 1,
            "robust_list",
            80,
        ),
        (
            |b| b.leader().thread.robust_list_len = 4097,
            "robust_list_len",
            88,
        ),
        (|b| b.leader().thread.rseq_len = 16, "rseq_len", 52),
        (|b| b.leader().thread.rseq += 8, "rseq", 56),
    ];
    for (change, field, offset) in cases {
        let mut b = ImageBuilder::new();
        change(&mut b);
        expect_field(&b, RecordType::Thread, 0, field, offset);
    }
    let mut b = ImageBuilder::new();
    b.leader().thread.rseq = TASK_SIZE_4LEVEL;
    expect_field(&b, RecordType::Thread, 0, "rseq + rseq_len", 52);
    let mut b = ImageBuilder::new();
    b.leader().thread.rseq_len = 4096 + 32;
    expect_field(&b, RecordType::Thread, 0, "rseq_len", 52);

    // The sum at exactly the end of user space is fine (start <= end <= TASK_SIZE).
    let mut b = ImageBuilder::new();
    b.leader().thread.sas_ss_sp = TASK_SIZE_4LEVEL - 0x2000;
    b.leader().thread.sas_ss_size = 0x2000;
    check(&b.build().bytes).unwrap();
    // Every mode sigaltstack(2) can leave: on the stack, disabled (also
    // by SS_AUTODISARM), with or without SS_AUTODISARM.
    for flags in [1, 1 | 1 << 31, 2, 2 | 1 << 31, 1 << 31] {
        let mut b = ImageBuilder::new();
        let t = &mut b.leader().thread;
        t.sas_ss_flags = flags;
        if flags & 2 == 0 {
            t.sas_ss_sp = layout::ANON;
            t.sas_ss_size = 0x2000;
        }
        check(&b.build().bytes).unwrap_or_else(|e| panic!("flags {flags:#x}: {e}"));
    }
    // No rseq area: its address is not checked.
    let mut b = ImageBuilder::new();
    b.leader().thread.rseq_len = 0;
    b.leader().thread.rseq = u64::MAX;
    check(&b.build().bytes).unwrap();
}

#[test]
fn creds_fields() {
    let mut b = ImageBuilder::new();
    b.creds.gid = u32::MAX;
    expect_field(&b, RecordType::Creds, 0, "gid", 16);

    let mut b = ImageBuilder::new();
    b.groups[1] = u32::MAX;
    expect_field(&b, RecordType::Creds, 0, "groups[1]", 84);

    let mut b = ImageBuilder::new();
    b.creds.cap_bset = 1 << 41;
    expect_field(&b, RecordType::Creds, 0, "cap_bset", 64);

    let mut b = ImageBuilder::new();
    b.creds.securebits = 0x100;
    expect_field(&b, RecordType::Creds, 0, "securebits", 32);

    // A group count over the bound, and one that disagrees with the length.
    let mut b = ImageBuilder::new();
    b.creds.ngroups = u32::MAX;
    expect_field(&b, RecordType::Creds, 0, "ngroups", 36);
    b.creds.ngroups = 3;
    let e = built_error(&b);
    assert!(
        matches!(
            e,
            ImageError::LengthMismatch {
                len: 88,
                expected: 92,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn sighand_fields() {
    let mut b = ImageBuilder::new();
    b.sighand.action[8].handler = 0x40_1000; // SIGKILL
    let e = expect_field(&b, RecordType::Sighand, 0, "action[8].handler", 8 * 32);
    assert!(e.to_string().contains("SIGKILL"));

    let mut b = ImageBuilder::new();
    b.sighand.action[1].handler = 0xffff_ffff_8100_0000;
    expect_field(&b, RecordType::Sighand, 0, "action[1].handler", 32);
    b.sighand.action[1].handler = u64::MAX; // SIG_ERR passes
    check(&b.build().bytes).unwrap();

    let mut b = ImageBuilder::new();
    b.sighand.action[9].flags = 1 << 32;
    expect_field(&b, RecordType::Sighand, 0, "action[9].flags", 9 * 32 + 8);

    let mut b = ImageBuilder::new();
    b.sighand.action[9].restorer = TASK_SIZE_4LEVEL;
    expect_field(
        &b,
        RecordType::Sighand,
        0,
        "action[9].restorer",
        9 * 32 + 16,
    );
}

#[test]
fn regs_fields() {
    for (name, index, value) in [
        ("ip", 16, 0xffff_ffff_8100_0000),
        ("sp", 19, TASK_SIZE_4LEVEL),
        ("cs", 17, 0x23),
        ("ss", 20, 0x2b + 8),
        ("fs", 25, 0x63),
    ] {
        let mut b = ImageBuilder::new();
        b.leader().regs.gregs[index] = value;
        expect_field(&b, RecordType::Regs, 0, name, index * 8);
    }
    let mut b = ImageBuilder::new();
    b.leader().regs.pad = 1;
    expect_field(&b, RecordType::Regs, 0, "pad", 216);
}

#[test]
fn xstate_fields() {
    let image = ImageBuilder::new().build();
    let x = image.span(RecordType::Xstate, 0).payload();

    let mut bytes = image.bytes.clone();
    put_u64(&mut bytes, x + 16 + 512, 0x3);
    let e = error_of(&bytes);
    assert_eq!(field_of(&e), "xsave.header.xfeatures");
    assert_eq!(e.at().offset, (x + 16 + 512) as u64);

    let mut bytes = image.bytes.clone();
    put_u64(&mut bytes, x + 16 + 520, 1 << 63);
    assert_eq!(field_of(&error_of(&bytes)), "xsave.header.xcomp_bv");

    let mut b = ImageBuilder::new();
    b.leader().xstate.size = 512;
    expect_field(&b, RecordType::Xstate, 0, "size", 8);
    let mut b = ImageBuilder::new();
    b.leader().xstate.pad = 1;
    expect_field(&b, RecordType::Xstate, 0, "pad", 12);
}

#[test]
fn mm_fields() {
    let mut b = ImageBuilder::new();
    b.mm.end_code = b.mm.start_code - 1;
    expect_field(&b, RecordType::Mm, 0, "end_code", 8);

    let mut b = ImageBuilder::new();
    b.mm.env_end = TASK_SIZE_4LEVEL + 1;
    expect_field(&b, RecordType::Mm, 0, "env_end", 80);

    let mut b = ImageBuilder::new();
    b.mm.vvar += 1;
    expect_field(&b, RecordType::Mm, 0, "vvar", 96);
    b.mm.vvar = b.mm.vdso;
    expect_field(&b, RecordType::Mm, 0, "vvar", 96);

    // No AT_NULL within AT_VECTOR_SIZE (50 words for this configuration).
    let mut b = ImageBuilder::new();
    for pair in b.mm.auxv.chunks_mut(2).take(25) {
        pair[0] = 6;
    }
    expect_field(&b, RecordType::Mm, 0, "auxv", 112);
    b.mm.auxv[48] = 0;
    check(&b.build().bytes).unwrap();
}
