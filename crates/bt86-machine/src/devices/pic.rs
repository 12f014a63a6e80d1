//! The pair of Intel 8259A programmable interrupt controllers of a PC: the
//! master at ports 0x20-0x21 takes IRQ 0-7 and the slave at 0xA0-0xA1
//! takes IRQ 8-15, its output cascaded into the master's IRQ 2. Beside
//! them sit the PIIX edge/level control registers (ELCR) at 0x4D0-0x4D1.
//!
//! This module owns the controllers' registers (IRR, ISR, IMR, ELCR), the
//! initialization sequence, priority resolution and the interrupt-
//! acknowledge cycle. It does not know which device drives which line
//! (`Machine` wires them) and it does not touch the CPU: the run loop asks
//! [`Pic::intr`] whether INTR is asserted and runs [`Pic::acknowledge`]
//! when the virtual CPU takes the interrupt.
//!
//! The register semantics follow the Intel 8259A data sheet (order number
//! 231468). Where the data sheet leaves a choice open, bt86 does what
//! QEMU's `hw/intc/i8259.c` does, because QEMU is the reference for what a
//! guest sees:
//! - An edge-triggered request stays in IRR once latched, even if the line
//!   falls again before the acknowledge. (The data sheet asks devices to
//!   hold the line until then; QEMU's devices and ours pulse it.)
//! - Lines are level-triggered when their ELCR bit is set, as on the PIIX
//!   south bridge. The LTIM bit of ICW1 is ignored with a log message, as
//!   QEMU does; ELCR is the only way to choose level mode.
//! - ICW1 clears IRR, ISR and IMR and the ICW4 options, and keeps the
//!   levels the lines are at, so that a line already high must fall and
//!   rise again to make a new request (data sheet, "Initialization Command
//!   Words": "the edge sense circuit is reset").
//! - Rotation (OCW2 rotate commands, rotate on automatic EOI), special
//!   mask mode and poll mode are implemented as QEMU implements them.
//!
//! Spurious interrupts. If the CPU runs an acknowledge cycle while no
//! unmasked request outranks the in-service ones (the request was masked
//! or, on a level-triggered line, withdrawn after INTR was sampled), the
//! 8259A answers with its IRQ 7 vector and sets no ISR bit. On the master
//! that is vector base+7 ("spurious IRQ 7"). On the slave it happens when
//! the master latched the slave's output on IRQ 2 and the slave's own
//! request went away before the acknowledge: the master acknowledges IRQ 2
//! normally (its ISR bit 2 is set), and the slave answers base+7 with no
//! ISR bit ("spurious IRQ 15"). A guest's spurious IRQ 15 handler must
//! therefore send an EOI to the master only, which is what Linux does.

use std::fmt;

/// A line of the ISA interrupt bus, IRQ 0-15: 0-7 on the master 8259A,
/// 8-15 on the slave. Kept apart from interrupt vectors, which are what
/// the PIC turns a line into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irq(pub u8);

impl Irq {
    /// The 8254 PIT's channel 0.
    pub const PIT: Irq = Irq(0);
    /// The master's input wired to the slave's INT output.
    pub const CASCADE: Irq = Irq(2);
    /// COM1.
    pub const COM1: Irq = Irq(4);
    /// The CMOS real-time clock.
    pub const RTC: Irq = Irq(8);
}

impl fmt::Display for Irq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IRQ {}", self.0)
    }
}

/// Which of the two controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    /// The master, ports 0x20-0x21, IRQ 0-7.
    Master,
    /// The slave, ports 0xA0-0xA1, IRQ 8-15.
    Slave,
}

/// The master's command port (ICW1, OCW2, OCW3; reads IRR or ISR).
pub const MASTER_COMMAND: u16 = 0x20;
/// The master's data port (ICW2-4, OCW1 = IMR).
pub const MASTER_DATA: u16 = 0x21;
/// The slave's command port.
pub const SLAVE_COMMAND: u16 = 0xA0;
/// The slave's data port.
pub const SLAVE_DATA: u16 = 0xA1;
/// ELCR for IRQ 0-7 (PIIX).
pub const ELCR_MASTER: u16 = 0x4D0;
/// ELCR for IRQ 8-15 (PIIX).
pub const ELCR_SLAVE: u16 = 0x4D1;

