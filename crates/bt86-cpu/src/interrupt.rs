//! Exception and interrupt delivery through the guest's IDT in protected
//! mode (Intel SDM Vol. 3A Chapter 6, and the INT n pseudocode in Vol. 2A).
//!
//! This module owns the path from "an event with a vector" to "the handler's
//! first instruction": finding and checking the gate, checking the handler's
//! code segment, building the EFLAGS/CS/EIP/error-code frame on the stack,
//! and the double- and triple-fault rules of Table 6-5. It does not decide
//! when an external interrupt may be taken (the run loop checks IF and asks
//! the PIC) and never reaches the host.
//!
//! Delivery to a handler at the same privilege level pushes the frame on
//! the current stack. Delivery to an inner level (a ring-3 program
//! interrupted into a ring-0 handler) first switches to the stack the TSS
//! names for the handler's ring (§6.12.1, `tss.rs`) and pushes the
//! interrupted SS:ESP there as well. Task gates are not supported: they
//! raise #GP(vector * 8 + 2 + EXT) with an "unsupported" warning. 16-bit
//! gates and 16-bit TSSs are supported.

use bt86_machine::Bus;

use crate::descriptor::{self, Descriptor, GateDescriptor, GateKind};
use crate::exception::{Exception, Vector};
use crate::segment::{self, Transfer};
use crate::state::{flags, gpr, Cpu, LinearAddr, SegReg};
use crate::tss;

/// Where an interrupt comes from, which decides the privilege check on the
/// gate, the EXT bit of error codes, and which EIP is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `int n`, `int3` or `into`: the gate's DPL must be >= CPL, and the
    /// handler returns to the next instruction (SDM Vol. 3A §6.12.1.1).
    /// `is_int3_or_into` only matters in virtual-8086 mode, which bt86 does
    /// not model; it is kept so that mode can slot in.
    Software { next_eip: u32, is_int3_or_into: bool },
    /// `int1` (ICEBP, opcode F1): delivered like a hardware debug trap,
    /// with no DPL check (SDM Vol. 2A INT n, note on INT1).
    Icebp { next_eip: u32 },
    /// A hardware interrupt: delivered between instructions, returning to
    /// `cpu.eip`.
    External,
}

/// The processor stopped: the guest can no longer run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Shutdown {
    /// A fault while delivering a double fault (SDM Vol. 3A §6.15,
    /// "Interrupt 8"). On a PC this resets the machine.
    #[error(
        "triple fault at guest EIP {eip:#010x}: {original} could not be delivered, \
         the resulting double fault raised {second}; the guest's IDT, GDT or stack is \
         broken (check its lidt/lgdt and ESP before the first exception)"
    )]
    TripleFault { original: Exception, second: Exception, eip: u32 },
}

/// One event on its way to a handler.
#[derive(Clone, Copy, Debug)]
struct Event {
    vector: Vector,
    error_code: Option<u32>,
    /// The EIP pushed for the handler's `iret`.
    return_eip: u32,
    /// Software interrupts check the gate DPL against CPL.
    software: bool,
    /// The EXT bit of error codes raised during delivery: set for events
    /// from outside the program (SDM Vol. 3A §6.13).
    ext: bool,
    /// Fault-class exceptions push EFLAGS with RF set, so that the
    /// restarted instruction does not re-trigger an instruction breakpoint
    /// (SDM Vol. 3A §18.3.1.1).
    push_rf: bool,
}

/// Whether an exception is a fault (the saved EIP names the faulting
/// instruction and it is restarted) rather than a trap or an abort (SDM
/// Vol. 3A Table 6-1). #DB is counted as a trap: bt86 raises it only for
/// single-step and `int1`.
fn is_fault(exc: Exception) -> bool {
    !matches!(
        exc,
        Exception::Debug | Exception::Breakpoint | Exception::Overflow | Exception::DoubleFault
    )
}

