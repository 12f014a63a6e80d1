//! Byte-level encodings of the few instruction sequences the translator
//! writes itself: exit stubs, the inline indirect-branch lookup, and
//! indirect-branch trampolines.
//!
//! They are spelled out byte by byte, with the assembly beside each, because
//! students read them next to `--trace` output and in golden tests. Every
//! `gs:` displacement is an offset from the monitor area (see
//! [`crate::layout`]). None of these sequences changes EFLAGS: translated
//! code may sit between a flag-setting guest instruction and the guest's
//! `jcc` that reads the flags.

use crate::layout::{vcpu, IB_TABLE};

/// Prefix byte of a GS segment override.
const GS: u8 = 0x65;

/// Length in bytes of an exit stub (see [`exit_stub`]).
pub const EXIT_STUB_LEN: usize = 18;
/// Offset of the exit id's imm32 within an exit stub.
pub const EXIT_STUB_ID_OFFSET: usize = 7;
/// Length of a `jmp rel32`, the instruction that chains an exit stub.
pub const JMP_REL32_LEN: usize = 5;

/// Appends `bytes` as a little-endian u32.
fn push_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// An exit stub: records which exit was taken, then leaves 32-bit code.
///
/// ```text
/// mov dword gs:[EXIT_ID], id        ; 65 C7 05 disp32 imm32
/// jmp far gs:[EXIT_FARPTR]          ; 65 FF 2D disp32  -> 64-bit landing pad
/// ```
/// The far jump switches the CPU to 64-bit mode through a pointer whose
/// selector is the host's 64-bit code segment. It touches no guest register
/// and no guest memory. Chaining later overwrites the first five bytes with
/// a `jmp rel32` straight to the target unit.
pub fn exit_stub(out: &mut Vec<u8>, id: u32) {
    out.extend_from_slice(&[GS, 0xC7, 0x05]);
    push_u32(out, vcpu::EXIT_ID);
    push_u32(out, id);
    out.extend_from_slice(&[GS, 0xFF, 0x2D]);
    push_u32(out, vcpu::EXIT_FARPTR);
}

/// `jmp rel32` from `from` (the address of the jmp itself) to `to`.
pub fn jmp_rel32(from: u32, to: u32) -> [u8; 5] {
    let rel = to.wrapping_sub(from.wrapping_add(5));
    let r = rel.to_le_bytes();
    [0xE9, r[0], r[1], r[2], r[3]]
}

/// Parks ECX and EDX in the VCPU page, the first step of every inline
/// indirect-branch lookup.
///
/// ```text
/// mov gs:[SCRATCH_ECX], ecx         ; 65 89 0D disp32
/// mov gs:[SCRATCH_EDX], edx         ; 65 89 15 disp32
/// ```
pub fn save_scratch(out: &mut Vec<u8>) {
    out.extend_from_slice(&[GS, 0x89, 0x0D]);
    push_u32(out, vcpu::SCRATCH_ECX);
    out.extend_from_slice(&[GS, 0x89, 0x15]);
    push_u32(out, vcpu::SCRATCH_EDX);
}

/// Restores ECX and EDX from the VCPU page.
///
/// ```text
/// mov ecx, gs:[SCRATCH_ECX]         ; 65 8B 0D disp32
/// mov edx, gs:[SCRATCH_EDX]         ; 65 8B 15 disp32
/// ```
pub fn restore_scratch(out: &mut Vec<u8>) {
    out.extend_from_slice(&[GS, 0x8B, 0x0D]);
    push_u32(out, vcpu::SCRATCH_ECX);
    out.extend_from_slice(&[GS, 0x8B, 0x15]);
    push_u32(out, vcpu::SCRATCH_EDX);
}

/// `pop ecx`: the guest return address of a `ret`, read through the guest's
/// own SS exactly as `ret` would.
pub fn pop_ecx(out: &mut Vec<u8>) {
    out.push(0x59);
}

/// `lea esp, [esp + n]`: the `imm16` of `ret n`, without touching flags.
pub fn lea_esp_plus(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[0x8D, 0xA4, 0x24]);
    push_u32(out, n);
}

/// `push imm32`: the guest return address of a `call`. The guest must see
/// its own address on its stack, never a TC address.
pub fn push_imm32(out: &mut Vec<u8>, value: u32) {
    out.push(0x68);
    push_u32(out, value);
}

