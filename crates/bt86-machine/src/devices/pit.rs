//! The Intel 8254 programmable interval timer at ports 0x40-0x43, and the
//! PC's system control port B at 0x61 that gates its channel 2.
//!
//! This module owns the three counters, their control words, latches and
//! output pins, and the bits of port 0x61. It does not read any clock: the
//! caller passes virtual time with [`Pit::advance`], and every count and
//! output is computed from the time since the counter was loaded, ticking
//! at 1 193 182 Hz. It does not know the PIC either: channel 0's output
//! drives an [`IrqLine`] (IRQ 0 on a PC); channel 1 (DRAM refresh on old
//! PCs) drives nothing; channel 2's output is read back through port 0x61
//! bit 5 (it fed the speaker).
//!
//! The register semantics follow the Intel 8254 data sheet (order number
//! 231164). Modes:
//! - Mode 0 (interrupt on terminal count): OUT goes low when the count is
//!   written and high when it reaches zero; the counter then wraps and
//!   keeps counting down with OUT high.
//! - Mode 2 (rate generator): OUT is high and drops for one input clock
//!   each time the count reaches 1; the counter reloads every N clocks.
//! - Mode 3 (square wave): OUT is high for ceil(N/2) and low for floor(N/2)
//!   clocks; the counter is read as decrementing by two, as in QEMU.
//! - Modes 1 and 5 (gate-triggered) are approximated: the trigger is the
//!   count write or a rising gate, and they then behave as modes 0 and 4.
//! - Mode 4 (software strobe): OUT drops for one clock when the count
//!   reaches zero. Modes 6 and 7 are modes 2 and 3 (data sheet: "X10",
//!   "X11"); the read-back status reports the bits as written.
//!
//! Approximations, each shared with QEMU's `hw/timer/i8254.c`: a count
//! takes effect at once (the data sheet loads it on the next clock, and in
//! modes 2 and 3 only at the end of the current period); writing only the
//! low byte of a two-byte count does not stop the counter; BCD counting is
//! stored and reported but the counter counts in binary. Differences from
//! QEMU, where bt86 follows the data sheet: a control word puts OUT in the
//! mode's initial state and stops the counter until a count is written
//! (QEMU keeps counting with the old count), the read-back status reports
//! NULL COUNT in that window, a low gate pauses counting in modes 0, 2, 3
//! and 4 (QEMU counts on), and IRQ 0 follows OUT's data-sheet shape, so
//! the interrupt is taken on its rising edge, which in modes 2 and 3 comes
//! every N clocks exactly as QEMU's.
//!
//! Port 0x61 bit 4 is the DRAM refresh request, which a PC toggles every
//! 15.085 µs (channel 1 running mode 2 with divisor 18); BIOS and kernel
//! delay loops count its toggles. bt86 derives it from virtual time, so
//! such a loop waits as long as on hardware. (QEMU flips the bit on every
//! read of the port instead.)

use super::time::{nanos_for_ticks, ticks_in};
use super::IrqLine;

/// The 8254's input clock on a PC: 14.31818 MHz / 12.
pub const PIT_HZ: u64 = 1_193_182;

/// Channel 0's counter port.
pub const CHANNEL0: u16 = 0x40;
/// Channel 1's counter port.
pub const CHANNEL1: u16 = 0x41;
/// Channel 2's counter port.
pub const CHANNEL2: u16 = 0x42;
/// The control word register (write-only; reads return 0 as in QEMU).
pub const CONTROL: u16 = 0x43;
/// System control port B.
pub const PORT_B: u16 = 0x61;

/// Control word: bits 7:6 select the channel; 3 is the read-back command.
pub const CW_SELECT_SHIFT: u8 = 6;
/// Control word: bits 5:4 are the access mode; 0 is the counter latch
/// command.
pub const CW_ACCESS_SHIFT: u8 = 4;
/// Control word: bits 3:1 are the mode.
pub const CW_MODE_SHIFT: u8 = 1;
/// Control word: bit 0 selects BCD counting.
pub const CW_BCD: u8 = 0x01;
/// The read-back command's select value.
pub const SELECT_READ_BACK: u8 = 3;
/// Read-back: do not latch the count (active low COUNT bit).
pub const READ_BACK_NO_COUNT: u8 = 0x20;
/// Read-back: do not latch the status (active low STATUS bit).
pub const READ_BACK_NO_STATUS: u8 = 0x10;

