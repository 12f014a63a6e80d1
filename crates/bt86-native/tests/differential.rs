//! Differential test: translated execution against native execution.
//!
//! proptest generates random straight-line sequences of unprivileged
//! integer instructions (ALU, shifts and rotates, bit operations, mul/imul,
//! div/idiv with safe operands, setcc, cmovcc, push, pop, xchg, lea, and
//! string operations with bounded counts). Each sequence runs twice on the
//! same starting state:
//! - directly, in compatibility mode, with no translation at all
//!   (`Vm::call_direct`), which is what the hardware says it means;
//! - through the translator, cut into translation units at random points,
//!   so that exit stubs, chaining and the world switch sit between
//!   instructions that pass flags and registers to each other.
//!
//! Every general-purpose register, the arithmetic flags, and the data and
//! stack memory must come out the same.

use std::collections::BTreeSet;

use bt86_cpu::state::{flags, gpr};
use bt86_cpu::Cpu;
use bt86_machine::{Bus, GuestPhysAddr, Machine};
use bt86_native::{Exit, Vm};
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
use proptest::prelude::*;

const CODE: u32 = 0x0010_0000;
/// The data area: EBX points at its middle and is never written.
const DATA: u32 = 0x0020_0000;
const DATA_LEN: u32 = 0x1000;
const DATA_BASE: u32 = DATA + DATA_LEN / 2;
/// The stack: ESP starts at STACK_TOP - 4 in both runs.
const STACK_TOP: u32 = 0x002F_0000;
const STACK_LEN: u32 = 0x800;
/// Where the sequence's epilogue stores its final ESP.
const ESP_SLOT: u32 = 0x002F_F000;

/// Registers the sequences may write: everything except ESP and EBX.
const DEST: [Register; 6] = [Register::EAX, Register::ECX, Register::EDX, Register::ESI, Register::EDI, Register::EBP];
const DEST8: [Register; 6] = [Register::AL, Register::CL, Register::DL, Register::AH, Register::CH, Register::DH];
const ANY: [Register; 8] =
    [Register::EAX, Register::ECX, Register::EDX, Register::EBX, Register::ESP, Register::EBP, Register::ESI, Register::EDI];

