//! Segment and gate descriptors: the 8-byte entries of the GDT, the LDT and
//! the IDT (Intel SDM Vol. 3A §3.4.5, §5.8.3, §6.11).
//!
//! This module owns the bit layout of descriptors and the rules for finding
//! one: turning a selector into the linear address of its descriptor with
//! the table-limit check (§3.5.1), reading it, and setting the Accessed bit
//! (and the TSS Busy bit) in guest memory as the processor does. It decides
//! nothing about privilege: which descriptor a given instruction accepts is
//! the business of `segment.rs`, `interrupt.rs` and `exec.rs`.

use bt86_machine::Bus;

use crate::exception::Exception;
use crate::state::{Cpu, LinearAddr, Segment, Selector};

/// What a segment-like descriptor (one with a base and a limit) describes.
/// System types follow SDM Vol. 3A Table 3-2 (32-bit mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// A data segment (S = 1, type bit 3 clear).
    Data { writable: bool, expand_down: bool },
    /// A code segment (S = 1, type bit 3 set).
    Code { readable: bool, conforming: bool },
    /// A local descriptor table (system type 2).
    Ldt,
    /// A task-state segment (system types 1, 3, 9, 11).
    Tss { is_32bit: bool, busy: bool },
}

/// A descriptor with a base and a limit: code, data, LDT or TSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentDescriptor {
    pub base: u32,
    /// The limit in bytes, with the granularity bit already applied.
    pub limit: u32,
    /// Access rights in the layout of [`Segment::access`]: descriptor bits
    /// 40..56 with the limit's top nibble (bits 48..52) cleared.
    pub access: u16,
}

impl SegmentDescriptor {
    pub fn dpl(&self) -> u8 {
        ((self.access >> 5) & 3) as u8
    }
    pub fn is_present(&self) -> bool {
        self.access & Segment::ACCESS_PRESENT != 0
    }
    pub fn type_bits(&self) -> u8 {
        (self.access & 0xF) as u8
    }

    /// The kind of segment, or `None` for the system types that are not
    /// segments (gates and reserved types).
    pub fn kind(&self) -> Option<SegmentKind> {
        let t = self.type_bits();
        if self.access & Segment::ACCESS_S != 0 {
            return Some(if t & 0x8 != 0 {
                SegmentKind::Code { readable: t & 0x2 != 0, conforming: t & 0x4 != 0 }
            } else {
                SegmentKind::Data { writable: t & 0x2 != 0, expand_down: t & 0x4 != 0 }
            });
        }
        match t {
            0x1 => Some(SegmentKind::Tss { is_32bit: false, busy: false }),
            0x2 => Some(SegmentKind::Ldt),
            0x3 => Some(SegmentKind::Tss { is_32bit: false, busy: true }),
            0x9 => Some(SegmentKind::Tss { is_32bit: true, busy: false }),
            0xB => Some(SegmentKind::Tss { is_32bit: true, busy: true }),
            _ => None,
        }
    }

    /// The hidden part of a segment register loaded from this descriptor.
    pub fn to_segment(&self, selector: Selector) -> Segment {
        Segment { selector, base: self.base, limit: self.limit, access: self.access }
    }
}

/// The four kinds of gate (SDM Vol. 3A §5.8.3 call gates, §6.11 IDT gates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateKind {
    Call,
    Task,
    Interrupt,
    Trap,
}

/// A gate descriptor: an entry point (selector and offset) rather than a
/// segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GateDescriptor {
    pub kind: GateKind,
    /// A 32-bit gate (type bit 3 set) pushes 32-bit values; a 16-bit gate
    /// pushes 16-bit values and uses only the low 16 bits of the offset.
    /// Task gates have no size and report false.
    pub is_32bit: bool,
    /// The target code segment, or the TSS for a task gate.
    pub selector: Selector,
    /// The entry point within the target segment (unused by task gates).
    pub offset: u32,
    pub dpl: u8,
    pub present: bool,
    /// Call gates only: how many stack parameters to copy on a privilege
    /// change (bits 36:32).
    pub param_count: u8,
}

/// One parsed descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Descriptor {
    /// Code, data, LDT or TSS.
    Segment(SegmentDescriptor),
    /// Call, task, interrupt or trap gate.
    Gate(GateDescriptor),
    /// A reserved system type (0, 8, 10, 13): valid nowhere.
    Reserved { type_bits: u8, dpl: u8, present: bool },
}

