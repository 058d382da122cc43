//! Pipes and FIFOs shared by the processes of a container.
//!
//! The kernel saves each end of a pipe in the image of the process that
//! holds it (a `CR_FILE_PIPE` record: fd, access, the pipe's inode), but
//! not the pipe: its bytes belong to no single process. The agent saves
//! the pipe once, for the whole container: a [`PipeEntry`] in the manifest
//! (which process holds which end at which fd) and a QUEUE record with the
//! bytes it held, after the header and before any process. At restore the
//! agent makes the pipe again, fills it, and gives each process its ends
//! before the process calls restart.

use serde::{Deserialize, Serialize};

use super::format::Manifest;

/// The most pipes one image holds.
pub const CT_MAX_PIPES: usize = 4096;
/// The most bytes one pipe may hold (the agent refuses a fuller one).
pub const CT_MAX_PIPE_BYTES: usize = 16 << 20;
/// The largest pipe buffer (`F_SETPIPE_SZ`) restored.
pub const CT_MAX_PIPE_SIZE: u32 = 1 << 30;
/// Bytes of a QUEUE payload before the data.
pub const QUEUE_FIXED: usize = 8;
/// No descriptor is this high (`CR_MAX_FD`).
const MAX_FD: i32 = 1 << 20;

/// One pipe or FIFO of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeEntry {
    /// Its inode number at the checkpoint: the `rdev` of its ends'
    /// `CR_FILE_PIPE` records (informational).
    pub id: u64,
    /// A FIFO's path in the container (none: an anonymous pipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fifo: Option<String>,
    /// Its buffer size in bytes (`F_GETPIPE_SZ`).
    pub size: u32,
    /// The bytes it held: its QUEUE record's data.
    pub buffered: u32,
    /// Who holds which end.
    pub ends: Vec<PipeEnd>,
}

/// One descriptor of a process on a pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeEnd {
    /// The process, by its pid in the container.
    pub pid: i32,
    /// The descriptor.
    pub fd: i32,
    /// `O_RDONLY` (0), `O_WRONLY` (1) or, for a FIFO, `O_RDWR` (2).
    pub access: u32,
}

/// Checks the manifest's pipes, socketpairs and eventfds against its
/// processes.
pub(crate) fn check_pipes(m: &Manifest) -> Result<(), String> {
    if m.pipes.len() > CT_MAX_PIPES {
        return Err(format!("{} pipes", m.pipes.len()));
    }
    let mut taken = std::collections::HashSet::new();
    check_each_pipe(m, &mut taken)?;
    super::sockets::check_sockets(m, &mut taken)?;
    super::eventfds::check_eventfds(m, &mut taken)
}

fn check_each_pipe(
    m: &Manifest,
    taken: &mut std::collections::HashSet<(i32, i32)>,
) -> Result<(), String> {
    for (i, pipe) in m.pipes.iter().enumerate() {
        let bad = |what: String| Err(format!("pipe {i}: {what}"));
        if !(4096..=CT_MAX_PIPE_SIZE).contains(&pipe.size) {
            return bad(format!("buffer size {}", pipe.size));
        }
        if pipe.buffered > pipe.size || pipe.buffered as usize > CT_MAX_PIPE_BYTES {
            return bad(format!(
                "{} bytes in a buffer of {}",
                pipe.buffered, pipe.size
            ));
        }
        if let Some(path) = &pipe.fifo {
            if !path.starts_with('/') || path.contains('\0') || path.len() >= 4096 {
                return bad(format!("FIFO path {path:?}"));
            }
        }
        if pipe.ends.is_empty() {
            return bad("no process holds it".into());
        }
        for end in &pipe.ends {
            if !m.processes.iter().any(|p| p.pid == end.pid) {
                return bad(format!("pid {} is no process of the image", end.pid));
            }
            let most = if pipe.fifo.is_some() { 2 } else { 1 };
            if !(0..MAX_FD).contains(&end.fd) || end.access > most {
                return bad(format!(
                    "pid {} fd {} access {}",
                    end.pid, end.fd, end.access
                ));
            }
            if !taken.insert((end.pid, end.fd)) {
                return bad(format!("pid {} fd {} is taken twice", end.pid, end.fd));
            }
        }
    }
    Ok(())
}