/// One generated operation; some expand to a few instructions (a safe
/// divide loads its operands first).
#[derive(Clone, Debug)]
enum Op {
    AluRR(u8, usize, usize),
    AluRI(u8, usize, i32),
    AluRM(u8, usize, i8),
    AluMR(u8, i8, usize),
    Alu8RR(u8, usize, usize),
    Unary(u8, usize),
    Shift(u8, usize, u8),
    ShiftCl(u8, usize),
    Bit(u8, usize, u8),
    BitScan(bool, usize, usize),
    Mul(bool, usize),
    Imul2(usize, usize),
    Imul3(usize, usize, i32),
    Div(bool, u32, u32, u32),
    Setcc(u8, usize),
    Cmovcc(u8, usize, usize),
    Push(usize),
    PushImm(i32),
    Pop(usize),
    Xchg(usize, usize),
    Lea(usize, usize, usize, u8, i32),
    Str(u8, bool, u16, u16, u8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let r = 0..DEST.len();
    prop_oneof![
        (0..8u8, r.clone(), 0..8usize).prop_map(|(o, d, s)| Op::AluRR(o, d, s)),
        (0..8u8, r.clone(), any::<i32>()).prop_map(|(o, d, i)| Op::AluRI(o, d, i)),
        (0..8u8, r.clone(), any::<i8>()).prop_map(|(o, d, m)| Op::AluRM(o, d, m)),
        (0..8u8, any::<i8>(), 0..8usize).prop_map(|(o, m, s)| Op::AluMR(o, m, s)),
        (0..8u8, r.clone(), 0..6usize).prop_map(|(o, d, s)| Op::Alu8RR(o, d, s)),
        (0..4u8, r.clone()).prop_map(|(o, d)| Op::Unary(o, d)),
        (0..7u8, r.clone(), 0..40u8).prop_map(|(o, d, c)| Op::Shift(o, d, c)),
        (0..7u8, r.clone()).prop_map(|(o, d)| Op::ShiftCl(o, d)),
        (0..4u8, r.clone(), any::<u8>()).prop_map(|(o, d, b)| Op::Bit(o, d, b)),
        (any::<bool>(), r.clone(), 0..8usize).prop_map(|(f, d, s)| Op::BitScan(f, d, s)),
        (any::<bool>(), 0..8usize).prop_map(|(s, r)| Op::Mul(s, r)),
        (r.clone(), 0..8usize).prop_map(|(d, s)| Op::Imul2(d, s)),
        (r.clone(), 0..8usize, any::<i32>()).prop_map(|(d, s, i)| Op::Imul3(d, s, i)),
        (any::<bool>(), any::<u32>(), any::<u32>(), 1..u32::MAX).prop_map(|(s, h, l, d)| Op::Div(s, h, l, d)),
        (0..16u8, 0..6usize).prop_map(|(c, d)| Op::Setcc(c, d)),
        (0..16u8, r.clone(), 0..8usize).prop_map(|(c, d, s)| Op::Cmovcc(c, d, s)),
        (0..8usize).prop_map(Op::Push),
        any::<i32>().prop_map(Op::PushImm),
        r.clone().prop_map(Op::Pop),
        (r.clone(), r.clone()).prop_map(|(a, b)| Op::Xchg(a, b)),
        (r.clone(), 0..8usize, 0..8usize, 0..4u8, any::<i32>()).prop_map(|(d, b, i, s, x)| Op::Lea(d, b, i, s, x)),
        (0..5u8, any::<bool>(), 0..0x400u16, 0..0x400u16, 0..16u8).prop_map(|(k, rep, s, d, n)| Op::Str(k, rep, s, d, n)),
    ]
}

fn alu_code(op: u8, form: usize) -> Code {
    // form: 0 = rm32,r32  1 = rm32,imm32  2 = r32,rm32  3 = rm8,r8
    const T: [[Code; 4]; 8] = [
        [Code::Add_rm32_r32, Code::Add_rm32_imm32, Code::Add_r32_rm32, Code::Add_rm8_r8],
        [Code::Or_rm32_r32, Code::Or_rm32_imm32, Code::Or_r32_rm32, Code::Or_rm8_r8],
        [Code::Adc_rm32_r32, Code::Adc_rm32_imm32, Code::Adc_r32_rm32, Code::Adc_rm8_r8],
        [Code::Sbb_rm32_r32, Code::Sbb_rm32_imm32, Code::Sbb_r32_rm32, Code::Sbb_rm8_r8],
        [Code::And_rm32_r32, Code::And_rm32_imm32, Code::And_r32_rm32, Code::And_rm8_r8],
        [Code::Sub_rm32_r32, Code::Sub_rm32_imm32, Code::Sub_r32_rm32, Code::Sub_rm8_r8],
        [Code::Xor_rm32_r32, Code::Xor_rm32_imm32, Code::Xor_r32_rm32, Code::Xor_rm8_r8],
        [Code::Cmp_rm32_r32, Code::Cmp_rm32_imm32, Code::Cmp_r32_rm32, Code::Cmp_rm8_r8],
    ];
    T[op as usize][form]
}

fn data(disp: i8) -> MemoryOperand {
    MemoryOperand::with_base_displ(Register::EBX, i64::from(disp))
}

/// Expands the operations into instructions. `depth` tracks pushes so that
/// pops never read below the starting stack.
fn instructions(ops: &[Op]) -> Vec<Instruction> {
    use Code as C;
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mov = |r: Register, v: u32| Instruction::with2(C::Mov_r32_imm32, r, v).unwrap();
    for op in ops {
        let i = match *op {
            Op::AluRR(o, d, s) => Instruction::with2(alu_code(o, 0), DEST[d], ANY[s]),
            Op::AluRI(o, d, imm) => Instruction::with2(alu_code(o, 1), DEST[d], imm),
            Op::AluRM(o, d, m) => Instruction::with2(alu_code(o, 2), DEST[d], data(m)),
            Op::AluMR(o, m, s) => Instruction::with2(alu_code(o, 0), data(m), ANY[s]),
            Op::Alu8RR(o, d, s) => Instruction::with2(alu_code(o, 3), DEST8[d], DEST8[s]),
            Op::Unary(o, d) => Instruction::with1([C::Inc_rm32, C::Dec_rm32, C::Neg_rm32, C::Not_rm32][o as usize], DEST[d]),
            Op::Shift(o, d, c) => {
                let codes = [C::Rol_rm32_imm8, C::Ror_rm32_imm8, C::Rcl_rm32_imm8, C::Rcr_rm32_imm8, C::Shl_rm32_imm8, C::Shr_rm32_imm8, C::Sar_rm32_imm8];
                Instruction::with2(codes[o as usize], DEST[d], u32::from(c))
            }
            Op::ShiftCl(o, d) => {
                let codes = [C::Rol_rm32_CL, C::Ror_rm32_CL, C::Rcl_rm32_CL, C::Rcr_rm32_CL, C::Shl_rm32_CL, C::Shr_rm32_CL, C::Sar_rm32_CL];
                Instruction::with2(codes[o as usize], DEST[d], Register::CL)
            }
            Op::Bit(o, d, b) => {
                let codes = [C::Bt_rm32_imm8, C::Bts_rm32_imm8, C::Btr_rm32_imm8, C::Btc_rm32_imm8];
                Instruction::with2(codes[o as usize], DEST[d], u32::from(b))
            }
            Op::BitScan(fwd, d, s) => Instruction::with2(if fwd { C::Bsf_r32_rm32 } else { C::Bsr_r32_rm32 }, DEST[d], ANY[s]),
            Op::Mul(signed, r) => Instruction::with1(if signed { C::Imul_rm32 } else { C::Mul_rm32 }, ANY[r]),
            Op::Imul2(d, s) => Instruction::with2(C::Imul_r32_rm32, DEST[d], ANY[s]),
            Op::Imul3(d, s, imm) => Instruction::with3(C::Imul_r32_rm32_imm32, DEST[d], ANY[s], imm),
            Op::Div(signed, hi, lo, divisor) => {
                // Operands chosen so the quotient fits: EDX:EAX < divisor << 32
                // unsigned; for idiv, a sign-extended dividend and a positive
                // divisor.
                if signed {
                    out.push(mov(Register::EAX, lo));
                    out.push(Instruction::with(C::Cdq));
                    out.push(mov(Register::EBP, divisor & 0x7FFF_FFFF | 1));
                    Instruction::with1(C::Idiv_rm32, Register::EBP)
                } else {
                    out.push(mov(Register::EBP, divisor));
                    out.push(mov(Register::EDX, hi % divisor));
                    out.push(mov(Register::EAX, lo));
                    Instruction::with1(C::Div_rm32, Register::EBP)
                }
            }
            Op::Setcc(cc, d) => {
                let codes = [C::Seto_rm8, C::Setno_rm8, C::Setb_rm8, C::Setae_rm8, C::Sete_rm8, C::Setne_rm8, C::Setbe_rm8, C::Seta_rm8, C::Sets_rm8, C::Setns_rm8, C::Setp_rm8, C::Setnp_rm8, C::Setl_rm8, C::Setge_rm8, C::Setle_rm8, C::Setg_rm8];
                Instruction::with1(codes[cc as usize], DEST8[d])
            }
            Op::Cmovcc(cc, d, s) => {
                let codes = [C::Cmovo_r32_rm32, C::Cmovno_r32_rm32, C::Cmovb_r32_rm32, C::Cmovae_r32_rm32, C::Cmove_r32_rm32, C::Cmovne_r32_rm32, C::Cmovbe_r32_rm32, C::Cmova_r32_rm32, C::Cmovs_r32_rm32, C::Cmovns_r32_rm32, C::Cmovp_r32_rm32, C::Cmovnp_r32_rm32, C::Cmovl_r32_rm32, C::Cmovge_r32_rm32, C::Cmovle_r32_rm32, C::Cmovg_r32_rm32];
                Instruction::with2(codes[cc as usize], DEST[d], ANY[s])
            }
            Op::Push(r) => {
                depth += 1;
                Instruction::with1(C::Push_r32, ANY[r])
            }
            Op::PushImm(imm) => {
                depth += 1;
                Instruction::with1(C::Pushd_imm32, imm)
            }
            Op::Pop(d) => {
                if depth == 0 {
                    continue;
                }
                depth -= 1;
                Instruction::with1(C::Pop_r32, DEST[d])
            }
            Op::Xchg(a, b) => Instruction::with2(C::Xchg_rm32_r32, DEST[a], DEST[b]),
            Op::Lea(d, b, i, s, x) => {
                let index = if ANY[i] == Register::ESP { Register::None } else { ANY[i] };
                let mem = MemoryOperand::new(ANY[b], index, 1 << s, i64::from(x), 4, false, Register::None);
                Instruction::with2(C::Lea_r32_m, DEST[d], mem)
            }
            Op::Str(kind, rep, src, dst, n) => {
                // ESI/EDI inside the data area; a bounded count; DF clear
                // or set at random through the low bit of `n`.
                out.push(mov(Register::ESI, DATA + 0x400 + u32::from(src)));
                out.push(mov(Register::EDI, DATA + 0x400 + u32::from(dst)));
                out.push(mov(Register::ECX, u32::from(n)));
                out.push(Instruction::with(if n & 1 == 0 { C::Cld } else { C::Std }));
                let (plain, repd) = match kind {
                    0 => (C::Movsb_m8_m8, C::Movsb_m8_m8),
                    1 => (C::Stosd_m32_EAX, C::Stosd_m32_EAX),
                    2 => (C::Lodsb_AL_m8, C::Lodsb_AL_m8),
                    3 => (C::Cmpsb_m8_m8, C::Cmpsb_m8_m8),
                    _ => (C::Scasb_AL_m8, C::Scasb_AL_m8),
                };
                let code = if rep { repd } else { plain };
                let mut i = match kind {
                    0 => Instruction::with_movsb(32, Register::None, iced_x86::RepPrefixKind::None),
                    1 => Instruction::with_stosd(32, iced_x86::RepPrefixKind::None),
                    2 => Instruction::with_lodsb(32, Register::None, iced_x86::RepPrefixKind::None),
                    3 => Instruction::with_cmpsb(32, Register::None, iced_x86::RepPrefixKind::None),
                    _ => Instruction::with_scasb(32, iced_x86::RepPrefixKind::None),
                }
                .unwrap();
                let _ = code;
                if rep {
                    if kind >= 3 {
                        i.set_has_repe_prefix(true);
                    } else {
                        i.set_has_rep_prefix(true);
                    }
                }
                Ok(i)
            }
        };
        out.push(i.expect("valid instruction"));
    }
    out
}

fn encode(insns: &[Instruction], tail: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let mut enc = Encoder::new(32);
    let mut ips = Vec::new();
    let mut ip = u64::from(CODE);
    for i in insns {
        ips.push(ip as u32);
        ip += enc.encode(i, ip).expect("encodable") as u64;
    }
    let mut code = enc.take_buffer();
    // Epilogue: mov [ESP_SLOT], esp (flag-free), then the tail.
    ips.push(ip as u32);
    code.push(0x89);
    code.push(0x25);
    code.extend_from_slice(&ESP_SLOT.to_le_bytes());
    code.extend_from_slice(tail);
    (code, ips)
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    gpr: [u32; 8],
    eflags: u32,
    esp: u32,
    data: Vec<u8>,
    stack: Vec<u8>,
}

struct Harness {
    vm: Vm,
}

impl Harness {
    fn new() -> Harness {
        let ram = bt86_native::create_ram(8 << 20, &std::env::temp_dir()).expect("RAM");
        let machine = Machine::new(ram, Box::new(std::io::sink()));
        Harness { vm: Vm::new(machine, Cpu::new()).expect("VM") }
    }

