//! Table-driven tests for privilege transitions: interrupts and exceptions
//! into ring 0 from ring 3, `iret` and far `ret` back out, call gates,
//! `sysenter`/`sysexit`, the I/O permission bitmap and `popf` at each CPL.
//! Each case runs real instruction bytes (or a delivery) on the machine of
//! `exec_tests.rs`, extended with a TSS and the descriptors below, and
//! checks the frame on the new stack, SS:ESP, CS:EIP and the error code.
#![allow(clippy::type_complexity)] // one tuple per table row

use bt86_machine::IoSize;

use crate::descriptor::{encode_gate, encode_segment};
use crate::exception::{Exception, Vector};
use crate::exec::tests::*;
use crate::exec::Effect;
use crate::interrupt::{deliver_exception, deliver_interrupt, Source};
use crate::state::{flags, gpr, Cpu, SegReg, Segment, Selector};
use crate::test_bus::TestBus;
use crate::tss::offset;

const TSS_BASE: u32 = 0x6000;
/// ESP0 and ESP1 in the TSS.
const RING0_TOP: u32 = 0xA000;
const RING1_TOP: u32 = 0xB000;

const SEL_GATE32: u16 = 0x68; // call gate, DPL 3 -> ring 0 at 0x7100, 2 parameters
const SEL_CODE1: u16 = 0x71; // ring-1 code (RPL 1)
const SEL_DATA1: u16 = 0x79; // ring-1 data (RPL 1)
const SEL_GATE16: u16 = 0x80; // 16-bit call gate, DPL 3 -> ring 0 at 0x7200, 1 parameter
const SEL_GATE_DPL0: u16 = 0x88; // call gate, DPL 0 -> ring 0
const SEL_GATE_SAME: u16 = 0x90; // call gate, DPL 3 -> ring 3 at 0x7300
const SEL_GATE_ABSENT: u16 = 0x98; // not-present call gate, DPL 3
const SEL_GATE_RING1: u16 = 0xA0; // call gate, DPL 3 -> ring 1 at 0x7400
const SEL_DATA3_ABSENT: u16 = 0xAB; // not-present ring-3 data
const SEL_CODE3_SMALL: u16 = 0xB3; // ring-3 code with limit 0xFFFF
const SEL_DATA3_16: u16 = 0xBB; // ring-3 16-bit data (B = 0), limit 0xFFFF
const SEL_GATE_CONFORMING: u16 = 0xC0; // call gate, DPL 3 -> conforming ring-0 code at 0x7500
const SEL_GATE_NULL: u16 = 0xC8; // call gate, DPL 3, null code selector
const SEL_DATA3_DOWN: u16 = 0xD3; // ring-3 expand-down data, valid offsets 0x1000..=0xFFFF_FFFF

/// Sets the parameter-count field (bits 36:32) of a call gate.
fn with_params(gate: u64, count: u8) -> u64 {
    gate | (u64::from(count & 0x1F) << 32)
}

fn extra_gdt_entries() -> Vec<u64> {
    vec![
        with_params(encode_gate(0xC, SEL_CODE0, 0x7100, 3, true), 2), // 0x68
        encode_segment(0, 0xFFFFF, 0xC0BA),                           // 0x70 ring-1 code
        encode_segment(0, 0xFFFFF, 0xC0B2),                           // 0x78 ring-1 data
        with_params(encode_gate(0x4, SEL_CODE0, 0x7200, 3, true), 1), // 0x80
        encode_gate(0xC, SEL_CODE0, 0x7100, 0, true),                 // 0x88
        encode_gate(0xC, SEL_CODE3, 0x7300, 3, true),                 // 0x90
        encode_gate(0xC, SEL_CODE0, 0x7100, 3, false),                // 0x98
        encode_gate(0xC, SEL_CODE1, 0x7400, 3, true),                 // 0xA0
        encode_segment(0, 0xFFFFF, 0xC072),                           // 0xA8 not present
        encode_segment(0, 0xFFFF, 0x40FA),                            // 0xB0
        encode_segment(0, 0xFFFF, 0x00F2),                            // 0xB8
        encode_gate(0xC, SEL_CONFORMING, 0x7500, 3, true),            // 0xC0
        encode_gate(0xC, 0, 0x7600, 3, true),                         // 0xC8
        encode_segment(0, 0x00000, 0xC0F6),                           // 0xD0 expand-down
    ]
}

/// The machine of `exec_tests.rs` at `cpl` (1 and 2 use ring-1 selectors
/// with that RPL), plus the descriptors above, a 32-bit TSS in TR with
/// SS0:ESP0 = 0x10:0xA000 and SS1:ESP1 = 0x79:0xB000, and IDT vectors
/// 0x21 (a DPL 0 trap gate to ring 0) and 0x22 (a DPL 0 interrupt gate to
/// ring 1). DS, ES, FS and GS hold the ring's data segment.
fn ring_machine(cpl: u8) -> (Cpu, TestBus) {
    let (mut cpu, mut bus) = machine(if cpl == 0 { 0 } else { 3 });
    let mut gdt = gdt_entries();
    gdt.extend(extra_gdt_entries());
    bus.install_gdt(&mut cpu, GDT, &gdt);
    bus.write_u32(TSS_BASE + offset::ESP0, RING0_TOP);
    bus.write_u16(TSS_BASE + offset::SS0, SEL_DATA0);
    bus.write_u32(TSS_BASE + offset::ESP0 + 8, RING1_TOP);
    bus.write_u16(TSS_BASE + offset::SS0 + 8, SEL_DATA1);
    // An I/O map base at the limit means "no bitmap", as operating systems
    // without one set it.
    bus.write_u16(TSS_BASE + offset::IO_MAP_BASE, 0x68);
    cpu.tr = Segment { selector: Selector(SEL_TSS), base: TSS_BASE, limit: 0x67, access: 0x008B };
    bus.write_u64(IDT + 8 * 0x21, encode_gate(0xF, SEL_CODE0, 0x7021, 0, true));
    bus.write_u64(IDT + 8 * 0x22, encode_gate(0xE, SEL_CODE1, 0x7022, 0, true));
    if cpl == 1 || cpl == 2 {
        let code = Segment::flat((SEL_CODE1 & !3) | u16::from(cpl), 0xC0BB);
        let data = Segment::flat((SEL_DATA1 & !3) | u16::from(cpl), 0xC0B3);
        cpu.seg = [data; 6];
        cpu.seg[SegReg::Cs as usize] = code;
    }
    (cpu, bus)
}

/// The `n` dwords at `addr`.
fn dwords(bus: &mut TestBus, addr: u32, n: u32) -> Vec<u32> {
    (0..n).map(|i| bus.read_u32(addr + 4 * i)).collect()
}

fn selectors(cpu: &Cpu) -> (u16, u16) {
    (cpu.segment(SegReg::Cs).selector.0, cpu.segment(SegReg::Ss).selector.0)
}

/// How a test raises an event.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// Execute these instruction bytes.
    Insn(&'static [u8]),
    Exception(Exception),
    External(u8),
}

fn raise(cpu: &mut Cpu, bus: &mut TestBus, event: Event) -> Result<(), Exception> {
    match event {
        Event::Insn(bytes) => match run(cpu, bus, bytes) {
            Ok(_) => Ok(()),
            Err(crate::emulate::EmulateError::Exception(e)) => Err(e),
            Err(other) => panic!("{other}"),
        },
        Event::Exception(e) => {
            deliver_exception(cpu, bus, e).map_err(|s| panic!("{s}"))
        }
        Event::External(v) => deliver_interrupt(cpu, bus, Vector(v), Source::External),
    }
}

