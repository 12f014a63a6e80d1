//! The virtual PC minus the CPU: RAM, the devices, and the routing of every
//! physical-memory and I/O-port access to one of them.
//!
//! This module owns the address and port maps: which range belongs to which
//! device, and what an access that nothing claims does. It does not model
//! any device itself (see `devices` and `ports`) and it knows nothing about
//! the CPU, the translation cache or the host: the virtual CPU reaches it
//! only through the [`Bus`] trait.
//!
//! Two rules for accesses nothing claims, both measured under QEMU 7.2's
//! `pc` machine with 128 MiB of RAM:
//! - Unassigned physical addresses read as zero and drop writes. A guest
//!   read 0x0000_0000 at 0x0800_0000 (just past RAM), 0x0FFF_FFFC,
//!   0x2000_0000, 0xE000_0000, 0xFEBF_FFFC and 0xFFC0_0000, and a value it
//!   wrote to 0x2000_0000 did not read back.
//! - Unassigned I/O ports read all-ones at every width (0xFF, 0xFFFF,
//!   0xFFFF_FFFF) and ignore writes. bt86 also logs the first access to
//!   each such port, because it is usually a device the guest expects and
//!   bt86 lacks.
//!
//! Known differences from QEMU, none of which a Multiboot kernel should
//! depend on: RAM is contiguous from 0, so the legacy hole [0xA0000,
//! 0x100000) is plain zeroed RAM (QEMU has VGA memory reading 0xFF and the
//! BIOS and option ROMs there); there is no BIOS ROM at 0xFFFC0000; and of
//! the ACPI PM block at 0x600 only PM1a_CNT exists.

use std::collections::BTreeSet;
use std::io::Write;

use thiserror::Error;

use crate::devices::serial::{Serial, SerialState, SerialStateError};
use crate::devices::IrqLatch;
use crate::memory::Ram;
use crate::ports::{
    AcpiPm, DebugExit, PostCode, PowerState, ACPI_PM1A_CNT, COM1_BASE, COM1_LAST, DEBUG_EXIT_BASE,
    DEBUG_EXIT_LAST, POST_CODE,
};
use crate::{Bus, GuestPhysAddr, IoSize};

/// Where COM1's transmitted bytes go: stdout, a file or a socket, chosen by
/// the command line. `Send` so that the machine can move to the thread that
/// runs the VM.
pub type SerialOutput = Box<dyn Write + Send>;

/// COM1 as the machine wires it: output to a [`SerialOutput`], its IRQ 4
/// line latched until a PIC exists to receive it.
pub type Com1 = Serial<SerialOutput, IrqLatch>;

/// The value an unassigned physical address reads as, per byte (see the
/// module documentation for the measurement).
pub const UNASSIGNED_MEMORY_BYTE: u8 = 0x00;

/// The guest-visible state of the machine's devices, as plain data for
/// snapshots. RAM is not included: it is its own file in the VM folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineState {
    pub com1: SerialState,
    pub post_code: PostCode,
    pub acpi_pm: AcpiPm,
    pub power: PowerState,
}

/// A device snapshot that cannot be restored.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MachineError {
    #[error("cannot restore COM1: {0}")]
    Com1(#[from] SerialStateError),
}

/// A memory-mapped device, the shape that the later LAPIC (0xFEE0_0000),
/// IOAPIC (0xFEC0_0000) and CGA text memory (0xB8000) models will take.
/// `offset` is relative to the start of the device's region. No device
/// implements it yet; see `Machine::read_unbacked` for where they plug in.
pub trait MmioDevice {
    /// Fills `data` from the device registers at `offset`.
    fn read(&mut self, offset: u32, data: &mut [u8]);
    /// Writes `data` to the device registers at `offset`.
    fn write(&mut self, offset: u32, data: &[u8]);
}

/// The virtual PC's RAM and devices behind one [`Bus`].
pub struct Machine {
    ram: Ram,
    com1: Com1,
    debug_exit: DebugExit,
    post_code: PostCode,
    acpi_pm: AcpiPm,
    power: PowerState,
    /// Unassigned ports already reported, so each is logged only once.
    unknown_ports: BTreeSet<u16>,
}