/// Access mode: latch command (in a control word) or, in the read-back
/// status, "never programmed" (QEMU's reset value for channels 1 and 2).
pub const ACCESS_LATCH: u8 = 0;
/// Access mode: low byte only.
pub const ACCESS_LO: u8 = 1;
/// Access mode: high byte only.
pub const ACCESS_HI: u8 = 2;
/// Access mode: low byte then high byte.
pub const ACCESS_LOHI: u8 = 3;

/// Status byte: the OUT pin.
pub const STATUS_OUT: u8 = 0x80;
/// Status byte: the last count written has not been loaded yet.
pub const STATUS_NULL_COUNT: u8 = 0x40;

/// Port 0x61 bit 0: channel 2's gate.
pub const PORT_B_GATE2: u8 = 0x01;
/// Port 0x61 bit 1: speaker data enable (stored; bt86 has no speaker).
pub const PORT_B_SPEAKER: u8 = 0x02;
/// Port 0x61 bit 4: DRAM refresh request, toggling every 15.085 µs.
pub const PORT_B_REFRESH: u8 = 0x10;
/// Port 0x61 bit 5: channel 2's OUT pin.
pub const PORT_B_OUT2: u8 = 0x20;

/// Channel 1's refresh divisor: one refresh request every 18 input clocks.
const REFRESH_DIVISOR: u64 = 18;

/// One counter's complete state, as plain data for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// The mode bits as the control word wrote them (0-7).
    pub mode: u8,
    /// BCD counting selected.
    pub bcd: bool,
    /// Access mode, `ACCESS_LATCH` (never programmed) to `ACCESS_LOHI`.
    pub access: u8,
    /// For lo/hi access: the next counter read returns the high byte.
    pub read_high_next: bool,
    /// For lo/hi access: the next counter write is the high byte.
    pub write_high_next: bool,
    /// The low byte of a lo/hi count whose high byte has not come yet.
    pub write_low: u8,
    /// The count in use, 1 to 0x10000 (a written 0 means 0x10000).
    pub count: u32,
    /// A count has been written since the last control word.
    pub armed: bool,
    /// Virtual time at which counting (re)started.
    pub start_ns: u64,
    /// Input clocks counted before `start_ns` (a gate pause keeps them).
    pub ticks_before_start: u64,
    /// The gate input is high.
    pub gate: bool,
    /// Counting is paused by a low gate.
    pub paused: bool,
    /// A latched count and how many of its bytes remain to be read.
    pub latched_count: u16,
    pub latched_bytes: u8,
    /// A latched status byte, read before anything else.
    pub latched_status: Option<u8>,
}

impl ChannelState {
    /// A counter as QEMU's reset leaves it: mode 3, never programmed,
    /// counting 0x10000 from time 0.
    fn reset(gate: bool) -> ChannelState {
        ChannelState {
            mode: 3,
            bcd: false,
            access: ACCESS_LATCH,
            read_high_next: false,
            write_high_next: false,
            write_low: 0,
            count: 0x10000,
            armed: true,
            start_ns: 0,
            ticks_before_start: 0,
            gate,
            paused: false,
            latched_count: 0,
            latched_bytes: 0,
            latched_status: None,
        }
    }

