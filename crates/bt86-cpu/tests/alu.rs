//! Checks `bt86_cpu::alu` against the behaviour of a real processor.
//!
//! The tables in `tests/data/` were produced by `tests/data/gen_alu.c`, which
//! executes each instruction on the host with inline assembly and prints
//! the operands, the input flags, and the result and flags the hardware
//! produced. Every line is one case; this test recomputes each case with the
//! `alu` functions and compares all six status flags, including those the
//! SDM leaves undefined, since bt86 promises to match the host there (see
//! the `alu` module documentation). How to regenerate the tables is written
//! at the top of the generator.

use bt86_cpu::alu::{self, BitOp, OpSize, ShiftOp};

/// One parsed line: the operation name, the operand size and the numbers on
/// either side of the arrow.
struct Case<'a> {
    line: usize,
    text: &'a str,
    op: &'a str,
    size: OpSize,
    inputs: Vec<u64>,
    outputs: Vec<u64>,
}

fn parse(table: &str) -> Vec<Case<'_>> {
    let mut cases = Vec::new();
    for (index, text) in table.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let (lhs, rhs) = text
            .split_once("->")
            .unwrap_or_else(|| panic!("line {}: no '->' in {text:?}", index + 1));
        let mut words = lhs.split_whitespace();
        let op = words
            .next()
            .unwrap_or_else(|| panic!("line {}: empty case", index + 1));
        let bits: u32 = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("line {}: bad operand size in {text:?}", index + 1));
        let size = OpSize::from_bytes(bits / 8).unwrap_or_else(|| {
            panic!("line {}: operand size {bits} is not 8, 16 or 32", index + 1)
        });
        let hex = |w: &str| {
            u64::from_str_radix(w, 16)
                .unwrap_or_else(|_| panic!("line {}: {w:?} is not hexadecimal", index + 1))
        };
        cases.push(Case {
            line: index + 1,
            text,
            op,
            size,
            inputs: words.map(hex).collect(),
            outputs: rhs.split_whitespace().map(hex).collect(),
        });
    }
    cases
}

/// Computes one case with `alu`, returning the numbers that should stand to
/// the right of the arrow.
fn compute(case: &Case<'_>) -> Vec<u64> {
    let size = case.size;
    let input = |i: usize| case.inputs[i];
    let (a, b, f) = (input(0) as u32, input(1) as u32, input(2) as u32);
    let pair = |(r, flags): (u32, u32)| vec![u64::from(r), u64::from(flags)];
    let triple =
        |(x, y, flags): (u32, u32, u32)| vec![u64::from(x), u64::from(y), u64::from(flags)];
    let shift = |op| pair(alu::shift(op, size, a, b, f));
    let bit = |op| pair(alu::bit_test(op, size, a, b, f));
    match case.op {
        "add" => pair(alu::add(size, a, b, false)),
        "adc" => pair(alu::add(size, a, b, f & 1 != 0)),
        "sub" => pair(alu::sub(size, a, b, false)),
        "sbb" => pair(alu::sub(size, a, b, f & 1 != 0)),
        "and" => pair(alu::and(size, a, b)),
        "or" => pair(alu::or(size, a, b)),
        "xor" => pair(alu::xor(size, a, b)),
        "inc" => pair(alu::inc(size, a, f)),
        "dec" => pair(alu::dec(size, a, f)),
        "neg" => pair(alu::neg(size, a)),
        // NOT changes no flag: the flags out are the flags in.
        "not" => pair((alu::not(size, a), f)),
        "bt" => bit(BitOp::Test),
        "bts" => bit(BitOp::Set),
        "btr" => bit(BitOp::Reset),
        "btc" => bit(BitOp::Complement),
        "shl" => shift(ShiftOp::Shl),
        "shr" => shift(ShiftOp::Shr),
        "sar" => shift(ShiftOp::Sar),
        "rol" => shift(ShiftOp::Rol),
        "ror" => shift(ShiftOp::Ror),
        "rcl" => shift(ShiftOp::Rcl),
        "rcr" => shift(ShiftOp::Rcr),
        "mul" => triple(alu::mul(size, a, b, f)),
        "imul" => triple(alu::imul(size, a, b, f)),
        "imul2" => {
            let (low, _high, flags) = alu::imul(size, a, b, f);
            vec![u64::from(low), u64::from(flags)]
        }
        "div" | "idiv" => {
            let divide = if case.op == "div" {
                alu::div
            } else {
                alu::idiv
            };
            match divide(size, input(0), input(1) as u32, input(2) as u32) {
                Ok(t) => triple(t),
                Err(e) => panic!(
                    "line {}: {e} for a case the hardware divided: {}",
                    case.line, case.text
                ),
            }
        }
        other => panic!("line {}: unknown operation {other:?}", case.line),
    }
}

/// Runs every case of a table and reports the first mismatches together, so
/// that a wrong flag rule shows its pattern at once.
fn check_table(name: &str, table: &str) {
    let cases = parse(table);
    assert!(
        cases.len() > 100,
        "{name} has only {} cases: was it truncated?",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let got = compute(case);
        if got != case.outputs {
            let got: Vec<String> = got.iter().map(|v| format!("{v:x}")).collect();
            failures.push(format!(
                "{name}:{}: {}   (alu gives {})",
                case.line,
                case.text,
                got.join(" ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases in {name} differ from the hardware; the first ones:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn add_sub_logic_and_bit_tests_match_hardware() {
    check_table("alu.txt", include_str!("data/alu.txt"));
}

#[test]
fn shifts_and_rotates_match_hardware() {
    check_table("shift.txt", include_str!("data/shift.txt"));
}

#[test]
fn multiply_and_divide_match_hardware() {
    check_table("muldiv.txt", include_str!("data/muldiv.txt"));
}

/// Flags a few rows of the SDM's condition table (Vol. 1 Appendix B) and
/// checks `alu::condition` on them.
#[test]
fn condition_codes_follow_the_sdm_table() {
    use iced_x86::ConditionCode as C;
    const CF: u32 = 1;
    const ZF: u32 = 0x40;
    const SF: u32 = 0x80;
    const OF: u32 = 0x800;
    let table: &[(C, u32, bool)] = &[
        (C::b, CF, true),
        (C::ae, CF, false),
        (C::be, ZF, true),
        (C::a, 0, true),
        (C::a, CF, false),
        (C::l, SF, true),
        (C::l, SF | OF, false),
        (C::ge, SF | OF, true),
        (C::le, ZF, true),
        (C::g, SF | OF, true),
        (C::g, SF | OF | ZF, false),
        (C::o, OF, true),
        (C::ns, SF, false),
    ];
    for &(cc, eflags, expected) in table {
        assert_eq!(
            alu::condition(cc, eflags),
            expected,
            "{cc:?} with eflags {eflags:#x}"
        );
    }
}
