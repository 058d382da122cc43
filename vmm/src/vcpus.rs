//! One thread per vCPU, each an explicit state machine:
//!
//! ```text
//!            pause            resume
//! Running ----------> Paused --------> Running
//!    |                  |
//!    | guest shutdown,  | stop
//!    | error, stop      v
//!    +-------------> Exited(reason)
//! ```
//!
//! The controller asks for a state and kicks the thread out of `KVM_RUN`
//! with a real-time signal until it acknowledges, so a signal that lands just
//! before the thread enters the guest is never lost.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crvmm_devices::bus::Bus;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::vstate::vcpu::{Vcpu, VcpuEvent, VcpuState as VcpuSnapshot};

/// The state of one vCPU thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuState {
    /// In or about to enter `KVM_RUN`.
    Running,
    /// Parked until resumed or stopped.
    Paused,
    /// Finished for good.
    Exited(ExitReason),
}

/// Why a vCPU (and so the VM) stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset or shut down.
    GuestShutdown,
    /// The guest halted with interrupts off (nothing can wake it).
    GuestHalted,
    /// The VMM asked it to stop.
    Stopped,
    /// Running it failed.
    Error(String),
}

/// Errors of vCPU control.
#[derive(Debug, thiserror::Error)]
pub enum VcpusError {
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
    /// The thread could not be started.
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    /// Saving a paused vCPU's state failed.
    #[error("cannot save the state of vCPU {index}: {reason}")]
    Save {
        /// The vCPU.
        index: u8,
        /// Why.
        reason: String,
    },
    /// A vCPU did not reach the requested state in time.
    #[error("vCPU {index} did not become {wanted} within {timeout:?} (it is {actual:?})")]
    Timeout {
        /// The vCPU.
        index: u8,
        /// The state asked for.
        wanted: &'static str,
        /// How long we waited.
        timeout: Duration,
        /// Where it stands.
        actual: VcpuState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Run,
    Pause,
    /// Save the state (only asked of a paused vCPU), then stay paused.
    Save,
    Stop,
}

/// What the controller and the vCPU thread share.
struct Inner {
    request: Request,
    state: VcpuState,
    saved: Option<Result<VcpuSnapshot, String>>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
}

/// The controller's handle on one vCPU thread.
pub struct VcpuHandle {
    index: u8,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks vCPU threads out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Starts a thread running `vcpu`. `exit_evt` is written when the vCPU exits
/// on its own (guest shutdown or error), so the VMM's event loop learns of it.
pub fn spawn(
    mut vcpu: Vcpu,
    pio: Bus,
    mmio: Bus,
    exit_evt: EventFd,
) -> Result<VcpuHandle, VcpusError> {
    register_signal_handler(kick_signal(), kick_handler).map_err(VcpusError::SignalHandler)?;
    let index = vcpu.index();
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            request: Request::Run,
            state: VcpuState::Running,
            saved: None,
        }),
        changed: Condvar::new(),
    });
    let thread_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let reason = run_loop(&mut vcpu, &pio, &mmio, &thread_shared);
            let own = reason != ExitReason::Stopped;
            set_state(&thread_shared, VcpuState::Exited(reason));
            if own {
                let _ = exit_evt.write(1);
            }
        })
        .map_err(|e| VcpusError::Spawn(index, e))?;
    Ok(VcpuHandle {
        index,
        shared,
        thread: Some(thread),
    })
}

fn set_state(shared: &Shared, state: VcpuState) {
    let mut guard = shared.inner.lock().expect("vcpu state lock");
    guard.state = state;
    shared.changed.notify_all();
}

