//! Far control transfers that may change the privilege level: far `jmp`
//! and `call` (straight to a code segment, or through a call gate), far
//! `ret`, `iret`, `sysenter` and `sysexit` (Intel SDM Vol. 3A §5.8, Vol. 2
//! CALL, JMP, RET, IRET, SYSENTER, SYSEXIT).
//!
//! This module owns the order of the checks and the stack work of each
//! transfer: which stack the return frame goes on, what a call gate copies,
//! what `iret` and `ret` pop when they return to an outer ring, and the
//! rule that nulls data segment registers the outer ring may not use. The
//! descriptor rules themselves live in `segment.rs` and the TSS stacks in
//! `tss.rs`; interrupt and exception delivery (the other way into an inner
//! ring) is `interrupt.rs`.
//!
//! What is supported:
//! - Far `call` through a call gate to the same or an inner privilege level
//!   (32- and 16-bit gates), with the stack switch through the TSS and the
//!   copy of the gate's parameter count of dwords (or words) from the
//!   caller's stack (§5.8.5). Far `jmp` through a call gate, which never
//!   changes CPL.
//! - Far `ret` and `iret` to the same or an outer level, popping SS:ESP and
//!   nulling DS, ES, FS and GS as the SDM requires.
//! - `sysenter` and `sysexit` in full, as far as our CPU model goes (no
//!   64-bit mode, no virtual-8086 mode).
//!
//! What is not: task switches. A far `jmp`/`call` to a TSS or task gate and
//! an `iret` with EFLAGS.NT set raise #GP (the selector, or 0 for `iret`)
//! with a `log::warn!("unsupported: ...")` line; `iret` to virtual-8086
//! mode likewise.
//!
//! Every function checks everything before it changes anything: on `Err`
//! the CPU is as it was (the Accessed bits in guest descriptors aside,
//! which hardware also sets before a later check can fail).

use bt86_machine::Bus;
use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use crate::descriptor::{self, Descriptor, GateDescriptor, GateKind};
use crate::exception::Exception;
use crate::exec::{next_eip, Effect, EFLAGS_FIXED_ZERO};
use crate::operand::memory_operand;
use crate::segment::{self, CodeTarget, Transfer};
use crate::state::{flags, gpr, Cpu, SegReg, Segment, Selector};
use crate::tss;

fn gp(selector: Selector) -> Exception {
    Exception::GeneralProtection(selector.error_code())
}

/// The little-endian bytes of a stack frame, lowest address first, each
/// value truncated to `width` (2 or 4) bytes.
fn encode_frame(values: &[u32], width: u32) -> Vec<u8> {
    let width = if width == 2 { 2 } else { 4 };
    let mut frame = Vec::with_capacity(values.len() * width);
    for value in values {
        frame.extend_from_slice(&value.to_le_bytes()[..width]);
    }
    frame
}

