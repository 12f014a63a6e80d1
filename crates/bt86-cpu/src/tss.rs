//! The task-state segment as the virtual CPU uses it without task
//! switching: the stack pointers for rings 0-2 that inter-privilege
//! transfers switch to (Intel SDM Vol. 3A §7.2.1 and Figure 7-2, §6.12.1,
//! §5.8.5), and the I/O permission bitmap (SDM Vol. 1 §19.5.2).
//!
//! This module owns the TSS layout and the checks on the stack it names:
//! which #TS, #SS or #GP an unusable TSS, stack selector or stack segment
//! raises. It reads the TSS through TR's hidden part (base, limit, type,
//! as `ltr` loaded it) and guest memory, so a guest that edits ESP0 in
//! memory is seen at the next transition, as on hardware. It writes
//! nothing and switches no tasks: task gates, far jumps to a TSS and `iret`
//! with NT set stay unsupported (see `interrupt.rs` and `transfer.rs`).

use bt86_machine::{Bus, IoSize};

use crate::descriptor::Fetched;
use crate::exception::Exception;
use crate::memory::{segment_allows, Access};
use crate::segment;
use crate::state::{Cpu, LinearAddr, Segment, Selector};

/// Byte offsets of the fields this module reads (SDM Vol. 3A Figure 7-2 for
/// the 32-bit TSS, Figure 7-11 for the 16-bit one).
pub mod offset {
    /// ESP for ring n is at `ESP0 + 8 * n`, SS for ring n at `SS0 + 8 * n`.
    pub const ESP0: u32 = 0x04;
    pub const SS0: u32 = 0x08;
    /// In a 16-bit TSS: SP for ring n at `SP0_16 + 4 * n`, SS at
    /// `SS0_16 + 4 * n`.
    pub const SP0_16: u32 = 0x02;
    pub const SS0_16: u32 = 0x04;
    /// The 16-bit offset, from the TSS base, of the I/O permission bitmap.
    pub const IO_MAP_BASE: u32 = 0x66;
}

/// The limit of the smallest 32-bit TSS: 104 bytes (SDM Vol. 3A §7.2.2).
pub const MIN_LIMIT_32: u32 = 0x67;

/// Whether TR holds a 32-bit TSS (system types 9 and 11), rather than a
/// 16-bit one (1 and 3) or nothing usable.
fn tr_is_32bit(cpu: &Cpu) -> bool {
    cpu.tr.access != 0 && !cpu.tr.is_code_or_data() && cpu.tr.type_bits() & 0x9 == 0x9
}

/// The stack an inter-privilege transfer switches to: the checked hidden
/// part SS will receive, the descriptor it came from (for the Accessed
/// bit), and the ESP read from the TSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerStack {
    pub segment: Segment,
    pub fetched: Fetched,
    pub esp: u32,
}

impl InnerStack {
    /// The offset at which a frame of `len` bytes starts once it is pushed
    /// on this stack, or `None` when the stack has no room for it. The
    /// stack's B bit decides whether the pointer wraps at 64 KiB or 4 GiB;
    /// expand-down stacks are checked as such (SDM Vol. 3A §5.3).
    pub fn frame_offset(&self, len: u32) -> Option<u32> {
        let sp = self.esp.wrapping_sub(len);
        let sp = if self.segment.is_32bit() { sp } else { sp & 0xFFFF };
        segment_allows(&self.segment, sp, len, Access::Write).then_some(sp)
    }

    /// The ESP register after pushing down to `sp`: a 16-bit stack changes
    /// only SP, and the upper half of ESP keeps what the TSS held.
    pub fn esp_after(&self, sp: u32) -> u32 {
        if self.segment.is_32bit() {
            sp
        } else {
            (self.esp & 0xFFFF_0000) | (sp & 0xFFFF)
        }
    }

    /// The linear address of offset `sp` on this stack.
    pub fn linear(&self, sp: u32) -> LinearAddr {
        LinearAddr(self.segment.base.wrapping_add(sp))
    }
}

