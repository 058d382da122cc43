//! The semantic state of a checkpoint image as its records go by: the
//! record order of format version 2 (with its file records and its groups
//! of thread records), the file records' fds, the thread ids, the VMA
//! layout, the page addresses, the trailer, and the summary with the notes
//! on what only the restarting kernel can judge.
//! Field checks of single records are in `checks`.

use std::collections::HashMap;
use std::fmt;
use std::mem::offset_of;

use serde::Serialize;

use crate::checks::{self, linux, Ctx, FileCheck, VdsoArea};
use crate::format::{
    c_str, File, ImageHeader, PagesHeader, RecordType, Thread, Wire, AUXV_WORDS,
    CHECKPOINT_INHERIT_STDIO, FD_CLOEXEC, FILE_CHR, FILE_DIR, FILE_EVENTFD, FILE_INHERIT,
    FILE_PIPE, FILE_REG, FILE_UNIX, MAX_PENDING, O_ACCMODE, O_RDONLY, O_WRONLY, PAGES_PER_CHUNK,
    PAGE_SIZE, RESTART_NONE, VMA_EXE, VMA_FILE, VMA_PAGES,
};
use crate::parser::{PagesSummary, Record};
use crate::reader::Head;
use crate::{At, ImageError, KernelConfig, Limits, TASK_SIZE_4LEVEL};

/// What a good image holds, and what the host could not check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Size of the image.
    pub bytes: u64,
    /// Records before the trailer.
    pub records: u64,
    /// The process's command name.
    pub comm: String,
    /// Its pid at checkpoint.
    pub pid: i32,
    /// Its threads (thread records).
    pub threads: u32,
    /// Its open file descriptors (file records), inherited ones included.
    pub files: u32,
    /// Queued signals, the process-wide queue's and the threads' own.
    pub pending_signals: u64,
    /// Interval timers armed (of `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`).
    pub armed_itimers: u32,
    /// Threads stopped in an interrupted system call that
    /// `restart_syscall()` resumes (a restart block other than
    /// `CR_RESTART_NONE`).
    pub restart_blocks: u32,
    /// Release of the kernel that wrote it.
    pub release: String,
    /// Its config hash.
    #[serde(serialize_with = "crate::format::hex")]
    pub config_hash: u64,
    /// The configuration the hash names, if recognised.
    pub kernel_config: Option<KernelConfig>,
    /// The end of user space addresses were checked against.
    pub task_size: u64,
    /// VMA records.
    pub vmas: u64,
    /// Of which file mappings.
    pub file_vmas: u64,
    /// Pages records with pages in them.
    pub page_records: u64,
    /// Pages in all.
    pub pages: u64,
    /// The lowest page address.
    pub first_page: Option<u64>,
    /// The highest.
    pub last_page: Option<u64>,
    /// The trailer's (verified) CRC-32.
    pub checksum: u32,
    /// What restart checks that depends on the restarting kernel, CPU,
    /// files or caller, and so could not be checked here.
    pub notes: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "good checkpoint image of {} (pid {}) from kernel {}: {} records, {} threads, \
             {} open files, {} pending signals, {} VMAs, {} pages in {} page records, {} bytes, \
             CRC-32 {:#010x}",
            self.comm,
            self.pid,
            self.release,
            self.records,
            self.threads,
            self.files,
            self.pending_signals,
            self.vmas,
            self.pages,
            self.page_records,
            self.bytes,
            self.checksum
        )
    }
}

/// Where the record order of version 2 is:
/// `HEADER TASK CREDS SIGHAND SIGNALS FILES FILE* (THREAD REGS XSTATE)+ MM
/// VMA* PAGES+ TRAILER`, with as many file records as the files record
/// announces and as many thread groups as the task record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Task,
    Creds,
    Sighand,
    Signals,
    Files,
    File,
    Thread,
    Regs,
    Xstate,
    Mm,
    Vmas,
    Pages,
    Trailer,
    End,
}

