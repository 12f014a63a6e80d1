//! Emulation of one ordinary guest instruction, operand by operand, against
//! the virtual CPU and the bus.
//!
//! Translated guest code runs natively, and almost all of its memory
//! accesses go straight to the guest's RAM. A few cannot: an access into the
//! monitor's reserved top 4 MiB (which segment truncation turns into a
//! #GP), an access to guest page 0 (which the host cannot map), a physical
//! address beyond RAM or on a device page, and any access through GS (which
//! belongs to the monitor) or with a CS override. For those the monitor
//! decodes the one faulting instruction with iced-x86 and calls [`emulate`],
//! which executes it completely here, in safe Rust, and moves EIP past it.
//!
//! This module owns the semantics of the ordinary integer instructions that
//! such an access can come from: moves, arithmetic and logic, shifts and
//! rotates, bit tests, exchanges, multiply and divide, pushes and pops of
//! ordinary operands, and the string instructions with their repeat
//! prefixes. The flag arithmetic itself lives in [`crate::alu`]. Privileged
//! and sensitive instructions (segment loads, control registers, I/O,
//! far transfers) are not emulated here: they have their own callouts, and
//! `emulate` reports them as [`EmulateError::Unsupported`]. Segmentation and
//! paging are applied by [`Cpu::read_virt`] and [`Cpu::write_virt`]
//! in `memory.rs`; this module never computes a linear address itself
//! except to check a destination before reading it.
//!
//! Faults are precise (SDM Vol. 3A §6.5): when an instruction raises an
//! exception, the registers, the flags and memory are as they were before
//! it, so the guest's handler can restart it. Every handler below therefore
//! reads and checks everything first, writes memory next, and changes
//! registers and flags last. The one exception is a repeated string
//! instruction, which commits each finished iteration as hardware does
//! (SDM Vol. 2B "REP/REPE/REPZ/REPNE/REPNZ"): a fault in iteration *k*
//! leaves ECX, ESI and EDI describing the *k - 1* iterations already done,
//! and EIP still at the instruction, so that restarting it finishes the job.

use bt86_machine::Bus;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use thiserror::Error;

use crate::alu::{self, BitOp, OpSize, ShiftOp};
use crate::exception::Exception;
use crate::memory::Access;
use crate::state::{flags, gpr, Cpu, SegReg};

/// Why [`emulate`] did not complete an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EmulateError {
    /// The instruction raised a guest exception. The CPU state is as it
    /// was before the instruction (apart from finished iterations of a
    /// repeated string instruction); the caller delivers the exception
    /// through the guest's IDT.
    #[error("the emulated instruction raised {0}; deliver it to the guest")]
    Exception(Exception),
    /// The instruction, or one of its operands, is outside what this
    /// emulator implements. Nothing was changed.
    #[error(
        "cannot emulate {mnemonic:?} at EIP {eip:#010x}: {reason}; \
         this instruction needs its own callout or an emulation added to bt86-cpu's emulate.rs"
    )]
    Unsupported {
        /// The instruction's mnemonic as iced-x86 decoded it.
        mnemonic: Mnemonic,
        /// The guest EIP of the instruction.
        eip: u32,
        /// Which part of the instruction is not supported.
        reason: &'static str,
    },
}

impl From<Exception> for EmulateError {
    fn from(exception: Exception) -> Self {
        EmulateError::Exception(exception)
    }
}

/// Executes one decoded guest instruction completely against `cpu` and
/// `bus`, then sets EIP to the next instruction.
///
/// `insn` must have been decoded at the guest's EIP (its `ip()` is reported
/// in errors and its `next_ip()` becomes the new EIP) with the bitness of
/// the guest's code segment. On `Err`, EIP is unchanged.
pub fn emulate(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<(), EmulateError> {
    let mut emulator = Emulator { cpu, bus, insn, one_iteration: false, finished: true };
    emulator.execute()?;
    // EIP is a 32-bit register; the decoder's 64-bit IP never exceeds it
    // when decoding 16- or 32-bit code.
    emulator.cpu.eip = insn.next_ip() as u32;
    Ok(())
}

/// Executes one iteration of a repeated string instruction (MOVS, STOS,
/// LODS, CMPS or SCAS with a REP, REPE or REPNE prefix), as the processor
/// does between two single-step traps: with EFLAGS.TF set, "the processor
/// generates a single-step debug exception after each iteration" (SDM Vol.
/// 3A §17.3.1.4). EIP stays at the instruction while iterations remain,
/// and moves past it once the count is zero or the REPE/REPNE condition
/// ends the loop (a zero count on entry completes it at once). Returns
/// whether the instruction completed. Any other instruction is emulated
/// whole, as [`emulate`] does.
pub fn emulate_iteration(cpu: &mut Cpu, bus: &mut dyn Bus, insn: &Instruction) -> Result<bool, EmulateError> {
    let mut emulator = Emulator { cpu, bus, insn, one_iteration: true, finished: true };
    emulator.execute()?;
    let done = emulator.finished;
    if done {
        emulator.cpu.eip = insn.next_ip() as u32;
    }
    Ok(done)
}

/// One operand of the instruction being emulated, once its addressing has
/// been worked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operand {
    /// A general-purpose register in its 8-, 16- or 32-bit form (AL, AH,
    /// AX, EAX, ...), as iced-x86 names it.
    Register(Register),
    /// Memory at `seg:offset`, where `offset` is the effective address
    /// (SDM Vol. 1 §3.7.5), already wrapped to the address size.
    Memory { seg: SegReg, offset: u32 },
    /// An immediate, already sign-extended where the encoding says so.
    Immediate(u32),
}

