//! Container restore: read a container image (streamed by the host in data
//! frames, or from a guest file), check all of it, then create the
//! container from its spec and make its processes again.
//!
//! 1. The image is read and checked front to back (`crvmm_cr_image`'s
//!    container reader: record order, each process's digest, the trailer);
//!    each process's kernel image goes into a memfd. Nothing is created
//!    before the whole image has checked out, so a corrupt or truncated
//!    image leaves nothing behind.
//! 2. The container is created like a new one (cgroup, namespaces, mounts,
//!    root), but its init, instead of executing a program, builds the
//!    process tree with `clone3` + `set_tid` and every process calls
//!    `restart(2)` on a socket the agent feeds its image into
//!    (`restorer.rs`).
//! 3. The agent watches until every process has left `restart` as itself
//!    (its command name is the image's), or one reports a failure or dies;
//!    then it registers the container, or tears everything down and says
//!    which process failed and what the kernel logged.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crvmm_cr_image::container::{ContainerReader, Event, Manifest, ShmKind};
use crvmm_protocol::transfer::{read_incoming, Incoming};
use crvmm_protocol::{AgentError, ContainerInfo, ContainerRestore, ErrorKind, Response};

use super::cgroup::Cgroup;
use super::restorer::{
    above, CrShmFd, PipePlan, RestorePlan, RestoreProc, RestoreZombie, Segment, ShmPlan,
};
use super::spec::{self, Namespace};
use super::{adopt, create, prepare, Container, ContainerError, Lifecycle, Registry};

mod shm;
mod watch_restart;
use watch_restart::{restored, Outcome};

/// How long the processes may take to restart.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// The zstd frame magic, little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors of a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The image could not be received.
    #[error("receiving the image failed: {0}")]
    Transfer(String),
    /// The image is not a good container image.
    #[error("the image is refused")]
    Image(#[source] crvmm_cr_image::container::ContainerError),
    /// The image comes from another kernel.
    #[error("the image was made by kernel {image} (checkpoint format {image_format}); this guest runs {guest} (format {guest_format})")]
    Kernel {
        /// The image's kernel release.
        image: String,
        /// Its kernel image format.
        image_format: u32,
        /// Ours.
        guest: String,
        /// Our format.
        guest_format: u32,
    },
    /// Storing the image in the guest failed.
    #[error("keeping the image in memory failed")]
    Memfd(#[source] io::Error),
    /// The restore's own descriptors could not be moved above the
    /// image's (its pipes' slots), e.g. over the agent's `RLIMIT_NOFILE`.
    #[error("moving the restore's descriptors to fd {floor} and above failed")]
    Descriptors {
        /// The lowest they may take.
        floor: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A shared memory object could not be made again.
    #[error("making the image's shared memory again failed")]
    SharedMemory(#[source] io::Error),
    /// The guest's clocks could not be read.
    #[error("reading the guest's clocks failed")]
    Clocks(#[source] io::Error),
    /// Creating the container failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A process could not be restarted.
    #[error("container {id:?}: {what}{}", log_suffix(log))]
    Restart {
        /// The container.
        id: String,
        /// What failed.
        what: String,
        /// The kernel's log lines about it.
        log: String,
    },
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; the kernel said: {log}")
    }
}

impl RestoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            RestoreError::Image(_) | RestoreError::Kernel { .. } => ErrorKind::BadRequest,
            RestoreError::Container(e) => e.kind(),
            _ => ErrorKind::Io,
        }
    }
}

/// Serves `container_restore`: reads the image (the data frames that
/// follow the request, all of them even when it fails early, or the guest
/// file), restores, and answers.
pub fn serve<S: Read + Write>(
    request: ContainerRestore,
    stream: &mut S,
    transport: &str,
) -> Response {
    let id = request.container.clone();
    let started = Instant::now();
    let result = match &request.guest_file {
        Some(path) => File::open(path)
            .map_err(|e| RestoreError::Transfer(format!("opening {path}: {e}")))
            .and_then(|file| restore(Registry::global(), &id, file)),
        None => {
            let mut frames = DataReader {
                stream,
                done: false,
                pending: Vec::new(),
                at: 0,
            };
            let result = restore(Registry::global(), &id, &mut frames);
            // Read what is left, so the answer is where the host looks.
            if let Err(e) = frames.drain() {
                log!("{transport}: restore of {id}: {e}");
            }
            result
        }
    };
    match result {
        Ok(info) => {
            log!(
                "container {id}: restored in {} ms",
                started.elapsed().as_millis()
            );
            Response::Container {
                container: Box::new(info),
            }
        }
        Err(e) => {
            let message = crate::log::chain(&e);
            log!("container {id}: restore failed: {message}");
            Response::Error(AgentError::new(e.kind(), message))
        }
    }
}

