//! A 16550A UART, the serial port a PC has at COM1 (ports 0x3F8-0x3FF, IRQ 4).
//!
//! This module owns the UART's eight registers and its receive FIFO. It does
//! not know its port base or its IRQ number (`Machine` decides those), and it
//! does not read the host terminal: the run loop hands it input with
//! [`Serial::enqueue_input`]. Transmitted bytes go straight to an output sink,
//! so the transmitter is always empty and the guest never has to wait.
//!
//! The register map and bits follow the National Semiconductor PC16550D data
//! sheet. Where a detail is left open, bt86 does what QEMU's `serial` device
//! does, because QEMU is the reference for what a guest sees: the reset
//! values, the modem lines a connected terminal presents, and the interrupt
//! priorities.

use std::collections::VecDeque;
use std::io::Write;

use thiserror::Error;

use super::IrqLine;

// Register offsets from the port base. Offsets 0 and 1 are the divisor latch
// while LCR.DLAB is set; offset 2 reads IIR and writes FCR.

/// Receiver buffer (read) and transmitter holding register (write).
pub const DATA: u8 = 0;
/// Interrupt enable register.
pub const IER: u8 = 1;
/// Interrupt identification register (read).
pub const IIR: u8 = 2;
/// FIFO control register (write).
pub const FCR: u8 = 2;
/// Line control register.
pub const LCR: u8 = 3;
/// Modem control register.
pub const MCR: u8 = 4;
/// Line status register.
pub const LSR: u8 = 5;
/// Modem status register.
pub const MSR: u8 = 6;
/// Scratch register: eight bits of storage with no effect, used by drivers
/// to detect that a UART is present.
pub const SCR: u8 = 7;
/// Divisor latch, low byte (offset 0 while DLAB is set).
pub const DLL: u8 = 0;
/// Divisor latch, high byte (offset 1 while DLAB is set).
pub const DLM: u8 = 1;

/// IER: interrupt when received data is available.
pub const IER_RDA: u8 = 0x01;
/// IER: interrupt when the transmitter holding register is empty.
pub const IER_THRE: u8 = 0x02;
/// IER: interrupt on a receiver line status error (overrun).
pub const IER_RLS: u8 = 0x04;
/// IER: interrupt on a modem status change.
pub const IER_MS: u8 = 0x08;
const IER_MASK: u8 = 0x0F;

/// IIR: no interrupt pending (bit 0 is active-low).
pub const IIR_NONE: u8 = 0x01;
/// IIR: modem status changed (lowest priority).
pub const IIR_MS: u8 = 0x00;
/// IIR: transmitter holding register empty.
pub const IIR_THRE: u8 = 0x02;
/// IIR: received data available.
pub const IIR_RDA: u8 = 0x04;
/// IIR: receiver line status (highest priority).
pub const IIR_RLS: u8 = 0x06;
/// IIR bits 7:6, set while the FIFOs are enabled.
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

/// FCR: enable both FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive FIFO (self-clearing).
pub const FCR_CLEAR_RX: u8 = 0x02;
/// FCR: clear the transmit FIFO (self-clearing).
pub const FCR_CLEAR_TX: u8 = 0x04;
/// FCR bits that are remembered: enable, DMA mode, receive trigger level.
const FCR_STORED: u8 = 0xC9;

/// LCR: divisor latch access bit.
pub const LCR_DLAB: u8 = 0x80;
/// LCR value for 8 data bits, no parity, one stop bit.
pub const LCR_8N1: u8 = 0x03;

/// MCR: data terminal ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR: request to send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: user output 1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: user output 2; on a PC it gates the UART's interrupt onto the bus.
pub const MCR_OUT2: u8 = 0x08;
/// MCR: loopback mode.
pub const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1F;

/// LSR: data ready, at least one byte waits in the receiver.
pub const LSR_DR: u8 = 0x01;
/// LSR: overrun error, a received byte was lost.
pub const LSR_OE: u8 = 0x02;
/// LSR: transmitter holding register empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty (holding and shift registers).
pub const LSR_TEMT: u8 = 0x40;

