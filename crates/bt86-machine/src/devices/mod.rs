//! Device models: the chips a guest programs through I/O ports or
//! memory-mapped registers.
//!
//! Each device is written in the style of rust-vmm's vm-superio: it is
//! generic over where its output goes and over the interrupt line it drives,
//! its registers and bits are named constants, and its complete state can be
//! copied out into a plain struct and back, so that a VM can be suspended and
//! resumed exactly. Devices never touch host memory, guest RAM or the CPU;
//! `Machine` routes port accesses to them, and memory accesses through its
//! MMIO bus (`mmio.rs`).

pub mod ata;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod testdev;
pub mod time;

/// One interrupt request line from a device to an interrupt controller.
///
/// A device calls `set(true)` while it has an interrupt pending and
/// `set(false)` when the condition clears, so the line is level-triggered as
/// the ISA bus wires it into the 8259A PIC (IRQ 4 for COM1).
pub trait IrqLine {
    /// Drives the line to `level`.
    fn set(&mut self, level: bool);
}

/// A line connected to nothing, for devices whose interrupt is not wired yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIrq;

impl IrqLine for NoIrq {
    fn set(&mut self, _level: bool) {}
}

/// A line that remembers its level, for the machine to read after each
/// device access and forward to the PIC, and for tests to observe.
///
/// It also remembers whether the line rose since the machine last looked,
/// because a timer may pulse its line (raise and lower it within one call)
/// and an edge-triggered PIC input must still see that edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqLatch {
    level: bool,
    rose: bool,
}

impl IrqLatch {
    /// The level the device drives now.
    pub fn level(&self) -> bool {
        self.level
    }

    /// Whether the line went from low to high since the last call; the
    /// answer is forgotten once given.
    pub fn take_rising_edge(&mut self) -> bool {
        std::mem::take(&mut self.rose)
    }
}

impl IrqLine for IrqLatch {
    fn set(&mut self, level: bool) {
        if level && !self.level {
            self.rose = true;
        }
        self.level = level;
    }
}
