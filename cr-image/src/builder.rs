//! A checkpoint image writer for tests (feature `builder`): this crate's
//! unit tests, the CLI tests of `crvmm` and the fuzz seeds build images
//! with it. It writes what it is given, valid or not, with the record
//! lengths, padding, record count and CRC-32 that the contents imply, and
//! records where each record landed so that a test can damage a chosen
//! byte. [`ImageBuilder::new`] describes a small, valid process with one
//! thread, working directory `/` and no open files;
//! [`ImageBuilder::add_thread`], [`ThreadSpec::queue`],
//! [`ImageBuilder::queue_shared`] and the [`Restart`] constructors add
//! threads, queued signals and restart blocks, and the interval timers are
//! `signals.itimer`. [`ImageBuilder::add_file`] with the [`FileSpec`]
//! constructors adds open files of each kind, [`ImageBuilder::inherit_stdio`]
//! sets the header flag `CR_CHECKPOINT_INHERIT_STDIO` with inherited fds 0
//! to 2, [`ImageBuilder::set_cwd`] changes the working directory, and the
//! header's other flags are `header.flags`.

use crc::{Crc, CRC_32_ISO_HDLC};

use crate::format::*;
use crate::KernelConfig;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A VMA and the path of its file (empty for anonymous mappings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaSpec {
    /// The record's fixed part (`path_len` is written as it is).
    pub vma: Vma,
    /// The path bytes written after it, with the NUL if wanted.
    pub path: Vec<u8>,
}

impl VmaSpec {
    /// A VMA with a consistent `path_len` (`path` gets its NUL here).
    pub fn new(start: u64, end: u64, prot: u32, flags: u32, pgoff: u64, path: &str) -> Self {
        let path = c_path(path);
        VmaSpec {
            vma: Vma {
                start,
                end,
                pgoff,
                prot,
                flags,
                path_len: path.len() as u32,
                pad: 0,
                shm_id: 0,
            },
            path,
        }
    }
}

/// The path bytes of `path` with its NUL (none for an empty path).
fn c_path(path: &str) -> Vec<u8> {
    if path.is_empty() {
        return Vec::new();
    }
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p
}

/// An open file: its record's fixed part and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The record's fixed part (`path_len` is written as it is).
    pub file: File,
    /// The path bytes written after it, with the NUL if wanted.
    pub path: Vec<u8>,
    /// Bytes written after the path (a deleted file's content).
    pub content: Vec<u8>,
}

impl FileSpec {
    /// A file of `kind` at `path` with a consistent `path_len` (`path` gets
    /// its NUL here), the other fields 0.
    pub fn new(fd: i32, kind: u32, flags: u32, path: &str) -> Self {
        let path = c_path(path);
        FileSpec {
            file: File {
                fd,
                kind,
                flags,
                path_len: path.len() as u32,
                ..File::default()
            },
            path,
            content: Vec::new(),
        }
    }

    /// A regular file deleted while open (at `path` before), at `pos`,
    /// with `content`.
    pub fn deleted(fd: i32, flags: u32, pos: u64, path: &str, content: &[u8]) -> Self {
        let mut f = Self::new(fd, FILE_DELETED, flags, path);
        f.file.pos = pos;
        f.file.size = content.len() as u64;
        f.content = content.to_vec();
        f
    }

    /// A regular file open with `flags`, at position `pos`, of `size` bytes.
    pub fn reg(fd: i32, flags: u32, pos: u64, size: u64, path: &str) -> Self {
        let mut f = Self::new(fd, FILE_REG, flags, path);
        f.file.pos = pos;
        f.file.size = size;
        f
    }

    /// A directory, open `O_RDONLY` (at position `pos`, from `getdents()`).
    pub fn dir(fd: i32, pos: u64, path: &str) -> Self {
        let mut f = Self::new(fd, FILE_DIR, O_RDONLY, path);
        f.file.pos = pos;
        f
    }

    /// A character device open with `flags`, of device number `rdev`.
    pub fn chr(fd: i32, flags: u32, rdev: u64, path: &str) -> Self {
        let mut f = Self::new(fd, FILE_CHR, flags, path);
        f.file.rdev = rdev;
        f
    }

    /// A descriptor the restart caller gives (0, 1 or 2, with the header
    /// flag `CR_CHECKPOINT_INHERIT_STDIO`).
    pub fn inherit(fd: i32) -> Self {
        Self::new(fd, FILE_INHERIT, 0, "")
    }

