//! Container checkpoint, in the design's five steps:
//!
//! 1. validate: the container exists and runs, the image has somewhere to
//!    go (the request's connection, a guest file, or both), the kernel can
//!    checkpoint;
//! 2. pre-dump hook: a program run in the guest; its failure aborts with the
//!    container untouched;
//! 3. freeze the container's cgroup (a timeout thaws it again);
//! 4. dump ([`dump`]): the manifest and each process's kernel image into one
//!    container image, through zstd if asked, to every destination at once
//!    ([`sink`]) with no copy in the guest;
//! 5. thaw it (`leave_running`) or kill it, then the post-dump hook.
//!
//! Any failure after the freeze thaws the container, so it runs on as if
//! nothing happened; the image then ends with an ERROR record where it can
//! still be written, and the answer says which step failed, on which
//! process, and what the kernel said. A container is never left frozen.

mod dump;
mod eventfds;
mod fds;
mod pipes;
mod shm;
mod sink;
mod sockets;
mod unix_diag;
mod watchdog;

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crvmm_cr_image::container::{hex, ContainerWriter, Manifest, Written};
use crvmm_protocol::transfer::{CheckpointReport, ContainerCheckpoint};
use crvmm_protocol::{AgentError, ErrorKind, ExecRequest, ExitStatus, Response};

use self::dump::DumpError;
use self::sink::{Destination, FanOut, ImageSink, PartFile, SinkStatus};
use super::cgroup::CgroupError;
use super::{Container, ContainerError, Lifecycle, Registry, DEFAULT_FREEZE_TIMEOUT, EXIT_WAIT};
use crate::exec::{self, ExecError};
use crate::log;

/// Where the agent keeps a container's `config.json` as it was given (in
/// its state directory), for the image's manifest.
pub const SPEC_FILE: &str = "config.json";

/// Output kept of a hook, for its error message.
const HOOK_CAPTURE: usize = 64 * 1024;

/// The most of a failed hook's output quoted in an error.
const HOOK_QUOTE: usize = 400;

/// How long a frozen container's dump may make no progress before the
/// container is thawed and the checkpoint abandoned.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Why a checkpoint failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Neither `stream` nor `guest_file`.
    #[error(
        "checkpoint of container {0:?} needs somewhere to put the image: `stream`, `guest_file` \
         or both"
    )]
    NoDestination(String),
    /// `stream` on a channel that cannot carry data frames.
    #[error(
        "cannot stream the image of container {id:?} over the {transport} channel: data frames \
         need a connection of their own (vsock); write it to a guest file instead (`guest_file`)"
    )]
    Transport {
        /// The container.
        id: String,
        /// The channel the request came on.
        transport: String,
    },
    /// A guest file that is not an absolute path.
    #[error("guest_file {0:?} must be an absolute path in the guest")]
    GuestPath(String),
    /// The container does not exist, or does not run.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Created but never started.
    #[error("container {0:?} was created but not started; checkpoint needs a running container")]
    NotStarted(String),
    /// The kernel has no checkpoint system call.
    #[error("cannot checkpoint container {id:?}: the guest kernel has no checkpoint support")]
    NoKernelSupport {
        /// The container.
        id: String,
        /// What reading its format version said.
        #[source]
        source: io::Error,
    },
    /// The pre-dump hook failed.
    #[error(
        "cannot checkpoint container {id:?}: the pre-dump hook {argv:?} failed (the container was \
         not touched)"
    )]
    PreDump {
        /// The container.
        id: String,
        /// The hook.
        argv: Vec<String>,
        /// How.
        #[source]
        source: HookError,
    },
    /// The guest file's temporary could not be created.
    #[error("cannot checkpoint container {id:?}: cannot create {path}")]
    GuestFile {
        /// The container.
        id: String,
        /// The temporary file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Freezing failed (a timeout thawed it again).
    #[error("cannot checkpoint container {id:?}")]
    Freeze {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// Dumping failed: the kernel refused a process, or reading it failed.
    #[error("checkpoint of container {id:?} failed (thawed again, it runs on)")]
    Dump {
        /// The container.
        id: String,
        /// The step and the process.
        #[source]
        source: DumpError,
    },
    /// The host went away while the image was streamed to it.
    #[error(
        "checkpoint of container {id:?} stopped: the host went away during the stream (thawed \
         again, it runs on)"
    )]
    HostGone {
        /// The container.
        id: String,
        /// The failed write.
        #[source]
        source: io::Error,
    },
    /// Writing or renaming the guest file failed.
    #[error("checkpoint of container {id:?} failed writing {path} (thawed again, it runs on)")]
    WriteFile {
        /// The container.
        id: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The dump stopped moving: the container was thawed.
    #[error(
        "checkpoint of container {id:?} failed: the image made no progress for {secs} s (a \
         destination stopped taking it); thawed again, it runs on"
    )]
    Stalled {
        /// The container.
        id: String,
        /// The limit.
        secs: u64,
    },
    /// Killing the checkpointed container failed.
    #[error(
        "checkpoint of container {id:?}: the image is complete but the container could not be \
         killed (thawed again, it runs on)"
    )]
    Kill {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// Thawing failed: the container may still be frozen.
    #[error("checkpoint of container {id:?}: cannot thaw it")]
    Thaw {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: CgroupError,
    },
}