/// The target of a far `jmp`/`call`: an immediate ptr16:16/ptr16:32, or
/// an m16:16/m16:32 pointer in memory (offset first, then selector). The
/// third value is the operand size in bytes.
fn far_target(cpu: &Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<(Selector, u32, u32), Exception> {
    match insn.op0_kind() {
        OpKind::FarBranch16 => Ok((Selector(insn.far_branch_selector()), u32::from(insn.far_branch16()), 2)),
        OpKind::FarBranch32 => Ok((Selector(insn.far_branch_selector()), insn.far_branch32(), 4)),
        _ => {
            let size = if matches!(insn.code(), Code::Jmp_m1616 | Code::Call_m1616) { 2 } else { 4 };
            let (seg, offset) = memory_operand(cpu, insn, 0)?;
            let eip = if size == 2 {
                u32::from(cpu.read_u16(bus, seg, offset)?)
            } else {
                cpu.read_u32(bus, seg, offset)?
            };
            let sel = cpu.read_u16(bus, seg, offset.wrapping_add(size))?;
            Ok((Selector(sel), eip, size))
        }
    }
}

/// Far `jmp` and `call` (SDM Vol. 2A CALL and JMP; Vol. 3A §5.8.1-5.8.2).
/// A selector naming a call gate goes through the gate; anything else must
/// name a code segment the current CPL may use directly.
pub(crate) fn far_jmp_or_call(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let (sel, eip, size) = far_target(cpu, bus, insn)?;
    let is_call = insn.mnemonic() == Mnemonic::Call;
    if !sel.is_null() {
        if let Some(fetched) = descriptor::read_descriptor(cpu, bus, sel)? {
            if let Descriptor::Gate(gate) = fetched.descriptor {
                if gate.kind == GateKind::Call {
                    return through_call_gate(cpu, bus, insn, sel, gate, is_call);
                }
            }
        }
    }
    let target = segment::check_code_segment(cpu, bus, sel, Transfer::JmpOrCall)?;
    if eip > target.segment.limit {
        return Err(Exception::GeneralProtection(0));
    }
    if is_call {
        push_return_address(cpu, bus, insn, &target, eip, size)
    } else {
        segment::commit_code_target(cpu, bus, &target, eip, false)?;
        Ok(Effect::Continue)
    }
}

/// A far call that stays at the current privilege level: push CS (zero-
/// extended to the operand size) and the return EIP as one write, so that
/// a #SS leaves ESP untouched, then load CS:EIP.
fn push_return_address(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    insn: &Instruction,
    target: &CodeTarget,
    eip: u32,
    size: u32,
) -> Result<Effect, Exception> {
    let cs = u32::from(cpu.segment(SegReg::Cs).selector.0);
    let frame = encode_frame(&[next_eip(insn), cs], size);
    let new_sp = cpu.stack_pointer_plus(-(frame.len() as i32));
    cpu.write_virt(bus, SegReg::Ss, new_sp, &frame)?;
    segment::commit_code_target(cpu, bus, target, eip, false)?;
    cpu.set_stack_pointer(new_sp);
    Ok(Effect::Continue)
}

/// Far `call` or `jmp` through a call gate (SDM Vol. 2A CALL "CALL-GATE",
/// JMP; Vol. 3A §5.8.4-5.8.5). The offset in the instruction is ignored:
/// the gate supplies the entry point, and its size (not the instruction's
/// operand size) decides the width of everything pushed.
///
/// The gate itself needs DPL >= CPL and DPL >= RPL of the gate selector,
/// else #GP(gate selector), and must be present, else #NP(gate selector).
/// Its code segment is checked by [`segment::check_code_segment`] with
/// [`Transfer::CallGate`]. A call to a more privileged non-conforming
/// segment switches to the TSS stack for that ring and pushes, from the
/// top: the caller's SS and ESP, the gate's parameter count of values
/// copied from the caller's stack (keeping their order), then CS and EIP.
fn through_call_gate(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    insn: &Instruction,
    gate_sel: Selector,
    gate: GateDescriptor,
    is_call: bool,
) -> Result<Effect, Exception> {
    if gate.dpl < cpu.cpl() || gate.dpl < gate_sel.rpl() {
        return Err(gp(gate_sel));
    }
    if !gate.present {
        return Err(Exception::SegmentNotPresent(gate_sel.error_code()));
    }
    let target = segment::check_code_segment(cpu, bus, gate.selector, Transfer::CallGate { is_call })?;
    let width: u32 = if gate.is_32bit { 4 } else { 2 };
    if !is_call {
        // A jmp through a call gate keeps CPL (checked above) and pushes
        // nothing.
        segment::commit_code_target(cpu, bus, &target, gate.offset, false)?;
        return Ok(Effect::Continue);
    }
    if !target.changes_privilege(cpu) {
        // SAME-PRIVILEGE: a conforming target, or one at DPL = CPL.
        if gate.offset > target.segment.limit {
            return Err(Exception::GeneralProtection(0));
        }
        return push_return_address(cpu, bus, insn, &target, gate.offset, width);
    }

    // MORE-PRIVILEGE: the new stack comes from the TSS; #TS and #SS errors
    // carry no EXT bit, since the program asked for the transfer.
    let stack = tss::inner_stack(cpu, bus, target.new_cpl, false)?;
    let count = u32::from(gate.param_count & 0x1F);
    let frame_len = (4 + count) * width;
    let sp = stack
        .frame_offset(frame_len)
        .ok_or(Exception::StackFault(stack.segment.selector.error_code()))?;
    if gate.offset > target.segment.limit {
        return Err(Exception::GeneralProtection(0));
    }
    let old_cs = u32::from(cpu.segment(SegReg::Cs).selector.0);
    let old_ss = u32::from(cpu.segment(SegReg::Ss).selector.0);
    let mut values = Vec::with_capacity(4 + count as usize);
    values.extend([next_eip(insn), old_cs]);
    // The parameters are read through the caller's SS:ESP, so a caller
    // whose stack holds fewer than `count` values gets #SS(0) from its own
    // stack segment.
    for i in 0..count {
        values.push(cpu.peek_stack(bus, i * width, width)?);
    }
    values.extend([cpu.gpr[gpr::ESP], old_ss]);
    let frame = encode_frame(&values, width);
    // The inner ring's stack: a supervisor access although CPL has not
    // changed yet.
    cpu.write_system(bus, stack.linear(sp), &frame)?;
    descriptor::set_accessed(cpu, bus, &stack.fetched)?;
    segment::commit_code_target(cpu, bus, &target, gate.offset, false)?;
    cpu.set_segment(SegReg::Ss, stack.segment);
    cpu.gpr[gpr::ESP] = stack.esp_after(sp);
    cpu.stats.privilege_changes += 1;
    Ok(Effect::Continue)
}

/// The stack an outer-level return switches to: the checked SS and the ESP
/// popped for it.
struct OuterStack {
    segment: Segment,
    fetched: descriptor::Fetched,
    esp: u32,
}

/// Reads and checks the SS:ESP pair a far `ret` or `iret` to an outer level
/// pops from `offset` above ESP (SDM Vol. 2B RET and Vol. 2A IRET,
/// "RETURN-TO-OUTER-PRIVILEGE-LEVEL"). Reading beyond the stack's limit
/// raises #SS(0); the SS rules are those of [`segment::check_stack_segment`]
/// at the new CPL: null #GP(0), wrong RPL/DPL/type #GP(SS selector), not
/// present #SS(SS selector).
fn pop_outer_stack(cpu: &Cpu, bus: &mut dyn Bus, offset: u32, size: u32, new_cpl: u8) -> Result<OuterStack, Exception> {
    let esp = cpu.peek_stack(bus, offset, size)?;
    let ss = Selector(cpu.peek_stack(bus, offset + size, size)? as u16);
    let (segment, fetched) = segment::check_stack_segment(cpu, bus, ss, new_cpl)?;
    Ok(OuterStack { segment, fetched, esp })
}

/// Loads the outer stack after a return: SS, then ESP. When the new stack
/// is 16-bit only SP is loaded and the upper half of ESP keeps the value it
/// had at the inner level, exactly as on hardware. (That leak of kernel
/// stack bits is why Linux needs "espfix" for 16-bit stacks.)
fn load_outer_stack(cpu: &mut Cpu, stack: &OuterStack) {
    cpu.set_segment(SegReg::Ss, stack.segment);
    cpu.set_stack_pointer(stack.esp);
}

/// After a return to an outer level, nulls each of ES, DS, FS and GS that
/// the new CPL may not use: a null (unusable) register, or one whose
/// cached descriptor is data or non-conforming code with DPL < CPL (SDM
/// Vol. 2A IRET and Vol. 2B RET, the loop at the end of
/// "RETURN-TO-OUTER-PRIVILEGE-LEVEL"). The cached descriptor is used, not
/// the table: the rule is about what the register holds. Without it a
/// ring-3 program could go on reading kernel data through a DS the kernel
/// left behind.
pub fn null_inaccessible_data_segments(cpu: &mut Cpu) {
    let cpl = cpu.cpl();
    for reg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
        let seg = *cpu.segment(reg);
        let conforming_code = seg.is_code() && seg.type_bits() & 0x4 != 0;
        if seg.access == 0 || (!conforming_code && seg.dpl() < cpl) {
            cpu.set_segment(reg, Segment { selector: Selector(0), base: 0, limit: 0, access: 0 });
        }
    }
}

