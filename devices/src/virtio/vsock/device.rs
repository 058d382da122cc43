//! The vsock device core: three virtqueues (rx, tx, event), the guest CID
//! in configuration space, and the plumbing between the queues and the
//! [`Muxer`]. Every method runs to completion without blocking; the event
//! loop calls them (see `event_handler`), tests call them directly.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::{Interest, VsockBackend};
use super::muxer::Muxer;
use super::packet::{self, RxBuffer, EVENT_TRANSPORT_RESET, MAX_PAYLOAD};
use super::{EVENT_QUEUE, QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VSOCK_DEVICE_ID};
use crate::virtio::{
    read_config_bytes, InterruptStatus, VirtioDevice, VirtioError, VIRTIO_F_VERSION_1,
};
use crate::{guest_warn, Chain, GuestMemoryMmap, WarnBudget};

const QUEUE_MAX_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
const FEATURES: u64 = VIRTIO_F_VERSION_1;

/// Errors of the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved or does not fit a `sockaddr_vm`.
    #[error("guest CID {0} is reserved or out of range")]
    InvalidCid(u64),
    /// Creating a queue's notification EventFd failed.
    #[error("create a queue EventFd")]
    EventFd(#[source] io::Error),
    /// Accessing a virtqueue's rings failed.
    #[error("access virtqueue {queue}")]
    Queue {
        /// Queue index.
        queue: usize,
        /// Cause.
        #[source]
        source: virtio_queue::Error,
    },
    /// Raising the used-buffer interrupt failed.
    #[error("raise the used-buffer interrupt")]
    Interrupt(#[source] io::Error),
}

/// The vsock device's saved configuration. Its queues are saved with its
/// transport; connections are not saved: after a restore the VMM calls
/// [`Vsock::reset_transport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockState {
    /// The guest's context ID.
    pub guest_cid: u64,
}

struct Active {
    mem: Arc<GuestMemoryMmap>,
    queues: Vec<Queue>,
    interrupt: Arc<InterruptStatus>,
    warn: WarnBudget,
}

impl Active {
    fn add_used(&mut self, queue: usize, head: u16, len: u32) -> Result<(), VsockError> {
        let q = &mut self.queues[queue];
        if head >= q.size() {
            // The guest put a head index past its descriptor table in the
            // available ring: there is nothing to give back.
            guest_warn!(
                self.warn,
                "vsock: queue {queue}: head index {head} out of range"
            );
            return Ok(());
        }
        q.add_used(&*self.mem, head, len)
            .map_err(|source| VsockError::Queue { queue, source })
    }

    fn notify(&mut self, queue: usize) -> Result<(), VsockError> {
        let needed = self.queues[queue]
            .needs_notification(&*self.mem)
            .map_err(|source| VsockError::Queue { queue, source })?;
        if needed {
            self.interrupt
                .signal_used_queue()
                .map_err(VsockError::Interrupt)?;
        }
        Ok(())
    }
}

/// A virtio-vsock device with host side `B`.
pub struct Vsock<B: VsockBackend> {
    guest_cid: u64,
    backend: B,
    mux: Muxer<B::Stream>,
    queue_events: Vec<EventFd>,
    active: Option<Active>,
    reset_pending: bool,
    tx_throttled: bool,
    scratch: Box<[u8; MAX_PAYLOAD]>,
    warn: WarnBudget,
}