/// MSR: clear to send.
pub const MSR_CTS: u8 = 0x10;
/// MSR: data set ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR: ring indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR: data carrier detect.
pub const MSR_DCD: u8 = 0x80;

/// The modem lines that a connected terminal presents: carrier, data set
/// ready and clear to send, as QEMU reports for a stdio backend.
const MSR_CONNECTED: u8 = MSR_DCD | MSR_DSR | MSR_CTS;

/// The divisor QEMU programs at reset: 115200 / 12 = 9600 baud.
const RESET_DIVISOR: u16 = 0x000C;

/// The 16550A's receive FIFO depth. With the FIFOs disabled the UART behaves
/// as a 16450 and holds a single received byte.
pub const FIFO_SIZE: usize = 16;

/// The complete state of a [`Serial`], as plain data for snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialState {
    /// Divisor latch, low byte.
    pub dll: u8,
    /// Divisor latch, high byte.
    pub dlm: u8,
    /// Interrupt enable register.
    pub ier: u8,
    /// The stored bits of the (write-only) FIFO control register.
    pub fcr: u8,
    /// Line control register.
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Scratch register.
    pub scr: u8,
    /// LSR.OE: an overrun happened and LSR has not been read since.
    pub overrun: bool,
    /// A transmitter-empty interrupt is pending (cleared by reading IIR
    /// while it is the reported cause, or by writing THR).
    pub thre_pending: bool,
    /// Bytes received and not yet read by the guest, oldest first.
    pub rx_fifo: Vec<u8>,
}

impl Default for SerialState {
    /// The state after a hardware reset, with QEMU's reset values.
    fn default() -> Self {
        SerialState {
            dll: RESET_DIVISOR as u8,
            dlm: (RESET_DIVISOR >> 8) as u8,
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: MCR_OUT2,
            scr: 0,
            overrun: false,
            thre_pending: false,
            rx_fifo: Vec::new(),
        }
    }
}

/// A snapshot that no 16550A could be in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SerialStateError {
    #[error("serial snapshot holds {len} received bytes but the FIFO holds at most {capacity} with FCR={fcr:#04x}; the snapshot is corrupt, take it again")]
    FifoOverfull {
        len: usize,
        capacity: usize,
        fcr: u8,
    },
}

/// A 16550A UART writing to `W` and driving the interrupt line `I`.
pub struct Serial<W: Write, I: IrqLine> {
    state: SerialState,
    rx_fifo: VecDeque<u8>,
    out: W,
    irq: I,
    /// Set after the first failed write to the sink, so the failure is
    /// logged once rather than for every byte. Not guest-visible state.
    output_failed: bool,
}

impl<W: Write, I: IrqLine> Serial<W, I> {
    /// A UART in its reset state.
    pub fn new(out: W, irq: I) -> Self {
        let mut serial = Serial {
            state: SerialState::default(),
            rx_fifo: VecDeque::new(),
            out,
            irq,
            output_failed: false,
        };
        serial.update_irq();
        serial
    }

    /// A UART resumed from a snapshot taken with [`Serial::state`].
    pub fn from_state(state: &SerialState, out: W, irq: I) -> Result<Self, SerialStateError> {
        let mut serial = Serial::new(out, irq);
        serial.restore(state)?;
        Ok(serial)
    }

    /// Puts the registers and FIFO back as `state` has them, keeping the
    /// output sink and the interrupt line. On error nothing changes.
    pub fn restore(&mut self, state: &SerialState) -> Result<(), SerialStateError> {
        let capacity = fifo_capacity(state.fcr);
        if state.rx_fifo.len() > capacity {
            return Err(SerialStateError::FifoOverfull {
                len: state.rx_fifo.len(),
                capacity,
                fcr: state.fcr,
            });
        }
        self.state = SerialState {
            rx_fifo: Vec::new(),
            ..state.clone()
        };
        self.rx_fifo = state.rx_fifo.iter().copied().collect();
        self.update_irq();
        Ok(())
    }