/// Far `ret` and `ret imm16` (SDM Vol. 2B RET, protected mode). The
/// return CS's RPL is the new CPL: equal to CPL is a same-level return;
/// greater is a return to an outer level, which also pops SS:ESP (above
/// the `imm16` bytes of parameters), releases `imm16` bytes on the outer
/// stack too, and nulls the data segment registers the outer level may not
/// use.
pub(crate) fn far_ret(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let size = if matches!(insn.code(), Code::Retfw | Code::Retfw_imm16) { 2 } else { 4 };
    let release = if insn.op_count() > 0 { u32::from(insn.immediate16()) } else { 0 };
    let eip = cpu.peek_stack(bus, 0, size)?;
    let sel = Selector(cpu.peek_stack(bus, size, size)? as u16);
    let target = segment::check_code_segment(cpu, bus, sel, Transfer::Return)?;
    let eip = if size == 2 { eip & 0xFFFF } else { eip };
    if !target.changes_privilege(cpu) {
        segment::commit_code_target(cpu, bus, &target, eip, false)?;
        cpu.set_stack_pointer(cpu.stack_pointer_plus((2 * size + release) as i32));
        return Ok(Effect::Continue);
    }
    let stack = pop_outer_stack(cpu, bus, 2 * size + release, size, target.new_cpl)?;
    if eip > target.segment.limit {
        return Err(Exception::GeneralProtection(0));
    }
    descriptor::set_accessed(cpu, bus, &stack.fetched)?;
    segment::commit_code_target(cpu, bus, &target, eip, false)?;
    load_outer_stack(cpu, &stack);
    // "ESP <- ESP + SRC" once more: release the parameters the caller
    // pushed on its own stack before the call through the gate.
    cpu.set_stack_pointer(cpu.stack_pointer_plus(release as i32));
    null_inaccessible_data_segments(cpu);
    cpu.stats.privilege_changes += 1;
    Ok(Effect::Continue)
}

