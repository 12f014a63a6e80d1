//! The Motorola MC146818 real-time clock and its CMOS memory, reached
//! through an index port at 0x70 and a data port at 0x71.
//!
//! This module owns the 128 bytes of CMOS: the date and time registers,
//! the alarm, status registers A-D, and the configuration bytes a BIOS
//! leaves for the operating system (memory sizes, equipment). It does not
//! read any clock: the wall-clock time at VM start is given to
//! [`Rtc::new`], and the caller advances virtual time with
//! [`Rtc::advance`]; the date a guest reads is the start time plus the
//! virtual seconds since. The interrupt goes out on an [`IrqLine`] (IRQ 8
//! on a PC), high while register C's IRQF bit is set.
//!
//! The register semantics follow the MC146818A data sheet. Where bt86
//! relies on QEMU's `hw/rtc/mc146818rtc.c` (QEMU is the reference for what
//! a guest sees):
//! - Reset values: A = 0x26 (32.768 kHz time base, rate 6 = 1024 Hz),
//!   B = 0x02 (24-hour, BCD), C = 0, D = 0x80 (valid RAM and time).
//! - The century is CMOS byte 0x32, part of the date; byte 0x37 holds a
//!   copy from VM start (the IBM PS/2 location), as QEMU's BIOS setup does.
//! - UIP (register A bit 7) is set for the last 244 µs before each second
//!   ends, which is when the update cycle is about to change the time.
//! - Time registers written while SET is clear take effect at once; while
//!   SET is set, the clock is frozen and the registers are plain bytes
//!   until SET is cleared. Setting SET clears UIE (data sheet).
//! - The day of the week is computed from the date (1 = Sunday); writes to
//!   it are ignored, as QEMU effectively does.
//! - Reading port 0x70 returns 0xFF (measured under QEMU 7.2). Bit 7 of an
//!   index write is the NMI mask of the PC's NMI logic; bt86 keeps it (see
//!   [`Rtc::nmi_enabled`]) although no device raises NMI yet.
//!
//! One difference from QEMU: the periodic flag PF in register C is set at
//! the rate of register A whether or not PIE enables its interrupt, as the
//! data sheet says; QEMU runs the periodic timer only while PIE is set. The
//! divider-control bits of register A are stored but the oscillator always
//! runs.

use super::time::{nanos_for_ticks, ticks_in, NANOS_PER_SEC};
use super::IrqLine;

/// The index port; bit 7 of a write masks NMI.
pub const INDEX_PORT: u16 = 0x70;
/// The data port: reads and writes the byte the index selects.
pub const DATA_PORT: u16 = 0x71;

/// Index write bit 7: NMI disabled.
pub const INDEX_NMI_DISABLE: u8 = 0x80;

/// Register indices.
pub const SECONDS: u8 = 0x00;
pub const SECONDS_ALARM: u8 = 0x01;
pub const MINUTES: u8 = 0x02;
pub const MINUTES_ALARM: u8 = 0x03;
pub const HOURS: u8 = 0x04;
pub const HOURS_ALARM: u8 = 0x05;
pub const DAY_OF_WEEK: u8 = 0x06;
pub const DAY_OF_MONTH: u8 = 0x07;
pub const MONTH: u8 = 0x08;
pub const YEAR: u8 = 0x09;
pub const REG_A: u8 = 0x0A;
pub const REG_B: u8 = 0x0B;
pub const REG_C: u8 = 0x0C;
pub const REG_D: u8 = 0x0D;
/// The century, in the format of the other date registers.
pub const CENTURY: u8 = 0x32;
/// The IBM PS/2 century byte, set once at VM start.
pub const PS2_CENTURY: u8 = 0x37;

