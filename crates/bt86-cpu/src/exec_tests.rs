//! Table-driven tests for the callout executor: each case is the bytes of
//! one instruction, the CPL it runs at, and the outcome the SDM requires.
// Test tables are tuples by design: one row per case, read across.
#![allow(clippy::type_complexity)]

use super::*;
use crate::descriptor::{encode_gate, encode_segment};
use crate::emulate::EmulateError;
use crate::state::Segment;
use crate::test_bus::TestBus;
use iced_x86::{Decoder, DecoderOptions};

pub(crate) const GDT: u32 = 0x1000;
pub(crate) const IDT: u32 = 0x2000;
pub(crate) const CODE_EIP: u32 = 0x4000;
pub(crate) const STACK_TOP: u32 = 0x8000;
pub(crate) const HOST_TSC: u64 = 1_000_000;

/// GDT layout used by every test.
pub(crate) const SEL_CODE0: u16 = 0x08;
pub(crate) const SEL_DATA0: u16 = 0x10;
pub(crate) const SEL_CODE3: u16 = 0x1B;
pub(crate) const SEL_DATA3: u16 = 0x23;
pub(crate) const SEL_CODE16: u16 = 0x28;
pub(crate) const SEL_SMALL_DATA: u16 = 0x30;
pub(crate) const SEL_LDT: u16 = 0x38;
pub(crate) const SEL_TSS: u16 = 0x40;
pub(crate) const SEL_CONFORMING: u16 = 0x48;
pub(crate) const SEL_INT_GATE: u16 = 0x50;
pub(crate) const SEL_CALL_GATE: u16 = 0x58;
pub(crate) const SEL_EXEC_ONLY3: u16 = 0x60;

pub(crate) fn gdt_entries() -> Vec<u64> {
    vec![
        0,
        encode_segment(0, 0xFFFFF, 0xC09A),         // 0x08 ring-0 code
        encode_segment(0, 0xFFFFF, 0xC092),         // 0x10 ring-0 data
        encode_segment(0, 0xFFFFF, 0xC0FA),         // 0x18 ring-3 code
        encode_segment(0, 0xFFFFF, 0xC0F2),         // 0x20 ring-3 data
        encode_segment(0, 0xFFFF, 0x009A),          // 0x28 16-bit ring-0 code
        encode_segment(0x3000, 0xFFF, 0x4092),      // 0x30 small data, base 0x3000
        encode_segment(0x5000, 0x17, 0x0082),       // 0x38 LDT
        encode_segment(0x6000, 0x67, 0x0089),       // 0x40 available 32-bit TSS
        encode_segment(0, 0xFFFFF, 0xC09E),         // 0x48 conforming readable code, DPL 0
        encode_gate(0xE, 0x08, 0x1234, 3, true),    // 0x50 an interrupt gate (invalid in the GDT for lar)
        encode_gate(0xC, 0x08, 0x1234, 3, true),    // 0x58 a call gate, DPL 3
        encode_segment(0, 0xFFFFF, 0xC0F8),         // 0x60 execute-only ring-3 code
    ]
}

/// A CPU at `cpl` in flat protected mode with the GDT above, an IDT at
/// 0x2000 whose vectors 3, 4, 13 and 0x80 have DPL 3 interrupt gates to
/// ring-0 handlers, EIP 0x4000 and ESP 0x8000.
pub(crate) fn machine(cpl: u8) -> (Cpu, TestBus) {
    let mut bus = TestBus::new(0x10000);
    let mut cpu = Cpu::new();
    let gdt = gdt_entries();
    bus.install_gdt(&mut cpu, GDT, &gdt);
    cpu.idtr = crate::state::DescriptorTable { base: IDT, limit: 0x7FF };
    for (vector, handler) in [(3u8, 0x7003u32), (4, 0x7004), (13, 0x700D), (0x80, 0x7080)] {
        bus.write_u64(IDT + 8 * u32::from(vector), encode_gate(0xE, SEL_CODE0, handler, 3, true));
    }
    if cpl == 0 {
        cpu.seg = [Segment::flat(SEL_DATA0, 0xC093); 6];
        cpu.seg[SegReg::Cs as usize] = Segment::flat(SEL_CODE0, 0xC09B);
    } else {
        cpu.seg = [Segment::flat(SEL_DATA3, 0xC0F3); 6];
        cpu.seg[SegReg::Cs as usize] = Segment::flat(SEL_CODE3, 0xC0FB);
    }
    cpu.eip = CODE_EIP;
    cpu.gpr[gpr::ESP] = STACK_TOP;
    cpu.eflags = flags::RESERVED1;
    (cpu, bus)
}

pub(crate) fn decode(bytes: &[u8], eip: u32) -> Instruction {
    let mut decoder = Decoder::with_ip(32, bytes, u64::from(eip), DecoderOptions::NONE);
    let insn = decoder.decode();
    assert!(!insn.is_invalid(), "bytes {bytes:02x?} do not decode");
    assert_eq!(insn.len(), bytes.len(), "bytes {bytes:02x?} are more than one instruction");
    insn
}

pub(crate) fn run(cpu: &mut Cpu, bus: &mut TestBus, bytes: &[u8]) -> Result<Effect, ExecError> {
    let insn = decode(bytes, cpu.eip);
    execute(cpu, bus, &insn, HOST_TSC)
}

pub(crate) fn guest(e: Exception) -> Result<Effect, ExecError> {
    Err(EmulateError::Exception(e))
}

