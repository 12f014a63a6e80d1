//! The executor for callouts: the reference semantics of every privileged
//! and sensitive instruction that the translator does not run natively.
//!
//! The native layer copies the guest's GPRs, EIP and arithmetic flags into
//! [`Cpu`] and calls [`execute`] with the decoded instruction; `cpu.eip` is
//! the instruction's address and `insn.next_ip()` the next one's. This
//! module owns what each of those instructions means at the virtual CPL:
//! the privilege checks (Intel SDM Vol. 3A §5.9 privileged instructions,
//! §6.x for IOPL-sensitive ones), the effect on the virtual state, and the
//! exact exception when the guest is not allowed. Segment loads, descriptor
//! parsing, IDT delivery, far transfers (`transfer.rs`) and the TSS
//! (`tss.rs`) live in their own modules; ordinary data
//! instructions (a `mov` through GS, say) are handed to
//! `crate::emulate::emulate`. Nothing here knows about the host.
//!
//! The contract: on `Ok`, the instruction has fully committed and
//! `cpu.eip` holds the next EIP or the transfer target. On
//! `Err(ExecError::Exception(e))`, the state is as it was before the
//! instruction (a precise fault), except for `rep ins`/`rep outs`, whose
//! registers record the iterations already done as the SDM allows; the
//! caller hands `e` to `interrupt::deliver_exception` with `cpu.eip` still
//! at the instruction. `Err(ExecError::Unsupported { .. })` comes only from
//! the data emulator and means bt86 itself lacks something: stop the VM
//! with that message rather than invent a guest exception.

use std::collections::BTreeSet;
use std::sync::Mutex;

use bt86_machine::{Bus, IoSize};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use crate::cpuid;
use crate::descriptor::{self, Descriptor, SegmentKind};
use crate::exception::{Exception, Vector};
use crate::interrupt::{self, Source};
use crate::memory::Access;
use crate::operand::{gpr_value, memory_operand, read_operand, set_gpr, write_operand};
use crate::segment;
use crate::state::{cr, flags, gpr, Cpu, LinearAddr, SegReg, Selector};
use crate::transfer;
use crate::tss;

/// What the run loop must do after a callout, beyond resuming at
/// `cpu.eip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Resume at `cpu.eip`.
    Continue,
    /// `hlt`: sleep until the next interrupt, then resume at `cpu.eip`.
    Halt,
    /// CR0.TS/EM/MP/PE or a CR4 bit changed in a way that leaves the
    /// linear-to-physical mapping alone: code translated under the old
    /// settings may be wrong now (FPU instructions must fault on TS/EM).
    TranslationModeChanged,
    /// The linear-to-physical mapping may have changed everywhere: CR3 was
    /// written with paging on (even with the same value: that is how a
    /// guest flushes its TLB, and our model has no global pages to keep),
    /// CR0.PG was turned on or off, or CR0.WP or CR4.PSE changed while
    /// paging is on. Every shadow mapping is stale, and so is anything
    /// cached about linear addresses. It implies
    /// [`Effect::TranslationModeChanged`] when a CR0 write changed other
    /// bits too (one effect is returned per instruction).
    AddressSpaceChanged,
    /// `invlpg` with paging on: the translation of the page holding this
    /// linear address is stale, for 4 KiB and 4 MiB pages alike (SDM Vol.
    /// 3A §4.10.4.1). Nothing else changed.
    InvalidatePage(LinearAddr),
    /// EFLAGS.IF went from 0 to 1 (`sti`, `popf`, `iret`): check for a
    /// pending interrupt. After `sti` the processor waits one more
    /// instruction before taking it (SDM Vol. 2B STI).
    InterruptsEnabled,
}

/// How many iterations of `rep ins`/`rep outs` one callout performs before
/// returning with EIP still at the instruction, so that interrupts are not
/// held off by a long string operation. The SDM allows exactly this: a
/// repeated string instruction may be interrupted between iterations with
/// its registers updated (Vol. 2B REP).
pub const REP_CHUNK: u32 = 4096;

/// The MSRs bt86 implements (SDM Vol. 4, Table 2-2).
pub mod msr {
    pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
}

/// The CR0 bits this CPU implements; writes to the others are ignored, as
/// 32-bit processors ignore reserved CR0 bits (SDM Vol. 3A §2.5).
const CR0_DEFINED: u32 = cr::CR0_PE
    | cr::CR0_MP
    | cr::CR0_EM
    | cr::CR0_TS
    | cr::CR0_ET
    | cr::CR0_NE
    | cr::CR0_WP
    | cr::CR0_AM
    | cr::CR0_NW
    | cr::CR0_CD
    | cr::CR0_PG;

/// CR0 bits whose change alters how code must be translated or mapped.
const CR0_TRANSLATION: u32 = cr::CR0_PE | cr::CR0_MP | cr::CR0_EM | cr::CR0_TS | cr::CR0_WP | cr::CR0_PG;

/// Whether moving CR0 from `old` to `new` and CR4 from `old4` to `new4`
/// changes the linear-to-physical mapping: PG itself, or a bit the page
/// walker reads (CR0.WP, CR4.PSE, CR4.PGE) while paging is on (SDM Vol. 3A
/// §4.10.4.1 lists the writes that invalidate TLB entries).
fn changes_address_space(old: u32, new: u32, old4: u32, new4: u32) -> bool {
    let paging_after = new & cr::CR0_PG != 0;
    (old ^ new) & cr::CR0_PG != 0
        || (paging_after && (old ^ new) & cr::CR0_WP != 0)
        || (paging_after && (old4 ^ new4) & (cr::CR4_PSE | cr::CR4_PGE) != 0)
}

