//! The virtual PC minus the CPU: RAM, the devices, and the routing of every
//! physical-memory and I/O-port access to one of them.
//!
//! This module owns the address and port maps: which range belongs to which
//! device, and what an access that nothing claims does. It does not model
//! any device itself (see `devices` and `ports`) and it knows nothing about
//! the CPU, the translation cache or the host: the virtual CPU reaches it
//! only through the [`Bus`] trait.
//!
//! A physical access goes to RAM if it lies below the end of RAM, else to
//! the memory-mapped device whose range holds it (the [`MmioBus`], which
//! also says how an access is split between owners), else to nobody.
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
//! Interrupts: COM1 (IRQ 4), the PIT's channel 0 (IRQ 0), the RTC (IRQ 8)
//! and the primary IDE channel (IRQ 14) drive [`IrqLatch`]es, which the
//! machine forwards to the 8259A pair after every access that can change
//! them and at every [`Machine::advance_to`]. Time reaches the timers only through
//! `advance_to`: port accesses see the devices as of the last call.
//!
//! Known differences from QEMU, none of which a Multiboot kernel should
//! depend on: RAM is contiguous from 0, so the legacy hole [0xA0000,
//! 0x100000) is plain zeroed RAM (QEMU has VGA memory reading 0xFF and the
//! BIOS and option ROMs there); there is no BIOS ROM at 0xFFFC0000; and of
//! the ACPI PM block at 0x600 only PM1a_CNT exists.

use std::collections::BTreeSet;
use std::io::Write;

use thiserror::Error;

use crate::devices::ata::{self, Ata, AtaDrive, AtaState, AtaStateError, DiskError, FlushHandle};
use crate::devices::pic::{self, Chip, Irq, Pic, PicState};
use crate::devices::pit::{self, Pit, PitState};
use crate::devices::rtc::{self, Rtc, RtcState};
use crate::devices::serial::{Serial, SerialState, SerialStateError};
use crate::devices::testdev::{self, PcTestdev};
use crate::devices::IrqLatch;
use crate::memory::Ram;
use crate::mmio::{MmioBus, MmioDevice, MmioDeviceState, MmioError, MmioRange, MmioStateError};
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

/// The 8254 as the machine wires it: channel 0 latched for IRQ 0.
pub type Pit8254 = Pit<IrqLatch>;

/// The CMOS RTC as the machine wires it: latched for IRQ 8.
pub type CmosRtc = Rtc<IrqLatch>;

/// The primary IDE channel as the machine wires it: ports 0x1F0-0x1F7 and
/// 0x3F6, latched for IRQ 14. It exists with or without a disk, as the
/// PIIX IDE function of QEMU's `pc` machine does.
pub type AtaChannel = Ata<IrqLatch>;

/// The wall-clock time the RTC shows at VM start until the caller sets
/// it with [`Machine::set_wall_clock`]: 2000-01-01 00:00:00 UTC, so that a
/// machine built without a clock is still deterministic.
pub const DEFAULT_WALL_CLOCK: i64 = 946_684_800;

/// The value an unassigned physical address reads as, per byte (see the
/// module documentation for the measurement).
pub const UNASSIGNED_MEMORY_BYTE: u8 = 0x00;

/// The guest-visible state of the machine's devices, as plain data for
/// snapshots. RAM is not included: it is its own file in the VM folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineState {
    pub com1: SerialState,
    pub pic: PicState,
    pub pit: PitState,
    pub rtc: RtcState,
    pub ata: AtaState,
    /// Virtual nanoseconds since the VM started, as last advanced.
    pub now_ns: u64,
    pub post_code: PostCode,
    pub acpi_pm: AcpiPm,
    pub power: PowerState,
    /// The memory-mapped devices (`-device pc-testdev`, ...), by name, in
    /// address order.
    pub mmio: Vec<MmioDeviceState>,
}