/// Restores container `id` from the image in `input`.
pub fn restore(
    registry: &Registry,
    id: &str,
    input: impl Read,
) -> Result<ContainerInfo, RestoreError> {
    let reservation = registry.reserve(id)?;
    let (manifest, images, pipe_data, shm_fds) = load(input)?;
    check_kernel(&manifest)?;
    let (spec, config) = spec::parse(&manifest.spec).map_err(|source| ContainerError::Spec {
        id: id.to_owned(),
        source,
    })?;
    let (state_dir, cgroup) = prepare(id, &manifest.spec, &config)?;
    let log_path = state_dir.join("init.log");
    let undo = |cgroup: &Cgroup| {
        let _ = cgroup.kill();
        let _ = cgroup.remove(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&state_dir);
    };

    // One socket per process: the agent's end feeds its image. The
    // child's ends go above the pipes' slots.
    let pipes = PipePlan::new(&manifest, pipe_data);
    let mut agent_ends = Vec::new();
    let mut child_ends = Vec::new();
    let mut procs = Vec::new();
    for p in &manifest.processes {
        let (ours, theirs) = UnixStream::pair().map_err(RestoreError::Memfd)?;
        let floor = pipes.floor();
        let theirs = above(theirs.into(), floor)
            .map_err(|source| RestoreError::Descriptors { floor, source })?;
        procs.push(RestoreProc {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
            fd: theirs.as_raw_fd(),
        });
        agent_ends.push(ours);
        child_ends.push(theirs);
    }
    let floor = pipes.floor();
    let shm_fds = shm_fds
        .into_iter()
        .map(|fd| above(fd, floor))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RestoreError::Descriptors { floor, source })?;
    let shm = shm_plan(&manifest, &shm_fds);
    let zombies = manifest
        .zombies
        .iter()
        .map(|z| RestoreZombie {
            proc: RestoreProc {
                pid: z.pid,
                ppid: z.ppid,
                pgid: z.pgid,
                sid: z.sid,
                fd: -1,
            },
            status: z.status,
        })
        .collect();
    let clock_offsets = match &manifest.clocks {
        Some(clocks) => Some(super::clocks::offsets_for(clocks).map_err(RestoreError::Clocks)?),
        None => None,
    };
    let plan = RestorePlan {
        procs,
        zombies,
        clock_offsets,
        set_tid: config.has(Namespace::Pid),
        pipes,
        shm,
    };
    let spawned = match create::spawn_restorer(&config, &cgroup, &log_path, plan) {
        Ok(spawned) => spawned,
        Err(source) => {
            undo(&cgroup);
            return Err(ContainerError::Create {
                op: "restore",
                id: id.to_owned(),
                source,
            }
            .into());
        }
    };
    drop(child_ends);
    drop(shm_fds);
    let (mut go, report) = spawned.gate.into_pipes();
    let feeders: Vec<_> = images
        .into_iter()
        .zip(agent_ends)
        .map(|(image, socket)| std::thread::spawn(move || feed(image, socket)))
        .collect();
    let outcome = match go.write_all(b"s") {
        Ok(()) => restored(
            spawned.pid,
            &report,
            &cgroup,
            &manifest,
            &log_path,
            RESTART_TIMEOUT,
        ),
        Err(e) => Outcome::Failed(format!("the init went away before the restore: {e}")),
    };
    drop(go);
    for feeder in feeders {
        let _ = feeder.join();
    }
    if let Outcome::Failed(what) = outcome {
        let _ = cgroup.kill();
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(spawned.pid), None);
        let log = kernel_log(&log_path);
        undo(&cgroup);
        return Err(RestoreError::Restart {
            id: id.to_owned(),
            what,
            log,
        });
    }
    remove_segments(id, spawned.pid, &manifest);
    let lifecycle = Lifecycle {
        started: true,
        ..Lifecycle::default()
    };
    let container = adopt(
        "restore",
        Container::new(
            id.to_owned(),
            spec,
            config,
            cgroup,
            spawned.pid,
            spawned.pidfd,
            state_dir,
            lifecycle,
        ),
    )?;
    reservation.commit(container.clone());
    let lifecycle = container.lock();
    Ok(container.info(&lifecycle))
}

/// The manifest, each process's kernel image (in a memfd), the bytes of
/// each pipe and a descriptor on each shared memory object.
type Loaded = (Manifest, Vec<File>, Vec<Vec<u8>>, Vec<OwnedFd>);

/// What the init and each process need of the shared memory objects
/// `fds` (in the manifest's order).
fn shm_plan(manifest: &Manifest, fds: &[OwnedFd]) -> ShmPlan {
    let mut plan = ShmPlan {
        segments: Vec::new(),
        provided: vec![Vec::new(); manifest.processes.len()],
    };
    for (e, fd) in manifest.shared_memory.iter().zip(fds) {
        let fd = fd.as_raw_fd();
        if e.kind == ShmKind::Sysv {
            plan.segments.push(Segment {
                next_id: std::ffi::CString::new(format!("{}\n", e.id)).expect("no NUL"),
                id: e.id as i32,
                key: e.key,
                size: e.size as usize,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                content: fd,
            });
            continue;
        }
        for pid in &e.pids {
            if let Some(i) = manifest.processes.iter().position(|p| p.pid == *pid) {
                plan.provided[i].push(CrShmFd {
                    id: e.id,
                    fd,
                    pad: 0,
                });
            }
        }
    }
    plan
}