#[test]
fn events_from_ring3_switch_to_the_tss_stack() {
    let user_flags = flags::RESERVED1 | flags::IF | flags::TF | flags::NT | flags::CF;
    // (event, frame pushed on the ring-0 stack from its lowest address,
    //  CS:EIP of the handler, IF after)
    let cases: &[(Event, &[u32], (u16, u32), bool)] = &[
        // int 0x80 through a DPL 3 interrupt gate: returns after the int.
        (Event::Insn(&[0xCD, 0x80]), &[CODE_EIP + 2, 0x1B, user_flags, STACK_TOP, 0x23], (SEL_CODE0, 0x7080), false),
        // int3 likewise.
        (Event::Insn(&[0xCC]), &[CODE_EIP + 1, 0x1B, user_flags, STACK_TOP, 0x23], (SEL_CODE0, 0x7003), false),
        // A #GP with its error code, pushed with RF (a fault).
        (
            Event::Exception(Exception::GeneralProtection(0x18)),
            &[0x18, CODE_EIP, 0x1B, user_flags | flags::RF, STACK_TOP, 0x23],
            (SEL_CODE0, 0x700D),
            false,
        ),
        // A hardware interrupt through a DPL 0 trap gate: the gate DPL is
        // not checked for external interrupts, and a trap gate keeps IF.
        (Event::External(0x21), &[CODE_EIP, 0x1B, user_flags, STACK_TOP, 0x23], (SEL_CODE0, 0x7021), true),
    ];
    for &(event, frame, (cs, eip), if_after) in cases {
        let (mut cpu, mut bus) = ring_machine(3);
        cpu.eflags = user_flags;
        raise(&mut cpu, &mut bus, event).unwrap_or_else(|e| panic!("{event:?}: {e}"));
        let len = frame.len() as u32;
        assert_eq!(dwords(&mut bus, RING0_TOP - 4 * len, len), frame, "{event:?}: the frame");
        assert_eq!((cpu.gpr[gpr::ESP], selectors(&cpu)), (RING0_TOP - 4 * len, (cs, SEL_DATA0)), "{event:?}");
        assert_eq!((cpu.cpl(), cpu.eip), (0, eip), "{event:?}");
        assert_eq!(cpu.interrupts_enabled(), if_after, "{event:?}");
        assert_eq!(cpu.eflags & (flags::TF | flags::NT | flags::RF), 0, "{event:?}: TF, NT and RF cleared");
        assert_eq!(cpu.eflags & flags::CF, flags::CF, "{event:?}: arithmetic flags kept");
        assert_eq!(cpu.stats.privilege_changes, 1);
        // The ring-3 stack was not touched.
        assert_eq!(bus.read_u32(STACK_TOP - 4), 0, "{event:?}");
    }

    // Ring 3 to a ring-1 handler uses SS1:ESP1.
    let (mut cpu, mut bus) = ring_machine(3);
    deliver_interrupt(&mut cpu, &mut bus, Vector(0x22), Source::External).unwrap();
    assert_eq!((cpu.cpl(), selectors(&cpu), cpu.gpr[gpr::ESP]), (1, (SEL_CODE1, SEL_DATA1), RING1_TOP - 20));
    assert_eq!(dwords(&mut bus, RING1_TOP - 8, 2), [STACK_TOP, 0x23]);

    // A 16-bit gate pushes words, old SS:SP included.
    let (mut cpu, mut bus) = ring_machine(3);
    bus.write_u64(IDT + 8 * 0x80, encode_gate(0x6, SEL_CODE0, 0x7080, 3, true));
    run(&mut cpu, &mut bus, &[0xCD, 0x80]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], RING0_TOP - 10);
    let words: Vec<u16> = (0..5).map(|i| bus.read_u16(RING0_TOP - 10 + 2 * i)).collect();
    assert_eq!(words, [(CODE_EIP + 2) as u16, 0x1B, flags::RESERVED1 as u16, STACK_TOP as u16, 0x23]);
}

#[test]
fn inner_delivery_faults_change_nothing() {
    use Exception::*;
    // (what to break, event, expected fault)
    type Setup = fn(&mut Cpu, &mut TestBus);
    let int80 = Event::Insn(&[0xCD, 0x80]);
    let ext80 = Event::External(0x80);
    let cases: &[(&str, Setup, Event, Exception)] = &[
        ("no TSS loaded", |cpu, _| cpu.tr = Segment::default(), int80, InvalidTss(0)),
        ("no TSS loaded, external", |cpu, _| cpu.tr = Segment::default(), ext80, InvalidTss(1)),
        ("TSS too short for SS0", |cpu, _| cpu.tr.limit = 8, int80, InvalidTss(SEL_TSS)),
        ("null SS0", |_, bus| bus.write_u16(TSS_BASE + 8, 0), int80, InvalidTss(0)),
        ("null SS0, external", |_, bus| bus.write_u16(TSS_BASE + 8, 0), ext80, InvalidTss(1)),
        ("SS0 with RPL 3", |_, bus| bus.write_u16(TSS_BASE + 8, SEL_DATA0 | 3), int80, InvalidTss(SEL_DATA0)),
        ("SS0 of DPL 3", |_, bus| bus.write_u16(TSS_BASE + 8, SEL_DATA3 & !3), ext80, InvalidTss((SEL_DATA3 & !3) | 1)),
        ("SS0 is code", |_, bus| bus.write_u16(TSS_BASE + 8, SEL_CODE0), int80, InvalidTss(SEL_CODE0)),
        ("SS0 beyond the GDT", |_, bus| bus.write_u16(TSS_BASE + 8, 0x400), int80, InvalidTss(0x400)),
        (
            "SS0 not present",
            |_, bus| bus.write_u64(GDT + u32::from(SEL_DATA0), encode_segment(0, 0xFFFFF, 0xC012)),
            int80,
            StackFault(SEL_DATA0),
        ),
        // SEL_SMALL_DATA: base 0x3000, limit 0xFFF. 20 bytes below 0x10
        // wrap below zero; 0x1010 is above the limit.
        (
            "no room below ESP0",
            |_, bus| {
                bus.write_u16(TSS_BASE + 8, SEL_SMALL_DATA);
                bus.write_u32(TSS_BASE + 4, 0x10);
            },
            int80,
            StackFault(SEL_SMALL_DATA),
        ),
        (
            "ESP0 beyond the limit, external",
            |_, bus| {
                bus.write_u16(TSS_BASE + 8, SEL_SMALL_DATA);
                bus.write_u32(TSS_BASE + 4, 0x1020);
            },
            ext80,
            StackFault(SEL_SMALL_DATA | 1),
        ),
        (
            "handler beyond the code limit",
            |_, bus| bus.write_u64(IDT + 8 * 0x80, encode_gate(0xE, SEL_CODE16, 0x1_0000, 3, true)),
            int80,
            GeneralProtection(0),
        ),
    ];
    for &(what, setup, event, expected) in cases {
        let (mut cpu, mut bus) = ring_machine(3);
        setup(&mut cpu, &mut bus);
        let before = cpu.clone();
        assert_eq!(raise(&mut cpu, &mut bus, event), Err(expected), "{what}");
        assert_eq!(cpu, before, "{what}: a failed delivery changes nothing");
    }
}

