//! Loading segment registers, LDTR and TR in protected mode, with every
//! check the processor makes and the exact error code it reports.
//!
//! This module owns the privilege and type rules of Intel SDM Vol. 3A
//! §5.5-5.8 as they apply to loads: `mov sreg`, `pop sreg` and `lds` and
//! friends (the MOV and POP pseudocode in Vol. 2), the code-segment checks
//! shared by far `jmp`/`call`/`ret`, `iret` and interrupt delivery, and
//! `lldt`/`ltr`. Every successful load goes through [`Cpu::set_segment`] so
//! that the native layer sees the generation counter move and rebuilds its
//! shadow descriptors. It does not fetch instructions, push frames or
//! decide where control goes: callers in `exec.rs` and `interrupt.rs` do.

use bt86_machine::Bus;

use crate::descriptor::{self, Descriptor, Fetched, GateKind, SegmentDescriptor, SegmentKind};
use crate::exception::Exception;
use crate::state::{Cpu, SegReg, Segment, Selector};

fn gp(selector: Selector) -> Exception {
    Exception::GeneralProtection(selector.error_code())
}

/// Checks a load of `selector` into DS, ES, FS, GS or SS without changing
/// anything, and returns the hidden part the register would receive with
/// the descriptor it came from (`None` for a null selector).
///
/// The rules are those of the MOV and POP pseudocode (SDM Vol. 2B) and
/// Vol. 3A §5.6-5.7:
/// - SS: a null selector raises #GP(0); otherwise the entry must be within
///   the table, RPL and DPL must both equal CPL, and the segment must be a
///   writable data segment, else #GP(selector); a not-present segment
///   raises #SS(selector).
/// - DS/ES/FS/GS: a null selector is allowed and makes the register
///   unusable; otherwise the entry must be within the table and be a data
///   segment or a readable code segment, and unless it is conforming code
///   both RPL and CPL must be <= DPL, else #GP(selector); a not-present
///   segment raises #NP(selector).
///
/// CS is never loaded this way (`mov cs` is #UD), so asking for it is #UD.
pub fn check_data_segment(
    cpu: &Cpu,
    bus: &mut dyn Bus,
    reg: SegReg,
    selector: Selector,
) -> Result<(Segment, Option<Fetched>), Exception> {
    if reg == SegReg::Cs {
        return Err(Exception::InvalidOpcode);
    }
    if selector.is_null() {
        if reg == SegReg::Ss {
            return Err(Exception::GeneralProtection(0));
        }
        // The register keeps the selector the guest wrote (its RPL too) but
        // becomes unusable: any access through it raises #GP(0).
        return Ok((Segment { selector, base: 0, limit: 0, access: 0 }, None));
    }
    if reg == SegReg::Ss {
        let (segment, fetched) = check_stack_segment(cpu, bus, selector, cpu.cpl())?;
        return Ok((segment, Some(fetched)));
    }
    let fetched = descriptor::fetch_descriptor(cpu, bus, selector)?;
    let Descriptor::Segment(desc) = fetched.descriptor else {
        return Err(gp(selector));
    };
    let cpl = cpu.cpl();
    let rpl = selector.rpl();
    let dpl = desc.dpl();
    {
        let privilege_applies = match desc.kind() {
            Some(SegmentKind::Data { .. }) => true,
            Some(SegmentKind::Code { readable: true, conforming }) => !conforming,
            // Execute-only code, LDT and TSS descriptors cannot be loaded
            // into a data segment register.
            _ => return Err(gp(selector)),
        };
        if privilege_applies && (rpl > dpl || cpl > dpl) {
            return Err(gp(selector));
        }
        if !desc.is_present() {
            return Err(Exception::SegmentNotPresent(selector.error_code()));
        }
    }
    // The hidden part records the Accessed bit that the load sets.
    let mut segment = desc.to_segment(selector);
    segment.access |= 1;
    Ok((segment, Some(fetched)))
}