impl Descriptor {
    /// Decodes the 8 bytes of a descriptor, given as a little-endian u64
    /// (SDM Vol. 3A Figure 3-8 for segments, Figures 5-8 and 6-2 for gates).
    pub fn parse(raw: u64) -> Descriptor {
        let access = ((raw >> 40) & 0xF0FF) as u16;
        let type_bits = (access & 0xF) as u8;
        let dpl = ((access >> 5) & 3) as u8;
        let present = access & Segment::ACCESS_PRESENT != 0;
        let is_system = access & Segment::ACCESS_S == 0;
        let gate_kind = match type_bits {
            0x4 | 0xC => Some(GateKind::Call),
            0x5 => Some(GateKind::Task),
            0x6 | 0xE => Some(GateKind::Interrupt),
            0x7 | 0xF => Some(GateKind::Trap),
            _ => None,
        };
        if is_system {
            if let Some(kind) = gate_kind {
                let is_32bit = kind != GateKind::Task && type_bits & 0x8 != 0;
                let low = (raw & 0xFFFF) as u32;
                let high = ((raw >> 48) & 0xFFFF) as u32;
                let offset = if is_32bit { (high << 16) | low } else { low };
                return Descriptor::Gate(GateDescriptor {
                    kind,
                    is_32bit,
                    selector: Selector(((raw >> 16) & 0xFFFF) as u16),
                    offset,
                    dpl,
                    present,
                    param_count: ((raw >> 32) & 0x1F) as u8,
                });
            }
            if matches!(type_bits, 0x0 | 0x8 | 0xA | 0xD) {
                return Descriptor::Reserved { type_bits, dpl, present };
            }
        }
        let base = (((raw >> 16) & 0xFF_FFFF) | ((raw >> 32) & 0xFF00_0000)) as u32;
        let raw_limit = ((raw & 0xFFFF) | ((raw >> 32) & 0xF_0000)) as u32;
        // With G set the limit counts 4 KiB pages and the low 12 bits of
        // every offset are always within it (SDM Vol. 3A §3.4.5, "G flag").
        let limit = if access & Segment::ACCESS_G != 0 { (raw_limit << 12) | 0xFFF } else { raw_limit };
        Descriptor::Segment(SegmentDescriptor { base, limit, access })
    }

    /// The access-rights bits every descriptor has, in [`Segment::access`]
    /// layout: what `lar` reports, shifted right by 8.
    pub fn access_rights(raw: u64) -> u16 {
        ((raw >> 40) & 0xF0FF) as u16
    }

    pub fn dpl(&self) -> u8 {
        match self {
            Descriptor::Segment(s) => s.dpl(),
            Descriptor::Gate(g) => g.dpl,
            Descriptor::Reserved { dpl, .. } => *dpl,
        }
    }

    pub fn is_present(&self) -> bool {
        match self {
            Descriptor::Segment(s) => s.is_present(),
            Descriptor::Gate(g) => g.present,
            Descriptor::Reserved { present, .. } => *present,
        }
    }
}

/// A descriptor as read from a table, with where it lives (for the
/// Accessed and Busy bits) and its raw bytes (for `lar`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fetched {
    pub addr: LinearAddr,
    pub raw: u64,
    pub descriptor: Descriptor,
}

/// The linear address of the descriptor `selector` names, or `None` when
/// the whole 8-byte entry is not within the table's limit or the selector
/// names the LDT while LDTR is unusable (SDM Vol. 3A §3.5.1: "the processor
/// checks that the selector's index times 8 plus 7 is within the limit").
///
/// The null selector is not special here: callers apply the null rules
/// first, because they differ per instruction.
pub fn descriptor_address(cpu: &Cpu, selector: Selector) -> Option<LinearAddr> {
    let (base, limit) = if selector.is_ldt() {
        if cpu.ldtr.access == 0 {
            return None;
        }
        (cpu.ldtr.base, cpu.ldtr.limit)
    } else {
        (cpu.gdtr.base, u32::from(cpu.gdtr.limit))
    };
    let offset = u32::from(selector.index()) * 8;
    if offset + 7 > limit {
        return None;
    }
    Some(LinearAddr(base.wrapping_add(offset)))
}