#[test]
fn gate_dpl_is_checked_for_software_interrupts_only() {
    // Vector 0x21 has a DPL 0 gate: int 0x21 at CPL 3 is #GP(0x21*8+2),
    // at CPL 1 too; at CPL 0 it is delivered.
    for (cpl, expected) in [(3u8, Err(Exception::GeneralProtection(0x21 * 8 + 2))), (1, Err(Exception::GeneralProtection(0x21 * 8 + 2))), (0, Ok(()))] {
        let (mut cpu, mut bus) = ring_machine(cpl);
        assert_eq!(raise(&mut cpu, &mut bus, Event::Insn(&[0xCD, 0x21])), expected, "CPL {cpl}");
    }
}

/// Writes an `iret` frame at `esp`: EIP, CS, EFLAGS, ESP, SS.
fn write_iret_frame(bus: &mut TestBus, esp: u32, values: [u32; 5]) {
    for (i, v) in values.iter().enumerate() {
        bus.write_u32(esp + 4 * i as u32, *v);
    }
}

#[test]
fn iret_to_ring3_pops_ss_esp() {
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.gpr[gpr::ESP] = RING0_TOP - 20;
    let image = flags::RESERVED1 | flags::IF | flags::ZF | (3 << 12);
    write_iret_frame(&mut bus, RING0_TOP - 20, [0x4444, u32::from(SEL_CODE3), image, 0x7654, u32::from(SEL_DATA3)]);
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), Ok(Effect::InterruptsEnabled));
    assert_eq!((cpu.cpl(), cpu.eip, cpu.gpr[gpr::ESP], selectors(&cpu)), (3, 0x4444, 0x7654, (SEL_CODE3, SEL_DATA3)));
    assert_eq!(cpu.eflags, image, "at CPL 0 iret loads IF and IOPL");
    assert_eq!(cpu.stats.privilege_changes, 1);

    // A 16-bit stack segment receives only SP: the upper half of ESP
    // keeps the ring-0 value (the "espfix" leak). The ring-0 stack here has
    // base 0xFFFF_0000, so ESP 0x0001_9FEC is linear 0x9FEC.
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.seg[SegReg::Ss as usize].base = 0xFFFF_0000;
    cpu.gpr[gpr::ESP] = 0x0001_0000 + RING0_TOP - 20;
    write_iret_frame(&mut bus, RING0_TOP - 20, [0x4444, u32::from(SEL_CODE3), 2, 0xDEAD_7654, u32::from(SEL_DATA3_16)]);
    run(&mut cpu, &mut bus, &[0xCF]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], 0x0001_7654);

    // iret from ring 1 (IOPL 0) to ring 3: IF and IOPL stay as they were.
    let (mut cpu, mut bus) = ring_machine(1);
    cpu.gpr[gpr::ESP] = RING1_TOP - 20;
    cpu.eflags = flags::RESERVED1;
    write_iret_frame(&mut bus, RING1_TOP - 20, [0x4444, u32::from(SEL_CODE3), image, 0x7654, u32::from(SEL_DATA3)]);
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), Ok(Effect::Continue));
    assert_eq!(cpu.eflags, flags::RESERVED1 | flags::ZF);
}

#[test]
fn iret_to_an_outer_level_checks_the_frame() {
    use Exception::*;
    let cs3 = u32::from(SEL_CODE3);
    // (EIP, CS, SS in the frame, expected fault)
    let cases: &[(u32, u32, u32, Exception)] = &[
        (0x4444, cs3, 0, GeneralProtection(0)),
        (0x4444, cs3, 3, GeneralProtection(0)), // null with RPL 3
        (0x4444, cs3, u32::from(SEL_DATA0), GeneralProtection(SEL_DATA0)), // RPL 0 != 3
        (0x4444, cs3, u32::from(SEL_DATA0 | 3), GeneralProtection(SEL_DATA0)), // DPL 0 != 3
        (0x4444, cs3, u32::from(SEL_CODE3), GeneralProtection(SEL_CODE3 & !3)), // code
        (0x4444, cs3, u32::from(SEL_EXEC_ONLY3 | 3), GeneralProtection(SEL_EXEC_ONLY3)),
        (0x4444, cs3, 0x7FB, GeneralProtection(0x7F8)), // beyond the GDT
        (0x4444, cs3, u32::from(SEL_DATA3_ABSENT), StackFault(SEL_DATA3_ABSENT & !3)),
        // EIP beyond a 64 KiB code segment is checked after SS.
        (0x1_0000, u32::from(SEL_CODE3_SMALL), u32::from(SEL_DATA3), GeneralProtection(0)),
        (0x1_0000, u32::from(SEL_CODE3_SMALL), 0, GeneralProtection(0)),
        // The return CS: RPL 3 with DPL 0 is #GP(CS).
        (0x4444, u32::from(SEL_CODE0 | 3), u32::from(SEL_DATA3), GeneralProtection(SEL_CODE0)),
    ];
    for &(eip, cs, ss, expected) in cases {
        let (mut cpu, mut bus) = ring_machine(0);
        cpu.gpr[gpr::ESP] = RING0_TOP - 20;
        write_iret_frame(&mut bus, RING0_TOP - 20, [eip, cs, flags::RESERVED1, 0x7000, ss]);
        let before = cpu.clone();
        assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), guest(expected), "EIP {eip:#x} CS {cs:#x} SS {ss:#x}");
        assert_eq!(cpu, before, "EIP {eip:#x} CS {cs:#x} SS {ss:#x}: a failed iret changes nothing");
    }
    // A frame that does not fit on the ring-0 stack: #SS(0).
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.seg[SegReg::Ss as usize] = Segment { selector: Selector(SEL_SMALL_DATA), base: 0x3000, limit: 0xFFF, access: 0x4093 };
    cpu.gpr[gpr::ESP] = 0xFF0;
    bus.write_u32(0x3FF4, cs3);
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), guest(StackFault(0)));
}

#[test]
fn returns_to_an_outer_level_null_data_segments() {
    // (segment the register holds at ring 0, nulled on the way to ring 3?)
    let cases: &[(&str, Segment, bool)] = &[
        ("ring-0 data", Segment::flat(SEL_DATA0, 0xC093), true),
        ("ring-3 data", Segment::flat(SEL_DATA3, 0xC0F3), false),
        ("ring-0 readable code", Segment::flat(SEL_CODE0, 0xC09B), true),
        ("ring-0 conforming code", Segment::flat(SEL_CONFORMING, 0xC09F), false),
        ("ring-1 data", Segment::flat(SEL_DATA1, 0xC0B3), true),
        ("null", Segment::default(), true),
        ("null with RPL 3", Segment { selector: Selector(3), base: 0, limit: 0, access: 0 }, true),
    ];
    let nulled = Segment { selector: Selector(0), base: 0, limit: 0, access: 0 };
    for &(what, seg, is_nulled) in cases {
        for reg in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            // Through iret and through retf.
            for (insn, frame) in [(&[0xCFu8][..], 5u32), (&[0xCB][..], 4)] {
                let (mut cpu, mut bus) = ring_machine(0);
                cpu.gpr[gpr::ESP] = RING0_TOP - 4 * frame;
                let values: &[u32] = if frame == 5 {
                    &[0x4444, 0x1B, 2, 0x7000, 0x23]
                } else {
                    &[0x4444, 0x1B, 0x7000, 0x23]
                };
                for (i, v) in values.iter().enumerate() {
                    bus.write_u32(RING0_TOP - 4 * frame + 4 * i as u32, *v);
                }
                cpu.seg[reg as usize] = seg;
                let before = cpu.clone();
                run(&mut cpu, &mut bus, insn).unwrap();
                let expected = if is_nulled { nulled } else { seg };
                assert_eq!(*cpu.segment(reg), expected, "{what} in {reg:?}, {insn:02x?}");
                for other in [SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
                    if other != reg {
                        // The others hold ring-0 data in this machine.
                        assert_eq!(cpu.segment(other).selector.0, 0, "{other:?} beside {reg:?}");
                        assert_ne!(before.segment(other).selector.0, 0);
                    }
                }
            }
        }
    }

    // A same-level iret nulls nothing.
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.gpr[gpr::ESP] = RING0_TOP - 12;
    write_iret_frame(&mut bus, RING0_TOP - 12, [0x4444, u32::from(SEL_CODE0), 2, 0, 0]);
    run(&mut cpu, &mut bus, &[0xCF]).unwrap();
    assert_eq!(cpu.segment(SegReg::Ds).selector.0, SEL_DATA0);
}