/// Offset of the command port from a controller's base.
pub const COMMAND: u8 = 0;
/// Offset of the data port from a controller's base.
pub const DATA: u8 = 1;

/// A command-port write with this bit set is ICW1.
pub const ICW1_INIT: u8 = 0x10;
/// ICW1: ICW4 follows.
pub const ICW1_IC4: u8 = 0x01;
/// ICW1: single controller, no ICW3.
pub const ICW1_SNGL: u8 = 0x02;
/// ICW1: level-triggered mode (ignored; see the module documentation).
pub const ICW1_LTIM: u8 = 0x08;
/// ICW4: automatic end of interrupt.
pub const ICW4_AEOI: u8 = 0x02;
/// ICW4: special fully nested mode.
pub const ICW4_SFNM: u8 = 0x10;
/// A command-port write with this bit set (and `ICW1_INIT` clear) is OCW3;
/// with both clear it is OCW2.
pub const OCW3_SELECT: u8 = 0x08;
/// OCW3: the read-register command is valid (RR).
pub const OCW3_RR: u8 = 0x02;
/// OCW3: with RR, read ISR instead of IRR (RIS).
pub const OCW3_RIS: u8 = 0x01;
/// OCW3: poll command.
pub const OCW3_POLL: u8 = 0x04;
/// OCW3: the special-mask command is valid (ESMM).
pub const OCW3_ESMM: u8 = 0x40;
/// OCW3: with ESMM, set (1) or reset (0) special mask mode (SMM).
pub const OCW3_SMM: u8 = 0x20;
/// OCW3 value that selects IRR for reads.
pub const OCW3_READ_IRR: u8 = OCW3_SELECT | OCW3_RR;
/// OCW3 value that selects ISR for reads.
pub const OCW3_READ_ISR: u8 = OCW3_SELECT | OCW3_RR | OCW3_RIS;
/// OCW2 commands (bits 7:5).
pub const OCW2_NON_SPECIFIC_EOI: u8 = 0x20;
/// OCW2: specific EOI; bits 2:0 name the level.
pub const OCW2_SPECIFIC_EOI: u8 = 0x60;
/// OCW2: rotate on non-specific EOI.
pub const OCW2_ROTATE_NON_SPECIFIC_EOI: u8 = 0xA0;
/// OCW2: set rotate-in-automatic-EOI mode.
pub const OCW2_SET_ROTATE_AEOI: u8 = 0x80;
/// OCW2: clear rotate-in-automatic-EOI mode.
pub const OCW2_CLEAR_ROTATE_AEOI: u8 = 0x00;
/// OCW2: set priority; bits 2:0 become the lowest-priority level.
pub const OCW2_SET_PRIORITY: u8 = 0xC0;
/// OCW2: rotate on specific EOI.
pub const OCW2_ROTATE_SPECIFIC_EOI: u8 = 0xE0;

/// The ELCR bits that exist on the PIIX: IRQ 0, 1, 2 (master) and 8, 13
/// (slave) are always edge-triggered, as in QEMU's `pc` machine.
pub const ELCR_MASTER_MASK: u8 = 0xF8;
/// See [`ELCR_MASTER_MASK`].
pub const ELCR_SLAVE_MASK: u8 = 0xDE;

/// Where a controller is in its initialization sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitStep {
    /// Initialized: data-port writes set IMR (OCW1).
    #[default]
    Ready,
    /// ICW1 written; the next data-port write is ICW2 (vector base).
    Icw2,
    /// The next data-port write is ICW3 (cascade wiring).
    Icw3,
    /// The next data-port write is ICW4 (mode).
    Icw4,
}

/// One 8259A's complete state, as plain data for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChipState {
    /// Interrupt request register: requests latched and not yet acknowledged.
    pub irr: u8,
    /// In-service register: acknowledged and not yet ended by an EOI.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// The level each input line is at now (for edge detection).
    pub lines: u8,
    /// Edge/level control (1 = level-triggered).
    pub elcr: u8,
    /// ICW2: the vector of IRQ 0 of this controller (bits 7:3).
    pub vector_base: u8,
    /// Rotation: the level that currently has the highest priority.
    pub lowest_priority_plus_one: u8,
    /// OCW3 RIS: the command port reads ISR (true) or IRR (false).
    pub read_isr: bool,
    /// OCW3 poll: the next read is a poll.
    pub poll: bool,
    /// OCW3 special mask mode.
    pub special_mask: bool,
    /// Initialization progress.
    pub init: InitStep,
    /// ICW1 IC4: ICW4 is expected.
    pub expect_icw4: bool,
    /// ICW1 SNGL: no ICW3.
    pub single: bool,
    /// ICW4 AEOI.
    pub auto_eoi: bool,
    /// OCW2 rotate in automatic EOI mode.
    pub rotate_on_auto_eoi: bool,
    /// ICW4 SFNM.
    pub special_fully_nested: bool,
}

