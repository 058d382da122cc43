//! Eventfds shared by the processes of a container: like a pipe
//! (`pipes.rs`), saved once by the agent (its count and semaphore flag,
//! from its fdinfo) with the descriptors that hold it; the kernel saves
//! each descriptor as a `CR_FILE_EVENTFD` record and leaves it to the
//! caller of restart.

use serde::{Deserialize, Serialize};

use super::format::Manifest;
use super::sockets::SocketEnd;

/// The most eventfds one image holds.
pub const CT_MAX_EVENTFDS: usize = 4096;
/// The largest count an eventfd holds.
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

/// One eventfd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventfdEntry {
    /// Its `eventfd-id` at the checkpoint (informational).
    pub id: u64,
    /// Its count.
    pub count: u64,
    /// Made with `EFD_SEMAPHORE`.
    #[serde(default)]
    pub semaphore: bool,
    /// The descriptors that hold it.
    pub ends: Vec<SocketEnd>,
}

/// Checks the manifest's eventfds; `taken` holds the (pid, fd) pairs
/// already given.
pub(crate) fn check_eventfds(
    m: &Manifest,
    taken: &mut std::collections::HashSet<(i32, i32)>,
) -> Result<(), String> {
    if m.eventfds.len() > CT_MAX_EVENTFDS {
        return Err(format!("{} eventfds", m.eventfds.len()));
    }
    for (i, e) in m.eventfds.iter().enumerate() {
        let bad = |what: String| Err(format!("eventfd {i}: {what}"));
        if e.count > EVENTFD_MAX {
            return bad(format!("count {:#x}", e.count));
        }
        if e.ends.is_empty() {
            return bad("no process holds it".into());
        }
        for end in &e.ends {
            super::sockets::check_end(m, taken, end).or_else(bad)?;
        }
    }
    Ok(())
}
