//! A minimal i8042 keyboard controller: ports 0x60 (data) and 0x64
//! (status/command).
//!
//! Enough for Linux to find a controller with a keyboard port and no AUX
//! port, and to reboot through it: the reset command (0xfe on port 0x64, what
//! `reboot=k` sends) raises the `reset` [`EventFd`] given at construction.
//! The VMM watches that EventFd and ends the VM; an EventFd rather than a
//! callback, because the vCPU thread that runs this device must not run VM
//! teardown itself. No key is ever pressed: keyboard commands are answered
//! (ACK, self-test passed, ID) so that `atkbd` probes quickly; booting with
//! `i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd` skips even that.
//!
//! Put it on the port-I/O bus at [`I8042_BASE`] with length
//! [`I8042_PORTS`]: offset 0 is the data port, offset 4 the status/command
//! port, the ports between read 0 and ignore writes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::{guest_warn, BusDevice, Chain, Interrupt, WarnBudget};

/// Port-I/O base of the controller.
pub const I8042_BASE: u64 = 0x60;
/// Ports from the base up to and including the command port.
pub const I8042_PORTS: u64 = 5;
/// Bytes the controller's output buffer holds.
pub const OUTPUT_CAPACITY: usize = 16;

const DATA_PORT: u64 = 0;
const COMMAND_PORT: u64 = 4;

// Status register.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;
const STATUS_SAVED_BITS: u8 = STATUS_SYSTEM | STATUS_COMMAND;

// Controller configuration byte ("command byte").
const CTR_KBD_INT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_DEFAULT: u8 = CTR_KBD_INT | CTR_SYSTEM;

// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT: u8 = 0xc0;
const CMD_READ_OUTPUT: u8 = 0xd0;
const CMD_WRITE_OUTPUT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET: u8 = 0xfe;
/// Commands whose parameter byte follows on the data port.
const CMDS_WITH_PARAM: [u8; 5] = [
    CMD_WRITE_CTR,
    CMD_WRITE_OUTPUT,
    CMD_WRITE_KBD_BUFFER,
    CMD_WRITE_AUX_BUFFER,
    CMD_WRITE_AUX,
];

// Replies.
const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// "Clock line stuck low": tells Linux there is no AUX port.
const AUX_TEST_ABSENT: u8 = 0x01;
const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ID: [u8; 2] = [0xab, 0x83];
const KBD_CMD_RESET: u8 = 0xff;
const KBD_CMD_GET_ID: u8 = 0xf2;
const KBD_CMD_ECHO: u8 = 0xee;

/// Errors of the i8042.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// Raising the reset EventFd failed.
    #[error("signal the VM reset")]
    SignalReset(#[source] io::Error),
    /// Raising the keyboard interrupt failed.
    #[error("raise the keyboard interrupt")]
    Interrupt(#[source] io::Error),
    /// A saved state's output buffer is larger than the controller's.
    #[error("saved i8042 state holds {0} output bytes, more than {OUTPUT_CAPACITY}")]
    OutputOverflow(usize),
    /// A saved state waits for the parameter of a command that takes none.
    #[error("saved i8042 state waits for a parameter of command {0:#04x}, which takes none")]
    PendingCommand(u8),
}

/// The controller's saved state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// The configuration byte.
    pub control: u8,
    /// The status bits that are not derived (system flag, last-write-was-command).
    pub status: u8,
    /// A command waiting for its parameter byte.
    pub pending_command: Option<u8>,
    /// Bytes waiting for the guest on the data port.
    pub output: Vec<u8>,
}

/// The i8042 controller.
pub struct I8042 {
    reset: EventFd,
    interrupt: Arc<dyn Interrupt>,
    control: u8,
    status: u8,
    pending_command: Option<u8>,
    output: VecDeque<u8>,
    warn: WarnBudget,
}

impl I8042 {
    /// A controller after power-on: `reset` is raised when the guest asks for
    /// a reset, `interrupt` is the keyboard line (IRQ 1).
    pub fn new(reset: EventFd, interrupt: Arc<dyn Interrupt>) -> I8042 {
        I8042 {
            reset,
            interrupt,
            control: CTR_DEFAULT,
            status: STATUS_SYSTEM,
            pending_command: None,
            output: VecDeque::with_capacity(OUTPUT_CAPACITY),
            warn: WarnBudget::new(),
        }
    }

    /// The controller's state.
    pub fn save(&self) -> I8042State {
        I8042State {
            control: self.control,
            status: self.status,
            pending_command: self.pending_command,
            output: self.output.iter().copied().collect(),
        }
    }

    /// A controller in a saved state.
    pub fn restore(
        reset: EventFd,
        interrupt: Arc<dyn Interrupt>,
        state: &I8042State,
    ) -> Result<I8042, I8042Error> {
        if state.output.len() > OUTPUT_CAPACITY {
            return Err(I8042Error::OutputOverflow(state.output.len()));
        }
        if let Some(cmd) = state
            .pending_command
            .filter(|c| !CMDS_WITH_PARAM.contains(c))
        {
            return Err(I8042Error::PendingCommand(cmd));
        }
        let mut dev = I8042::new(reset, interrupt);
        dev.control = state.control;
        dev.status = state.status & STATUS_SAVED_BITS;
        dev.pending_command = state.pending_command;
        dev.output.extend(&state.output);
        Ok(dev)
    }