#[test]
fn far_ret_to_an_outer_level() {
    // (bytes, the stack from ESP up, expected EIP, ESP after)
    let cases: &[(&[u8], &[u32], u32, u32)] = &[
        (&[0xCB], &[0x4444, 0x1B, 0x7000, 0x23], 0x4444, 0x7000),
        // retf 8: 8 bytes of parameters above CS on the inner stack, and 8
        // released on the outer stack as well.
        (&[0xCA, 0x08, 0x00], &[0x4444, 0x1B, 0xAAAA, 0xBBBB, 0x7000, 0x23], 0x4444, 0x7008),
    ];
    for &(bytes, stack, eip, esp) in cases {
        let (mut cpu, mut bus) = ring_machine(0);
        let start = RING0_TOP - 4 * stack.len() as u32;
        cpu.gpr[gpr::ESP] = start;
        for (i, v) in stack.iter().enumerate() {
            bus.write_u32(start + 4 * i as u32, *v);
        }
        run(&mut cpu, &mut bus, bytes).unwrap();
        assert_eq!((cpu.cpl(), cpu.eip, cpu.gpr[gpr::ESP], selectors(&cpu)), (3, eip, esp, (SEL_CODE3, SEL_DATA3)), "{bytes:02x?}");
    }
    // 16-bit retf: words.
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.gpr[gpr::ESP] = RING0_TOP - 8;
    for (i, v) in [0x4444u16, 0x1B, 0x7000, 0x23].iter().enumerate() {
        bus.write_u16(RING0_TOP - 8 + 2 * i as u32, *v);
    }
    run(&mut cpu, &mut bus, &[0x66, 0xCB]).unwrap();
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP], selectors(&cpu)), (0x4444, 0x7000, (SEL_CODE3, SEL_DATA3)));
    // An SS for the wrong ring: #GP(SS), nothing changes.
    let (mut cpu, mut bus) = ring_machine(0);
    cpu.gpr[gpr::ESP] = RING0_TOP - 16;
    for (i, v) in [0x4444u32, 0x1B, 0x7000, u32::from(SEL_DATA1)].iter().enumerate() {
        bus.write_u32(RING0_TOP - 16 + 4 * i as u32, *v);
    }
    let before = cpu.clone();
    assert_eq!(run(&mut cpu, &mut bus, &[0xCB]), guest(Exception::GeneralProtection(SEL_DATA1 & !3)));
    assert_eq!(cpu, before);
}

/// `call far sel:0` (the offset is ignored through a gate) and `jmp far`.
fn call_far(sel: u16) -> Vec<u8> {
    let mut v = vec![0x9A, 0, 0, 0, 0];
    v.extend_from_slice(&sel.to_le_bytes());
    v
}

fn jmp_far(sel: u16) -> Vec<u8> {
    let mut v = vec![0xEA, 0, 0, 0, 0];
    v.extend_from_slice(&sel.to_le_bytes());
    v
}

#[test]
fn call_gates() {
    use Exception::*;
    let ret = CODE_EIP + 7;
    // Two parameters on the caller's ring-3 stack.
    let user_esp = STACK_TOP - 8;
    // (CPL, bytes, expected: Ok((CS, EIP, SS, ESP, dwords from ESP up)) or the fault)
    let cases: Vec<(u8, Vec<u8>, Result<(u16, u32, u16, u32, Vec<u32>), Exception>)> = vec![
        // To ring 0 with two parameters copied, in order.
        (3, call_far(SEL_GATE32 | 3), Ok((SEL_CODE0, 0x7100, SEL_DATA0, RING0_TOP - 24,
            vec![ret, 0x1B, 0x1111_1111, 0x2222_2222, user_esp, 0x23]))),
        // To ring 1 with none: SS1:ESP1.
        (3, call_far(SEL_GATE_RING1), Ok((SEL_CODE1, 0x7400, SEL_DATA1, RING1_TOP - 16,
            vec![ret, 0x1B, user_esp, 0x23]))),
        // To the same ring: only CS:EIP, on the current stack.
        (3, call_far(SEL_GATE_SAME), Ok((SEL_CODE3, 0x7300, SEL_DATA3, user_esp - 8, vec![ret, 0x1B]))),
        // To conforming ring-0 code: CPL stays 3.
        (3, call_far(SEL_GATE_CONFORMING), Ok((SEL_CONFORMING | 3, 0x7500, SEL_DATA3, user_esp - 8, vec![ret, 0x1B]))),
        // From ring 0 through the same gate: no privilege change.
        (0, call_far(SEL_GATE32), Ok((SEL_CODE0, 0x7100, SEL_DATA0, user_esp - 8, vec![ret, 0x08]))),
        // jmp through a gate to the same ring.
        (3, jmp_far(SEL_GATE_SAME), Ok((SEL_CODE3, 0x7300, SEL_DATA3, user_esp, vec![0x1111_1111]))),
        // The gate's DPL must be >= CPL and >= RPL.
        (3, call_far(SEL_GATE_DPL0 | 3), Err(GeneralProtection(SEL_GATE_DPL0))),
        (0, call_far(SEL_GATE_DPL0 | 3), Err(GeneralProtection(SEL_GATE_DPL0))),
        (3, call_far(SEL_GATE_ABSENT), Err(SegmentNotPresent(SEL_GATE_ABSENT))),
        (3, call_far(SEL_GATE_NULL), Err(GeneralProtection(0))),
        // jmp never changes CPL: a gate to ring 0 is #GP(code selector).
        (3, jmp_far(SEL_GATE32), Err(GeneralProtection(SEL_CODE0))),
        // A call to an outer ring is refused: ring 0 through a gate to ring 3.
        (0, call_far(SEL_GATE_SAME), Err(GeneralProtection(SEL_CODE3 & !3))),
    ];
    for (cpl, bytes, expected) in cases {
        let (mut cpu, mut bus) = ring_machine(cpl);
        cpu.gpr[gpr::ESP] = user_esp;
        bus.write_u32(user_esp, 0x1111_1111);
        bus.write_u32(user_esp + 4, 0x2222_2222);
        let before = cpu.clone();
        let got = run(&mut cpu, &mut bus, &bytes);
        match expected {
            Ok((cs, eip, ss, esp, stack)) => {
                assert_eq!(got, Ok(Effect::Continue), "{bytes:02x?} at CPL {cpl}");
                assert_eq!((selectors(&cpu), cpu.eip, cpu.gpr[gpr::ESP]), ((cs, ss), eip, esp), "{bytes:02x?} at CPL {cpl}");
                assert_eq!(cpu.cpl(), (cs & 3) as u8);
                assert_eq!(dwords(&mut bus, esp, stack.len() as u32), stack, "{bytes:02x?} at CPL {cpl}");
            }
            Err(e) => {
                assert_eq!(got, guest(e), "{bytes:02x?} at CPL {cpl}");
                assert_eq!(cpu, before, "{bytes:02x?} at CPL {cpl}: a fault changes nothing");
            }
        }
    }

    // A 16-bit gate pushes words and copies one word.
    let (mut cpu, mut bus) = ring_machine(3);
    cpu.gpr[gpr::ESP] = user_esp;
    bus.write_u32(user_esp, 0x1111_ABCD);
    run(&mut cpu, &mut bus, &call_far(SEL_GATE16)).unwrap();
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (0x7200, RING0_TOP - 10));
    let words: Vec<u16> = (0..5).map(|i| bus.read_u16(RING0_TOP - 10 + 2 * i)).collect();
    assert_eq!(words, [ret as u16, 0x1B, 0xABCD, user_esp as u16, 0x23]);

    // A bad SS0 in the TSS is #TS(SS) without EXT.
    let (mut cpu, mut bus) = ring_machine(3);
    bus.write_u16(TSS_BASE + offset::SS0, SEL_DATA3);
    assert_eq!(run(&mut cpu, &mut bus, &call_far(SEL_GATE32)), guest(InvalidTss(SEL_DATA3 & !3)));
}