/// Reads the descriptor `selector` names, or `Ok(None)` if it lies beyond
/// the table limit. Errors are faults on the table access itself (a #PF,
/// with paging on, from a supervisor access whatever the CPL).
pub fn read_descriptor(cpu: &Cpu, bus: &mut dyn Bus, selector: Selector) -> Result<Option<Fetched>, Exception> {
    let Some(addr) = descriptor_address(cpu, selector) else {
        return Ok(None);
    };
    // Descriptor-table reads are supervisor accesses at any CPL (SDM
    // Vol. 3A §4.6).
    let raw = cpu.read_system_u64(bus, addr)?;
    Ok(Some(Fetched { addr, raw, descriptor: Descriptor::parse(raw) }))
}

/// Reads the descriptor `selector` names, raising #GP(selector) when it
/// lies beyond the table limit: the rule shared by segment loads, far
/// transfers, `lldt` and `ltr`.
pub fn fetch_descriptor(cpu: &Cpu, bus: &mut dyn Bus, selector: Selector) -> Result<Fetched, Exception> {
    read_descriptor(cpu, bus, selector)?.ok_or(Exception::GeneralProtection(selector.error_code()))
}

/// The byte of a descriptor that holds its type, S, DPL and P fields.
const ACCESS_BYTE: u32 = 5;

/// Sets the Accessed bit (type bit 0) of a code or data descriptor in guest
/// memory, as the processor does when it loads a segment register from it
/// (SDM Vol. 3A §3.4.5.1). Writes only when the bit is clear, so a table in
/// read-only memory that already has the bit set is never written, as on
/// hardware.
pub fn set_accessed(cpu: &Cpu, bus: &mut dyn Bus, fetched: &Fetched) -> Result<(), Exception> {
    let access = (fetched.raw >> 40) as u8;
    if access & 0x10 == 0 || access & 0x01 != 0 {
        return Ok(());
    }
    cpu.write_system(bus, LinearAddr(fetched.addr.0.wrapping_add(ACCESS_BYTE)), &[access | 0x01])
}

/// Sets the Busy bit (type bit 1) of an available TSS descriptor, as `ltr`
/// and task switches do (SDM Vol. 3A §7.2.2).
pub fn set_tss_busy(cpu: &Cpu, bus: &mut dyn Bus, fetched: &Fetched) -> Result<(), Exception> {
    let access = (fetched.raw >> 40) as u8;
    cpu.write_system(bus, LinearAddr(fetched.addr.0.wrapping_add(ACCESS_BYTE)), &[access | 0x02])
}

/// Builds the raw 8 bytes of a code, data or system segment descriptor.
/// The inverse of [`Descriptor::parse`] for segments; used by tests and by
/// anything that writes descriptor tables (a loader's GDT, the debugger).
/// `limit` is the raw 20-bit field; `access` is in [`Segment::access`]
/// layout.
pub fn encode_segment(base: u32, limit: u32, access: u16) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit & 0xF_FFFF);
    let access = u64::from(access & 0xF0FF);
    (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (access << 40)
        | ((limit >> 16) << 48)
        | ((base >> 24) << 56)
}