impl Stage {
    /// The record type expected here.
    fn kind(self) -> Option<RecordType> {
        use RecordType as T;
        Some(match self {
            Stage::Header => T::Header,
            Stage::Task => T::Task,
            Stage::Creds => T::Creds,
            Stage::Sighand => T::Sighand,
            Stage::Signals => T::Signals,
            Stage::Files => T::Files,
            Stage::File => T::File,
            Stage::Thread => T::Thread,
            Stage::Regs => T::Regs,
            Stage::Xstate => T::Xstate,
            Stage::Mm => T::Mm,
            Stage::Vmas => T::Vma,
            Stage::Pages => T::Pages,
            Stage::Trailer => T::Trailer,
            Stage::End => return None,
        })
    }

    /// What is expected, in words.
    fn expected(self) -> &'static str {
        match self {
            Stage::Header => "a header record (or this is no checkpoint image)",
            Stage::Task => "the task record",
            Stage::Creds => "the creds record",
            Stage::Sighand => "the sighand record",
            Stage::Signals => "the signals record",
            Stage::Files => "the files record",
            Stage::File => "a file record",
            Stage::Thread => "a thread record",
            Stage::Regs => "the thread's regs record",
            Stage::Xstate => "the thread's xstate record",
            Stage::Mm => "the mm record",
            Stage::Vmas => "a vma record",
            Stage::Pages => "a pages record",
            Stage::Trailer => "the trailer (after the empty pages record)",
            Stage::End => "the end of the image",
        }
    }

    /// Where a stream that ends here ends.
    fn missing(self) -> &'static str {
        match self {
            Stage::Header => "before its header record",
            Stage::Task => "before the task record",
            Stage::Creds => "before the creds record",
            Stage::Sighand => "before the sighand record",
            Stage::Signals => "before the signals record",
            Stage::Files => "before the files record",
            Stage::File => "before all the file records the files record announces",
            Stage::Thread => "before all the thread records the task record announces",
            Stage::Regs => "before the regs record",
            Stage::Xstate => "before the xstate record",
            Stage::Mm => "before the mm record",
            Stage::Vmas => "before all the VMA records the mm record announces",
            Stage::Pages => "before the empty pages record that ends the page data",
            Stage::Trailer | Stage::End => "before its trailer",
        }
    }

    fn next(self) -> Stage {
        match self {
            Stage::Header => Stage::Task,
            Stage::Task => Stage::Creds,
            Stage::Creds => Stage::Sighand,
            Stage::Sighand => Stage::Signals,
            Stage::Signals => Stage::Files,
            Stage::Files => Stage::File,
            Stage::File => Stage::Thread,
            Stage::Thread => Stage::Regs,
            Stage::Regs => Stage::Xstate,
            Stage::Xstate => Stage::Mm,
            Stage::Mm => Stage::Vmas,
            Stage::Vmas => Stage::Pages,
            Stage::Pages => Stage::Trailer,
            Stage::Trailer | Stage::End => Stage::End,
        }
    }
}

/// A VMA as the page checks need it.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    pages: bool,
}

/// Distinct file paths named in the notes; more are only mentioned.
const NOTED_PATHS: usize = 4;

/// Thread ids named in the notes; more are only mentioned.
const NOTED_TIDS: usize = 8;

/// Files reopened by path that get a note each; more are only counted.
const NOTED_FILES: u32 = 8;

