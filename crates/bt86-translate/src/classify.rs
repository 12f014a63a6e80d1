//! Instruction classification: what the translator does with each guest
//! instruction, and why.
//!
//! This is the table at the heart of binary translation (brief §4.4). An
//! instruction is one of:
//! - **IDENT**: harmless at host ring 3 and means the same thing there, so
//!   its bytes are copied unchanged;
//! - a **branch**: a control transfer whose target is a guest address, so it
//!   is rewritten to stay inside the translation cache;
//! - a **callout**: privileged, or sensitive but unprivileged (Robin and
//!   Irvine's list), or needing a segment the host cannot give it natively.
//!   It ends the translation unit with an exit into the virtual CPU;
//! - a **fault**: something that must raise an exception when it is reached
//!   (an undecodable byte sequence, an FPU instruction while CR0.TS is set).
//!
//! The rule students should take away: nothing the guest executes natively
//! may reach the host kernel or read host state. `int`, `syscall`,
//! `sysenter`, far transfers, `pushf` (the real IF), `sgdt` (the host's
//! GDT) and segment-register reads (the shadow selectors) are all rewritten.

use bt86_cpu::Exception;
use iced_x86::{CpuidFeature, Instruction, Mnemonic, OpKind, Register};

/// Why an instruction becomes a callout. The short text is shown by
/// `--trace` and the debugger beside the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CalloutReason {
    /// Privileged: faults at host ring 3, must run against the virtual CPU
    /// (cli, sti, hlt, lgdt, mov cr, rdmsr, invlpg, ...).
    Privileged,
    /// Port I/O goes to the virtual devices.
    PortIo,
    /// Reads or writes EFLAGS.IF/IOPL, which are virtual (pushf, popf).
    InterruptFlag,
    /// Stores a descriptor-table register or the machine status word, which
    /// would reveal the host's values (sgdt, sidt, sldt, str, smsw).
    HostStateRead,
    /// Reads or loads a segment register, which holds a shadow selector on
    /// the host (mov sreg, push/pop sreg, lds, ...).
    SegmentRegister,
    /// Inspects a descriptor through a selector (lar, lsl, verr, verw).
    DescriptorCheck,
    /// A far transfer or interrupt return that changes CS.
    FarTransfer,
    /// A software interrupt, delivered through the guest's IDT.
    SoftwareInterrupt,
    /// A fast system call instruction that would reach the host kernel.
    SystemCall,
    /// CPUID returns the virtual CPU model, not the host's.
    Cpuid,
    /// The time-stamp counter is virtual (offset by IA32_TIME_STAMP_COUNTER).
    TimeStampCounter,
    /// A GS segment override: GS belongs to the monitor.
    GsOverride,
    /// A CS segment override on a data access: the host's CS is the flat TC
    /// code segment, not the guest's.
    CsOverride,
    /// A near branch with a 16-bit operand size, rare enough to emulate.
    OddBranch,
    /// A repeated string instruction (REP MOVS, STOS, LODS, CMPS, SCAS)
    /// in single-step mode: the processor traps after each iteration (SDM
    /// Vol. 3A §17.3.1.4), so the monitor runs one at a time.
    RepeatIteration,
}