#[test]
fn privileged_instructions_fault_above_cpl0_and_run_at_cpl0() {
    // (name, bytes). At CPL 3 with IOPL 0 every one raises #GP(0) and
    // changes nothing; at CPL 0 none of them faults.
    let cases: &[(&str, &[u8])] = &[
        ("cli", &[0xFA]),
        ("sti", &[0xFB]),
        ("hlt", &[0xF4]),
        ("lgdt [eax]", &[0x0F, 0x01, 0x10]),
        ("lidt [eax]", &[0x0F, 0x01, 0x18]),
        ("lldt ax", &[0x0F, 0x00, 0xD0]),
        ("ltr ax", &[0x0F, 0x00, 0xD8]),
        ("lmsw ax", &[0x0F, 0x01, 0xF0]),
        ("clts", &[0x0F, 0x06]),
        ("mov cr0, eax", &[0x0F, 0x22, 0xC0]),
        ("mov eax, cr0", &[0x0F, 0x20, 0xC0]),
        ("mov eax, cr3", &[0x0F, 0x20, 0xD8]),
        ("mov dr7, eax", &[0x0F, 0x23, 0xF8]),
        ("mov eax, dr6", &[0x0F, 0x21, 0xF0]),
        ("invd", &[0x0F, 0x08]),
        ("wbinvd", &[0x0F, 0x09]),
        ("invlpg [eax]", &[0x0F, 0x01, 0x38]),
        ("rdmsr", &[0x0F, 0x32]),
        ("wrmsr", &[0x0F, 0x30]),
        ("in al, 0x60", &[0xE4, 0x60]),
        ("out 0x80, al", &[0xE6, 0x80]),
        ("in eax, dx", &[0xED]),
        ("out dx, ax", &[0x66, 0xEF]),
        ("insb", &[0x6C]),
        ("rep outsd", &[0xF3, 0x6F]),
        ("sysexit", &[0x0F, 0x35]),
    ];
    for &(name, bytes) in cases {
        let (mut cpu, mut bus) = machine(3);
        let before = cpu.clone();
        assert_eq!(run(&mut cpu, &mut bus, bytes), guest(Exception::GeneralProtection(0)), "{name} at CPL 3");
        assert_eq!(cpu, before, "{name}: a fault changes nothing");

        let (mut cpu, mut bus) = machine(0);
        // Operands that make every instruction legal at CPL 0: EAX points
        // at a GDTR image / holds CR0 / a valid LDT selector, ECX a known
        // MSR, SYSENTER_CS set for sysexit.
        cpu.gpr[gpr::EAX] = match name {
            "lldt ax" => u32::from(SEL_LDT),
            "ltr ax" => u32::from(SEL_TSS),
            "mov cr0, eax" | "lmsw ax" => cpu.cr0,
            _ => 0x9000,
        };
        bus.write_u16(0x9000, 0x7FF);
        bus.write_u32(0x9002, IDT);
        cpu.gpr[gpr::ECX] = msr::IA32_SYSENTER_CS;
        cpu.gpr[gpr::EDX] = 0;
        cpu.gpr[gpr::EDI] = 0x9100;
        cpu.gpr[gpr::ESI] = 0x9100;
        cpu.msr.sysenter_cs = 0x08;
        let result = run(&mut cpu, &mut bus, bytes);
        assert!(result.is_ok(), "{name} at CPL 0: {result:?}");
    }
}

#[test]
fn iopl_sensitive_instructions_follow_iopl() {
    // (bytes, CPL, IOPL, faults?)
    let cases: &[(&[u8], u8, u32, bool)] = &[
        (&[0xFA], 3, 3, false),
        (&[0xFA], 3, 2, true),
        (&[0xFB], 3, 3, false),
        (&[0xE6, 0x80], 3, 3, false),
        (&[0xE6, 0x80], 3, 0, true),
        (&[0xEC], 0, 0, false),
    ];
    for &(bytes, cpl, iopl, faults) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        cpu.eflags |= iopl << 12;
        let result = run(&mut cpu, &mut bus, bytes);
        assert_eq!(result.is_err(), faults, "{bytes:02x?} at CPL {cpl} IOPL {iopl}: {result:?}");
    }
}

#[test]
fn cli_sti_and_hlt() {
    let (mut cpu, mut bus) = machine(0);
    assert_eq!(run(&mut cpu, &mut bus, &[0xFB]), Ok(Effect::InterruptsEnabled));
    assert!(cpu.interrupts_enabled());
    assert_eq!(cpu.eip, CODE_EIP + 1);
    assert_eq!(run(&mut cpu, &mut bus, &[0xFB]), Ok(Effect::Continue), "IF already set");
    run(&mut cpu, &mut bus, &[0xFA]).unwrap();
    assert!(!cpu.interrupts_enabled());
    assert_eq!(run(&mut cpu, &mut bus, &[0xF4]), Ok(Effect::Halt));
    assert!(cpu.halted);
    assert_eq!(cpu.eip, CODE_EIP + 4);
}

#[test]
fn popf_rules() {
    let all = 0x003F_7FD5u32; // every defined flag, VM/VIF/VIP included
    // (CPL, IOPL, initial extra flags, 16-bit?, popped value, expected EFLAGS)
    let cases: &[(u8, u32, u32, bool, u32, u32)] = &[
        // CPL 0: IF and IOPL load; VM, VIF, VIP and RF do not.
        (0, 0, 0, false, all, 0x0024_7FD7 & !flags::RF),
        // CPL 3, IOPL 0: IF and IOPL silently keep their old values.
        (3, 0, 0, false, all, (0x0024_7FD7 & !flags::IF & !flags::IOPL) & !flags::RF),
        (3, 0, flags::IF, false, 0, flags::RESERVED1 | flags::IF),
        // CPL 3, IOPL 3: IF loads, IOPL still does not.
        (3, 3, 0, false, flags::IF | flags::CF, flags::RESERVED1 | flags::IF | flags::CF | flags::IOPL),
        // 16-bit popf leaves the upper half alone.
        (0, 0, flags::AC, true, 0xFFFF, (0x7FD7) | flags::AC),
        // Reserved bits 3, 5, 15 never stick; bit 1 always reads 1.
        (0, 0, 0, false, (1 << 3) | (1 << 5) | (1 << 15), flags::RESERVED1),
    ];
    for &(cpl, iopl, extra, is_16, value, expected) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        cpu.eflags |= (iopl << 12) | extra;
        let bytes: &[u8] = if is_16 { &[0x66, 0x9D] } else { &[0x9D] };
        if is_16 {
            bus.write_u16(STACK_TOP - 2, value as u16);
            cpu.gpr[gpr::ESP] = STACK_TOP - 2;
        } else {
            bus.write_u32(STACK_TOP - 4, value);
            cpu.gpr[gpr::ESP] = STACK_TOP - 4;
        }
        run(&mut cpu, &mut bus, bytes).unwrap();
        assert_eq!(cpu.eflags, expected, "popf cpl {cpl} iopl {iopl} value {value:#x}: got {:#x}", cpu.eflags);
        assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP);
    }
}