impl CheckpointError {
    /// The protocol's class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::NoDestination(_)
            | CheckpointError::Transport { .. }
            | CheckpointError::GuestPath(_)
            | CheckpointError::NotStarted(_) => ErrorKind::BadRequest,
            CheckpointError::Container(e) => e.kind(),
            CheckpointError::NoKernelSupport { .. } => ErrorKind::Unsupported,
            CheckpointError::PreDump { source, .. } => source.kind(),
            CheckpointError::GuestFile { source, .. } => source.into(),
            CheckpointError::Dump { source, .. } if source.is_unsupported() => {
                ErrorKind::Unsupported
            }
            CheckpointError::Freeze { .. }
            | CheckpointError::Dump { .. }
            | CheckpointError::HostGone { .. }
            | CheckpointError::WriteFile { .. }
            | CheckpointError::Stalled { .. }
            | CheckpointError::Kill { .. }
            | CheckpointError::Thaw { .. } => ErrorKind::Io,
        }
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It could not be started.
    #[error("it could not run")]
    Run(#[source] ExecError),
    /// It ended with a failure.
    #[error("{status}{}", quote(.output))]
    Failed {
        /// How it ended.
        status: ExitStatus,
        /// The end of its standard error (else output).
        output: String,
    },
}

impl HookError {
    fn kind(&self) -> ErrorKind {
        match self {
            HookError::Run(e) => e.kind(),
            HookError::Failed { .. } => ErrorKind::Io,
        }
    }
}

fn quote(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(", output: {output:?}")
    }
}

/// Serves a `container_checkpoint` request on `stream`, over which the
/// image goes as data frames when `request.stream`.
pub fn serve<S: Read + Write>(
    request: ContainerCheckpoint,
    stream: &mut S,
    transport: &str,
) -> Response {
    let id = request.container.clone();
    match checkpoint(Registry::global(), request, stream, transport) {
        Ok(report) => Response::Checkpointed {
            report: Box::new(report),
        },
        Err(e) => {
            let message = log::chain(&e);
            log!("container {id}: {message}");
            Response::Error(AgentError::new(e.kind(), message))
        }
    }
}