/// Checks `selector` as a new stack segment for code that will run at
/// `cpl`, and returns the hidden part SS would receive with the descriptor
/// it came from. `mov ss`/`pop ss`/`lss` pass the current CPL; far `ret`
/// and `iret` to an outer level pass the new one (SDM Vol. 2B RET and
/// Vol. 2A IRET, "RETURN-TO-OUTER-PRIVILEGE-LEVEL"); inner-level transfers
/// pass the handler's (the TSS stack, see `tss.rs`).
///
/// The rules and error codes are the MOV SS ones: a null selector raises
/// #GP(0); an entry beyond its table, an RPL or DPL other than `cpl`, or
/// anything but a writable data segment raises #GP(selector); a
/// not-present segment raises #SS(selector). Inner-level transfers report
/// the same failures as #TS; `tss::inner_stack` converts them.
pub fn check_stack_segment(
    cpu: &Cpu,
    bus: &mut dyn Bus,
    selector: Selector,
    cpl: u8,
) -> Result<(Segment, Fetched), Exception> {
    if selector.is_null() {
        return Err(Exception::GeneralProtection(0));
    }
    let fetched = descriptor::fetch_descriptor(cpu, bus, selector)?;
    let Descriptor::Segment(desc) = fetched.descriptor else {
        return Err(gp(selector));
    };
    let writable_data = matches!(desc.kind(), Some(SegmentKind::Data { writable: true, .. }));
    if selector.rpl() != cpl || !writable_data || desc.dpl() != cpl {
        return Err(gp(selector));
    }
    if !desc.is_present() {
        return Err(Exception::StackFault(selector.error_code()));
    }
    let mut segment = desc.to_segment(selector);
    segment.access |= 1;
    Ok((segment, fetched))
}

/// Loads DS, ES, FS, GS or SS from `selector` in protected mode: checks as
/// in [`check_data_segment`], sets the descriptor's Accessed bit in guest
/// memory, then replaces the register. On error nothing has changed.
pub fn load_segment(cpu: &mut Cpu, bus: &mut dyn Bus, reg: SegReg, selector: Selector) -> Result<(), Exception> {
    let (segment, fetched) = check_data_segment(cpu, bus, reg, selector)?;
    if let Some(fetched) = fetched {
        descriptor::set_accessed(cpu, bus, &fetched)?;
    }
    cpu.set_segment(reg, segment);
    Ok(())
}

/// Why CS is being loaded: each kind of transfer has its own privilege
/// rules for the target code segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Far `jmp` or `call` straight to a code segment (SDM Vol. 3A §5.8.1):
    /// no privilege change.
    JmpOrCall,
    /// Far `ret` or `iret` (Vol. 3A §5.8.6, Vol. 2 RET/IRET): the return
    /// selector's RPL is the new CPL and must be >= CPL.
    Return,
    /// Through an interrupt or trap gate (Vol. 3A §6.12.1): the target's
    /// DPL must be <= CPL. `ext` is the EXT bit of any error code, set when
    /// the event came from outside the program.
    Interrupt { ext: bool },
    /// Through a call gate (Vol. 3A §5.8.4, Table 5-3 and Figure 5-12): a
    /// `call` may reach a non-conforming segment of any DPL <= CPL and then
    /// runs at that DPL; a `jmp` only one with DPL = CPL. Conforming
    /// targets need DPL <= CPL and keep CPL. The RPL of the gate's code
    /// selector is not checked.
    CallGate { is_call: bool },
}

/// A checked far-transfer target: the hidden part CS will receive (its
/// selector already carrying the new CPL as RPL) and the descriptor it came
/// from, so the caller can set the Accessed bit when it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeTarget {
    pub segment: Segment,
    pub fetched: Fetched,
    /// The privilege level the processor will run at after the transfer.
    pub new_cpl: u8,
}

impl CodeTarget {
    /// Whether the transfer changes the privilege level.
    pub fn changes_privilege(&self, cpu: &Cpu) -> bool {
        self.new_cpl != cpu.cpl()
    }
}