impl<B: VsockBackend> Vsock<B> {
    /// A device for a guest with context ID `guest_cid`.
    pub fn new(guest_cid: u64, backend: B) -> Result<Vsock<B>, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let queue_events = (0..QUEUE_MAX_SIZES.len())
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Vsock {
            guest_cid,
            backend,
            mux: Muxer::new(guest_cid),
            queue_events,
            active: None,
            reset_pending: false,
            tx_throttled: false,
            scratch: Box::new([0; MAX_PAYLOAD]),
            warn: WarnBudget::new(),
        })
    }

    /// The device's configuration.
    pub fn save(&self) -> VsockState {
        VsockState {
            guest_cid: self.guest_cid,
        }
    }

    /// A device with a saved configuration, not yet active: restoring its
    /// transport re-activates it.
    pub fn restore(backend: B, state: &VsockState) -> Result<Vsock<B>, VsockError> {
        Vsock::new(state.guest_cid, backend)
    }

    /// The guest's context ID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host side.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The host side, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.mux.len()
    }

    /// Whether the driver started the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Drops every connection and tells the guest with a
    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET event (as soon as it has posted an
    /// event buffer). Used after a snapshot restore.
    pub fn reset_transport(&mut self) -> Result<(), VsockError> {
        self.mux.clear();
        self.reset_pending = true;
        self.send_reset_event()
    }

    /// The guest posted event buffers.
    pub fn process_event_queue(&mut self) -> Result<(), VsockError> {
        self.send_reset_event()
    }

    fn send_reset_event(&mut self) -> Result<(), VsockError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mem = Arc::clone(&active.mem);
        let mut used = false;
        while self.reset_pending {
            let Some(chain) = active.queues[EVENT_QUEUE].pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let event = EVENT_TRANSPORT_RESET.to_le_bytes();
            let written = chain
                .writer(mem.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|mut w| {
                    w.write_all(&event).map_err(|e| e.to_string())?;
                    Ok(event.len() as u32)
                });
            match written {
                Ok(n) => {
                    self.reset_pending = false;
                    active.add_used(EVENT_QUEUE, head, n)?;
                }
                Err(e) => {
                    guest_warn!(self.warn, "vsock: unusable event buffer: {e}");
                    active.add_used(EVENT_QUEUE, head, 0)?;
                }
            }
            used = true;
        }
        if used {
            active.notify(EVENT_QUEUE)?;
        }
        Ok(())
    }

    /// The guest posted packets on the tx queue.
    pub fn process_tx_queue(&mut self) -> Result<(), VsockError> {
        self.run()
    }

    /// The guest posted rx buffers.
    pub fn process_rx_queue(&mut self) -> Result<(), VsockError> {
        self.run()
    }

    /// Moves everything that can move: guest packets to the host, then
    /// host data and replies to the guest, again while replies had
    /// throttled the tx queue and rx buffers freed it.
    fn run(&mut self) -> Result<(), VsockError> {
        self.take_host_requests();
        loop {
            self.tx_pass()?;
            self.rx_pass()?;
            if !self.tx_throttled || self.mux.resets_backlogged() {
                return Ok(());
            }
        }
    }

    fn tx_pass(&mut self) -> Result<(), VsockError> {
        let Vsock {
            active,
            mux,
            backend,
            scratch,
            warn,
            tx_throttled,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return Ok(());
        };
        let mem = Arc::clone(&active.mem);
        let mut used = false;
        *tx_throttled = false;
        loop {
            if mux.resets_backlogged() {
                *tx_throttled = true;
                break;
            }
            let Some(chain) = active.queues[TX_QUEUE].pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            match packet::read_tx(&mem, chain, scratch) {
                Ok(hdr) => mux.handle_tx(&hdr, &scratch[..hdr.len as usize], backend),
                Err(e) => guest_warn!(warn, "vsock: tx packet dropped: {}", Chain(&e)),
            }
            active.add_used(TX_QUEUE, head, 0)?;
            used = true;
        }
        if used {
            active.notify(TX_QUEUE)?;
        }
        Ok(())
    }

    fn rx_pass(&mut self) -> Result<(), VsockError> {
        let Vsock {
            active,
            mux,
            scratch,
            warn,
            ..
        } = self;
        let Some(active) = active.as_mut() else {
            return Ok(());
        };
        let mem = Arc::clone(&active.mem);
        let mut used = false;
        while mux.has_rx_work() {
            let Some(chain) = active.queues[RX_QUEUE].pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let buffer = match RxBuffer::new(&mem, chain) {
                Ok(buffer) => buffer,
                Err(e) => {
                    guest_warn!(warn, "vsock: rx buffer dropped: {}", Chain(&e));
                    active.add_used(RX_QUEUE, head, 0)?;
                    used = true;
                    continue;
                }
            };
            let capacity = buffer.payload_capacity();
            let Some((hdr, len)) = mux.next_rx(&mut scratch[..capacity]) else {
                active.queues[RX_QUEUE].go_to_previous_position();
                break;
            };
            let written = buffer.write(&hdr, &scratch[..len]).unwrap_or_else(|e| {
                guest_warn!(warn, "vsock: rx packet lost: {}", Chain(&e));
                0
            });
            active.add_used(RX_QUEUE, head, written)?;
            used = true;
        }
        if used {
            active.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    /// Events on a connection's host stream: `fd` and `token` as
    /// [`Vsock::interest`] gave them.
    pub fn process_stream_event(
        &mut self,
        fd: RawFd,
        token: u64,
        events: EventSet,
    ) -> Result<(), VsockError> {
        self.mux.stream_event(fd, token, events);
        self.run()
    }

    /// Events on one of the backend's descriptors.
    pub fn process_backend_event(&mut self, fd: RawFd, events: EventSet) -> Result<(), VsockError> {
        self.backend.process(fd, events);
        self.run()
    }

    /// Appends every descriptor the event loop should watch.
    pub fn interest(&self, out: &mut Vec<Interest>) {
        self.backend.interest(out);
        self.mux.interest(out);
    }

    fn take_host_requests(&mut self) {
        if self.active.is_none() {
            return;
        }
        while let Some(req) = self.backend.take_request() {
            self.mux.host_request(req);
        }
    }
}

impl<B: VsockBackend> VirtioDevice for Vsock<B> {
    fn device_type(&self) -> u32 {
        VSOCK_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        guest_warn!(
            self.warn,
            "vsock: config write of {} bytes at {offset:#x}",
            data.len()
        );
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<InterruptStatus>,
        features: u64,
    ) -> Result<(), VirtioError> {
        if self.active.is_some() {
            return Err(VirtioError::AlreadyActive);
        }
        if queues.len() != QUEUE_MAX_SIZES.len() {
            return Err(VirtioError::QueueCount {
                expected: QUEUE_MAX_SIZES.len(),
                got: queues.len(),
            });
        }
        if let Some(index) = queues.iter().position(|q| !q.ready()) {
            return Err(VirtioError::QueueNotReady(index));
        }
        if features & VIRTIO_F_VERSION_1 == 0 {
            return Err(VirtioError::LegacyDriver);
        }
        self.active = Some(Active {
            mem: Arc::new(mem),
            queues,
            interrupt,
            warn: WarnBudget::new(),
        });
        self.take_host_requests();
        if let Err(e) = self.send_reset_event() {
            log::error!("vsock: send the pending transport reset: {}", Chain(&e));
        }
        Ok(())
    }

    fn active_queues(&self) -> Option<&[Queue]> {
        self.active.as_ref().map(|a| a.queues.as_slice())
    }

    fn reset(&mut self) {
        self.active = None;
        self.mux.clear();
        self.reset_pending = false;
        self.tx_throttled = false;
        for evt in &self.queue_events {
            // Drop notifications of the old queues; EAGAIN means there were none.
            let _ = evt.read();
        }
    }
}
