//! Eventfds of a frozen container, saved once for all the processes that
//! hold them: their count and semaphore flag, from the fdinfo of any
//! descriptor on them (see `cr-image/src/container/eventfds.rs`). As for
//! pipes, one that a process outside the container holds too becomes the
//! restorer's standard input or output at fds 0 to 2, and is refused
//! anywhere else.

use std::collections::HashSet;

use crvmm_cr_image::container::{EventfdEntry, ProcessEntry};

use super::dump::DumpError;
use super::fds::{fdinfo, field, holders, outsiders, refuse_outside, Key, Kind};

/// The eventfds of `processes` (the container's, frozen).
pub fn collect(processes: &[ProcessEntry]) -> Result<Vec<EventfdEntry>, DumpError> {
    let found = holders(processes, Kind::Eventfd)?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let keys: HashSet<Key> = found.keys().copied().collect();
    let outside = outsiders(processes, &keys);
    let mut out = Vec::new();
    for (key, ends) in found {
        if let Some(&outsider) = outside.get(&key) {
            let all = ends.iter().map(|(e, _, c)| (e.pid, e.fd, c));
            refuse_outside(all, outsider, "an eventfd")?;
            continue;
        }
        let (first, guest_pid, _) = &ends[0];
        let proc_error = |source| DumpError::Proc {
            pid: *guest_pid as u32,
            file: "fdinfo (eventfd)",
            source,
        };
        let info = fdinfo(*guest_pid as u32, first.fd).map_err(proc_error)?;
        let count = field(&info, "eventfd-count:").and_then(|v| u64::from_str_radix(v, 16).ok());
        let Some(count) = count else {
            let what = std::io::Error::other("no eventfd-count line");
            return Err(proc_error(what));
        };
        out.push(EventfdEntry {
            id: key.1,
            count,
            semaphore: field(&info, "eventfd-semaphore:") == Some("1"),
            ends: ends.into_iter().map(|(e, ..)| e).collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eventfds_count_and_flag_are_read() {
        // SAFETY: eventfd makes a new descriptor, closed at the end.
        let fd = unsafe { libc::eventfd(0, libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        let add = 41u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live array.
        assert_eq!(unsafe { libc::write(fd, add.as_ptr().cast(), 8) }, 8);
        let me = ProcessEntry {
            pid: 1,
            guest_pid: std::process::id() as i32,
            ..Default::default()
        };
        let found = collect(&[me]).unwrap();
        let ours = found
            .iter()
            .find(|e| e.ends.iter().any(|end| end.fd == fd))
            .unwrap();
        assert_eq!((ours.count, ours.semaphore), (41, true));
        // SAFETY: closes the descriptor made above.
        unsafe { libc::close(fd) };
    }
}