/// Checks `selector` as the target code segment of a far transfer and
/// returns what CS will hold, without changing anything. The EIP limit
/// check is left to the caller, which knows the new EIP.
///
/// Call gates are not code segments: `transfer.rs` reads the gate first
/// and then calls this with [`Transfer::CallGate`] for the gate's target.
/// Reached with a call gate directly, this raises #GP(selector). For
/// [`Transfer::JmpOrCall`] a task gate or TSS (a task switch) is recognised
/// but unsupported: it raises #GP(selector) with a warning.
pub fn check_code_segment(
    cpu: &Cpu,
    bus: &mut dyn Bus,
    selector: Selector,
    transfer: Transfer,
) -> Result<CodeTarget, Exception> {
    let ext = u16::from(matches!(transfer, Transfer::Interrupt { ext: true }));
    let gp_sel = Exception::GeneralProtection(selector.error_code() | ext);
    if selector.is_null() {
        return Err(Exception::GeneralProtection(ext));
    }
    let fetched = descriptor::read_descriptor(cpu, bus, selector)?.ok_or(gp_sel)?;
    let desc: SegmentDescriptor = match fetched.descriptor {
        Descriptor::Segment(d) if matches!(d.kind(), Some(SegmentKind::Code { .. })) => d,
        Descriptor::Segment(d) if transfer == Transfer::JmpOrCall && matches!(d.kind(), Some(SegmentKind::Tss { .. })) => {
            log::warn!("unsupported: far jmp/call to TSS {selector} (task switch)");
            return Err(gp_sel);
        }
        Descriptor::Gate(g) if transfer == Transfer::JmpOrCall && g.kind == GateKind::Task => {
            log::warn!("unsupported: far jmp/call through a task gate at {selector} (task switch)");
            return Err(gp_sel);
        }
        _ => return Err(gp_sel),
    };
    let Some(SegmentKind::Code { conforming, .. }) = desc.kind() else {
        return Err(gp_sel);
    };
    let cpl = cpu.cpl();
    let rpl = selector.rpl();
    let dpl = desc.dpl();
    let new_cpl = match transfer {
        // SDM Vol. 2 JMP/CALL, "CONFORMING-CODE-SEGMENT" and
        // "NONCONFORMING-CODE-SEGMENT": CPL never changes, CS.RPL <- CPL.
        Transfer::JmpOrCall => {
            let allowed = if conforming { dpl <= cpl } else { rpl <= cpl && dpl == cpl };
            if !allowed {
                return Err(gp_sel);
            }
            cpl
        }
        // SDM Vol. 2 RET and IRET: the returned-to RPL becomes CPL.
        Transfer::Return => {
            let allowed = rpl >= cpl && if conforming { dpl <= rpl } else { dpl == rpl };
            if !allowed {
                return Err(gp_sel);
            }
            rpl
        }
        // SDM Vol. 2 INT n, "TRAP-OR-INTERRUPT-GATE": a handler never runs
        // less privileged than the interrupted code; a non-conforming one
        // runs at its DPL, a conforming one at the current CPL.
        Transfer::Interrupt { .. } => {
            if dpl > cpl {
                return Err(gp_sel);
            }
            if conforming { cpl } else { dpl }
        }
        // SDM Vol. 2A CALL and JMP, "CALL-GATE": the same rule as for
        // interrupts for a call; a jmp never changes CPL.
        Transfer::CallGate { is_call } => {
            let allowed = if conforming || is_call { dpl <= cpl } else { dpl == cpl };
            if !allowed {
                return Err(gp_sel);
            }
            if conforming { cpl } else { dpl }
        }
    };
    if !desc.is_present() {
        return Err(Exception::SegmentNotPresent(selector.error_code() | ext));
    }
    let mut segment = desc.to_segment(Selector((selector.0 & !3) | u16::from(new_cpl)));
    segment.access |= 1;
    Ok(CodeTarget { segment, fetched, new_cpl })
}