/// The CR4 bits of our CPU model: exactly those whose feature CPUID
/// reports (TSC -> TSD, DE is architectural, PSE, FXSR -> OSFXSR, SSE ->
/// OSXMMEXCPT) plus PCE. Setting any other bit raises #GP(0) (SDM Vol. 2B
/// MOV to CR: "an attempt is made to write a 1 to any reserved bit in
/// CR4"). PGE is among them: the model has no global pages, so every CR3
/// write flushes every translation (see `paging.rs`).
const CR4_SUPPORTED: u32 =
    cr::CR4_TSD | cr::CR4_DE | cr::CR4_PSE | cr::CR4_PCE | cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;

/// EFLAGS bits that can never be set: 3, 5, 15 and 22-31 read as zero;
/// bit 1 reads as one (SDM Vol. 1 §3.4.3).
pub(crate) const EFLAGS_FIXED_ZERO: u32 = (1 << 3) | (1 << 5) | (1 << 15) | 0xFFC0_0000;

fn gp0() -> Exception {
    Exception::GeneralProtection(0)
}

/// Privileged instructions may run only at CPL 0, otherwise #GP(0) (SDM
/// Vol. 3A §5.9).
fn require_cpl0(cpu: &Cpu) -> Result<(), Exception> {
    if cpu.cpl() == 0 {
        Ok(())
    } else {
        Err(gp0())
    }
}

/// The address of the instruction after `insn`.
pub(crate) fn next_eip(insn: &Instruction) -> u32 {
    insn.next_ip() as u32
}

/// Warns once per MSR number, so a guest polling an unknown MSR does not
/// flood the log.
fn warn_msr_once(what: &str, index: u32) {
    static WARNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    let first = WARNED.lock().map(|mut set| set.insert(index)).unwrap_or(true);
    if first {
        log::warn!("unsupported: {what} of MSR {index:#x}; the guest gets #GP(0)");
    }
}

/// Why [`execute`] did not complete an instruction: a guest exception to
/// deliver, or an ordinary instruction the data emulator does not cover.
/// The same type [`crate::emulate::emulate`] returns, so the run loop
/// handles both callout paths alike.
pub type ExecError = crate::emulate::EmulateError;

/// Executes one privileged or sensitive instruction on the virtual CPU.
///
/// `host_tsc` is the host's time-stamp counter at the callout; the guest's
/// TSC is that plus `cpu.msr.tsc_offset`. See the module documentation for
/// the contract on `Ok` and `Err`. Instructions that are not system
/// instructions (a `mov` through GS, say) go to the data emulator.
pub fn execute(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction, host_tsc: u64) -> Result<Effect, ExecError> {
    match execute_system(cpu, bus, insn, host_tsc)? {
        Some(effect) => Ok(effect),
        None => {
            crate::emulate::emulate(cpu, bus, insn)?;
            Ok(Effect::Continue)
        }
    }
}