impl Machine {
    /// A machine with `ram`, COM1 writing to `serial_output`, and every
    /// device in its reset state.
    pub fn new(ram: Ram, serial_output: SerialOutput) -> Machine {
        Machine {
            ram,
            com1: Serial::new(serial_output, IrqLatch::default()),
            debug_exit: DebugExit,
            post_code: PostCode::default(),
            acpi_pm: AcpiPm::default(),
            power: PowerState::Running,
            unknown_ports: BTreeSet::new(),
        }
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Ram {
        &self.ram
    }

    /// Guest RAM, mutably (for loaders and the native layer).
    pub fn ram_mut(&mut self) -> &mut Ram {
        &mut self.ram
    }

    /// COM1, for the run loop to hand it input and to read its IRQ line.
    pub fn com1(&self) -> &Com1 {
        &self.com1
    }

    /// COM1, mutably.
    pub fn com1_mut(&mut self) -> &mut Com1 {
        &mut self.com1
    }

    /// The last POST code the guest wrote to port 0x80.
    pub fn post_code(&self) -> u8 {
        self.post_code.last
    }

    /// Whether the guest asked to stop. The run loop checks this after
    /// every port write that leaves the translation cache.
    pub fn power(&self) -> PowerState {
        self.power
    }

    /// The process exit status the guest asked for, if it asked to stop.
    pub fn exit_status(&self) -> Option<i32> {
        self.power.exit_status()
    }

    /// The devices' state, for a snapshot.
    pub fn state(&self) -> MachineState {
        MachineState {
            com1: self.com1.state(),
            post_code: self.post_code,
            acpi_pm: self.acpi_pm,
            power: self.power,
        }
    }

    /// Puts the devices back in a state taken with [`Machine::state`],
    /// keeping this machine's RAM and serial output. On error the machine
    /// is unchanged.
    pub fn restore(&mut self, state: &MachineState) -> Result<(), MachineError> {
        self.com1.restore(&state.com1)?;
        self.post_code = state.post_code;
        self.acpi_pm = state.acpi_pm;
        self.power = state.power;
        Ok(())
    }

    /// Records a stop request. The first request wins, as under QEMU, where
    /// the first one ends the process.
    fn request(&mut self, power: PowerState) {
        if self.power == PowerState::Running {
            self.power = power;
        }
    }

    /// Reads a range that does not wrap past 4 GiB.
    fn read_range(&mut self, addr: u32, buf: &mut [u8]) {
        let in_ram = ram_bytes(addr, buf.len(), self.ram.size());
        let (ram_part, rest) = buf.split_at_mut(in_ram);
        if !ram_part.is_empty() {
            // Cannot fail: `ram_bytes` kept the range inside RAM.
            let _ = self.ram.read(GuestPhysAddr(addr), ram_part);
        }
        if !rest.is_empty() {
            self.read_unbacked(addr.wrapping_add(in_ram as u32), rest);
        }
    }

    /// Writes a range that does not wrap past 4 GiB.
    fn write_range(&mut self, addr: u32, data: &[u8]) {
        let in_ram = ram_bytes(addr, data.len(), self.ram.size());
        let (ram_part, rest) = data.split_at(in_ram);
        if !ram_part.is_empty() {
            let _ = self.ram.write(GuestPhysAddr(addr), ram_part);
        }
        if !rest.is_empty() {
            self.write_unbacked(addr.wrapping_add(in_ram as u32), rest);
        }
    }

    /// A read above RAM. Memory-mapped devices plug in here, each claiming
    /// its region before the unassigned fallback: the IOAPIC at 0xFEC0_0000
    /// and the LAPIC at 0xFEE0_0000 through [`MmioDevice`]. (CGA text memory
    /// at 0xB8000 lies inside RAM and will need a check before RAM instead.)
    fn read_unbacked(&mut self, _addr: u32, buf: &mut [u8]) {
        buf.fill(UNASSIGNED_MEMORY_BYTE);
    }

    /// A write above RAM: the place for MMIO devices, as for reads. Writes
    /// to unassigned addresses are dropped.
    fn write_unbacked(&mut self, _addr: u32, _data: &[u8]) {}

    /// One byte-wide `in`. Devices whose registers are bytes are reached
    /// here, so wider accesses to them are split the way the ISA bus splits
    /// them: low byte at the lowest port.
    fn io_in_byte(&mut self, port: u16) -> u8 {
        match port {
            COM1_BASE..=COM1_LAST => self.com1.read((port - COM1_BASE) as u8),
            POST_CODE => 0xFF,
            // Later work plugs in here: the 8259A PICs (0x20-0x21,
            // 0xA0-0xA1), the 8254 PIT (0x40-0x43), the i8042 (0x60, 0x64),
            // the CMOS RTC (0x70-0x71), ATA (0x1F0-0x1F7, 0x3F6) and the CGA
            // CRT controller (0x3D4-0x3D5).
            _ => {
                self.note_unknown_port(port, "read");
                0xFF
            }
        }
    }

    /// One byte-wide `out`.
    fn io_out_byte(&mut self, port: u16, value: u8) {
        match port {
            COM1_BASE..=COM1_LAST => {
                self.com1.write((port - COM1_BASE) as u8, value);
                // IRQ 4 is now latched in `com1.irq()`; the PIC will read it
                // from there once it exists.
            }
            POST_CODE => self.post_code.write(u32::from(value)),
            _ => self.note_unknown_port(port, "write"),
        }
    }

    fn note_unknown_port(&mut self, port: u16, access: &str) {
        if self.unknown_ports.insert(port) {
            log::warn!(
                "guest {access} at I/O port {port:#06x}, which no bt86 device claims: reads return all-ones and writes are ignored (logged once per port)"
            );
        }
    }
}

/// How many of `len` bytes starting at `addr` lie inside RAM of `ram_size`.
/// RAM starts at 0, so this is the part before `ram_size`.
fn ram_bytes(addr: u32, len: usize, ram_size: u32) -> usize {
    if addr >= ram_size {
        0
    } else {
        len.min((ram_size - addr) as usize)
    }
}

/// Splits an access of `len` bytes at `addr` into pieces that do not cross
/// the 4 GiB wrap, as (address, offset into the buffer, length).
fn pieces(addr: GuestPhysAddr, len: usize) -> impl Iterator<Item = (u32, usize, usize)> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= len {
            return None;
        }
        let start = addr.0.wrapping_add(offset as u32);
        let to_wrap = (1u64 << 32) - u64::from(start);
        let chunk = ((len - offset) as u64).min(to_wrap) as usize;
        let piece = (start, offset, chunk);
        offset += chunk;
        Some(piece)
    })
}