    /// The mode that governs behaviour: 6 and 7 are 2 and 3.
    fn effective_mode(&self) -> u8 {
        match self.mode {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    /// Whether a low gate stops the count in this mode (data sheet, table
    /// "Gate Pin Operations Summary").
    fn gate_pauses(&self) -> bool {
        matches!(self.effective_mode(), 0 | 2 | 3 | 4)
    }

    /// The period of the periodic modes. A count of 1 is illegal in modes
    /// 2 and 3; bt86 runs it as 2 rather than interrupting at the full
    /// input rate.
    fn period(&self) -> u64 {
        u64::from(self.count.max(2))
    }

    /// Input clocks counted since the count was loaded, at `now_ns`.
    fn elapsed(&self, now_ns: u64) -> u64 {
        if !self.armed {
            return 0;
        }
        if self.paused {
            return self.ticks_before_start;
        }
        self.ticks_before_start + ticks_in(now_ns.saturating_sub(self.start_ns), PIT_HZ)
    }

    /// The OUT pin after `d` input clocks.
    fn out_at(&self, d: u64) -> bool {
        let count = u64::from(self.count);
        let mode = self.effective_mode();
        if !self.armed {
            // After a control word, OUT is low in mode 0 and high in every
            // other mode until a count arrives.
            return mode != 0;
        }
        match mode {
            0 | 1 => d >= count,
            2 => self.paused || d % self.period() != self.period() - 1,
            3 => self.paused || d % self.period() < self.period().div_ceil(2),
            _ => d != count,
        }
    }

    /// The counter's value after `d` input clocks.
    fn count_at(&self, d: u64) -> u16 {
        let count = u64::from(self.count);
        let value = match self.effective_mode() {
            2 => count - d % count,
            3 => count - (2 * d) % count,
            _ => count.wrapping_sub(d),
        };
        // 0x10000 reads as 0.
        value as u16
    }

    /// The first clock after `d` at which OUT rises, if it ever does.
    fn next_rising_edge(&self, d: u64) -> Option<u64> {
        if !self.armed || self.paused {
            return None;
        }
        let count = u64::from(self.count);
        match self.effective_mode() {
            0 | 1 => (d < count).then_some(count),
            2 | 3 => Some((d / self.period() + 1) * self.period()),
            _ => (d <= count).then_some(count + 1),
        }
    }

    /// How many times OUT rises in the clocks (d0, d1].
    fn rising_edges(&self, d0: u64, d1: u64) -> u64 {
        if d1 <= d0 || !self.armed {
            return 0;
        }
        match self.effective_mode() {
            2 | 3 => d1 / self.period() - d0 / self.period(),
            _ => match self.next_rising_edge(d0) {
                Some(edge) if edge <= d1 => 1,
                _ => 0,
            },
        }
    }

    fn status(&self, now_ns: u64) -> u8 {
        let out = if self.out_at(self.elapsed(now_ns)) {
            STATUS_OUT
        } else {
            0
        };
        let null = if self.armed { 0 } else { STATUS_NULL_COUNT };
        out | null | (self.access << 4) | (self.mode << 1) | u8::from(self.bcd)
    }

    /// The counter latch command: freeze the current count for reading.
    /// A second latch before the first is read is ignored (data sheet).
    fn latch(&mut self, now_ns: u64) {
        if self.latched_bytes == 0 {
            self.latched_count = self.count_at(self.elapsed(now_ns));
            self.latched_bytes = if self.access == ACCESS_LOHI { 2 } else { 1 };
        }
    }

    /// Starts counting `count` (0 means 0x10000) at `now_ns`.
    fn load(&mut self, count: u16, now_ns: u64) {
        self.count = if count == 0 {
            0x10000
        } else {
            u32::from(count)
        };
        self.armed = true;
        self.start_ns = now_ns;
        self.ticks_before_start = 0;
        self.paused = !self.gate && self.gate_pauses();
    }

    fn control_word(&mut self, access: u8, mode: u8, bcd: bool) {
        self.access = access;
        self.mode = mode;
        self.bcd = bcd;
        self.read_high_next = false;
        self.write_high_next = false;
        self.armed = false;
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if self.latched_bytes > 0 {
            // A lo/hi latch gives the low byte first; a hi-only latch its
            // high byte.
            let high =
                self.access == ACCESS_HI || (self.latched_bytes == 1 && self.access == ACCESS_LOHI);
            self.latched_bytes -= 1;
            let [lo, hi] = self.latched_count.to_le_bytes();
            return if high { hi } else { lo };
        }
        let [lo, hi] = self.count_at(self.elapsed(now_ns)).to_le_bytes();
        match self.access {
            ACCESS_HI => hi,
            ACCESS_LOHI => {
                self.read_high_next = !self.read_high_next;
                if self.read_high_next {
                    lo
                } else {
                    hi
                }
            }
            _ => lo,
        }
    }

    fn write(&mut self, value: u8, now_ns: u64) {
        match self.access {
            ACCESS_HI => self.load(u16::from(value) << 8, now_ns),
            ACCESS_LOHI if !self.write_high_next => {
                self.write_low = value;
                self.write_high_next = true;
            }
            ACCESS_LOHI => {
                self.write_high_next = false;
                self.load(u16::from_le_bytes([self.write_low, value]), now_ns);
            }
            _ => self.load(u16::from(value), now_ns),
        }
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        if gate == self.gate {
            return;
        }
        let d = self.elapsed(now_ns);
        self.gate = gate;
        match (self.effective_mode(), gate) {
            // Modes 0 and 4 pause while the gate is low and go on from
            // where they were.
            (0 | 4, false) => {
                self.ticks_before_start = d;
                self.paused = true;
            }
            (0 | 4, true) => {
                self.start_ns = now_ns;
                self.paused = false;
            }
            // Modes 2 and 3 stop with OUT high and reload on the rising
            // edge; modes 1 and 5 are triggered by it.
            (2 | 3, false) => {
                self.ticks_before_start = d;
                self.paused = true;
            }
            (_, true) => {
                self.start_ns = now_ns;
                self.ticks_before_start = 0;
                self.paused = false;
            }
            (_, false) => {}
        }
    }
}

/// The timer's complete state, as plain data for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitState {
    pub channels: [ChannelState; 3],
    /// Port 0x61 bit 1.
    pub speaker: bool,
    /// The virtual time the timer has been advanced to.
    pub now_ns: u64,
    /// The level channel 0 drives on its interrupt line.
    pub irq_level: bool,
}

impl Default for PitState {
    /// QEMU's reset state: every channel in mode 3 counting 0x10000, the
    /// gates of channels 0 and 1 high and channel 2's low.
    fn default() -> Self {
        let channels = [
            ChannelState::reset(true),
            ChannelState::reset(true),
            ChannelState::reset(false),
        ];
        PitState {
            irq_level: channels[0].out_at(0),
            channels,
            speaker: false,
            now_ns: 0,
        }
    }
}

/// An 8254 whose channel 0 drives the interrupt line `I`.
pub struct Pit<I: IrqLine> {
    state: PitState,
    irq: I,
}

impl<I: IrqLine> Pit<I> {
    /// A timer in QEMU's reset state at virtual time 0.
    pub fn new(irq: I) -> Self {
        Self::with_state(PitState::default(), irq)
    }