#[test]
fn pushf_clears_vm_and_rf_in_the_image() {
    let (mut cpu, mut bus) = machine(0);
    cpu.eflags |= flags::RF | flags::IF | flags::CF;
    run(&mut cpu, &mut bus, &[0x9C]).unwrap();
    assert_eq!(bus.read_u32(STACK_TOP - 4), flags::RESERVED1 | flags::IF | flags::CF);
    run(&mut cpu, &mut bus, &[0x66, 0x9C]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP - 6);
    assert_eq!(bus.read_u16(STACK_TOP - 6), (flags::RESERVED1 | flags::IF | flags::CF) as u16);
}

#[test]
fn control_registers() {
    use Exception::*;
    let pe_et = cr::CR0_PE | cr::CR0_ET;
    // (bytes, EAX, expected result, CR0 after, CR4 after)
    let cases: &[(&[u8], u32, Result<Effect, ExecError>, u32, u32)] = &[
        // Setting TS changes how FPU code must be translated.
        (&[0x0F, 0x22, 0xC0], pe_et | cr::CR0_TS, Ok(Effect::TranslationModeChanged), pe_et | cr::CR0_TS, 0),
        // Reserved CR0 bits are ignored; ET stays set.
        (&[0x0F, 0x22, 0xC0], cr::CR0_PE | 0x0000_FF00, Ok(Effect::Continue), pe_et, 0),
        (&[0x0F, 0x22, 0xC0], cr::CR0_PE | cr::CR0_NE, Ok(Effect::Continue), pe_et | cr::CR0_NE, 0),
        // Invalid combinations.
        (&[0x0F, 0x22, 0xC0], cr::CR0_NW, guest(GeneralProtection(0)), pe_et, 0),
        (&[0x0F, 0x22, 0xC0], cr::CR0_PE | cr::CR0_NW, guest(GeneralProtection(0)), pe_et, 0),
        (&[0x0F, 0x22, 0xC0], cr::CR0_PG, guest(GeneralProtection(0)), pe_et, 0),
        // CR4: only the model's bits.
        (&[0x0F, 0x22, 0xE0], cr::CR4_PSE | cr::CR4_OSFXSR, Ok(Effect::TranslationModeChanged), pe_et, cr::CR4_PSE | cr::CR4_OSFXSR),
        (&[0x0F, 0x22, 0xE0], cr::CR4_PAE, guest(GeneralProtection(0)), pe_et, 0),
        (&[0x0F, 0x22, 0xE0], cr::CR4_VME, guest(GeneralProtection(0)), pe_et, 0),
        (&[0x0F, 0x22, 0xE0], cr::CR4_PGE, guest(GeneralProtection(0)), pe_et, 0),
    ];
    for &(bytes, eax, ref expected, cr0, cr4) in cases {
        let (mut cpu, mut bus) = machine(0);
        cpu.gpr[gpr::EAX] = eax;
        let got = run(&mut cpu, &mut bus, bytes);
        assert_eq!(&got, expected, "{bytes:02x?} eax {eax:#x}");
        assert_eq!((cpu.cr0, cpu.cr4), (cr0, cr4), "{bytes:02x?} eax {eax:#x}");
    }
    // CR2 and CR3 round-trip (CR3 keeps only the PD base, PWT and PCD).
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EAX] = 0x1234_5FFF;
    run(&mut cpu, &mut bus, &[0x0F, 0x22, 0xD8]).unwrap();
    run(&mut cpu, &mut bus, &[0x0F, 0x20, 0xD9]).unwrap(); // mov ecx, cr3
    assert_eq!(cpu.gpr[gpr::ECX], 0x1234_5018);
    run(&mut cpu, &mut bus, &[0x0F, 0x22, 0xD0]).unwrap(); // mov cr2, eax
    run(&mut cpu, &mut bus, &[0x0F, 0x20, 0xD2]).unwrap(); // mov edx, cr2
    assert_eq!(cpu.gpr[gpr::EDX], 0x1234_5FFF);
    // clts and lmsw.
    cpu.cr0 |= cr::CR0_TS;
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x06]), Ok(Effect::TranslationModeChanged));
    assert_eq!(cpu.cr0 & cr::CR0_TS, 0);
    cpu.gpr[gpr::EAX] = 0xFFF0 | cr::CR0_MP; // lmsw cannot clear PE
    run(&mut cpu, &mut bus, &[0x0F, 0x01, 0xF0]).unwrap();
    assert_eq!(cpu.cr0 & 0xF, cr::CR0_PE | cr::CR0_MP);
    // smsw into a 32-bit register gives all of CR0; into memory 16 bits.
    cpu.cr0 |= cr::CR0_WP;
    run(&mut cpu, &mut bus, &[0x0F, 0x01, 0xE1]).unwrap(); // smsw ecx
    assert_eq!(cpu.gpr[gpr::ECX], cpu.cr0);
    cpu.gpr[gpr::EAX] = 0x9000;
    bus.write_u32(0x9000, 0xAAAA_AAAA);
    run(&mut cpu, &mut bus, &[0x0F, 0x01, 0x20]).unwrap(); // smsw [eax]
    assert_eq!(bus.read_u32(0x9000), 0xAAAA_0000 | (cpu.cr0 & 0xFFFF));
}