/// The system instructions; `Ok(None)` for anything else.
fn execute_system(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction, host_tsc: u64) -> Result<Option<Effect>, Exception> {
    use Mnemonic as M;
    let effect = match insn.mnemonic() {
        M::Cli => cli(cpu)?,
        M::Sti => sti(cpu)?,
        M::Pushf | M::Pushfd => pushf(cpu, bus, insn)?,
        M::Popf | M::Popfd => popf(cpu, bus, insn)?,
        M::Hlt => {
            require_cpl0(cpu)?;
            cpu.halted = true;
            cpu.eip = next_eip(insn);
            return Ok(Some(Effect::Halt));
        }
        M::Lgdt | M::Lidt => load_descriptor_table(cpu, bus, insn)?,
        M::Sgdt | M::Sidt => store_descriptor_table(cpu, bus, insn)?,
        M::Lldt => {
            require_cpl0(cpu)?;
            let sel = Selector(read_operand(cpu, bus, insn, 0, 2)? as u16);
            segment::load_ldtr(cpu, bus, sel)?;
            Effect::Continue
        }
        M::Ltr => {
            require_cpl0(cpu)?;
            let sel = Selector(read_operand(cpu, bus, insn, 0, 2)? as u16);
            segment::load_tr(cpu, bus, sel)?;
            Effect::Continue
        }
        // sldt, str and smsw are not privileged (the UMIP bit that makes
        // them so is not in our model). A 32-bit register destination
        // receives the zero-extended selector on P6-family processors (SDM
        // Vol. 2B SLDT/STR); smsw r32 receives all of CR0, as on those
        // processors and in QEMU.
        M::Sldt => {
            let v = u32::from(cpu.ldtr.selector.0);
            write_operand(cpu, bus, insn, 0, 2, v)?;
            Effect::Continue
        }
        M::Str => {
            let v = u32::from(cpu.tr.selector.0);
            write_operand(cpu, bus, insn, 0, 2, v)?;
            Effect::Continue
        }
        M::Smsw => {
            let v = cpu.cr0;
            let v = if insn.op0_kind() == OpKind::Register && insn.op0_register().is_gpr32() { v } else { v & 0xFFFF };
            write_operand(cpu, bus, insn, 0, 2, v)?;
            Effect::Continue
        }
        M::Lmsw => lmsw(cpu, bus, insn)?,
        M::Clts => {
            require_cpl0(cpu)?;
            let was = cpu.cr0;
            cpu.cr0 &= !cr::CR0_TS;
            if was != cpu.cr0 { Effect::TranslationModeChanged } else { Effect::Continue }
        }
        M::Mov => match mov(cpu, bus, insn)? {
            Some(effect) => effect,
            None => return Ok(None),
        },
        M::Invd | M::Wbinvd => {
            // Caches are not modelled: the bus is always coherent.
            require_cpl0(cpu)?;
            Effect::Continue
        }
        M::Invlpg => invlpg(cpu, insn)?,
        M::Rdmsr => rdmsr(cpu, host_tsc)?,
        M::Wrmsr => wrmsr(cpu, host_tsc)?,
        M::Rdtsc => {
            // SDM Vol. 2B RDTSC: CR4.TSD makes it privileged.
            if cpu.cr4 & cr::CR4_TSD != 0 && cpu.cpl() > 0 {
                return Err(gp0());
            }
            let tsc = host_tsc.wrapping_add(cpu.msr.tsc_offset);
            cpu.gpr[gpr::EAX] = tsc as u32;
            cpu.gpr[gpr::EDX] = (tsc >> 32) as u32;
            Effect::Continue
        }
        // Our model has no performance counters, so every ECX is invalid
        // (SDM Vol. 2B RDPMC: #GP(0) for an invalid counter).
        M::Rdpmc => return Err(gp0()),
        M::Cpuid => {
            let r = cpuid::cpuid(cpu.gpr[gpr::EAX], cpu.gpr[gpr::ECX]);
            cpu.gpr[gpr::EAX] = r.eax;
            cpu.gpr[gpr::EBX] = r.ebx;
            cpu.gpr[gpr::ECX] = r.ecx;
            cpu.gpr[gpr::EDX] = r.edx;
            Effect::Continue
        }
        M::In => port_in(cpu, bus, insn)?,
        M::Out => port_out(cpu, bus, insn)?,
        M::Insb | M::Insw | M::Insd => return string_in(cpu, bus, insn).map(Some),
        M::Outsb | M::Outsw | M::Outsd => return string_out(cpu, bus, insn).map(Some),
        M::Int | M::Int3 | M::Into | M::Int1 => return software_interrupt(cpu, bus, insn).map(Some),
        M::Iret | M::Iretd => return transfer::iret(cpu, bus, insn).map(Some),
        M::Jmp | M::Call if is_far(insn) => return transfer::far_jmp_or_call(cpu, bus, insn).map(Some),
        M::Retf => return transfer::far_ret(cpu, bus, insn).map(Some),
        M::Push if is_sreg_operand(insn, 0) => push_sreg(cpu, bus, insn)?,
        M::Pop if is_sreg_operand(insn, 0) => pop_sreg(cpu, bus, insn)?,
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => load_far_pointer(cpu, bus, insn)?,
        M::Lar | M::Lsl => lar_lsl(cpu, bus, insn)?,
        M::Verr | M::Verw => verr_verw(cpu, bus, insn)?,
        M::Sysenter => return transfer::sysenter(cpu).map(Some),
        M::Sysexit => return transfer::sysexit(cpu).map(Some),
        // Our CPU model is a 32-bit Intel-like processor: SYSCALL and
        // SYSRET are #UD outside 64-bit mode (SDM Vol. 2B SYSCALL).
        M::Syscall | M::Sysret => return Err(Exception::InvalidOpcode),
        _ => return Ok(None),
    };
    cpu.eip = next_eip(insn);
    Ok(Some(effect))
}

fn is_far(insn: &Instruction) -> bool {
    matches!(
        insn.code(),
        Code::Jmp_ptr1616 | Code::Jmp_ptr1632 | Code::Jmp_m1616 | Code::Jmp_m1632
            | Code::Call_ptr1616 | Code::Call_ptr1632 | Code::Call_m1616 | Code::Call_m1632
    )
}

fn is_sreg_operand(insn: &Instruction, op: u32) -> bool {
    insn.op_kind(op) == OpKind::Register && SegReg::from_iced(insn.op_register(op)).is_some()
}

/// `cli` and `sti` are IOPL-sensitive: allowed when CPL <= IOPL, #GP(0)
/// otherwise (SDM Vol. 2A CLI, Vol. 2B STI; no VME/PVI in our model).
fn cli(cpu: &mut Cpu) -> Result<Effect, Exception> {
    if cpu.cpl() > cpu.iopl() {
        return Err(gp0());
    }
    cpu.eflags &= !flags::IF;
    Ok(Effect::Continue)
}

fn sti(cpu: &mut Cpu) -> Result<Effect, Exception> {
    if cpu.cpl() > cpu.iopl() {
        return Err(gp0());
    }
    let was_enabled = cpu.interrupts_enabled();
    cpu.eflags |= flags::IF;
    Ok(if was_enabled { Effect::Continue } else { Effect::InterruptsEnabled })
}