    fn status(&self) -> u8 {
        let full = if self.output.is_empty() {
            0
        } else {
            STATUS_OUTPUT_FULL
        };
        self.status | STATUS_UNLOCKED | full
    }

    fn read_data(&mut self) -> u8 {
        self.output.pop_front().unwrap_or(0)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), I8042Error> {
        for &b in bytes {
            if self.output.len() == OUTPUT_CAPACITY {
                guest_warn!(self.warn, "i8042: output buffer full, byte {b:#04x} lost");
                continue;
            }
            self.output.push_back(b);
            if self.control & CTR_KBD_INT != 0 {
                self.interrupt.trigger().map_err(I8042Error::Interrupt)?;
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: u8) -> Result<(), I8042Error> {
        self.status |= STATUS_COMMAND;
        match cmd {
            CMD_READ_CTR => self.push(&[self.control])?,
            c if CMDS_WITH_PARAM.contains(&c) => self.pending_command = Some(c),
            CMD_AUX_DISABLE => self.control |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.control &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.push(&[AUX_TEST_ABSENT])?,
            CMD_SELF_TEST => {
                self.status |= STATUS_SYSTEM;
                self.push(&[SELF_TEST_OK])?;
            }
            CMD_KBD_TEST => self.push(&[PORT_TEST_OK])?,
            CMD_KBD_DISABLE => self.control |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.control &= !CTR_KBD_DISABLE,
            CMD_READ_INPUT => self.push(&[0])?,
            CMD_READ_OUTPUT => self.push(&[0x01])?,
            CMD_RESET => self.signal_reset()?,
            // Pulses of other output lines, and commands Linux does not use.
            _ => {}
        }
        Ok(())
    }

    fn data(&mut self, byte: u8) -> Result<(), I8042Error> {
        self.status &= !STATUS_COMMAND;
        match self.pending_command.take() {
            Some(CMD_WRITE_CTR) => self.control = byte,
            // Bit 0 of the output port is the CPU reset line, active low.
            Some(CMD_WRITE_OUTPUT) if byte & 0x01 == 0 => self.signal_reset()?,
            Some(CMD_WRITE_OUTPUT) => {}
            Some(CMD_WRITE_KBD_BUFFER) => self.push(&[byte])?,
            // There is no AUX device: its traffic goes nowhere, so its probe
            // fails fast instead of timing out.
            Some(_) => {}
            None => self.keyboard_command(byte)?,
        }
        Ok(())
    }

    fn keyboard_command(&mut self, byte: u8) -> Result<(), I8042Error> {
        match byte {
            KBD_CMD_RESET => self.push(&[KBD_ACK, KBD_BAT_OK]),
            KBD_CMD_GET_ID => self.push(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_CMD_ECHO => self.push(&[KBD_CMD_ECHO]),
            _ => self.push(&[KBD_ACK]),
        }
    }

    fn signal_reset(&mut self) -> Result<(), I8042Error> {
        log::info!("i8042: guest asked for a reset");
        self.reset.write(1).map_err(I8042Error::SignalReset)
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let [byte] = data else {
            guest_warn!(
                self.warn,
                "i8042: bad read of {} bytes at {offset:#x}",
                data.len()
            );
            return;
        };
        *byte = match offset {
            DATA_PORT => self.read_data(),
            COMMAND_PORT => self.status(),
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let &[byte] = data else {
            guest_warn!(
                self.warn,
                "i8042: bad write of {} bytes at {offset:#x}",
                data.len()
            );
            return;
        };
        let result = match offset {
            DATA_PORT => self.data(byte),
            COMMAND_PORT => self.command(byte),
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::error!("i8042: {}", Chain(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CountingInterrupt;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn controller() -> (I8042, EventFd, Arc<CountingInterrupt>) {
        let reset = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(CountingInterrupt::default());
        (
            I8042::new(reset.try_clone().unwrap(), irq.clone()),
            reset,
            irq,
        )
    }

    fn inb(dev: &mut I8042, port: u64) -> u8 {
        let mut b = [0u8];
        dev.read(port, &mut b);
        b[0]
    }

    #[test]
    fn status_reads_track_the_output_buffer() {
        let (mut dev, _, _) = controller();
        let status = inb(&mut dev, COMMAND_PORT);
        assert_eq!(status & STATUS_OUTPUT_FULL, 0);
        assert_eq!(status & 0x02, 0, "input buffer is never busy");
        dev.write(COMMAND_PORT, &[CMD_SELF_TEST]);
        assert_ne!(inb(&mut dev, COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(inb(&mut dev, DATA_PORT), SELF_TEST_OK);
        assert_eq!(inb(&mut dev, COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn linux_probe_sequence() {
        let (mut dev, reset, _) = controller();
        // Read the configuration byte, clear the interrupt bits, write it back.
        dev.write(COMMAND_PORT, &[CMD_READ_CTR]);
        let ctr = inb(&mut dev, DATA_PORT);
        assert_eq!(ctr, CTR_DEFAULT);
        dev.write(COMMAND_PORT, &[CMD_WRITE_CTR]);
        dev.write(DATA_PORT, &[ctr & !CTR_KBD_INT]);
        dev.write(COMMAND_PORT, &[CMD_READ_CTR]);
        assert_eq!(inb(&mut dev, DATA_PORT), ctr & !CTR_KBD_INT);
        // Keyboard port test passes, the AUX test says "absent".
        dev.write(COMMAND_PORT, &[CMD_KBD_TEST]);
        assert_eq!(inb(&mut dev, DATA_PORT), PORT_TEST_OK);
        dev.write(COMMAND_PORT, &[CMD_AUX_TEST]);
        assert_eq!(inb(&mut dev, DATA_PORT), AUX_TEST_ABSENT);
        // atkbd: reset and identify.
        dev.write(DATA_PORT, &[KBD_CMD_RESET]);
        assert_eq!(inb(&mut dev, DATA_PORT), KBD_ACK);
        assert_eq!(inb(&mut dev, DATA_PORT), KBD_BAT_OK);
        dev.write(DATA_PORT, &[KBD_CMD_GET_ID]);
        let id: Vec<u8> = (0..3).map(|_| inb(&mut dev, DATA_PORT)).collect();
        assert_eq!(id, [KBD_ACK, KBD_ID[0], KBD_ID[1]]);
        assert!(reset.read().is_err(), "no reset during the probe");
    }

    #[test]
    fn reset_command_signals_the_vmm() {
        let (mut dev, reset, _) = controller();
        dev.write(COMMAND_PORT, &[CMD_RESET]);
        assert_eq!(reset.read().unwrap(), 1);
        // Pulling the reset line through the output port works too.
        dev.write(COMMAND_PORT, &[CMD_WRITE_OUTPUT]);
        dev.write(DATA_PORT, &[0x00]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn keyboard_interrupt_follows_the_configuration_byte() {
        let (mut dev, _, irq) = controller();
        dev.write(DATA_PORT, &[KBD_CMD_ECHO]);
        assert_eq!(irq.count(), 1);
        dev.write(COMMAND_PORT, &[CMD_WRITE_CTR]);
        dev.write(DATA_PORT, &[0]);
        dev.write(DATA_PORT, &[KBD_CMD_ECHO]);
        assert_eq!(irq.count(), 1);
    }

    #[test]
    fn garbage_is_ignored_and_output_is_bounded() {
        let (mut dev, reset, _) = controller();
        dev.write(COMMAND_PORT, &[1, 2]);
        dev.write(2, &[CMD_RESET]);
        let mut wide = [0xffu8; 4];
        dev.read(DATA_PORT, &mut wide);
        assert_eq!(wide, [0; 4]);
        for _ in 0..100 {
            dev.write(DATA_PORT, &[0x42]);
        }
        assert_eq!(dev.save().output.len(), OUTPUT_CAPACITY);
        assert!(reset.read().is_err());
    }

    #[test]
    fn save_mutate_restore_compare() {
        let (mut dev, _, _) = controller();
        dev.write(COMMAND_PORT, &[CMD_KBD_DISABLE]);
        dev.write(DATA_PORT, &[KBD_CMD_GET_ID]);
        dev.write(COMMAND_PORT, &[CMD_WRITE_CTR]);
        let saved = dev.save();
        assert_eq!(saved.pending_command, Some(CMD_WRITE_CTR));
        let json = serde_json::to_string(&saved).unwrap();

        dev.write(DATA_PORT, &[0]);
        inb(&mut dev, DATA_PORT);
        assert_ne!(dev.save(), saved);

        let back: I8042State = serde_json::from_str(&json).unwrap();
        let (_, reset, irq) = controller();
        let mut r = I8042::restore(reset, irq, &back).unwrap();
        assert_eq!(r.save(), saved);
        assert_eq!(inb(&mut r, DATA_PORT), KBD_ACK);
        r.write(DATA_PORT, &[0x33]);
        assert_eq!(r.save().control, 0x33);
    }

    #[test]
    fn restore_rejects_invalid_state() {
        let (dev, _, _) = controller();
        let good = dev.save();
        let evt = || EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = || Arc::new(CountingInterrupt::default()) as Arc<dyn Interrupt>;
        let big = I8042State {
            output: vec![0; OUTPUT_CAPACITY + 1],
            ..good.clone()
        };
        assert!(matches!(
            I8042::restore(evt(), irq(), &big),
            Err(I8042Error::OutputOverflow(17))
        ));
        let cmd = I8042State {
            pending_command: Some(CMD_SELF_TEST),
            ..good
        };
        assert!(matches!(
            I8042::restore(evt(), irq(), &cmd),
            Err(I8042Error::PendingCommand(0xaa))
        ));
    }
}