#[test]
fn call_gate_then_retf_round_trip() {
    let (mut cpu, mut bus) = ring_machine(3);
    cpu.gpr[gpr::ESP] = STACK_TOP - 8;
    cpu.seg[SegReg::Ds as usize] = Segment::flat(SEL_DATA3, 0xC0F3);
    run(&mut cpu, &mut bus, &call_far(SEL_GATE32)).unwrap();
    assert_eq!(cpu.cpl(), 0);
    // The callee returns with `retf 8`, releasing the two copied
    // parameters on both stacks.
    cpu.seg[SegReg::Ds as usize] = Segment::flat(SEL_DATA0, 0xC093);
    run(&mut cpu, &mut bus, &[0xCA, 0x08, 0x00]).unwrap();
    assert_eq!((cpu.cpl(), cpu.eip, cpu.gpr[gpr::ESP], selectors(&cpu)), (3, CODE_EIP + 7, STACK_TOP, (SEL_CODE3, SEL_DATA3)));
    assert_eq!(cpu.segment(SegReg::Ds).selector.0, 0, "the ring-0 DS the callee left is nulled");
    assert_eq!(cpu.stats.privilege_changes, 2);
}

#[test]
fn int_then_iret_round_trip_from_ring3() {
    let (mut cpu, mut bus) = ring_machine(3);
    cpu.eflags = flags::RESERVED1 | flags::IF | flags::SF;
    run(&mut cpu, &mut bus, &[0xCD, 0x80]).unwrap();
    assert_eq!((cpu.cpl(), cpu.eip), (0, 0x7080));
    assert!(!cpu.interrupts_enabled());
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), Ok(Effect::InterruptsEnabled));
    assert_eq!((cpu.cpl(), cpu.eip, cpu.gpr[gpr::ESP], selectors(&cpu)), (3, CODE_EIP + 2, STACK_TOP, (SEL_CODE3, SEL_DATA3)));
    assert_eq!(cpu.eflags, flags::RESERVED1 | flags::IF | flags::SF);
    assert_eq!(cpu.segment(SegReg::Ds).selector.0, SEL_DATA3, "ring-3 data segments survive");
}

#[test]
fn sysenter_and_sysexit_rules() {
    use Exception::*;
    // (CPL, bytes, IA32_SYSENTER_CS, expected Ok((CS, SS, EIP, ESP)) or fault)
    let cases: &[(u8, &[u8], u32, Result<(u16, u16, u32, u32), Exception>)] = &[
        (3, &[0x0F, 0x34], 0x08, Ok((0x08, 0x10, 0xC000, 0xA000))),
        // RPL bits in the MSR are cleared for CS; sysenter works at CPL 0.
        (3, &[0x0F, 0x34], 0x0B, Ok((0x08, 0x10, 0xC000, 0xA000))),
        (0, &[0x0F, 0x34], 0x08, Ok((0x08, 0x10, 0xC000, 0xA000))),
        (3, &[0x0F, 0x34], 0x03, Err(GeneralProtection(0))), // index 0
        (0, &[0x0F, 0x35], 0x08, Ok((0x1B, 0x23, 0x4444, 0x7000))),
        (0, &[0x0F, 0x35], 0x0B, Ok((0x1B, 0x23, 0x4444, 0x7000))),
        (0, &[0x0F, 0x35], 0x00, Err(GeneralProtection(0))),
        (3, &[0x0F, 0x35], 0x08, Err(GeneralProtection(0))), // not at CPL 0
        (1, &[0x0F, 0x35], 0x08, Err(GeneralProtection(0))),
    ];
    for &(cpl, bytes, msr_cs, expected) in cases {
        let (mut cpu, mut bus) = ring_machine(cpl);
        cpu.msr.sysenter_cs = msr_cs;
        cpu.msr.sysenter_esp = 0xA000;
        cpu.msr.sysenter_eip = 0xC000;
        cpu.gpr[gpr::ECX] = 0x7000;
        cpu.gpr[gpr::EDX] = 0x4444;
        cpu.eflags = flags::RESERVED1 | flags::IF | flags::RF | flags::CF;
        let before = cpu.clone();
        let got = run(&mut cpu, &mut bus, bytes);
        match expected {
            Ok((cs, ss, eip, esp)) => {
                assert_eq!(got, Ok(Effect::Continue), "{bytes:02x?} CPL {cpl} MSR {msr_cs:#x}");
                assert_eq!((selectors(&cpu), cpu.eip, cpu.gpr[gpr::ESP]), ((cs, ss), eip, esp), "{bytes:02x?} MSR {msr_cs:#x}");
                let (code_dpl, data_dpl) = (cpu.segment(SegReg::Cs).dpl(), cpu.segment(SegReg::Ss).dpl());
                assert_eq!((code_dpl, data_dpl), (cpu.cpl(), cpu.cpl()));
                assert_eq!(cpu.segment(SegReg::Cs).limit, 0xFFFF_FFFF);
                if bytes[1] == 0x34 {
                    assert_eq!(cpu.eflags, flags::RESERVED1 | flags::CF, "sysenter clears IF and RF");
                } else {
                    assert_eq!(cpu.eflags, before.eflags, "sysexit leaves EFLAGS alone");
                }
                assert_eq!(cpu.stats.privilege_changes, u64::from(cpl != cpu.cpl()));
            }
            Err(e) => {
                assert_eq!(got, guest(e), "{bytes:02x?} CPL {cpl} MSR {msr_cs:#x}");
                assert_eq!(cpu, before);
            }
        }
    }
}