/// Register A: update in progress.
pub const A_UIP: u8 = 0x80;
/// Register A: rate select, bits 3:0.
pub const A_RATE_MASK: u8 = 0x0F;
/// Register B: SET, the clock is halted for setting.
pub const B_SET: u8 = 0x80;
/// Register B: periodic interrupt enable.
pub const B_PIE: u8 = 0x40;
/// Register B: alarm interrupt enable.
pub const B_AIE: u8 = 0x20;
/// Register B: update-ended interrupt enable.
pub const B_UIE: u8 = 0x10;
/// Register B: data mode, 1 = binary, 0 = BCD.
pub const B_DM_BINARY: u8 = 0x04;
/// Register B: 1 = 24-hour mode, 0 = 12-hour mode.
pub const B_24H: u8 = 0x02;
/// Register C: an enabled flag is set (the interrupt line is high).
pub const C_IRQF: u8 = 0x80;
/// Register C: periodic flag.
pub const C_PF: u8 = 0x40;
/// Register C: alarm flag.
pub const C_AF: u8 = 0x20;
/// Register C: update-ended flag.
pub const C_UF: u8 = 0x10;
/// Register D: valid RAM and time.
pub const D_VRT: u8 = 0x80;
/// Hours register in 12-hour mode: PM.
pub const HOURS_PM: u8 = 0x80;

/// The time base crystal.
pub const RTC_HZ: u64 = 32_768;
/// How long before the end of a second UIP is set: 8 cycles of 32.768 kHz.
pub const UIP_NS: u64 = 244_141;

/// An alarm register value at or above this matches any value.
const ALARM_DONT_CARE: u8 = 0xC0;
/// How many elapsed seconds the alarm check looks at after a long jump of
/// virtual time: a day covers every alarm pattern.
const ALARM_SCAN_LIMIT: u64 = 86_400;

/// CMOS configuration bytes measured under QEMU 7.2's `pc` machine (with
/// `-kernel` and no disks), other than memory sizes and the century:
/// (index, value). 0x10: floppy drive types (QEMU's 2.88 MB fallback for
/// an empty drive); 0x14: equipment (floppy, FPU, PS/2 mouse); 0x38 and
/// 0x3D: SeaBIOS boot order.
pub const QEMU_CONFIG_BYTES: [(u8, u8); 4] =
    [(0x10, 0x50), (0x14, 0x07), (0x38, 0x30), (0x3D, 0x12)];

/// The complete state of an [`Rtc`], as plain data for snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcState {
    /// The 128 CMOS bytes. The date and time bytes are meaningful only
    /// while SET halts the clock; otherwise they are computed on read.
    pub cmos: [u8; 128],
    /// The index the next data-port access uses.
    pub index: u8,
    /// Bit 7 of the last index write.
    pub nmi_disabled: bool,
    /// The RTC's time, in seconds since the Unix epoch, at virtual time 0:
    /// while the clock runs, the time is this plus the whole virtual
    /// seconds elapsed.
    pub base_secs: i64,
    /// The virtual time the clock has been advanced to.
    pub now_ns: u64,
}

/// A broken-down date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// 1 = Sunday.
    weekday: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `day` may run past the month's end; the result then
/// lands in the next month, which is how a guest writing the fields of a
/// new date one at a time is treated.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl DateTime {
    fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday (4 with Sunday = 0).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0F)
}

/// Whether `index` is a date or time register (alarms excluded).
fn is_time_register(index: u8) -> bool {
    matches!(
        index,
        SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY
    )
}

/// The period of the periodic interrupt, in 32.768 kHz cycles, for a rate
/// select value; `None` for rate 0 (off). Rates 1 and 2 give 256 and
/// 128 Hz with a 32.768 kHz time base, like rates 8 and 9 (data sheet,
/// table "Periodic Interrupt Rate").
pub fn periodic_cycles(rate: u8) -> Option<u64> {
    match rate & A_RATE_MASK {
        0 => None,
        r @ 1..=2 => Some(1 << (r + 6)),
        r => Some(1 << (r - 1)),
    }
}

/// An MC146818 driving the interrupt line `I`.
pub struct Rtc<I: IrqLine> {
    state: RtcState,
    irq: I,
}

