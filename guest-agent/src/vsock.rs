//! The AF_VSOCK listener.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

/// The most one write(2) sends. The guest kernel (6.12.117 here) puts a
/// packet of more than about 32 KiB into a non-linear skb spread over several
/// descriptors, which vhost-device-vsock 0.3 does not accept: it resets the
/// connection. Smaller writes make smaller packets, each in one descriptor.
pub const MAX_WRITE: usize = 16 * 1024;

/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID`, `_IO(7, 0xb9)` from <linux/vm_sockets.h>.
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: u32 = 0x7b9;

/// Errors of the vsock listener.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The kernel refused an AF_VSOCK socket.
    #[error("failed to create an AF_VSOCK socket")]
    Socket(#[source] Errno),
    /// Binding the port failed.
    #[error("failed to bind vsock port {port}")]
    Bind {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Listening failed.
    #[error("failed to listen on vsock port {port}")]
    Listen {
        /// The port.
        port: u32,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Accepting a connection failed.
    #[error("failed to accept a vsock connection")]
    Accept(#[source] Errno),
}

/// The guest's own CID, or `None` when no vsock device is present or
/// AF_VSOCK is not built in. Without a device the kernel reports
/// `VMADDR_CID_ANY`, or `VMADDR_CID_LOCAL` (1) when the loopback transport
/// is built in; a guest device's CID is always above `VMADDR_CID_HOST` (2).
pub fn local_cid() -> Option<u32> {
    let device = File::open("/dev/vsock").ok()?;
    let mut cid: u32 = libc::VMADDR_CID_ANY;
    // SAFETY: this ioctl writes one u32 through the pointer, which points to
    // a live local of that type; the descriptor is open for the whole call.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            IOCTL_VM_SOCKETS_GET_LOCAL_CID as _,
            &mut cid as *mut u32,
        )
    };
    (rc == 0 && cid > libc::VMADDR_CID_HOST && cid != libc::VMADDR_CID_ANY).then_some(cid)
}

/// A listening AF_VSOCK stream socket.
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` for any CID.
    pub fn bind(port: u32) -> Result<Self, VsockError> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(VsockError::Socket)?;
        let addr = VsockAddr::new(libc::VMADDR_CID_ANY, port);
        bind(fd.as_raw_fd(), &addr).map_err(|source| VsockError::Bind { port, source })?;
        let backlog = Backlog::new(16).expect("16 is a valid backlog");
        listen(&fd, backlog).map_err(|source| VsockError::Listen { port, source })?;
        Ok(VsockListener { fd })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> Result<VsockStream, VsockError> {
        let fd =
            accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(VsockError::Accept)?;
        // SAFETY: accept4 just returned this new descriptor; nothing else
        // owns it, so the OwnedFd may close it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(VsockStream(File::from(fd)))
    }
}

/// An accepted connection: plain read(2)/write(2) on the socket, with
/// writes cut to [`MAX_WRITE`] bytes.
pub struct VsockStream(File);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(&buf[..buf.len().min(MAX_WRITE)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_cut_to_max_write() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut stream = VsockStream(File::from(OwnedFd::from(ours)));
        let data = vec![7u8; 3 * MAX_WRITE + 5];
        let first = stream.write(&data).unwrap();
        assert!(first <= MAX_WRITE);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        stream.write_all(&data[first..]).unwrap();
        drop(stream);
        assert_eq!(reader.join().unwrap().len(), data.len());
    }

    #[test]
    fn local_cid_is_a_guest_cid_or_none() {
        // A host (h2g transport, CID 2) or a machine without vsock: None.
        if let Some(cid) = local_cid() {
            assert!(cid > libc::VMADDR_CID_HOST && cid != libc::VMADDR_CID_ANY);
        }
    }
}