/// `iret`/`iretd` in protected mode (SDM Vol. 2A IRET). The frame (EIP,
/// CS, EFLAGS, and for an outer level ESP and SS) is read and checked
/// before anything changes.
///
/// EFLAGS: the status flags, TF, DF, NT and (32-bit) RF, AC and ID always
/// load; IF only when the old CPL <= IOPL; IOPL, VIF and VIP only at old
/// CPL 0. That is why a kernel can `iret` to ring 3 with IF set in the
/// image while ring 3 can never set IF by `iret`-ing to itself.
pub(crate) fn iret(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    if cpu.eflags & flags::NT != 0 {
        log::warn!("unsupported: iret with NT set (return from a nested task); the guest gets #GP(0)");
        return Err(Exception::GeneralProtection(0));
    }
    let size = if insn.code() == Code::Iretw { 2 } else { 4 };
    let new_eip = cpu.peek_stack(bus, 0, size)?;
    let new_cs = Selector(cpu.peek_stack(bus, size, size)? as u16);
    let new_flags = cpu.peek_stack(bus, 2 * size, size)?;
    if size == 4 && new_flags & flags::VM != 0 && cpu.cpl() == 0 {
        log::warn!("unsupported: iret to virtual-8086 mode; the guest gets #GP(0)");
        return Err(Exception::GeneralProtection(0));
    }
    let target = segment::check_code_segment(cpu, bus, new_cs, Transfer::Return)?;
    let outer = if target.changes_privilege(cpu) {
        Some(pop_outer_stack(cpu, bus, 3 * size, size, target.new_cpl)?)
    } else {
        None
    };
    let eip = if size == 2 { new_eip & 0xFFFF } else { new_eip };
    if eip > target.segment.limit {
        return Err(Exception::GeneralProtection(0));
    }

    // The flags a return may change are decided by the CPL it runs at,
    // before CPL changes.
    let mut writable = flags::STATUS | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
    if cpu.cpl() <= cpu.iopl() {
        writable |= flags::IF;
    }
    if cpu.cpl() == 0 {
        writable |= flags::IOPL | flags::VIF | flags::VIP;
    }
    if size == 2 {
        writable &= 0xFFFF;
    }
    if let Some(stack) = &outer {
        descriptor::set_accessed(cpu, bus, &stack.fetched)?;
    }
    segment::commit_code_target(cpu, bus, &target, eip, false)?;
    let was_enabled = cpu.interrupts_enabled();
    let eflags = (cpu.eflags & !writable) | (new_flags & writable);
    cpu.eflags = (eflags & !EFLAGS_FIXED_ZERO) | flags::RESERVED1;
    match &outer {
        Some(stack) => {
            load_outer_stack(cpu, stack);
            null_inaccessible_data_segments(cpu);
            cpu.stats.privilege_changes += 1;
        }
        None => cpu.set_stack_pointer(cpu.stack_pointer_plus(3 * size as i32)),
    }
    Ok(if !was_enabled && cpu.interrupts_enabled() { Effect::InterruptsEnabled } else { Effect::Continue })
}

