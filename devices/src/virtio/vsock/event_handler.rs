//! Event-loop glue for the vsock device: an `event_manager`
//! [`MutEventSubscriber`].
//!
//! The event manager watches four descriptors: the three queue EventFds and
//! one epoll descriptor of our own. That inner epoll watches the descriptors
//! that come and go (the backend's listener and half-open clients, every
//! connection's host stream), and is brought in line with
//! [`Vsock::interest`] after every event. Keeping them out of the event
//! manager matters: it must be told of a descriptor before it is closed,
//! and a connection closes its stream on its own.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::backend::{Interest, Owner, VsockBackend};
use super::device::{Vsock, VsockError};
use super::{EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::VirtioDevice;
use crate::Chain;

/// Event data of the inner epoll descriptor (queue EventFds use their index).
const INNER_EPOLL: u32 = 3;
/// Inner events handled per wake-up.
const BATCH: usize = 64;

/// Errors of the vsock event handler.
#[derive(Debug, thiserror::Error)]
pub enum EventHandlerError {
    /// Creating the inner epoll descriptor failed.
    #[error("create the vsock epoll descriptor")]
    Epoll(#[source] io::Error),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Watch {
    owner: Owner,
    token: u64,
    events: EventSet,
}

/// Runs a shared [`Vsock`] from an event manager.
pub struct VsockEventHandler<B: VsockBackend> {
    device: Arc<Mutex<Vsock<B>>>,
    epoll: Epoll,
    watched: HashMap<RawFd, Watch>,
    wanted: Vec<Interest>,
}

impl<B: VsockBackend> VsockEventHandler<B> {
    /// A handler for `device` (the MMIO transport holds another handle).
    pub fn new(device: Arc<Mutex<Vsock<B>>>) -> Result<VsockEventHandler<B>, EventHandlerError> {
        Ok(VsockEventHandler {
            device,
            epoll: Epoll::new().map_err(EventHandlerError::Epoll)?,
            watched: HashMap::new(),
            wanted: Vec::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vsock<B>> {
        self.device
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Handles a queue notification.
    fn queue_event(&mut self, queue: usize) -> Result<(), VsockError> {
        let mut dev = self.lock();
        // EAGAIN: a spurious wake-up, nothing to clear.
        let _ = dev.queue_events()[queue].read();
        match queue {
            RX_QUEUE => dev.process_rx_queue(),
            TX_QUEUE => dev.process_tx_queue(),
            _ => dev.process_event_queue(),
        }
    }

    /// Handles what the inner epoll reports.
    fn inner_events(&mut self) -> Result<(), VsockError> {
        let mut ready = [EpollEvent::default(); BATCH];
        let n = match self.epoll.wait(0, &mut ready) {
            Ok(n) => n,
            Err(e) => {
                log::error!("vsock: epoll wait: {e}");
                return Ok(());
            }
        };
        let mut dev = self
            .device
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for ev in &ready[..n] {
            let fd = ev.data() as RawFd;
            let Some(watch) = self.watched.get(&fd) else {
                continue;
            };
            match watch.owner {
                Owner::Backend => dev.process_backend_event(fd, ev.event_set())?,
                Owner::Connection => dev.process_stream_event(fd, watch.token, ev.event_set())?,
            }
        }
        Ok(())
    }

    /// Brings the inner epoll in line with what the device wants watched.
    fn sync(&mut self) {
        let mut wanted = std::mem::take(&mut self.wanted);
        wanted.clear();
        self.lock().interest(&mut wanted);
        let mut keep = HashMap::with_capacity(wanted.len());
        for i in &wanted {
            let watch = Watch {
                owner: i.owner,
                token: i.token,
                events: i.events,
            };
            let event = EpollEvent::new(i.events, i.fd as u64);
            let result = match self.watched.remove(&i.fd) {
                Some(old) if old == watch => Ok(()),
                Some(old) if (old.owner, old.token) == (watch.owner, watch.token) => {
                    self.epoll.ctl(ControlOperation::Modify, i.fd, event)
                }
                Some(_) => {
                    // A new object reuses the number of a closed descriptor.
                    let _ = self
                        .epoll
                        .ctl(ControlOperation::Delete, i.fd, EpollEvent::default());
                    self.epoll.ctl(ControlOperation::Add, i.fd, event)
                }
                None => self.epoll.ctl(ControlOperation::Add, i.fd, event),
            };
            match result {
                Ok(()) => {
                    keep.insert(i.fd, watch);
                }
                Err(e) => log::error!("vsock: watch descriptor {}: {e}", i.fd),
            }
        }
        for &fd in self.watched.keys() {
            // Closed descriptors left the epoll set by themselves: ignore errors.
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        self.watched = keep;
        self.wanted = wanted;
    }
}

impl<B: VsockBackend> MutEventSubscriber for VsockEventHandler<B> {
    fn init(&mut self, ops: &mut EventOps) {
        let queue_fds: Vec<RawFd> = self
            .lock()
            .queue_events()
            .iter()
            .map(|e| e.as_raw_fd())
            .collect();
        for (index, fd) in queue_fds.into_iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data_raw(fd, index as u32, EventSet::IN)) {
                log::error!("vsock: register queue {index} EventFd: {e}");
            }
        }
        let inner = Events::with_data(&self.epoll, INNER_EPOLL, EventSet::IN);
        if let Err(e) = ops.add(inner) {
            log::error!("vsock: register the vsock epoll descriptor: {e}");
        }
        self.sync();
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let result = match events.data() {
            INNER_EPOLL => self.inner_events(),
            q @ (0..=2) => self.queue_event(q as usize),
            other => {
                log::error!("vsock: unexpected event data {other}");
                Ok(())
            }
        };
        if let Err(e) = result {
            log::error!("vsock: {}", Chain(&e));
        }
        self.sync();
    }
}

// The queue indices are the event data of their EventFds.
const _: () = assert!(RX_QUEUE == 0 && TX_QUEUE == 1 && EVENT_QUEUE == 2);