#[test]
fn debug_registers_alias_unless_cr4_de() {
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EAX] = 0x0000_0001;
    run(&mut cpu, &mut bus, &[0x0F, 0x23, 0xE8]).unwrap(); // mov dr5, eax -> DR7
    assert_eq!(cpu.dr[7], 0x0000_0401);
    cpu.gpr[gpr::EAX] = 0xDEAD_0000;
    run(&mut cpu, &mut bus, &[0x0F, 0x23, 0xC0]).unwrap(); // mov dr0, eax
    run(&mut cpu, &mut bus, &[0x0F, 0x21, 0xC1]).unwrap(); // mov ecx, dr0
    assert_eq!(cpu.gpr[gpr::ECX], 0xDEAD_0000);
    run(&mut cpu, &mut bus, &[0x0F, 0x21, 0xE1]).unwrap(); // mov ecx, dr4 -> DR6
    assert_eq!(cpu.gpr[gpr::ECX], 0xFFFF_0FF0);
    cpu.cr4 |= cr::CR4_DE;
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x21, 0xE1]), guest(Exception::InvalidOpcode));
}

#[test]
fn msrs_and_tsc() {
    use Exception::*;
    let (mut cpu, mut bus) = machine(0);
    // wrmsr SYSENTER_EIP, then rdmsr it back.
    cpu.gpr[gpr::ECX] = msr::IA32_SYSENTER_EIP;
    cpu.gpr[gpr::EAX] = 0xC000_1000;
    cpu.gpr[gpr::EDX] = 0;
    run(&mut cpu, &mut bus, &[0x0F, 0x30]).unwrap();
    cpu.gpr[gpr::EAX] = 0;
    run(&mut cpu, &mut bus, &[0x0F, 0x32]).unwrap();
    assert_eq!((cpu.gpr[gpr::EAX], cpu.gpr[gpr::EDX]), (0xC000_1000, 0));
    assert_eq!(cpu.msr.sysenter_eip, 0xC000_1000);
    // Writing the TSC makes rdtsc continue from the written value.
    cpu.gpr[gpr::ECX] = msr::IA32_TIME_STAMP_COUNTER;
    cpu.gpr[gpr::EAX] = 0x10;
    cpu.gpr[gpr::EDX] = 0x1;
    run(&mut cpu, &mut bus, &[0x0F, 0x30]).unwrap();
    run(&mut cpu, &mut bus, &[0x0F, 0x31]).unwrap();
    assert_eq!((cpu.gpr[gpr::EDX], cpu.gpr[gpr::EAX]), (1, 0x10));
    // Unknown MSRs fault both ways.
    cpu.gpr[gpr::ECX] = 0x1B; // IA32_APIC_BASE: no APIC in our model
    let before = cpu.clone();
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x32]), guest(GeneralProtection(0)));
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x30]), guest(GeneralProtection(0)));
    assert_eq!(cpu, before);
    // rdpmc always faults; rdtsc only with CR4.TSD above CPL 0.
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x33]), guest(GeneralProtection(0)));
    let (mut cpu, mut bus) = machine(3);
    assert!(run(&mut cpu, &mut bus, &[0x0F, 0x31]).is_ok());
    assert_eq!(cpu.gpr[gpr::EAX], HOST_TSC as u32);
    cpu.cr4 |= cr::CR4_TSD;
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x31]), guest(GeneralProtection(0)));
}

#[test]
fn cpuid_and_syscall() {
    let (mut cpu, mut bus) = machine(3);
    cpu.gpr[gpr::EAX] = 1;
    run(&mut cpu, &mut bus, &[0x0F, 0xA2]).unwrap();
    assert_eq!(cpu.gpr[gpr::EDX], crate::cpuid::edx::ALL);
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x05]), guest(Exception::InvalidOpcode));
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x07]), guest(Exception::InvalidOpcode));
}

#[test]
fn descriptor_table_registers() {
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EAX] = 0x9000;
    bus.write_u16(0x9000, 0x00FF);
    bus.write_u32(0x9002, 0xAB12_3456);
    run(&mut cpu, &mut bus, &[0x0F, 0x01, 0x18]).unwrap(); // lidt [eax]
    assert_eq!((cpu.idtr.base, cpu.idtr.limit), (0xAB12_3456, 0xFF));
    run(&mut cpu, &mut bus, &[0x66, 0x0F, 0x01, 0x18]).unwrap(); // o16 lidt: 24-bit base
    assert_eq!(cpu.idtr.base, 0x0012_3456);
    cpu.gpr[gpr::EBX] = 0x9100;
    run(&mut cpu, &mut bus, &[0x0F, 0x01, 0x03]).unwrap(); // sgdt [ebx]
    assert_eq!((bus.read_u16(0x9100), bus.read_u32(0x9102)), (cpu.gdtr.limit, GDT));
    // sldt/str into a 32-bit register zero-extend.
    cpu.gpr[gpr::EAX] = u32::from(SEL_LDT);
    run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xD0]).unwrap(); // lldt ax
    cpu.gpr[gpr::ECX] = 0xFFFF_FFFF;
    run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xC1]).unwrap(); // sldt ecx
    assert_eq!(cpu.gpr[gpr::ECX], u32::from(SEL_LDT));
    cpu.gpr[gpr::EAX] = u32::from(SEL_TSS);
    run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xD8]).unwrap(); // ltr ax
    run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xCA]).unwrap(); // str edx
    assert_eq!(cpu.gpr[gpr::EDX], u32::from(SEL_TSS));
    // A second ltr of the same (now busy) TSS faults.
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xD8]), guest(Exception::GeneralProtection(SEL_TSS)));
}