impl CalloutReason {
    /// One line for traces and the debugger.
    pub fn describe(self) -> &'static str {
        match self {
            CalloutReason::Privileged => "privileged: emulated on the virtual CPU",
            CalloutReason::PortIo => "port I/O: sent to the virtual devices",
            CalloutReason::InterruptFlag => "sensitive: EFLAGS.IF/IOPL are virtual",
            CalloutReason::HostStateRead => "sensitive: would reveal host descriptor tables/MSW",
            CalloutReason::SegmentRegister => "sensitive: segment registers hold shadow selectors",
            CalloutReason::DescriptorCheck => "sensitive: checks a guest descriptor",
            CalloutReason::FarTransfer => "far transfer: loads CS from a guest descriptor",
            CalloutReason::SoftwareInterrupt => "software interrupt: delivered through the guest IDT",
            CalloutReason::SystemCall => "system call: would reach the host kernel",
            CalloutReason::Cpuid => "sensitive: CPUID reports the virtual CPU model",
            CalloutReason::TimeStampCounter => "sensitive: the TSC is virtual",
            CalloutReason::GsOverride => "GS override: GS is the monitor's segment",
            CalloutReason::CsOverride => "CS override: host CS is the flat TC segment",
            CalloutReason::OddBranch => "16-bit near branch: emulated",
            CalloutReason::RepeatIteration => "repeated string, single-stepped: one iteration a step",
        }
    }

    /// Short class name used as a counter key in `--stats`.
    pub fn class(self) -> &'static str {
        match self {
            CalloutReason::Privileged => "privileged",
            CalloutReason::PortIo => "port-io",
            CalloutReason::InterruptFlag => "eflags",
            CalloutReason::HostStateRead => "host-state-read",
            CalloutReason::SegmentRegister => "segment-register",
            CalloutReason::DescriptorCheck => "descriptor-check",
            CalloutReason::FarTransfer => "far-transfer",
            CalloutReason::SoftwareInterrupt => "int",
            CalloutReason::SystemCall => "syscall",
            CalloutReason::Cpuid => "cpuid",
            CalloutReason::TimeStampCounter => "tsc",
            CalloutReason::GsOverride => "gs-override",
            CalloutReason::CsOverride => "cs-override",
            CalloutReason::OddBranch => "odd-branch",
            CalloutReason::RepeatIteration => "rep-iteration",
        }
    }
}

/// The kinds of control transfer the translator rewrites itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Branch {
    /// `jmp rel`: an exit stub, later chained straight to the target.
    Jump { target: u32 },
    /// `jcc rel`: a taken stub and a fall-through stub.
    Conditional { target: u32 },
    /// `loop`, `loopcc`, `jecxz`: only a rel8 form exists, so the copy
    /// branches over a short jump to reach its two stubs.
    ShortConditional { target: u32 },
    /// `call rel`: push the guest return address, then a stub.
    Call { target: u32 },
    /// `ret` / `ret imm16`: pop the guest target and look it up inline.
    Return { pop: u16 },
    /// `jmp r/m`: read the guest target and look it up inline.
    IndirectJump,
    /// `call r/m`: read the target, push the return address, look it up.
    IndirectCall,
}

/// Sensitive instructions the translator rewrites inline, without an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inline {
    /// `push sreg` (32-bit operand size): pushes the guest's own selector,
    /// read from the VCPU page, instead of the shadow's.
    PushSegment { sreg: u8 },
    /// `mov r32/r16, sreg`: loads the guest's own selector from the VCPU
    /// page.
    ReadSegment { sreg: u8, dest: Register },
}

/// What the translator does with one guest instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Copied byte for byte.
    Ident,
    /// Rewritten control transfer.
    Branch(Branch),
    /// Rewritten in place, without leaving translated code.
    Inline(Inline),
    /// Ends the unit with an exit to the virtual CPU.
    Callout(CalloutReason),
    /// Raises this exception when reached.
    Fault(Exception),
}

/// Options of the translation that depend on virtual CPU state. Units
/// translated under different modes are different units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mode {
    /// CR0.TS or CR0.EM is set: x87/MMX/SSE instructions must fault.
    pub fpu_trap: bool,
    /// CR0.EM is set: SSE instructions raise #UD rather than #NM.
    pub fpu_emulate: bool,
    /// Single-step mode: one guest instruction per unit, never chained
    /// (EFLAGS.TF, and the debugger's step).
    pub single_step: bool,
    /// A unit translated to run once on its own (the debugger's step
    /// unit): whole, but never cached or chained, and its indirect
    /// branches always exit, so that it returns to the monitor when it
    /// ends.
    pub isolated: bool,
}