#[test]
fn io_permission_bitmap_above_iopl() {
    // The TSS grows a bitmap at 0x68 covering ports 0..0x400 (128 bytes),
    // all allowed except 0x61 and 0x3F9, then an 0xFF byte.
    let setup = |cpu: &mut Cpu, bus: &mut TestBus| {
        bus.write_u16(TSS_BASE + offset::IO_MAP_BASE, 0x68);
        bus.ram[(TSS_BASE + 0x68 + 0x61 / 8) as usize] |= 1 << (0x61 % 8);
        bus.ram[(TSS_BASE + 0x68 + 0x3F9 / 8) as usize] |= 1 << (0x3F9 % 8);
        bus.ram[(TSS_BASE + 0x68 + 128) as usize] = 0xFF;
        cpu.tr.limit = 0x68 + 128;
    };
    // (CPL, IOPL, bytes, EDX, bitmap present?, allowed?)
    let cases: &[(u8, u32, &[u8], u32, bool, bool)] = &[
        (3, 0, &[0xE4, 0x60], 0, true, true),         // in al, 0x60
        (3, 0, &[0xE4, 0x61], 0, true, false),        // in al, 0x61: its bit is set
        (3, 0, &[0x66, 0xE5, 0x60], 0, true, false),  // in ax, 0x60 touches 0x61
        (3, 0, &[0xE6, 0x80], 0, true, true),         // out 0x80, al
        (3, 0, &[0xEE], 0x3F8, true, true),           // out dx, al
        (3, 0, &[0x66, 0xEF], 0x3F8, true, false),    // out dx, ax touches 0x3F9
        (3, 0, &[0xEC], 0x400, true, false),          // beyond the map
        (3, 0, &[0x6E], 0x3F8, true, true),           // outsb
        (3, 0, &[0x6C], 0x3F9, true, false),          // insb
        (3, 0, &[0xE4, 0x60], 0, false, false),       // no bitmap: CPL > IOPL is #GP
        (2, 1, &[0xE4, 0x61], 0, true, false),        // CPL 2 > IOPL 1: bitmap decides
        (3, 3, &[0xE4, 0x61], 0, true, true),         // CPL <= IOPL: no bitmap check
        (0, 0, &[0xE4, 0x61], 0, true, true),
    ];
    for &(cpl, iopl, bytes, edx, bitmap, allowed) in cases {
        let (mut cpu, mut bus) = ring_machine(cpl);
        if bitmap {
            setup(&mut cpu, &mut bus);
        }
        cpu.eflags |= iopl << 12;
        cpu.gpr[gpr::EDX] = edx;
        cpu.gpr[gpr::ESI] = 0x9000;
        cpu.gpr[gpr::EDI] = 0x9000;
        let before = cpu.clone();
        let got = run(&mut cpu, &mut bus, bytes);
        let what = format!("{bytes:02x?} port {edx:#x} CPL {cpl} IOPL {iopl} bitmap {bitmap}");
        if allowed {
            assert_eq!(got, Ok(Effect::Continue), "{what}");
            assert_eq!(bus.port_reads.len() + bus.port_writes.len(), 1, "{what}");
        } else {
            assert_eq!(got, guest(Exception::GeneralProtection(0)), "{what}");
            assert!(bus.port_reads.is_empty() && bus.port_writes.is_empty(), "{what}: the device was not touched");
            assert_eq!(cpu, before, "{what}");
        }
    }

    // cli and sti follow IOPL only; the bitmap does not matter.
    for (cpl, iopl, ok) in [(3u8, 3u32, true), (3, 2, false), (2, 2, true), (1, 0, false), (0, 0, true)] {
        for bytes in [&[0xFAu8][..], &[0xFB][..]] {
            let (mut cpu, mut bus) = ring_machine(cpl);
            setup(&mut cpu, &mut bus);
            cpu.eflags |= iopl << 12;
            let got = run(&mut cpu, &mut bus, bytes);
            assert_eq!(got.is_ok(), ok, "{bytes:02x?} CPL {cpl} IOPL {iopl}: {got:?}");
        }
    }
}

#[test]
fn popf_at_each_cpl() {
    // (CPL, IOPL, IF before, popped image, EFLAGS after, (above CPL 0, IF ignored, IOPL ignored))
    let base = flags::RESERVED1;
    let cases: &[(u8, u32, bool, u32, u32, (u64, u64, u64))] = &[
        // CPL 0: everything loads, nothing is counted.
        (0, 0, false, base | flags::IF | (3 << 12), base | flags::IF | (3 << 12), (0, 0, 0)),
        // CPL 3, IOPL 0: clearing IF is silently ignored: the classic case.
        (3, 0, true, base | flags::CF, base | flags::IF | flags::CF, (1, 1, 0)),
        (3, 0, false, base | flags::IF, base, (1, 1, 0)),
        // Asking for IOPL 3 from ring 3 is ignored too.
        (3, 0, false, base | (3 << 12), base, (1, 0, 1)),
        // Same IF as before: nothing was ignored.
        (3, 0, true, base | flags::IF | flags::ZF, base | flags::IF | flags::ZF, (1, 0, 0)),
        // CPL 1 <= IOPL 1: IF loads, IOPL does not.
        (1, 1, true, base | (3 << 12), base | (1 << 12), (1, 0, 1)),
        // CPL 2 > IOPL 1: IF kept.
        (2, 1, true, base | (1 << 12), base | (1 << 12) | flags::IF, (1, 1, 0)),
        // CPL 3 with IOPL 3: IF loads.
        (3, 3, true, base | (3 << 12), base | (3 << 12), (1, 0, 0)),
    ];
    for &(cpl, iopl, if_before, image, after, counts) in cases {
        let (mut cpu, mut bus) = ring_machine(cpl);
        cpu.eflags = base | (iopl << 12) | if if_before { flags::IF } else { 0 };
        cpu.gpr[gpr::ESP] = STACK_TOP - 4;
        bus.write_u32(STACK_TOP - 4, image);
        run(&mut cpu, &mut bus, &[0x9D]).unwrap();
        assert_eq!(cpu.eflags, after, "CPL {cpl} IOPL {iopl} image {image:#x}: got {:#x}", cpu.eflags);
        let stats = cpu.stats;
        assert_eq!((stats.popf_above_cpl0, stats.popf_if_ignored, stats.popf_iopl_ignored), counts, "CPL {cpl} IOPL {iopl} image {image:#x}");
    }
}

#[test]
fn privileged_instructions_fault_at_every_cpl_above_0() {
    let cases: &[(&str, &[u8])] = &[
        ("hlt", &[0xF4]),
        ("lgdt [eax]", &[0x0F, 0x01, 0x10]),
        ("lidt [eax]", &[0x0F, 0x01, 0x18]),
        ("lldt ax", &[0x0F, 0x00, 0xD0]),
        ("ltr ax", &[0x0F, 0x00, 0xD8]),
        ("lmsw ax", &[0x0F, 0x01, 0xF0]),
        ("clts", &[0x0F, 0x06]),
        ("mov cr0, eax", &[0x0F, 0x22, 0xC0]),
        ("mov eax, cr3", &[0x0F, 0x20, 0xD8]),
        ("mov cr4, eax", &[0x0F, 0x22, 0xE0]),
        ("mov dr7, eax", &[0x0F, 0x23, 0xF8]),
        ("mov eax, dr6", &[0x0F, 0x21, 0xF0]),
        ("invd", &[0x0F, 0x08]),
        ("wbinvd", &[0x0F, 0x09]),
        ("invlpg [eax]", &[0x0F, 0x01, 0x38]),
        ("rdmsr", &[0x0F, 0x32]),
        ("wrmsr", &[0x0F, 0x30]),
        ("sysexit", &[0x0F, 0x35]),
    ];
    for cpl in 1..=3u8 {
        // IOPL 3 makes no difference to privileged instructions.
        for iopl in [0u32, 3] {
            for &(name, bytes) in cases {
                let (mut cpu, mut bus) = ring_machine(cpl);
                cpu.eflags |= iopl << 12;
                cpu.msr.sysenter_cs = u32::from(SEL_CODE0);
                let before = cpu.clone();
                assert_eq!(run(&mut cpu, &mut bus, bytes), guest(Exception::GeneralProtection(0)), "{name} at CPL {cpl} IOPL {iopl}");
                assert_eq!(cpu, before, "{name}");
            }
        }
    }
}