/// `pushf`/`pushfd`: the image has VM and RF cleared (SDM Vol. 2B PUSHF).
fn pushf(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let image = cpu.eflags & !(flags::VM | flags::RF);
    if insn.code() == Code::Pushfw {
        cpu.push(bus, image & 0xFFFF, 2)?;
    } else {
        cpu.push(bus, image, 4)?;
    }
    Ok(Effect::Continue)
}

/// The EFLAGS after `popf` loads `value` (SDM Vol. 2B POPF, protected
/// mode): the status flags, TF, DF, NT, AC and ID always load; IF only
/// when CPL <= IOPL and IOPL only at CPL 0, silently keeping the old value
/// otherwise; VM, VIP and VIF never change and RF is cleared. A 16-bit
/// `popf` changes only the low 16 bits.
pub fn popf_result(cpu: &Cpu, value: u32, is_16bit: bool) -> u32 {
    let mut writable = flags::STATUS | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if cpu.cpl() <= cpu.iopl() {
        writable |= flags::IF;
    }
    if cpu.cpl() == 0 {
        writable |= flags::IOPL;
    }
    if is_16bit {
        writable &= 0xFFFF;
    }
    let new = (cpu.eflags & !writable) | (value & writable);
    (new & !flags::RF & !EFLAGS_FIXED_ZERO) | flags::RESERVED1
}

/// `popf`/`popfd`, counting in [`Cpu::stats`] every one above CPL 0 and
/// every one whose request for IF or IOPL was silently dropped: the
/// instruction trap-and-emulate cannot see (see [`crate::state::ExecStats`]).
fn popf(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let is_16bit = insn.code() == Code::Popfw;
    let value = cpu.pop(bus, if is_16bit { 2 } else { 4 })?;
    let was_enabled = cpu.interrupts_enabled();
    cpu.eflags = popf_result(cpu, value, is_16bit);
    if cpu.cpl() > 0 {
        let stats = &mut cpu.stats;
        stats.popf_above_cpl0 += 1;
        if (value ^ cpu.eflags) & flags::IF != 0 {
            stats.popf_if_ignored += 1;
        }
        if (value ^ cpu.eflags) & flags::IOPL != 0 {
            stats.popf_iopl_ignored += 1;
        }
    }
    Ok(if !was_enabled && cpu.interrupts_enabled() { Effect::InterruptsEnabled } else { Effect::Continue })
}

/// `lgdt`/`lidt m16&32`: a 16-bit limit then a 32-bit base; with a 16-bit
/// operand size only 24 bits of the base are used (SDM Vol. 2A LGDT).
fn load_descriptor_table(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    require_cpl0(cpu)?;
    let (seg, offset) = memory_operand(cpu, insn, 0)?;
    let limit = cpu.read_u16(bus, seg, offset)?;
    let mut base = cpu.read_u32(bus, seg, offset.wrapping_add(2))?;
    if matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
        base &= 0x00FF_FFFF;
    }
    let table = crate::state::DescriptorTable { base, limit };
    if insn.mnemonic() == Mnemonic::Lgdt {
        cpu.gdtr = table;
    } else {
        cpu.idtr = table;
    }
    Ok(Effect::Continue)
}

/// `sgdt`/`sidt`: store the limit and the full 32-bit base, whatever the
/// operand size (SDM Vol. 2B SGDT). Not privileged without UMIP.
fn store_descriptor_table(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let table = if insn.mnemonic() == Mnemonic::Sgdt { cpu.gdtr } else { cpu.idtr };
    let (seg, offset) = memory_operand(cpu, insn, 0)?;
    let mut image = [0u8; 6];
    image[..2].copy_from_slice(&table.limit.to_le_bytes());
    image[2..].copy_from_slice(&table.base.to_le_bytes());
    cpu.write_virt(bus, seg, offset, &image)?;
    Ok(Effect::Continue)
}

/// `lmsw`: loads CR0 bits 3:0 (PE, MP, EM, TS); it can set PE but never
/// clear it (SDM Vol. 2A LMSW).
fn lmsw(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    require_cpl0(cpu)?;
    let value = read_operand(cpu, bus, insn, 0, 2)?;
    let old = cpu.cr0;
    let low = (value & 0xF) | (old & cr::CR0_PE);
    cpu.cr0 = (old & !0xF) | low;
    Ok(if (old ^ cpu.cr0) & CR0_TRANSLATION != 0 { Effect::TranslationModeChanged } else { Effect::Continue })
}

/// `invlpg m`: privileged; the operand is an address, not data, so it is
/// never accessed and no segment limit or paging check applies; only its
/// linear address matters (SDM Vol. 2A INVLPG: the only protected-mode
/// faults are #GP(0) at CPL > 0 and #UD for a register operand). With
/// paging off there is no translation to drop.
fn invlpg(cpu: &Cpu, insn: &Instruction) -> Result<Effect, Exception> {
    require_cpl0(cpu)?;
    if insn.op0_kind() != OpKind::Memory {
        return Err(Exception::InvalidOpcode);
    }
    let (seg, offset) = memory_operand(cpu, insn, 0)?;
    let linear = LinearAddr(cpu.segment(seg).base.wrapping_add(offset));
    Ok(if cpu.paging_enabled() { Effect::InvalidatePage(linear) } else { Effect::Continue })
}