/// The checks that span records. At most `CR_MAX_THREADS` thread ids and
/// `CR_MAX_VMAS` spans are kept; of the file records, only their count and
/// the last fd.
pub(crate) struct Verifier {
    limits: Limits,
    stage: Stage,
    task_size: u64,
    auxv_words: usize,
    header: Option<ImageHeader>,
    config: Option<KernelConfig>,
    comm: String,
    pid: i32,
    /// The task record's thread count.
    nr_threads: u32,
    /// The thread ids, in order, and the record of each.
    tids: Vec<i32>,
    tid_records: HashMap<i32, u64>,
    /// The POSIX timers that signal one thread: (id, tid).
    timer_tids: Vec<(i32, i32)>,
    /// The files record's count of file records.
    nr_files: u32,
    /// File records read.
    files: u32,
    /// The fd of the last file record.
    last_fd: Option<i32>,
    /// Files reopened by path with a note each, at most `NOTED_FILES`.
    noted_files: u32,
    /// Files reopened by path beyond those.
    more_files: u32,
    pending_signals: u64,
    armed_itimers: u32,
    restart_blocks: u32,
    notes: Vec<String>,
    vdso: Option<VdsoArea>,
    nr_vmas: u64,
    vmas: Vec<Span>,
    file_vmas: u64,
    /// A VMA flagged `CR_VMA_EXE` was read.
    exe_vma: bool,
    paths: Vec<String>,
    /// More distinct paths than `NOTED_PATHS`.
    more_paths: bool,
    /// The VMA the last page was in.
    page_vma: usize,
    /// The lowest address the next page may have.
    next_page: u64,
    pages: u64,
    page_records: u64,
    first_page: Option<u64>,
    last_page: Option<u64>,
    checksum: u32,
}

impl Verifier {
    pub fn new(limits: Limits) -> Self {
        Verifier {
            limits,
            stage: Stage::Header,
            task_size: limits.task_size.unwrap_or(TASK_SIZE_4LEVEL),
            auxv_words: AUXV_WORDS,
            header: None,
            config: None,
            comm: String::new(),
            pid: 0,
            nr_threads: 0,
            tids: Vec::new(),
            tid_records: HashMap::new(),
            timer_tids: Vec::new(),
            nr_files: 0,
            files: 0,
            last_fd: None,
            noted_files: 0,
            more_files: 0,
            pending_signals: 0,
            armed_itimers: 0,
            restart_blocks: 0,
            notes: Vec::new(),
            vdso: None,
            nr_vmas: 0,
            vmas: Vec::new(),
            file_vmas: 0,
            exe_vma: false,
            paths: Vec::new(),
            more_paths: false,
            page_vma: 0,
            next_page: 0,
            pages: 0,
            page_records: 0,
            first_page: None,
            last_page: None,
            checksum: 0,
        }
    }

