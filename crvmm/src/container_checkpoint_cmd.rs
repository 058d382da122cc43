//! `crvmm container checkpoint`: asks a guest's agent to checkpoint a
//! container and receives the image over a connection of its own, writing
//! it to a file atomically (`FILE.part`, renamed once complete and
//! verified) or to standard output, and checking it as it arrives: the
//! container image's records and trailer (after zstd, if compressed), and
//! its digest against the agent's report.

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use crvmm_cr_image::container::{
    hex, ChannelReader, ContainerError, ContainerReader, Digest, Manifest,
};
use crvmm_protocol::{CheckpointReport, ContainerCheckpoint};

use crate::agent_cmd;

/// The shortest pause between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Chunks queued for the verifier before the receiver waits for it.
const VERIFY_QUEUE: usize = 16;

#[derive(Args)]
pub struct CheckpointArgs {
    /// The container.
    id: String,
    /// Where the image goes on the host: a file (written as FILE.part and
    /// renamed once complete and verified) or `-` for standard output.
    #[arg(short, long, value_name = "FILE|-")]
    output: Option<PathBuf>,
    /// Let the container run on afterwards (default: kill it, as for a
    /// migration).
    #[arg(long)]
    leave_running: bool,
    /// Compress the image with zstd in the guest.
    #[arg(long)]
    zstd: bool,
    /// Also (or, without -o, only) write the image to this guest file.
    #[arg(long, value_name = "PATH")]
    guest_file: Option<String>,
    /// Give up (and thaw again) if the freeze takes longer [default: 10000].
    #[arg(long, value_name = "MS")]
    freeze_timeout_ms: Option<u64>,
    /// A program run in the guest before the freeze; its failure aborts the
    /// checkpoint. Its arguments follow; end them with `;` if options come
    /// after.
    #[arg(
        long,
        value_name = "CMD",
        num_args = 1..,
        value_terminator = ";",
        allow_hyphen_values = true
    )]
    pre_dump: Vec<String>,
    /// A program run in the guest after the thaw or kill; its failure is
    /// reported. Its arguments follow as for --pre-dump.
    #[arg(
        long,
        value_name = "CMD",
        num_args = 1..,
        value_terminator = ";",
        allow_hyphen_values = true
    )]
    post_dump: Vec<String>,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// Runs the checkpoint on a new connection to `vm`'s agent and prints the
/// report (as JSON with `json`).
pub fn checkpoint(
    base: &Path,
    vm: &str,
    json: bool,
    timeout: Duration,
    args: CheckpointArgs,
) -> anyhow::Result<()> {
    let stream = args.output.is_some();
    if !stream && args.guest_file.is_none() {
        bail!("where does the image go? give -o FILE, -o - (standard output) or --guest-file PATH");
    }
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let mut output = match &args.output {
        Some(path) if !to_stdout => Some(Output::create(path)?),
        _ => None,
    };
    // The stream uses its connection up: this one is ours alone.
    let mut client = agent_cmd::connect(base, vm, timeout)?;
    let request = ContainerCheckpoint {
        container: args.id.clone(),
        leave_running: args.leave_running,
        stream,
        guest_file: args.guest_file.clone(),
        zstd: args.zstd,
        freeze_timeout_ms: args.freeze_timeout_ms,
        pre_dump: args.pre_dump.clone(),
        post_dump: args.post_dump.clone(),
    };

    let verifier = stream.then(|| Verifier::start(args.zstd));
    let stdout = io::stdout();
    let mut sink = Tee {
        out: match (&mut output, to_stdout) {
            (Some(file), _) => Some(Box::new(&mut file.writer) as Box<dyn Write>),
            (None, true) => Some(Box::new(stdout.lock()) as Box<dyn Write>),
            (None, false) => None,
        },
        verifier: verifier.as_ref().map(Verifier::sender),
    };
    let mut progress = Progress::new(args.progress || io::stderr().is_terminal());
    let result =
        client.container_checkpoint(request, &mut sink, &mut |total| progress.update(total));
    progress.done();
    let received = progress.total;
    let flushed = sink.finish();
    drop(sink);
    let report = result.with_context(|| format!("checkpoint of container {:?}", args.id))?;
    flushed.context("writing the image")?;

    let mut verified = None;
    if let Some(verifier) = verifier {
        let (manifest, bytes, digest) = verifier
            .finish()
            .context("the image received does not verify")?;
        check_report(&report, received, bytes, &digest)?;
        verified = Some(manifest);
    }
    if let Some(output) = output {
        output.commit()?;
    }

    let summary_to = if to_stdout {
        Box::new(io::stderr()) as Box<dyn Write>
    } else {
        Box::new(io::stdout())
    };
    print_report(
        summary_to,
        json,
        &report,
        args.output.as_deref(),
        verified.as_ref(),
    )?;
    Ok(())
}