    /// A timer as SeaBIOS leaves it when a Multiboot kernel starts under
    /// QEMU (measured with QEMU 7.2, read-back status 0x34): channel 0 in
    /// mode 2, lo/hi access, count 0x10000 (18.2 Hz). Its interrupt is
    /// IRQ 0, which the BIOS leaves unmasked.
    pub fn after_bios(irq: I) -> Self {
        let mut state = PitState::default();
        let ch0 = &mut state.channels[0];
        ch0.control_word(ACCESS_LOHI, 2, false);
        ch0.load(0, 0);
        state.irq_level = ch0.out_at(0);
        Self::with_state(state, irq)
    }

    fn with_state(state: PitState, mut irq: I) -> Self {
        irq.set(state.irq_level);
        Pit { state, irq }
    }

    /// The timer's complete state.
    pub fn state(&self) -> PitState {
        self.state
    }

    /// Puts the timer back in `state` and drives the interrupt line to the
    /// level it had. Every state is one an 8254 could be in (counts are
    /// clamped to 1..=0x10000 when used), so this cannot fail.
    pub fn restore(&mut self, state: &PitState) {
        self.state = *state;
        for ch in &mut self.state.channels {
            ch.count = ch.count.clamp(1, 0x10000);
        }
        self.irq.set(self.state.irq_level);
    }