/// Classifies one decoded guest instruction.
pub fn classify(insn: &Instruction, mode: Mode) -> Class {
    use Mnemonic as M;
    if insn.is_invalid() {
        return Class::Fault(Exception::InvalidOpcode);
    }
    // VEX, EVEX and XOP encodings (AVX and later) belong to CPUs newer
    // than the virtual model, which reports no AVX and no OSXSAVE: on such
    // a CPU they raise #UD. Run natively they would also expose the host's
    // upper vector state, which FXSAVE does not switch.
    if insn.encoding() != iced_x86::EncodingKind::Legacy {
        return Class::Fault(Exception::InvalidOpcode);
    }
    if mode.fpu_trap {
        if let Some(exc) = fpu_fault(insn, mode) {
            return Class::Fault(exc);
        }
    }
    let callout = |r| Class::Callout(r);
    if mode.single_step && insn.is_string_instruction() && (insn.has_rep_prefix() || insn.has_repne_prefix()) {
        // Port string instructions are callouts anyway (below).
        if !matches!(insn.mnemonic(), M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd) {
            return callout(CalloutReason::RepeatIteration);
        }
    }
    match insn.mnemonic() {
        // Privileged instructions: they fault at host ring 3, and their
        // effect belongs to the virtual CPU (SDM Vol. 3A §5.9).
        M::Cli | M::Sti | M::Hlt | M::Lgdt | M::Lidt | M::Lldt | M::Ltr | M::Lmsw | M::Clts
        | M::Invd | M::Wbinvd | M::Invlpg | M::Rdmsr | M::Wrmsr | M::Rdpmc => callout(CalloutReason::Privileged),
        M::Mov if is_control_or_debug(insn) => callout(CalloutReason::Privileged),
        M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
            callout(CalloutReason::PortIo)
        }
        // Sensitive but unprivileged: these run at ring 3 without faulting
        // but would show or use the host's state (Robin and Irvine, 2000).
        M::Pushf | M::Pushfd | M::Popf | M::Popfd => callout(CalloutReason::InterruptFlag),
        M::Sgdt | M::Sidt | M::Sldt | M::Str | M::Smsw => callout(CalloutReason::HostStateRead),
        M::Lar | M::Lsl | M::Verr | M::Verw => callout(CalloutReason::DescriptorCheck),
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => callout(CalloutReason::SegmentRegister),
        M::Mov | M::Push | M::Pop if uses_segment_register(insn) => match inline_segment_read(insn) {
            Some(inline) => Class::Inline(inline),
            None => callout(CalloutReason::SegmentRegister),
        },
        M::Iret | M::Iretd | M::Retf => callout(CalloutReason::FarTransfer),
        M::Jmp | M::Call if insn.is_jmp_far() || insn.is_call_far() || insn.is_jmp_far_indirect() || insn.is_call_far_indirect() => {
            callout(CalloutReason::FarTransfer)
        }
        M::Int | M::Int3 | M::Into | M::Int1 => callout(CalloutReason::SoftwareInterrupt),
        M::Sysenter | M::Sysexit | M::Syscall | M::Sysret => callout(CalloutReason::SystemCall),
        M::Cpuid => callout(CalloutReason::Cpuid),
        M::Rdtsc => callout(CalloutReason::TimeStampCounter),
        // Present on the host but absent from the virtual CPU model, so the
        // guest must see #UD rather than the host's answer.
        M::Rdtscp | M::Rdpid | M::Xgetbv | M::Xsetbv | M::Monitor | M::Mwait | M::Rsm | M::Swapgs => {
            Class::Fault(Exception::InvalidOpcode)
        }
        _ => classify_unprivileged(insn),
    }
}

fn classify_unprivileged(insn: &Instruction) -> Class {
    // Control transfers with a guest target.
    if insn.is_jmp_short_or_near() {
        return branch_or_odd(insn, Branch::Jump { target: insn.near_branch32() });
    }
    if insn.is_jcc_short_or_near() {
        return branch_or_odd(insn, Branch::Conditional { target: insn.near_branch32() });
    }
    if insn.is_loop() || insn.is_loopcc() || insn.is_jcx_short() {
        return branch_or_odd(insn, Branch::ShortConditional { target: insn.near_branch32() });
    }
    if insn.is_call_near() {
        return branch_or_odd(insn, Branch::Call { target: insn.near_branch32() });
    }
    // Segment overrides the host cannot honour. Checked before the indirect
    // branches, which read their target through a segment too.
    if has_memory_operand(insn) {
        match insn.memory_segment() {
            Register::GS => return Class::Callout(CalloutReason::GsOverride),
            Register::CS => return Class::Callout(CalloutReason::CsOverride),
            _ => {}
        }
    }
    if insn.mnemonic() == Mnemonic::Ret {
        let pop = if insn.op_count() == 1 { insn.immediate16() } else { 0 };
        return branch_or_odd(insn, Branch::Return { pop });
    }
    if insn.is_jmp_near_indirect() {
        return branch_or_odd(insn, Branch::IndirectJump);
    }
    if insn.is_call_near_indirect() {
        return branch_or_odd(insn, Branch::IndirectCall);
    }
    Class::Ident
}