/// Delivers an exception raised by the guest through its IDT.
///
/// For faults the caller has left `cpu.eip` at the faulting instruction;
/// for traps (#BP, #OF, single-step #DB) at the next one. A #PF also sets
/// CR2. A second exception during delivery is handled per SDM Vol. 3A
/// Table 6-5: a contributory exception during a contributory one, or a
/// contributory or page fault during a page fault, becomes #DF; otherwise
/// the second exception is delivered instead. A fault while delivering #DF
/// shuts the processor down.
pub fn deliver_exception(cpu: &mut Cpu, bus: &mut dyn Bus, exc: Exception) -> Result<(), Shutdown> {
    let mut current = exc;
    // Each failed step moves towards #DF, so a few rounds always settle.
    loop {
        if let Exception::PageFault { addr, .. } = current {
            cpu.cr2 = addr;
        }
        let event = Event {
            vector: current.vector(),
            error_code: current.error_code(),
            return_eip: cpu.eip,
            software: false,
            ext: true,
            push_rf: is_fault(current),
        };
        let second = match deliver(cpu, bus, event) {
            Ok(()) => return Ok(()),
            Err(second) => second,
        };
        log::debug!("{second} while delivering {current} at EIP {:#010x}", cpu.eip);
        if current == Exception::DoubleFault {
            return Err(Shutdown::TripleFault { original: exc, second, eip: cpu.eip });
        }
        current = if raises_double_fault(current, second) { Exception::DoubleFault } else { second };
    }
}

/// SDM Vol. 3A Table 6-5, "Conditions for Generating a Double Fault".
fn raises_double_fault(first: Exception, second: Exception) -> bool {
    let second_is_pf = matches!(second, Exception::PageFault { .. });
    if matches!(first, Exception::PageFault { .. }) {
        second.is_contributory() || second_is_pf
    } else if first.is_contributory() {
        second.is_contributory()
    } else {
        false
    }
}

/// Delivers an interrupt (software `int n`, `int1`, or a hardware
/// interrupt) through the guest's IDT.
///
/// On success CS:EIP is the handler and the frame is on the stack. An
/// exception raised by the delivery itself (a #GP for a gate the guest may
/// not use, say) is returned with nothing changed, for the caller to hand to
/// [`deliver_exception`]; for a software interrupt `cpu.eip` still names the
/// `int` instruction, which is where that fault must point.
pub fn deliver_interrupt(cpu: &mut Cpu, bus: &mut dyn Bus, vector: Vector, source: Source) -> Result<(), Exception> {
    let event = match source {
        Source::Software { next_eip, .. } => Event {
            vector,
            error_code: None,
            return_eip: next_eip,
            software: true,
            ext: false,
            push_rf: false,
        },
        Source::Icebp { next_eip } => Event {
            vector,
            error_code: None,
            return_eip: next_eip,
            software: false,
            ext: true,
            push_rf: false,
        },
        Source::External => Event {
            vector,
            error_code: None,
            return_eip: cpu.eip,
            software: false,
            ext: true,
            push_rf: false,
        },
    };
    deliver(cpu, bus, event)
}

/// Reads and checks the IDT gate for `event` (SDM Vol. 2A INT n, first
/// steps): within the IDT limit, an interrupt, trap or task gate, DPL >= CPL
/// for software interrupts, present. Error codes name the IDT entry: vector
/// * 8 + 2 (the IDT bit) + EXT.
fn read_gate(cpu: &Cpu, bus: &mut dyn Bus, event: &Event) -> Result<GateDescriptor, Exception> {
    let ext = u16::from(event.ext);
    let idt_error = |ext: u16| u16::from(event.vector.0) * 8 + 2 + ext;
    let offset = u32::from(event.vector.0) * 8;
    if offset + 7 > u32::from(cpu.idtr.limit) {
        return Err(Exception::GeneralProtection(idt_error(ext)));
    }
    // An IDT read is a supervisor access at any CPL (SDM Vol. 3A §4.6).
    let raw = cpu.read_system_u64(bus, LinearAddr(cpu.idtr.base.wrapping_add(offset)))?;
    let gate = match Descriptor::parse(raw) {
        Descriptor::Gate(g) if matches!(g.kind, GateKind::Interrupt | GateKind::Trap | GateKind::Task) => g,
        _ => return Err(Exception::GeneralProtection(idt_error(ext))),
    };
    if event.software && gate.dpl < cpu.cpl() {
        // The EXT bit is clear: the program itself asked for the gate.
        return Err(Exception::GeneralProtection(idt_error(0)));
    }
    if !gate.present {
        return Err(Exception::SegmentNotPresent(idt_error(ext)));
    }
    Ok(gate)
}