/// `mov` to or from a control, debug or segment register; `Ok(None)` for
/// any other `mov` (a GS-relative one, say), which is a data move for the
/// emulator.
fn mov(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Option<Effect>, Exception> {
    let reg0 = if insn.op0_kind() == OpKind::Register { insn.op0_register() } else { Register::None };
    let reg1 = if insn.op_count() > 1 && insn.op1_kind() == OpKind::Register { insn.op1_register() } else { Register::None };
    if reg0.is_cr() {
        require_cpl0(cpu)?;
        return write_cr(cpu, reg0.number(), cpu.gpr[reg1.number()]).map(Some);
    }
    if reg1.is_cr() {
        require_cpl0(cpu)?;
        let value = match reg1.number() {
            0 => cpu.cr0,
            2 => cpu.cr2,
            3 => cpu.cr3,
            4 => cpu.cr4,
            _ => return Err(Exception::InvalidOpcode),
        };
        cpu.gpr[reg0.number()] = value;
        return Ok(Some(Effect::Continue));
    }
    if reg0.is_dr() || reg1.is_dr() {
        require_cpl0(cpu)?;
        // DR4 and DR5 alias DR6 and DR7 unless CR4.DE makes them #UD (SDM
        // Vol. 3A §17.2.2). DR7.GD (general detect) is not modelled.
        let dr = if reg0.is_dr() { reg0.number() } else { reg1.number() };
        let dr = match dr {
            4 | 5 if cpu.cr4 & cr::CR4_DE != 0 => return Err(Exception::InvalidOpcode),
            4 | 5 => dr + 2,
            n => n,
        };
        if reg0.is_dr() {
            let value = cpu.gpr[reg1.number()];
            cpu.dr[dr] = match dr {
                // Reserved DR6 bits read as 1 (bits 4-11, 16-31) or 0
                // (bit 12, 15 on later processors); DR7 bit 10 reads as 1
                // (SDM Vol. 3A §17.2.3-17.2.4).
                6 => (value & 0x0000_E00F) | 0xFFFF_0FF0,
                7 => (value & 0xFFFF_2BFF) | 0x0000_0400,
                _ => value,
            };
        } else {
            cpu.gpr[reg0.number()] = cpu.dr[dr];
        }
        return Ok(Some(Effect::Continue));
    }
    if let Some(sreg) = SegReg::from_iced(reg0) {
        // mov sreg, r/m16 (SDM Vol. 2B MOV). Loading SS also holds off
        // interrupts for one instruction; the run loop sees that through
        // the following `mov esp` being in the same block.
        let value = read_operand(cpu, bus, insn, 1, 2)?;
        segment::load_segment(cpu, bus, sreg, Selector(value as u16))?;
        return Ok(Some(Effect::Continue));
    }
    if let Some(sreg) = SegReg::from_iced(reg1) {
        // mov r/m16, sreg: a 32-bit register destination receives the
        // zero-extended selector on P6-family and later processors.
        let value = u32::from(cpu.segment(sreg).selector.0);
        write_operand(cpu, bus, insn, 0, 2, value)?;
        return Ok(Some(Effect::Continue));
    }
    // Any other `mov` is a data move for the emulator.
    Ok(None)
}

/// `mov crN, r32` (SDM Vol. 2B MOV—Move to/from Control Registers, Vol. 3A
/// §2.5).
fn write_cr(cpu: &mut Cpu, n: usize, value: u32) -> Result<Effect, Exception> {
    match n {
        0 => {
            // ET is hardwired to 1 on P6-family processors.
            let new = (value & CR0_DEFINED) | cr::CR0_ET;
            if new & cr::CR0_PG != 0 && new & cr::CR0_PE == 0 {
                return Err(gp0());
            }
            if new & cr::CR0_NW != 0 && new & cr::CR0_CD == 0 {
                return Err(gp0());
            }
            if new & cr::CR0_PE == 0 {
                log::warn!("unsupported: clearing CR0.PE (real mode); the guest gets #GP(0)");
                return Err(gp0());
            }
            let old = cpu.cr0;
            cpu.cr0 = new;
            Ok(if changes_address_space(old, new, cpu.cr4, cpu.cr4) {
                Effect::AddressSpaceChanged
            } else if (old ^ new) & CR0_TRANSLATION != 0 {
                Effect::TranslationModeChanged
            } else {
                Effect::Continue
            })
        }
        2 => {
            cpu.cr2 = value;
            Ok(Effect::Continue)
        }
        3 => {
            // Without PAE, CR3 holds the page-directory base, PWT and PCD;
            // the other low bits are ignored (SDM Vol. 3A §4.3).
            cpu.cr3 = value & 0xFFFF_F018;
            Ok(if cpu.cr0 & cr::CR0_PG != 0 { Effect::AddressSpaceChanged } else { Effect::Continue })
        }
        4 => {
            if value & !CR4_SUPPORTED != 0 {
                return Err(gp0());
            }
            let old = cpu.cr4;
            cpu.cr4 = value;
            Ok(if changes_address_space(cpu.cr0, cpu.cr0, old, value) {
                Effect::AddressSpaceChanged
            } else if old != value {
                Effect::TranslationModeChanged
            } else {
                Effect::Continue
            })
        }
        _ => Err(Exception::InvalidOpcode),
    }
}

fn rdmsr(cpu: &mut Cpu, host_tsc: u64) -> Result<Effect, Exception> {
    require_cpl0(cpu)?;
    let index = cpu.gpr[gpr::ECX];
    let value: u64 = match index {
        msr::IA32_TIME_STAMP_COUNTER => host_tsc.wrapping_add(cpu.msr.tsc_offset),
        msr::IA32_SYSENTER_CS => u64::from(cpu.msr.sysenter_cs),
        msr::IA32_SYSENTER_ESP => u64::from(cpu.msr.sysenter_esp),
        msr::IA32_SYSENTER_EIP => u64::from(cpu.msr.sysenter_eip),
        _ => {
            warn_msr_once("rdmsr", index);
            return Err(gp0());
        }
    };
    cpu.gpr[gpr::EAX] = value as u32;
    cpu.gpr[gpr::EDX] = (value >> 32) as u32;
    Ok(Effect::Continue)
}

fn wrmsr(cpu: &mut Cpu, host_tsc: u64) -> Result<Effect, Exception> {
    require_cpl0(cpu)?;
    let index = cpu.gpr[gpr::ECX];
    let value = (u64::from(cpu.gpr[gpr::EDX]) << 32) | u64::from(cpu.gpr[gpr::EAX]);
    match index {
        // Writing the TSC sets the offset so that reads continue from the
        // written value (SDM Vol. 3B §18.17).
        msr::IA32_TIME_STAMP_COUNTER => cpu.msr.tsc_offset = value.wrapping_sub(host_tsc),
        // The SYSENTER MSRs are 32 bits wide on a 32-bit processor; the
        // selector MSR keeps only 16.
        msr::IA32_SYSENTER_CS => cpu.msr.sysenter_cs = value as u32 & 0xFFFF,
        msr::IA32_SYSENTER_ESP => cpu.msr.sysenter_esp = value as u32,
        msr::IA32_SYSENTER_EIP => cpu.msr.sysenter_eip = value as u32,
        _ => {
            warn_msr_once("wrmsr", index);
            return Err(gp0());
        }
    }
    Ok(Effect::Continue)
}

/// The I/O permission check (SDM Vol. 1 §19.5): `in`, `out`, `ins` and
/// `outs` are allowed when CPL <= IOPL; otherwise only when the TSS I/O
/// permission bitmap clears the bit of every port the access touches
/// (`tss::io_permitted`), and #GP(0) if not. The check happens before the
/// port is touched, so a denied access has no side effect on the device.
fn check_io_permission(cpu: &Cpu, bus: &mut dyn Bus, port: u16, size: IoSize) -> Result<(), Exception> {
    if cpu.cpl() <= cpu.iopl() || tss::io_permitted(cpu, bus, port, size)? {
        return Ok(());
    }
    Err(gp0())
}

fn io_size(reg_or_bytes: u32) -> IoSize {
    match reg_or_bytes {
        1 => IoSize::Byte,
        2 => IoSize::Word,
        _ => IoSize::Dword,
    }
}

/// The size of an accumulator operand: AL, AX or EAX.
fn accumulator_size(reg: Register) -> IoSize {
    if reg.is_gpr8() {
        IoSize::Byte
    } else if reg.is_gpr16() {
        IoSize::Word
    } else {
        IoSize::Dword
    }
}

/// The port of an `in`/`out`: an imm8 or DX.
fn port_operand(cpu: &Cpu, insn: &Instruction, op: u32) -> u16 {
    match insn.op_kind(op) {
        OpKind::Immediate8 => u16::from(insn.immediate8()),
        _ => cpu.gpr[gpr::EDX] as u16,
    }
}

fn port_in(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let dest = insn.op0_register();
    let size = accumulator_size(dest);
    let port = port_operand(cpu, insn, 1);
    check_io_permission(cpu, bus, port, size)?;
    let value = bus.io_in(port, size);
    set_gpr(cpu, dest, value);
    Ok(Effect::Continue)
}

fn port_out(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let src = insn.op1_register();
    let size = accumulator_size(src);
    let port = port_operand(cpu, insn, 0);
    check_io_permission(cpu, bus, port, size)?;
    let value = gpr_value(cpu, src).unwrap_or(0);
    bus.io_out(port, size, value);
    Ok(Effect::Continue)
}

/// The index registers and counter of a string instruction, honouring its
/// address size: ESI/EDI/ECX, or SI/DI/CX under a 0x67 prefix.
struct StringRegs {
    wide: bool,
}

impl StringRegs {
    fn of(insn: &Instruction) -> StringRegs {
        let wide = !matches!(insn.op0_kind(), OpKind::MemoryESDI | OpKind::MemorySegSI)
            && !matches!(insn.op1_kind(), OpKind::MemoryESDI | OpKind::MemorySegSI);
        StringRegs { wide }
    }
    fn get(&self, cpu: &Cpu, r: usize) -> u32 {
        if self.wide { cpu.gpr[r] } else { cpu.gpr[r] & 0xFFFF }
    }
    fn set(&self, cpu: &mut Cpu, r: usize, v: u32) {
        if self.wide {
            cpu.gpr[r] = v;
        } else {
            cpu.gpr[r] = (cpu.gpr[r] & 0xFFFF_0000) | (v & 0xFFFF);
        }
    }
    /// Moves an index register by one element in the direction DF says.
    fn step(&self, cpu: &mut Cpu, r: usize, size: u32) {
        let delta = if cpu.eflags & flags::DF != 0 { size.wrapping_neg() } else { size };
        let v = self.get(cpu, r).wrapping_add(delta);
        self.set(cpu, r, v);
    }
}

fn string_element_size(insn: &Instruction) -> u32 {
    match insn.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    }
}