#[test]
fn segment_loads_at_cpl3() {
    use Exception::*;
    // (selector loaded into DS with mov ds, ax at CPL 3, expected)
    let cases: &[(u16, Result<(), Exception>)] = &[
        (SEL_DATA3, Ok(())),
        (SEL_DATA3 & !3, Ok(())),                             // RPL 0 <= DPL 3
        (SEL_DATA0 | 3, Err(GeneralProtection(SEL_DATA0))),   // DPL 0 < CPL 3
        (SEL_DATA1, Err(GeneralProtection(SEL_DATA1 & !3))),  // DPL 1 < CPL 3
        (SEL_CODE3, Ok(())),                                  // readable ring-3 code
        (SEL_EXEC_ONLY3 | 3, Err(GeneralProtection(SEL_EXEC_ONLY3))),
        (SEL_CONFORMING | 3, Ok(())),                         // conforming: no privilege check
        (SEL_CODE0 | 3, Err(GeneralProtection(SEL_CODE0))),   // non-conforming ring-0 code
        (SEL_DATA3_ABSENT, Err(SegmentNotPresent(SEL_DATA3_ABSENT & !3))),
        (SEL_DATA3_DOWN, Ok(())),
        (SEL_GATE32 | 3, Err(GeneralProtection(SEL_GATE32))), // a gate is not a segment
        (0, Ok(())),
        (3, Ok(())),
    ];
    for &(sel, expected) in cases {
        let (mut cpu, mut bus) = ring_machine(3);
        cpu.gpr[gpr::EAX] = u32::from(sel);
        let got = run(&mut cpu, &mut bus, &[0x8E, 0xD8]).map(|_| ());
        assert_eq!(got, expected.map_err(crate::emulate::EmulateError::Exception), "mov ds, {sel:#x}");
        if expected.is_ok() {
            assert_eq!(cpu.segment(SegReg::Ds).selector.0, sel);
        }
    }
    // SS at CPL 3: only ring-3 writable data with RPL 3.
    for (sel, expected) in [
        (SEL_DATA3, Ok(())),
        (SEL_DATA3 & !3, Err(GeneralProtection(SEL_DATA3 & !3))),
        (SEL_DATA3_DOWN, Ok(())),
        (SEL_DATA0 | 3, Err(GeneralProtection(SEL_DATA0))),
        (SEL_DATA3_ABSENT, Err(StackFault(SEL_DATA3_ABSENT & !3))),
    ] {
        let (mut cpu, mut bus) = ring_machine(3);
        cpu.gpr[gpr::EAX] = u32::from(sel);
        let got = run(&mut cpu, &mut bus, &[0x8E, 0xD0]).map(|_| ());
        assert_eq!(got, expected.map_err(crate::emulate::EmulateError::Exception), "mov ss, {sel:#x}");
    }
    // Through an expand-down DS, offsets at or below the limit fault.
    let (mut cpu, mut bus) = ring_machine(3);
    cpu.gpr[gpr::EAX] = u32::from(SEL_DATA3_DOWN);
    run(&mut cpu, &mut bus, &[0x8E, 0xD8]).unwrap();
    cpu.gpr[gpr::EBX] = 0xFFF;
    // mov fs, [ebx] through DS at offset 0xFFF: below the expand-down range.
    assert_eq!(run(&mut cpu, &mut bus, &[0x8E, 0x23]), guest(GeneralProtection(0)));
    cpu.gpr[gpr::EBX] = 0x9000;
    bus.write_u16(0x9000, SEL_DATA3);
    run(&mut cpu, &mut bus, &[0x8E, 0x23]).unwrap();
    assert_eq!(cpu.segment(SegReg::Fs).selector.0, SEL_DATA3);
}

#[test]
fn descriptor_writes_are_seen_at_the_next_load() {
    let (mut cpu, mut bus) = ring_machine(3);
    cpu.gpr[gpr::EAX] = u32::from(SEL_DATA3);
    run(&mut cpu, &mut bus, &[0x8E, 0xD8]).unwrap();
    assert_eq!(cpu.segment(SegReg::Ds).base, 0);
    // The kernel rewrites the descriptor: the loaded DS keeps its cached
    // copy until the selector is loaded again.
    let entry = GDT + u32::from(SEL_DATA3 & !3);
    bus.write_u64(entry, encode_segment(0x0012_3000, 0xFF, 0x40F2));
    assert_eq!(cpu.segment(SegReg::Ds).base, 0, "the hidden part is a cache");
    run(&mut cpu, &mut bus, &[0x8E, 0xD8]).unwrap();
    assert_eq!((cpu.segment(SegReg::Ds).base, cpu.segment(SegReg::Ds).limit), (0x0012_3000, 0xFF));
    // Now make it ring 0 only: the next load faults.
    bus.write_u64(entry, encode_segment(0, 0xFFFFF, 0xC092));
    assert_eq!(run(&mut cpu, &mut bus, &[0x8E, 0xD8]), guest(Exception::GeneralProtection(SEL_DATA3 & !3)));
    // And not present.
    bus.write_u64(entry, encode_segment(0, 0xFFFFF, 0xC072));
    assert_eq!(run(&mut cpu, &mut bus, &[0x8E, 0xD8]), guest(Exception::SegmentNotPresent(SEL_DATA3 & !3)));
    // A new ring-0 stack in the TSS is seen at the next interrupt.
    bus.write_u32(TSS_BASE + offset::ESP0, 0x9800);
    run(&mut cpu, &mut bus, &[0xCD, 0x80]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], 0x9800 - 20);
}

#[test]
fn io_sizes_cover_every_bit() {
    // Direct check of the bitmap width rule through the TSS helper: a
    // dword access at 0x5E covers 0x5E..=0x61, so the bit for 0x61 denies it.
    let (mut cpu, mut bus) = ring_machine(3);
    bus.write_u16(TSS_BASE + offset::IO_MAP_BASE, 0x68);
    bus.ram[(TSS_BASE + 0x68 + 0x61 / 8) as usize] |= 1 << (0x61 % 8);
    bus.ram[(TSS_BASE + 0x68 + 128) as usize] = 0xFF;
    cpu.tr.limit = 0x68 + 128;
    for (port, size, ok) in [(0x5Eu16, IoSize::Dword, false), (0x5D, IoSize::Dword, true), (0x60, IoSize::Word, false), (0x62, IoSize::Word, true)] {
        assert_eq!(crate::tss::io_permitted(&cpu, &mut bus, port, size), Ok(ok), "port {port:#x} {size:?}");
    }
}

/// The property test for CS loads: far `jmp`, far `call` and far `ret`
/// against a reference written straight from the SDM pseudocode (Vol. 2A
/// CALL and JMP, Vol. 2B RET, protected mode), using raw descriptor bits and
/// nothing from `descriptor.rs` or `segment.rs`.
mod cs_loads {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Kind {
        Jmp,
        Call,
        Ret,
    }

    /// The fields of a raw descriptor the rules look at.
    struct Raw {
        s: bool,
        ty: u8,
        dpl: u8,
        present: bool,
        limit: u32,
    }

    fn decode(raw: u64) -> Raw {
        let raw_limit = ((raw & 0xFFFF) | ((raw >> 32) & 0xF_0000)) as u32;
        let g = (raw >> 55) & 1 == 1;
        Raw {
            s: (raw >> 44) & 1 == 1,
            ty: ((raw >> 40) & 0xF) as u8,
            dpl: ((raw >> 45) & 3) as u8,
            present: (raw >> 47) & 1 == 1,
            limit: if g { (raw_limit << 12) | 0xFFF } else { raw_limit },
        }
    }

