//! The I/O-port map of the virtual PC and the small port devices that need
//! no module of their own: QEMU's isa-debug-exit, the POST code register at
//! port 0x80, and the ACPI PM1a control register that powers the machine off.
//!
//! This module owns port numbers and the power state the guest can request.
//! It does not route accesses (`Machine` does) and it does not stop anything:
//! the run loop reads [`PowerState`] after every port write and ends the VM.
//!
//! Every behaviour here was measured against `qemu-system-i386` 7.2 on the
//! `pc` machine, booting a Multiboot kernel with `-kernel` and
//! `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.

/// COM1's first register (16550A, IRQ 4).
pub const COM1_BASE: u16 = 0x3F8;
/// COM1's last register.
pub const COM1_LAST: u16 = 0x3FF;

/// The POST code (diagnostic) port.
pub const POST_CODE: u16 = 0x80;

/// isa-debug-exit's first port; the device decodes four ports from here.
pub const DEBUG_EXIT_BASE: u16 = 0xF4;
/// isa-debug-exit's last port.
pub const DEBUG_EXIT_LAST: u16 = 0xF7;

/// The ACPI PM I/O base that SeaBIOS programs into QEMU's PIIX4 power
/// management function on the `pc` machine.
pub const ACPI_PM_BASE: u16 = 0x600;
/// PM1a control register (ACPI 6.4 §4.8.3.2.1): PM base + 4.
pub const ACPI_PM1A_CNT: u16 = ACPI_PM_BASE + 4;

/// PM1 control: sleep enable. Writing it starts the transition to the
/// sleeping state chosen by SLP_TYP.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// PM1 control: the SLP_TYP field, bits 12:10.
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
const PM1_CNT_SLP_TYP_MASK: u16 = 0x7;
/// The SLP_TYP values that QEMU's PIIX4 treats as power-off: 0 is the S5
/// (soft-off) type of QEMU's DSDT, 2 is its S4 (suspend-to-disk) type, which
/// QEMU also implements by shutting down.
const SLP_TYP_POWER_OFF: [u16; 2] = [0, 2];

/// Whether the guest has asked the machine to stop, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PowerState {
    /// The machine runs.
    #[default]
    Running,
    /// The guest wrote `value` to isa-debug-exit. bt86 exits with status
    /// `(value << 1) | 1`, as QEMU does; the shell sees the low 8 bits.
    DebugExit { value: u32 },
    /// The guest powered off through ACPI (a 16-bit write with SLP_EN and a
    /// soft-off SLP_TYP to port 0x604). bt86 exits with status 0, as QEMU does.
    PowerOff,
}

impl PowerState {
    /// The process exit status the guest asked for, or `None` while it runs.
    pub fn exit_status(self) -> Option<i32> {
        match self {
            PowerState::Running => None,
            // QEMU calls exit((val << 1) | 1) with a 64-bit val and an int
            // parameter, so the status is the low 32 bits of that value.
            PowerState::DebugExit { value } => Some(((u64::from(value) << 1) | 1) as u32 as i32),
            PowerState::PowerOff => Some(0),
        }
    }
}

/// isa-debug-exit: any write to its four ports ends the VM. QEMU uses the
/// value as written, at the access width, whichever of the four ports it
/// hits; reads return 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugExit;

impl DebugExit {
    /// A read from one of the device's ports.
    pub fn read(&self) -> u32 {
        0
    }

    /// A write of `value`: the power state it requests.
    pub fn write(&self, value: u32) -> PowerState {
        PowerState::DebugExit { value }
    }
}

/// The POST code register at port 0x80. Firmware and some kernels write
/// progress codes here, and old drivers write to it as a short I/O delay.
/// bt86 remembers the last byte for the debugger. Under QEMU the port reads
/// all-ones whatever was written, so the guest sees the same here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostCode {
    /// The last byte the guest wrote.
    pub last: u8,
}