impl<I: IrqLine> Rtc<I> {
    /// A clock whose time at virtual time 0 is `start_unix_secs` (seconds
    /// since 1970-01-01 00:00:00 UTC), with QEMU's reset registers and
    /// configuration bytes. Memory-size bytes are 0 until
    /// [`Rtc::set_memory_size`].
    pub fn new(start_unix_secs: i64, irq: I) -> Self {
        let mut cmos = [0u8; 128];
        cmos[usize::from(REG_A)] = 0x26;
        cmos[usize::from(REG_B)] = B_24H;
        cmos[usize::from(REG_D)] = D_VRT;
        for (index, value) in QEMU_CONFIG_BYTES {
            cmos[usize::from(index)] = value;
        }
        let mut rtc = Rtc {
            state: RtcState {
                cmos,
                index: 0,
                nmi_disabled: false,
                base_secs: start_unix_secs,
                now_ns: 0,
            },
            irq,
        };
        rtc.set_wall_clock(start_unix_secs);
        rtc
    }

    /// Sets the time at virtual time 0 to `start_unix_secs`, and the PS/2
    /// century byte to match.
    pub fn set_wall_clock(&mut self, start_unix_secs: i64) {
        self.state.base_secs = start_unix_secs;
        let year = DateTime::from_unix(start_unix_secs).year;
        self.state.cmos[usize::from(PS2_CENTURY)] =
            to_bcd(year.rem_euclid(10_000).div_euclid(100) as u8);
    }