/// A device snapshot that cannot be restored.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MachineError {
    #[error("cannot restore COM1: {0}")]
    Com1(#[from] SerialStateError),
    #[error("cannot restore the ATA disk channel: {0}")]
    Ata(#[from] AtaStateError),
    #[error("{0}")]
    Mmio(#[from] MmioStateError),
}

/// The virtual PC's RAM and devices behind one [`Bus`].
pub struct Machine {
    ram: Ram,
    com1: Com1,
    pic: Pic,
    pit: Pit8254,
    rtc: CmosRtc,
    ata: AtaChannel,
    /// Virtual nanoseconds since the VM started, as last advanced.
    now_ns: u64,
    debug_exit: DebugExit,
    post_code: PostCode,
    acpi_pm: AcpiPm,
    power: PowerState,
    /// Unassigned ports already reported, so each is logged only once.
    unknown_ports: BTreeSet<u16>,
    /// Memory-mapped devices, reached for physical addresses above RAM.
    mmio: MmioBus,
}

impl Machine {
    /// A machine with `ram`, COM1 writing to `serial_output`, and every
    /// device as a Multiboot kernel finds it under QEMU (after SeaBIOS):
    /// the PICs initialized with bases 0x08 and 0x70, the PIT interrupting
    /// at 18.2 Hz, the RTC at [`DEFAULT_WALL_CLOCK`] with QEMU's CMOS
    /// bytes for this RAM size. Virtual time starts at 0.
    pub fn new(ram: Ram, serial_output: SerialOutput) -> Machine {
        let mut rtc = Rtc::new(DEFAULT_WALL_CLOCK, IrqLatch::default());
        rtc.set_memory_size(ram.size());
        let mut machine = Machine {
            ram,
            com1: Serial::new(serial_output, IrqLatch::default()),
            pic: Pic::after_bios(),
            pit: Pit::after_bios(IrqLatch::default()),
            rtc,
            ata: Ata::new(IrqLatch::default()),
            now_ns: 0,
            debug_exit: DebugExit,
            post_code: PostCode::default(),
            acpi_pm: AcpiPm::default(),
            power: PowerState::Running,
            unknown_ports: BTreeSet::new(),
            mmio: MmioBus::new(),
        };
        // The lines' power-on levels are not requests.
        let Machine {
            pic,
            pit,
            com1,
            rtc,
            ata,
            ..
        } = &mut machine;
        for (irq, latch) in irq_wiring(pit, com1, rtc, ata) {
            latch.take_rising_edge();
            pic.reset_line(irq, latch.level());
        }
        machine
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Ram {
        &self.ram
    }

    /// Guest RAM, mutably (for loaders and the native layer).
    pub fn ram_mut(&mut self) -> &mut Ram {
        &mut self.ram
    }

    /// Whether `addr` is guest RAM. RAM is contiguous from 0, so this is
    /// `addr < RAM size`. Only RAM may be mapped into the host; the native
    /// layer maps a guest page only if this holds for it.
    pub fn is_ram(&self, addr: GuestPhysAddr) -> bool {
        addr.0 < self.ram.size()
    }

    /// Whether a memory-mapped device claims `addr`. The native layer never
    /// maps such a page into the host, so that every guest access to it
    /// faults and is emulated against the device.
    pub fn mmio_at(&self, addr: GuestPhysAddr) -> bool {
        !self.is_ram(addr) && self.mmio.contains(addr)
    }

    /// The MMIO map, to list the devices and their ranges.
    pub fn mmio(&self) -> &MmioBus {
        &self.mmio
    }

    /// Puts a memory-mapped device on the bus at `range`, under `name`.
    /// Refused if the range overlaps RAM (which is routed first and would
    /// hide the device) or another device; nothing changes then.
    pub fn add_mmio_device(
        &mut self,
        name: &str,
        range: MmioRange,
        device: Box<dyn MmioDevice>,
    ) -> Result<(), MmioError> {
        let ram_end = u64::from(self.ram.size());
        if u64::from(range.base().0) < ram_end {
            return Err(MmioError::OverlapsRam {
                name: name.to_string(),
                range,
                ram_end,
            });
        }
        self.mmio.register(name, range, device)
    }

    /// Adds QEMU's `pc-testdev` memory window at 0xFF00_0000, as
    /// `-device pc-testdev` does under QEMU (see `devices::testdev`).
    pub fn add_pc_testdev(&mut self) -> Result<(), MmioError> {
        self.add_mmio_device(
            testdev::NAME,
            PcTestdev::range()?,
            Box::new(PcTestdev::new()),
        )
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

    /// Sets the RTC's date and time at virtual time 0 (VM start), in
    /// seconds since 1970-01-01 00:00:00 UTC. The monitor passes the host's
    /// wall clock when it builds the VM; tests pass a fixed time.
    pub fn set_wall_clock(&mut self, unix_secs_at_start: i64) {
        self.rtc.set_wall_clock(unix_secs_at_start);
    }

    /// Virtual nanoseconds since the VM started, as last advanced.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The 8259A pair, to inspect (debugger, statistics).
    pub fn pic(&self) -> &Pic {
        &self.pic
    }

    /// The 8254, to inspect.
    pub fn pit(&self) -> &Pit8254 {
        &self.pit
    }

    /// The CMOS RTC, to inspect.
    pub fn rtc(&self) -> &CmosRtc {
        &self.rtc
    }

    /// The primary IDE channel, to inspect.
    pub fn ata(&self) -> &AtaChannel {
        &self.ata
    }

    /// Connects `drive` as the master disk of the primary IDE channel
    /// (`--disk`), replacing any disk there. Call it before the guest runs:
    /// the channel starts over as at power-on.
    pub fn attach_disk(&mut self, drive: AtaDrive) {
        self.ata.attach(drive);
        self.forward_irqs();
    }

    /// A handle that flushes the disk image from another thread (a signal
    /// watcher, say) while the VM runs; None without a file-backed disk.
    pub fn disk_flush_handle(&self) -> Option<FlushHandle> {
        self.ata.drive().and_then(AtaDrive::flush_handle)
    }

    /// Makes every disk write the guest saw complete durable (fdatasync of
    /// the image). The run loop calls it when the guest stops, however it
    /// stops; without a disk it does nothing.
    pub fn flush_disk(&mut self) -> Result<(), DiskError> {
        self.ata.flush()
    }

    /// Advances every device to virtual time `now_ns` (nanoseconds since
    /// the VM started), raising IRQ lines as timers fire. Time never goes
    /// back: an earlier `now_ns` changes nothing. Call it at every exit
    /// from guest code, before emulating the instruction that exited, so
    /// that a port read sees the counters of that moment.
    pub fn advance_to(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
            self.pit.advance(now_ns);
            self.rtc.advance(now_ns);
        }
        self.forward_irqs();
    }

    /// The earliest virtual time at which some device will raise an
    /// interrupt on its own (None if none is armed): the run loop sleeps
    /// until then on `hlt`, and arms its host timer for it.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.pit.next_deadline(), self.rtc.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the PIC asserts INTR (an unmasked, higher-priority-than-
    /// in-service request is pending). This includes COM1 input that the
    /// run loop queued since the last device access.
    pub fn interrupt_pending(&self) -> bool {
        let mut pic = self.pic.clone();
        let mut com1 = *self.com1.irq();
        forward(&mut pic, Irq::COM1, &mut com1);
        pic.intr()
    }

    /// The interrupt-acknowledge cycle: the vector the CPU must take, with
    /// the PIC's IRR/ISR updated; None if nothing is pending any more. A
    /// spurious IRQ 15 (the slave's request vanished after the master
    /// latched it) returns the slave's base+7 with the master's IRQ 2 in
    /// service, as on hardware; the guest must take it. When the master
    /// itself has nothing, the answer is None rather than its spurious
    /// base+7: QEMU's CPU, too, only acknowledges while INTR is asserted.
    pub fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.forward_irqs();
        if !self.pic.intr() {
            return None;
        }
        let ack = self.pic.acknowledge();
        if ack.irq.is_none() {
            log::debug!("8259A spurious interrupt: vector {:#04x}", ack.vector);
        }
        Some(ack.vector)
    }

    /// Carries every device's interrupt line to the PIC.
    fn forward_irqs(&mut self) {
        for (irq, latch) in irq_wiring(&mut self.pit, &mut self.com1, &mut self.rtc, &mut self.ata)
        {
            forward(&mut self.pic, irq, latch);
        }
    }

    /// The devices' state, for a snapshot.
    pub fn state(&self) -> MachineState {
        MachineState {
            com1: self.com1.state(),
            pic: self.pic.state(),
            pit: self.pit.state(),
            rtc: self.rtc.state(),
            ata: self.ata.state(),
            now_ns: self.now_ns,
            post_code: self.post_code,
            acpi_pm: self.acpi_pm,
            power: self.power,
            mmio: self.mmio.state(),
        }
    }

    /// Puts the devices back in a state taken with [`Machine::state`],
    /// keeping this machine's RAM and serial output. On error the machine
    /// is unchanged.
    pub fn restore(&mut self, state: &MachineState) -> Result<(), MachineError> {
        state.ata.check()?;
        self.mmio.check(&state.mmio)?;
        self.com1.restore(&state.com1)?;
        self.ata.restore(&state.ata)?;
        self.pic.restore(&state.pic);
        self.pit.restore(&state.pit);
        self.rtc.restore(&state.rtc);
        self.now_ns = state.now_ns;
        // The restored PIC already holds the line levels: the latches'
        // changes while restoring are not new requests.
        for (_, latch) in irq_wiring(&mut self.pit, &mut self.com1, &mut self.rtc, &mut self.ata) {
            latch.take_rising_edge();
        }
        self.post_code = state.post_code;
        self.acpi_pm = state.acpi_pm;
        self.power = state.power;
        self.mmio.restore(&state.mmio)?;
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

    /// A read above RAM: the MMIO bus gives each device its part and fills
    /// the rest with the unassigned value. (CGA text memory at 0xB8000 lies
    /// inside RAM; it will need a hole in RAM, since RAM is routed first.)
    fn read_unbacked(&mut self, addr: u32, buf: &mut [u8]) {
        self.mmio.read(GuestPhysAddr(addr), buf);
    }

    /// A write above RAM: to the MMIO devices, as for reads. Writes to
    /// unassigned addresses are dropped.
    fn write_unbacked(&mut self, addr: u32, data: &[u8]) {
        self.mmio.write(GuestPhysAddr(addr), data);
    }

    /// One byte-wide `in`. Devices whose registers are bytes are reached
    /// here, so wider accesses to them are split the way the ISA bus splits
    /// them: low byte at the lowest port.
    fn io_in_byte(&mut self, port: u16) -> u8 {
        match port {
            COM1_BASE..=COM1_LAST => {
                let value = self.com1.read((port - COM1_BASE) as u8);
                self.forward_irqs();
                value
            }
            POST_CODE => 0xFF,
            pic::MASTER_COMMAND | pic::MASTER_DATA => self
                .pic
                .read(Chip::Master, (port - pic::MASTER_COMMAND) as u8),
            pic::SLAVE_COMMAND | pic::SLAVE_DATA => self
                .pic
                .read(Chip::Slave, (port - pic::SLAVE_COMMAND) as u8),
            pic::ELCR_MASTER => self.pic.read_elcr(Chip::Master),
            pic::ELCR_SLAVE => self.pic.read_elcr(Chip::Slave),
            pit::CHANNEL0..=pit::CONTROL => self.pit.read(port),
            pit::PORT_B => self.pit.read_port_b(),
            rtc::INDEX_PORT | rtc::DATA_PORT => {
                // Reading register C lowers IRQ 8.
                let value = self.rtc.read(port);
                self.forward_irqs();
                value
            }
            ata::PRIMARY_BASE..=ata::PRIMARY_LAST => {
                // Reading the status register lowers IRQ 14.
                let value = self.ata.read((port - ata::PRIMARY_BASE) as u8);
                self.forward_irqs();
                value
            }
            ata::PRIMARY_CONTROL => self.ata.read_alt_status(),
            // Later work plugs in here: the i8042 (0x60, 0x64) and the CGA
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
                self.forward_irqs();
            }
            POST_CODE => self.post_code.write(u32::from(value)),
            pic::MASTER_COMMAND | pic::MASTER_DATA => {
                self.pic
                    .write(Chip::Master, (port - pic::MASTER_COMMAND) as u8, value)
            }
            pic::SLAVE_COMMAND | pic::SLAVE_DATA => {
                self.pic
                    .write(Chip::Slave, (port - pic::SLAVE_COMMAND) as u8, value)
            }
            pic::ELCR_MASTER => self.pic.write_elcr(Chip::Master, value),
            pic::ELCR_SLAVE => self.pic.write_elcr(Chip::Slave, value),
            pit::CHANNEL0..=pit::CONTROL => {
                self.pit.write(port, value);
                self.forward_irqs();
            }
            pit::PORT_B => self.pit.write_port_b(value),
            rtc::INDEX_PORT | rtc::DATA_PORT => {
                self.rtc.write(port, value);
                self.forward_irqs();
            }
            ata::PRIMARY_BASE..=ata::PRIMARY_LAST => {
                self.ata.write((port - ata::PRIMARY_BASE) as u8, value);
                self.forward_irqs();
            }
            ata::PRIMARY_CONTROL => {
                // nIEN and SRST change IRQ 14.
                self.ata.write_device_control(value);
                self.forward_irqs();
            }
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

/// Carries one device's interrupt line to the PIC. A rise the PIC has not
/// seen yet is given to it as a fresh edge even if the line has fallen
/// again since (a timer's pulse), and the line then rests at the device's
/// level.
fn forward(pic: &mut Pic, irq: Irq, latch: &mut IrqLatch) {
    if latch.take_rising_edge() {
        pic.set_irq(irq, false);
        pic.set_irq(irq, true);
    }
    pic.set_irq(irq, latch.level());
}

/// The ISA wiring of the PC: which device's latch drives which IRQ line.
fn irq_wiring<'a>(
    pit: &'a mut Pit8254,
    com1: &'a mut Com1,
    rtc: &'a mut CmosRtc,
    ata: &'a mut AtaChannel,
) -> [(Irq, &'a mut IrqLatch); 4] {
    [
        (Irq::PIT, pit.irq_mut()),
        (Irq::COM1, com1.irq_mut()),
        (Irq::RTC, rtc.irq_mut()),
        (Irq(ata::PRIMARY_IRQ), ata.irq_mut()),
    ]
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
        // The common case, every descriptor, gate and stack access of the
        // virtual CPU: wholly inside RAM.
        if addr.0 as usize + buf.len() <= self.ram.size() as usize {
            let _ = self.ram.read(addr, buf);
            return;
        }
        for (start, offset, len) in pieces(addr, buf.len()) {
            self.read_range(start, &mut buf[offset..offset + len]);
        }
    }

    fn write_phys(&mut self, addr: GuestPhysAddr, data: &[u8]) {
        if addr.0 as usize + data.len() <= self.ram.size() as usize {
            let _ = self.ram.write(addr, data);
            return;
        }
        for (start, offset, len) in pieces(addr, data.len()) {
            self.write_range(start, &data[offset..offset + len]);
        }
    }

    fn io_in(&mut self, port: u16, size: IoSize) -> u32 {
        match (port, size) {
            (DEBUG_EXIT_BASE..=DEBUG_EXIT_LAST, _) => self.debug_exit.read(),
            (ACPI_PM1A_CNT, IoSize::Word) => u32::from(self.acpi_pm.read_pm1a_cnt()),
            // The ATA data register moves 16 or 32 bits at once; byte
            // accesses and the other registers go through the byte path.
            (ata::PRIMARY_BASE, IoSize::Word | IoSize::Dword) => {
                let value = self.ata.read_data(size);
                self.forward_irqs();
                value
            }
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
            (ata::PRIMARY_BASE, IoSize::Word | IoSize::Dword) => {
                self.ata.write_data(size, value);
                self.forward_irqs();
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

    /// The guest side of the PICs: Linux's `init_8259A` (bases 0x20/0x28)
    /// through the machine's ports, then the masks.
    fn init_pics(m: &mut Machine, master_mask: u8, slave_mask: u8) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x28),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, master_mask),
            (0xA1, slave_mask),
        ] {
            m.io_out(port, IoSize::Byte, u32::from(value));
        }
    }

    /// Runs virtual time to `end_ns` in `step_ns` steps as the run loop
    /// would, taking every interrupt and sending the EOIs a guest handler
    /// sends (reading RTC register C first for IRQ 8). Returns the vectors.
    fn run_guest(m: &mut Machine, end_ns: u64, step_ns: u64) -> Vec<u8> {
        let mut vectors = Vec::new();
        let mut t = m.now_ns();
        while t < end_ns {
            t = (t + step_ns).min(end_ns);
            m.advance_to(t);
            while m.interrupt_pending() {
                let vector = m.acknowledge_interrupt().expect("INTR was asserted");
                vectors.push(vector);
                if vector == 0x28 {
                    m.io_out(0x70, IoSize::Byte, 0x0C);
                    m.io_in(0x71, IoSize::Byte);
                    m.io_out(0xA0, IoSize::Byte, 0x20);
                }
                m.io_out(0x20, IoSize::Byte, 0x20);
            }
        }
        vectors
    }

    #[test]
    fn pit_ticks_reach_the_cpu_through_the_pic() {
        let (mut m, _) = machine();
        init_pics(&mut m, 0xFE, 0xFF);
        // Linux's PIT setup for HZ=100: mode 2, LATCH = 11932.
        m.io_out(0x43, IoSize::Byte, 0x34);
        m.io_out(0x40, IoSize::Byte, 11932 & 0xFF);
        m.io_out(0x40, IoSize::Byte, 11932 >> 8);
        // The 100th tick is at 1.0000151 s.
        let vectors = run_guest(&mut m, 1_000_100_000, 1_000_000);
        assert_eq!(vectors.len(), 100);
        assert!(vectors.iter().all(|&v| v == 0x20), "{vectors:x?}");
    }

    #[test]
    fn masked_irq0_stays_silent_until_unmasked() {
        let (mut m, _) = machine();
        init_pics(&mut m, 0xFF, 0xFF);
        m.advance_to(100_000_000);
        assert!(!m.interrupt_pending());
        assert_eq!(m.acknowledge_interrupt(), None);
        // The request waits in IRR.
        m.io_out(0x20, IoSize::Byte, 0x0A);
        assert_eq!(m.io_in(0x20, IoSize::Byte) & 1, 1);
        m.io_out(0x21, IoSize::Byte, 0xFE);
        assert!(m.interrupt_pending());
        assert_eq!(m.acknowledge_interrupt(), Some(0x20));
    }

    #[test]
    fn bios_state_delivers_the_timer_at_vector_8() {
        let (mut m, _) = machine();
        assert!(
            !m.interrupt_pending(),
            "the power-on level is not a request"
        );
        // 65536 clocks of 1 193 182 Hz, rounded up to the next nanosecond.
        assert_eq!(m.next_deadline(), Some(54_925_402));
        let vectors = run_guest(&mut m, 1_000_000_000, 10_000_000);
        assert_eq!(vectors, vec![0x08; 18]);
    }

    #[test]
    fn com1_interrupt_reaches_the_pic_on_irq4() {
        let (mut m, _) = machine();
        init_pics(&mut m, 0xEF, 0xFF);
        m.io_out(COM1_BASE + 1, IoSize::Byte, u32::from(serial::IER_RDA));
        assert!(!m.interrupt_pending());
        // Input queued by the run loop, with no port access since.
        m.com1_mut().enqueue_input(b"x");
        assert!(m.interrupt_pending());
        assert_eq!(m.acknowledge_interrupt(), Some(0x24));
        assert_eq!(m.io_in(COM1_BASE, IoSize::Byte), u32::from(b'x'));
        m.io_out(0x20, IoSize::Byte, 0x20);
        assert!(!m.interrupt_pending(), "the byte was read: the line fell");
    }

    #[test]
    fn rtc_periodic_interrupt_arrives_on_irq8() {
        let (mut m, _) = machine();
        init_pics(&mut m, 0xFB, 0xFE);
        // Silence the PIT (mode 0 control word, no count).
        m.io_out(0x43, IoSize::Byte, 0x30);
        // PIE, keeping 24-hour BCD; the rate stays 6 (1024 Hz).
        m.io_out(0x70, IoSize::Byte, 0x0B);
        m.io_out(0x71, IoSize::Byte, 0x42);
        let mut vectors = Vec::new();
        while let Some(t) = m.next_deadline().filter(|&t| t <= 100_000_000) {
            let step = t - m.now_ns();
            vectors.extend(run_guest(&mut m, t, step));
        }
        // 100 ms at 1024 Hz: 102 periods (the 103rd ends at 100.6 ms).
        assert_eq!(vectors, vec![0x28; 102]);
    }

    #[test]
    fn cmos_reports_memory_as_qemu_does() {
        let ram = Ram::anonymous(128 << 20).unwrap();
        let mut m = Machine::new(ram, Box::new(std::io::sink()));
        let mut cmos = |i: u32| {
            m.io_out(0x70, IoSize::Byte, i);
            m.io_in(0x71, IoSize::Byte)
        };
        let sizes: Vec<u32> = [0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35]
            .into_iter()
            .map(&mut cmos)
            .collect();
        assert_eq!(sizes, vec![0x80, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x07]);
        // 2000-01-01, the default wall clock, in BCD.
        assert_eq!(
            [0x09, 0x08, 0x07, 0x32].map(&mut cmos),
            [0x00, 0x01, 0x01, 0x20]
        );
        m.set_wall_clock(1_709_214_356);
        m.io_out(0x70, IoSize::Byte, 0x09);
        assert_eq!(m.io_in(0x71, IoSize::Byte), 0x24);
    }

    #[test]
    fn timer_ports_are_routed() {
        let (mut m, _) = machine();
        // Read-back status of channel 0 as SeaBIOS left it.
        m.io_out(0x43, IoSize::Byte, 0xE2);
        assert_eq!(m.io_in(0x40, IoSize::Byte) & 0x7F, 0x34);
        assert_eq!(m.io_in(0x43, IoSize::Byte), 0);
        m.io_out(0x61, IoSize::Byte, 0x03);
        assert_eq!(m.io_in(0x61, IoSize::Byte) & 0x03, 0x03);
        assert_eq!(m.io_in(0x70, IoSize::Byte), 0xFF);
        m.io_out(0x4D1, IoSize::Byte, 0xFF);
        assert_eq!(m.io_in(0x4D0, IoSize::Word), 0xDE00);
        assert!(m.unknown_ports.is_empty(), "{:?}", m.unknown_ports);
    }

    #[test]
    fn ata_disk_is_routed_and_interrupts_on_irq14() {
        let path =
            std::env::temp_dir().join(format!("bt86-machine-ata-{}.img", std::process::id()));
        let image: Vec<u8> = (0..4 * 512).map(|i| (i / 512 * 16 + i % 7) as u8).collect();
        std::fs::write(&path, &image).unwrap();
        let drive = AtaDrive::open(&path, false);
        let _ = std::fs::remove_file(&path);
        let (mut m, _) = machine();
        // Without a disk the channel reads 0 (no drive), not all-ones.
        assert_eq!(m.io_in(0x1F7, IoSize::Byte), 0);
        m.attach_disk(drive.unwrap());
        assert!(m.disk_flush_handle().is_some());
        init_pics(&mut m, 0xFB, 0xBF);
        assert_eq!(m.io_in(0x3F6, IoSize::Byte), 0x50, "DRDY | DSC");
        // READ SECTORS, LBA 2, one sector.
        for (port, value) in [
            (0x1F6, 0xE0),
            (0x1F2, 1),
            (0x1F3, 2),
            (0x1F4, 0),
            (0x1F5, 0),
            (0x1F7, 0x20),
        ] {
            m.io_out(port, IoSize::Byte, value);
        }
        assert!(m.interrupt_pending());
        assert_eq!(m.acknowledge_interrupt(), Some(0x2E), "IRQ 14 on the slave");
        assert_eq!(m.io_in(0x1F7, IoSize::Byte), 0x58, "DRDY | DSC | DRQ");
        let mut data = Vec::new();
        for _ in 0..128 {
            data.extend((m.io_in(0x1F0, IoSize::Word) as u16).to_le_bytes());
        }
        for _ in 0..64 {
            data.extend(m.io_in(0x1F0, IoSize::Dword).to_le_bytes());
        }
        assert!(
            data == image[1024..1536],
            "sector 2 through 16- and 32-bit reads"
        );
        assert_eq!(m.io_in(0x1F0, IoSize::Byte), 0xFF);
        m.io_out(0xA0, IoSize::Byte, 0x20);
        m.io_out(0x20, IoSize::Byte, 0x20);
        assert!(!m.interrupt_pending(), "the status read lowered IRQ 14");
        // nIEN keeps the next command's interrupt off the line.
        m.io_out(0x3F6, IoSize::Byte, 0x02);
        m.io_out(0x1F7, IoSize::Byte, 0xE7);
        assert!(!m.interrupt_pending());
        m.io_out(0x3F6, IoSize::Byte, 0x00);
        assert!(m.interrupt_pending());
        assert_eq!(m.state().ata, m.ata().state());
        m.flush_disk().unwrap();
        assert!(m.unknown_ports.is_empty(), "{:?}", m.unknown_ports);
    }

    #[test]
    fn time_never_goes_back() {
        let (mut m, _) = machine();
        m.advance_to(5_000_000);
        m.advance_to(1_000_000);
        assert_eq!(m.now_ns(), 5_000_000);
        assert_eq!(m.pit().now(), 5_000_000);
    }

    #[test]
    fn snapshot_keeps_timers_and_pending_interrupts() {
        let (mut m, _) = machine();
        init_pics(&mut m, 0xFE, 0xFF);
        m.io_out(0x43, IoSize::Byte, 0x34);
        m.io_out(0x40, IoSize::Byte, 0x9C);
        m.io_out(0x40, IoSize::Byte, 0x2E);
        m.advance_to(15_000_000);
        assert!(m.interrupt_pending());
        let state = m.state();

        let (mut other, _) = machine();
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        assert_eq!(other.next_deadline(), m.next_deadline());
        assert_eq!(other.acknowledge_interrupt(), Some(0x20));
        assert_eq!(
            other.acknowledge_interrupt(),
            None,
            "restoring made no extra request"
        );
        other.io_out(0x20, IoSize::Byte, 0x20);
        assert_eq!(run_guest(&mut other, 1_000_100_000, 1_000_000).len(), 99);
    }

    /// The memory-mapped devices are part of the snapshot: pc-testdev's
    /// window comes back byte for byte, and a snapshot whose devices are
    /// not this machine's, or whose window is damaged, is refused with
    /// nothing changed.
    #[test]
    fn state_round_trip_restores_mmio_devices() {
        let window = testdev::IOMEM_BASE;
        let (mut m, _) = machine();
        m.add_pc_testdev().unwrap();
        m.write_phys(GuestPhysAddr(window.0 + 0x123), &[0xDE, 0xAD, 0xBE, 0xEF]);
        m.io_out(POST_CODE, IoSize::Byte, 0x44);
        let state = m.state();
        assert_eq!(state.mmio.len(), 1);
        assert_eq!(state.mmio[0].name, testdev::NAME);

        let (mut other, _) = machine();
        other.add_pc_testdev().unwrap();
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        let mut buf = [0u8; 4];
        other.read_phys(GuestPhysAddr(window.0 + 0x123), &mut buf);
        assert_eq!(buf, [0xDE, 0xAD, 0xBE, 0xEF]);

        let (mut plain, _) = machine();
        let err = plain.restore(&state).unwrap_err();
        assert!(err.to_string().contains("pc-testdev"), "{err}");
        assert_eq!(plain.post_code(), 0, "a refused restore changes nothing");

        let mut damaged = state.clone();
        damaged.mmio[0].state.truncate(100);
        let (mut fresh, _) = machine();
        fresh.add_pc_testdev().unwrap();
        let err = fresh.restore(&damaged).unwrap_err();
        assert!(err.to_string().contains("100 bytes"), "{err}");
        assert_eq!(fresh.post_code(), 0, "a refused restore changes nothing");
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