    /// An end of a pipe (no `fifo`) or of the FIFO at `fifo`, open with
    /// `flags`, of inode `ino`, holding `bytes`.
    pub fn pipe(fd: i32, flags: u32, ino: u64, bytes: u64, fifo: Option<&str>) -> Self {
        let mut f = Self::new(fd, FILE_PIPE, flags, fifo.unwrap_or_default());
        f.file.rdev = ino;
        f.file.size = bytes;
        f
    }

    /// An unnamed unix socket of `sock_type`, inode `ino`, peer `peer`.
    pub fn unix(fd: i32, sock_type: u32, ino: u64, peer: u64) -> Self {
        let mut f = Self::new(fd, FILE_UNIX, O_RDWR, "");
        f.file.sock_type = sock_type;
        f.file.rdev = ino;
        f.file.size = peer;
        f
    }

    /// Sets `CR_FD_CLOEXEC`.
    pub fn cloexec(mut self) -> Self {
        self.file.fd_flags |= FD_CLOEXEC;
        self
    }
}

/// A thread: its record (with its queued signals), then its registers and
/// XSAVE state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSpec {
    /// The thread record's fixed part (`nr_pending` is written as it is).
    pub thread: Thread,
    /// The queued signals written after it.
    pub pending: Vec<Siginfo>,
    /// Its regs record.
    pub regs: Regs,
    /// Its xstate record's fixed part; a standard-format XSAVE buffer of
    /// `size` bytes with these `xfeatures` follows it.
    pub xstate: XstateHeader,
}

impl ThreadSpec {
    /// Queues a signal on this thread, counted in `nr_pending`.
    pub fn queue(&mut self, si: Siginfo) -> &mut Self {
        self.pending.push(si);
        self.thread.nr_pending = self.pending.len() as u32;
        self
    }
}

/// A queued signal as `kill()` (`SI_USER`), `sigqueue()` (`SI_QUEUE`) or
/// `tgkill()` (`SI_TKILL`) sends it: `code`, sender's pid and uid (and the
/// value, which only `sigqueue()` sets).
pub fn user_signal(signo: i32, code: i32, pid: i32, uid: u32, value: u64) -> Siginfo {
    let mut si = Siginfo::new(signo, 0, code);
    si.info[16..20].copy_from_slice(&pid.to_le_bytes());
    si.info[20..24].copy_from_slice(&uid.to_le_bytes());
    si.info[24..32].copy_from_slice(&value.to_le_bytes());
    si
}

/// `si_code` of `kill()`.
pub const SI_USER: i32 = 0;
/// `si_code` of `sigqueue()`.
pub const SI_QUEUE: i32 = -1;
/// `si_code` of `tkill()` and `tgkill()`.
pub const SI_TKILL: i32 = -6;

impl Restart {
    /// An interrupted `clock_nanosleep()` on `clockid` until `expires`
    /// (rmtp 0: none).
    pub fn nanosleep(clockid: u32, expires: u64, rmtp: u64) -> Self {
        Restart {
            kind: RESTART_NANOSLEEP,
            clockid,
            expires,
            addr: rmtp,
            ..Restart::default()
        }
    }

    /// An interrupted `FUTEX_WAIT_BITSET` (`expires` 0: no timeout).
    pub fn futex(uaddr: u64, val: u32, bitset: u32, flags: u32, expires: u64) -> Self {
        Restart {
            kind: RESTART_FUTEX,
            expires,
            addr: uaddr,
            val,
            bitset,
            flags,
            ..Restart::default()
        }
    }

    /// An interrupted `poll()` of `nfds` descriptors at `ufds`, with a
    /// timeout at `expires` or none.
    pub fn poll(ufds: u64, nfds: u32, expires: Option<u64>) -> Self {
        Restart {
            kind: RESTART_POLL,
            expires: expires.unwrap_or(0),
            addr: ufds,
            val: nfds,
            flags: u32::from(expires.is_some()),
            ..Restart::default()
        }
    }
}

/// A checkpoint that failed: an error record instead of the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Records written before the error record.
    pub after: usize,
    /// The negative errno.
    pub errno: i32,
    /// The log line (the NUL is added).
    pub message: String,
}