/// The hash-and-jump half of the inline lookup, with the guest target in
/// ECX.
///
/// ```text
/// movzx edx, cx                     ; 0F B7 D1        edx = target & 0xFFFF
/// jmp dword gs:[IB_TABLE + edx*4]   ; 65 FF 24 95 disp32
/// ```
/// `movzx` is the hash because it leaves EFLAGS alone. Each table slot holds
/// the TC address of a trampoline (see [`trampoline`]) or of the shared
/// miss stub.
pub fn ib_dispatch(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x0F, 0xB7, 0xD1]);
    out.extend_from_slice(&[GS, 0xFF, 0x24, 0x95]);
    push_u32(out, IB_TABLE);
}

/// `push dword gs:[GUEST_SELECTORS + 4*sreg]`: pushes the guest's own
/// selector, zero-extended, as `push sreg` does on CPUs that write all 32
/// bits (SDM Vol. 2B PUSH allows either).
///
/// ```text
/// push dword gs:[disp32]            ; 65 FF 35 disp32
/// ```
pub fn push_guest_selector(out: &mut Vec<u8>, sreg: u8) {
    out.extend_from_slice(&[GS, 0xFF, 0x35]);
    push_u32(out, vcpu::GUEST_SELECTORS + 4 * u32::from(sreg));
}

/// `mov r, sreg` reading the guest's own selector: `movzx r32, word
/// gs:[...]` for a 32-bit destination (the upper half is zeroed, as P6 and
/// later CPUs do), `mov r16, gs:[...]` for a 16-bit one.
///
/// ```text
/// movzx r32, word gs:[disp32]       ; 65 0F B7 /r disp32
/// mov r16, gs:[disp32]              ; 66 65 8B /r disp32
/// ```
pub fn read_guest_selector(out: &mut Vec<u8>, sreg: u8, dest_number: u8, dest_is_16bit: bool) {
    let modrm = (dest_number & 7) << 3 | 0b101;
    if dest_is_16bit {
        out.extend_from_slice(&[0x66, GS, 0x8B, modrm]);
    } else {
        out.extend_from_slice(&[GS, 0x0F, 0xB7, modrm]);
    }
    push_u32(out, vcpu::GUEST_SELECTORS + 4 * u32::from(sreg));
}

/// The shared indirect-branch miss stub: the target is in ECX, the guest's
/// ECX and EDX are parked.
///
/// ```text
/// mov gs:[IB_TARGET], ecx           ; 65 89 0D disp32
/// mov ecx, gs:[SCRATCH_ECX]         ; restore the guest's ECX and EDX
/// mov edx, gs:[SCRATCH_EDX]
/// <exit stub with id>
/// ```
pub fn ib_miss_stub(out: &mut Vec<u8>, id: u32) {
    out.extend_from_slice(&[GS, 0x89, 0x0D]);
    push_u32(out, vcpu::IB_TARGET);
    restore_scratch(out);
    exit_stub(out, id);
}

/// An indirect-branch trampoline for the unit at guest `eip`, placed at TC
/// address `at`, continuing at `unit` on a hit and at `miss` otherwise.
///
/// ```text
///       lea ecx, [ecx - eip]        ; 8D 89 disp32   zero iff target == eip
///       jecxz hit                   ; E3 rel8        (neither touches EFLAGS)
///       lea ecx, [ecx + eip]        ; 8D 89 disp32   target back in ECX
///       jmp miss                    ; E9 rel32
/// hit:  mov ecx, gs:[IB_HITS]       ; count the hit ...
///       lea ecx, [ecx + 1]
///       mov gs:[IB_HITS], ecx       ; ... still without flags
///       mov ecx, gs:[SCRATCH_ECX]
///       mov edx, gs:[SCRATCH_EDX]
///       jmp unit                    ; E9 rel32
/// ```
///
/// A unit on a supervisor-only page gets a *guarded* trampoline, which
/// hits only below CPL 3: otherwise a `ret` at CPL 3 could reach kernel
/// code through an entry the kernel made, without the #PF the fetch owes.
/// EDX is free here (the lookup parked it), so the guard folds the VCPU's
/// CPL-3 flag (0 or 1) into the comparison, still without touching EFLAGS:
///
/// ```text
///       mov edx, gs:[IB_USER]       ; 1 at CPL 3, else 0
///       lea ecx, [ecx + edx - eip]  ; zero iff target == eip and edx == 0
///       jecxz hit
///       not edx                     ; -edx - 1, no flags
///       lea ecx, [ecx + edx + eip + 1]  ; target back in ECX
///       jmp miss
/// ```
///
/// No other target can make ECX zero at CPL 3: a target reaches this
/// trampoline only through the slot of its low 16 bits, so it equals `eip`
/// modulo 2^16, and then ECX = target - eip + 1 is 1 modulo 2^16.
pub fn trampoline(at: u32, eip: u32, unit: u32, miss: u32, guarded: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    if guarded {
        out.extend_from_slice(&[GS, 0x8B, 0x15]);
        push_u32(&mut out, vcpu::IB_USER);
        out.extend_from_slice(&[0x8D, 0x8C, 0x11]); // lea ecx, [ecx + edx*1 + disp32]
        push_u32(&mut out, eip.wrapping_neg());
        out.extend_from_slice(&[0xE3, 14]); // over not (2), lea (7) and jmp (5)
        out.extend_from_slice(&[0xF7, 0xD2]);
        out.extend_from_slice(&[0x8D, 0x8C, 0x11]);
        push_u32(&mut out, eip.wrapping_add(1));
    } else {
        out.extend_from_slice(&[0x8D, 0x89]);
        push_u32(&mut out, eip.wrapping_neg());
        out.extend_from_slice(&[0xE3, 11]); // over the next lea (6) and jmp (5)
        out.extend_from_slice(&[0x8D, 0x89]);
        push_u32(&mut out, eip);
    }
    let here = at + out.len() as u32;
    out.extend_from_slice(&jmp_rel32(here, miss));
    out.extend_from_slice(&[GS, 0x8B, 0x0D]);
    push_u32(&mut out, vcpu::IB_HITS);
    out.extend_from_slice(&[0x8D, 0x49, 0x01]); // lea ecx, [ecx + 1]
    out.extend_from_slice(&[GS, 0x89, 0x0D]);
    push_u32(&mut out, vcpu::IB_HITS);
    restore_scratch(&mut out);
    let here = at + out.len() as u32;
    out.extend_from_slice(&jmp_rel32(here, unit));
    out
}