/// Commits a checked far transfer: checks `eip` against the new code
/// segment's limit (#GP(0) otherwise, or #GP(EXT) for interrupts), sets the
/// Accessed bit, loads CS and EIP.
pub fn commit_code_target(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    target: &CodeTarget,
    eip: u32,
    ext: bool,
) -> Result<(), Exception> {
    if eip > target.segment.limit {
        return Err(Exception::GeneralProtection(u16::from(ext)));
    }
    descriptor::set_accessed(cpu, bus, &target.fetched)?;
    cpu.set_segment(SegReg::Cs, target.segment);
    cpu.eip = eip;
    Ok(())
}

/// Loads CS:EIP for a far transfer at the same privilege level: the checks
/// of [`check_code_segment`], then [`commit_code_target`]. A transfer that
/// would change CPL also needs a stack switch, which only the callers in
/// `transfer.rs` and `interrupt.rs` make; here it is refused with
/// #GP(selector) (plus EXT for interrupts) and a log line naming the
/// caller's mistake.
pub fn load_cs_for_transfer(
    cpu: &mut Cpu,
    bus: &mut dyn Bus,
    selector: Selector,
    eip: u32,
    transfer: Transfer,
) -> Result<(), Exception> {
    let target = check_code_segment(cpu, bus, selector, transfer)?;
    let ext = matches!(transfer, Transfer::Interrupt { ext: true });
    if target.changes_privilege(cpu) {
        log::warn!(
            "load_cs_for_transfer: {transfer:?} to {selector} would change CPL from {} to {}; \
             privilege changes go through transfer.rs or interrupt.rs",
            cpu.cpl(),
            target.new_cpl
        );
        return Err(Exception::GeneralProtection(selector.error_code() | u16::from(ext)));
    }
    commit_code_target(cpu, bus, &target, eip, ext)
}

/// `lldt`: loads LDTR from a GDT selector (SDM Vol. 2A LLDT). A null
/// selector makes LDTR unusable; a selector into the LDT, beyond the GDT
/// limit or naming anything but an LDT descriptor raises #GP(selector); a
/// not-present LDT raises #NP(selector). The CPL 0 check belongs to the
/// caller.
pub fn load_ldtr(cpu: &mut Cpu, bus: &mut dyn Bus, selector: Selector) -> Result<(), Exception> {
    if selector.is_null() {
        cpu.ldtr = Segment { selector, base: 0, limit: 0, access: 0 };
        return Ok(());
    }
    if selector.is_ldt() {
        return Err(gp(selector));
    }
    let fetched = descriptor::fetch_descriptor(cpu, bus, selector)?;
    let Descriptor::Segment(desc) = fetched.descriptor else {
        return Err(gp(selector));
    };
    if desc.kind() != Some(SegmentKind::Ldt) {
        return Err(gp(selector));
    }
    if !desc.is_present() {
        return Err(Exception::SegmentNotPresent(selector.error_code()));
    }
    cpu.ldtr = desc.to_segment(selector);
    Ok(())
}