/// What to write. Every field is public: change any of them.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// The header record.
    pub header: ImageHeader,
    /// The task record (`nr_threads` is written as it is).
    pub task: Task,
    /// The creds record's fixed part (`ngroups` is written as it is).
    pub creds: Creds,
    /// The supplementary groups written after it.
    pub groups: Vec<u32>,
    /// The sighand record.
    pub sighand: Sighand,
    /// The signals record's fixed part (`nr_pending` is written as it is).
    pub signals: SignalsHeader,
    /// The process-wide queued signals written after it.
    pub shared_pending: Vec<Siginfo>,
    /// The POSIX timers written after those (`nr_timers` is written as it
    /// is).
    pub timers: Vec<PosixTimer>,
    /// The files record's fixed part (`nr_files` and `cwd_len` are
    /// written as they are).
    pub files: Files,
    /// The working directory's path bytes written after it, with the NUL.
    pub cwd: Vec<u8>,
    /// The file records, in the order written.
    pub open_files: Vec<FileSpec>,
    /// The threads, the group leader first.
    pub threads: Vec<ThreadSpec>,
    /// The mm record (`nr_vmas` is written as it is).
    pub mm: Mm,
    /// The VMA records.
    pub vmas: Vec<VmaSpec>,
    /// Addresses of the saved pages, in the order written; each page's
    /// data is [`page_data`] of its address.
    pub pages: Vec<u64>,
    /// Pages a pages record holds at most (the kernel's is 256).
    pub pages_per_record: usize,
    /// End with an error record instead.
    pub failure: Option<Failure>,
}

/// A built image and where its records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image.
    pub bytes: Vec<u8>,
    /// Its records, in order.
    pub records: Vec<Span>,
}

/// Where a record is in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Its type.
    pub kind: RecordType,
    /// Offset of its record header.
    pub offset: usize,
    /// Its payload length.
    pub len: u32,
}

impl Span {
    /// Offset of the payload.
    pub fn payload(&self) -> usize {
        self.offset + 8
    }

    /// Offset just after its padding.
    pub fn end(&self) -> usize {
        self.payload() + self.len as usize + padding(self.len) as usize
    }
}

impl Image {
    /// The `nth` record (from 0) of type `kind`.
    pub fn span(&self, kind: RecordType, nth: usize) -> Span {
        *self
            .records
            .iter()
            .filter(|s| s.kind == kind)
            .nth(nth)
            .unwrap_or_else(|| panic!("the image has no {kind} record {nth}"))
    }

    /// Recomputes the trailer's checksum after the bytes were changed.
    pub fn reseal(&mut self) {
        reseal(&mut self.bytes);
    }
}

