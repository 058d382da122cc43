//! A one-port device a guest writes to end the VM with an exit code, like
//! QEMU's isa-debug-exit. Payload guests use it; Linux guests do not see it.

use std::sync::{Arc, Mutex};

use crvmm_devices::BusDevice;
use vmm_sys_util::eventfd::EventFd;

/// The port (0xf4, as QEMU's isa-debug-exit).
pub const DEBUG_EXIT_PORT: u64 = 0xf4;

/// Records the first code written and signals the VMM's exit event.
pub struct DebugExit {
    code: Arc<Mutex<Option<u32>>>,
    exit_evt: EventFd,
}

impl DebugExit {
    /// A device that writes `exit_evt` and stores the code in `code`.
    pub fn new(code: Arc<Mutex<Option<u32>>>, exit_evt: EventFd) -> DebugExit {
        DebugExit { code, exit_evt }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let mut code = self.code.lock().expect("debug exit lock");
        if code.is_none() {
            *code = Some(u32::from_le_bytes(bytes));
            let _ = self.exit_evt.write(1);
        }
    }
}