    /// Fills the memory-size bytes as QEMU's `pc` machine does for
    /// `ram_bytes` of RAM below 4 GiB: 0x15-0x16 base memory in KiB (at
    /// most 640), 0x17-0x18 and 0x30-0x31 memory above 1 MiB in KiB (at
    /// most 65535), 0x34-0x35 memory above 16 MiB in 64 KiB units.
    pub fn set_memory_size(&mut self, ram_bytes: u32) {
        const KIB: u32 = 1024;
        const MIB: u32 = 1024 * KIB;
        let base = (ram_bytes / KIB).min(640);
        let extended = (ram_bytes.saturating_sub(MIB) / KIB).min(0xFFFF);
        let above_16m = (ram_bytes.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        for (index, value) in [
            (0x15, base),
            (0x17, extended),
            (0x30, extended),
            (0x34, above_16m),
        ] {
            let [lo, hi, ..] = value.to_le_bytes();
            self.state.cmos[index] = lo;
            self.state.cmos[index + 1] = hi;
        }
    }

    /// The clock's complete state.
    pub fn state(&self) -> RtcState {
        self.state.clone()
    }

    /// Puts the clock back in `state` and drives the interrupt line to
    /// match register C. Every byte pattern is one the chip could hold, so
    /// this cannot fail.
    pub fn restore(&mut self, state: &RtcState) {
        self.state = state.clone();
        self.state.index &= 0x7F;
        self.update_irq();
    }

    /// The interrupt line.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The interrupt line, mutably.
    pub fn irq_mut(&mut self) -> &mut I {
        &mut self.irq
    }

    /// Whether the guest leaves NMI enabled (bit 7 of its last index write
    /// clear).
    pub fn nmi_enabled(&self) -> bool {
        !self.state.nmi_disabled
    }

    fn reg(&self, index: u8) -> u8 {
        self.state.cmos[usize::from(index)]
    }

    fn halted(&self) -> bool {
        self.reg(REG_B) & B_SET != 0
    }

    /// The RTC's time now, in Unix seconds, while the clock runs.
    fn running_secs(&self) -> i64 {
        // Saturating, so that a corrupt snapshot cannot overflow the sum.
        self.state
            .base_secs
            .saturating_add((self.state.now_ns / NANOS_PER_SEC) as i64)
    }

    /// The date and time registers for Unix time `secs` in the current
    /// data mode and hour format, as (index, value) pairs.
    fn encode(&self, secs: i64) -> [(u8, u8); 8] {
        let t = DateTime::from_unix(secs);
        let b = self.reg(REG_B);
        let conv = |v: u8| if b & B_DM_BINARY != 0 { v } else { to_bcd(v) };
        let hour = if b & B_24H != 0 {
            conv(t.hour)
        } else {
            let h12 = match t.hour % 12 {
                0 => 12,
                h => h,
            };
            conv(h12) | if t.hour >= 12 { HOURS_PM } else { 0 }
        };
        [
            (SECONDS, conv(t.second)),
            (MINUTES, conv(t.minute)),
            (HOURS, hour),
            (DAY_OF_WEEK, conv(t.weekday)),
            (DAY_OF_MONTH, conv(t.day)),
            (MONTH, conv(t.month)),
            (YEAR, conv(t.year.rem_euclid(100) as u8)),
            (
                CENTURY,
                conv(t.year.rem_euclid(10_000).div_euclid(100) as u8),
            ),
        ]
    }

    /// The Unix time the date registers in `cmos` describe, in the current
    /// data mode and hour format; `None` if a field is out of range.
    fn decode(&self, cmos: &[u8; 128]) -> Option<i64> {
        let b = self.reg(REG_B);
        let conv = |v: u8| if b & B_DM_BINARY != 0 { v } else { from_bcd(v) };
        let raw_hour = cmos[usize::from(HOURS)];
        let hour = if b & B_24H != 0 {
            conv(raw_hour)
        } else {
            let h = conv(raw_hour & !HOURS_PM);
            if !(1..=12).contains(&h) {
                return None;
            }
            h % 12 + if raw_hour & HOURS_PM != 0 { 12 } else { 0 }
        };
        let t = DateTime {
            year: i64::from(conv(cmos[usize::from(CENTURY)])) * 100
                + i64::from(conv(cmos[usize::from(YEAR)])),
            month: conv(cmos[usize::from(MONTH)]),
            day: conv(cmos[usize::from(DAY_OF_MONTH)]),
            hour,
            minute: conv(cmos[usize::from(MINUTES)]),
            second: conv(cmos[usize::from(SECONDS)]),
            weekday: 1,
        };
        let valid = t.second < 60
            && t.minute < 60
            && t.hour < 24
            && (1..=12).contains(&t.month)
            && (1..=31).contains(&t.day);
        valid.then(|| t.to_unix())
    }

    /// Writes the running time into the date registers of `cmos`.
    fn freeze_time(&mut self) {
        for (index, value) in self.encode(self.running_secs()) {
            self.state.cmos[usize::from(index)] = value;
        }
    }

    /// Makes the date registers of the CMOS bytes the running time.
    fn set_time_from(&mut self, cmos: &[u8; 128]) {
        match self.decode(cmos) {
            Some(secs) => self.state.base_secs = secs - (self.state.now_ns / NANOS_PER_SEC) as i64,
            None => log::warn!(
                "guest set the RTC to an impossible date ({:02x?}, register B {:#04x}); the clock keeps its previous time",
                &cmos[..10],
                self.reg(REG_B)
            ),
        }
    }

    /// Advances virtual time to `now_ns`, setting PF, UF and AF for the
    /// periods, updates and alarms that happened, and raising the line
    /// when an enabled flag is set. Earlier times are ignored.
    pub fn advance(&mut self, now_ns: u64) {
        let old = self.state.now_ns;
        if now_ns <= old {
            return;
        }
        let mut flags = 0;
        if let Some(period) = periodic_cycles(self.reg(REG_A)) {
            if ticks_in(now_ns, RTC_HZ) / period > ticks_in(old, RTC_HZ) / period {
                flags |= C_PF;
            }
        }
        if !self.halted() {
            let (s0, s1) = (old / NANOS_PER_SEC, now_ns / NANOS_PER_SEC);
            if s1 > s0 {
                flags |= C_UF;
                if self.reg(REG_C) & C_AF == 0 && self.alarm_between(s0, s1) {
                    flags |= C_AF;
                }
            }
        }
        self.state.now_ns = now_ns;
        self.raise(flags);
    }

    /// Whether the alarm matches the time at any of the virtual seconds
    /// (s0, s1].
    fn alarm_between(&self, s0: u64, s1: u64) -> bool {
        let alarm = [
            self.reg(SECONDS_ALARM),
            self.reg(MINUTES_ALARM),
            self.reg(HOURS_ALARM),
        ];
        let first = s0.max(s1.saturating_sub(ALARM_SCAN_LIMIT)) + 1;
        (first..=s1).any(|s| {
            let regs = self.encode(self.state.base_secs.saturating_add(s as i64));
            let now = [regs[0].1, regs[1].1, regs[2].1];
            alarm
                .iter()
                .zip(now)
                .all(|(&a, t)| a >= ALARM_DONT_CARE || a == t)
        })
    }

    /// Sets `flags` in register C and IRQF if any set flag is enabled.
    fn raise(&mut self, flags: u8) {
        let b = self.reg(REG_B);
        let c = &mut self.state.cmos[usize::from(REG_C)];
        *c |= flags;
        if *c & b & (C_PF | C_AF | C_UF) != 0 {
            *c |= C_IRQF;
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let level = self.reg(REG_C) & C_IRQF != 0;
        self.irq.set(level);
    }

    /// The virtual time at which the clock will next raise its interrupt,
    /// if an enabled source is armed: the next periodic tick with PIE, the
    /// next second with UIE or AIE (an alarm can only match on a second).
    /// `None` while IRQF is already set, because the line is high until
    /// the guest reads register C.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.reg(REG_C) & C_IRQF != 0 {
            return None;
        }
        let b = self.reg(REG_B);
        let now = self.state.now_ns;
        let periodic = periodic_cycles(self.reg(REG_A))
            .filter(|_| b & B_PIE != 0)
            .map(|period| {
                let next = (ticks_in(now, RTC_HZ) / period + 1) * period;
                nanos_for_ticks(next, RTC_HZ)
            });
        let update = (b & (B_UIE | B_AIE) != 0 && !self.halted())
            .then(|| (now / NANOS_PER_SEC + 1).saturating_mul(NANOS_PER_SEC));
        match (periodic, update) {
            (Some(p), Some(u)) => Some(p.min(u)),
            (p, u) => p.or(u),
        }
    }