/// The kind of a string instruction (SDM Vol. 1 §7.3.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StringOp {
    /// MOVS: ES:[EDI] = seg:[ESI].
    Movs,
    /// STOS: ES:[EDI] = accumulator.
    Stos,
    /// LODS: accumulator = seg:[ESI].
    Lods,
    /// CMPS: flags of seg:[ESI] - ES:[EDI].
    Cmps,
    /// SCAS: flags of accumulator - ES:[EDI].
    Scas,
}

/// How a repeat prefix ends a string instruction's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// No prefix: one iteration.
    Once,
    /// REP: until the count reaches zero.
    WhileCount,
    /// REPE/REPZ: also stop after an iteration that clears ZF.
    WhileEqual,
    /// REPNE/REPNZ: also stop after an iteration that sets ZF.
    WhileNotEqual,
}

/// The instruction being emulated together with the state it works on.
struct Emulator<'a> {
    cpu: &'a mut Cpu,
    bus: &'a mut dyn Bus,
    /// Run at most one iteration of a repeated string instruction
    /// ([`emulate_iteration`]).
    one_iteration: bool,
    /// Cleared when that iteration leaves more to do.
    finished: bool,
    insn: &'a Instruction,
}

type Outcome = Result<(), EmulateError>;

impl Emulator<'_> {
    /// The dispatcher: one small handler per family of instructions.
    fn execute(&mut self) -> Outcome {
        use Mnemonic as M;
        match self.insn.mnemonic() {
            M::Mov => self.mov(),
            M::Movzx => self.extend(false),
            M::Movsx => self.extend(true),
            M::Add | M::Or | M::Adc | M::Sbb | M::And | M::Sub | M::Xor | M::Cmp | M::Test => {
                self.arithmetic()
            }
            M::Inc | M::Dec | M::Not | M::Neg => self.unary(),
            M::Rol => self.shift(ShiftOp::Rol),
            M::Ror => self.shift(ShiftOp::Ror),
            M::Rcl => self.shift(ShiftOp::Rcl),
            M::Rcr => self.shift(ShiftOp::Rcr),
            // SAL is another name for SHL: the same operation under the
            // spare encoding /6 (SDM Vol. 2B "SAL/SAR/SHL/SHR").
            M::Shl | M::Sal => self.shift(ShiftOp::Shl),
            M::Shr => self.shift(ShiftOp::Shr),
            M::Sar => self.shift(ShiftOp::Sar),
            M::Bt => self.bit_test(BitOp::Test),
            M::Bts => self.bit_test(BitOp::Set),
            M::Btr => self.bit_test(BitOp::Reset),
            M::Btc => self.bit_test(BitOp::Complement),
            M::Xchg => self.xchg(),
            M::Xadd => self.xadd(),
            M::Cmpxchg => self.cmpxchg(),
            M::Cmpxchg8b => self.cmpxchg8b(),
            M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg => self.setcc(),
            M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg => self.cmovcc(),
            M::Lea => self.lea(),
            M::Mul => self.multiply(false),
            M::Imul => self.imul(),
            M::Div => self.divide(false),
            M::Idiv => self.divide(true),
            M::Push => self.push(),
            M::Pop => self.pop(),
            M::Movsb | M::Movsw | M::Movsd => self.string(StringOp::Movs),
            M::Stosb | M::Stosw | M::Stosd => self.string(StringOp::Stos),
            M::Lodsb | M::Lodsw | M::Lodsd => self.string(StringOp::Lods),
            M::Cmpsb | M::Cmpsw | M::Cmpsd => self.string(StringOp::Cmps),
            M::Scasb | M::Scasw | M::Scasd => self.string(StringOp::Scas),
            _ => Err(self.unsupported("the instruction is not one the emulator implements")),
        }
    }

    // ----- Instruction handlers -------------------------------------------

    /// MOV r/m, r; MOV r, r/m; MOV r/m, imm; MOV with a moffs operand
    /// (SDM Vol. 2B "MOV"). Moves to and from segment, control and debug
    /// registers are sensitive and have their own callouts; reading such a
    /// register reports Unsupported.
    fn mov(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        let value = self.read(src, size)?;
        self.write(dst, size, value)
    }

    /// MOVZX and MOVSX (SDM Vol. 2B): a byte or word source widened to the
    /// destination register.
    fn extend(&mut self, signed: bool) -> Outcome {
        let (dst_size, src_size) = (self.operand_size(0)?, self.operand_size(1)?);
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        let value = self.read(src, src_size)?;
        let value = if signed {
            src_size.sign_extend(value) as u32
        } else {
            value
        };
        self.write(dst, dst_size, value)
    }

    /// The eight classic two-operand ALU instructions and TEST, in every
    /// encoding: r/m with r, r with r/m, r/m with an immediate (including
    /// the sign-extended imm8 of opcode 83, which iced-x86 has already
    /// extended), and the short accumulator forms.
    fn arithmetic(&mut self) -> Outcome {
        let mnemonic = self.insn.mnemonic();
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        // CMP and TEST only read their destination.
        let writes = !matches!(mnemonic, Mnemonic::Cmp | Mnemonic::Test);
        if writes {
            self.check_writable(dst, size)?;
        }
        let a = self.read(dst, size)?;
        let b = self.read(src, size)?;
        let carry = self.cpu.eflags & flags::CF != 0;
        let (result, status) = match mnemonic {
            Mnemonic::Add => alu::add(size, a, b, false),
            Mnemonic::Adc => alu::add(size, a, b, carry),
            Mnemonic::Sub | Mnemonic::Cmp => alu::sub(size, a, b, false),
            Mnemonic::Sbb => alu::sub(size, a, b, carry),
            Mnemonic::And | Mnemonic::Test => alu::and(size, a, b),
            Mnemonic::Or => alu::or(size, a, b),
            Mnemonic::Xor => alu::xor(size, a, b),
            _ => return Err(self.unsupported("not a two-operand ALU instruction")),
        };
        if writes {
            self.write(dst, size, result)?;
        }
        self.set_status(status);
        Ok(())
    }

    /// INC, DEC, NOT and NEG on a register or memory operand.
    fn unary(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let dst = self.operand(0)?;
        self.check_writable(dst, size)?;
        let a = self.read(dst, size)?;
        let eflags = self.cpu.eflags;
        let (result, status) = match self.insn.mnemonic() {
            Mnemonic::Inc => alu::inc(size, a, eflags),
            Mnemonic::Dec => alu::dec(size, a, eflags),
            Mnemonic::Neg => alu::neg(size, a),
            // NOT affects no flags at all (SDM Vol. 2B "NOT").
            Mnemonic::Not => (alu::not(size, a), eflags),
            _ => return Err(self.unsupported("not a one-operand ALU instruction")),
        };
        self.write(dst, size, result)?;
        self.set_status(status);
        Ok(())
    }

    /// The group-2 shifts and rotates by 1, by CL or by an imm8 (iced-x86
    /// gives the "by 1" forms an immediate operand of 1).
    fn shift(&mut self, op: ShiftOp) -> Outcome {
        let size = self.operand_size(0)?;
        let dst = self.operand(0)?;
        let count_operand = self.operand(1)?;
        let count = self.read(count_operand, OpSize::Byte)?;
        self.check_writable(dst, size)?;
        let a = self.read(dst, size)?;
        let (result, status) = alu::shift(op, size, a, count, self.cpu.eflags);
        // A masked count of zero is architecturally a no-op; do not write
        // the unchanged value back (it could reach a device register).
        if count & 0x1F != 0 {
            self.write(dst, size, result)?;
        }
        self.set_status(status);
        Ok(())
    }

    /// BT, BTS, BTR and BTC with an immediate or register bit offset.
    ///
    /// With a memory operand and a register offset, the offset is a signed
    /// number that may reach outside the addressed word: the processor
    /// accesses the operand-sized word at
    /// `effective address + size_in_bytes * (offset SAR log2(size_in_bits))`,
    /// that is the effective address moved by the offset divided by eight and
    /// rounded down to a whole operand, and tests bit `offset mod size` there
    /// (SDM Vol. 2A "BT", "Bit(BitBase, BitOffset)" in Vol. 1 §3.4.3 and
    /// Figure 3-11). An immediate offset is always taken modulo the operand
    /// size.
    fn bit_test(&mut self, op: BitOp) -> Outcome {
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        let bit_offset = self.read(src, size)?;
        let target = match (dst, src) {
            (Operand::Memory { seg, offset }, Operand::Register(_)) => {
                let signed = size.sign_extend(bit_offset);
                let words = signed >> size.bits().trailing_zeros();
                let moved = offset.wrapping_add(words.wrapping_mul(size.bytes() as i32) as u32);
                Operand::Memory {
                    seg,
                    offset: self.wrap_address(moved),
                }
            }
            _ => dst,
        };
        let bit = bit_offset % size.bits();
        if op != BitOp::Test {
            self.check_writable(target, size)?;
        }
        let value = self.read(target, size)?;
        let (result, status) = alu::bit_test(op, size, value, bit, self.cpu.eflags);
        if op != BitOp::Test {
            self.write(target, size, result)?;
        }
        self.set_status(status);
        Ok(())
    }

    /// XCHG of a register with a register or memory (SDM Vol. 2B "XCHG").
    /// The memory operand, if any, is written first so that a fault leaves
    /// the register untouched.
    fn xchg(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let (first, second) = (self.operand(0)?, self.operand(1)?);
        self.check_writable(first, size)?;
        self.check_writable(second, size)?;
        let a = self.read(first, size)?;
        let b = self.read(second, size)?;
        if matches!(second, Operand::Memory { .. }) {
            self.write(second, size, a)?;
            self.write(first, size, b)
        } else {
            self.write(first, size, b)?;
            self.write(second, size, a)
        }
    }

    /// XADD r/m, r (SDM Vol. 2B "XADD"): TEMP = SRC + DEST; SRC = DEST;
    /// DEST = TEMP, with the flags of the addition. The register source is
    /// written before a register destination so that `xadd eax, eax` ends
    /// with the sum, as the SDM's order of operations says.
    fn xadd(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        self.check_writable(dst, size)?;
        let a = self.read(dst, size)?;
        let b = self.read(src, size)?;
        let (sum, status) = alu::add(size, a, b, false);
        if matches!(dst, Operand::Memory { .. }) {
            self.write(dst, size, sum)?;
            self.write(src, size, a)?;
        } else {
            self.write(src, size, a)?;
            self.write(dst, size, sum)?;
        }
        self.set_status(status);
        Ok(())
    }

    /// CMPXCHG r/m, r (SDM Vol. 2A "CMPXCHG"): compare the accumulator with
    /// the destination; if equal, store the source in the destination,
    /// otherwise load the destination into the accumulator. The flags are
    /// those of `CMP accumulator, destination`. The processor always writes
    /// the destination, storing its old value back when the comparison
    /// fails, so a read-only destination faults either way.
    fn cmpxchg(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        let accumulator = Operand::Register(accumulator(size));
        self.check_writable(dst, size)?;
        let current = self.read(dst, size)?;
        let replacement = self.read(src, size)?;
        let expected = self.read(accumulator, size)?;
        let (_, status) = alu::sub(size, expected, current, false);
        if expected == current {
            self.write(dst, size, replacement)?;
        } else {
            if matches!(dst, Operand::Memory { .. }) {
                self.write(dst, size, current)?;
            }
            self.write(accumulator, size, current)?;
        }
        self.set_status(status);
        Ok(())
    }

    /// CMPXCHG8B m64 (SDM Vol. 2A "CMPXCHG8B"): compare EDX:EAX with the
    /// quadword; if equal, store ECX:EBX there and set ZF, otherwise load
    /// it into EDX:EAX and clear ZF. Only ZF changes. As with CMPXCHG the
    /// destination is written in both cases.
    fn cmpxchg8b(&mut self) -> Outcome {
        let Operand::Memory { seg, offset } = self.operand(0)? else {
            return Err(self.unsupported("CMPXCHG8B with a register operand is #UD"));
        };
        self.cpu.linear_address(seg, offset, 8, Access::Write)?;
        let mut bytes = [0u8; 8];
        self.cpu.read_virt(self.bus, seg, offset, &mut bytes)?;
        let current = u64::from_le_bytes(bytes);
        let g = &self.cpu.gpr;
        let expected = (u64::from(g[gpr::EDX]) << 32) | u64::from(g[gpr::EAX]);
        let replacement = (u64::from(g[gpr::ECX]) << 32) | u64::from(g[gpr::EBX]);
        let equal = current == expected;
        let stored = if equal { replacement } else { current };
        self.cpu
            .write_virt(self.bus, seg, offset, &stored.to_le_bytes())?;
        if !equal {
            self.cpu.gpr[gpr::EAX] = current as u32;
            self.cpu.gpr[gpr::EDX] = (current >> 32) as u32;
        }
        let zf = if equal { flags::ZF } else { 0 };
        self.cpu.eflags = (self.cpu.eflags & !flags::ZF) | zf;
        Ok(())
    }

    /// SETcc r/m8 (SDM Vol. 2B "SETcc"): 1 if the condition holds, else 0.
    fn setcc(&mut self) -> Outcome {
        let dst = self.operand(0)?;
        let value = u32::from(alu::condition(self.insn.condition_code(), self.cpu.eflags));
        self.write(dst, OpSize::Byte, value)
    }

    /// CMOVcc r, r/m (SDM Vol. 2A "CMOVcc"). The source is read whether or
    /// not the condition holds, so a bad memory source faults even when no
    /// move happens.
    fn cmovcc(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let (dst, src) = (self.operand(0)?, self.operand(1)?);
        let value = self.read(src, size)?;
        if alu::condition(self.insn.condition_code(), self.cpu.eflags) {
            self.write(dst, size, value)?;
        }
        Ok(())
    }

    /// LEA r, m (SDM Vol. 2A "LEA"): the effective address itself. No
    /// segment is applied and memory is not touched. The address is cut or
    /// zero-extended to the destination's size.
    fn lea(&mut self) -> Outcome {
        let size = self.operand_size(0)?;
        let dst = self.operand(0)?;
        let address = self.effective_address()?;
        self.write(dst, size, address)
    }

    /// One-operand MUL and IMUL: AL/AX/EAX times r/m into AX, DX:AX or
    /// EDX:EAX (SDM Vol. 2B "MUL", Vol. 2A "IMUL").
    fn multiply(&mut self, signed: bool) -> Outcome {
        let size = self.operand_size(0)?;
        let src = self.operand(0)?;
        let b = self.read(src, size)?;
        let (low_reg, high_reg) = (accumulator(size), accumulator_high(size));
        let a = self.read(Operand::Register(low_reg), size)?;
        let multiply = if signed { alu::imul } else { alu::mul };
        let (low, high, status) = multiply(size, a, b, self.cpu.eflags);
        self.write(Operand::Register(low_reg), size, low)?;
        self.write(Operand::Register(high_reg), size, high)?;
        self.set_status(status);
        Ok(())
    }

    /// IMUL in its three forms: one operand (as MUL, signed), two operands
    /// `r = r * r/m`, and three operands `r = r/m * imm` (SDM Vol. 2A
    /// "IMUL"). The two- and three-operand forms keep only the low half.
    fn imul(&mut self) -> Outcome {
        let (a_index, b_index) = match self.insn.op_count() {
            1 => return self.multiply(true),
            2 => (0, 1),
            3 => (1, 2),
            _ => return Err(self.unsupported("IMUL with an unexpected number of operands")),
        };
        let size = self.operand_size(0)?;
        let dst = self.operand(0)?;
        let (a_operand, b_operand) = (self.operand(a_index)?, self.operand(b_index)?);
        let a = self.read(a_operand, size)?;
        let b = self.read(b_operand, size)?;
        let (low, _high, status) = alu::imul(size, a, b, self.cpu.eflags);
        self.write(dst, size, low)?;
        self.set_status(status);
        Ok(())
    }

    /// DIV and IDIV: AX, DX:AX or EDX:EAX divided by r/m, quotient into
    /// AL/AX/EAX and remainder into AH/DX/EDX (SDM Vol. 2A "DIV", "IDIV").
    /// #DE on a zero divisor or a quotient that does not fit, with nothing
    /// written.
    fn divide(&mut self, signed: bool) -> Outcome {
        let size = self.operand_size(0)?;
        let src = self.operand(0)?;
        let divisor = self.read(src, size)?;
        let (low_reg, high_reg) = (accumulator(size), accumulator_high(size));
        let low = self.read(Operand::Register(low_reg), size)?;
        let high = self.read(Operand::Register(high_reg), size)?;
        let dividend = (u64::from(high) << size.bits()) | u64::from(low);
        let divide = if signed { alu::idiv } else { alu::div };
        let (quotient, remainder, status) = divide(size, dividend, divisor, self.cpu.eflags)?;
        self.write(Operand::Register(low_reg), size, quotient)?;
        self.write(Operand::Register(high_reg), size, remainder)?;
        self.set_status(status);
        Ok(())
    }

    /// PUSH r/m, PUSH r and PUSH imm (SDM Vol. 2B "PUSH"). The operand is
    /// read before ESP moves, so `push [esp]` and `push esp` push the old
    /// values, as on hardware since the 80286. Pushes of segment registers
    /// are sensitive and have their own callout.
    fn push(&mut self) -> Outcome {
        let size = self.stack_operand_size()?;
        let src = self.operand(0)?;
        let value = self.read(src, size)?;
        self.cpu.push(self.bus, value, size.bytes())?;
        Ok(())
    }

    /// POP r/m and POP r (SDM Vol. 2B "POP"). ESP is incremented before the
    /// destination's address is computed, so `pop [esp + 4]` stores to the
    /// address formed with the new ESP, and `pop esp` loads the popped
    /// value. If the store faults, ESP is put back.
    fn pop(&mut self) -> Outcome {
        let size = self.stack_operand_size()?;
        let value = self.cpu.peek_stack(self.bus, 0, size.bytes())?;
        let old_esp = self.cpu.gpr[gpr::ESP];
        let new_sp = self.cpu.stack_pointer_plus(size.bytes() as i32);
        self.cpu.set_stack_pointer(new_sp);
        let stored = self.operand(0).and_then(|dst| self.write(dst, size, value));
        if stored.is_err() {
            self.cpu.gpr[gpr::ESP] = old_esp;
        }
        stored
    }

    /// MOVS, STOS, LODS, CMPS and SCAS, with or without a repeat prefix
    /// (SDM Vol. 1 §7.3.9, Vol. 2B "REP/REPE/REPZ/REPNE/REPNZ").
    ///
    /// The source is `seg:[ESI]`, where the segment defaults to DS and may
    /// be overridden; the destination is always `ES:[EDI]`. Both pointers
    /// move by the element size after each element, up when DF is clear and
    /// down when it is set. With a 16-bit address size (prefix 67h in
    /// 32-bit code) the instruction uses SI, DI and CX, and only their low
    /// halves change. Each iteration is committed before the next begins, so
    /// a fault returns with the finished iterations applied and EIP still
    /// at the instruction.
    fn string(&mut self, op: StringOp) -> Outcome {
        // MOVSD and CMPSD are also the names of SSE2 instructions.
        if !self.insn.is_string_instruction() {
            return Err(self.unsupported("the SSE2 form of this mnemonic runs natively"));
        }
        let size = OpSize::from_bytes(self.insn.memory_size().size() as u32)
            .ok_or_else(|| self.unsupported("string element size"))?;
        let address16 = (0..self.insn.op_count()).any(|i| {
            matches!(
                self.insn.op_kind(i),
                OpKind::MemorySegSI | OpKind::MemoryESDI
            )
        });
        let (si, di, cx) = if address16 {
            (Register::SI, Register::DI, Register::CX)
        } else {
            (Register::ESI, Register::EDI, Register::ECX)
        };
        let has_prefix = self.insn.has_rep_prefix() || self.insn.has_repne_prefix();
        let repeat = match op {
            // MOVS, STOS and LODS repeat on either F3 or F2; only CMPS and
            // SCAS look at ZF.
            _ if !has_prefix => Repeat::Once,
            StringOp::Movs | StringOp::Stos | StringOp::Lods => Repeat::WhileCount,
            _ if self.insn.has_repe_prefix() => Repeat::WhileEqual,
            _ => Repeat::WhileNotEqual,
        };
        let source_seg = self.memory_segment()?;
        let step = if self.cpu.eflags & flags::DF != 0 {
            size.bytes().wrapping_neg()
        } else {
            size.bytes()
        };
        let acc = accumulator(size);

        loop {
            if repeat != Repeat::Once && self.read_register(cx)? == 0 {
                break;
            }
            let source = Operand::Memory {
                seg: source_seg,
                offset: self.read_register(si)?,
            };
            let destination = Operand::Memory {
                seg: SegReg::Es,
                offset: self.read_register(di)?,
            };
            // One iteration: every access first, then the register updates.
            match op {
                StringOp::Movs => {
                    let value = self.read(source, size)?;
                    self.write(destination, size, value)?;
                }
                StringOp::Stos => {
                    let value = self.read(Operand::Register(acc), size)?;
                    self.write(destination, size, value)?;
                }
                StringOp::Lods => {
                    let value = self.read(source, size)?;
                    self.write(Operand::Register(acc), size, value)?;
                }
                StringOp::Cmps => {
                    let a = self.read(source, size)?;
                    let b = self.read(destination, size)?;
                    self.set_status(alu::sub(size, a, b, false).1);
                }
                StringOp::Scas => {
                    let a = self.read(Operand::Register(acc), size)?;
                    let b = self.read(destination, size)?;
                    self.set_status(alu::sub(size, a, b, false).1);
                }
            }
            if matches!(op, StringOp::Movs | StringOp::Lods | StringOp::Cmps) {
                self.advance(si, step)?;
            }
            if op != StringOp::Lods {
                self.advance(di, step)?;
            }
            if repeat == Repeat::Once {
                break;
            }
            self.advance(cx, u32::MAX)?;
            let zf = self.cpu.eflags & flags::ZF != 0;
            match repeat {
                Repeat::WhileEqual if !zf => break,
                Repeat::WhileNotEqual if zf => break,
                _ => {}
            }
            if self.one_iteration {
                // More iterations follow unless the count ran out.
                self.finished = self.read_register(cx)? == 0;
                break;
            }
        }
        Ok(())
    }

    // ----- Operands --------------------------------------------------------

    /// Works out operand `index` of the instruction.
    fn operand(&self, index: u32) -> Result<Operand, EmulateError> {
        match self.insn.op_kind(index) {
            OpKind::Register => Ok(Operand::Register(self.insn.op_register(index))),
            OpKind::Memory => Ok(Operand::Memory {
                seg: self.memory_segment()?,
                offset: self.effective_address()?,
            }),
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32 => Ok(Operand::Immediate(self.insn.immediate(index) as u32)),
            _ => Err(self.unsupported("an operand kind other than register, memory or immediate")),
        }
    }

    /// The size of operand `index`: a register's own width, the width of
    /// the memory access, or an immediate's encoded width.
    fn operand_size(&self, index: u32) -> Result<OpSize, EmulateError> {
        let bytes = match self.insn.op_kind(index) {
            OpKind::Register => self.insn.op_register(index).size(),
            OpKind::Memory => self.insn.memory_size().size(),
            OpKind::Immediate8 => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 0,
        };
        u32::try_from(bytes)
            .ok()
            .and_then(OpSize::from_bytes)
            .ok_or_else(|| self.unsupported("an operand that is not 8, 16 or 32 bits wide"))
    }

    /// The size of the value a PUSH or POP moves: what it does to ESP.
    fn stack_operand_size(&self) -> Result<OpSize, EmulateError> {
        let bytes = self.insn.stack_pointer_increment().unsigned_abs();
        OpSize::from_bytes(bytes)
            .filter(|s| *s != OpSize::Byte)
            .ok_or_else(|| self.unsupported("stack operand size"))
    }

    /// The segment register of the memory operand: the override prefix if
    /// there is one, otherwise DS, or SS for an address based on EBP or ESP
    /// (SDM Vol. 1 §3.7.4, Table 3-5). iced-x86 applies these defaults.
    fn memory_segment(&self) -> Result<SegReg, EmulateError> {
        SegReg::from_iced(self.insn.memory_segment())
            .ok_or_else(|| self.unsupported("memory operand without a segment"))
    }

    /// Whether the memory operand uses 16-bit addressing (SDM Vol. 2A §2.1.5,
    /// Table 2-1): 16-bit base or index registers, or a 16-bit displacement
    /// standing alone.
    fn address_is_16bit(&self) -> bool {
        let insn = self.insn;
        insn.memory_base().is_gpr16()
            || insn.memory_index().is_gpr16()
            || insn.memory_displ_size() == 2
    }

    /// Wraps an offset to the address size, as the processor's address
    /// adder does: 16-bit addresses wrap at 64 KiB, 32-bit ones at 4 GiB.
    fn wrap_address(&self, offset: u32) -> u32 {
        if self.address_is_16bit() {
            offset & 0xFFFF
        } else {
            offset
        }
    }

    /// The effective address of the memory operand: base + index * scale +
    /// displacement, computed with wraparound at the address size (SDM Vol.
    /// 1 §3.7.5).
    fn effective_address(&self) -> Result<u32, EmulateError> {
        let insn = self.insn;
        let mut offset = insn.memory_displacement32();
        if insn.memory_base() != Register::None {
            offset = offset.wrapping_add(self.read_register(insn.memory_base())?);
        }
        if insn.memory_index() != Register::None {
            let index = self.read_register(insn.memory_index())?;
            offset = offset.wrapping_add(index.wrapping_mul(insn.memory_index_scale()));
        }
        Ok(self.wrap_address(offset))
    }

    /// Reads an operand, cut to `size`.
    fn read(&mut self, operand: Operand, size: OpSize) -> Result<u32, EmulateError> {
        let value = match operand {
            Operand::Register(reg) => self.read_register(reg)?,
            Operand::Immediate(value) => value,
            Operand::Memory { seg, offset } => {
                let mut bytes = [0u8; 4];
                self.cpu
                    .read_virt(self.bus, seg, offset, &mut bytes[..size.bytes() as usize])?;
                u32::from_le_bytes(bytes)
            }
        };
        Ok(value & size.mask())
    }

    /// Writes the low `size` bytes of `value` to an operand.
    fn write(&mut self, operand: Operand, size: OpSize, value: u32) -> Outcome {
        match operand {
            Operand::Register(reg) => self.write_register(reg, value & size.mask()),
            Operand::Memory { seg, offset } => {
                let bytes = value.to_le_bytes();
                self.cpu
                    .write_virt(self.bus, seg, offset, &bytes[..size.bytes() as usize])?;
                Ok(())
            }
            Operand::Immediate(_) => Err(self.unsupported("an immediate as a destination")),
        }
    }

    /// Checks that a read-modify-write destination may be written before it
    /// is read, so that a read-only segment faults without a read having
    /// reached a device (SDM Vol. 3A §5.4.1).
    fn check_writable(&self, operand: Operand, size: OpSize) -> Outcome {
        if let Operand::Memory { seg, offset } = operand {
            self.cpu
                .linear_address(seg, offset, size.bytes(), Access::Write)?;
        }
        Ok(())
    }

    /// Reads a general-purpose register by its iced-x86 name. The byte
    /// registers AH, CH, DH and BH are bits 15:8 of EAX, ECX, EDX and EBX
    /// (SDM Vol. 1 §3.4.1).
    fn read_register(&self, reg: Register) -> Result<u32, EmulateError> {
        let (index, shift, mask) = self.register_slot(reg)?;
        Ok((self.cpu.gpr[index] >> shift) & mask)
    }

    /// Writes a general-purpose register. Writing an 8- or 16-bit register
    /// leaves the rest of the 32-bit register unchanged.
    fn write_register(&mut self, reg: Register, value: u32) -> Outcome {
        let (index, shift, mask) = self.register_slot(reg)?;
        let old = self.cpu.gpr[index];
        self.cpu.gpr[index] = (old & !(mask << shift)) | ((value & mask) << shift);
        Ok(())
    }

    /// Where a register lives in [`Cpu::gpr`]: the index of its 32-bit
    /// register, the bit position and the mask of its width.
    fn register_slot(&self, reg: Register) -> Result<(usize, u32, u32), EmulateError> {
        let number = reg.number();
        let slot = if reg.is_gpr32() && number < 8 {
            (number, 0, 0xFFFF_FFFF)
        } else if reg.is_gpr16() && number < 8 {
            (number, 0, 0xFFFF)
        } else if reg.is_gpr8() && number < 4 {
            (number, 0, 0xFF)
        } else if reg.is_gpr8() && number < 8 {
            (number - 4, 8, 0xFF)
        } else {
            return Err(self.unsupported("a register that is not a general-purpose register"));
        };
        Ok(slot)
    }

    /// Adds `delta` to an ESI/EDI/ECX-style register at its own width.
    fn advance(&mut self, reg: Register, delta: u32) -> Outcome {
        let value = self.read_register(reg)?.wrapping_add(delta);
        self.write_register(reg, value)
    }

    /// Merges new status flags into EFLAGS.
    fn set_status(&mut self, status: u32) {
        self.cpu.eflags = alu::merge_status(self.cpu.eflags, status);
    }

    fn unsupported(&self, reason: &'static str) -> EmulateError {
        EmulateError::Unsupported {
            mnemonic: self.insn.mnemonic(),
            eip: self.insn.ip32(),
            reason,
        }
    }
}

/// AL, AX or EAX: the accumulator of an operand size.
fn accumulator(size: OpSize) -> Register {
    match size {
        OpSize::Byte => Register::AL,
        OpSize::Word => Register::AX,
        OpSize::Dword => Register::EAX,
    }
}

/// AH, DX or EDX: where MUL and DIV put the high half or the remainder.
fn accumulator_high(size: OpSize) -> Register {
    match size {
        OpSize::Byte => Register::AH,
        OpSize::Word => Register::DX,
        OpSize::Dword => Register::EDX,
    }
}
