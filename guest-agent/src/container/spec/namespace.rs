//! The namespaces a container can have of its own, and the ranges of
//! the ID mappings of its user namespace.

/// A namespace a container can have of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Namespace {
    /// User and group IDs (optional; needs ID mappings).
    User,
    /// Mount points (always: the root file system needs it).
    Mount,
    /// Process IDs.
    Pid,
    /// Hostname and domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Network devices and stack.
    Network,
}

impl Namespace {
    /// The name in `config.json` and in the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mount",
            Namespace::Pid => "pid",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Network => "network",
        }
    }

    /// The file in `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Mount => "mnt",
            Namespace::Pid => "pid",
            Namespace::Uts => "uts",
            Namespace::Ipc => "ipc",
            Namespace::Network => "net",
        }
    }

    /// The `CLONE_NEW*` flag that creates it.
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            Namespace::User => libc::CLONE_NEWUSER,
            Namespace::Mount => libc::CLONE_NEWNS,
            Namespace::Pid => libc::CLONE_NEWPID,
            Namespace::Uts => libc::CLONE_NEWUTS,
            Namespace::Ipc => libc::CLONE_NEWIPC,
            Namespace::Network => libc::CLONE_NEWNET,
        }
    }

    /// Runs `f` in a thread of the agent's own that has entered this
    /// namespace of guest process `pid` (IPC and network namespaces are a
    /// thread's; the agent's other threads stay where they are).
    pub fn run_in<T: Send>(
        self,
        pid: i32,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/{pid}/ns/{}", self.proc_name());
        let ns = std::fs::File::open(path)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a descriptor we own, for this thread.
                    if unsafe { libc::setns(ns.as_raw_fd(), self.clone_flag()) } < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a namespace thread panicked")))
        })
    }
}

/// One range of an ID mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// First ID inside the container.
    pub container_id: u32,
    /// First ID outside.
    pub host_id: u32,
    /// Number of IDs.
    pub size: u32,
}