/// Reads SS:ESP for ring `new_cpl` (0, 1 or 2) from the current TSS and
/// checks the stack segment, as the INT n and CALL pseudocode do before an
/// inter-privilege transfer (SDM Vol. 2A INT n
/// "INTER-PRIVILEGE-LEVEL-INTERRUPT", CALL "MORE-PRIVILEGE"). `ext` is the
/// EXT bit every error code carries for interrupts from outside the
/// program; call gates pass false.
///
/// - The SS:ESP pair must lie within TR's limit, else #TS(TR selector).
///   An unusable TR (no `ltr` yet) fails this way too.
/// - A null SS raises #TS(EXT).
/// - An SS beyond its table, with RPL or DPL other than `new_cpl`, or not a
///   writable data segment raises #TS(SS selector).
/// - A not-present SS raises #SS(SS selector).
pub fn inner_stack(cpu: &Cpu, bus: &mut dyn Bus, new_cpl: u8, ext: bool) -> Result<InnerStack, Exception> {
    let ext = u16::from(ext);
    let tss_fault = Exception::InvalidTss(cpu.tr.selector.error_code() | ext);
    let level = u32::from(new_cpl & 3);
    let (esp_at, ss_at, esp_len) = if tr_is_32bit(cpu) {
        (offset::ESP0 + 8 * level, offset::SS0 + 8 * level, 4)
    } else {
        (offset::SP0_16 + 4 * level, offset::SS0_16 + 4 * level, 2)
    };
    // The last byte read is the high byte of SS.
    if cpu.tr.access == 0 || ss_at + 1 > cpu.tr.limit {
        return Err(tss_fault);
    }
    let base = cpu.tr.base;
    let mut esp_bytes = [0u8; 4];
    cpu.read_system(bus, LinearAddr(base.wrapping_add(esp_at)), &mut esp_bytes[..esp_len])?;
    let mut ss_bytes = [0u8; 2];
    cpu.read_system(bus, LinearAddr(base.wrapping_add(ss_at)), &mut ss_bytes)?;
    let esp = u32::from_le_bytes(esp_bytes);
    let ss = Selector(u16::from_le_bytes(ss_bytes));
    // The checks on the new SS are those of `mov ss` at the new CPL, but
    // every failure other than "not present" is reported as #TS: the
    // fault lies in the TSS the operating system prepared, not in the
    // program (SDM Vol. 3A §6.15, "Interrupt 10").
    let (segment, fetched) = match segment::check_stack_segment(cpu, bus, ss, new_cpl) {
        Ok(found) => found,
        Err(Exception::GeneralProtection(code)) => return Err(Exception::InvalidTss(code | ext)),
        Err(Exception::StackFault(code)) => return Err(Exception::StackFault(code | ext)),
        Err(other) => return Err(other),
    };
    Ok(InnerStack { segment, fetched, esp })
}