/// `ins` with an optional `rep`: port DX to ES:(E)DI; ES cannot be
/// overridden (SDM Vol. 2A INS). Each iteration commits on its own, so a
/// fault part-way leaves EDI and ECX describing the iterations done and
/// EIP at the instruction, ready to restart.
fn string_in(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    string_io(cpu, bus, insn, true)
}

/// `outs` with an optional `rep`: DS:(E)SI, or any segment override, to
/// port DX (SDM Vol. 2B OUTS).
fn string_out(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    string_io(cpu, bus, insn, false)
}

fn string_io(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction, is_in: bool) -> Result<Effect, Exception> {
    let size = string_element_size(insn);
    let io = io_size(size);
    let port = cpu.gpr[gpr::EDX] as u16;
    let regs = StringRegs::of(insn);
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    check_io_permission(cpu, bus, port, io)?;
    let mut done = 0;
    loop {
        if rep && regs.get(cpu, gpr::ECX) == 0 {
            break;
        }
        if rep && done == REP_CHUNK {
            // Come back for the rest: EIP stays at this instruction.
            return Ok(Effect::Continue);
        }
        if is_in {
            let offset = regs.get(cpu, gpr::EDI);
            // Check the destination before reading the port: a read can
            // have side effects that a restarted instruction would repeat.
            let addr = cpu.linear_address(SegReg::Es, offset, size, Access::Write)?;
            let value = bus.io_in(port, io);
            cpu.write_linear(bus, addr, &value.to_le_bytes()[..size as usize])?;
            regs.step(cpu, gpr::EDI, size);
        } else {
            let seg = SegReg::from_iced(insn.memory_segment()).unwrap_or(SegReg::Ds);
            let offset = regs.get(cpu, gpr::ESI);
            let mut buf = [0u8; 4];
            cpu.read_virt(bus, seg, offset, &mut buf[..size as usize])?;
            bus.io_out(port, io, u32::from_le_bytes(buf));
            regs.step(cpu, gpr::ESI, size);
        }
        if !rep {
            break;
        }
        let count = regs.get(cpu, gpr::ECX).wrapping_sub(1);
        regs.set(cpu, gpr::ECX, count);
        done += 1;
    }
    cpu.eip = next_eip(insn);
    Ok(Effect::Continue)
}