/// Near branches with a 16-bit operand size truncate EIP to 16 bits and pop
/// or push 2 bytes; they are rare in 32-bit code and emulated.
fn branch_or_odd(insn: &Instruction, branch: Branch) -> Class {
    if insn.code().op_code().operand_size() == 16 {
        Class::Callout(CalloutReason::OddBranch)
    } else {
        Class::Branch(branch)
    }
}

/// The segment-register reads that can be done inline: `push sreg` with a
/// 32-bit operand size and `mov reg, sreg`. Loads of segment registers,
/// and stores of them to memory, stay callouts.
fn inline_segment_read(insn: &Instruction) -> Option<Inline> {
    let sreg = |r: Register| r.number() as u8; // ES=0 .. GS=5, SegReg order
    match insn.mnemonic() {
        Mnemonic::Push if insn.op0_kind() == OpKind::Register && insn.stack_pointer_increment() == -4 => {
            Some(Inline::PushSegment { sreg: sreg(insn.op0_register()) })
        }
        Mnemonic::Mov
            if insn.op0_kind() == OpKind::Register
                && insn.op0_register().is_gpr()
                && insn.op1_kind() == OpKind::Register
                && insn.op1_register().is_segment_register() =>
        {
            Some(Inline::ReadSegment { sreg: sreg(insn.op1_register()), dest: insn.op0_register() })
        }
        _ => None,
    }
}

fn has_memory_operand(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::Memory | OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemorySegDI | OpKind::MemorySegEDI
        )
    })
}

fn is_control_or_debug(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| {
        insn.op_kind(i) == OpKind::Register && (insn.op_register(i).is_cr() || insn.op_register(i).is_dr() || insn.op_register(i).is_tr())
    })
}

fn uses_segment_register(insn: &Instruction) -> bool {
    (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_segment_register())
}