    /// The interrupt line.
    pub fn irq(&self) -> &I {
        &self.irq
    }

    /// The interrupt line, mutably.
    pub fn irq_mut(&mut self) -> &mut I {
        &mut self.irq
    }

    /// The virtual time the timer has been advanced to.
    pub fn now(&self) -> u64 {
        self.state.now_ns
    }

    /// Advances virtual time to `now_ns`. Each rising edge of channel 0's
    /// OUT in between becomes a pulse on the interrupt line, so an
    /// edge-triggered PIC latches it even when the edges came faster than
    /// the caller advanced; several edges between two calls merge into one
    /// request, as interrupts a CPU was too slow for merge in IRR. Times
    /// earlier than the current one are ignored: virtual time is monotonic.
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns <= self.state.now_ns {
            return;
        }
        let ch0 = &self.state.channels[0];
        let d0 = ch0.elapsed(self.state.now_ns);
        let d1 = ch0.elapsed(now_ns);
        let edges = ch0.rising_edges(d0, d1);
        self.state.now_ns = now_ns;
        if edges > 0 {
            self.irq.set(false);
            self.irq.set(true);
        }
        self.update_irq();
    }

    /// The virtual time of channel 0's next rising edge, if it will have
    /// one: when IRQ 0 is next requested.
    pub fn next_deadline(&self) -> Option<u64> {
        let ch0 = &self.state.channels[0];
        let d = ch0.elapsed(self.state.now_ns);
        let edge = ch0.next_rising_edge(d)?;
        Some(
            ch0.start_ns
                .saturating_add(nanos_for_ticks(edge - ch0.ticks_before_start, PIT_HZ)),
        )
    }

    /// Channel `n`'s OUT pin now.
    pub fn out(&self, n: usize) -> bool {
        let ch = &self.state.channels[n.min(2)];
        ch.out_at(ch.elapsed(self.state.now_ns))
    }

    fn update_irq(&mut self) {
        let level = self.out(0);
        self.state.irq_level = level;
        self.irq.set(level);
    }

    /// A guest `in` from `port` (0x40-0x43).
    pub fn read(&mut self, port: u16) -> u8 {
        let now = self.state.now_ns;
        match port {
            CHANNEL0..=CHANNEL2 => self.state.channels[usize::from(port - CHANNEL0)].read(now),
            _ => 0,
        }
    }

