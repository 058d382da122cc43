//! The 16550 UART at 0x3f8 (COM1), 8 ports on the port-I/O bus.
//!
//! The register state machine is vm-superio's `Serial`; this module adapts
//! it to crvmm: guest output goes to any [`Write`] (a log file, stdout), host
//! input is fed with [`Serial::enqueue_input`], and the interrupt goes
//! through an [`Interrupt`]. When the guest has read all queued input, the
//! optional `input_drained` [`EventFd`] is raised, so a VMM that stopped
//! reading stdin because the FIFO was full knows when to resume.

use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as UartError, SerialEvents, SerialState as UartState};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::{guest_warn, BusDevice, Interrupt, WarnBudget};

/// Port-I/O base of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Ports a UART decodes.
pub const SERIAL_PORTS: u64 = 8;
/// Bytes of input the UART holds before the guest reads them.
pub const FIFO_SIZE: usize = 64;

const IER_VALID_BITS: u8 = 0x0f;
const LSR_DATA_READY: u8 = 0x01;

/// Errors of the UART.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// Raising the interrupt failed.
    #[error("raise the serial interrupt")]
    Interrupt(#[source] io::Error),
    /// Writing guest output failed.
    #[error("write serial output")]
    Output(#[source] io::Error),
    /// The input FIFO is full.
    #[error("serial input FIFO is full")]
    InputFull,
    /// A saved state holds more input than the FIFO can.
    #[error("saved serial state holds {0} input bytes, more than the FIFO's {FIFO_SIZE}")]
    FifoOverflow(usize),
    /// A saved state's interrupt-enable register has reserved bits set.
    #[error("saved serial state has reserved IER bits: {0:#04x}")]
    ReservedIer(u8),
    /// A saved state's line status disagrees with its input FIFO.
    #[error("saved serial state: data-ready bit {data_ready} with {queued} queued bytes")]
    LineStatus {
        /// Whether LSR's data-ready bit is set.
        data_ready: bool,
        /// Bytes in the input FIFO.
        queued: usize,
    },
}

impl From<UartError<io::Error>> for SerialError {
    fn from(e: UartError<io::Error>) -> Self {
        match e {
            UartError::Trigger(e) => SerialError::Interrupt(e),
            UartError::IOError(e) => SerialError::Output(e),
            UartError::FullFifo => SerialError::InputFull,
        }
    }
}

/// The UART's saved registers and queued input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt enable register.
    pub interrupt_enable: u8,
    /// Interrupt identification register.
    pub interrupt_identification: u8,
    /// Line control register.
    pub line_control: u8,
    /// Line status register.
    pub line_status: u8,
    /// Modem control register.
    pub modem_control: u8,
    /// Modem status register.
    pub modem_status: u8,
    /// Scratch register.
    pub scratch: u8,
    /// Input the guest has not read yet.
    pub input: Vec<u8>,
}

/// What a UART is built from.
pub struct SerialArgs<W> {
    /// The UART's interrupt line (IRQ 4 for COM1).
    pub interrupt: Arc<dyn Interrupt>,
    /// Where guest output goes.
    pub out: W,
    /// Raised when the guest has read all queued input (optional).
    pub input_drained: Option<EventFd>,
}

/// Adapts an [`Interrupt`] to vm-superio's [`Trigger`].
struct Line(Arc<dyn Interrupt>);

impl Trigger for Line {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// Raises `input_drained` when the guest empties the input FIFO.
struct Drained(Option<EventFd>);

impl SerialEvents for Drained {
    fn buffer_read(&self) {}

    fn out_byte(&self) {}

    fn tx_lost_byte(&self) {}

    fn in_buffer_empty(&self) {
        if let Some(evt) = &self.0 {
            if let Err(e) = evt.write(1) {
                log::warn!("serial: cannot signal drained input: {e}");
            }
        }
    }
}

/// A 16550 UART.
pub struct Serial<W: Write> {
    uart: vm_superio::Serial<Line, Drained, W>,
    warn: WarnBudget,
}

impl<W: Write> Serial<W> {
    /// A UART in its power-on state.
    pub fn new(args: SerialArgs<W>) -> Serial<W> {
        let uart = vm_superio::Serial::with_events(
            Line(args.interrupt),
            Drained(args.input_drained),
            args.out,
        );
        Serial {
            uart,
            warn: WarnBudget::new(),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// FIFO (the caller keeps the rest and retries after `input_drained`).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> Result<usize, SerialError> {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return Ok(0);
        }
        Ok(self.uart.enqueue_raw_bytes(&bytes[..room])?)
    }