/// With CR0.TS (or EM) set, x87, MMX and SSE instructions must raise #NM
/// (or #UD) instead of touching the FPU, which the host keeps live with the
/// guest's state (SDM Vol. 3A §2.5, Table 2-2).
fn fpu_fault(insn: &Instruction, mode: Mode) -> Option<Exception> {
    use CpuidFeature as F;
    let features = insn.cpuid_features();
    let x87 = features.iter().any(|f| matches!(f, F::FPU | F::FPU287 | F::FPU387 | F::FPU287XL_ONLY));
    let mmx = features.iter().any(|f| matches!(f, F::MMX));
    let sse = features.iter().any(|f| matches!(f, F::SSE | F::SSE2 | F::SSE3 | F::SSSE3 | F::SSE4_1 | F::SSE4_2 | F::FXSR));
    if insn.mnemonic() == Mnemonic::Wait {
        // WAIT/FWAIT faults only when both TS and MP are set; the mode bit
        // is computed by the caller accordingly.
        return Some(Exception::DeviceNotAvailable);
    }
    if sse && mode.fpu_emulate && !matches!(insn.mnemonic(), Mnemonic::Fxsave | Mnemonic::Fxrstor) {
        return Some(Exception::InvalidOpcode);
    }
    if x87 || mmx || sse {
        return Some(Exception::DeviceNotAvailable);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn class_of(bytes: &[u8]) -> Class {
        let mut decoder = Decoder::with_ip(32, bytes, 0x1000, DecoderOptions::NONE);
        classify(&decoder.decode(), Mode::default())
    }

    /// One row per instruction: bytes, expected class.
    #[test]
    fn classification_table() {
        let cases: &[(&[u8], Class)] = &[
            (&[0x01, 0xd8], Class::Ident),                                         // add eax, ebx
            (&[0x8b, 0x03], Class::Ident),                                         // mov eax, [ebx]
            (&[0x64, 0x8b, 0x03], Class::Ident),                                   // mov eax, fs:[ebx]
            (&[0xfa], Class::Callout(CalloutReason::Privileged)),                  // cli
            (&[0x0f, 0x22, 0xd8], Class::Callout(CalloutReason::Privileged)),      // mov cr3, eax
            (&[0x0f, 0x21, 0xc0], Class::Callout(CalloutReason::Privileged)),      // mov eax, dr0
            (&[0x9c], Class::Callout(CalloutReason::InterruptFlag)),               // pushfd
            (&[0x0f, 0x01, 0x05, 0, 0, 0, 0], Class::Callout(CalloutReason::HostStateRead)), // sgdt
            (&[0x8c, 0xd8], Class::Inline(Inline::ReadSegment { sreg: 3, dest: Register::EAX })), // mov eax, ds
            (&[0x1e], Class::Inline(Inline::PushSegment { sreg: 3 })),             // push ds
            (&[0x8c, 0x18], Class::Callout(CalloutReason::SegmentRegister)),       // mov [eax], ds
            (&[0x1f], Class::Callout(CalloutReason::SegmentRegister)),             // pop ds
            (&[0x8e, 0xd8], Class::Callout(CalloutReason::SegmentRegister)),       // mov ds, eax
            (&[0x0f, 0x02, 0xc3], Class::Callout(CalloutReason::DescriptorCheck)), // lar eax, bx
            (&[0xea, 0, 0, 0, 0, 0x23, 0], Class::Callout(CalloutReason::FarTransfer)), // jmp far 0x23:0
            (&[0xcd, 0x80], Class::Callout(CalloutReason::SoftwareInterrupt)),     // int 0x80
            (&[0x0f, 0x05], Class::Callout(CalloutReason::SystemCall)),            // syscall
            (&[0x0f, 0x34], Class::Callout(CalloutReason::SystemCall)),            // sysenter
            (&[0x0f, 0xa2], Class::Callout(CalloutReason::Cpuid)),                 // cpuid
            (&[0xe6, 0x80], Class::Callout(CalloutReason::PortIo)),                // out 0x80, al
            (&[0x65, 0x8b, 0x03], Class::Callout(CalloutReason::GsOverride)),      // mov eax, gs:[ebx]
            (&[0x2e, 0x8b, 0x03], Class::Callout(CalloutReason::CsOverride)),      // mov eax, cs:[ebx]
            (&[0xeb, 0x10], Class::Branch(Branch::Jump { target: 0x1012 })),
            (&[0x74, 0x10], Class::Branch(Branch::Conditional { target: 0x1012 })),
            (&[0xe2, 0xfe], Class::Branch(Branch::ShortConditional { target: 0x1000 })),
            (&[0xe8, 0, 0, 0, 0], Class::Branch(Branch::Call { target: 0x1005 })),
            (&[0xc3], Class::Branch(Branch::Return { pop: 0 })),
            (&[0xc2, 8, 0], Class::Branch(Branch::Return { pop: 8 })),
            (&[0xff, 0xe0], Class::Branch(Branch::IndirectJump)),                  // jmp eax
            (&[0xff, 0x13], Class::Branch(Branch::IndirectCall)),                  // call [ebx]
            (&[0x65, 0xff, 0x13], Class::Callout(CalloutReason::GsOverride)),      // call gs:[ebx]
            (&[0x0f, 0x01, 0xd0], Class::Fault(Exception::InvalidOpcode)),         // xgetbv
            (&[0x0f, 0xff, 0xc0], Class::Ident),                                   // ud0 faults natively
            (&[0xc5, 0xf8, 0x77], Class::Fault(Exception::InvalidOpcode)),         // vzeroupper (VEX)
        ];
        for (bytes, want) in cases {
            assert_eq!(class_of(bytes), *want, "bytes {:02x?}", bytes);
        }
    }

    #[test]
    fn fpu_instructions_fault_when_ts_is_set() {
        let mut decoder = Decoder::with_ip(32, &[0xd9, 0xe8], 0, DecoderOptions::NONE); // fld1
        let insn = decoder.decode();
        let mode = Mode { fpu_trap: true, ..Mode::default() };
        assert_eq!(classify(&insn, mode), Class::Fault(Exception::DeviceNotAvailable));
        assert_eq!(classify(&insn, Mode::default()), Class::Ident);
    }
}