/// The state of both controllers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicState {
    pub master: ChipState,
    pub slave: ChipState,
}

/// What an interrupt-acknowledge cycle produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledge {
    /// The vector the CPU must take.
    pub vector: u8,
    /// The line that is now in service, or `None` for a spurious
    /// interrupt (vector base+7 with no ISR bit set on that controller).
    pub irq: Option<Irq>,
}

/// The PC's two cascaded 8259A controllers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pic {
    state: PicState,
}

impl ChipState {
    /// The priority (0 = highest) of the highest-priority level in `mask`,
    /// or 8 if `mask` is empty. Rotation shifts which level is priority 0.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.lowest_priority_plus_one) & 7)) != 0)
            .unwrap_or(8)
    }

    fn level_of(&self, priority: u8) -> u8 {
        (priority + self.lowest_priority_plus_one) & 7
    }

    /// The level this controller would present to the CPU now: the
    /// highest-priority unmasked request that outranks everything in
    /// service (data sheet, "Fully Nested Mode"). In special mask mode,
    /// masked in-service levels do not block lower ones; in special fully
    /// nested mode the master ignores IRQ 2's in-service bit so that a
    /// higher-priority slave request can nest.
    fn pending(&self, is_master: bool) -> Option<u8> {
        let request = self.priority(self.irr & !self.imr);
        if request == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && is_master {
            in_service &= !(1 << Irq::CASCADE.0);
        }
        (request < self.priority(in_service)).then(|| self.level_of(request))
    }

    /// Drives input `line` to `level`: an edge-triggered input latches a
    /// request on a rising edge, a level-triggered one follows the line.
    fn set_line(&mut self, line: u8, level: bool) {
        let bit = 1u8 << line;
        let was_high = self.lines & bit != 0;
        if level {
            self.lines |= bit;
            if self.elcr & bit != 0 || !was_high {
                self.irr |= bit;
            }
        } else {
            self.lines &= !bit;
            if self.elcr & bit != 0 {
                self.irr &= !bit;
            }
        }
    }

    /// The acknowledge of `line`: it moves from IRR to ISR (unless in
    /// automatic-EOI mode). A level-triggered request stays in IRR while
    /// its line is high.
    fn acknowledge(&mut self, line: u8) {
        let bit = 1u8 << line;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority_plus_one = (line + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    /// ICW1: restart initialization (data sheet, "Initialization Command
    /// Word 1"). The line levels and ELCR survive.
    fn icw1(&mut self, value: u8) {
        if value & ICW1_LTIM != 0 {
            log::info!(
                "8259A ICW1 {value:#04x} asks for level-triggered mode through LTIM; bt86 (like QEMU) takes trigger modes from the ELCR at 0x4D0/0x4D1 only, so lines stay edge-triggered"
            );
        }
        *self = ChipState {
            lines: self.lines,
            elcr: self.elcr,
            init: InitStep::Icw2,
            expect_icw4: value & ICW1_IC4 != 0,
            single: value & ICW1_SNGL != 0,
            ..ChipState::default()
        };
    }

    /// OCW2: end of interrupt and rotation commands.
    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value & 0xE0 {
            OCW2_NON_SPECIFIC_EOI | OCW2_ROTATE_NON_SPECIFIC_EOI => {
                // The non-specific EOI ends the highest-priority level in
                // service, which in fully nested mode is the one the last
                // acknowledge started.
                let p = self.priority(self.isr);
                if p != 8 {
                    let line = self.level_of(p);
                    self.isr &= !(1 << line);
                    if value & 0xE0 == OCW2_ROTATE_NON_SPECIFIC_EOI {
                        self.lowest_priority_plus_one = (line + 1) & 7;
                    }
                }
            }
            OCW2_SPECIFIC_EOI => self.isr &= !(1 << level),
            OCW2_ROTATE_SPECIFIC_EOI => {
                self.isr &= !(1 << level);
                self.lowest_priority_plus_one = (level + 1) & 7;
            }
            OCW2_SET_PRIORITY => self.lowest_priority_plus_one = (level + 1) & 7,
            OCW2_SET_ROTATE_AEOI => self.rotate_on_auto_eoi = true,
            OCW2_CLEAR_ROTATE_AEOI => self.rotate_on_auto_eoi = false,
            // 0x40 is "no operation" in the data sheet's table.
            _ => {}
        }
    }

    /// OCW3: read-register select, poll and special mask mode.
    fn ocw3(&mut self, value: u8) {
        if value & OCW3_POLL != 0 {
            self.poll = true;
        }
        if value & OCW3_RR != 0 {
            self.read_isr = value & OCW3_RIS != 0;
        }
        if value & OCW3_ESMM != 0 {
            self.special_mask = value & OCW3_SMM != 0;
        }
    }

    /// A data-port write: an ICW during initialization, else OCW1.
    fn write_data(&mut self, value: u8) {
        match self.init {
            InitStep::Ready => self.imr = value,
            InitStep::Icw2 => {
                // Bits 2:0 are the level number in 8086 mode (data sheet,
                // "ICW2"); only bits 7:3 are the base.
                self.vector_base = value & 0xF8;
                self.init = if !self.single {
                    InitStep::Icw3
                } else if self.expect_icw4 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                // ICW3 says which inputs have slaves (master) or which
                // master input this slave is on. The PC's wiring is fixed,
                // so the value is not needed.
                self.init = if self.expect_icw4 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                self.init = InitStep::Ready;
            }
        }
    }
}