/// The five steps; `stream` receives the image's data frames when
/// `request.stream`.
pub fn checkpoint<S: Write>(
    registry: &Registry,
    request: ContainerCheckpoint,
    stream: &mut S,
    transport: &str,
) -> Result<CheckpointReport, CheckpointError> {
    let started = Instant::now();
    let id = request.container.clone();

    // 1. Validate.
    check_request(&request, transport)?;
    let container = registry.get(&id)?;
    check_runs(&container, &container.lock())?;
    let kernel_format =
        dump::kernel_format().map_err(|source| CheckpointError::NoKernelSupport {
            id: id.clone(),
            source,
        })?;

    // 2. Pre-dump hook, with nothing locked or frozen.
    let hook_started = Instant::now();
    if !request.pre_dump.is_empty() {
        run_hook(&request.pre_dump).map_err(|source| CheckpointError::PreDump {
            id: id.clone(),
            argv: request.pre_dump.clone(),
            source,
        })?;
    }
    let pre_dump_us = micros(hook_started.elapsed());

    // 3. Freeze, holding the container: no other request acts on it until
    // it runs again or has stopped.
    let lifecycle = container.lock();
    check_runs(&container, &lifecycle)?;
    let part = match &request.guest_file {
        Some(path) => {
            let part =
                PartFile::create(Path::new(path)).map_err(|source| CheckpointError::GuestFile {
                    id: id.clone(),
                    path: format!("{path}.part"),
                    source,
                })?;
            Some(part)
        }
        None => None,
    };
    let timeout = request
        .freeze_timeout_ms
        .map_or(DEFAULT_FREEZE_TIMEOUT, Duration::from_millis);
    let froze = Instant::now();
    container
        .cgroup
        .freeze(timeout)
        .map_err(|source| CheckpointError::Freeze {
            id: id.clone(),
            source,
        })?;
    let freeze_us = micros(froze.elapsed());

    // 4. Dump, under a guard that thaws the container if it stalls.
    let status = SinkStatus::default();
    let destination_stream = request.stream.then_some(stream);
    let sink = FanOut::new(destination_stream, part, &status);
    let on_stall = || {
        log!(
            "container {id}: its image made no progress for {} s; thawing it",
            STALL_LIMIT.as_secs()
        );
        thaw_after_failure(&container);
    };
    let (dumped, stalled) = watchdog::guard(STALL_LIMIT, &status, on_stall, || {
        let (manifest, pipe_data, shared) =
            manifest(&container, &request, kernel_format).map_err(|e| (e, None))?;
        let sink = ImageSink::new(sink, request.zstd).map_err(|e| (DumpError::Header(e), None))?;
        dump_image(sink, &manifest, &pipe_data, &shared, &status)
            .map(|(written, part)| (manifest, written, part))
    });
    if stalled {
        // Whatever came of it, the container ran on before it ended: the
        // guest file goes, and no ERROR record follows (the stalled
        // destination would block it too).
        drop(dumped);
        thaw_after_failure(&container);
        return Err(CheckpointError::Stalled {
            id,
            secs: STALL_LIMIT.as_secs(),
        });
    }
    let (manifest, written, part) = match dumped {
        Ok(done) => done,
        Err((e, writer)) => return Err(abort(&container, &request, e, writer, &status)),
    };
    if let Some(part) = part {
        if let Err(source) = part.commit() {
            thaw_after_failure(&container);
            return Err(CheckpointError::WriteFile {
                id,
                path: request.guest_file.clone().unwrap_or_default(),
                source,
            });
        }
    }
    let dump_us = micros(froze.elapsed()) - freeze_us;

    // 5. Thaw or kill, then the post-dump hook.
    let (lifecycle, downtime) = finish(&container, lifecycle, request.leave_running, froze)?;
    let downtime_us = micros(downtime);
    drop(lifecycle);
    log!(
        "container {id}: checkpointed {} processes, {} bytes ({} stored{}), freeze {} us, dump {} \
         us, downtime {} us; {}",
        manifest.processes.len(),
        written.bytes,
        status.stored(),
        if request.zstd { ", zstd" } else { "" },
        freeze_us,
        dump_us,
        downtime_us,
        if request.leave_running {
            "it runs on"
        } else {
            "killed"
        }
    );
    let post_dump_error = (!request.post_dump.is_empty())
        .then(|| run_hook(&request.post_dump).err())
        .flatten()
        .map(|e| format!("post-dump hook {:?}: {}", request.post_dump, log::chain(&e)));
    Ok(CheckpointReport {
        container: id,
        processes: manifest.processes.len() as u32,
        image_bytes: written.bytes,
        stored_bytes: status.stored(),
        digest: hex(&written.digest),
        zstd: request.zstd,
        left_running: request.leave_running,
        guest_file: request.guest_file,
        pre_dump_us,
        freeze_us,
        dump_us,
        downtime_us,
        total_us: micros(started.elapsed()),
        post_dump_error,
    })
}

/// The request's own checks.
fn check_request(request: &ContainerCheckpoint, transport: &str) -> Result<(), CheckpointError> {
    let id = &request.container;
    if !request.stream && request.guest_file.is_none() {
        return Err(CheckpointError::NoDestination(id.clone()));
    }
    if request.stream && transport == "serial" {
        return Err(CheckpointError::Transport {
            id: id.clone(),
            transport: transport.to_owned(),
        });
    }
    if let Some(path) = &request.guest_file {
        if !path.starts_with('/') || path.contains('\0') || path.ends_with('/') {
            return Err(CheckpointError::GuestPath(path.clone()));
        }
    }
    Ok(())
}

/// A container that runs: started, not stopped, not frozen.
fn check_runs(container: &Container, lifecycle: &Lifecycle) -> Result<(), CheckpointError> {
    let id = &container.id;
    if lifecycle.exit.is_some() {
        return Err(ContainerError::Stopped {
            id: id.clone(),
            status: container.status_words(lifecycle),
            op: "checkpoint",
        }
        .into());
    }
    if !lifecycle.started {
        return Err(CheckpointError::NotStarted(id.clone()));
    }
    if container.cgroup.is_frozen() {
        return Err(ContainerError::Frozen {
            id: id.clone(),
            op: "checkpoint",
        }
        .into());
    }
    Ok(())
}