    /// Bytes of input the FIFO can still take.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// The output writer.
    pub fn output(&self) -> &W {
        self.uart.writer()
    }

    /// The UART's registers and queued input.
    pub fn save(&self) -> SerialState {
        let s = self.uart.state();
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            input: s.in_buffer,
        }
    }

    /// A UART in a saved state; raises the interrupt again if one was
    /// pending and enabled.
    pub fn restore(args: SerialArgs<W>, state: &SerialState) -> Result<Serial<W>, SerialError> {
        if state.input.len() > FIFO_SIZE {
            return Err(SerialError::FifoOverflow(state.input.len()));
        }
        if state.interrupt_enable & !IER_VALID_BITS != 0 {
            return Err(SerialError::ReservedIer(state.interrupt_enable));
        }
        let data_ready = state.line_status & LSR_DATA_READY != 0;
        if data_ready == state.input.is_empty() {
            return Err(SerialError::LineStatus {
                data_ready,
                queued: state.input.len(),
            });
        }
        let uart_state = UartState {
            baud_divisor_low: state.baud_divisor_low,
            baud_divisor_high: state.baud_divisor_high,
            interrupt_enable: state.interrupt_enable,
            interrupt_identification: state.interrupt_identification,
            line_control: state.line_control,
            line_status: state.line_status,
            modem_control: state.modem_control,
            modem_status: state.modem_status,
            scratch: state.scratch,
            in_buffer: state.input.clone(),
        };
        let uart = vm_superio::Serial::from_state(
            &uart_state,
            Line(args.interrupt),
            Drained(args.input_drained),
            args.out,
        )?;
        Ok(Serial {
            uart,
            warn: WarnBudget::new(),
        })
    }
}