impl Pic {
    /// Both controllers as a hardware reset leaves them: not initialized,
    /// vector base 0, nothing masked, every line edge-triggered.
    pub fn new() -> Pic {
        Pic::default()
    }

    /// Both controllers as SeaBIOS leaves them when a Multiboot kernel
    /// starts under QEMU's `pc` machine (measured with QEMU 7.2): vector
    /// bases 0x08 and 0x70, IMR 0xB8 (IRQ 0, 1, 2 and 6 unmasked) and 0x8E
    /// (IRQ 8, 12, 13 and 14 unmasked), ELCR 0x00 and 0x0C (IRQ 10 and 11
    /// level-triggered, for PCI).
    pub fn after_bios() -> Pic {
        let chip = |vector_base, imr, elcr| ChipState {
            vector_base,
            imr,
            elcr,
            ..ChipState::default()
        };
        Pic {
            state: PicState {
                master: chip(0x08, 0xB8, 0x00),
                slave: chip(0x70, 0x8E, 0x0C),
            },
        }
    }

    /// The controllers' complete state.
    pub fn state(&self) -> PicState {
        self.state
    }

    /// Puts the controllers back in `state`. Every state is one a real
    /// pair could be in, so this cannot fail.
    pub fn restore(&mut self, state: &PicState) {
        self.state = *state;
    }

    fn chip(&self, chip: Chip) -> &ChipState {
        match chip {
            Chip::Master => &self.state.master,
            Chip::Slave => &self.state.slave,
        }
    }

    fn chip_mut(&mut self, chip: Chip) -> &mut ChipState {
        match chip {
            Chip::Master => &mut self.state.master,
            Chip::Slave => &mut self.state.slave,
        }
    }

    /// Drives ISA line `irq` to `level`. Lines above 15 do not exist and
    /// are ignored with a log message.
    pub fn set_irq(&mut self, irq: Irq, level: bool) {
        match irq.0 {
            0..=7 => self.state.master.set_line(irq.0, level),
            8..=15 => {
                self.state.slave.set_line(irq.0 - 8, level);
                self.update_cascade();
            }
            _ => log::warn!("a device drove {irq}, which the PC's two 8259As do not have"),
        }
    }

    /// Sets line `irq`'s level without treating a change as an edge: for
    /// wiring a device whose output is already high at power-on, which is
    /// not a request. Lines above 15 are ignored.
    pub fn reset_line(&mut self, irq: Irq, level: bool) {
        let (chip, line) = match irq.0 {
            0..=7 => (&mut self.state.master, irq.0),
            8..=15 => (&mut self.state.slave, irq.0 - 8),
            _ => return,
        };
        let bit = 1u8 << line;
        if level {
            chip.lines |= bit;
        } else {
            chip.lines &= !bit;
        }
    }