    /// The UART's complete state.
    pub fn state(&self) -> SerialState {
        SerialState {
            rx_fifo: self.rx_fifo.iter().copied().collect(),
            ..self.state.clone()
        }
    }

    /// The output sink.
    pub fn output(&self) -> &W {
        &self.out
    }

    /// The output sink, mutably (to swap files or drain a buffer).
    pub fn output_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The interrupt line.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The interrupt line, mutably.
    pub fn irq_mut(&mut self) -> &mut I {
        &mut self.irq
    }

    /// How many more received bytes the UART can hold now. In loopback mode
    /// the receiver is disconnected from the outside, so this is 0.
    pub fn rx_space(&self) -> usize {
        if self.state.mcr & MCR_LOOP != 0 {
            return 0;
        }
        fifo_capacity(self.state.fcr).saturating_sub(self.rx_fifo.len())
    }

    /// Hands bytes from the outside world (the host terminal) to the
    /// receiver and returns how many it took. The rest must be offered again
    /// once the guest has read some, because a real UART would drop them
    /// with an overrun error.
    pub fn enqueue_input(&mut self, data: &[u8]) -> usize {
        let taken = data.len().min(self.rx_space());
        self.rx_fifo.extend(&data[..taken]);
        if taken > 0 {
            self.update_irq();
        }
        taken
    }