    /// What a transfer leaves behind: CS selector, EIP, SS selector, ESP.
    type Outcome = (u16, u32, u16, u32);

    /// The reference. GDT index 1 holds `raw_cs`, index 2 `raw_ss`, index 3
    /// `raw_cs` again; `entries` of them exist. The LDT is unusable. The
    /// current stack is flat with ESP 0x8000; a `ret` finds
    /// [eip, cs, 0x6000, ss] there.
    /// One generated case: the transfer, the CPL it runs at, the CS (and
    /// for `ret` SS) selector it names, the target EIP, how many GDT
    /// entries exist, and the two random descriptors.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        kind: Kind,
        cpl: u8,
        cs: u16,
        ss: u16,
        eip: u32,
        entries: usize,
        raw_cs: u64,
        raw_ss: u64,
    }

    fn reference(case: &Case) -> Result<Outcome, Exception> {
        use Exception::*;
        let Case { kind, cpl, cs, ss, eip, entries, raw_cs, raw_ss } = *case;
        let table = |sel: u16| -> Option<Raw> {
            let index = usize::from(sel >> 3);
            (sel & 4 == 0 && index >= 1 && index <= entries).then(|| decode(if index == 2 { raw_ss } else { raw_cs }))
        };
        let null = |sel: u16| sel & 0xFFFC == 0;
        let rpl = (cs & 3) as u8;
        let err = cs & 0xFFFC;
        if null(cs) {
            return Err(GeneralProtection(0));
        }
        let d = table(cs).ok_or(GeneralProtection(err))?;
        let is_code = d.s && d.ty & 8 != 0;
        let conforming = is_code && d.ty & 4 != 0;
        if !is_code {
            return Err(GeneralProtection(err));
        }
        let cpl_bits = u16::from(cpl);
        match kind {
            Kind::Jmp | Kind::Call => {
                let allowed = if conforming { d.dpl <= cpl } else { rpl <= cpl && d.dpl == cpl };
                if !allowed {
                    return Err(GeneralProtection(err));
                }
                if !d.present {
                    return Err(SegmentNotPresent(err));
                }
                if eip > d.limit {
                    return Err(GeneralProtection(0));
                }
                let esp = if kind == Kind::Call { 0x8000 - 8 } else { 0x8000 };
                Ok((err | cpl_bits, eip, 0x20 | cpl_bits, esp))
            }
            Kind::Ret => {
                if rpl < cpl || (conforming && d.dpl > rpl) || (!conforming && d.dpl != rpl) {
                    return Err(GeneralProtection(err));
                }
                if !d.present {
                    return Err(SegmentNotPresent(err));
                }
                if rpl == cpl {
                    if eip > d.limit {
                        return Err(GeneralProtection(0));
                    }
                    return Ok((cs, eip, 0x20 | cpl_bits, 0x8000 + 8));
                }
                if null(ss) {
                    return Err(GeneralProtection(0));
                }
                let ss_err = ss & 0xFFFC;
                let sd = table(ss).ok_or(GeneralProtection(ss_err))?;
                let writable_data = sd.s && sd.ty & 8 == 0 && sd.ty & 2 != 0;
                if (ss & 3) as u8 != rpl || !writable_data || sd.dpl != rpl {
                    return Err(GeneralProtection(ss_err));
                }
                if !sd.present {
                    return Err(StackFault(ss_err));
                }
                if eip > d.limit {
                    return Err(GeneralProtection(0));
                }
                Ok((cs, eip, ss, 0x6000))
            }
        }
    }

    /// Selectors near the table, so that in- and out-of-limit indexes,
    /// both tables and every RPL are common.
    fn selector() -> impl Strategy<Value = u16> {
        (0u16..5).prop_flat_map(|i| (0u16..8).prop_map(move |low| (i << 3) | low))
    }

    fn descriptor() -> impl Strategy<Value = u64> {
        (any::<u8>(), any::<u8>(), 0u32..0x20).prop_map(|(access, flags_nibble, limit)| {
            encode_segment(0, limit, u16::from(access) | (u16::from(flags_nibble & 0xF0) << 8))
        })
    }

    proptest! {
        #[test]
        fn cs_loads_match_the_sdm(
            kind in prop::sample::select(vec![Kind::Jmp, Kind::Call, Kind::Ret]),
            cpl in 0u8..4,
            cs in selector(),
            ss in selector(),
            eip in prop_oneof![0u32..0x30000, any::<u32>()],
            entries in 1usize..4,
            raw_cs in descriptor(),
            raw_ss in descriptor(),
        ) {
            // Task switches (TSSs, task gates) and call gates have their own
            // tests; keep the reference to code segments for jmp and call.
            let names_system_target = cs & 4 == 0 && (1..=entries).contains(&usize::from(cs >> 3)) && {
                let raw = if cs >> 3 == 2 { raw_ss } else { raw_cs };
                (raw >> 44) & 1 == 0 && matches!((raw >> 40) & 0xF, 1 | 3 | 4 | 5 | 9 | 0xB | 0xC)
            };
            prop_assume!(kind == Kind::Ret || !names_system_target);

            let mut bus = TestBus::new(0x10000);
            let mut cpu = Cpu::new();
            cpu.gdtr.base = GDT;
            cpu.gdtr.limit = (8 * (entries + 1) - 1) as u16;
            for (i, raw) in [raw_cs, raw_ss, raw_cs].iter().enumerate() {
                bus.write_u64(GDT + 8 * (i as u32 + 1), *raw);
            }
            let cpl_bits = u16::from(cpl);
            let dpl_bits = cpl_bits << 5;
            cpu.seg = [Segment::flat(0x20 | cpl_bits, 0xC093 | dpl_bits); 6];
            cpu.seg[SegReg::Cs as usize] = Segment::flat(0x18 | cpl_bits, 0xC09B | dpl_bits);
            cpu.eip = CODE_EIP;
            cpu.gpr[gpr::ESP] = 0x8000;
            let bytes = match kind {
                Kind::Ret => {
                    for (i, v) in [eip, u32::from(cs), 0x6000, u32::from(ss)].iter().enumerate() {
                        bus.write_u32(0x8000 + 4 * i as u32, *v);
                    }
                    vec![0xCB]
                }
                Kind::Jmp | Kind::Call => {
                    let mut v = vec![if kind == Kind::Jmp { 0xEA } else { 0x9A }];
                    v.extend_from_slice(&eip.to_le_bytes());
                    v.extend_from_slice(&cs.to_le_bytes());
                    v
                }
            };
            let before = cpu.clone();
            let got = run(&mut cpu, &mut bus, &bytes);
            let expected = reference(&Case { kind, cpl, cs, ss, eip, entries, raw_cs, raw_ss });
            match expected {
                Ok((cs_after, eip_after, ss_after, esp_after)) => {
                    prop_assert_eq!(got, Ok(Effect::Continue));
                    prop_assert_eq!(
                        (selectors(&cpu), cpu.eip, cpu.gpr[gpr::ESP]),
                        ((cs_after, ss_after), eip_after, esp_after)
                    );
                    prop_assert_eq!(cpu.cpl(), (cs_after & 3) as u8);
                    if kind == Kind::Call {
                        prop_assert_eq!(dwords(&mut bus, 0x8000 - 8, 2), vec![CODE_EIP + 7, u32::from(0x18 | cpl_bits)]);
                    }
                }
                Err(e) => {
                    prop_assert_eq!(got, guest(e));
                    prop_assert_eq!(cpu, before);
                }
            }
        }
    }
}