/// The little-endian bytes of a stack frame, lowest address first, each
/// value truncated to `width` bytes.
fn encode_frame(values: &[u32], width: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(values.len() * width);
    for value in values {
        frame.extend_from_slice(&value.to_le_bytes()[..width]);
    }
    frame
}

/// The whole delivery of one event. Every check happens before anything is
/// written, so an error leaves the CPU as it was.
fn deliver(cpu: &mut Cpu, bus: &mut dyn Bus, event: Event) -> Result<(), Exception> {
    let ext = u16::from(event.ext);
    let gate = read_gate(cpu, bus, &event)?;
    if gate.kind == GateKind::Task {
        log::warn!("unsupported: task gate for vector {} (task switch to TSS {})", event.vector, gate.selector);
        return Err(Exception::GeneralProtection(u16::from(event.vector.0) * 8 + 2 + ext));
    }
    let target = segment::check_code_segment(cpu, bus, gate.selector, Transfer::Interrupt { ext: event.ext })?;

    // The frame, from the lowest address up, is [error code,] EIP, CS,
    // EFLAGS, and after a privilege change also the interrupted ESP and
    // SS; each is 4 bytes through a 32-bit gate and 2 through a 16-bit one
    // (SDM Vol. 3A Figure 6-4). Selectors are zero-extended.
    let width: usize = if gate.is_32bit { 4 } else { 2 };
    let mut eflags = cpu.eflags;
    if event.push_rf {
        eflags |= flags::RF;
    }
    let cs = u32::from(cpu.segment(SegReg::Cs).selector.0);
    let mut frame_values = Vec::with_capacity(6);
    if let Some(code) = event.error_code {
        frame_values.push(code);
    }
    frame_values.extend([event.return_eip, cs, eflags]);

    if target.changes_privilege(cpu) {
        // INTER-PRIVILEGE-LEVEL-INTERRUPT (SDM Vol. 2A INT n, Vol. 3A
        // §6.12.1): the handler runs on the stack the TSS names for its
        // ring, and the interrupted SS:ESP goes on that stack so that
        // `iret` can return to it.
        let stack = tss::inner_stack(cpu, bus, target.new_cpl, event.ext)?;
        frame_values.extend([cpu.gpr[gpr::ESP], u32::from(cpu.segment(SegReg::Ss).selector.0)]);
        let frame = encode_frame(&frame_values, width);
        let frame_len = frame.len() as u32;
        let sp = stack
            .frame_offset(frame_len)
            .ok_or(Exception::StackFault(stack.segment.selector.error_code() | ext))?;
        if gate.offset > target.segment.limit {
            return Err(Exception::GeneralProtection(ext));
        }
        // The frame goes on the inner ring's stack, a supervisor access
        // although CPL is still the interrupted one here.
        cpu.write_system(bus, stack.linear(sp), &frame)?;
        // Commit: the Accessed bits are the last guest-memory writes, and
        // they come before any register changes.
        descriptor::set_accessed(cpu, bus, &stack.fetched)?;
        segment::commit_code_target(cpu, bus, &target, gate.offset, event.ext)?;
        cpu.set_segment(SegReg::Ss, stack.segment);
        cpu.gpr[gpr::ESP] = stack.esp_after(sp);
        cpu.stats.privilege_changes += 1;
    } else {
        // INTRA-PRIVILEGE-LEVEL-INTERRUPT: the frame goes on the current
        // stack.
        let frame = encode_frame(&frame_values, width);
        let frame_len = frame.len() as u32;
        let new_sp = cpu.stack_pointer_plus(-(frame_len as i32));
        // A stack that cannot hold the frame raises #SS(EXT) (INT n: "IF
        // new stack does not have room ... THEN #SS(EXT)").
        cpu.linear_address(SegReg::Ss, new_sp, frame_len, crate::memory::Access::Write)
            .map_err(|_| Exception::StackFault(ext))?;
        if gate.offset > target.segment.limit {
            return Err(Exception::GeneralProtection(ext));
        }
        cpu.write_virt(bus, SegReg::Ss, new_sp, &frame)?;
        // Commit: nothing below can fault except the Accessed-bit write,
        // which happens before any register changes.
        segment::commit_code_target(cpu, bus, &target, gate.offset, event.ext)?;
        cpu.set_stack_pointer(new_sp);
    }
    // Both gate kinds clear TF, NT, RF and VM; an interrupt gate also
    // clears IF so the handler starts with interrupts off (SDM Vol. 3A
    // §6.12.1.3).
    cpu.eflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
    if gate.kind == GateKind::Interrupt {
        cpu.eflags &= !flags::IF;
    }
    cpu.halted = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{encode_gate, encode_segment};
    use crate::state::gpr;
    use crate::test_bus::TestBus;

    const GDT: u32 = 0x1000;
    const IDT: u32 = 0x2000;

    /// A CPU at CPL 0 with flat code at 0x08 (DPL 0), flat data at 0x10,
    /// ring-3 code at 0x1B, ring-3 data at 0x23, a 16-bit code segment at
    /// 0x28, and an IDT of 256 entries at 0x2000 that is empty except for
    /// what each test installs. ESP = 0x8000.
    fn machine() -> (Cpu, TestBus) {
        let mut bus = TestBus::new(0x10000);
        let mut cpu = Cpu::new();
        let gdt = [
            0,
            encode_segment(0, 0xFFFFF, 0xC09A),
            encode_segment(0, 0xFFFFF, 0xC092),
            encode_segment(0, 0xFFFFF, 0xC0FA),
            encode_segment(0, 0xFFFFF, 0xC0F2),
            encode_segment(0, 0xFFFF, 0x009A),
        ];
        bus.install_gdt(&mut cpu, GDT, &gdt);
        cpu.idtr.base = IDT;
        cpu.idtr.limit = 256 * 8 - 1;
        cpu.seg[SegReg::Cs as usize] = crate::Segment::flat(0x08, 0xC09B);
        cpu.seg[SegReg::Ss as usize] = crate::Segment::flat(0x10, 0xC093);
        cpu.gpr[gpr::ESP] = 0x8000;
        cpu.eip = 0x4000;
        cpu.eflags = flags::RESERVED1 | flags::IF | flags::TF | flags::CF;
        (cpu, bus)
    }

    fn set_gate(bus: &mut TestBus, vector: u8, raw: u64) {
        bus.write_u64(IDT + 8 * u32::from(vector), raw);
    }

    #[test]
    fn exception_with_error_code_through_interrupt_gate() {
        let (mut cpu, mut bus) = machine();
        set_gate(&mut bus, 13, encode_gate(0xE, 0x08, 0x0010_0000, 0, true));
        deliver_exception(&mut cpu, &mut bus, Exception::GeneralProtection(0x18)).unwrap();
        assert_eq!(cpu.eip, 0x0010_0000);
        assert_eq!(cpu.gpr[gpr::ESP], 0x8000 - 16);
        assert_eq!(bus.read_u32(0x8000 - 16), 0x18, "error code");
        assert_eq!(bus.read_u32(0x8000 - 12), 0x4000, "EIP of the faulting instruction");
        assert_eq!(bus.read_u32(0x8000 - 8), 0x08, "CS");
        let pushed = bus.read_u32(0x8000 - 4);
        assert_eq!(pushed, flags::RESERVED1 | flags::IF | flags::TF | flags::CF | flags::RF, "EFLAGS with RF for a fault");
        assert_eq!(cpu.eflags & (flags::IF | flags::TF), 0, "interrupt gate clears IF and TF");
        assert_eq!(cpu.eflags & flags::CF, flags::CF);
    }

    #[test]
    fn trap_gate_keeps_if_and_sets_cr2_for_page_faults() {
        let (mut cpu, mut bus) = machine();
        set_gate(&mut bus, 14, encode_gate(0xF, 0x08, 0x5000, 0, true));
        deliver_exception(&mut cpu, &mut bus, Exception::PageFault { addr: 0xDEAD_B000, code: 2 }).unwrap();
        assert_eq!(cpu.cr2, 0xDEAD_B000);
        assert_eq!(bus.read_u32(0x8000 - 16), 2);
        assert!(cpu.interrupts_enabled(), "a trap gate leaves IF alone");
        assert_eq!(cpu.eflags & flags::TF, 0);
    }

    #[test]
    fn sixteen_bit_gate_pushes_words() {
        let (mut cpu, mut bus) = machine();
        set_gate(&mut bus, 0x20, encode_gate(0x6, 0x28, 0xABCD_1234, 0, true));
        cpu.halted = true;
        deliver_interrupt(&mut cpu, &mut bus, Vector(0x20), Source::External).unwrap();
        assert_eq!((cpu.segment(SegReg::Cs).selector.0, cpu.eip), (0x28, 0x1234));
        assert_eq!(cpu.gpr[gpr::ESP], 0x8000 - 6);
        assert_eq!(bus.read_u16(0x8000 - 6), 0x4000);
        assert_eq!(bus.read_u16(0x8000 - 4), 0x08);
        assert!(!cpu.halted, "delivery wakes a halted CPU");
    }

    #[test]
    fn software_interrupt_checks() {
        use Exception::*;
        // (gate raw at vector 0x80, CPL, expected)
        let cases: &[(u64, u8, Result<(), Exception>)] = &[
            (encode_gate(0xE, 0x08, 0x6000, 3, true), 0, Ok(())),
            // A ring-3 int to a DPL 0 gate: #GP(vector*8+2), EXT clear.
            (encode_gate(0xE, 0x08, 0x6000, 0, true), 3, Err(GeneralProtection(0x80 * 8 + 2))),
            (encode_gate(0xE, 0x08, 0x6000, 0, false), 0, Err(SegmentNotPresent(0x80 * 8 + 2))),
            // A call gate is not valid in the IDT.
            (encode_gate(0xC, 0x08, 0x6000, 0, true), 0, Err(GeneralProtection(0x80 * 8 + 2))),
            (encode_gate(0xE, 0x00, 0x6000, 0, true), 0, Err(GeneralProtection(0))),
            (encode_gate(0xE, 0x30, 0x6000, 0, true), 0, Err(GeneralProtection(0x30))),
            // A data segment as the handler's CS.
            (encode_gate(0xE, 0x10, 0x6000, 0, true), 0, Err(GeneralProtection(0x10))),
            // Ring 3 to a ring-0 handler switches stacks through the TSS;
            // with no TSS loaded that is #TS(TR selector = 0).
            (encode_gate(0xE, 0x08, 0x6000, 3, true), 3, Err(InvalidTss(0))),
            // Ring 3 to a ring-3 handler: fine.
            (encode_gate(0xE, 0x1B, 0x6000, 3, true), 3, Ok(())),
            // Task gates are unsupported.
            (encode_gate(0x5, 0x30, 0, 3, true), 0, Err(GeneralProtection(0x80 * 8 + 2))),
        ];
        for &(raw, cpl, expected) in cases {
            let (mut cpu, mut bus) = machine();
            if cpl == 3 {
                cpu.seg[SegReg::Cs as usize] = crate::Segment::flat(0x1B, 0xC0FB);
                cpu.seg[SegReg::Ss as usize] = crate::Segment::flat(0x23, 0xC0F3);
            }
            set_gate(&mut bus, 0x80, raw);
            let before = cpu.clone();
            let got = deliver_interrupt(
                &mut cpu,
                &mut bus,
                Vector(0x80),
                Source::Software { next_eip: 0x4002, is_int3_or_into: false },
            );
            assert_eq!(got, expected, "gate {raw:#x} at CPL {cpl}");
            if got.is_ok() {
                assert_eq!(cpu.eip, 0x6000);
                assert_eq!(bus.read_u32(0x8000 - 12), 0x4002, "int returns to the next instruction");
                assert_eq!(cpu.cpl(), cpl);
            } else {
                assert_eq!(cpu, before, "a failed delivery changes nothing");
            }
        }
    }

    #[test]
    fn external_interrupt_beyond_idt_limit_sets_ext() {
        let (mut cpu, mut bus) = machine();
        cpu.idtr.limit = 0x40 * 8 + 6; // entry 0x40 is one byte short
        assert_eq!(
            deliver_interrupt(&mut cpu, &mut bus, Vector(0x40), Source::External),
            Err(Exception::GeneralProtection(0x40 * 8 + 3))
        );
    }

    #[test]
    fn double_and_triple_faults() {
        // #GP with no gate at 13 -> #GP while delivering #GP: contributory
        // twice makes #DF, which has a gate.
        let (mut cpu, mut bus) = machine();
        cpu.idtr.limit = 13 * 8 - 1; // vectors 0..12 only
        set_gate(&mut bus, 8, encode_gate(0xE, 0x08, 0x7000, 0, true));
        deliver_exception(&mut cpu, &mut bus, Exception::GeneralProtection(0)).unwrap();
        assert_eq!(cpu.eip, 0x7000);
        assert_eq!(bus.read_u32(0x8000 - 16), 0, "#DF pushes error code 0");

        // No #DF gate either: a triple fault.
        let (mut cpu, mut bus) = machine();
        cpu.idtr.limit = 0;
        let got = deliver_exception(&mut cpu, &mut bus, Exception::StackFault(0));
        assert!(matches!(got, Err(Shutdown::TripleFault { original: Exception::StackFault(0), .. })), "{got:?}");
        assert!(got.unwrap_err().to_string().contains("triple fault at guest EIP 0x00004000"));

        // A benign exception whose gate is missing becomes the #GP itself.
        let (mut cpu, mut bus) = machine();
        set_gate(&mut bus, 13, encode_gate(0xE, 0x08, 0x7100, 0, true));
        deliver_exception(&mut cpu, &mut bus, Exception::InvalidOpcode).unwrap();
        assert_eq!(cpu.eip, 0x7100);
        assert_eq!(bus.read_u32(0x8000 - 16), 6 * 8 + 3, "the #GP names IDT entry 6 with EXT");
    }

    #[test]
    fn table_6_5() {
        use Exception::*;
        let pf = PageFault { addr: 0, code: 0 };
        // (first, second, double fault?)
        let cases = [
            (GeneralProtection(0), GeneralProtection(0), true),
            (GeneralProtection(0), pf, false),
            (DivideError, SegmentNotPresent(0), true),
            (pf, pf, true),
            (pf, InvalidTss(0), true),
            (InvalidOpcode, GeneralProtection(0), false),
            (Breakpoint, pf, false),
        ];
        for (first, second, df) in cases {
            assert_eq!(raises_double_fault(first, second), df, "{first} then {second}");
        }
    }

    #[test]
    fn stack_without_room_raises_ss_ext() {
        let (mut cpu, mut bus) = machine();
        set_gate(&mut bus, 0x21, encode_gate(0xE, 0x08, 0x6000, 0, true));
        // An expand-up stack segment with limit 0xFFF and ESP 4: no room.
        cpu.seg[SegReg::Ss as usize] = crate::Segment { selector: crate::Selector(0x10), base: 0, limit: 0xFFF, access: 0x4093 };
        cpu.gpr[gpr::ESP] = 4;
        let before = cpu.clone();
        assert_eq!(deliver_interrupt(&mut cpu, &mut bus, Vector(0x21), Source::External), Err(Exception::StackFault(1)));
        assert_eq!(cpu, before);
    }
}