    /// A guest `in` from the register at `offset` (0-7 from the port base).
    /// Offsets outside 0-7 read all-ones, as an unclaimed bus does.
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            DLL if dlab => self.state.dll,
            DLM if dlab => self.state.dlm,
            DATA => {
                let byte = self.rx_fifo.pop_front().unwrap_or(0);
                self.update_irq();
                byte
            }
            IER => self.state.ier,
            IIR => {
                let iir = self.pending_interrupt();
                // Reading IIR while it reports "transmitter empty" acknowledges
                // that interrupt (PC16550D data sheet, table IV).
                if iir == IIR_THRE {
                    self.state.thre_pending = false;
                    self.update_irq();
                }
                let fifo_bits = if self.state.fcr & FCR_ENABLE != 0 {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                iir | fifo_bits
            }
            LCR => self.state.lcr,
            MCR => self.state.mcr,
            LSR => {
                let lsr = self.line_status();
                // Reading LSR clears the error bits and the line status
                // interrupt they raise.
                self.state.overrun = false;
                self.update_irq();
                lsr
            }
            MSR => self.modem_status(),
            SCR => self.state.scr,
            _ => 0xFF,
        }
    }

    /// A guest `out` to the register at `offset` (0-7 from the port base).
    /// Writes to offsets outside 0-7 are ignored.
    pub fn write(&mut self, offset: u8, value: u8) {
        let dlab = self.state.lcr & LCR_DLAB != 0;
        match offset {
            DLL if dlab => self.state.dll = value,
            DLM if dlab => self.state.dlm = value,
            DATA => self.transmit(value),
            IER => {
                let old = self.state.ier;
                self.state.ier = value & IER_MASK;
                // Enabling the THRE interrupt while the transmitter is empty
                // (it always is here) raises it at once; drivers rely on this
                // to start transmission from their interrupt handler.
                if (old ^ self.state.ier) & IER_THRE != 0 {
                    self.state.thre_pending = self.state.ier & IER_THRE != 0;
                }
            }
            FCR => {
                // Changing the enable bit resets both FIFOs (data sheet, FCR bit 0).
                if (value ^ self.state.fcr) & FCR_ENABLE != 0 || value & FCR_CLEAR_RX != 0 {
                    self.rx_fifo.clear();
                }
                // The transmit FIFO is always empty here, so FCR_CLEAR_TX has
                // nothing to clear.
                self.state.fcr = value & FCR_STORED;
            }
            LCR => self.state.lcr = value,
            MCR => self.state.mcr = value & MCR_MASK,
            LSR | MSR => {
                // Both are read-only status registers; the data sheet leaves
                // writes to them for factory testing only.
            }
            SCR => self.state.scr = value,
            _ => {}
        }
        self.update_irq();
    }

    /// Sends one byte: into our own receiver in loopback mode, otherwise out
    /// of the sink at once, flushed so that guest output interleaves with the
    /// monitor's own messages in the order it happened.
    fn transmit(&mut self, byte: u8) {
        if self.state.mcr & MCR_LOOP != 0 {
            if self.rx_fifo.len() < fifo_capacity(self.state.fcr) {
                self.rx_fifo.push_back(byte);
            } else {
                self.state.overrun = true;
            }
        } else if let Err(err) = self.out.write_all(&[byte]).and_then(|()| self.out.flush()) {
            if !self.output_failed {
                log::warn!("serial output failed ({err}); further output from this UART is dropped silently");
                self.output_failed = true;
            }
        }
        // The byte left the holding register immediately, so the
        // transmitter is empty again and says so.
        self.state.thre_pending = true;
    }

    /// LSR as the guest reads it.
    fn line_status(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.rx_fifo.is_empty() {
            lsr |= LSR_DR;
        }
        if self.state.overrun {
            lsr |= LSR_OE;
        }
        lsr
    }

    /// MSR as the guest reads it. In loopback mode the modem control outputs
    /// are wired to the status inputs: RTS to CTS, DTR to DSR, OUT1 to RI and
    /// OUT2 to DCD (data sheet, MCR bit 4). Otherwise the lines of a connected
    /// terminal are presented. bt86 models no line changes, so the delta
    /// bits and the modem status interrupt stay clear.
    fn modem_status(&self) -> u8 {
        let mcr = self.state.mcr;
        if mcr & MCR_LOOP == 0 {
            return MSR_CONNECTED;
        }
        let mut msr = 0;
        if mcr & MCR_RTS != 0 {
            msr |= MSR_CTS;
        }
        if mcr & MCR_DTR != 0 {
            msr |= MSR_DSR;
        }
        if mcr & MCR_OUT1 != 0 {
            msr |= MSR_RI;
        }
        if mcr & MCR_OUT2 != 0 {
            msr |= MSR_DCD;
        }
        msr
    }

    /// The highest-priority pending interrupt as IIR bits 3:0. The
    /// receive interrupt is raised as soon as one byte waits: a real 16550A
    /// waits for the FIFO trigger level or a four-character timeout, and
    /// drivers handle both the same way.
    fn pending_interrupt(&self) -> u8 {
        let ier = self.state.ier;
        if ier & IER_RLS != 0 && self.state.overrun {
            IIR_RLS
        } else if ier & IER_RDA != 0 && !self.rx_fifo.is_empty() {
            IIR_RDA
        } else if ier & IER_THRE != 0 && self.state.thre_pending {
            IIR_THRE
        } else {
            IIR_NONE
        }
    }

    /// Drives the interrupt line from the pending interrupts. Like QEMU,
    /// bt86 does not gate the line with MCR.OUT2.
    fn update_irq(&mut self) {
        let level = self.pending_interrupt() != IIR_NONE;
        self.irq.set(level);
    }
}