    fn reset(&mut self, regs: &[u32; 8], eflags: u32, data: &[u8]) {
        let m = &mut self.vm.machine;
        m.write_phys(GuestPhysAddr(DATA), data);
        m.write_phys(GuestPhysAddr(STACK_TOP - STACK_LEN), &vec![0xA5; STACK_LEN as usize]);
        m.write_phys(GuestPhysAddr(ESP_SLOT), &[0; 4]);
        let cpu = &mut self.vm.cpu;
        cpu.gpr = *regs;
        cpu.gpr[gpr::EBX] = DATA_BASE;
        cpu.gpr[gpr::ESP] = STACK_TOP;
        cpu.eflags = flags::RESERVED1 | (eflags & flags::STATUS);
        cpu.halted = false;
    }

    fn outcome(&mut self) -> Outcome {
        let m = &mut self.vm.machine;
        let mut data = vec![0; DATA_LEN as usize];
        m.read_phys(GuestPhysAddr(DATA), &mut data);
        let mut stack = vec![0; STACK_LEN as usize - 4];
        m.read_phys(GuestPhysAddr(STACK_TOP - STACK_LEN), &mut stack);
        let mut esp = [0; 4];
        m.read_phys(GuestPhysAddr(ESP_SLOT), &mut esp);
        let mut gpr = self.vm.cpu.gpr;
        gpr[gpr::ESP] = 0;
        Outcome { gpr, eflags: self.vm.cpu.eflags & flags::NATIVE, esp: u32::from_le_bytes(esp), data, stack }
    }