#[test]
fn port_io() {
    let (mut cpu, mut bus) = machine(0);
    bus.port_values.insert(0x3F8, 0x41);
    bus.port_values.insert(0x1F0, 0xBEEF);
    cpu.gpr[gpr::EAX] = 0x1234_5678;
    cpu.gpr[gpr::EDX] = 0x3F8;
    run(&mut cpu, &mut bus, &[0xEC]).unwrap(); // in al, dx
    assert_eq!(cpu.gpr[gpr::EAX], 0x1234_5641, "in al keeps the upper bytes");
    cpu.gpr[gpr::EDX] = 0x1F0;
    run(&mut cpu, &mut bus, &[0x66, 0xED]).unwrap(); // in ax, dx
    assert_eq!(cpu.gpr[gpr::EAX], 0x1234_BEEF);
    run(&mut cpu, &mut bus, &[0xE5, 0x40]).unwrap(); // in eax, 0x40 (unclaimed: all ones)
    assert_eq!(cpu.gpr[gpr::EAX], 0xFFFF_FFFF);
    cpu.gpr[gpr::EAX] = 0xCAFE_F00D;
    run(&mut cpu, &mut bus, &[0xE6, 0xF4]).unwrap(); // out 0xf4, al
    run(&mut cpu, &mut bus, &[0xEF]).unwrap(); // out dx, eax
    assert_eq!(
        bus.port_writes,
        vec![(0xF4, IoSize::Byte, 0x0D), (0x1F0, IoSize::Dword, 0xCAFE_F00D)]
    );
}

#[test]
fn string_io() {
    // rep outsb through an FS override, forwards.
    let (mut cpu, mut bus) = machine(0);
    cpu.seg[SegReg::Fs as usize].base = 0x100;
    bus.ram[0x9100..0x9103].copy_from_slice(b"abc");
    cpu.gpr[gpr::ESI] = 0x9000;
    cpu.gpr[gpr::ECX] = 3;
    cpu.gpr[gpr::EDX] = 0x3F8;
    run(&mut cpu, &mut bus, &[0xF3, 0x64, 0x6E]).unwrap();
    let out: Vec<u32> = bus.port_writes.iter().map(|w| w.2).collect();
    assert_eq!(out, vec![u32::from(b'a'), u32::from(b'b'), u32::from(b'c')]);
    assert_eq!((cpu.gpr[gpr::ESI], cpu.gpr[gpr::ECX], cpu.eip), (0x9003, 0, CODE_EIP + 3));

    // rep insw backwards (DF = 1) into ES:EDI.
    let (mut cpu, mut bus) = machine(0);
    bus.port_values.insert(0x1F0, 0x1122);
    cpu.eflags |= flags::DF;
    cpu.gpr[gpr::EDI] = 0x9010;
    cpu.gpr[gpr::ECX] = 2;
    cpu.gpr[gpr::EDX] = 0x1F0;
    run(&mut cpu, &mut bus, &[0xF3, 0x66, 0x6D]).unwrap();
    assert_eq!((bus.read_u16(0x9010), bus.read_u16(0x900E)), (0x1122, 0x1122));
    assert_eq!((cpu.gpr[gpr::EDI], cpu.gpr[gpr::ECX]), (0x900C, 0));

    // A fault in the second iteration keeps the first one's effects and
    // leaves EIP at the instruction.
    let (mut cpu, mut bus) = machine(0);
    cpu.seg[SegReg::Es as usize] = Segment { selector: Selector(SEL_SMALL_DATA), base: 0x3000, limit: 0xFFF, access: 0x4093 };
    cpu.gpr[gpr::EDI] = 0xFFF;
    cpu.gpr[gpr::ECX] = 2;
    cpu.gpr[gpr::EDX] = 0x60;
    assert_eq!(run(&mut cpu, &mut bus, &[0xF3, 0x6C]), guest(Exception::GeneralProtection(0)));
    assert_eq!((cpu.gpr[gpr::EDI], cpu.gpr[gpr::ECX], cpu.eip), (0x1000, 1, CODE_EIP));
    assert_eq!(bus.port_reads.len(), 1, "the faulting iteration did not read the port");

    // rep with ECX = 0 does nothing.
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ECX] = 0;
    run(&mut cpu, &mut bus, &[0xF3, 0x6E]).unwrap();
    assert!(bus.port_writes.is_empty());
    assert_eq!(cpu.eip, CODE_EIP + 2);
}

#[test]
fn software_interrupts() {
    use Exception::*;
    // (CPL, bytes, OF set?, expected result, expected EIP, pushed return EIP)
    let cases: &[(u8, &[u8], bool, Result<Effect, ExecError>, u32, Option<u32>)] = &[
        (0, &[0xCD, 0x80], false, Ok(Effect::Continue), 0x7080, Some(CODE_EIP + 2)),
        // Ring 3 to a ring-0 handler needs the TSS, and none is loaded:
        // #TS(TR selector = 0).
        (3, &[0xCD, 0x80], false, guest(InvalidTss(0)), CODE_EIP, None),
        (0, &[0xCC], false, Ok(Effect::Continue), 0x7003, Some(CODE_EIP + 1)),
        (0, &[0xCE], false, Ok(Effect::Continue), CODE_EIP + 1, None), // into with OF clear
        (0, &[0xCE], true, Ok(Effect::Continue), 0x7004, Some(CODE_EIP + 1)),
        // A DPL 0 gate from CPL 3: #GP(vector * 8 + 2).
        (3, &[0xCD, 0x21], false, guest(GeneralProtection(0x21 * 8 + 2)), CODE_EIP, None),
        // Vector 0x21 has no gate at all: #GP with EXT clear for int n.
        (0, &[0xCD, 0x21], false, guest(GeneralProtection(0x21 * 8 + 2)), CODE_EIP, None),
        // int1 has no DPL check and sets EXT.
        (0, &[0xF1], false, guest(GeneralProtection(8 + 3)), CODE_EIP, None),
    ];
    for &(cpl, bytes, of, ref expected, eip, pushed) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        if cpl == 3 {
            // Vector 0x21: a DPL 0 gate.
            bus.write_u64(IDT + 8 * 0x21, encode_gate(0xE, SEL_CODE0, 0x7021, 0, true));
        }
        if of {
            cpu.eflags |= flags::OF;
        }
        let got = run(&mut cpu, &mut bus, bytes);
        assert_eq!(&got, expected, "{bytes:02x?} at CPL {cpl}");
        assert_eq!(cpu.eip, eip, "{bytes:02x?} at CPL {cpl}");
        if let Some(ret) = pushed {
            assert_eq!(bus.read_u32(STACK_TOP - 12), ret);
        }
    }
}