/// Builds the raw 8 bytes of a gate descriptor with the given system type
/// (e.g. 0xE for a 32-bit interrupt gate).
pub fn encode_gate(type_bits: u8, selector: u16, offset: u32, dpl: u8, present: bool) -> u64 {
    let offset = u64::from(offset);
    let access = u64::from(type_bits & 0xF) | (u64::from(dpl & 3) << 5) | (u64::from(present) << 7);
    (offset & 0xFFFF) | (u64::from(selector) << 16) | (access << 40) | ((offset >> 16) << 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_segment_descriptors() {
        // (raw, base, limit, access, kind)
        let cases: &[(u64, u32, u32, u16, Option<SegmentKind>)] = &[
            // The classic flat ring-0 code segment: base 0, limit 0xFFFFF, G.
            (0x00CF_9A00_0000_FFFF, 0, 0xFFFF_FFFF, 0xC09A,
             Some(SegmentKind::Code { readable: true, conforming: false })),
            // Flat ring-3 data.
            (0x00CF_F200_0000_FFFF, 0, 0xFFFF_FFFF, 0xC0F2,
             Some(SegmentKind::Data { writable: true, expand_down: false })),
            // Byte-granular, base 0x12345678, limit 0x0ABCD, expand-down read-only.
            (0x1200_9434_5678_ABCD, 0x1234_5678, 0xABCD, 0x0094,
             Some(SegmentKind::Data { writable: false, expand_down: true })),
            // An LDT descriptor, base 0x1000, limit 0x17.
            (0x0000_8200_1000_0017, 0x1000, 0x17, 0x0082, Some(SegmentKind::Ldt)),
            // Busy 32-bit TSS.
            (0x0000_8B00_2000_0067, 0x2000, 0x67, 0x008B,
             Some(SegmentKind::Tss { is_32bit: true, busy: true })),
            // Available 16-bit TSS.
            (0x0000_8100_2000_002B, 0x2000, 0x2B, 0x0081,
             Some(SegmentKind::Tss { is_32bit: false, busy: false })),
        ];
        for &(raw, base, limit, access, kind) in cases {
            match Descriptor::parse(raw) {
                Descriptor::Segment(s) => {
                    assert_eq!((s.base, s.limit, s.access, s.kind()), (base, limit, access, kind), "raw {raw:#x}");
                }
                other => panic!("raw {raw:#x} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn parses_gates() {
        // (raw, kind, is_32bit, selector, offset, dpl, present)
        let cases: &[(u64, GateKind, bool, u16, u32, u8, bool)] = &[
            (encode_gate(0xE, 0x08, 0xC010_2030, 0, true), GateKind::Interrupt, true, 0x08, 0xC010_2030, 0, true),
            (encode_gate(0xF, 0x10, 0x0000_1234, 3, true), GateKind::Trap, true, 0x10, 0x1234, 3, true),
            // A 16-bit interrupt gate ignores the high half of the offset.
            (encode_gate(0x6, 0x08, 0xFFFF_1234, 0, false), GateKind::Interrupt, false, 0x08, 0x1234, 0, false),
            (encode_gate(0x5, 0x28, 0, 0, true), GateKind::Task, false, 0x28, 0, 0, true),
            (encode_gate(0xC, 0x08, 0x8000_0000, 3, true), GateKind::Call, true, 0x08, 0x8000_0000, 3, true),
        ];
        for &(raw, kind, is_32bit, selector, offset, dpl, present) in cases {
            let Descriptor::Gate(g) = Descriptor::parse(raw) else { panic!("raw {raw:#x} is not a gate") };
            assert_eq!(
                (g.kind, g.is_32bit, g.selector, g.offset, g.dpl, g.present),
                (kind, is_32bit, Selector(selector), offset, dpl, present),
                "raw {raw:#x}"
            );
        }
    }

    #[test]
    fn reserved_system_types_are_reserved() {
        for t in 0u8..16 {
            let raw = encode_segment(0, 0xFFFF, 0x80 | u16::from(t));
            let reserved = matches!(Descriptor::parse(raw), Descriptor::Reserved { .. });
            assert_eq!(reserved, matches!(t, 0 | 8 | 0xA | 0xD), "system type {t:#x}");
        }
    }

    #[test]
    fn encode_segment_round_trips() {
        for &(base, limit, access) in &[(0u32, 0xFFFFFu32, 0xC09Bu16), (0xDEAD_BEEF, 0x1234, 0x40F3), (0x00AB_0000, 0x67, 0x0089)] {
            let Descriptor::Segment(s) = Descriptor::parse(encode_segment(base, limit, access)) else { panic!() };
            let expected_limit = if access & Segment::ACCESS_G != 0 { (limit << 12) | 0xFFF } else { limit };
            assert_eq!((s.base, s.limit, s.access), (base, expected_limit, access));
        }
    }

    #[test]
    fn table_limit_checks() {
        let mut cpu = Cpu::new();
        cpu.gdtr.base = 0x1000;
        cpu.gdtr.limit = 0x17; // three entries
        // (selector, expected address)
        let cases: &[(u16, Option<u32>)] = &[
            (0x10, Some(0x1010)),
            (0x13, Some(0x1010)),
            (0x18, None),
            (0x0C, None), // LDT selector while LDTR is unusable
        ];
        for &(sel, addr) in cases {
            assert_eq!(descriptor_address(&cpu, Selector(sel)).map(|a| a.0), addr, "selector {sel:#x}");
        }
        // A partial entry is beyond the limit: the check covers all 8 bytes.
        cpu.gdtr.limit = 0x16;
        assert_eq!(descriptor_address(&cpu, Selector(0x10)), None);
        cpu.ldtr = Segment { selector: Selector(0x18), base: 0x4000, limit: 0xF, access: 0x82 };
        assert_eq!(descriptor_address(&cpu, Selector(0x0F)).map(|a| a.0), Some(0x4008));
        assert_eq!(descriptor_address(&cpu, Selector(0x14)), None);
    }
}