/// The receive capacity for a given FCR: the FIFO when enabled, one holding
/// register when not.
fn fifo_capacity(fcr: u8) -> usize {
    if fcr & FCR_ENABLE != 0 {
        FIFO_SIZE
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::IrqLatch;

    type TestSerial = Serial<Vec<u8>, IrqLatch>;

    fn serial() -> TestSerial {
        Serial::new(Vec::new(), IrqLatch::default())
    }

    /// The sequence a typical guest driver (Linux's 8250 early console,
    /// xv6's uartinit) runs before its first byte.
    fn driver_init(s: &mut TestSerial) {
        s.write(IER, 0x00); // Disable all interrupts.
        s.write(LCR, LCR_DLAB); // Open the divisor latch.
        s.write(DLL, 0x01); // 115200 baud.
        s.write(DLM, 0x00);
        s.write(LCR, LCR_8N1); // 8N1, closing the latch.
        s.write(FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX | 0xC0);
        s.write(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    }

    #[test]
    fn reset_values_match_qemu() {
        // Values read under QEMU right after a Multiboot kernel started.
        let mut s = serial();
        let expected: &[(u8, u8)] = &[
            (IER, 0x00),
            (IIR, 0x01),
            (LCR, 0x00),
            (MCR, 0x08),
            (LSR, 0x60),
            (MSR, 0xB0),
            (SCR, 0x00),
        ];
        for &(offset, value) in expected {
            assert_eq!(s.read(offset), value, "register {offset}");
        }
        assert!(!s.irq().level());
    }

    #[test]
    fn driver_init_then_transmit_reaches_the_sink() {
        let mut s = serial();
        driver_init(&mut s);
        assert_eq!(s.state().dll, 1);
        assert_eq!(s.state().dlm, 0);
        assert_eq!(s.read(LCR), LCR_8N1);
        // The driver polls THRE before each byte.
        for &b in b"hi\n" {
            assert_ne!(s.read(LSR) & LSR_THRE, 0);
            s.write(DATA, b);
        }
        assert_eq!(s.output(), b"hi\n");
        assert_eq!(s.read(IIR), IIR_NONE | IIR_FIFO_ENABLED);
        assert!(!s.irq().level(), "interrupts are disabled");
    }

    #[test]
    fn divisor_latch_shadows_data_and_ier() {
        let mut s = serial();
        s.write(IER, IER_RDA);
        s.write(LCR, LCR_DLAB | LCR_8N1);
        s.write(DLL, 0x34);
        s.write(DLM, 0x12);
        assert_eq!((s.read(DLL), s.read(DLM)), (0x34, 0x12));
        s.write(LCR, LCR_8N1);
        assert_eq!(s.read(IER), IER_RDA, "IER kept its value behind the latch");
        assert!(s.output().is_empty(), "writes to DLL must not transmit");
    }

    #[test]
    fn scratch_register_holds_any_value() {
        let mut s = serial();
        for value in [0x00, 0x55, 0xAA, 0xFF] {
            s.write(SCR, value);
            assert_eq!(s.read(SCR), value);
        }
    }

    #[test]
    fn loopback_returns_transmitted_bytes_and_wires_modem_lines() {
        let mut s = serial();
        driver_init(&mut s);
        s.write(MCR, MCR_LOOP | MCR_RTS | MCR_OUT2);
        assert_eq!(s.read(MSR), MSR_CTS | MSR_DCD);
        s.write(MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
        assert_eq!(s.read(MSR), MSR_DSR | MSR_RI);
        s.write(DATA, 0xAE);
        assert_eq!(s.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(s.read(DATA), 0xAE);
        assert_eq!(s.read(LSR) & LSR_DR, 0);
        assert!(
            s.output().is_empty(),
            "loopback bytes must not leave the UART"
        );
        assert_eq!(
            s.enqueue_input(b"x"),
            0,
            "the receiver is disconnected in loopback"
        );
        s.write(MCR, MCR_OUT2);
        assert_eq!(s.read(MSR), 0xB0);
    }

    #[test]
    fn loopback_overrun_sets_oe_until_lsr_is_read() {
        let mut s = serial();
        s.write(FCR, 0); // 16450 mode: one holding register.
        s.write(MCR, MCR_LOOP);
        s.write(IER, IER_RLS);
        s.write(DATA, 1);
        s.write(DATA, 2);
        assert!(s.irq().level());
        assert_eq!(s.read(IIR), IIR_RLS);
        assert_eq!(s.read(LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
        assert_eq!(s.read(LSR), LSR_DR | LSR_THRE | LSR_TEMT);
        assert!(!s.irq().level());
        assert_eq!(
            s.read(DATA),
            1,
            "the first byte survives, the second was lost"
        );
    }

    #[test]
    fn receive_interrupt_follows_the_fifo() {
        let mut s = serial();
        driver_init(&mut s);
        s.write(IER, IER_RDA);
        assert!(!s.irq().level());
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert!(s.irq().level());
        assert_eq!(s.read(IIR) & 0x0F, IIR_RDA);
        assert_eq!(s.read(DATA), b'o');
        assert!(s.irq().level(), "one byte still waits");
        assert_eq!(s.read(DATA), b'k');
        assert!(!s.irq().level());
        assert_eq!(s.read(LSR) & LSR_DR, 0);
    }

    #[test]
    fn input_is_limited_by_the_fifo_depth() {
        let cases: &[(u8, usize)] = &[(FCR_ENABLE, FIFO_SIZE), (0, 1)];
        for &(fcr, capacity) in cases {
            let mut s = serial();
            s.write(FCR, fcr);
            let data = [b'a'; 40];
            assert_eq!(s.enqueue_input(&data), capacity, "fcr {fcr:#x}");
            assert_eq!(s.rx_space(), 0);
            assert_eq!(s.enqueue_input(b"z"), 0);
            s.read(DATA);
            assert_eq!(s.enqueue_input(b"zz"), 1);
        }
    }

    #[test]
    fn fcr_clear_and_enable_change_flush_the_receiver() {
        let mut s = serial();
        s.write(FCR, FCR_ENABLE);
        s.enqueue_input(b"abc");
        s.write(FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(s.read(LSR) & LSR_DR, 0);
        s.enqueue_input(b"abc");
        s.write(FCR, 0);
        assert_eq!(s.read(LSR) & LSR_DR, 0);
        assert_eq!(s.read(IIR) & IIR_FIFO_ENABLED, 0);
    }

    #[test]
    fn thre_interrupt_is_raised_by_enable_and_transmit_and_cleared_by_iir() {
        let mut s = serial();
        driver_init(&mut s);
        s.write(IER, IER_THRE);
        assert!(
            s.irq().level(),
            "enabling THRE with an empty transmitter interrupts"
        );
        assert_eq!(s.read(IIR) & 0x0F, IIR_THRE);
        assert!(!s.irq().level(), "reading IIR acknowledged it");
        assert_eq!(s.read(IIR) & 0x0F, IIR_NONE);
        s.write(DATA, b'!');
        assert!(
            s.irq().level(),
            "the byte went out, the transmitter is empty again"
        );
        s.write(IER, 0);
        assert!(!s.irq().level());
    }

    #[test]
    fn receive_has_priority_over_transmit() {
        let mut s = serial();
        s.write(IER, IER_THRE | IER_RDA);
        s.enqueue_input(b"q");
        assert_eq!(s.read(IIR) & 0x0F, IIR_RDA);
        s.read(DATA);
        assert_eq!(s.read(IIR) & 0x0F, IIR_THRE);
    }

    #[test]
    fn snapshot_round_trip_preserves_every_register() {
        let mut s = serial();
        driver_init(&mut s);
        s.write(SCR, 0x5A);
        s.write(IER, IER_RDA | IER_THRE);
        s.enqueue_input(b"xyz");
        s.read(DATA);
        let state = s.state();
        assert_eq!(state.rx_fifo, b"yz");
        let mut resumed = Serial::from_state(&state, Vec::new(), IrqLatch::default()).unwrap();
        assert_eq!(resumed.state(), state);
        assert!(
            resumed.irq().level(),
            "the line is driven again after a resume"
        );
        for offset in [IER, LCR, MCR, SCR] {
            assert_eq!(resumed.read(offset), s.read(offset), "register {offset}");
        }
        assert_eq!(resumed.read(DATA), b'y');
    }

    #[test]
    fn corrupt_snapshot_is_refused() {
        let state = SerialState {
            rx_fifo: vec![0; 2],
            fcr: 0,
            ..SerialState::default()
        };
        let err = Serial::from_state(&state, Vec::new(), IrqLatch::default()).err();
        assert_eq!(
            err,
            Some(SerialStateError::FifoOverfull {
                len: 2,
                capacity: 1,
                fcr: 0
            })
        );
    }

    #[test]
    fn a_failing_sink_does_not_stop_the_uart() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut s = Serial::new(Broken, IrqLatch::default());
        s.write(IER, IER_THRE);
        s.read(IIR);
        s.write(DATA, b'a');
        assert!(s.irq().level(), "the transmitter still empties");
        assert_eq!(s.read(LSR) & LSR_THRE, LSR_THRE);
    }
}