    /// Where a stream that ends before the next record ends.
    pub fn missing(&self) -> &'static str {
        self.stage.missing()
    }

    fn ctx(&self, head: &Head, kind: RecordType) -> Ctx {
        Ctx {
            record: head.index,
            kind,
            payload: head.payload(),
            task_size: self.task_size,
        }
    }

    /// Whether a record of `kind` may come next (an error record always
    /// may: a checkpoint can fail anywhere, even before its header).
    pub fn check_order(&self, kind: RecordType, at: At) -> Result<(), ImageError> {
        if kind == RecordType::Error && self.stage != Stage::End {
            return Ok(());
        }
        let found = self.vmas.len() as u64;
        let threads = self.tids.len() as u32;
        match (self.stage, kind) {
            (Stage::File, RecordType::Thread) => Err(ImageError::FileCount {
                at,
                declared: self.nr_files,
                found: self.files,
            }),
            (Stage::Thread, RecordType::File) if self.tids.is_empty() => {
                Err(ImageError::FileCount {
                    at,
                    declared: self.nr_files,
                    found: self.files + 1,
                })
            }
            (Stage::Thread, RecordType::Mm) => Err(ImageError::ThreadCount {
                at,
                declared: self.nr_threads,
                found: threads,
            }),
            (Stage::Mm, RecordType::Thread) => Err(ImageError::ThreadCount {
                at,
                declared: self.nr_threads,
                found: threads + 1,
            }),
            (Stage::Vmas, RecordType::Pages) => Err(ImageError::VmaCount {
                at,
                declared: self.nr_vmas,
                found,
            }),
            (Stage::Pages, RecordType::Vma) if self.page_records == 0 => {
                Err(ImageError::VmaCount {
                    at,
                    declared: self.nr_vmas,
                    found: found + 1,
                })
            }
            (stage, kind) if stage.kind() == Some(kind) => Ok(()),
            (stage, found) => Err(ImageError::UnexpectedRecord {
                at,
                expected: stage.expected(),
                found,
            }),
        }
    }

    /// Checks a record other than pages, whose payload is `payload`.
    pub fn record(
        &mut self,
        kind: RecordType,
        head: &Head,
        payload: &[u8],
    ) -> Result<Record, ImageError> {
        let ctx = self.ctx(head, kind);
        let record = match kind {
            RecordType::Header => {
                let h = checks::header(&ctx, payload)?;
                self.take_header(&h);
                Record::Header(h)
            }
            RecordType::Task => {
                let t = checks::task(&ctx, payload)?;
                self.comm = c_str(&t.comm);
                self.pid = t.pid;
                self.nr_threads = t.nr_threads;
                self.tids.reserve(t.nr_threads.min(64) as usize);
                let nofile = t.rlim[linux::RLIMIT_NOFILE].max;
                if nofile > linux::NR_OPEN_DEFAULT {
                    self.notes.push(format!(
                        "RLIMIT_NOFILE hard limit {nofile}: restart needs fs.nr_open at least that"
                    ));
                }
                Record::Task(Box::new(t))
            }
            RecordType::Creds => {
                let (creds, groups) = checks::creds(&ctx, payload, head.len)?;
                self.notes.push(format!(
                    "ids {}/{}/{}/{} {}/{}/{}/{}, {} groups, capabilities {:#x} (bounding {:#x}): \
                     restart needs the caller to be allowed to take them",
                    creds.uid,
                    creds.euid,
                    creds.suid,
                    creds.fsuid,
                    creds.gid,
                    creds.egid,
                    creds.sgid,
                    creds.fsgid,
                    groups.len(),
                    creds.cap_permitted,
                    creds.cap_bset
                ));
                Record::Creds { creds, groups }
            }
            RecordType::Sighand => Record::Sighand(Box::new(checks::sighand(&ctx, payload)?)),
            RecordType::Signals => {
                let (signals, pending, timers) = checks::signals(&ctx, payload, head.len)?;
                self.pending_signals += pending.len() as u64;
                self.armed_itimers = signals.itimer.iter().filter(|t| t.value != 0).count() as u32;
                self.timer_tids = timers
                    .iter()
                    .filter(|t| t.tid > 0)
                    .map(|t| (t.id, t.tid))
                    .collect();
                if !timers.is_empty() {
                    let ids: Vec<String> = timers.iter().map(|t| t.id.to_string()).collect();
                    self.notes.push(format!(
                        "POSIX timers {}: restart makes them again with these ids",
                        ids.join(", ")
                    ));
                }
                Record::Signals {
                    signals,
                    pending,
                    timers,
                }
            }
            RecordType::Files => {
                let (files, cwd) = checks::files(&ctx, payload, head.len)?;
                self.nr_files = files.nr_files;
                if cwd != "/" {
                    self.notes.push(format!(
                        "working directory {cwd}: restart changes to it, so it must exist"
                    ));
                }
                Record::Files { files, cwd }
            }
            RecordType::File => {
                let check = FileCheck {
                    index: self.files,
                    inherit_stdio: self
                        .header
                        .is_some_and(|h| h.flags & CHECKPOINT_INHERIT_STDIO != 0),
                };
                let (file, path) = checks::file(&ctx, payload, head.len, check)?;
                if let Some(prev) = self.last_fd.filter(|&prev| file.fd <= prev) {
                    return Err(ImageError::FdOrder {
                        at: ctx.at(offset_of!(File, fd)),
                        fd: file.fd,
                        prev,
                    });
                }
                self.last_fd = Some(file.fd);
                self.files += 1;
                self.note_file(&file, path.as_deref());
                Record::File { file, path }
            }
            RecordType::Thread => {
                let (thread, pending) = checks::thread(&ctx, payload, head.len)?;
                if let Some(&first) = self.tid_records.get(&thread.tid) {
                    return Err(ImageError::DuplicateTid {
                        at: ctx.at(offset_of!(Thread, tid)),
                        tid: thread.tid,
                        first,
                    });
                }
                self.tid_records.insert(thread.tid, head.index);
                self.tids.push(thread.tid);
                self.pending_signals += pending.len() as u64;
                if self.pending_signals > u64::from(MAX_PENDING) {
                    return Err(ImageError::Field {
                        at: ctx.at(offset_of!(Thread, nr_pending)),
                        field: "nr_pending".into(),
                        value: pending.len() as u64,
                        problem: format!(
                            "makes {} queued signals in the image, more than CR_MAX_PENDING \
                             ({MAX_PENDING}) in all",
                            self.pending_signals
                        ),
                    });
                }
                if thread.restart.kind != RESTART_NONE {
                    self.restart_blocks += 1;
                }
                Record::Thread {
                    thread: Box::new(thread),
                    pending,
                }
            }
            RecordType::Regs => Record::Regs(Box::new(checks::regs(&ctx, payload)?)),
            RecordType::Xstate => {
                let x = checks::xstate(&ctx, payload, head.len)?;
                let note = format!(
                    "XSAVE state of {} bytes with features {:#x}: restart needs a CPU with \
                     that XSAVE size and these features",
                    x.size, x.xfeatures
                );
                // One note for the threads that agree.
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                Record::Xstate(x)
            }
            RecordType::Mm => {
                if let Some(&(id, tid)) =
                    self.timer_tids.iter().find(|(_, t)| !self.tids.contains(t))
                {
                    return Err(ImageError::TimerThread {
                        at: ctx.at(0),
                        id,
                        tid,
                    });
                }
                let m = checks::mm(&ctx, payload, self.auxv_words)?;
                self.nr_vmas = m.nr_vmas;
                self.vmas.reserve(m.nr_vmas.min(1024) as usize);
                self.vdso = (m.vdso != 0).then_some(VdsoArea {
                    vvar: m.vvar,
                    vdso: m.vdso,
                });
                Record::Mm(Box::new(m))
            }
            RecordType::Vma => {
                let prev_end = self.vmas.last().map_or(0, |s| s.end);
                let (vma, path) = checks::vma(&ctx, payload, head.len, prev_end, self.vdso)?;
                if vma.flags & VMA_EXE != 0 {
                    if self.exe_vma {
                        return Err(checks::second_exe(&ctx, &vma));
                    }
                    self.exe_vma = true;
                }
                self.vmas.push(Span {
                    start: vma.start,
                    end: vma.end,
                    pages: vma.flags & VMA_PAGES != 0,
                });
                if vma.flags & VMA_FILE != 0 {
                    self.file_vmas += 1;
                }
                if let Some(p) = path.as_ref().filter(|p| !self.paths.contains(p)) {
                    if self.paths.len() < NOTED_PATHS {
                        self.paths.push(p.clone());
                    } else {
                        self.more_paths = true;
                    }
                }
                Record::Vma { vma, path }
            }
            RecordType::Error => {
                let (errno, message) = checks::error(&ctx, payload, head.len)?;
                Record::Error {
                    errno,
                    name: crate::format::errno_name(errno),
                    message,
                }
            }
            RecordType::Trailer => {
                let t = checks::trailer(&ctx, payload, head.index, head.crc_before)?;
                self.checksum = t.checksum;
                Record::Trailer(t)
            }
            RecordType::Pages => {
                // Pages records stream through `pages_header`/`page_addresses`.
                return Err(ImageError::UnexpectedRecord {
                    at: ctx.at(0),
                    expected: self.stage.expected(),
                    found: kind,
                });
            }
        };
        if kind != RecordType::Error {
            self.advance();
        }
        Ok(record)
    }

    /// Moves past the record just checked.
    fn advance(&mut self) {
        self.stage = match self.stage {
            Stage::Files | Stage::File if self.files < self.nr_files => Stage::File,
            Stage::Files | Stage::File => Stage::Thread,
            Stage::Xstate if (self.tids.len() as u32) < self.nr_threads => Stage::Thread,
            Stage::Mm | Stage::Vmas if (self.vmas.len() as u64) < self.nr_vmas => Stage::Vmas,
            Stage::Mm => Stage::Pages,
            stage => stage.next(),
        };
    }

    /// The note on what restart needs for an open file: the caller's own
    /// descriptor for an inherited one, the file at its path for the others
    /// (the first `NOTED_FILES` of them; the rest are counted).
    fn note_file(&mut self, f: &File, path: Option<&str>) {
        let fd = f.fd;
        if f.kind == FILE_INHERIT {
            self.notes.push(format!(
                "fd {fd} is inherited (CR_CHECKPOINT_INHERIT_STDIO): the caller of restart \
                 must have its fd {fd} open"
            ));
            return;
        }
        if f.kind == FILE_EVENTFD {
            self.notes.push(format!(
                "fd {fd} is an eventfd: the caller of restart must put it at fd {fd}"
            ));
            return;
        }
        if f.kind == FILE_UNIX {
            let kind = match f.sock_type {
                1 => "stream",
                2 => "datagram",
                _ => "seqpacket",
            };
            let peer = match f.size {
                0 => "whose peer is gone".to_owned(),
                peer => format!("peer of inode {peer}"),
            };
            self.notes.push(format!(
                "fd {fd} is a unix {kind} socket (inode {}, {peer}): the caller of restart must \
                 put it at fd {fd}",
                f.rdev
            ));
            return;
        }
        if f.kind == FILE_PIPE {
            let end = match f.flags & O_ACCMODE {
                O_RDONLY => "the read end",
                O_WRONLY => "the write end",
                _ => "a read-write end",
            };
            let of = match path {
                Some(path) => format!("the FIFO {path}"),
                None => "a pipe".to_owned(),
            };
            self.notes.push(format!(
                "fd {fd} is {end} of {of} (inode {}, {} bytes buffered at checkpoint): the \
                 caller of restart must put it at fd {fd}",
                f.rdev, f.size
            ));
            return;
        }
        if self.noted_files >= NOTED_FILES {
            self.more_files += 1;
            return;
        }
        self.noted_files += 1;
        let path = path.unwrap_or_default();
        let mode = match f.flags & O_ACCMODE {
            O_RDONLY => "read",
            O_WRONLY => "write",
            _ => "read and write",
        };
        let cloexec = if f.fd_flags & FD_CLOEXEC != 0 {
            ", close-on-exec"
        } else {
            ""
        };
        let what = match f.kind {
            FILE_REG => format!(
                "the regular file {path}, which must be there with size {} bytes (as at \
                 checkpoint)",
                f.size
            ),
            FILE_DIR => format!("the directory {path}, which must be there"),
            FILE_CHR => format!(
                "the character device {path}, which must be there (device number {:#x} at \
                 checkpoint)",
                f.rdev
            ),
            _ => return,
        };
        self.notes.push(format!(
            "fd {fd} ({mode}{cloexec}, position {}): restart reopens {what}",
            f.pos
        ));
    }

    fn take_header(&mut self, h: &ImageHeader) {
        self.config = KernelConfig::recognise(h.config_hash);
        let release = c_str(&h.release);
        self.task_size = self
            .limits
            .task_size
            .or(self.config.map(|c| c.task_size))
            .unwrap_or(TASK_SIZE_4LEVEL);
        if let Some(c) = self.config {
            self.auxv_words = (c.at_vector_size as usize).min(AUXV_WORDS);
        }
        self.notes.push(format!(
            "written by kernel {release}: restart refuses it on any other release"
        ));
        self.notes.push(match self.config {
            Some(c) => format!(
                "config hash {:#x} is {c}: restart needs a kernel with that configuration",
                h.config_hash
            ),
            None => format!(
                "config hash {:#x} is not a configuration this build knows: restart needs the \
                 kernel's; addresses were checked against user space ending at {:#x}",
                h.config_hash, self.task_size
            ),
        });
        self.header = Some(*h);
    }

    /// Checks the fixed part of a pages record; returns its page count.
    pub fn pages_header(&mut self, head: &Head, payload: &[u8]) -> Result<u32, ImageError> {
        let ctx = self.ctx(head, RecordType::Pages);
        let hdr = PagesHeader::from_bytes(payload);
        checks::pages_header(&ctx, &hdr, head.len)
    }

    /// Checks the addresses of a pages record: page aligned, increasing
    /// over the whole image, each in a VMA flagged `CR_VMA_PAGES`.
    pub fn page_addresses(&mut self, head: &Head, addrs: &[u64]) -> Result<Record, ImageError> {
        let ctx = self.ctx(head, RecordType::Pages);
        for (i, &addr) in addrs.iter().enumerate() {
            let off = 8 + i * 8;
            if !addr.is_multiple_of(PAGE_SIZE) {
                let field = format!("addrs[{i}]");
                return Err(ctx.field(off, field, addr, "not page aligned"));
            }
            if addr < self.next_page {
                return Err(ImageError::PageOrder {
                    at: ctx.at(off),
                    addr,
                    min: self.next_page,
                });
            }
            while self.vmas.get(self.page_vma).is_some_and(|v| addr >= v.end) {
                self.page_vma += 1;
            }
            match self.vmas.get(self.page_vma) {
                Some(v) if addr >= v.start && v.pages => {}
                Some(v) if addr >= v.start => {
                    return Err(ImageError::PageNotAllowed {
                        at: ctx.at(off),
                        addr,
                        start: v.start,
                        end: v.end,
                    })
                }
                _ => {
                    return Err(ImageError::PageOutsideVma {
                        at: ctx.at(off),
                        addr,
                    })
                }
            }
            self.next_page = addr.saturating_add(PAGE_SIZE);
        }
        debug_assert!(addrs.len() <= PAGES_PER_CHUNK as usize);
        let summary = PagesSummary {
            nr_pages: addrs.len() as u32,
            first: addrs.first().copied(),
            last: addrs.last().copied(),
        };
        if addrs.is_empty() {
            self.advance();
        } else {
            self.pages += addrs.len() as u64;
            self.page_records += 1;
            self.first_page = self.first_page.or(summary.first);
            self.last_page = summary.last;
        }
        Ok(Record::Pages(summary))
    }

    /// The summary of an image whose trailer has been checked.
    pub fn summary(&self, bytes: u64, records: u64) -> Option<Summary> {
        let header = self.header.as_ref()?;
        if self.stage != Stage::End {
            return None;
        }
        let mut notes = self.notes.clone();
        if self.tids.len() > 1 {
            let mut tids: Vec<String> = self.tids[1..]
                .iter()
                .take(NOTED_TIDS)
                .map(|t| t.to_string())
                .collect();
            if self.tids.len() - 1 > NOTED_TIDS {
                tids.push("...".into());
            }
            notes.push(format!(
                "{} threads: restart gives each but the first its thread id ({}), which must be \
                 free in the pid namespace it restarts in",
                self.tids.len(),
                tids.join(", ")
            ));
        }
        if self.more_files > 0 {
            notes.push(format!(
                "{} more files: restart reopens them by path, and each must be there as at \
                 checkpoint",
                self.more_files
            ));
        }
        if self.file_vmas > 0 {
            let mut files = self.paths.join(", ");
            if self.more_paths {
                files.push_str(", ...");
            }
            notes.push(format!(
                "{} file mappings: restart opens their files and assumes them unchanged: {files}",
                self.file_vmas
            ));
        }
        if self.vdso.is_some() {
            notes.push(
                "vDSO: restart maps it again where it was, which needs the same vDSO layout"
                    .to_string(),
            );
        }
        Some(Summary {
            bytes,
            records,
            comm: self.comm.clone(),
            pid: self.pid,
            threads: self.tids.len() as u32,
            files: self.files,
            pending_signals: self.pending_signals,
            armed_itimers: self.armed_itimers,
            restart_blocks: self.restart_blocks,
            release: c_str(&header.release),
            config_hash: header.config_hash,
            kernel_config: self.config,
            task_size: self.task_size,
            vmas: self.vmas.len() as u64,
            file_vmas: self.file_vmas,
            page_records: self.page_records,
            pages: self.pages,
            first_page: self.first_page,
            last_page: self.last_page,
            checksum: self.checksum,
            notes,
        })
    }
}
