//! Text renderings of translations: each guest instruction beside what it
//! became in the translation cache, with the reason for every rewrite.
//!
//! Used by `--trace`, `-d in_asm,out_asm`, the debugger and the golden
//! tests, so all of them show the same thing.

use std::fmt::Write;

use crate::classify::{Branch, Class, Inline};
use crate::unit::{TranslatedInsn, UnitEnd};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

/// The tag shown beside a guest instruction.
pub fn tag(class: &Class) -> &'static str {
    match class {
        Class::Ident => "IDENT",
        Class::Branch(_) | Class::Inline(_) => "REWRITE",
        Class::Callout(_) => "CALLOUT",
        Class::Fault(_) => "FAULT",
    }
}

/// The reason shown beside a rewritten guest instruction.
pub fn reason(class: &Class) -> String {
    match class {
        Class::Ident => String::new(),
        Class::Branch(b) => match b {
            Branch::Jump { .. } => "direct jmp: exit stub, chained once the target is translated".into(),
            Branch::Conditional { .. } => "jcc: taken and fall-through exit stubs, each chainable".into(),
            Branch::ShortConditional { .. } => "loop/jecxz: rel8 only, branches over a jmp to two stubs".into(),
            Branch::Call { .. } => "call: pushes the guest return address, then an exit stub".into(),
            Branch::Return { .. } => "ret: inline indirect-branch lookup through gs:".into(),
            Branch::IndirectJump => "jmp r/m: inline indirect-branch lookup through gs:".into(),
            Branch::IndirectCall => "call r/m: pushes the guest return address, inline lookup".into(),
        },
        Class::Inline(Inline::PushSegment { .. }) => "push sreg: pushes the guest's selector from the VCPU page".into(),
        Class::Inline(Inline::ReadSegment { .. }) => "mov r, sreg: reads the guest's selector from the VCPU page".into(),
        Class::Callout(r) => r.describe().into(),
        Class::Fault(e) => format!("raises {e} when reached"),
    }
}

/// Why a unit ended, in words.
pub fn end_reason(end: UnitEnd) -> &'static str {
    match end {
        UnitEnd::ControlTransfer => "control transfer",
        UnitEnd::Callout => "callout",
        UnitEnd::Fault => "faulting instruction",
        UnitEnd::PageBoundary => "guest page boundary",
        UnitEnd::LengthCap => "length cap",
        UnitEnd::SingleStep => "single-step",
        UnitEnd::Break => "break point",
    }
}

/// Formats one guest instruction in Intel syntax.
pub fn format_insn(insn: &Instruction) -> String {
    let mut formatter = IntelFormatter::new();
    formatter.options_mut().set_first_operand_char_index(8);
    let mut out = String::new();
    formatter.format(insn, &mut out);
    out
}

/// Disassembles translated 32-bit code at `ip`.
pub fn disassemble(code: &[u8], ip: u32) -> Vec<(u32, String)> {
    let mut decoder = Decoder::with_ip(32, code, u64::from(ip), DecoderOptions::NONE);
    let mut lines = Vec::new();
    for insn in &mut decoder {
        lines.push((insn.ip32(), format_insn(&insn)));
    }
    lines
}

/// Renders a unit: a header, then each guest instruction with its tag and
/// reason, followed by the TC instructions it became. `code` is the unit's
/// translated code as placed at `tc_base`.
pub fn format_unit(guest_start: u32, insns: &[TranslatedInsn], end: UnitEnd, code: &[u8], tc_base: u32) -> String {
    let mut out = String::new();
    let guest_bytes: usize = insns.iter().map(|t| t.bytes().len()).sum();
    let _ = writeln!(
        out,
        "unit {guest_start:#010x}: {} guest instructions, {guest_bytes} bytes -> {} TC bytes at {tc_base:#010x}; ends at {}",
        insns.len(),
        code.len(),
        end_reason(end)
    );
    for t in insns {
        let bytes: String = t.bytes().iter().map(|b| format!("{b:02x}")).collect();
        let line = format!("  {:08x}  {:<16} {:<32} {:<8} {}", t.insn.ip32(), bytes, format_insn(&t.insn), tag(&t.class), reason(&t.class));
        let _ = writeln!(out, "{}", line.trim_end());
        let (s, e) = (t.tc_start as usize, (t.tc_end as usize).min(code.len()));
        for (ip, text) in disassemble(&code[s..e], tc_base + t.tc_start) {
            let _ = writeln!(out, "      {ip:08x}    {text}");
        }
    }
    out
}
