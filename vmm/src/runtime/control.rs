//! The event-loop subscriber for the VMM's own events: a vCPU or the debug
//! port ended the VM, the guest reset through the i8042, an API request
//! waits, console input arrived, the UART drained its input FIFO. It only
//! records what happened; `Vmm::run` acts on it on the loop thread.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// What the loop has to act on.
#[derive(Default)]
pub struct Pending {
    /// A vCPU exited on its own.
    pub vm_exit: bool,
    /// The guest asked for a reset.
    pub guest_reset: bool,
    /// API requests are waiting.
    pub api: bool,
    /// Fresh console input.
    pub input: Vec<u8>,
    /// The UART took all its input: try the backlog again.
    pub drained: bool,
    /// Console input the UART has not taken yet.
    pub backlog: VecDeque<u8>,
}

/// Watches the VMM's event fds.
pub struct Control {
    pending: Arc<Mutex<Pending>>,
    vm_exit: EventFd,
    reset: EventFd,
    api: Option<EventFd>,
    drained: EventFd,
    stdin: bool,
}

const STDIN: i32 = 0;

impl Control {
    /// A subscriber for these fds; `stdin` forwards console input.
    pub fn new(
        pending: Arc<Mutex<Pending>>,
        vm_exit: EventFd,
        reset: EventFd,
        api: Option<EventFd>,
        drained: EventFd,
        stdin: bool,
    ) -> Control {
        Control {
            pending,
            vm_exit,
            reset,
            api,
            drained,
            stdin,
        }
    }
}

impl MutEventSubscriber for Control {
    fn init(&mut self, ops: &mut EventOps) {
        let mut fds = vec![&self.vm_exit, &self.reset, &self.drained];
        fds.extend(self.api.as_ref());
        for fd in fds {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch a VMM event fd: {e:?}");
            }
        }
        if self.stdin {
            if let Err(e) = ops.add(Events::new_raw(STDIN, EventSet::IN)) {
                log::warn!("console input disabled: cannot watch stdin: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let mut p = self.pending.lock().expect("pending lock");
        if fd == self.vm_exit.as_raw_fd() {
            let _ = self.vm_exit.read();
            p.vm_exit = true;
        } else if fd == self.reset.as_raw_fd() {
            let _ = self.reset.read();
            p.guest_reset = true;
        } else if self.api.as_ref().is_some_and(|a| a.as_raw_fd() == fd) {
            // The server reads the fd itself when it hands out requests.
            p.api = true;
        } else if fd == self.drained.as_raw_fd() {
            let _ = self.drained.read();
            p.drained = true;
        } else if fd == STDIN {
            let mut buf = [0u8; 256];
            match std::io::stdin().lock().read(&mut buf) {
                Ok(0) | Err(_) => {
                    // End of input: stop watching, the guest keeps running.
                    let _ = ops.remove(Events::new_raw(STDIN, EventSet::IN));
                }
                Ok(n) => p.input.extend_from_slice(&buf[..n]),
            }
        }
    }
}