/// `int n`, `int3`, `into` and `int1`. These are traps: the handler
/// returns to the next instruction. A fault during delivery is returned
/// with EIP still at the `int`, which is where the SDM points it.
fn software_interrupt(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let next = next_eip(insn);
    let (vector, source) = match insn.mnemonic() {
        Mnemonic::Int => (insn.immediate8(), Source::Software { next_eip: next, is_int3_or_into: false }),
        Mnemonic::Int3 => (3, Source::Software { next_eip: next, is_int3_or_into: true }),
        Mnemonic::Into => {
            if cpu.eflags & flags::OF == 0 {
                cpu.eip = next;
                return Ok(Effect::Continue);
            }
            (4, Source::Software { next_eip: next, is_int3_or_into: true })
        }
        _ => (1, Source::Icebp { next_eip: next }),
    };
    interrupt::deliver_interrupt(cpu, bus, Vector(vector), source)?;
    Ok(Effect::Continue)
}

/// `push sreg`. With a 32-bit operand size, ESP moves by 4 but only the
/// 16-bit selector is written, leaving the upper half of the slot as it
/// was, as recent Intel processors do (SDM Vol. 2B PUSH).
fn push_sreg(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let sreg = SegReg::from_iced(insn.op0_register()).ok_or(Exception::InvalidOpcode)?;
    let value = cpu.segment(sreg).selector.0;
    let size: u32 = if insn.code().op_code().operand_size() == 16 { 2 } else { 4 };
    let new_sp = cpu.stack_pointer_plus(-(size as i32));
    cpu.write_virt(bus, SegReg::Ss, new_sp, &value.to_le_bytes())?;
    cpu.set_stack_pointer(new_sp);
    Ok(Effect::Continue)
}

/// `pop sreg`: the selector is loaded with every check before ESP moves
/// (SDM Vol. 2B POP). `pop cs` does not exist.
fn pop_sreg(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let sreg = SegReg::from_iced(insn.op0_register()).ok_or(Exception::InvalidOpcode)?;
    if sreg == SegReg::Cs {
        return Err(Exception::InvalidOpcode);
    }
    let size = if insn.code().op_code().operand_size() == 16 { 2 } else { 4 };
    let value = cpu.peek_stack(bus, 0, size)?;
    // ESP moves past the slot even when SS itself is reloaded: the pop
    // uses the old SS:ESP and the increment applies to ESP afterwards.
    let new_sp = cpu.stack_pointer_plus(size as i32);
    segment::load_segment(cpu, bus, sreg, Selector(value as u16))?;
    cpu.set_stack_pointer(new_sp);
    Ok(Effect::Continue)
}