/// The 32-bit entry trampoline, reached by the world switch's far jump with
/// every guest register loaded except EDI, which held the pointer the far
/// jump went through.
///
/// ```text
/// mov edi, gs:[GPR + 7*4]           ; 65 8B 3D disp32   the guest's EDI
/// jmp dword gs:[ENTRY_TARGET]       ; 65 FF 25 disp32   into the unit
/// ```
pub fn entry_trampoline(out: &mut Vec<u8>) {
    out.extend_from_slice(&[GS, 0x8B, 0x3D]);
    push_u32(out, vcpu::GPR + 7 * 4);
    out.extend_from_slice(&[GS, 0xFF, 0x25]);
    push_u32(out, vcpu::ENTRY_TARGET);
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    fn disasm(bytes: &[u8], ip: u64) -> Vec<String> {
        let mut decoder = Decoder::with_ip(32, bytes, ip, DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let mut lines = Vec::new();
        for insn in &mut decoder {
            assert!(!insn.is_invalid(), "invalid encoding in {:02x?}", bytes);
            let mut s = String::new();
            formatter.format(&insn, &mut s);
            lines.push(s);
        }
        lines
    }

    #[test]
    fn sequences_decode_to_the_documented_instructions() {
        let mut v = Vec::new();
        exit_stub(&mut v, 7);
        assert_eq!(v.len(), EXIT_STUB_LEN);
        assert_eq!(disasm(&v, 0), ["mov dword ptr gs:[24h],7", "jmp far fword ptr gs:[44h]"]);
        let mut v = Vec::new();
        ib_dispatch(&mut v);
        assert_eq!(disasm(&v, 0), ["movzx edx,cx", "jmp dword ptr gs:[edx*4+10000h]"]);
        let t = trampoline(0x1000, 0x0010_2030, 0x2000, 0x3000, false);
        let lines = disasm(&t, 0x1000);
        assert_eq!(lines[0], "lea ecx,[ecx-102030h]");
        assert_eq!(lines[1], format!("jecxz {:08X}h", 0x1000 + 19));
        assert_eq!(lines[3], "jmp 00003000h");
        assert_eq!(lines.last().unwrap(), "jmp 00002000h");
        let t = trampoline(0x1000, 0x0010_2030, 0x2000, 0x3000, true);
        let lines = disasm(&t, 0x1000);
        assert_eq!(lines[0], "mov edx,gs:[0B8h]");
        assert_eq!(lines[1], "lea ecx,[ecx+edx-102030h]");
        assert_eq!(lines[2], format!("jecxz {:08X}h", 0x1000 + 30));
        assert_eq!(lines[3], "not edx");
        assert_eq!(lines[4], "lea ecx,[ecx+edx+102031h]");
        assert_eq!(lines[5], "jmp 00003000h");
        assert_eq!(lines[6], "mov ecx,gs:[34h]");
        assert_eq!(lines.last().unwrap(), "jmp 00002000h");
        let mut v = Vec::new();
        entry_trampoline(&mut v);
        assert_eq!(disasm(&v, 0), ["mov edi,gs:[1Ch]", "jmp dword ptr gs:[38h]"]);
    }
}