    fn native(&mut self, insns: &[Instruction], regs: &[u32; 8], eflags: u32, data: &[u8]) -> Outcome {
        // Epilogue: restore the ESP the direct call started with, then ret.
        let mut tail = vec![0xBC];
        tail.extend_from_slice(&(STACK_TOP - 4).to_le_bytes());
        tail.push(0xC3);
        let (code, _) = encode(insns, &tail);
        self.vm.machine.write_phys(GuestPhysAddr(CODE), &code);
        self.reset(regs, eflags, data);
        let r = self.vm.call_direct(CODE).expect("direct call");
        assert_eq!(r, bt86_native::direct::DirectOutcome::Returned, "native run faulted");
        // The direct call pushed its return address at STACK_TOP - 4.
        self.outcome()
    }

    fn translated(&mut self, insns: &[Instruction], cuts: &[prop::sample::Index], regs: &[u32; 8], eflags: u32, data: &[u8]) -> Outcome {
        let (code, ips) = encode(insns, &[0xF4]); // hlt ends the run
        self.vm.machine.write_phys(GuestPhysAddr(CODE), &code);
        self.vm.flush_translations().unwrap();
        let breaks: BTreeSet<u32> = cuts.iter().map(|c| ips[c.index(ips.len())]).collect();
        self.vm.set_unit_breaks(breaks);
        self.reset(regs, eflags, data);
        // Same starting stack as the direct call: ESP below a return slot.
        self.vm.cpu.gpr[gpr::ESP] = STACK_TOP - 4;
        self.vm.cpu.eip = CODE;
        let exit = self.vm.run_steps(100_000).expect("run");
        assert!(matches!(exit, Exit::Halted { .. }), "translated run ended with {exit:?}");
        self.outcome()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn translated_matches_native(
        ops in prop::collection::vec(op_strategy(), 1..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        regs in any::<[u32; 8]>(),
        eflags in any::<u32>(),
        data in prop::collection::vec(any::<u8>(), DATA_LEN as usize),
    ) {
        let insns = instructions(&ops);
        HARNESS.with(|h| {
            let mut h = h.borrow_mut();
            let native = h.native(&insns, &regs, eflags, &data);
            let translated = h.translated(&insns, &cuts, &regs, eflags, &data);
            prop_assert_eq!(native, translated, "ops {:?}", ops);
            Ok(())
        })?;
    }
}

thread_local! {
    static HARNESS: std::cell::RefCell<Harness> = std::cell::RefCell::new(Harness::new());
}