impl PostCode {
    /// A write: the low byte is the POST code.
    pub fn write(&mut self, value: u32) {
        self.last = value as u8;
    }
}

/// The PM1a control register of the ACPI power-management block, just
/// enough of it to power the machine off: this is bt86's power-off path.
///
/// QEMU accepts only 16-bit accesses to it; a byte or dword write there was
/// measured to have no effect, so `Machine` routes only word accesses here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcpiPm {
    /// PM1a_CNT as the guest last wrote it, without the write-only SLP_EN bit.
    pub pm1a_cnt: u16,
}

impl AcpiPm {
    /// A 16-bit read of PM1a_CNT.
    pub fn read_pm1a_cnt(&self) -> u16 {
        self.pm1a_cnt
    }

    /// A 16-bit write of PM1a_CNT. Returns `PowerState::PowerOff` when it
    /// requests soft-off; a request for S1-S3 (suspend to RAM) is ignored
    /// and logged, because bt86 does not model sleeping states.
    pub fn write_pm1a_cnt(&mut self, value: u16) -> Option<PowerState> {
        self.pm1a_cnt = value & !PM1_CNT_SLP_EN;
        if value & PM1_CNT_SLP_EN == 0 {
            return None;
        }
        let slp_typ = (value >> PM1_CNT_SLP_TYP_SHIFT) & PM1_CNT_SLP_TYP_MASK;
        if SLP_TYP_POWER_OFF.contains(&slp_typ) {
            Some(PowerState::PowerOff)
        } else {
            log::warn!("guest asked for ACPI sleep type {slp_typ} (PM1a_CNT={value:#06x}); bt86 models only soft-off, so the guest keeps running");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_status_matches_qemu() {
        // (value written, exit status QEMU reported to the shell); measured
        // with byte, word and dword writes.
        let cases: &[(u32, i32)] = &[
            (0x10, 33),
            (0x7, 15),
            (0xFF, 255),
            (0x1234, 105),
            (0x1234_5678, 241),
            (0x80, 1),
            (0x1, 3),
        ];
        for &(value, shell_status) in cases {
            let status = DebugExit.write(value).exit_status().unwrap();
            assert_eq!(status & 0xFF, shell_status, "value {value:#x}");
            assert_eq!(status as u32, (value << 1) | 1, "value {value:#x}");
        }
        assert_eq!(DebugExit.read(), 0);
    }

    #[test]
    fn running_has_no_exit_status_and_power_off_is_zero() {
        assert_eq!(PowerState::Running.exit_status(), None);
        assert_eq!(PowerState::PowerOff.exit_status(), Some(0));
    }

    #[test]
    fn pm1a_cnt_powers_off_only_for_soft_off_types() {
        // Measured under QEMU: 0x2000, 0x2001 and 0x2800 power off; 0x2400
        // (S3) suspends, 0x3C00 and 0x0000 do nothing.
        let cases: &[(u16, Option<PowerState>)] = &[
            (0x2000, Some(PowerState::PowerOff)),
            (0x2001, Some(PowerState::PowerOff)),
            (0x2800, Some(PowerState::PowerOff)),
            (0x2400, None),
            (0x3C00, None),
            (0x0000, None),
            (0x0001, None),
        ];
        for &(value, expected) in cases {
            let mut pm = AcpiPm::default();
            assert_eq!(pm.write_pm1a_cnt(value), expected, "PM1a_CNT={value:#06x}");
            assert_eq!(
                pm.read_pm1a_cnt(),
                value & !PM1_CNT_SLP_EN,
                "SLP_EN reads back as 0"
            );
        }
    }

    #[test]
    fn post_code_keeps_the_low_byte() {
        let mut post = PostCode::default();
        for (value, last) in [(0x5Au32, 0x5Au8), (0x1234, 0x34), (0xFFFF_FF00, 0x00)] {
            post.write(value);
            assert_eq!(post.last, last);
        }
    }
}