/// Removes (`IPC_RMID`) the segments that were removed while attached,
/// now that every process attached them again; from a thread in the
/// container's IPC namespace (its init is guest pid `init`). A failure is
/// logged: such a segment has no key, so nothing finds it by chance, and
/// it goes with the namespace.
fn remove_segments(id: &str, init: i32, manifest: &Manifest) {
    let removed: Vec<i32> = manifest
        .shared_memory
        .iter()
        .filter(|e| e.kind == ShmKind::Sysv && e.removed)
        .map(|e| e.id as i32)
        .collect();
    if removed.is_empty() {
        return;
    }
    let result = Namespace::Ipc.run_in(init, || {
        for &shmid in &removed {
            // SAFETY: IPC_RMID takes no buffer.
            if unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        log!("container {id}: cannot mark its removed SysV shm segments removed again: {e}");
    }
}

/// Reads and checks the whole image; each process's kernel image goes to a
/// memfd. A zstd-compressed image is recognised by its magic.
fn load(input: impl Read) -> Result<Loaded, RestoreError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let head = input
        .fill_buf()
        .map_err(|e| RestoreError::Transfer(e.to_string()))?;
    let reader: Box<dyn Read> = if head.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(input)
            .map_err(|e| RestoreError::Transfer(format!("zstd: {e}")))?;
        Box::new(decoder)
    } else {
        Box::new(input)
    };
    let mut reader = ContainerReader::new(reader);
    let mut images: Vec<File> = Vec::new();
    let mut pipes = Vec::new();
    let mut staged = shm::Staged::default();
    loop {
        match reader.next_event().map_err(RestoreError::Image)? {
            Some(Event::Header(m)) => {
                staged = shm::Staged::new(&m.shared_memory).map_err(RestoreError::SharedMemory)?;
            }
            Some(Event::Queue { data, .. }) => pipes.push(data.to_vec()),
            Some(Event::Shm {
                index,
                offset,
                data,
            }) => staged.fill(index, offset, data),
            Some(Event::Process { index, .. }) => images.push(memfd(index)?),
            Some(Event::Data(bytes)) => {
                let image = images.last_mut().expect("data comes inside a process");
                image.write_all(bytes).map_err(RestoreError::Memfd)?;
            }
            Some(Event::End { .. }) | None => break,
            Some(Event::ProcessEnd { .. }) => {}
        }
    }
    let manifest = reader
        .manifest()
        .cloned()
        .expect("a checked image has a header");
    for image in &mut images {
        image.rewind().map_err(RestoreError::Memfd)?;
    }
    Ok((manifest, images, pipes, staged.into_fds()))
}

fn memfd(index: u32) -> Result<File, RestoreError> {
    super::memfd(&format!("crvmm-image-{index}"))
        .map(File::from)
        .map_err(RestoreError::Memfd)
}

fn check_kernel(manifest: &Manifest) -> Result<(), RestoreError> {
    let guest = crate::handlers::kernel_release();
    let guest_format = std::fs::read_to_string("/sys/kernel/checkpoint/format_version")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if manifest.kernel_release != guest || manifest.kernel_format != guest_format {
        return Err(RestoreError::Kernel {
            image: manifest.kernel_release.clone(),
            image_format: manifest.kernel_format,
            guest,
            guest_format,
        });
    }
    Ok(())
}

/// Copies one kernel image into its process's socket, then ends it.
fn feed(mut image: File, mut socket: UnixStream) {
    // A restart that fails stops reading: the copy then ends with EPIPE.
    let _ = io::copy(&mut image, &mut socket);
    let _ = socket.shutdown(std::net::Shutdown::Write);
}

/// The kernel's lines about the restore, from the init's log.
fn kernel_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("restart: "))
        .collect();
    lines.join("; ")
}

/// The data frames after a `container_restore` request, as a byte stream
/// that ends at the empty frame.
struct DataReader<'a, S> {
    stream: &'a mut S,
    done: bool,
    /// The current frame and how much of it was read.
    pending: Vec<u8>,
    at: usize,
}

impl<S: Read> DataReader<'_, S> {
    fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        if self.done {
            return Ok(Vec::new());
        }
        match read_incoming(self.stream).map_err(io::Error::other)? {
            Incoming::Data(bytes) => {
                self.done = bytes.is_empty();
                Ok(bytes)
            }
            Incoming::Message(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message where the image's data frames were expected",
            )),
        }
    }

    /// Reads and drops the rest of the image.
    fn drain(&mut self) -> io::Result<()> {
        while !self.done {
            self.next_chunk()?;
        }
        Ok(())
    }
}

impl<S: Read> Read for DataReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.pending.len() {
            if self.done {
                return Ok(0);
            }
            self.pending = self.next_chunk()?;
            self.at = 0;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