/// Whether the I/O permission bitmap of the current TSS allows an access
/// of `size` to `port` (SDM Vol. 1 §19.5.2). The caller consults it only
/// when CPL > IOPL.
///
/// Only a 32-bit TSS whose limit covers its I/O map base field has a
/// bitmap. The map base is the 16-bit field at offset 0x66; the bit for
/// port p is bit p % 8 of byte p / 8 of the map. The processor always
/// reads the two bytes that hold the bits for port..port+size, so both must
/// lie within the TSS limit (which is why operating systems end the map
/// with an extra 0xFF byte), and every one of those bits must be clear.
/// Anything else denies the access. Errors are faults on the TSS read
/// itself (a #PF when paging is on).
pub fn io_permitted(cpu: &Cpu, bus: &mut dyn Bus, port: u16, size: IoSize) -> Result<bool, Exception> {
    if !tr_is_32bit(cpu) || cpu.tr.limit < MIN_LIMIT_32 {
        return Ok(false);
    }
    let base = cpu.tr.base;
    let mut field = [0u8; 2];
    cpu.read_system(bus, LinearAddr(base.wrapping_add(offset::IO_MAP_BASE)), &mut field)?;
    let map_base = u32::from(u16::from_le_bytes(field));
    let byte = map_base + u32::from(port >> 3);
    if byte + 1 > cpu.tr.limit {
        return Ok(false);
    }
    let mut bits = [0u8; 2];
    cpu.read_system(bus, LinearAddr(base.wrapping_add(byte)), &mut bits)?;
    let width = match size {
        IoSize::Byte => 1,
        IoSize::Word => 2,
        IoSize::Dword => 4,
    };
    let mask = ((1u32 << width) - 1) << (port & 7);
    Ok(u32::from(u16::from_le_bytes(bits)) & mask == 0)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // one tuple per table row
mod tests {
    use super::*;
    use crate::descriptor::encode_segment;
    use crate::test_bus::TestBus;

    const GDT: u32 = 0x1000;
    const TSS: u32 = 0x2000;

    /// A CPU at CPL 3 whose TR holds a busy 32-bit TSS at 0x2000 with the
    /// given limit, and a GDT with ring-0 data at 0x10, ring-1 data at
    /// 0x18, ring-0 read-only data at 0x20, a not-present ring-0 data
    /// segment at 0x28, and ring-0 16-bit expand-down data at 0x30 (valid
    /// offsets 0x1000..=0xFFFF).
    fn machine(tss_limit: u32) -> (Cpu, TestBus) {
        let mut bus = TestBus::new(0x10000);
        let mut cpu = Cpu::new();
        let gdt = [
            0,
            0,
            encode_segment(0, 0xFFFFF, 0xC093),
            encode_segment(0, 0xFFFFF, 0xC0B3),
            encode_segment(0, 0xFFFFF, 0xC091),
            encode_segment(0, 0xFFFFF, 0xC013),
            encode_segment(0x3_0000, 0x0FFF, 0x0097),
        ];
        bus.install_gdt(&mut cpu, GDT, &gdt);
        cpu.tr = Segment { selector: Selector(0x40), base: TSS, limit: tss_limit, access: 0x008B };
        cpu.seg[crate::SegReg::Cs as usize].selector = Selector(0x1B);
        (cpu, bus)
    }

    #[test]
    fn ring_stacks_from_the_tss() {
        use Exception::*;
        // (TSS limit, SS0, ESP0, ring, EXT, expected SS selector and ESP, or the fault)
        let cases: &[(u32, u16, u32, u8, bool, Result<(u16, u32), Exception>)] = &[
            (0x67, 0x10, 0x9000, 0, false, Ok((0x10, 0x9000))),
            (0x67, 0x10, 0x9000, 0, true, Ok((0x10, 0x9000))),
            // SS1:ESP1 for ring 1 (written below as 0x19:0x7000).
            (0x67, 0x10, 0x9000, 1, false, Ok((0x19, 0x7000))),
            // The limit must cover SS0's two bytes at 8..=9.
            (0x08, 0x10, 0x9000, 0, true, Err(InvalidTss(0x41))),
            (0x09, 0x10, 0x9000, 0, false, Ok((0x10, 0x9000))),
            (0x67, 0x00, 0x9000, 0, true, Err(InvalidTss(1))), // null SS: #TS(EXT)
            (0x67, 0x03, 0x9000, 0, false, Err(InvalidTss(0))),
            (0x67, 0x13, 0x9000, 0, false, Err(InvalidTss(0x10))), // RPL 3 for ring 0
            (0x67, 0x18, 0x9000, 0, false, Err(InvalidTss(0x18))), // DPL 1 for ring 0
            (0x67, 0x20, 0x9000, 0, true, Err(InvalidTss(0x21))), // read-only
            (0x67, 0x28, 0x9000, 0, false, Err(StackFault(0x28))), // not present
            (0x67, 0x28, 0x9000, 0, true, Err(StackFault(0x29))),
            (0x67, 0x80, 0x9000, 0, false, Err(InvalidTss(0x80))), // beyond the GDT
        ];
        for &(limit, ss0, esp0, ring, ext, expected) in cases {
            let (mut cpu, mut bus) = machine(limit);
            bus.write_u32(TSS + offset::ESP0, esp0);
            bus.write_u16(TSS + offset::SS0, ss0);
            bus.write_u32(TSS + offset::ESP0 + 8, 0x7000);
            bus.write_u16(TSS + offset::SS0 + 8, 0x19);
            cpu.tr.limit = limit;
            let got = inner_stack(&cpu, &mut bus, ring, ext).map(|s| (s.segment.selector.0, s.esp));
            assert_eq!(got, expected, "limit {limit:#x} SS0 {ss0:#x} ring {ring} ext {ext}");
        }
    }

    #[test]
    fn sixteen_bit_tss_and_unusable_tr() {
        let (mut cpu, mut bus) = machine(0x2B);
        cpu.tr.access = 0x0083; // busy 16-bit TSS
        bus.write_u16(TSS + offset::SP0_16, 0x1234);
        bus.write_u16(TSS + offset::SS0_16, 0x10);
        let stack = inner_stack(&cpu, &mut bus, 0, false).unwrap();
        assert_eq!((stack.segment.selector.0, stack.esp), (0x10, 0x1234));
        cpu.tr = Segment::default();
        assert_eq!(inner_stack(&cpu, &mut bus, 0, true), Err(Exception::InvalidTss(1)));
    }

    #[test]
    fn frame_room_on_the_new_stack() {
        let (cpu, mut bus) = machine(0x67);
        // (SS selector, ESP from the TSS, frame length, expected frame offset, ESP after)
        let cases: &[(u16, u32, u32, Option<(u32, u32)>)] = &[
            (0x10, 0x9000, 20, Some((0x9000 - 20, 0x9000 - 20))),
            // A 16-bit expand-down stack: valid offsets are 0x1000..=0xFFFF.
            (0x30, 0xABCD_2000, 20, Some((0x2000 - 20, 0xABCD_0000 | (0x2000 - 20)))),
            (0x30, 0x1010, 20, None),
            // SP wraps at 64 KiB on a 16-bit stack: 0 - 12 is 0xFFF4.
            (0x30, 0x0001_0000, 12, Some((0xFFF4, 0x0001_FFF4))),
        ];
        for &(ss, esp, len, expected) in cases {
            let mut cpu = cpu.clone();
            bus.write_u32(TSS + offset::ESP0, esp);
            bus.write_u16(TSS + offset::SS0, ss);
            cpu.tr.limit = 0x67;
            let stack = inner_stack(&cpu, &mut bus, 0, false).unwrap();
            let got = stack.frame_offset(len).map(|sp| (sp, stack.esp_after(sp)));
            assert_eq!(got, expected, "SS {ss:#x} ESP {esp:#x} len {len}");
        }
    }

    #[test]
    fn io_bitmap() {
        // The map starts at 0x68 and covers ports 0..0x100 (32 bytes),
        // then one 0xFF byte: TSS limit 0x68 + 32 = 0x88.
        let map = 0x68u32;
        // (TSS limit, port, size, permitted)
        let cases: &[(u32, u16, IoSize, bool)] = &[
            (0x88, 0x40, IoSize::Byte, true),
            (0x88, 0x41, IoSize::Byte, false), // its bit is set below
            (0x88, 0x3E, IoSize::Word, true),  // 0x3E, 0x3F
            (0x88, 0x3F, IoSize::Word, true),  // 0x3F and 0x40
            (0x88, 0x3D, IoSize::Dword, true), // 0x3D..0x40
            (0x88, 0x3E, IoSize::Dword, false), // 0x3E..0x41 touches 0x41
            (0x88, 0x47, IoSize::Word, true),   // 0x47 and 0x48 straddle two bytes
            (0x88, 0x4F, IoSize::Word, false),  // 0x50 is denied
            (0x88, 0xFF, IoSize::Byte, true),   // last byte of the map, 0xFF byte after it
            (0x88, 0x100, IoSize::Byte, false), // its two bytes end past the limit
            (0x87, 0xFF, IoSize::Byte, false),  // the two-byte read crosses the limit
            (0x88, 0x3F8, IoSize::Byte, false), // far beyond the limit
            (0x66, 0x40, IoSize::Byte, false),  // a TSS too small to hold the map base
        ];
        for &(limit, port, size, permitted) in cases {
            let (mut cpu, mut bus) = machine(limit);
            bus.write_u16(TSS + offset::IO_MAP_BASE, map as u16);
            // Allow everything, then deny 0x41 and 0x50; the byte after
            // the map is all ones.
            for i in 0..32 {
                bus.ram[(TSS + map + i) as usize] = 0;
            }
            bus.ram[(TSS + map + 0x41 / 8) as usize] |= 1 << (0x41 % 8);
            bus.ram[(TSS + map + 0x50 / 8) as usize] |= 1 << (0x50 % 8);
            bus.ram[(TSS + map + 32) as usize] = 0xFF;
            cpu.tr.limit = limit;
            assert_eq!(io_permitted(&cpu, &mut bus, port, size), Ok(permitted), "limit {limit:#x} port {port:#x} {size:?}");
        }
        // A 16-bit TSS has no bitmap.
        let (mut cpu, mut bus) = machine(0x88);
        cpu.tr.access = 0x0083;
        assert_eq!(io_permitted(&cpu, &mut bus, 0x40, IoSize::Byte), Ok(false));
    }
}