/// The report must describe the bytes that came.
fn check_report(
    report: &CheckpointReport,
    received: u64,
    image_bytes: u64,
    digest: &Digest,
) -> anyhow::Result<()> {
    if received != report.stored_bytes {
        bail!(
            "received {received} bytes, the agent reports {} sent",
            report.stored_bytes
        );
    }
    if image_bytes != report.image_bytes {
        bail!(
            "the image has {image_bytes} bytes, the agent reports {}",
            report.image_bytes
        );
    }
    let ours = hex(digest);
    if ours != report.digest {
        bail!(
            "the image's digest is {ours}, the agent reports {}",
            report.digest
        );
    }
    Ok(())
}

/// The host file: `FILE.part` until committed, removed if dropped before.
struct Output {
    path: PathBuf,
    part: PathBuf,
    writer: BufWriter<File>,
    committed: bool,
}

impl Output {
    fn create(path: &Path) -> anyhow::Result<Output> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        Ok(Output {
            path: path.to_owned(),
            part,
            writer: BufWriter::with_capacity(1 << 20, file),
            committed: false,
        })
    }

    /// Makes the file durable and gives it its final name.
    fn commit(mut self) -> anyhow::Result<()> {
        let context = || format!("writing {}", self.part.display());
        self.writer.flush().with_context(context)?;
        self.writer.get_ref().sync_all().with_context(context)?;
        fs::rename(&self.part, &self.path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.part.display(),
                self.path.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.part);
        }
    }
}

/// Where the client puts the bytes that arrive: the output, and the
/// verifier.
struct Tee<'a> {
    out: Option<Box<dyn Write + 'a>>,
    verifier: Option<SyncSender<Vec<u8>>>,
}