    /// Carries the slave's INT output to the master's IRQ 2 input. Called
    /// after everything that can change the slave's output.
    fn update_cascade(&mut self) {
        let slave_int = self.state.slave.pending(false).is_some();
        self.state.master.set_line(Irq::CASCADE.0, slave_int);
    }

    /// Whether the master asserts INTR: some unmasked request outranks
    /// everything in service.
    pub fn intr(&self) -> bool {
        self.state.master.pending(true).is_some()
    }

    /// The interrupt-acknowledge cycle (two INTA pulses) as the CPU runs it
    /// when it takes an external interrupt (Intel SDM Vol. 3A §6.3.1): the
    /// winning request moves from IRR to ISR and its vector is returned.
    /// With nothing to acknowledge the answer is spurious, as described in
    /// the module documentation.
    pub fn acknowledge(&mut self) -> Acknowledge {
        let master = &mut self.state.master;
        let Some(line) = master.pending(true) else {
            return Acknowledge {
                vector: master.vector_base | 7,
                irq: None,
            };
        };
        master.acknowledge(line);
        let ack = if line == Irq::CASCADE.0 {
            let slave = &mut self.state.slave;
            match slave.pending(false) {
                Some(slave_line) => {
                    slave.acknowledge(slave_line);
                    Acknowledge {
                        vector: slave.vector_base | slave_line,
                        irq: Some(Irq(8 + slave_line)),
                    }
                }
                None => Acknowledge {
                    vector: slave.vector_base | 7,
                    irq: None,
                },
            }
        } else {
            Acknowledge {
                vector: master.vector_base | line,
                irq: Some(Irq(line)),
            }
        };
        self.update_cascade();
        ack
    }

    /// A guest `in` from `chip`'s port at `offset` (`COMMAND` or `DATA`).
    pub fn read(&mut self, chip: Chip, offset: u8) -> u8 {
        let is_master = chip == Chip::Master;
        let c = self.chip_mut(chip);
        if c.poll {
            // Poll mode (data sheet, "The Poll Command"): the read is the
            // acknowledge. Bit 7 says whether there was a request and bits
            // 2:0 give its level. As in QEMU, a poll of the master does not
            // continue into the slave.
            c.poll = false;
            let value = match c.pending(is_master) {
                Some(line) => {
                    c.acknowledge(line);
                    0x80 | line
                }
                None => 0,
            };
            self.update_cascade();
            return value;
        }
        match offset {
            COMMAND if c.read_isr => c.isr,
            COMMAND => c.irr,
            _ => c.imr,
        }
    }

    /// A guest `out` to `chip`'s port at `offset` (`COMMAND` or `DATA`).
    pub fn write(&mut self, chip: Chip, offset: u8, value: u8) {
        let c = self.chip_mut(chip);
        match offset {
            COMMAND if value & ICW1_INIT != 0 => c.icw1(value),
            COMMAND if value & OCW3_SELECT != 0 => c.ocw3(value),
            COMMAND => c.ocw2(value),
            _ => c.write_data(value),
        }
        self.update_cascade();
    }

    /// A guest `in` from the ELCR of `chip`.
    pub fn read_elcr(&self, chip: Chip) -> u8 {
        self.chip(chip).elcr
    }