/// `ltr`: loads TR from a GDT selector and marks the TSS busy in the GDT
/// (SDM Vol. 2A LTR). A null selector raises #GP(0); an LDT selector, one
/// beyond the GDT limit, or one naming anything but an available TSS
/// raises #GP(selector); a not-present TSS raises #NP(selector). The CPL 0
/// check belongs to the caller.
pub fn load_tr(cpu: &mut Cpu, bus: &mut dyn Bus, selector: Selector) -> Result<(), Exception> {
    if selector.is_null() {
        return Err(Exception::GeneralProtection(0));
    }
    if selector.is_ldt() {
        return Err(gp(selector));
    }
    let fetched = descriptor::fetch_descriptor(cpu, bus, selector)?;
    let Descriptor::Segment(desc) = fetched.descriptor else {
        return Err(gp(selector));
    };
    if !matches!(desc.kind(), Some(SegmentKind::Tss { busy: false, .. })) {
        return Err(gp(selector));
    }
    if !desc.is_present() {
        return Err(Exception::SegmentNotPresent(selector.error_code()));
    }
    descriptor::set_tss_busy(cpu, bus, &fetched)?;
    let mut tr = desc.to_segment(selector);
    tr.access |= 0x2;
    cpu.tr = tr;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // one tuple per table row
mod tests {
    use super::*;
    use crate::descriptor::encode_segment;
    use crate::test_bus::TestBus;
    use proptest::prelude::*;

    const GDT: u32 = 0x1000;

    /// A CPU at `cpl` with a GDT at 0x1000 holding `entries` (entry 0 is
    /// the null descriptor).
    fn setup(cpl: u8, entries: &[u64]) -> (Cpu, TestBus) {
        let mut bus = TestBus::new(0x10000);
        let mut cpu = Cpu::new();
        cpu.gdtr.base = GDT;
        cpu.gdtr.limit = (8 * (entries.len() + 1) - 1) as u16;
        for (i, raw) in entries.iter().enumerate() {
            bus.write_u64(GDT + 8 * (i as u32 + 1), *raw);
        }
        let cs = cpu.seg[SegReg::Cs as usize];
        cpu.seg[SegReg::Cs as usize].selector = Selector((cs.selector.0 & !3) | u16::from(cpl));
        (cpu, bus)
    }

    /// Access rights: present, S, the given DPL and type, 32-bit, 4 KiB
    /// granularity.
    fn acc(dpl: u8, ty: u8) -> u16 {
        0xC090 | (u16::from(dpl) << 5) | u16::from(ty)
    }

    #[test]
    fn data_segment_loads() {
        use Exception::*;
        // (reg, cpl, descriptor access at GDT index 1, selector, expected)
        let cases: &[(SegReg, u8, u16, u16, Result<(), Exception>)] = &[
            (SegReg::Ds, 0, acc(0, 0x3), 0x08, Ok(())),
            (SegReg::Ds, 3, acc(0, 0x3), 0x0B, Err(GeneralProtection(0x08))), // CPL > DPL
            (SegReg::Ds, 0, acc(0, 0x3), 0x0B, Err(GeneralProtection(0x08))), // RPL > DPL
            (SegReg::Ds, 3, acc(3, 0x3), 0x0B, Ok(())),
            (SegReg::Ds, 3, acc(0, 0xE), 0x0B, Ok(())), // conforming readable code: no privilege check
            (SegReg::Ds, 0, acc(0, 0x8), 0x08, Err(GeneralProtection(0x08))), // execute-only code
            (SegReg::Ds, 0, acc(0, 0xA), 0x08, Ok(())), // readable code
            (SegReg::Ds, 0, 0x0089, 0x08, Err(GeneralProtection(0x08))), // a TSS
            (SegReg::Es, 0, acc(0, 0x3) & !0x80, 0x08, Err(SegmentNotPresent(0x08))),
            (SegReg::Fs, 0, acc(0, 0x3), 0x10, Err(GeneralProtection(0x10))), // beyond the GDT
            (SegReg::Gs, 3, acc(0, 0x3), 0x03, Ok(())), // null selector is fine for GS
            (SegReg::Ss, 0, acc(0, 0x3), 0x00, Err(GeneralProtection(0))),
            (SegReg::Ss, 0, acc(0, 0x3), 0x08, Ok(())),
            (SegReg::Ss, 0, acc(0, 0x1), 0x08, Err(GeneralProtection(0x08))), // read-only
            (SegReg::Ss, 3, acc(3, 0x3), 0x08, Err(GeneralProtection(0x08))), // RPL != CPL
            (SegReg::Ss, 0, acc(3, 0x3), 0x08, Err(GeneralProtection(0x08))), // DPL != CPL
            (SegReg::Ss, 0, acc(0, 0x3) & !0x80, 0x08, Err(StackFault(0x08))),
            (SegReg::Cs, 0, acc(0, 0xA), 0x08, Err(InvalidOpcode)),
        ];
        for &(reg, cpl, access, sel, expected) in cases {
            let (mut cpu, mut bus) = setup(cpl, &[encode_segment(0x1234_0000, 0xFFFFF, access)]);
            let before = cpu.clone();
            let result = load_segment(&mut cpu, &mut bus, reg, Selector(sel));
            assert_eq!(result, expected, "{reg:?} cpl {cpl} access {access:#x} selector {sel:#x}");
            if result.is_ok() {
                let seg = cpu.segment(reg);
                assert_eq!(seg.selector, Selector(sel));
                if Selector(sel).is_null() {
                    assert_eq!(seg.access, 0, "a null load leaves the register unusable");
                } else {
                    assert_eq!(seg.base, 0x1234_0000);
                    assert_eq!(seg.access, access | 1);
                    // The Accessed bit was set in the GDT, too.
                    assert_eq!(bus.ram[(GDT + 8 + 5) as usize] & 1, 1);
                }
            } else {
                assert_eq!(cpu, before, "a failed load changes nothing");
            }
        }
    }

    #[test]
    fn generation_counter_moves_only_on_change() {
        let raw = encode_segment(0, 0xFFFFF, acc(0, 0x2));
        let (mut cpu, mut bus) = setup(0, &[raw]);
        let g = cpu.segment_generation;
        load_segment(&mut cpu, &mut bus, SegReg::Fs, Selector(0x08)).unwrap();
        assert_eq!(cpu.segment_generation, g + 1);
        assert_eq!(bus.read_u64(GDT + 8), raw | (1 << 40), "only the Accessed bit changed in the GDT");
        load_segment(&mut cpu, &mut bus, SegReg::Fs, Selector(0x08)).unwrap();
        assert_eq!(cpu.segment_generation, g + 1);
    }

    #[test]
    fn code_targets() {
        use Exception::*;
        // (transfer, cpl, code access, selector, expected new CPL or error)
        let cases: &[(Transfer, u8, u16, u16, Result<u8, Exception>)] = &[
            (Transfer::JmpOrCall, 0, acc(0, 0xA), 0x08, Ok(0)),
            (Transfer::JmpOrCall, 3, acc(3, 0xA), 0x0B, Ok(3)),
            (Transfer::JmpOrCall, 3, acc(0, 0xA), 0x08, Err(GeneralProtection(0x08))), // DPL != CPL
            (Transfer::JmpOrCall, 0, acc(0, 0xA), 0x0B, Err(GeneralProtection(0x08))), // RPL > CPL
            (Transfer::JmpOrCall, 3, acc(0, 0xE), 0x0B, Ok(3)), // conforming: CPL stays 3
            (Transfer::JmpOrCall, 0, acc(3, 0xE), 0x08, Err(GeneralProtection(0x08))), // conforming DPL > CPL
            (Transfer::JmpOrCall, 0, acc(0, 0x3), 0x08, Err(GeneralProtection(0x08))), // data
            (Transfer::JmpOrCall, 0, acc(0, 0xA) & !0x80, 0x08, Err(SegmentNotPresent(0x08))),
            (Transfer::JmpOrCall, 0, acc(0, 0xA), 0x00, Err(GeneralProtection(0))),
            (Transfer::Return, 0, acc(3, 0xA), 0x0B, Ok(3)),
            (Transfer::Return, 3, acc(0, 0xA), 0x08, Err(GeneralProtection(0x08))), // RPL < CPL
            (Transfer::Return, 0, acc(0, 0xA), 0x0B, Err(GeneralProtection(0x08))), // DPL != RPL
            (Transfer::Interrupt { ext: true }, 3, acc(0, 0xA), 0x08, Ok(0)),
            (Transfer::Interrupt { ext: true }, 0, acc(3, 0xA), 0x08, Err(GeneralProtection(0x09))),
            (Transfer::Interrupt { ext: false }, 0, acc(0, 0x3), 0x08, Err(GeneralProtection(0x08))),
            (Transfer::Interrupt { ext: true }, 0, acc(0, 0xA) & !0x80, 0x08, Err(SegmentNotPresent(0x09))),
        ];
        for &(transfer, cpl, access, sel, expected) in cases {
            let (cpu, mut bus) = setup(cpl, &[encode_segment(0, 0xFFFFF, access)]);
            let got = check_code_segment(&cpu, &mut bus, Selector(sel), transfer).map(|t| t.new_cpl);
            assert_eq!(got, expected, "{transfer:?} cpl {cpl} access {access:#x} sel {sel:#x}");
        }
    }

    #[test]
    fn far_transfer_checks_eip_limit() {
        let (mut cpu, mut bus) = setup(0, &[encode_segment(0, 0xFFFF, 0x409A)]);
        assert_eq!(
            load_cs_for_transfer(&mut cpu, &mut bus, Selector(0x08), 0x1_0000, Transfer::JmpOrCall),
            Err(Exception::GeneralProtection(0))
        );
        load_cs_for_transfer(&mut cpu, &mut bus, Selector(0x08), 0xFFFF, Transfer::JmpOrCall).unwrap();
        assert_eq!((cpu.segment(SegReg::Cs).selector, cpu.eip), (Selector(0x08), 0xFFFF));
    }

    #[test]
    fn ldtr_and_tr_loads() {
        use Exception::*;
        let entries = [
            encode_segment(0x5000, 0x1F, 0x0082),        // 0x08: LDT
            encode_segment(0x6000, 0x67, 0x0089),        // 0x10: available 32-bit TSS
            encode_segment(0x6000, 0x67, 0x008B),        // 0x18: busy TSS
            encode_segment(0x6000, 0x67, 0x0009),        // 0x20: not-present TSS
            encode_segment(0, 0xFFFFF, acc(0, 0x3)),     // 0x28: data
        ];
        // (is_ltr, selector, expected)
        let cases: &[(bool, u16, Result<(), Exception>)] = &[
            (false, 0x08, Ok(())),
            (false, 0x00, Ok(())),
            (false, 0x0C, Err(GeneralProtection(0x0C))), // the error code keeps TI
            (false, 0x10, Err(GeneralProtection(0x10))),
            (false, 0x30, Err(GeneralProtection(0x30))),
            (true, 0x10, Ok(())),
            (true, 0x00, Err(GeneralProtection(0))),
            (true, 0x18, Err(GeneralProtection(0x18))),
            (true, 0x20, Err(SegmentNotPresent(0x20))),
            (true, 0x28, Err(GeneralProtection(0x28))),
            (true, 0x08, Err(GeneralProtection(0x08))),
        ];
        for &(is_ltr, sel, expected) in cases {
            let (mut cpu, mut bus) = setup(0, &entries);
            let result = if is_ltr {
                load_tr(&mut cpu, &mut bus, Selector(sel))
            } else {
                load_ldtr(&mut cpu, &mut bus, Selector(sel))
            };
            assert_eq!(result, expected, "ltr={is_ltr} selector {sel:#x}");
            if result.is_ok() && is_ltr {
                assert_eq!(cpu.tr.selector, Selector(sel));
                assert_eq!(cpu.tr.type_bits(), 0xB, "TR caches a busy TSS");
                let type_in_gdt = bus.ram[(GDT + u32::from(sel) + 5) as usize] & 0xF;
                assert_eq!(type_in_gdt, 0xB, "ltr marks the TSS busy in the GDT");
            }
            if result.is_ok() && !is_ltr && sel != 0 {
                assert_eq!((cpu.ldtr.base, cpu.ldtr.limit), (0x5000, 0x1F));
            }
        }
    }

    /// The reference model for data-segment loads, written straight from
    /// the SDM's MOV pseudocode using raw descriptor bits, independently
    /// of `Descriptor::parse`. The GDT holds `gdt_entries` copies of `raw`
    /// after the null entry; the LDT, when `ldt_entries` > 0, holds that
    /// many copies from its index 0 (which, unlike the GDT's, is a real
    /// entry). On success it returns the hidden part the register receives
    /// (base, limit, access rights), or `None` for a null selector.
    fn reference_load(
        reg: SegReg,
        cpl: u8,
        sel: u16,
        gdt_entries: usize,
        ldt_entries: usize,
        raw: u64,
    ) -> Result<Option<(u32, u32, u16)>, Exception> {
        let index = usize::from(sel >> 3);
        let rpl = (sel & 3) as u8;
        let ti = sel & 4 != 0;
        let err = sel & 0xFFFC;
        let s_bit = (raw >> 44) & 1 == 1;
        let ty = ((raw >> 40) & 0xF) as u8;
        let dpl = ((raw >> 45) & 3) as u8;
        let present = (raw >> 47) & 1 == 1;
        let is_null = sel & 0xFFFC == 0;
        let in_table = if ti { index < ldt_entries } else { index <= gdt_entries };
        let is_code = s_bit && ty & 8 != 0;
        let is_data = s_bit && ty & 8 == 0;
        // The hidden part: base bits 16-39 and 56-63, limit bits 0-15 and
        // 48-51 scaled by G (bit 55), access bits 40-47 and 52-55 with the
        // Accessed bit set by the load.
        let base = (((raw >> 16) & 0xFF_FFFF) | ((raw >> 32) & 0xFF00_0000)) as u32;
        let raw_limit = ((raw & 0xFFFF) | ((raw >> 32) & 0xF_0000)) as u32;
        let limit = if (raw >> 55) & 1 == 1 { (raw_limit << 12) | 0xFFF } else { raw_limit };
        let access = (((raw >> 40) & 0xF0FF) as u16) | 1;
        let loaded = Some((base, limit, access));
        if reg == SegReg::Ss {
            if is_null {
                return Err(Exception::GeneralProtection(0));
            }
            if !in_table || rpl != cpl || !(is_data && ty & 2 != 0) || dpl != cpl {
                return Err(Exception::GeneralProtection(err));
            }
            if !present {
                return Err(Exception::StackFault(err));
            }
            return Ok(loaded);
        }
        if is_null {
            return Ok(None);
        }
        let readable_code = is_code && ty & 2 != 0;
        let conforming = is_code && ty & 4 != 0;
        if !in_table || !(is_data || readable_code) || (!conforming && (rpl > dpl || cpl > dpl)) {
            return Err(Exception::GeneralProtection(err));
        }
        if !present {
            return Err(Exception::SegmentNotPresent(err));
        }
        Ok(loaded)
    }

    proptest! {
        #[test]
        fn segment_loads_match_the_sdm(
            reg in prop::sample::select(vec![SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs, SegReg::Ss]),
            cpl in 0u8..4,
            // Keep selectors near the table so that both in- and
            // out-of-limit indexes are common.
            sel in (0u16..6).prop_flat_map(|i| (0u16..8).prop_map(move |low| (i << 3) | low)),
            gdt_entries in 1usize..4,
            ldt_entries in 0usize..3,
            access_byte in any::<u8>(),
            flags_nibble in any::<u8>(),
            base in any::<u32>(),
            limit in 0u32..0x10_0000,
        ) {
            // Random access bytes cover every type: expand-down and
            // conforming segments, system descriptors and gates; CPL 0-3.
            let raw = encode_segment(base, limit, u16::from(access_byte) | (u16::from(flags_nibble & 0xF0) << 8));
            let entries = vec![raw; gdt_entries];
            let (mut cpu, mut bus) = setup(cpl, &entries);
            if ldt_entries > 0 {
                const LDT: u32 = 0x3000;
                for i in 0..ldt_entries {
                    bus.write_u64(LDT + 8 * i as u32, raw);
                }
                cpu.ldtr = Segment { selector: Selector(0x28), base: LDT, limit: 8 * ldt_entries as u32 - 1, access: 0x0082 };
            }
            let before = cpu.clone();
            let expected = reference_load(reg, cpl, sel, gdt_entries, ldt_entries, raw);
            let got = load_segment(&mut cpu, &mut bus, reg, Selector(sel));
            prop_assert_eq!(got, expected.map(|_| ()));
            match expected {
                Ok(Some((base, limit, access))) => {
                    let seg = cpu.segment(reg);
                    prop_assert_eq!((seg.selector, seg.base, seg.limit, seg.access), (Selector(sel), base, limit, access));
                }
                Ok(None) => prop_assert_eq!(*cpu.segment(reg), Segment { selector: Selector(sel), base: 0, limit: 0, access: 0 }),
                Err(_) => prop_assert_eq!(cpu, before),
            }
        }
    }
}
