//! The virtio-serial port.
//!
//! The virtio console driver reports the host side's state through read and
//! write: with no host connected, read(2) returns 0 and a write would block
//! (EAGAIN on our non-blocking descriptor, with POLLHUP from poll). So
//! [`SerialPort`] turns a read of 0 into "sleep 50 ms and read again", drops
//! writes while no host is connected, and reports the end of each host
//! session as one end-of-file so the server can start afresh with the next.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// Where the kernel lists virtio-serial ports.
pub const SYSFS_PORTS: &str = "/sys/class/virtio-ports";

/// The pause between reads while no host is connected.
const NO_HOST_PAUSE: Duration = Duration::from_millis(50);

/// The longest single poll, so a missed wake-up costs at most this.
const POLL_MS: i32 = 1000;

/// Errors of the serial channel.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The port's device node could not be opened.
    #[error("failed to open {path}")]
    Open {
        /// The device node.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The device node of the port named `name`, if the kernel has one:
/// `/dev/vportNpM` for the `vportNpM` under `sysfs` whose `name` matches.
pub fn find_port(sysfs: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(sysfs).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|entry| {
        let port_name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (port_name.trim_end() == name).then(|| dev.join(entry.file_name()))
    })
}

/// A virtio-serial port as a byte stream that survives host reconnects.
pub struct SerialPort {
    file: File,
    /// A host was connected at the last read; its leaving ends a session.
    host_seen: bool,
}

impl SerialPort {
    /// Opens the device node read-write and non-blocking.
    pub fn open(path: &Path) -> Result<Self, SerialError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| SerialError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self::from_file(file))
    }

    /// Wraps an open non-blocking descriptor.
    pub fn from_file(file: File) -> Self {
        SerialPort {
            file,
            host_seen: false,
        }
    }

    /// Waits up to [`POLL_MS`] for `events`; returns the events that came.
    fn wait_for(&self, events: libc::c_short) -> io::Result<libc::c_short> {
        let mut fds = [libc::pollfd {
            fd: self.file.as_raw_fd(),
            events,
            revents: 0,
        }];
        // SAFETY: one valid pollfd in an exclusively borrowed array; poll
        // writes only its revents.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, POLL_MS) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(fds[0].revents)
    }
}

impl Read for SerialPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Ok(0) if buf.is_empty() => return Ok(0),
                Ok(0) if self.host_seen => {
                    // The host went away: one EOF ends this session.
                    self.host_seen = false;
                    return Ok(0);
                }
                Ok(0) => thread::sleep(NO_HOST_PAUSE),
                Ok(n) => {
                    self.host_seen = true;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A host is connected but has sent nothing yet.
                    self.host_seen = true;
                    self.wait_for(libc::POLLIN)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for SerialPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.file.write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let revents = self.wait_for(libc::POLLOUT)?;
                    if revents & libc::POLLHUP != 0 && revents & libc::POLLOUT == 0 {
                        // No host to read it: drop the bytes.
                        return Ok(buf.len());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::TempDir;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn finds_the_named_port() {
        let dir = TempDir::new("vports");
        for (port, name) in [
            ("vport0p0", ""),
            ("vport1p1", "other"),
            ("vport1p2", "org.crvmm.agent"),
        ] {
            std::fs::create_dir(dir.0.join(port)).unwrap();
            std::fs::write(dir.0.join(port).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(&dir.0, Path::new("/dev"), "org.crvmm.agent"),
            Some(PathBuf::from("/dev/vport1p2"))
        );
        assert_eq!(find_port(&dir.0, Path::new("/dev"), "missing"), None);
        assert_eq!(find_port(&dir.0.join("none"), Path::new("/dev"), "x"), None);
    }

    #[test]
    fn host_leaving_is_one_eof_and_writes_pass_through() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut port = SerialPort::from_file(File::from(OwnedFd::from(ours)));
        theirs.write_all(b"abc").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(port.read(&mut buf).unwrap(), 3);
        port.write_all(b"reply").unwrap();
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"reply");
        drop(theirs);
        assert_eq!(port.read(&mut buf).unwrap(), 0);
        assert!(!port.host_seen);
    }
}