    /// A guest `out` to the ELCR of `chip`. Bits for lines that are always
    /// edge-triggered stay clear.
    pub fn write_elcr(&mut self, chip: Chip, value: u8) {
        let mask = match chip {
            Chip::Master => ELCR_MASTER_MASK,
            Chip::Slave => ELCR_SLAVE_MASK,
        };
        self.chip_mut(chip).elcr = value & mask;
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Chip::{Master, Slave};

    /// The sequence Linux's `init_8259A` and xv6's `picinit` run: ICW1 with
    /// ICW4, bases 0x20/0x28, the slave on IRQ 2, 8086 mode, then masks.
    fn linux_init(pic: &mut Pic, master_mask: u8, slave_mask: u8) {
        pic.write(Master, DATA, 0xFF);
        pic.write(Slave, DATA, 0xFF);
        pic.write(Master, COMMAND, 0x11);
        pic.write(Master, DATA, 0x20);
        pic.write(Master, DATA, 0x04);
        pic.write(Master, DATA, 0x01);
        pic.write(Slave, COMMAND, 0x11);
        pic.write(Slave, DATA, 0x28);
        pic.write(Slave, DATA, 0x02);
        pic.write(Slave, DATA, 0x01);
        pic.write(Master, DATA, master_mask);
        pic.write(Slave, DATA, slave_mask);
    }

    fn initialized() -> Pic {
        let mut pic = Pic::new();
        linux_init(&mut pic, 0x00, 0x00);
        pic
    }

    /// Raises and lowers a line, as a device that pulses its interrupt.
    fn pulse(pic: &mut Pic, irq: u8) {
        pic.set_irq(Irq(irq), true);
        pic.set_irq(Irq(irq), false);
    }

    fn eoi(pic: &mut Pic, chip: Chip) {
        pic.write(chip, COMMAND, OCW2_NON_SPECIFIC_EOI);
    }

    fn read_irr_isr(pic: &mut Pic, chip: Chip) -> (u8, u8) {
        pic.write(chip, COMMAND, OCW3_READ_IRR);
        let irr = pic.read(chip, COMMAND);
        pic.write(chip, COMMAND, OCW3_READ_ISR);
        let isr = pic.read(chip, COMMAND);
        (irr, isr)
    }

    #[test]
    fn init_sequence_sets_bases_and_masks() {
        let mut pic = Pic::new();
        linux_init(&mut pic, 0xFB, 0xFF);
        assert_eq!(pic.state().master.vector_base, 0x20);
        assert_eq!(pic.state().slave.vector_base, 0x28);
        assert_eq!(pic.state().master.init, InitStep::Ready);
        assert_eq!(pic.read(Master, DATA), 0xFB);
        assert_eq!(pic.read(Slave, DATA), 0xFF);
        // Without ICW4 and in single mode, ICW2 ends the sequence.
        let mut single = Pic::new();
        single.write(Master, COMMAND, ICW1_INIT | ICW1_SNGL);
        single.write(Master, DATA, 0x40);
        single.write(Master, DATA, 0x12);
        assert_eq!(single.read(Master, DATA), 0x12, "the third write is OCW1");
    }

    #[test]
    fn each_line_maps_to_base_plus_line() {
        for line in 0u8..16 {
            if line == 2 {
                continue;
            }
            let mut pic = initialized();
            assert!(!pic.intr());
            pulse(&mut pic, line);
            assert!(pic.intr(), "IRQ {line}");
            let ack = pic.acknowledge();
            let expected = if line < 8 {
                0x20 + line
            } else {
                0x28 + line - 8
            };
            assert_eq!(ack.vector, expected, "IRQ {line}");
            assert_eq!(ack.irq, Some(Irq(line)));
            assert!(!pic.intr(), "IRQ {line} is in service");
        }
    }

    #[test]
    fn masked_lines_stay_in_irr_until_unmasked() {
        let mut pic = Pic::new();
        linux_init(&mut pic, 0x01, 0x00);
        pulse(&mut pic, 0);
        assert!(!pic.intr(), "IRQ 0 is masked");
        assert_eq!(read_irr_isr(&mut pic, Master), (0x01, 0x00));
        pic.write(Master, DATA, 0x00);
        assert!(pic.intr());
        assert_eq!(pic.acknowledge().vector, 0x20);
        assert_eq!(read_irr_isr(&mut pic, Master), (0x00, 0x01));
        eoi(&mut pic, Master);
        assert_eq!(read_irr_isr(&mut pic, Master), (0x00, 0x00));
    }

    #[test]
    fn higher_priority_preempts_and_lower_waits_for_eoi() {
        let mut pic = initialized();
        pulse(&mut pic, 4);
        assert_eq!(pic.acknowledge().vector, 0x24);
        // IRQ 6 ranks below 4 in service: it waits.
        pulse(&mut pic, 6);
        assert!(!pic.intr(), "IRQ 6 must wait for IRQ 4's EOI");
        // IRQ 1 outranks 4: it nests.
        pulse(&mut pic, 1);
        assert!(pic.intr());
        assert_eq!(pic.acknowledge().vector, 0x21);
        assert_eq!(read_irr_isr(&mut pic, Master), (0x40, 0x12));
        // The non-specific EOI ends the highest level in service (1);
        // 4 still blocks 6.
        eoi(&mut pic, Master);
        assert_eq!(read_irr_isr(&mut pic, Master), (0x40, 0x10));
        assert!(!pic.intr());
        eoi(&mut pic, Master);
        assert!(pic.intr());
        assert_eq!(pic.acknowledge().vector, 0x26);
    }

    #[test]
    fn simultaneous_requests_are_taken_in_priority_order() {
        let mut pic = initialized();
        for line in [7u8, 3, 5, 0] {
            pulse(&mut pic, line);
        }
        let mut order = Vec::new();
        while pic.intr() {
            order.push(pic.acknowledge().vector);
            eoi(&mut pic, Master);
        }
        assert_eq!(order, vec![0x20, 0x23, 0x25, 0x27]);
    }

    #[test]
    fn specific_eoi_ends_the_named_level_only() {
        let mut pic = initialized();
        pulse(&mut pic, 5);
        pic.acknowledge();
        pulse(&mut pic, 3);
        pic.acknowledge();
        pic.write(Master, COMMAND, OCW2_SPECIFIC_EOI | 5);
        assert_eq!(read_irr_isr(&mut pic, Master).1, 0x08);
        pic.write(Master, COMMAND, OCW2_SPECIFIC_EOI | 3);
        assert_eq!(read_irr_isr(&mut pic, Master).1, 0x00);
    }

    #[test]
    fn slave_interrupts_go_through_the_cascade_and_need_two_eois() {
        let mut pic = initialized();
        pulse(&mut pic, 8);
        assert!(pic.intr());
        let ack = pic.acknowledge();
        assert_eq!((ack.vector, ack.irq), (0x28, Some(Irq::RTC)));
        assert_eq!(read_irr_isr(&mut pic, Master).1, 0x04, "IRQ 2 in service");
        assert_eq!(read_irr_isr(&mut pic, Slave).1, 0x01, "IRQ 8 in service");
        // A second slave request waits for both EOIs.
        pulse(&mut pic, 12);
        assert!(!pic.intr());
        eoi(&mut pic, Slave);
        assert!(!pic.intr(), "the master still has IRQ 2 in service");
        eoi(&mut pic, Master);
        assert!(pic.intr());
        assert_eq!(pic.acknowledge().vector, 0x2C);
    }

    #[test]
    fn an_edge_needs_the_line_to_fall_first() {
        let mut pic = initialized();
        pic.set_irq(Irq(3), true);
        pic.acknowledge();
        eoi(&mut pic, Master);
        pic.set_irq(Irq(3), true);
        assert!(!pic.intr(), "still high: no new edge");
        pic.set_irq(Irq(3), false);
        pic.set_irq(Irq(3), true);
        assert!(pic.intr());
    }

    #[test]
    fn level_triggered_lines_follow_the_line_through_elcr() {
        let mut pic = initialized();
        pic.write_elcr(Slave, 0x0C | 0x21);
        assert_eq!(pic.read_elcr(Slave), 0x0C, "IRQ 8 and 13 are always edge");
        pic.write_elcr(Master, 0xFF);
        assert_eq!(pic.read_elcr(Master), 0xF8);
        pic.set_irq(Irq(10), true);
        assert!(pic.intr());
        pic.set_irq(Irq(10), false);
        assert_eq!(
            read_irr_isr(&mut pic, Slave).0,
            0x00,
            "a withdrawn level request leaves IRR"
        );
        // The master latched the cascade's edge: a spurious IRQ 15.
        assert_eq!(pic.acknowledge().vector, 0x2F);
        eoi(&mut pic, Master);
        assert!(!pic.intr());
        pic.set_irq(Irq(10), true);
        assert_eq!(pic.acknowledge().vector, 0x2A);
        assert_eq!(
            read_irr_isr(&mut pic, Slave),
            (0x04, 0x04),
            "still requested while high"
        );
        eoi(&mut pic, Slave);
        eoi(&mut pic, Master);
        assert!(pic.intr(), "the line is still high: requested again");
    }

    #[test]
    fn acknowledge_with_nothing_pending_is_spurious_irq7() {
        let mut pic = initialized();
        pulse(&mut pic, 3);
        assert!(pic.intr());
        // The guest masks the line after INTR was sampled.
        pic.write(Master, DATA, 0x08);
        let ack = pic.acknowledge();
        assert_eq!(
            ack,
            Acknowledge {
                vector: 0x27,
                irq: None
            }
        );
        assert_eq!(read_irr_isr(&mut pic, Master), (0x08, 0x00), "no ISR bit");
    }

    #[test]
    fn spurious_irq15_sets_the_masters_isr_only() {
        let mut pic = initialized();
        pic.write_elcr(Slave, 0x04); // IRQ 10 level-triggered.
        pic.set_irq(Irq(10), true);
        assert!(pic.intr());
        // The device withdraws its request: the master keeps the edge it
        // latched on IRQ 2.
        pic.set_irq(Irq(10), false);
        assert!(pic.intr());
        let ack = pic.acknowledge();
        assert_eq!(
            ack,
            Acknowledge {
                vector: 0x2F,
                irq: None
            }
        );
        assert_eq!(read_irr_isr(&mut pic, Master).1, 0x04);
        assert_eq!(read_irr_isr(&mut pic, Slave).1, 0x00);
        // The EOI to the master alone closes it.
        eoi(&mut pic, Master);
        assert_eq!(read_irr_isr(&mut pic, Master).1, 0x00);
    }

    #[test]
    fn auto_eoi_sets_no_isr_bit() {
        let mut pic = Pic::new();
        pic.write(Master, COMMAND, 0x11);
        pic.write(Master, DATA, 0x30);
        pic.write(Master, DATA, 0x04);
        pic.write(Master, DATA, 0x01 | ICW4_AEOI);
        pulse(&mut pic, 5);
        assert_eq!(pic.acknowledge().vector, 0x35);
        assert_eq!(read_irr_isr(&mut pic, Master), (0, 0));
        pulse(&mut pic, 6);
        assert!(pic.intr(), "nothing in service blocks IRQ 6");
    }

    #[test]
    fn poll_mode_acknowledges_through_a_read() {
        let mut pic = initialized();
        pic.write(Master, COMMAND, OCW3_SELECT | OCW3_POLL);
        assert_eq!(pic.read(Master, COMMAND), 0x00, "nothing pending");
        pulse(&mut pic, 6);
        pic.write(Master, COMMAND, OCW3_SELECT | OCW3_POLL);
        assert_eq!(pic.read(Master, COMMAND), 0x86);
        assert_eq!(read_irr_isr(&mut pic, Master), (0x00, 0x40));
    }

    #[test]
    fn rotation_makes_the_ended_level_lowest() {
        let mut pic = initialized();
        pulse(&mut pic, 1);
        pic.acknowledge();
        pic.write(Master, COMMAND, OCW2_ROTATE_NON_SPECIFIC_EOI);
        // IRQ 1 is now the lowest priority, so IRQ 2..7 outrank 0 and 1.
        pulse(&mut pic, 0);
        pulse(&mut pic, 5);
        assert_eq!(pic.acknowledge().vector, 0x25);
    }

    #[test]
    fn icw1_resets_masks_and_requests_but_not_line_levels() {
        let mut pic = initialized();
        pic.set_irq(Irq(3), true);
        pic.write(Master, DATA, 0x55);
        pic.write(Master, COMMAND, 0x11);
        assert_eq!(pic.state().master.irr, 0);
        assert_eq!(pic.state().master.imr, 0);
        assert_eq!(pic.state().master.lines, 0x08);
    }

    #[test]
    fn bios_state_matches_qemu_measurement() {
        let mut pic = Pic::after_bios();
        assert_eq!(pic.read(Master, DATA), 0xB8);
        assert_eq!(pic.read(Slave, DATA), 0x8E);
        assert_eq!((pic.read_elcr(Master), pic.read_elcr(Slave)), (0x00, 0x0C));
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge().vector, 0x08);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut pic = initialized();
        pulse(&mut pic, 8);
        pic.acknowledge();
        pulse(&mut pic, 1);
        let mut other = Pic::new();
        other.restore(&pic.state());
        assert_eq!(other, pic);
        assert_eq!(
            other.acknowledge().vector,
            0x21,
            "IRQ 1 outranks IRQ 2 in service"
        );
    }
}