    /// A guest `in` from `port` (0x70 or 0x71).
    pub fn read(&mut self, port: u16) -> u8 {
        if port != DATA_PORT {
            return 0xFF;
        }
        let index = self.state.index;
        match index {
            REG_A => {
                let in_second = self.state.now_ns % NANOS_PER_SEC;
                let uip = !self.halted() && in_second >= NANOS_PER_SEC - UIP_NS;
                self.reg(REG_A) | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                // Reading C clears every flag and lowers the line (data
                // sheet, "Register C").
                let value = self.reg(REG_C);
                self.state.cmos[usize::from(REG_C)] = 0;
                self.update_irq();
                value
            }
            REG_D => D_VRT,
            i if is_time_register(i) && !self.halted() => {
                let regs = self.encode(self.running_secs());
                regs.iter().find(|(r, _)| *r == i).map_or(0, |&(_, v)| v)
            }
            i => self.reg(i),
        }
    }

    /// A guest `out` to `port` (0x70 or 0x71).
    pub fn write(&mut self, port: u16, value: u8) {
        if port != DATA_PORT {
            self.state.index = value & 0x7F;
            self.state.nmi_disabled = value & INDEX_NMI_DISABLE != 0;
            return;
        }
        let index = self.state.index;
        match index {
            REG_A => self.state.cmos[usize::from(REG_A)] = value & !A_UIP,
            REG_B => {
                let was_halted = self.halted();
                let halting = value & B_SET != 0;
                if halting && !was_halted {
                    self.freeze_time();
                }
                let value = if halting { value & !B_UIE } else { value };
                self.state.cmos[usize::from(REG_B)] = value;
                if was_halted && !halting {
                    let cmos = self.state.cmos;
                    self.set_time_from(&cmos);
                }
                // Enabling a flag that is already set raises the line.
                self.raise(0);
            }
            REG_C | REG_D => {}
            DAY_OF_WEEK => {}
            i if is_time_register(i) && !self.halted() => {
                let mut cmos = self.state.cmos;
                for (r, v) in self.encode(self.running_secs()) {
                    cmos[usize::from(r)] = v;
                }
                cmos[usize::from(i)] = value;
                self.set_time_from(&cmos);
            }
            i => self.state.cmos[usize::from(i)] = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::IrqLatch;

    /// 2024-02-29 13:45:56 UTC, a Thursday.
    const LEAP_DAY: i64 = 1_709_214_356;

    /// An interrupt line that counts rising edges.
    #[derive(Default)]
    struct EdgeCounter {
        level: bool,
        edges: u64,
    }

    impl IrqLine for EdgeCounter {
        fn set(&mut self, level: bool) {
            if level && !self.level {
                self.edges += 1;
            }
            self.level = level;
        }
    }

    fn cmos_read<I: IrqLine>(rtc: &mut Rtc<I>, index: u8) -> u8 {
        rtc.write(INDEX_PORT, index);
        rtc.read(DATA_PORT)
    }

    fn cmos_write<I: IrqLine>(rtc: &mut Rtc<I>, index: u8, value: u8) {
        rtc.write(INDEX_PORT, index);
        rtc.write(DATA_PORT, value);
    }

    fn time_regs<I: IrqLine>(rtc: &mut Rtc<I>) -> [u8; 8] {
        [
            SECONDS,
            MINUTES,
            HOURS,
            DAY_OF_WEEK,
            DAY_OF_MONTH,
            MONTH,
            YEAR,
            CENTURY,
        ]
        .map(|r| cmos_read(rtc, r))
    }

    #[test]
    fn civil_conversions_round_trip() {
        // (Unix seconds, year, month, day, weekday with 1 = Sunday)
        let cases: &[(i64, i64, u8, u8, u8)] = &[
            (0, 1970, 1, 1, 5),
            (951_782_400, 2000, 2, 29, 3),
            (LEAP_DAY, 2024, 2, 29, 5),
            (4_102_444_800, 2100, 1, 1, 6),
            (-86_400, 1969, 12, 31, 4),
        ];
        for &(secs, year, month, day, weekday) in cases {
            let t = DateTime::from_unix(secs);
            assert_eq!(
                (t.year, t.month, t.day, t.weekday),
                (year, month, day, weekday),
                "{secs}"
            );
            assert_eq!(t.to_unix(), secs);
        }
    }

    #[test]
    fn time_reads_in_bcd_and_binary_and_both_hour_formats() {
        // (register B, seconds, minutes, hours, weekday, day, month, year, century)
        let cases: &[(u8, [u8; 8])] = &[
            (B_24H, [0x56, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]),
            (B_24H | B_DM_BINARY, [56, 45, 13, 5, 29, 2, 24, 20]),
            (0, [0x56, 0x45, 0x81, 0x05, 0x29, 0x02, 0x24, 0x20]),
            (B_DM_BINARY, [56, 45, 0x81, 5, 29, 2, 24, 20]),
        ];
        for &(b, expected) in cases {
            let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
            cmos_write(&mut rtc, REG_B, b);
            assert_eq!(time_regs(&mut rtc), expected, "register B {b:#04x}");
        }
    }

    #[test]
    fn the_time_follows_virtual_time() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        // 10 h 14 min 4 s later it is 2024-03-01 00:00:00, a Friday.
        rtc.advance((10 * 3600 + 14 * 60 + 4) * NANOS_PER_SEC);
        assert_eq!(
            time_regs(&mut rtc),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
        );
        // Midnight in 12-hour mode is 12 AM; noon is 12 PM.
        cmos_write(&mut rtc, REG_B, 0);
        assert_eq!(cmos_read(&mut rtc, HOURS), 0x12);
        rtc.advance(rtc.state().now_ns + 12 * 3600 * NANOS_PER_SEC);
        assert_eq!(cmos_read(&mut rtc, HOURS), 0x92);
    }

    #[test]
    fn setting_the_time_with_set_halts_then_restarts_the_clock() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        // Linux's mc146818_set_time: SET, write the fields, clear SET.
        cmos_write(&mut rtc, REG_B, B_SET | B_24H);
        for (r, v) in [
            (YEAR, 0x99),
            (MONTH, 0x12),
            (DAY_OF_MONTH, 0x31),
            (HOURS, 0x23),
            (MINUTES, 0x59),
            (SECONDS, 0x58),
            (CENTURY, 0x19),
        ] {
            cmos_write(&mut rtc, r, v);
        }
        rtc.advance(5 * NANOS_PER_SEC);
        assert_eq!(cmos_read(&mut rtc, SECONDS), 0x58, "halted");
        cmos_write(&mut rtc, REG_B, B_24H);
        rtc.advance(7 * NANOS_PER_SEC);
        assert_eq!(
            time_regs(&mut rtc),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20],
            "two seconds later: 2000-01-01, a Saturday"
        );
        // A single register written while running takes effect at once.
        cmos_write(&mut rtc, MINUTES, 0x30);
        assert_eq!(cmos_read(&mut rtc, MINUTES), 0x30);
        // An impossible month is refused.
        cmos_write(&mut rtc, MONTH, 0x13);
        assert_eq!(cmos_read(&mut rtc, MONTH), 0x01);
    }

    #[test]
    fn register_c_read_clears_the_flags_and_the_line() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        cmos_write(&mut rtc, REG_B, B_24H | B_UIE);
        rtc.advance(NANOS_PER_SEC);
        assert!(rtc.irq().level());
        assert_eq!(cmos_read(&mut rtc, REG_C), C_IRQF | C_UF | C_PF);
        assert!(!rtc.irq().level());
        assert_eq!(cmos_read(&mut rtc, REG_C), 0);
        // Flags set without their enable do not raise IRQF.
        cmos_write(&mut rtc, REG_B, B_24H);
        rtc.advance(2 * NANOS_PER_SEC);
        assert_eq!(cmos_read(&mut rtc, REG_C), C_UF | C_PF);
        assert!(!rtc.irq().level());
    }

    #[test]
    fn periodic_interrupt_at_the_rate_of_register_a() {
        // (register A, expected interrupts in one second)
        let cases: &[(u8, u64)] = &[
            (0x26, 1024),
            (0x2F, 2),
            (0x23, 8192),
            (0x2A, 64),
            (0x21, 256),
            (0x20, 0),
        ];
        for &(a, expected) in cases {
            let mut rtc = Rtc::new(LEAP_DAY, EdgeCounter::default());
            cmos_write(&mut rtc, REG_A, a);
            cmos_write(&mut rtc, REG_B, B_24H | B_PIE);
            // The guest's handler reads register C after each interrupt,
            // and wakes at each deadline, as the run loop would.
            let mut handled = 0;
            while let Some(t) = rtc.next_deadline().filter(|&t| t <= NANOS_PER_SEC) {
                rtc.advance(t);
                if rtc.irq().level {
                    assert_ne!(cmos_read(&mut rtc, REG_C) & C_PF, 0);
                    handled += 1;
                }
            }
            assert_eq!(handled, expected, "register A {a:#04x}");
            assert_eq!(rtc.irq().edges, expected);
        }
    }

    #[test]
    fn without_reading_c_there_is_one_interrupt_only() {
        let mut rtc = Rtc::new(LEAP_DAY, EdgeCounter::default());
        cmos_write(&mut rtc, REG_B, B_24H | B_PIE);
        for ms in 1..=100 {
            rtc.advance(ms * 1_000_000);
        }
        assert_eq!(rtc.irq().edges, 1);
        assert_eq!(rtc.next_deadline(), None);
    }

    #[test]
    fn alarm_fires_when_the_time_matches() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        // 13:46:00, with "don't care" hours.
        cmos_write(&mut rtc, SECONDS_ALARM, 0x00);
        cmos_write(&mut rtc, MINUTES_ALARM, 0x46);
        cmos_write(&mut rtc, HOURS_ALARM, 0xFF);
        cmos_write(&mut rtc, REG_B, B_24H | B_AIE);
        rtc.advance(3 * NANOS_PER_SEC);
        assert!(!rtc.irq().level(), "13:45:59");
        rtc.advance(4 * NANOS_PER_SEC);
        assert!(rtc.irq().level(), "13:46:00");
        assert_eq!(cmos_read(&mut rtc, REG_C) & (C_IRQF | C_AF), C_IRQF | C_AF);
    }

    #[test]
    fn uip_is_set_just_before_each_second() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        for (t, uip) in [
            (500_000_000, false),
            (NANOS_PER_SEC - UIP_NS - 1, false),
            (NANOS_PER_SEC - UIP_NS, true),
            (NANOS_PER_SEC, false),
        ] {
            rtc.advance(t);
            assert_eq!(
                cmos_read(&mut rtc, REG_A),
                0x26 | if uip { A_UIP } else { 0 },
                "at {t} ns"
            );
        }
    }

    #[test]
    fn status_registers_reset_as_in_qemu() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        assert_eq!(
            [REG_A, REG_B, REG_C, REG_D].map(|r| cmos_read(&mut rtc, r)),
            [0x26, 0x02, 0x00, 0x80]
        );
        cmos_write(&mut rtc, REG_D, 0x00);
        cmos_write(&mut rtc, REG_A, 0xAF);
        assert_eq!(cmos_read(&mut rtc, REG_D), 0x80, "D is read-only");
        assert_eq!(cmos_read(&mut rtc, REG_A), 0x2F, "UIP is read-only");
    }

    #[test]
    fn memory_size_bytes_match_qemu() {
        // Measured with qemu-system-i386 7.2 -m 128 and -m 48:
        // (RAM size, bytes 0x15-0x18, 0x30-0x31, 0x34-0x35)
        type Case = (u32, [u8; 4], [u8; 2], [u8; 2]);
        let cases: &[Case] = &[
            (
                128 << 20,
                [0x80, 0x02, 0xFF, 0xFF],
                [0xFF, 0xFF],
                [0x00, 0x07],
            ),
            (
                48 << 20,
                [0x80, 0x02, 0x00, 0xBC],
                [0x00, 0xBC],
                [0x00, 0x02],
            ),
        ];
        for &(ram, low, ext, high) in cases {
            let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
            rtc.set_memory_size(ram);
            assert_eq!(
                [0x15, 0x16, 0x17, 0x18].map(|i| cmos_read(&mut rtc, i)),
                low,
                "{ram:#x}"
            );
            assert_eq!([0x30, 0x31].map(|i| cmos_read(&mut rtc, i)), ext);
            assert_eq!([0x34, 0x35].map(|i| cmos_read(&mut rtc, i)), high);
            assert_eq!(
                [0x10, 0x14, 0x37, 0x38, 0x3D].map(|i| cmos_read(&mut rtc, i)),
                [0x50, 0x07, 0x20, 0x30, 0x12]
            );
        }
    }

    #[test]
    fn index_port_keeps_nmi_mask_and_reads_all_ones() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        assert!(rtc.nmi_enabled());
        rtc.write(INDEX_PORT, INDEX_NMI_DISABLE | 0x40);
        assert!(!rtc.nmi_enabled());
        rtc.write(DATA_PORT, 0x5A);
        assert_eq!(
            rtc.state().cmos[0x40],
            0x5A,
            "bit 7 is not part of the index"
        );
        assert_eq!(rtc.read(INDEX_PORT), 0xFF);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut rtc = Rtc::new(LEAP_DAY, IrqLatch::default());
        cmos_write(&mut rtc, REG_B, B_24H | B_PIE);
        rtc.advance(2_000_000);
        let state = rtc.state();
        let mut other = Rtc::new(0, IrqLatch::default());
        other.restore(&state);
        assert_eq!(other.state(), state);
        assert!(other.irq().level());
        assert_eq!(time_regs(&mut other), time_regs(&mut rtc));
    }
}