impl Bus for Machine {
    fn read_phys(&mut self, addr: GuestPhysAddr, buf: &mut [u8]) {
        for (start, offset, len) in pieces(addr, buf.len()) {
            self.read_range(start, &mut buf[offset..offset + len]);
        }
    }

    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        for (start, offset, len) in pieces(addr, data.len()) {
            self.write_range(start, &data[offset..offset + len]);
        }
    }

    fn io_in(&mut self, port: u16, size: IoSize) -> u32 {
        match (port, size) {
            (DEBUG_EXIT_BASE..=DEBUG_EXIT_LAST, _) => self.debug_exit.read(),
            (ACPI_PM1A_CNT, IoSize::Word) => u32::from(self.acpi_pm.read_pm1a_cnt()),
            _ => (0..size.bytes()).fold(0, |value, i| {
                let byte = self.io_in_byte(port.wrapping_add(i as u16));
                value | u32::from(byte) << (8 * i)
            }),
        }
    }

    fn io_out(&mut self, port: u16, size: IoSize, value: u32) {
        // Only the bits the access carries reach a device.
        let value = value & size.all_ones();
        match (port, size) {
            (DEBUG_EXIT_BASE..=DEBUG_EXIT_LAST, _) => {
                let request = self.debug_exit.write(value);
                self.request(request);
            }
            (ACPI_PM1A_CNT, IoSize::Word) => {
                if let Some(request) = self.acpi_pm.write_pm1a_cnt(value as u16) {
                    self.request(request);
                }
            }
            _ => {
                for i in 0..size.bytes() {
                    self.io_out_byte(port.wrapping_add(i as u16), (value >> (8 * i)) as u8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::serial;
    use crate::memory::MIN_RAM_SIZE;
    use std::sync::{Arc, Mutex};

    /// A serial output the test can read after the machine wrote to it.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn contents(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    fn machine() -> (Machine, SharedBuf) {
        let out = SharedBuf::default();
        let ram = Ram::anonymous(MIN_RAM_SIZE).unwrap();
        (Machine::new(ram, Box::new(out.clone())), out)
    }

    #[test]
    fn ram_reads_back_and_unassigned_memory_reads_zero() {
        let (mut m, _) = machine();
        let end = MIN_RAM_SIZE;
        m.write_phys(GuestPhysAddr(0x1000), &[1, 2, 3, 4]);
        let mut buf = [0xEEu8; 4];
        m.read_phys(GuestPhysAddr(0x1000), &mut buf);
        assert_eq!(buf, [1, 2, 3, 4]);

        // (address, bytes written there, bytes read back)
        let cases: &[(u32, [u8; 4], [u8; 4])] = &[
            (end - 2, [9, 8, 7, 6], [9, 8, 0, 0]),
            (end, [1, 1, 1, 1], [0, 0, 0, 0]),
            (0x2000_0000, [0x78, 0x56, 0x34, 0x12], [0, 0, 0, 0]),
            (0xFEBF_FFFC, [5; 4], [0; 4]),
            (0xFFC0_0000, [5; 4], [0; 4]),
            (0xFFFF_FFFE, [0xAB, 0xCD, 0x11, 0x22], [0, 0, 0x11, 0x22]),
        ];
        for &(addr, write, read) in cases {
            m.write_phys(GuestPhysAddr(addr), &write);
            let mut buf = [0xEEu8; 4];
            m.read_phys(GuestPhysAddr(addr), &mut buf);
            assert_eq!(buf, read, "address {addr:#x}");
        }
    }

    #[test]
    fn accesses_wrap_at_4_gib() {
        let (mut m, _) = machine();
        m.write_phys(GuestPhysAddr(0xFFFF_FFFF), &[0xAA, 0xBB]);
        let mut low = [0u8; 1];
        m.read_phys(GuestPhysAddr(0), &mut low);
        assert_eq!(low, [0xBB], "the second byte wrapped to address 0");
        let pieces: Vec<_> = pieces(GuestPhysAddr(0xFFFF_FFFE), 5).collect();
        assert_eq!(pieces, vec![(0xFFFF_FFFE, 0, 2), (0, 2, 3)]);
    }

    #[test]
    fn com1_transmits_to_the_output() {
        let (mut m, out) = machine();
        for &b in b"ok" {
            assert_ne!(m.io_in(COM1_BASE + 5, IoSize::Byte) & 0x20, 0, "THRE");
            m.io_out(COM1_BASE, IoSize::Byte, u32::from(b));
        }
        assert_eq!(out.contents(), b"ok");
        m.io_out(COM1_BASE + u16::from(serial::SCR), IoSize::Byte, 0x42);
        assert_eq!(
            m.io_in(COM1_BASE + u16::from(serial::SCR), IoSize::Byte),
            0x42
        );
    }

    #[test]
    fn word_access_to_com1_is_split_into_bytes() {
        let (mut m, out) = machine();
        // Low byte to THR (0x3F8), high byte to IER (0x3F9).
        m.io_out(COM1_BASE, IoSize::Word, 0x0241);
        assert_eq!(out.contents(), b"A");
        assert_eq!(m.io_in(COM1_BASE + 1, IoSize::Byte), 0x02);
        // LSR and MSR read together.
        assert_eq!(m.io_in(COM1_BASE + 5, IoSize::Word), 0xB060);
    }

    #[test]
    fn unknown_ports_read_all_ones_at_every_width() {
        let (mut m, _) = machine();
        let cases: &[(u16, IoSize, u32)] = &[
            (0x200, IoSize::Byte, 0xFF),
            (0x200, IoSize::Word, 0xFFFF),
            (0x200, IoSize::Dword, 0xFFFF_FFFF),
            (0xE000, IoSize::Dword, 0xFFFF_FFFF),
            (0xFFFF, IoSize::Word, 0xFFFF),
        ];
        for &(port, size, value) in cases {
            m.io_out(port, size, 0);
            assert_eq!(m.io_in(port, size), value, "port {port:#x} {size:?}");
        }
        assert!(m.unknown_ports.contains(&0x200) && m.unknown_ports.contains(&0x203));
        assert!(
            m.unknown_ports.contains(&0x0000),
            "0xFFFF + 1 wraps to port 0"
        );
        assert_eq!(m.power(), PowerState::Running);
    }

    #[test]
    fn port_0x80_remembers_the_code_but_reads_all_ones() {
        let (mut m, _) = machine();
        m.io_out(POST_CODE, IoSize::Byte, 0x5A);
        assert_eq!(m.post_code(), 0x5A);
        assert_eq!(m.io_in(POST_CODE, IoSize::Byte), 0xFF);
        assert_eq!(m.io_in(POST_CODE, IoSize::Word), 0xFFFF);
    }

    #[test]
    fn debug_exit_requests_qemu_status_at_every_port_and_width() {
        let cases: &[(u16, IoSize, u32, i32)] = &[
            (0xF4, IoSize::Byte, 0x10, 33),
            (0xF4, IoSize::Word, 0x1234, 0x2469),
            (0xF4, IoSize::Dword, 0x1234_5678, 0x2468_ACF1),
            (0xF5, IoSize::Byte, 1, 3),
            (0xF7, IoSize::Byte, 1, 3),
            // Only the bits an `out` carries count.
            (0xF4, IoSize::Byte, 0x1FF, 0x1FF),
        ];
        for &(port, size, value, status) in cases {
            let (mut m, _) = machine();
            assert_eq!(m.exit_status(), None);
            m.io_out(port, size, value);
            assert_eq!(
                m.exit_status(),
                Some(status),
                "port {port:#x} {size:?} value {value:#x}"
            );
            // A second request does not replace the first.
            m.io_out(port, size, 0);
            assert_eq!(m.exit_status(), Some(status));
        }
        let (mut m, _) = machine();
        assert_eq!(m.io_in(0xF4, IoSize::Byte), 0);
    }

    #[test]
    fn acpi_power_off_needs_a_word_write_to_0x604() {
        let cases: &[(u16, IoSize, u32, PowerState)] = &[
            (0x604, IoSize::Word, 0x2000, PowerState::PowerOff),
            (0x604, IoSize::Word, 0x2800, PowerState::PowerOff),
            (0x604, IoSize::Word, 0x2400, PowerState::Running),
            (0x604, IoSize::Dword, 0x2000, PowerState::Running),
            (0x605, IoSize::Byte, 0x20, PowerState::Running),
            (0x604, IoSize::Word, 0x0000, PowerState::Running),
        ];
        for &(port, size, value, expected) in cases {
            let (mut m, _) = machine();
            m.io_out(port, size, value);
            assert_eq!(
                m.power(),
                expected,
                "port {port:#x} {size:?} value {value:#x}"
            );
        }
        let (mut m, _) = machine();
        m.io_out(0x604, IoSize::Word, 0x0001);
        assert_eq!(m.io_in(0x604, IoSize::Word), 0x0001);
        m.io_out(0x604, IoSize::Word, 0x2000);
        assert_eq!(m.exit_status(), Some(0));
    }

    #[test]
    fn state_round_trip_restores_devices() {
        let (mut m, out) = machine();
        m.io_out(POST_CODE, IoSize::Byte, 0x33);
        m.io_out(COM1_BASE + 7, IoSize::Byte, 0x77);
        m.com1_mut().enqueue_input(b"k");
        let state = m.state();

        let (mut other, _) = machine();
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        assert_eq!(other.io_in(COM1_BASE + 7, IoSize::Byte), 0x77);
        assert_eq!(other.io_in(COM1_BASE, IoSize::Byte), u32::from(b'k'));
        assert_eq!(other.post_code(), 0x33);

        let mut bad = state.clone();
        bad.com1.rx_fifo = vec![0; 100];
        bad.post_code.last = 0x99;
        assert!(m.restore(&bad).is_err());
        assert_eq!(m.post_code(), 0x33, "a failed restore changes nothing");
        m.io_out(COM1_BASE, IoSize::Byte, u32::from(b'!'));
        assert_eq!(
            out.contents(),
            b"!",
            "the output survived the failed restore"
        );
    }
}