impl Tee<'_> {
    /// Flushes the output and tells the verifier the stream ended.
    fn finish(&mut self) -> io::Result<()> {
        self.verifier = None;
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Some(out) = self.out.as_mut() {
            out.write_all(bytes)?;
        }
        if let Some(verifier) = &self.verifier {
            // A verifier that stopped has its error waiting at the end.
            if verifier.send(bytes.to_vec()).is_err() {
                self.verifier = None;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// What the verifier found: the manifest, the image's length and digest.
type Verdict = Result<(Manifest, u64, Digest), ContainerError>;

/// Checks the stream on a thread of its own, as it arrives.
struct Verifier {
    sender: SyncSender<Vec<u8>>,
    thread: JoinHandle<Verdict>,
}

impl Verifier {
    fn start(zstd: bool) -> Verifier {
        let (sender, receiver) = mpsc::sync_channel(VERIFY_QUEUE);
        let thread = thread::spawn(move || {
            let input = ChannelReader::new(receiver);
            if zstd {
                ContainerReader::new(zstd::stream::read::Decoder::new(input)?).verify()
            } else {
                ContainerReader::new(input).verify()
            }
        });
        Verifier { sender, thread }
    }

    fn sender(&self) -> SyncSender<Vec<u8>> {
        self.sender.clone()
    }

    /// Ends the stream and waits for the verdict.
    fn finish(self) -> Verdict {
        drop(self.sender);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the verifier panicked").into()))
    }
}

/// Bytes and rate on stderr, a few times a second at most.
struct Progress {
    show: bool,
    tty: bool,
    started: Instant,
    last: Option<Instant>,
    total: u64,
}

impl Progress {
    fn new(show: bool) -> Progress {
        Progress {
            show,
            tty: io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            total: 0,
        }
    }

    fn update(&mut self, total: u64) {
        self.total = total;
        if !self.show || self.last.is_some_and(|l| l.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.print();
    }

    fn print(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "crvmm: received {:.1} MiB ({:.1} MB/s)",
            mib(self.total),
            self.total as f64 / 1e6 / secs
        );
        if self.tty {
            let _ = write!(io::stderr(), "\r{line}\x1b[K");
        } else {
            crate::say!("{line}");
        }
    }

    fn done(&self) {
        if self.show && self.last.is_some() {
            self.print();
            if self.tty {
                crate::say!("");
            }
        }
    }
}

fn print_report(
    mut to: Box<dyn Write>,
    json: bool,
    report: &CheckpointReport,
    output: Option<&Path>,
    manifest: Option<&Manifest>,
) -> anyhow::Result<()> {
    if json {
        writeln!(to, "{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    let stored = if report.zstd {
        format!(", {:.1} MiB with zstd", mib(report.stored_bytes))
    } else {
        String::new()
    };
    writeln!(
        to,
        "container {}: checkpointed {} process{}, image {:.1} MiB{stored}",
        report.container,
        report.processes,
        if report.processes == 1 { "" } else { "es" },
        mib(report.image_bytes),
    )?;
    writeln!(
        to,
        "  freeze {}, dump {}, downtime {}, total {}{}",
        duration(report.freeze_us),
        duration(report.dump_us),
        duration(report.downtime_us),
        duration(report.total_us),
        if report.pre_dump_us > 0 {
            format!(" (pre-dump hook {})", duration(report.pre_dump_us))
        } else {
            String::new()
        }
    )?;
    match output {
        Some(path) if path != Path::new("-") => {
            writeln!(to, "  image: {} (verified)", path.display())?
        }
        Some(_) => writeln!(to, "  image: standard output (verified)")?,
        None => {}
    }
    if let Some(path) = &report.guest_file {
        writeln!(to, "  guest file: {path}")?;
    }
    if let Some(manifest) = manifest {
        let tree: Vec<String> = manifest
            .processes
            .iter()
            .map(|p| format!("{} {}", p.pid, p.comm))
            .collect();
        writeln!(to, "  processes: {}", tree.join(", "))?;
    }
    writeln!(to, "  digest: {} (XXH3-128)", report.digest)?;
    writeln!(
        to,
        "  {}",
        if report.left_running {
            "the container runs on"
        } else {
            "the container was killed (stopped)"
        }
    )?;
    if let Some(error) = &report.post_dump_error {
        writeln!(to, "  warning: {error}")?;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// `850 us`, `12.3 ms`, `1.52 s`.
fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us} us"),
        1000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use crvmm_cr_image::container::{ContainerWriter, ProcessEntry};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CheckpointArgs,
        #[arg(long)]
        json: bool,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("checkpoint").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn hooks_take_their_arguments_up_to_a_semicolon() {
        let cli = parse(&[
            "web",
            "-o",
            "img",
            "--pre-dump",
            "sh",
            "-c",
            "sync; true",
            ";",
            "--post-dump",
            "logger",
            "-t",
            "done",
            ";",
            "--json",
        ]);
        assert_eq!(cli.args.pre_dump, ["sh", "-c", "sync; true"]);
        assert_eq!(cli.args.post_dump, ["logger", "-t", "done"]);
        assert!(cli.json);
        assert_eq!(cli.args.output.as_deref(), Some(Path::new("img")));
        let cli = parse(&["web", "--guest-file", "/tmp/x", "--post-dump", "true"]);
        assert_eq!(cli.args.post_dump, ["true"]);
        assert!(cli.args.pre_dump.is_empty() && !cli.args.leave_running);
    }

    fn image() -> (Vec<u8>, crvmm_cr_image::container::Written) {
        let manifest = Manifest {
            id: "c".into(),
            processes: vec![ProcessEntry {
                index: 0,
                pid: 1,
                ppid: 0,
                guest_pid: 50,
                comm: "init".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut w = ContainerWriter::new(Vec::new(), &manifest).unwrap();
        w.begin_process(1).unwrap();
        w.data(&vec![5u8; 300_000]).unwrap();
        w.end_process().unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn the_verifier_checks_plain_and_zstd_streams_fed_in_pieces() {
        let (bytes, written) = image();
        for zstd in [false, true] {
            let data = if zstd {
                zstd::stream::encode_all(&bytes[..], 1).unwrap()
            } else {
                bytes.clone()
            };
            let verifier = Verifier::start(zstd);
            let mut sink = Tee {
                out: None,
                verifier: Some(verifier.sender()),
            };
            for piece in data.chunks(4097) {
                sink.write_all(piece).unwrap();
            }
            sink.finish().unwrap();
            let (manifest, n, sha) = verifier.finish().unwrap();
            assert_eq!(manifest.processes[0].comm, "init");
            assert_eq!((n, sha), (written.bytes, written.digest));
        }
        // Cut short: refused.
        let verifier = Verifier::start(false);
        let mut sink = Tee {
            out: None,
            verifier: Some(verifier.sender()),
        };
        sink.write_all(&bytes[..bytes.len() - 10]).unwrap();
        sink.finish().unwrap();
        assert!(matches!(
            verifier.finish(),
            Err(ContainerError::Truncated(_))
        ));
    }

    #[test]
    fn reports_must_match_what_arrived() {
        let (bytes, written) = image();
        let report = CheckpointReport {
            stored_bytes: bytes.len() as u64,
            image_bytes: written.bytes,
            digest: hex(&written.digest),
            ..Default::default()
        };
        check_report(&report, bytes.len() as u64, written.bytes, &written.digest).unwrap();
        let err = check_report(&report, 5, written.bytes, &written.digest).unwrap_err();
        assert!(err.to_string().contains("received 5 bytes"), "{err}");
        let err = check_report(&report, bytes.len() as u64, written.bytes, &[0; 16]).unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
    }

    #[test]
    fn an_output_is_only_ever_complete_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut out = Output::create(&path).unwrap();
        out.writer.write_all(b"half").unwrap();
        drop(out);
        assert!(!path.exists() && !dir.path().join("img.part").exists());
        let mut out = Output::create(&path).unwrap();
        out.writer.write_all(b"whole").unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        assert!(!dir.path().join("img.part").exists());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 us");
        assert_eq!(duration(12_345), "12.3 ms");
        assert_eq!(duration(1_520_000), "1.52 s");
    }
}