#[test]
fn iret_same_privilege() {
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ESP] = STACK_TOP - 12;
    bus.write_u32(STACK_TOP - 12, 0x5555);
    bus.write_u32(STACK_TOP - 8, u32::from(SEL_CODE0));
    bus.write_u32(STACK_TOP - 4, flags::IF | flags::CF | flags::IOPL | flags::RESERVED1);
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), Ok(Effect::InterruptsEnabled));
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (0x5555, STACK_TOP));
    assert_eq!(cpu.eflags, flags::IF | flags::CF | flags::IOPL | flags::RESERVED1);

    // At CPL 3 with IOPL 0, iret cannot change IF or IOPL.
    let (mut cpu, mut bus) = machine(3);
    cpu.gpr[gpr::ESP] = STACK_TOP - 12;
    bus.write_u32(STACK_TOP - 12, 0x5555);
    bus.write_u32(STACK_TOP - 8, u32::from(SEL_CODE3));
    bus.write_u32(STACK_TOP - 4, flags::IF | flags::IOPL | flags::ZF);
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), Ok(Effect::Continue));
    assert_eq!(cpu.eflags, flags::RESERVED1 | flags::ZF);

    // iret to an outer level pops SS:ESP as well: a null SS is #GP(0).
    // To an inner level it is #GP(selector).
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ESP] = STACK_TOP - 12;
    bus.write_u32(STACK_TOP - 8, u32::from(SEL_CODE3));
    let before = cpu.clone();
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), guest(Exception::GeneralProtection(0)));
    assert_eq!(cpu, before);
    let (mut cpu, mut bus) = machine(3);
    cpu.gpr[gpr::ESP] = STACK_TOP - 12;
    bus.write_u32(STACK_TOP - 8, u32::from(SEL_CODE0));
    assert_eq!(run(&mut cpu, &mut bus, &[0xCF]), guest(Exception::GeneralProtection(SEL_CODE0)));

    // 16-bit iret pops words.
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ESP] = STACK_TOP - 6;
    bus.write_u16(STACK_TOP - 6, 0x1234);
    bus.write_u16(STACK_TOP - 4, SEL_CODE0);
    bus.write_u16(STACK_TOP - 2, flags::CF as u16);
    run(&mut cpu, &mut bus, &[0x66, 0xCF]).unwrap();
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP], cpu.eflags), (0x1234, STACK_TOP, flags::RESERVED1 | flags::CF));
}

#[test]
fn interrupt_then_iret_round_trip() {
    let (mut cpu, mut bus) = machine(0);
    cpu.eflags |= flags::IF | flags::SF;
    run(&mut cpu, &mut bus, &[0xCD, 0x80]).unwrap();
    assert!(!cpu.interrupts_enabled());
    assert_eq!(cpu.eip, 0x7080);
    run(&mut cpu, &mut bus, &[0xCF]).unwrap();
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (CODE_EIP + 2, STACK_TOP));
    assert_eq!(cpu.eflags, flags::RESERVED1 | flags::IF | flags::SF);
}

#[test]
fn far_transfers() {
    use Exception::*;
    // (CPL, bytes, expected result, expected CS, EIP, ESP)
    let ptr = |op: u8, sel: u16, off: u32| -> Vec<u8> {
        let mut v = vec![op];
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&sel.to_le_bytes());
        v
    };
    let cases: Vec<(u8, Vec<u8>, Result<Effect, ExecError>, u16, u32, u32)> = vec![
        (0, ptr(0xEA, SEL_CODE0, 0x1111), Ok(Effect::Continue), SEL_CODE0, 0x1111, STACK_TOP),
        // Reloading 0x28, a 16-bit code segment with limit 0xFFFF.
        (0, ptr(0xEA, SEL_CODE16, 0x1_0000), guest(GeneralProtection(0)), SEL_CODE0, CODE_EIP, STACK_TOP),
        (0, ptr(0xEA, SEL_CODE16, 0xFFFF), Ok(Effect::Continue), SEL_CODE16, 0xFFFF, STACK_TOP),
        (0, ptr(0xEA, SEL_CODE3, 0x1111), guest(GeneralProtection(SEL_CODE3 & !3)), SEL_CODE0, CODE_EIP, STACK_TOP),
        (0, ptr(0xEA, SEL_DATA0, 0x1111), guest(GeneralProtection(SEL_DATA0)), SEL_CODE0, CODE_EIP, STACK_TOP),
        // A conforming DPL 0 segment from CPL 3 keeps CPL 3.
        (3, ptr(0xEA, SEL_CONFORMING, 0x1111), Ok(Effect::Continue), SEL_CONFORMING | 3, 0x1111, STACK_TOP),
        // A jmp through a call gate never changes CPL: the gate's ring-0
        // target is refused with #GP(target selector). TSSs (task
        // switches) are unsupported.
        (3, ptr(0xEA, SEL_CALL_GATE, 0), guest(GeneralProtection(SEL_CODE0)), SEL_CODE3, CODE_EIP, STACK_TOP),
        (0, ptr(0x9A, SEL_TSS, 0), guest(GeneralProtection(SEL_TSS)), SEL_CODE0, CODE_EIP, STACK_TOP),
        (0, ptr(0x9A, SEL_CODE0, 0x2222), Ok(Effect::Continue), SEL_CODE0, 0x2222, STACK_TOP - 8),
    ];
    for (cpl, bytes, expected, cs, eip, esp) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        let got = run(&mut cpu, &mut bus, &bytes);
        assert_eq!(got, expected, "{bytes:02x?} at CPL {cpl}");
        assert_eq!((cpu.segment(SegReg::Cs).selector.0, cpu.eip, cpu.gpr[gpr::ESP]), (cs, eip, esp), "{bytes:02x?} at CPL {cpl}");
    }

    // call far then retf 8 returns and releases the parameters.
    let (mut cpu, mut bus) = machine(0);
    run(&mut cpu, &mut bus, &ptr(0x9A, SEL_CODE0, 0x2222)).unwrap();
    assert_eq!(bus.read_u32(STACK_TOP - 8), CODE_EIP + 7);
    assert_eq!(bus.read_u32(STACK_TOP - 4), u32::from(SEL_CODE0));
    run(&mut cpu, &mut bus, &[0xCA, 0x08, 0x00]).unwrap();
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (CODE_EIP + 7, STACK_TOP + 8));

    // jmp far [eax] through an m16:32 pointer.
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EAX] = 0x9000;
    bus.write_u32(0x9000, 0x3333);
    bus.write_u16(0x9004, SEL_CODE0);
    run(&mut cpu, &mut bus, &[0xFF, 0x28]).unwrap();
    assert_eq!(cpu.eip, 0x3333);

    // retf to an outer level pops SS too: a null one is #GP(0).
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ESP] = STACK_TOP - 8;
    bus.write_u32(STACK_TOP - 4, u32::from(SEL_CODE3));
    assert_eq!(run(&mut cpu, &mut bus, &[0xCB]), guest(GeneralProtection(0)));
    assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP - 8);

    // A far call whose frame does not fit changes nothing.
    let (mut cpu, mut bus) = machine(0);
    cpu.seg[SegReg::Ss as usize] = Segment { selector: Selector(SEL_SMALL_DATA), base: 0x3000, limit: 0xFFF, access: 0x4093 };
    cpu.gpr[gpr::ESP] = 4;
    let before = cpu.clone();
    assert_eq!(run(&mut cpu, &mut bus, &ptr(0x9A, SEL_CODE0, 0x2222)), guest(StackFault(0)));
    assert_eq!(cpu, before);
}