/// What the image says about the frozen container, the bytes its pipes
/// and sockets held, and its shared memory.
fn manifest(
    container: &Container,
    request: &ContainerCheckpoint,
    kernel_format: u32,
) -> Result<(Manifest, Vec<Vec<u8>>, shm::SharedMemory), DumpError> {
    let pids = container.processes().map_err(DumpError::List)?;
    let found = dump::inspect(&pids)?;
    let processes = dump::tree(container.init, &found.processes)?;
    let zombies = dump::zombies(&found, &processes);
    let config = &container.config;
    let pipes = pipes::collect(&processes, &config.rootfs)?;
    let sockets = sockets::collect(&processes, container.init)?;
    let eventfds = eventfds::collect(&processes)?;
    let ipc_ns = config.has(super::spec::Namespace::Ipc);
    let shared = shm::collect(&processes, container.init, ipc_ns)?;
    let manifest = Manifest {
        id: container.id.clone(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        kernel_release: crate::handlers::kernel_release(),
        kernel_format,
        spec: spec_json(container),
        namespaces: config
            .namespaces
            .iter()
            .map(|ns| ns.name().to_owned())
            .collect(),
        hostname: config
            .hostname
            .clone()
            .filter(|_| config.has(super::spec::Namespace::Uts)),
        processes,
        leave_running: request.leave_running,
        zombies,
        // Frozen now: what the processes saw last. A clock that cannot be
        // read leaves the restored container on the guest's clocks.
        clocks: super::clocks::seen_by(container.init).ok(),
        pipes: pipes.entries,
        socketpairs: sockets.entries,
        eventfds,
        shared_memory: shared.entries.clone(),
    };
    // In the order of the QUEUE records: the pipes', then the sockets'.
    let mut queues = pipes.data;
    queues.extend(sockets.queues);
    Ok((manifest, queues, shared))
}

/// The container's spec as it was given at create, else as parsed.
fn spec_json(container: &Container) -> serde_json::Value {
    std::fs::read(container.state_dir.join(SPEC_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::to_value(&container.spec).unwrap_or_default())
}

type Writer<'a, S> = ContainerWriter<ImageSink<'a, S>>;

/// A failed dump, with the image writer if an ERROR record can still
/// follow (boxed: it holds the zstd encoder).
type Failed<'a, S> = (DumpError, Option<Box<Writer<'a, S>>>);

/// Step 4 proper: header, processes, trailer, last bytes. On failure, the
/// writer comes back if an ERROR record can still follow.
fn dump_image<'a, S: Write>(
    sink: ImageSink<'a, S>,
    manifest: &Manifest,
    pipe_data: &[Vec<u8>],
    shared: &shm::SharedMemory,
    status: &SinkStatus,
) -> Result<(Written, Option<PartFile>), Failed<'a, S>> {
    let mut writer =
        ContainerWriter::new(sink, manifest).map_err(|e| (DumpError::Header(e), None))?;
    for (i, data) in pipe_data.iter().enumerate() {
        if let Err(e) = writer.queue(i as u32, data) {
            return Err((DumpError::Header(e), Some(Box::new(writer))));
        }
    }
    if let Err(e) = shared.write(&mut writer) {
        return Err((DumpError::SharedData(e), Some(Box::new(writer))));
    }
    if let Err(e) = dump::dump_processes(&mut writer, manifest, status) {
        return Err((e, Some(Box::new(writer))));
    }
    let (sink, written) = writer.finish().map_err(|e| (DumpError::Finish(e), None))?;
    let part = sink.finish().map_err(|e| (DumpError::Finish(e), None))?;
    if let Some((_, e)) = status.error() {
        return Err((DumpError::Finish(e), None));
    }
    Ok((written, part))
}