/// Recomputes the CRC-32 of an image whose last 32 bytes are a trailer
/// record; returns whether there was one.
pub fn reseal(bytes: &mut [u8]) -> bool {
    let trailer_len = 8 + 24;
    let Some(at) = bytes.len().checked_sub(trailer_len) else {
        return false;
    };
    if bytes[at..at + 4] != (RecordType::Trailer as u32).to_le_bytes() {
        return false;
    }
    let crc = CRC32.checksum(&bytes[..at]);
    bytes[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
    true
}

/// The data of the page at `addr` in built images: a pattern of its address.
pub fn page_data(addr: u64) -> Vec<u8> {
    let seed = (addr / PAGE_SIZE) as u8;
    (0..PAGE_SIZE as usize)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

/// The text of a NUL-padded fixed-size field.
pub fn c_array<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = text.len().min(N);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

/// The layout of the process [`ImageBuilder::new`] describes.
pub mod layout {
    /// Text and data of the program's file.
    pub const TEXT: u64 = 0x40_0000;
    /// Its data, a private copy-on-write file mapping.
    pub const DATA: u64 = 0x40_2000;
    /// The heap.
    pub const HEAP: u64 = 0x40_3000;
    /// An anonymous mapping (TLS, rseq area).
    pub const ANON: u64 = 0x7f00_0000_0000;
    /// The stack, which ends at the vvar area.
    pub const STACK: u64 = 0x7ffd_fffd_f000;
    /// The group leader's thread id, and the process's pid.
    pub const TID: i32 = 74;
    /// The vvar area, four pages below the vDSO.
    pub const VVAR: u64 = 0x7ffe_0000_0000;
    /// The vDSO text.
    pub const VDSO: u64 = VVAR + 0x4000;
    /// The program's path.
    pub const PATH: &str = "/bin/cr_target";
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// A valid image of a small process: one thread (tid 74) with an rseq
    /// area and a robust list, nothing queued, no interval timer, working
    /// directory `/` and no open files (and no header flags), five VMAs
    /// (text and data of `/bin/cr_target`, heap, an anonymous mapping, the
    /// stack), seven saved pages, made by the crvmm kernel on a 4-level
    /// paging CPU.
    pub fn new() -> Self {
        use layout::*;
        let mut rlim = [Rlimit {
            cur: u64::MAX,
            max: u64::MAX,
        }; NLIMITS];
        rlim[7] = Rlimit {
            cur: 1024,
            max: 4096,
        };
        let mut action = [SigAction::default(); NSIG];
        action[9] = SigAction {
            handler: TEXT + 0x1000,
            flags: 0x0400_0000,
            restorer: TEXT + 0x1100,
            mask: 0,
        };
        action[12].handler = 1; // SIGPIPE ignored
        let mut gregs = [0u64; NR_GREGS];
        for (name, value) in [
            ("ip", TEXT + 0x1234),
            ("cs", 0x33),
            ("flags", 0x246),
            ("sp", STACK + 0x1e000),
            ("ss", 0x2b),
            ("fs_base", ANON + 0x3000),
            ("orig_ax", u64::MAX),
        ] {
            let i = GREG_NAMES.iter().position(|n| *n == name).unwrap();
            gregs[i] = value;
        }
        let mut auxv = [0u64; AUXV_WORDS];
        auxv[..6].copy_from_slice(&[3, TEXT + 0x40, 6, PAGE_SIZE, 33, VDSO]);
        let rw = PROT_READ | PROT_WRITE;
        let vmas = vec![
            VmaSpec::new(TEXT, DATA, PROT_READ | PROT_EXEC, VMA_FILE, 0, PATH),
            VmaSpec::new(DATA, HEAP, rw, VMA_FILE | VMA_PAGES, 2, PATH),
            VmaSpec::new(HEAP, HEAP + 0x2000, rw, VMA_ANON | VMA_PAGES, 0, ""),
            VmaSpec::new(ANON, ANON + 0x4000, rw, VMA_ANON | VMA_PAGES, 0, ""),
            VmaSpec::new(STACK, VVAR, rw, VMA_ANON | VMA_GROWSDOWN | VMA_PAGES, 0, ""),
        ];
        ImageBuilder {
            header: ImageHeader {
                magic: IMAGE_MAGIC,
                version: FORMAT_VERSION,
                arch: ARCH_X86_64,
                page_size: PAGE_SIZE as u32,
                flags: 0,
                config_hash: KernelConfig::CRVMM_4LEVEL.hash(),
                time_sec: 1_800_000_000,
                time_nsec: 123_456_789,
                pad: 0,
                release: c_array("6.12.117-crvmm"),
            },
            task: Task {
                comm: c_array("cr_target"),
                pid: TID,
                tgid: TID,
                personality: 0,
                nr_rlimits: NLIMITS as u32,
                nr_threads: 1,
                pad: 0,
                rlim,
            },
            creds: Creds {
                ngroups: 2,
                cap_permitted: (1 << 41) - 1,
                cap_effective: (1 << 41) - 1,
                cap_bset: (1 << 41) - 1,
                ..Creds::default()
            },
            groups: vec![0, 10],
            sighand: Sighand { action },
            signals: SignalsHeader::default(),
            shared_pending: Vec::new(),
            timers: Vec::new(),
            files: Files {
                nr_files: 0,
                cwd_len: 2,
            },
            cwd: c_path("/"),
            open_files: Vec::new(),
            threads: vec![ThreadSpec {
                thread: Thread {
                    comm: c_array("cr_target"),
                    tid: TID,
                    nr_pending: 0,
                    blocked: 1 << 14,
                    sas_ss_sp: 0,
                    sas_ss_size: 0,
                    sas_ss_flags: 0,
                    rseq_len: 32,
                    rseq: ANON + 0x3020,
                    rseq_sig: 0x5305_3053,
                    pad: 0,
                    clear_child_tid: ANON + 0x3010,
                    robust_list: ANON + 0x3040,
                    robust_list_len: 24,
                    restart: Restart::default(),
                },
                pending: Vec::new(),
                regs: Regs { gregs, pad: 0 },
                xstate: XstateHeader {
                    xfeatures: 0x7,
                    size: 832,
                    pad: 0,
                },
            }],
            mm: Mm {
                start_code: TEXT,
                end_code: TEXT + 0x1800,
                start_data: DATA,
                end_data: DATA + 0x100,
                start_brk: HEAP,
                brk: HEAP + 0x2000,
                start_stack: STACK + 0x1f000,
                arg_start: STACK + 0x1f100,
                arg_end: STACK + 0x1f120,
                env_start: STACK + 0x1f120,
                env_end: STACK + 0x1f200,
                vdso: VDSO,
                vvar: VVAR,
                nr_vmas: vmas.len() as u64,
                auxv,
            },
            vmas,
            pages: vec![
                DATA,
                HEAP,
                HEAP + 0x1000,
                ANON,
                ANON + 0x3000,
                STACK + 0x1d000,
                STACK + 0x1e000,
            ],
            pages_per_record: PAGES_PER_CHUNK as usize,
            failure: None,
        }
    }

    /// The same process without saved pages or VMAs: the smallest valid image.
    pub fn minimal() -> Self {
        let mut b = Self::new();
        b.vmas.clear();
        b.mm.nr_vmas = 0;
        b.pages.clear();
        b
    }

    /// The group leader, the first thread.
    pub fn leader(&mut self) -> &mut ThreadSpec {
        &mut self.threads[0]
    }

    /// Adds a thread with id `tid` and `task.nr_threads` to match: a copy
    /// of the leader, named `cr_worker`, with nothing queued, no restart
    /// block, and its own rseq area, tid address, robust list and stack
    /// pointer (in the anonymous mapping and the stack, 256 bytes and a
    /// page apart per thread).
    pub fn add_thread(&mut self, tid: i32) -> &mut ThreadSpec {
        let n = self.threads.len() as u64;
        let leader = &self.threads[0];
        let mut t = ThreadSpec {
            pending: Vec::new(),
            ..leader.clone()
        };
        t.thread.comm = c_array("cr_worker");
        t.thread.tid = tid;
        t.thread.nr_pending = 0;
        t.thread.restart = Restart::default();
        let area = n * 0x100;
        t.thread.rseq = leader.thread.rseq + area;
        t.thread.clear_child_tid = leader.thread.clear_child_tid + area;
        t.thread.robust_list = leader.thread.robust_list + area;
        let sp = GREG_NAMES.iter().position(|g| *g == "sp").unwrap_or(0);
        t.regs.gregs[sp] = leader.regs.gregs[sp].saturating_sub(n * PAGE_SIZE);
        self.threads.push(t);
        self.task.nr_threads = self.threads.len() as u32;
        self.threads.last_mut().expect("just pushed")
    }

    /// Queues a signal on the process-wide queue, counted in
    /// `signals.nr_pending`.
    pub fn queue_shared(&mut self, si: Siginfo) -> &mut Self {
        self.shared_pending.push(si);
        self.signals.nr_pending = self.shared_pending.len() as u32;
        self
    }

    /// Adds a POSIX timer after the others, counted in
    /// `signals.nr_timers`.
    pub fn add_timer(&mut self, t: PosixTimer) -> &mut Self {
        self.timers.push(t);
        self.signals.nr_timers = self.timers.len() as u32;
        self
    }

    /// Adds an open file after those of lower or equal fds, with
    /// `files.nr_files` to match.
    pub fn add_file(&mut self, file: FileSpec) -> &mut FileSpec {
        let at = self
            .open_files
            .iter()
            .position(|f| f.file.fd > file.file.fd)
            .unwrap_or(self.open_files.len());
        self.open_files.insert(at, file);
        self.files.nr_files = self.open_files.len() as u32;
        &mut self.open_files[at]
    }

    /// Sets the header flag `CR_CHECKPOINT_INHERIT_STDIO` and adds fds 0, 1
    /// and 2 as inherited files, as a checkpoint with the flag writes them.
    pub fn inherit_stdio(&mut self) -> &mut Self {
        self.header.flags |= CHECKPOINT_INHERIT_STDIO;
        for fd in 0..3 {
            self.add_file(FileSpec::inherit(fd));
        }
        self
    }

    /// Sets the working directory, with `files.cwd_len` to match.
    pub fn set_cwd(&mut self, path: &str) -> &mut Self {
        self.cwd = c_path(path);
        self.files.cwd_len = self.cwd.len() as u32;
        self
    }

    /// Writes the image.
    pub fn build(&self) -> Image {
        let mut w = Writer::default();
        let mut payload = Vec::new();
        self.header.encode(&mut payload);
        w.record(RecordType::Header, &payload);
        self.body(&mut w);
        if let Some(f) = &self.failure {
            w.truncate_records(f.after);
            let mut payload = Vec::new();
            let mut msg = f.message.as_bytes().to_vec();
            msg.push(0);
            ErrorHeader {
                error: f.errno,
                msg_len: msg.len() as u32,
            }
            .encode(&mut payload);
            payload.extend_from_slice(&msg);
            w.record(RecordType::Error, &payload);
            return w.finish();
        }
        let trailer = Trailer {
            magic: TRAILER_MAGIC,
            nr_records: w.records.len() as u64,
            checksum: CRC32.checksum(&w.bytes),
            pad: 0,
        };
        let mut payload = Vec::new();
        trailer.encode(&mut payload);
        w.record(RecordType::Trailer, &payload);
        w.finish()
    }

    /// Everything between the header and the trailer.
    fn body(&self, w: &mut Writer) {
        let mut payload = Vec::new();
        self.task.encode(&mut payload);
        w.record(RecordType::Task, &payload);

        payload.clear();
        self.creds.encode(&mut payload);
        for g in &self.groups {
            payload.extend_from_slice(&g.to_le_bytes());
        }
        w.record(RecordType::Creds, &payload);

        payload.clear();
        self.sighand.encode(&mut payload);
        w.record(RecordType::Sighand, &payload);

        payload.clear();
        self.signals.encode(&mut payload);
        for si in &self.shared_pending {
            si.encode(&mut payload);
        }
        for t in &self.timers {
            t.encode(&mut payload);
        }
        w.record(RecordType::Signals, &payload);

        payload.clear();
        self.files.encode(&mut payload);
        payload.extend_from_slice(&self.cwd);
        w.record(RecordType::Files, &payload);

        for f in &self.open_files {
            payload.clear();
            f.file.encode(&mut payload);
            payload.extend_from_slice(&f.path);
            payload.extend_from_slice(&f.content);
            w.record(RecordType::File, &payload);
        }

        for t in &self.threads {
            payload.clear();
            t.thread.encode(&mut payload);
            for si in &t.pending {
                si.encode(&mut payload);
            }
            w.record(RecordType::Thread, &payload);

            payload.clear();
            t.regs.encode(&mut payload);
            w.record(RecordType::Regs, &payload);

            payload.clear();
            t.xstate.encode(&mut payload);
            let mut buf = vec![0u8; t.xstate.size as usize];
            if let Some(mxcsr) = buf.get_mut(24..28) {
                mxcsr.copy_from_slice(&0x1f80u32.to_le_bytes());
            }
            if let Some(xf) = buf.get_mut(XSAVE_HDR_XFEATURES..XSAVE_HDR_XFEATURES + 8) {
                xf.copy_from_slice(&t.xstate.xfeatures.to_le_bytes());
            }
            payload.extend_from_slice(&buf);
            w.record(RecordType::Xstate, &payload);
        }

        payload.clear();
        self.mm.encode(&mut payload);
        w.record(RecordType::Mm, &payload);

        for v in &self.vmas {
            payload.clear();
            v.vma.encode(&mut payload);
            payload.extend_from_slice(&v.path);
            w.record(RecordType::Vma, &payload);
        }

        for chunk in self.pages.chunks(self.pages_per_record.max(1)) {
            w.record(RecordType::Pages, &pages_payload(chunk));
        }
        w.record(RecordType::Pages, &pages_payload(&[]));
    }
}

/// The payload of a pages record holding the pages at `addrs`.
pub fn pages_payload(addrs: &[u64]) -> Vec<u8> {
    let mut payload = Vec::new();
    PagesHeader {
        nr_pages: addrs.len() as u32,
        pad: 0,
    }
    .encode(&mut payload);
    for a in addrs {
        payload.extend_from_slice(&a.to_le_bytes());
    }
    for &a in addrs {
        payload.extend_from_slice(&page_data(a));
    }
    payload
}

/// Appends records and remembers where they are.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
    records: Vec<Span>,
}

impl Writer {
    fn record(&mut self, kind: RecordType, payload: &[u8]) {
        let len = payload.len() as u32;
        self.records.push(Span {
            kind,
            offset: self.bytes.len(),
            len,
        });
        self.bytes.extend_from_slice(&(kind as u32).to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(payload);
        self.bytes
            .resize(self.bytes.len() + padding(len) as usize, 0);
    }

    /// Keeps the first `n` records only.
    fn truncate_records(&mut self, n: usize) {
        if let Some(s) = self.records.get(n) {
            self.bytes.truncate(s.offset);
            self.records.truncate(n);
        }
    }

    fn finish(self) -> Image {
        Image {
            bytes: self.bytes,
            records: self.records,
        }
    }
}