#[test]
fn segment_register_moves() {
    use Exception::*;
    let (mut cpu, mut bus) = machine(0);
    // mov ds, ax with a good and a bad selector.
    cpu.gpr[gpr::EAX] = u32::from(SEL_SMALL_DATA);
    run(&mut cpu, &mut bus, &[0x8E, 0xD8]).unwrap();
    assert_eq!(cpu.segment(SegReg::Ds).base, 0x3000);
    cpu.gpr[gpr::EAX] = u32::from(SEL_TSS);
    assert_eq!(run(&mut cpu, &mut bus, &[0x8E, 0xD8]), guest(GeneralProtection(SEL_TSS)));
    // A DPL 3 readable code segment is loadable into DS even at CPL 0.
    cpu.gpr[gpr::EAX] = u32::from(SEL_CODE3);
    run(&mut cpu, &mut bus, &[0x8E, 0xD8]).unwrap();
    assert_eq!(cpu.segment(SegReg::Ds).selector.0, SEL_CODE3);
    // mov ss, ax with a null selector.
    cpu.gpr[gpr::EAX] = 0;
    assert_eq!(run(&mut cpu, &mut bus, &[0x8E, 0xD0]), guest(GeneralProtection(0)));
    // mov ecx, ds zero-extends; mov [eax], ds writes only 16 bits.
    cpu.gpr[gpr::ECX] = 0xFFFF_FFFF;
    run(&mut cpu, &mut bus, &[0x8C, 0xD9]).unwrap();
    assert_eq!(cpu.gpr[gpr::ECX], u32::from(SEL_CODE3));
    // A write through DS while it holds a code segment is #GP(0).
    cpu.gpr[gpr::EAX] = 0x9000;
    assert_eq!(run(&mut cpu, &mut bus, &[0x8C, 0x10]), guest(GeneralProtection(0)));
    cpu.seg[SegReg::Ds as usize] = Segment::flat(SEL_DATA0, 0xC093);
    bus.write_u32(0x9000, 0xAAAA_AAAA);
    run(&mut cpu, &mut bus, &[0x8C, 0x10]).unwrap(); // mov [eax], ss
    assert_eq!(bus.read_u32(0x9000), 0xAAAA_0000 | u32::from(SEL_DATA0));

    // push fs / pop gs (32-bit): ESP moves by 4, the selector is 16 bits.
    let (mut cpu, mut bus) = machine(0);
    bus.write_u32(STACK_TOP - 4, 0xBBBB_BBBB);
    cpu.seg[SegReg::Fs as usize].selector = Selector(SEL_SMALL_DATA);
    run(&mut cpu, &mut bus, &[0x0F, 0xA0]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP - 4);
    assert_eq!(bus.read_u32(STACK_TOP - 4), 0xBBBB_0000 | u32::from(SEL_SMALL_DATA));
    run(&mut cpu, &mut bus, &[0x0F, 0xA9]).unwrap();
    assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP);
    assert_eq!(cpu.segment(SegReg::Gs).base, 0x3000);
    // pop ds of a bad selector leaves ESP alone.
    bus.write_u32(STACK_TOP - 4, u32::from(SEL_TSS));
    cpu.gpr[gpr::ESP] = STACK_TOP - 4;
    assert_eq!(run(&mut cpu, &mut bus, &[0x1F]), guest(GeneralProtection(SEL_TSS)));
    assert_eq!(cpu.gpr[gpr::ESP], STACK_TOP - 4);

    // lfs esi, [ebx] and lss esp, [ebx].
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::EBX] = 0x9000;
    bus.write_u32(0x9000, 0x0000_0123);
    bus.write_u16(0x9004, SEL_SMALL_DATA);
    run(&mut cpu, &mut bus, &[0x0F, 0xB4, 0x33]).unwrap();
    assert_eq!((cpu.gpr[gpr::ESI], cpu.segment(SegReg::Fs).base), (0x123, 0x3000));
    run(&mut cpu, &mut bus, &[0x0F, 0xB2, 0x23]).unwrap();
    assert_eq!((cpu.gpr[gpr::ESP], cpu.segment(SegReg::Ss).selector.0), (0x123, SEL_SMALL_DATA));
    // A failed les leaves the register alone; lds loads DS.
    bus.write_u16(0x9004, SEL_LDT);
    cpu.gpr[gpr::EDI] = 7;
    assert_eq!(run(&mut cpu, &mut bus, &[0xC4, 0x3B]), guest(GeneralProtection(SEL_LDT)));
    assert_eq!(cpu.gpr[gpr::EDI], 7);
    bus.write_u16(0x9004, SEL_SMALL_DATA);
    run(&mut cpu, &mut bus, &[0xC5, 0x3B]).unwrap();
    assert_eq!((cpu.gpr[gpr::EDI], cpu.segment(SegReg::Ds).base), (0x123, 0x3000));
}