    /// A guest `out` to `port` (0x40-0x43).
    pub fn write(&mut self, port: u16, value: u8) {
        let now = self.state.now_ns;
        match port {
            CHANNEL0..=CHANNEL2 => {
                self.state.channels[usize::from(port - CHANNEL0)].write(value, now)
            }
            CONTROL => {
                let select = value >> CW_SELECT_SHIFT;
                if select == SELECT_READ_BACK {
                    // Read-back (data sheet, "Read-Back Command"): bits 3:1
                    // select channels 2:0; COUNT and STATUS are active low.
                    for (i, ch) in self.state.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        if value & READ_BACK_NO_COUNT == 0 {
                            ch.latch(now);
                        }
                        if value & READ_BACK_NO_STATUS == 0 && ch.latched_status.is_none() {
                            ch.latched_status = Some(ch.status(now));
                        }
                    }
                } else {
                    let ch = &mut self.state.channels[usize::from(select)];
                    let access = (value >> CW_ACCESS_SHIFT) & 3;
                    if access == ACCESS_LATCH {
                        ch.latch(now);
                    } else {
                        ch.control_word(access, (value >> CW_MODE_SHIFT) & 7, value & CW_BCD != 0);
                    }
                }
            }
            _ => {}
        }
        self.update_irq();
    }

    /// A guest `in` from port 0x61: gate 2, speaker, refresh and OUT2. The
    /// other bits (parity and channel-check status) read 0, as in QEMU.
    pub fn read_port_b(&self) -> u8 {
        let ch2 = &self.state.channels[2];
        let refresh = ticks_in(self.state.now_ns, PIT_HZ) / REFRESH_DIVISOR % 2 == 1;
        let mut value = 0;
        if ch2.gate {
            value |= PORT_B_GATE2;
        }
        if self.state.speaker {
            value |= PORT_B_SPEAKER;
        }
        if refresh {
            value |= PORT_B_REFRESH;
        }
        if self.out(2) {
            value |= PORT_B_OUT2;
        }
        value
    }

    /// A guest `out` to port 0x61: bit 0 drives channel 2's gate, bit 1 is
    /// the speaker enable; the rest are ignored.
    pub fn write_port_b(&mut self, value: u8) {
        let now = self.state.now_ns;
        self.state.channels[2].set_gate(value & PORT_B_GATE2 != 0, now);
        self.state.speaker = value & PORT_B_SPEAKER != 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::time::NANOS_PER_SEC;

    /// An interrupt line that counts its rising edges, as an edge-triggered
    /// PIC input would see them.
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

    /// A timer in its reset state, with the edge its line makes at power-on
    /// (channel 0 starts in mode 3 with OUT high) already forgotten.
    fn pit() -> Pit<EdgeCounter> {
        let mut p = Pit::new(EdgeCounter::default());
        p.irq_mut().edges = 0;
        p
    }

    /// Programs channel 0 the way Linux's `setup_pit_timer` and xv6's
    /// `timerinit` do: control word, then the divisor low byte first.
    fn program(p: &mut Pit<EdgeCounter>, control: u8, divisor: u16) {
        p.write(CONTROL, control);
        let [lo, hi] = divisor.to_le_bytes();
        p.write(CHANNEL0, lo);
        p.write(CHANNEL0, hi);
    }

    /// Advances in `step_ns` steps up to `end_ns` and returns the edges
    /// counted since programming.
    fn run(p: &mut Pit<EdgeCounter>, end_ns: u64, step_ns: u64) -> u64 {
        let start = p.irq().edges;
        let mut t = p.now();
        while t < end_ns {
            t = (t + step_ns).min(end_ns);
            p.advance(t);
        }
        p.irq().edges - start
    }

    #[test]
    fn periodic_modes_interrupt_once_per_divisor() {
        // (control word, divisor, virtual time, step, expected edges).
        // 11932 is Linux's LATCH for HZ=100: its 100th edge comes at
        // 100 * 11932 / 1193182 s = 1.0000151 s, so one second holds 99.
        let cases: &[(u8, u16, u64, u64, u64)] = &[
            (0x34, 11932, NANOS_PER_SEC, 1_000_000, 99),
            (0x34, 11932, NANOS_PER_SEC + 20_000, 1_000_000, 100),
            (0x36, 11932, NANOS_PER_SEC + 20_000, 1_000_000, 100),
            (0x34, 11932, NANOS_PER_SEC + 20_000, 37_000, 100),
            (0x34, 1193, 10_000_000, 100_000, 10),
            (0x36, 0, 10 * NANOS_PER_SEC, 7_000_000, 182),
            (0x3C, 1000, 1_000_000, 10_000, 1),
        ];
        for &(control, divisor, end, step, expected) in cases {
            let mut p = pit();
            program(&mut p, control, divisor);
            assert_eq!(
                run(&mut p, end, step),
                expected,
                "control {control:#x} divisor {divisor} until {end} ns by {step}"
            );
        }
    }

    #[test]
    fn edges_between_advances_merge_into_one_pulse() {
        let mut p = pit();
        program(&mut p, 0x34, 1193);
        // One call over ten periods gives one pulse, as an unserviced IRR
        // bit would hold only one request.
        assert_eq!(run(&mut p, 10_000_000, 10_000_000), 1);
    }

    #[test]
    fn deadline_is_the_next_edge() {
        let mut p = pit();
        program(&mut p, 0x34, 11932);
        let first = p.next_deadline().unwrap();
        assert_eq!(first, nanos_for_ticks(11932, PIT_HZ));
        p.advance(first - 1);
        assert_eq!(p.irq().edges, 0);
        p.advance(first);
        assert_eq!(p.irq().edges, 1);
        assert_eq!(p.next_deadline(), Some(nanos_for_ticks(2 * 11932, PIT_HZ)));
        // Mode 0 has one edge and then no deadline.
        program(&mut p, 0x30, 100);
        let t = p.next_deadline().unwrap();
        p.advance(t);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn mode_0_is_one_shot() {
        let mut p = pit();
        program(&mut p, 0x30, 1193);
        assert!(!p.out(0), "OUT low while counting");
        assert!(!p.irq().level);
        assert_eq!(run(&mut p, 999_000, 1000), 0);
        assert_eq!(run(&mut p, 1_001_000, 1000), 1);
        assert!(p.out(0));
        assert_eq!(run(&mut p, 100_000_000, 1_000_000), 0, "no second edge");
        // Rewriting the count restarts it.
        program(&mut p, 0x30, 1193);
        assert!(!p.out(0));
        assert_eq!(run(&mut p, 102_000_000, 1000), 1);
    }

    #[test]
    fn counts_read_back_through_latch_and_lohi_reads() {
        let mut p = pit();
        program(&mut p, 0x34, 10000);
        // 1000 input clocks later (838 096 ns rounds to 1000 clocks).
        p.advance(nanos_for_ticks(1000, PIT_HZ));
        p.write(CONTROL, 0x00); // Latch channel 0.
        p.advance(nanos_for_ticks(5000, PIT_HZ));
        let lo = p.read(CHANNEL0);
        let hi = p.read(CHANNEL0);
        assert_eq!(u16::from_le_bytes([lo, hi]), 9000, "the latched value");
        // Unlatched reads follow the counter, low byte first.
        let lo = p.read(CHANNEL0);
        let hi = p.read(CHANNEL0);
        assert_eq!(u16::from_le_bytes([lo, hi]), 5000);
        // Mode 0 counts down by one per clock and wraps past zero.
        program(&mut p, 0x30, 3);
        p.advance(p.now() + nanos_for_ticks(5, PIT_HZ));
        p.write(CONTROL, 0x00);
        assert_eq!(
            u16::from_le_bytes([p.read(CHANNEL0), p.read(CHANNEL0)]),
            0xFFFE
        );
    }

    #[test]
    fn square_wave_counts_down_by_two() {
        let mut p = pit();
        program(&mut p, 0x36, 1000);
        p.advance(nanos_for_ticks(100, PIT_HZ));
        p.write(CONTROL, 0x00);
        assert_eq!(
            u16::from_le_bytes([p.read(CHANNEL0), p.read(CHANNEL0)]),
            800
        );
        assert!(p.out(0), "first half of the period");
        p.advance(nanos_for_ticks(600, PIT_HZ));
        assert!(!p.out(0), "second half");
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut p = pit();
        program(&mut p, 0x34, 5000);
        p.advance(nanos_for_ticks(100, PIT_HZ));
        // Read-back of channel 0: status and count.
        p.write(CONTROL, 0xC2);
        assert_eq!(p.read(CHANNEL0), STATUS_OUT | 0x34);
        assert_eq!(
            u16::from_le_bytes([p.read(CHANNEL0), p.read(CHANNEL0)]),
            4900
        );
        // Status only, for channels 1 and 2 (never programmed: access 0).
        p.write(CONTROL, 0xEC);
        assert_eq!(p.read(CHANNEL1), STATUS_OUT | 0x06);
        assert_eq!(p.read(CHANNEL2) & 0x7F, 0x06);
        // After a control word and before a count: NULL COUNT.
        p.write(CONTROL, 0x30);
        p.write(CONTROL, 0xE2);
        assert_eq!(
            p.read(CHANNEL0),
            STATUS_NULL_COUNT | 0x30,
            "mode 0: OUT low"
        );
    }

    #[test]
    fn linux_calibration_loop_sees_out2_through_port_0x61() {
        // arch/x86/kernel/tsc.c pit_calibrate_tsc: gate high and speaker
        // off, channel 2 mode 0 with a 10 ms latch, then poll bit 5.
        let mut p = pit();
        let latch: u16 = 11932;
        p.write_port_b((p.read_port_b() & !PORT_B_SPEAKER) | PORT_B_GATE2);
        p.write(CONTROL, 0xB0);
        p.write(CHANNEL2, latch as u8);
        p.write(CHANNEL2, (latch >> 8) as u8);
        let mut polls = 0u64;
        let mut t = 0;
        while p.read_port_b() & PORT_B_OUT2 == 0 {
            t += 1_000; // Each poll takes 1 µs of virtual time.
            p.advance(t);
            polls += 1;
            assert!(polls < 1_000_000, "OUT2 never rose");
        }
        // OUT2 rose after the latch's 10 000 151 ns, within one poll.
        let expected = nanos_for_ticks(u64::from(latch), PIT_HZ);
        assert!(t >= expected && t < expected + 1_000, "rose at {t} ns");
        assert_eq!(p.irq().edges, 0, "channel 2 raises no IRQ");
    }

    #[test]
    fn gate_low_pauses_channel_2() {
        let mut p = pit();
        p.write(CONTROL, 0xB0);
        p.write(CHANNEL2, 0x10);
        p.write(CHANNEL2, 0x27); // 10000, gate still low.
        p.advance(nanos_for_ticks(500, PIT_HZ));
        p.write(CONTROL, 0x80);
        assert_eq!(
            u16::from_le_bytes([p.read(CHANNEL2), p.read(CHANNEL2)]),
            10000,
            "paused"
        );
        p.write_port_b(PORT_B_GATE2);
        let t = p.now();
        p.advance(t + nanos_for_ticks(300, PIT_HZ));
        p.write(CONTROL, 0x80);
        assert_eq!(
            u16::from_le_bytes([p.read(CHANNEL2), p.read(CHANNEL2)]),
            9700
        );
        assert_eq!(
            p.read_port_b() & (PORT_B_GATE2 | PORT_B_SPEAKER),
            PORT_B_GATE2
        );
        p.write_port_b(PORT_B_GATE2 | PORT_B_SPEAKER);
        assert_eq!(
            p.read_port_b() & PORT_B_SPEAKER,
            PORT_B_SPEAKER,
            "speaker bit stored"
        );
    }

    #[test]
    fn refresh_bit_toggles_every_18_clocks() {
        let mut p = pit();
        let mut toggles = 0;
        let mut last = p.read_port_b() & PORT_B_REFRESH;
        for us in 1..=1000u64 {
            p.advance(us * 1000);
            let bit = p.read_port_b() & PORT_B_REFRESH;
            if bit != last {
                toggles += 1;
                last = bit;
            }
        }
        // 1 ms holds 1193 clocks: 66 refresh periods of 18.
        assert_eq!(toggles, ticks_in(1_000_000, PIT_HZ) / REFRESH_DIVISOR);
    }

    #[test]
    fn bios_state_interrupts_at_18_2_hz() {
        let mut p = Pit::after_bios(EdgeCounter::default());
        p.write(CONTROL, 0xE2);
        assert_eq!(
            p.read(CHANNEL0) & 0x7F,
            0x34,
            "as QEMU reports after SeaBIOS"
        );
        assert_eq!(run(&mut p, NANOS_PER_SEC, 1_000_000), 18);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut p = pit();
        program(&mut p, 0x34, 11932);
        p.advance(5_000_000);
        p.write(CONTROL, 0x00);
        let state = p.state();
        let mut q = pit();
        q.restore(&state);
        assert_eq!(q.state(), state);
        assert_eq!(q.read(CHANNEL0), p.read(CHANNEL0));
        q.advance(30_000_000);
        p.advance(30_000_000);
        assert_eq!(q.irq().edges, p.irq().edges);
    }
}
