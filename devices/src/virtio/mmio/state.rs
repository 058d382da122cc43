//! Saving and restoring a transport.

use serde::{Deserialize, Serialize};

use super::{
    copy_queue, lock, MmioError, MmioTransport, MmioTransportArgs, KNOWN_STATUS, STATUS_STEPS,
};
use crate::virtio::queue::{QueueError, QueueState};
use crate::virtio::{status, VIRTIO_F_VERSION_1};

/// The transport's registers and queues.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTransportState {
    /// Device status.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_select: u32,
    /// DriverFeaturesSel.
    pub driver_features_select: u32,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// QueueSel.
    pub queue_select: u32,
    /// Pending InterruptStatus bits.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// Every queue, with the device's progress once it is active.
    pub queues: Vec<QueueState>,
}

impl MmioTransport {
    /// The transport's registers and queues (the device's live queues once
    /// it is active).
    pub fn save(&self) -> MmioTransportState {
        let dev = lock(&self.device);
        let queues = match dev.active_queues() {
            Some(active) => active.iter().map(QueueState::of).collect(),
            None => self.queues.iter().map(QueueState::of).collect(),
        };
        MmioTransportState {
            status: self.status,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            driver_features: self.driver_features,
            queue_select: self.queue_select,
            interrupt_status: self.interrupt.status(),
            config_generation: self.interrupt.config_generation(),
            queues,
        }
    }

    /// A transport in a saved state, in front of a freshly built device;
    /// restarts the device if the driver had started it.
    pub fn restore(
        args: MmioTransportArgs,
        state: &MmioTransportState,
    ) -> Result<MmioTransport, MmioError> {
        let mut t = MmioTransport::new(args)?;
        if !reachable(state.status) {
            return Err(MmioError::Status(state.status));
        }
        let negotiated = state.status & status::FEATURES_OK != 0;
        if state.driver_features & !t.offered != 0
            || (negotiated && state.driver_features & VIRTIO_F_VERSION_1 == 0)
        {
            return Err(MmioError::Features {
                saved: state.driver_features,
                offered: t.offered,
            });
        }
        if state.queues.len() != t.max_sizes.len() {
            return Err(MmioError::QueueCount {
                saved: state.queues.len(),
                device: t.max_sizes.len(),
            });
        }
        for (index, (saved, &max)) in state.queues.iter().zip(&t.max_sizes).enumerate() {
            t.queues[index] = saved
                .restore(max, &t.mem)
                .map_err(|source| MmioError::Queue { index, source })?;
        }
        t.status = state.status;
        t.device_features_select = state.device_features_select;
        t.driver_features_select = state.driver_features_select;
        t.driver_features = state.driver_features;
        t.queue_select = state.queue_select;
        if t.running() {
            let queues = t
                .queues
                .iter()
                .enumerate()
                .map(|(index, q)| {
                    copy_queue(q).map_err(|e| MmioError::Queue {
                        index,
                        source: QueueError::Invalid(e),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            lock(&t.device)
                .activate(
                    t.mem.clone(),
                    queues,
                    t.interrupt.clone(),
                    t.driver_features,
                )
                .map_err(MmioError::Activate)?;
        }
        t.interrupt
            .restore(state.interrupt_status, state.config_generation)
            .map_err(MmioError::Interrupt)?;
        Ok(t)
    }
}

/// Whether a driver following the spec can reach `s`.
fn reachable(s: u32) -> bool {
    s & !KNOWN_STATUS == 0
        && STATUS_STEPS
            .iter()
            .all(|&(bit, needs)| s & bit == 0 || s & needs == needs)
}