#[test]
fn lar_lsl_verr_verw() {
    // (CPL, selector, lar result, lsl result, verr, verw)
    let cases: &[(u8, u16, Option<u32>, Option<u32>, bool, bool)] = &[
        (0, SEL_CODE0, Some(0x00C0_9A00), Some(0xFFFF_FFFF), true, false),
        (0, SEL_DATA0, Some(0x00C0_9200), Some(0xFFFF_FFFF), true, true),
        (0, SEL_SMALL_DATA, Some(0x0040_9200), Some(0xFFF), true, true),
        (3, SEL_DATA0 | 3, None, None, false, false), // DPL 0 invisible at CPL 3
        (0, SEL_DATA3, Some(0x00C0_F200), Some(0xFFFF_FFFF), true, true),
        (0, SEL_LDT, Some(0x0000_8200), Some(0x17), false, false),
        (0, SEL_TSS, Some(0x0000_8900), Some(0x67), false, false),
        (3, SEL_CONFORMING | 3, Some(0x00C0_9E00), Some(0xFFFF_FFFF), true, false), // conforming: no privilege check
        (0, SEL_INT_GATE, None, None, false, false), // lar rejects interrupt gates
        (3, SEL_CALL_GATE | 3, Some(0x0000_EC00), None, false, false), // lar accepts call gates, lsl does not
        (3, SEL_EXEC_ONLY3, Some(0x00C0_F800), Some(0xFFFF_FFFF), false, false),
        (0, 0x0000, None, None, false, false), // null
        (0, 0x0200, None, None, false, false), // beyond the GDT
        (0, 0x0004, None, None, false, false), // LDT selector, LDTR unusable
    ];
    for &(cpl, sel, lar, lsl, verr, verw) in cases {
        let (mut cpu, mut bus) = machine(cpl);
        // (bytes, expected dest value)
        for (bytes, expected) in [(&[0x0F, 0x02, 0xC1][..], lar), (&[0x0F, 0x03, 0xC1][..], lsl)] {
            cpu.gpr[gpr::ECX] = u32::from(sel);
            cpu.gpr[gpr::EAX] = 0x5A5A_5A5A;
            cpu.eflags |= flags::CF;
            run(&mut cpu, &mut bus, bytes).unwrap();
            assert_eq!(cpu.eflags & flags::ZF != 0, expected.is_some(), "{bytes:02x?} sel {sel:#x} cpl {cpl}");
            assert_eq!(cpu.gpr[gpr::EAX], expected.unwrap_or(0x5A5A_5A5A), "{bytes:02x?} sel {sel:#x} cpl {cpl}");
            assert_ne!(cpu.eflags & flags::CF, 0, "only ZF changes");
        }
        run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xE1]).unwrap();
        assert_eq!(cpu.eflags & flags::ZF != 0, verr, "verr sel {sel:#x} cpl {cpl}");
        run(&mut cpu, &mut bus, &[0x0F, 0x00, 0xE9]).unwrap();
        assert_eq!(cpu.eflags & flags::ZF != 0, verw, "verw sel {sel:#x} cpl {cpl}");
    }
    // The 16-bit lar form keeps only the low word.
    let (mut cpu, mut bus) = machine(0);
    cpu.gpr[gpr::ECX] = u32::from(SEL_CODE0);
    cpu.gpr[gpr::EAX] = 0xFFFF_FFFF;
    run(&mut cpu, &mut bus, &[0x66, 0x0F, 0x02, 0xC1]).unwrap();
    assert_eq!(cpu.gpr[gpr::EAX], 0xFFFF_9A00);
}

#[test]
fn sysenter_and_sysexit() {
    let (mut cpu, mut bus) = machine(3);
    assert_eq!(run(&mut cpu, &mut bus, &[0x0F, 0x34]), guest(Exception::GeneralProtection(0)), "SYSENTER_CS = 0");
    cpu.msr = crate::state::Msrs { sysenter_cs: 0x08, sysenter_esp: 0xA000, sysenter_eip: 0xC000, tsc_offset: 0 };
    cpu.eflags |= flags::IF;
    run(&mut cpu, &mut bus, &[0x0F, 0x34]).unwrap();
    assert_eq!(cpu.cpl(), 0);
    assert_eq!((cpu.segment(SegReg::Cs).selector.0, cpu.segment(SegReg::Ss).selector.0), (0x08, 0x10));
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (0xC000, 0xA000));
    assert!(!cpu.interrupts_enabled());
    cpu.gpr[gpr::ECX] = 0x7000;
    cpu.gpr[gpr::EDX] = 0x4444;
    run(&mut cpu, &mut bus, &[0x0F, 0x35]).unwrap();
    assert_eq!(cpu.cpl(), 3);
    assert_eq!((cpu.segment(SegReg::Cs).selector.0, cpu.segment(SegReg::Ss).selector.0), (0x1B, 0x23));
    assert_eq!((cpu.eip, cpu.gpr[gpr::ESP]), (0x4444, 0x7000));
}

#[test]
fn data_instructions_go_to_the_emulator() {
    // mov eax, gs:[0x10]: not a system instruction, so the emulator runs it.
    let (mut cpu, mut bus) = machine(0);
    cpu.seg[SegReg::Gs as usize].base = 0x9000;
    bus.write_u32(0x9010, 0x1234_5678);
    assert_eq!(run(&mut cpu, &mut bus, &[0x65, 0xA1, 0x10, 0x00, 0x00, 0x00]), Ok(Effect::Continue));
    assert_eq!(cpu.gpr[gpr::EAX], 0x1234_5678);
    assert_eq!(cpu.eip, CODE_EIP + 6);
}