impl<W: Write + Send> BusDevice for Serial<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match (u8::try_from(offset), data) {
            (Ok(off), [byte]) if u64::from(off) < SERIAL_PORTS => *byte = self.uart.read(off),
            (_, data) => {
                guest_warn!(
                    self.warn,
                    "serial: bad read of {} bytes at {offset:#x}",
                    data.len()
                )
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (u8::try_from(offset), data) {
            (Ok(off), [byte]) if u64::from(off) < SERIAL_PORTS => {
                if let Err(e) = self.uart.write(off, *byte) {
                    guest_warn!(self.warn, "serial: {}", SerialError::from(e));
                }
            }
            _ => guest_warn!(
                self.warn,
                "serial: bad write of {} bytes at {offset:#x}",
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CountingInterrupt, SharedBuffer};

    const THR: u64 = 0;
    const RBR: u64 = 0;
    const IER: u64 = 1;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;
    const IER_RDA: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;

    fn uart() -> (Serial<SharedBuffer>, Arc<CountingInterrupt>, SharedBuffer) {
        let irq = Arc::new(CountingInterrupt::default());
        let out = SharedBuffer::default();
        let args = SerialArgs {
            interrupt: irq.clone(),
            out: out.clone(),
            input_drained: None,
        };
        (Serial::new(args), irq, out)
    }

    fn inb(s: &mut Serial<SharedBuffer>, port: u64) -> u8 {
        let mut b = [0u8];
        s.read(port, &mut b);
        b[0]
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let (mut s, _, out) = uart();
        for b in b"hello\n" {
            s.write(THR, &[*b]);
        }
        assert_eq!(out.contents(), b"hello\n");
        assert_ne!(inb(&mut s, LSR) & LSR_THR_EMPTY, 0);
    }

    #[test]
    fn host_input_is_read_from_rbr_with_line_status() {
        let (mut s, irq, _) = uart();
        assert_eq!(inb(&mut s, LSR) & LSR_DATA_READY, 0);
        assert_eq!(s.enqueue_input(b"ok").unwrap(), 2);
        // No interrupt while IER masks it.
        assert_eq!(irq.count(), 0);
        assert_ne!(inb(&mut s, LSR) & LSR_DATA_READY, 0);
        assert_eq!(inb(&mut s, RBR), b'o');
        assert_ne!(inb(&mut s, LSR) & LSR_DATA_READY, 0);
        assert_eq!(inb(&mut s, RBR), b'k');
        assert_eq!(inb(&mut s, LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn input_raises_the_interrupt_once_ier_enables_it() {
        let (mut s, irq, _) = uart();
        s.write(IER, &[IER_RDA]);
        assert_eq!(irq.count(), 0);
        s.enqueue_input(b"x").unwrap();
        assert_eq!(irq.count(), 1);
        assert_eq!(inb(&mut s, RBR), b'x');
    }

    #[test]
    fn fifo_takes_only_what_fits_and_signals_drain() {
        let irq = Arc::new(CountingInterrupt::default());
        let drained = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let args = SerialArgs {
            interrupt: irq,
            out: SharedBuffer::default(),
            input_drained: Some(drained.try_clone().unwrap()),
        };
        let mut s = Serial::new(args);
        assert_eq!(s.enqueue_input(&[b'a'; 100]).unwrap(), FIFO_SIZE);
        assert_eq!(s.enqueue_input(b"b").unwrap(), 0);
        assert!(drained.read().is_err(), "not drained yet");
        for _ in 0..FIFO_SIZE {
            inb(&mut s, RBR);
        }
        assert_eq!(drained.read().unwrap(), 1);
        assert_eq!(s.input_capacity(), FIFO_SIZE);
    }

    #[test]
    fn odd_accesses_are_ignored() {
        let (mut s, _, out) = uart();
        s.write(THR, b"ab");
        s.write(8, b"a");
        s.write(u64::MAX, b"a");
        let mut two = [0xffu8; 2];
        s.read(LSR, &mut two);
        assert_eq!(two, [0, 0]);
        assert!(out.contents().is_empty());
    }

    #[test]
    fn save_mutate_restore_compare() {
        let (mut s, _, _) = uart();
        s.write(LCR, &[0x83]);
        s.write(0, &[0x01]); // divisor low, DLAB set
        s.write(LCR, &[0x03]);
        s.write(SCR, &[0x5a]);
        s.write(IER, &[IER_RDA]);
        s.enqueue_input(b"queued").unwrap();
        let saved = s.save();
        let json = serde_json::to_string(&saved).unwrap();

        // Mutate the live device; the saved state must not follow.
        s.write(SCR, &[0]);
        inb(&mut s, RBR);
        assert_ne!(s.save(), saved);

        let irq = Arc::new(CountingInterrupt::default());
        let args = SerialArgs {
            interrupt: irq.clone(),
            out: SharedBuffer::default(),
            input_drained: None,
        };
        let back: SerialState = serde_json::from_str(&json).unwrap();
        let mut r = Serial::restore(args, &back).unwrap();
        assert_eq!(r.save(), saved);
        assert_eq!(irq.count(), 1, "pending RX interrupt raised again");
        assert_eq!(inb(&mut r, SCR), 0x5a);
        assert_eq!(inb(&mut r, RBR), b'q');
    }

    #[test]
    fn restore_rejects_inconsistent_state() {
        let args = || SerialArgs {
            interrupt: Arc::new(CountingInterrupt::default()) as Arc<dyn Interrupt>,
            out: SharedBuffer::default(),
            input_drained: None,
        };
        let good = uart().0.save();
        let over = SerialState {
            input: vec![0; FIFO_SIZE + 1],
            line_status: 0x61,
            ..good.clone()
        };
        assert!(matches!(
            Serial::restore(args(), &over),
            Err(SerialError::FifoOverflow(65))
        ));
        let ier = SerialState {
            interrupt_enable: 0xf0,
            ..good.clone()
        };
        assert!(matches!(
            Serial::restore(args(), &ier),
            Err(SerialError::ReservedIer(0xf0))
        ));
        let lsr = SerialState {
            input: vec![1],
            ..good
        };
        assert!(matches!(
            Serial::restore(args(), &lsr),
            Err(SerialError::LineStatus { .. })
        ));
    }
}