/// The access rights `sysenter` and `sysexit` load without reading any
/// descriptor: present, S, 32-bit, 4 KiB granularity, accessed; code type
/// 11 (execute/read), data type 3 (read/write), at DPL 0 or 3.
const FLAT_CODE0: u16 = 0xC09B;
const FLAT_DATA0: u16 = 0xC093;
const FLAT_CODE3: u16 = 0xC0FB;
const FLAT_DATA3: u16 = 0xC0F3;

/// `sysenter` (SDM Vol. 2B SYSENTER): a fast call to CPL 0 with no stack
/// frame at all. IA32_SYSENTER_CS[15:2] = 0 raises #GP(0) (CR0.PE is
/// always set in our model). Otherwise CS becomes IA32_SYSENTER_CS with
/// RPL cleared and SS that selector + 8, both flat with fixed access
/// rights (the descriptors are not read: the operating system promises
/// that the GDT matches); ESP and EIP come from IA32_SYSENTER_ESP and
/// IA32_SYSENTER_EIP; VM, IF and RF are cleared. It is allowed at any CPL,
/// including 0. The return address is the program's business: by
/// convention it passes it in EDX and its stack in ECX for `sysexit`.
pub(crate) fn sysenter(cpu: &mut Cpu) -> Result<Effect, Exception> {
    let cs = (cpu.msr.sysenter_cs as u16) & 0xFFFC;
    if cs == 0 {
        return Err(Exception::GeneralProtection(0));
    }
    let changes = cpu.cpl() != 0;
    cpu.eflags &= !(flags::VM | flags::IF | flags::RF);
    cpu.set_segment(SegReg::Cs, Segment::flat(cs, FLAT_CODE0));
    cpu.set_segment(SegReg::Ss, Segment::flat(cs.wrapping_add(8), FLAT_DATA0));
    cpu.gpr[gpr::ESP] = cpu.msr.sysenter_esp;
    cpu.eip = cpu.msr.sysenter_eip;
    if changes {
        cpu.stats.privilege_changes += 1;
    }
    Ok(Effect::Continue)
}

/// `sysexit` (SDM Vol. 2B SYSEXIT): the fast return to CPL 3. It raises
/// #GP(0) when IA32_SYSENTER_CS[15:2] = 0 or CPL is not 0. CS becomes
/// (IA32_SYSENTER_CS + 16) | 3 and SS that + 8, flat ring-3 segments with
/// fixed access rights; EIP = EDX and ESP = ECX. EFLAGS is not changed, so
/// a kernel that entered through `sysenter` (which cleared IF) returns
/// with interrupts as they are now; Linux executes `sti` just before
/// `sysexit`, whose one-instruction interrupt shadow covers it. DS, ES, FS
/// and GS are not touched: the operating system must not leave ring-0
/// selectors in them.
pub(crate) fn sysexit(cpu: &mut Cpu) -> Result<Effect, Exception> {
    let base = cpu.msr.sysenter_cs as u16;
    if base & 0xFFFC == 0 || cpu.cpl() != 0 {
        return Err(Exception::GeneralProtection(0));
    }
    let cs = base.wrapping_add(16) | 3;
    cpu.set_segment(SegReg::Cs, Segment::flat(cs, FLAT_CODE3));
    cpu.set_segment(SegReg::Ss, Segment::flat(cs.wrapping_add(8), FLAT_DATA3));
    cpu.gpr[gpr::ESP] = cpu.gpr[gpr::ECX];
    cpu.eip = cpu.gpr[gpr::EDX];
    cpu.stats.privilege_changes += 1;
    Ok(Effect::Continue)
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