/// `lds`/`les`/`lfs`/`lgs`/`lss r, m16:16|m16:32`: the offset goes to the
/// register and the selector to the segment register, the segment load
/// (and its faults) first (SDM Vol. 2A LDS/LES/LFS/LGS/LSS).
fn load_far_pointer(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let dest = insn.op0_register();
    let size = if dest.is_gpr16() { 2 } else { 4 };
    let (seg, offset) = memory_operand(cpu, insn, 1)?;
    let value = if size == 2 { u32::from(cpu.read_u16(bus, seg, offset)?) } else { cpu.read_u32(bus, seg, offset)? };
    let sel = cpu.read_u16(bus, seg, offset.wrapping_add(size))?;
    let sreg = match insn.mnemonic() {
        Mnemonic::Lds => SegReg::Ds,
        Mnemonic::Les => SegReg::Es,
        Mnemonic::Lfs => SegReg::Fs,
        Mnemonic::Lgs => SegReg::Gs,
        _ => SegReg::Ss,
    };
    segment::load_segment(cpu, bus, sreg, Selector(sel))?;
    set_gpr(cpu, dest, value);
    Ok(Effect::Continue)
}

fn set_zf(cpu: &mut Cpu, zf: bool) {
    if zf {
        cpu.eflags |= flags::ZF;
    } else {
        cpu.eflags &= !flags::ZF;
    }
}

/// Whether a descriptor is visible to `lar`, `lsl`, `verr` or `verw` at
/// this CPL and RPL: conforming code segments always are; everything else
/// needs DPL >= CPL and DPL >= RPL.
fn visible(cpu: &Cpu, sel: Selector, desc: &Descriptor) -> bool {
    if let Descriptor::Segment(s) = desc {
        if let Some(SegmentKind::Code { conforming: true, .. }) = s.kind() {
            return true;
        }
    }
    desc.dpl() >= cpu.cpl() && desc.dpl() >= sel.rpl()
}

/// `lar` and `lsl` (SDM Vol. 2A LAR, LSL). ZF = 1 and the destination is
/// written only when the selector is not null, within its table, of a type
/// the instruction accepts, and visible at CPL/RPL; otherwise ZF = 0 and
/// the destination is unchanged. Presence is not checked.
///
/// `lar` accepts code and data segments and the system types 1, 2, 3, 4, 5,
/// 9, B, C (TSSs, LDT, call and task gates, not interrupt or trap gates);
/// `lsl` accepts code and data and only the types with a limit: 1, 2, 3, 9,
/// B.
fn lar_lsl(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let sel = Selector(read_operand(cpu, bus, insn, 1, 2)? as u16);
    let dest = insn.op0_register();
    let is_lar = insn.mnemonic() == Mnemonic::Lar;
    let fetched = if sel.is_null() { None } else { descriptor::read_descriptor(cpu, bus, sel)? };
    let result = fetched.and_then(|f| {
        let is_system = f.raw & (1 << 44) == 0;
        let ty = ((f.raw >> 40) & 0xF) as u8;
        let accepted = if !is_system {
            true
        } else if is_lar {
            matches!(ty, 0x1 | 0x2 | 0x3 | 0x4 | 0x5 | 0x9 | 0xB | 0xC)
        } else {
            matches!(ty, 0x1 | 0x2 | 0x3 | 0x9 | 0xB)
        };
        if !accepted || !visible(cpu, sel, &f.descriptor) {
            return None;
        }
        if is_lar {
            // The second dword of the descriptor masked by 00FxFF00H
            // (bits 16-19, the limit, read as zero here).
            Some(((f.raw >> 32) as u32) & 0x00F0_FF00)
        } else {
            match f.descriptor {
                Descriptor::Segment(s) => Some(s.limit),
                _ => None,
            }
        }
    });
    match result {
        Some(value) => {
            let value = if dest.is_gpr16() { value & 0xFFFF } else { value };
            set_gpr(cpu, dest, value);
            set_zf(cpu, true);
        }
        None => set_zf(cpu, false),
    }
    Ok(Effect::Continue)
}

/// `verr` and `verw` (SDM Vol. 2B VERR/VERW): ZF = 1 when the segment
/// could be read (data, or readable code) or written (writable data) at
/// this CPL and RPL. System descriptors, null selectors and selectors
/// beyond their table give ZF = 0; presence is not checked.
fn verr_verw(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<Effect, Exception> {
    let sel = Selector(read_operand(cpu, bus, insn, 0, 2)? as u16);
    let want_write = insn.mnemonic() == Mnemonic::Verw;
    let fetched = if sel.is_null() { None } else { descriptor::read_descriptor(cpu, bus, sel)? };
    let ok = fetched.is_some_and(|f| {
        let Descriptor::Segment(s) = f.descriptor else { return false };
        let kind_ok = match s.kind() {
            Some(SegmentKind::Data { writable, .. }) => !want_write || writable,
            Some(SegmentKind::Code { readable, .. }) => !want_write && readable,
            _ => false,
        };
        kind_ok && visible(cpu, sel, &f.descriptor)
    });
    set_zf(cpu, ok);
    Ok(Effect::Continue)
}

#[cfg(test)]
#[path = "exec_tests.rs"]
pub(crate) mod tests;