fn run_loop(vcpu: &mut Vcpu, pio: &Bus, mmio: &Bus, shared: &Shared) -> ExitReason {
    loop {
        // Honour pause and stop requests between guest entries.
        {
            let mut guard = shared.inner.lock().expect("vcpu state lock");
            loop {
                match guard.request {
                    Request::Run => {
                        if guard.state != VcpuState::Running {
                            guard.state = VcpuState::Running;
                            shared.changed.notify_all();
                        }
                        break;
                    }
                    Request::Stop => return ExitReason::Stopped,
                    Request::Save => {
                        let saved = vcpu.save_state().map_err(|e| crate::error_chain(&e));
                        guard.saved = Some(saved);
                        guard.request = Request::Pause;
                        shared.changed.notify_all();
                    }
                    Request::Pause => {
                        if guard.state != VcpuState::Paused {
                            guard.state = VcpuState::Paused;
                            shared.changed.notify_all();
                        }
                        guard = shared.changed.wait(guard).expect("vcpu state lock");
                    }
                }
            }
        }
        match vcpu.run_once(pio, mmio) {
            Ok(VcpuEvent::Handled | VcpuEvent::Interrupted) => {}
            Ok(VcpuEvent::Shutdown) => return ExitReason::GuestShutdown,
            Ok(VcpuEvent::Halted) => return ExitReason::GuestHalted,
            Err(e) => {
                return ExitReason::Error(format!(
                    "vCPU {}: {}",
                    vcpu.index(),
                    crate::error_chain(&e)
                ))
            }
        }
    }
}

impl VcpuHandle {
    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The thread's current state.
    pub fn state(&self) -> VcpuState {
        self.shared
            .inner
            .lock()
            .expect("vcpu state lock")
            .state
            .clone()
    }

    /// Asks the vCPU to park and waits until it has (or has exited).
    pub fn pause(&self, timeout: Duration) -> Result<(), VcpusError> {
        self.request(Request::Pause, "paused", timeout, |s| {
            matches!(s, VcpuState::Paused | VcpuState::Exited(_))
        })
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self, timeout: Duration) -> Result<(), VcpusError> {
        self.request(Request::Run, "running", timeout, |s| {
            matches!(s, VcpuState::Running | VcpuState::Exited(_))
        })
    }

    /// Reads the state of a paused vCPU, on its own thread.
    pub fn save(&self, timeout: Duration) -> Result<VcpuSnapshot, VcpusError> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.inner.lock().expect("vcpu state lock");
        if guard.state != VcpuState::Paused {
            return Err(VcpusError::Save {
                index: self.index,
                reason: format!("it is {:?}, not paused", guard.state),
            });
        }
        guard.saved = None;
        guard.request = Request::Save;
        self.shared.changed.notify_all();
        loop {
            if let Some(saved) = guard.saved.take() {
                return saved.map_err(|reason| VcpusError::Save {
                    index: self.index,
                    reason,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VcpusError::Timeout {
                    index: self.index,
                    wanted: "saved",
                    timeout,
                    actual: guard.state.clone(),
                });
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, deadline - now)
                .expect("vcpu state lock")
                .0;
        }
    }

    /// Stops the thread and joins it.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), VcpusError> {
        let result = self.request(Request::Stop, "exited", timeout, |s| {
            matches!(s, VcpuState::Exited(_))
        });
        if result.is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        result
    }

    fn request(
        &self,
        request: Request,
        wanted: &'static str,
        timeout: Duration,
        done: impl Fn(&VcpuState) -> bool,
    ) -> Result<(), VcpusError> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.inner.lock().expect("vcpu state lock");
        if !matches!(guard.state, VcpuState::Exited(_)) {
            guard.request = request;
        }
        self.shared.changed.notify_all();
        while !done(&guard.state) {
            let now = Instant::now();
            if now >= deadline {
                return Err(VcpusError::Timeout {
                    index: self.index,
                    wanted,
                    timeout,
                    actual: guard.state.clone(),
                });
            }
            if request != Request::Run {
                self.kick();
            }
            let wait = (deadline - now).min(Duration::from_millis(5));
            guard = self
                .shared
                .changed
                .wait_timeout(guard, wait)
                .expect("vcpu state lock")
                .0;
        }
        Ok(())
    }

    fn kick(&self) {
        if let Some(t) = &self.thread {
            let _ = t.kill(kick_signal());
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}