/// After a failure in step 4: thaw, end the image with an ERROR record
/// where the host still listens, remove the guest file, and say why.
fn abort<S: Write>(
    container: &Container,
    request: &ContainerCheckpoint,
    error: DumpError,
    writer: Option<Box<Writer<'_, S>>>,
    status: &SinkStatus,
) -> CheckpointError {
    thaw_after_failure(container);
    let id = container.id.clone();
    let failure = match status.error() {
        Some((Destination::Stream, source)) => CheckpointError::HostGone { id, source },
        Some((Destination::File, source)) => CheckpointError::WriteFile {
            id,
            path: format!("{}.part", request.guest_file.as_deref().unwrap_or("")),
            source,
        },
        None => CheckpointError::Dump { id, source: error },
    };
    let errno = match &failure {
        CheckpointError::Dump { source, .. } => source.errno(),
        CheckpointError::WriteFile { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    };
    let stream_listens = request.stream && status.failed() != Some(Destination::Stream);
    if let (Some(writer), true) = (writer, stream_listens) {
        // The guest file goes (dropped with the sink); the host learns why.
        let ended = writer
            .error(errno, &log::chain(&failure))
            .and_then(ImageSink::finish);
        if let Err(e) = ended {
            log!(
                "container {}: cannot end the image with its error: {e}",
                container.id
            );
        }
    }
    failure
}

/// Thaws after a failure, logging (not returning) a failed thaw.
fn thaw_after_failure(container: &Container) {
    if let Err(e) = container.cgroup.thaw() {
        log!(
            "container {}: cannot thaw it after a failed checkpoint: {}",
            container.id,
            log::chain(&e)
        );
    }
}

/// Step 5 without the hook: thaw, or kill every process (frozen, so none
/// runs again) and wait until the init is reaped. Returns the downtime:
/// from `froze` to the thaw, or to the kill.
fn finish<'a>(
    container: &'a Container,
    lifecycle: MutexGuard<'a, Lifecycle>,
    leave_running: bool,
    froze: Instant,
) -> Result<(MutexGuard<'a, Lifecycle>, Duration), CheckpointError> {
    let id = container.id.clone();
    if leave_running {
        container
            .cgroup
            .thaw()
            .map_err(|source| CheckpointError::Thaw { id, source })?;
        return Ok((lifecycle, froze.elapsed()));
    }
    if let Err(source) = container.cgroup.kill() {
        thaw_after_failure(container);
        return Err(CheckpointError::Kill { id, source });
    }
    let downtime = froze.elapsed();
    // Killed tasks leave the freezer anyway; thawing makes it explicit.
    container
        .cgroup
        .thaw()
        .map_err(|source| CheckpointError::Thaw {
            id: id.clone(),
            source,
        })?;
    let (lifecycle, exited) = container.wait_exit(lifecycle, EXIT_WAIT);
    if !exited {
        return Err(ContainerError::ExitTimeout {
            id,
            secs: EXIT_WAIT.as_secs(),
        }
        .into());
    }
    Ok((lifecycle, downtime))
}

/// Runs a hook in the guest to completion.
fn run_hook(argv: &[String]) -> Result<(), HookError> {
    let out =
        exec::run(ExecRequest::new(argv.iter().cloned()), HOOK_CAPTURE).map_err(HookError::Run)?;
    if out.status.success() {
        return Ok(());
    }
    let text = if out.stderr.is_empty() {
        out.stdout
    } else {
        out.stderr
    };
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    let start = text.len().saturating_sub(HOOK_QUOTE);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    Err(HookError::Failed {
        status: out.status,
        output: text[start..].to_owned(),
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(request: ContainerCheckpoint, transport: &str) -> AgentError {
        let mut wire = Vec::new();
        let registry = Registry::new();
        match checkpoint(&registry, request, &mut wire, transport) {
            Err(e) => {
                assert!(wire.is_empty(), "bytes were sent for a refused request");
                AgentError::new(e.kind(), log::chain(&e))
            }
            Ok(report) => panic!("expected a refusal, got {report:?}"),
        }
    }

    #[test]
    fn requests_without_a_destination_or_on_serial_are_refused() {
        let none = ContainerCheckpoint {
            container: "c".into(),
            ..Default::default()
        };
        let err = refusal(none, "vsock");
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains("`stream`, `guest_file` or both"),
            "{err:?}"
        );

        let serial = ContainerCheckpoint {
            container: "c".into(),
            stream: true,
            ..Default::default()
        };
        let err = refusal(serial.clone(), "serial");
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("over the serial channel"), "{err:?}");
        assert!(err.message.contains("guest_file"), "{err:?}");
        // The same request on vsock passes validation: the container is next.
        let err = refusal(serial, "vsock");
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.message, "no container \"c\" (existing: none)");

        let relative = ContainerCheckpoint {
            container: "c".into(),
            guest_file: Some("img".into()),
            ..Default::default()
        };
        let err = refusal(relative, "serial");
        assert!(err.message.contains("must be an absolute path"), "{err:?}");
    }

    #[test]
    fn hook_failures_quote_the_end_of_the_output() {
        let argv: Vec<String> = ["sh", "-c", "echo out; echo oops >&2; exit 3"]
            .map(String::from)
            .into();
        let err = run_hook(&argv).unwrap_err();
        assert_eq!(err.to_string(), "exit code 3, output: \"oops\"");
        assert!(run_hook(&["true".to_owned()]).is_ok());
        let err = run_hook(&["/no/such/hook".to_owned()]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn digests_print_as_hex() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
