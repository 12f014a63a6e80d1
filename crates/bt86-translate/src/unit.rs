//! Translation units: decode a run of guest code and emit its translation.
//!
//! A unit is a guest basic block (brief §4.4). It ends after a control
//! transfer, at a callout, before an instruction that starts on another
//! guest page, or at [`MAX_UNIT_INSNS`] instructions. Its translation is
//! position independent: IDENT bytes have no RIP-relative operands in
//! 32-bit code, internal branches are relative, and the VCPU is reached
//! through `gs:`. The cache places it and fills in exit ids.
//!
//! Every emitted byte range is recorded in a map from TC offset to guest
//! EIP, so a fault at any host instruction resolves to a precise guest
//! instruction boundary.

use std::collections::BTreeSet;

use crate::classify::{classify, Branch, CalloutReason, Class, Inline, Mode};
use crate::cache::ExitId;
use crate::emit;
use bt86_cpu::Exception;
use iced_x86::{ConditionCode, Decoder, DecoderOptions, Encoder, Instruction, MemoryOperand, OpKind, Register};

/// The longest unit, in guest instructions. VMware's translator stopped at
/// about 12; longer straight-line runs are split into chained units, which
/// costs one direct `jmp` per split.
pub const MAX_UNIT_INSNS: usize = 12;

/// Where translated code reads guest instruction bytes from. The native
/// layer implements it over guest memory, through the guest's page tables
/// when paging is on; tests implement it over a byte slice.
pub trait CodeSource {
    /// Fills `buf` with the guest's code bytes at linear address `eip`.
    /// Bytes on a page that [`CodeSource::frame`] calls unfetchable may be
    /// anything: the translator never decodes them.
    fn read_code(&mut self, eip: u32, buf: &mut [u8]);

    /// The physical frame that linear page `page` maps to, or `None` if an
    /// instruction fetch from it would fault. Units are keyed and
    /// invalidated by frame, so that code is found again after an address
    /// space switch and a write through any alias of its frame drops it.
    /// Without paging, the frame is the page itself.
    fn frame(&mut self, page: u32) -> Option<u32> {
        Some(page)
    }
}

impl CodeSource for (u32, &[u8]) {
    fn read_code(&mut self, eip: u32, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let off = eip.wrapping_add(i as u32).wrapping_sub(self.0) as usize;
            *b = self.1.get(off).copied().unwrap_or(0);
        }
    }
}

/// Why the translated code exits to the monitor at a stub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// A direct transfer to guest `target` (jmp, jcc, call, fall-through).
    /// Chaining patches the stub into a jump to the target's unit.
    Branch { target: u32 },
    /// Execute `insn` on the virtual CPU.
    Callout { eip: u32, insn: Instruction, reason: CalloutReason },
    /// Raise `exception` with its return address at `eip`.
    Fault { eip: u32, exception: Exception },
}

/// An exit stub inside a unit's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitSpec {
    /// Offset of the stub in the unit's code.
    pub stub_offset: u32,
    pub kind: ExitKind,
    /// Offset of a `rel32` (of a `jcc`) that jumps to this stub. Chaining
    /// retargets it straight at the next unit, so a taken loop branch costs
    /// one jump, not a jump to a patched stub and another from there.
    pub branch_site: Option<u32>,
}

/// What a range of translated code stands for, for the host-RIP map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// A copied guest instruction: state is exactly the guest's.
    Ident,
    /// Part of a rewritten instruction that parked ECX/EDX in the VCPU page
    /// before it could fault; a fault here restores them and restarts the
    /// guest instruction.
    ScratchSequence,
    /// Part of a rewritten instruction that keeps every guest register live
    /// (the `push imm32` of a call); a fault restarts the guest instruction.
    Rewritten,
    /// An exit stub: it cannot fault.
    Stub,
}

/// One entry of the map from TC offsets to guest EIPs. The entry covers
/// TC offsets from `tc_offset` up to the next entry's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub tc_offset: u32,
    pub guest_eip: u32,
    pub kind: MapKind,
}

/// A guest instruction and what became of it, for traces and the debugger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslatedInsn {
    pub insn: Instruction,
    /// The guest bytes (at most 15; kept inline, units are made by the
    /// hundred thousand).
    raw: [u8; 16],
    len: u8,
    pub class: Class,
    /// Offsets in the unit's code of the translation (stubs included).
    pub tc_start: u32,
    pub tc_end: u32,
}

impl TranslatedInsn {
    /// The guest instruction's bytes as translated.
    pub fn bytes(&self) -> &[u8] {
        &self.raw[..self.len as usize]
    }
}

/// Why a unit ended where it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitEnd {
    ControlTransfer,
    Callout,
    Fault,
    PageBoundary,
    LengthCap,
    SingleStep,
    /// The next instruction is a break point (see [`translate_unit`]).
    Break,
}

/// A translated unit, not yet placed in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub guest_start: u32,
    /// One past the last guest byte translated.
    pub guest_end: u32,
    pub mode: Mode,
    pub code: Vec<u8>,
    pub exits: Vec<ExitSpec>,
    pub map: Vec<MapEntry>,
    pub insns: Vec<TranslatedInsn>,
    pub end: UnitEnd,
}

/// Decodes guest code at `eip` and translates one unit. A unit also ends
/// before any instruction whose address is in `breaks` (breakpoints, and
/// the random cut points of the differential tests).
pub fn translate_unit(src: &mut dyn CodeSource, eip: u32, mode: Mode, breaks: &BTreeSet<u32>) -> Unit {
    let mut unit = Unit::empty();
    translate_unit_into(&mut unit, src, eip, mode, breaks);
    unit
}

impl Default for Unit {
    /// An empty unit without buffers (allocates nothing).
    fn default() -> Unit {
        Unit {
            guest_start: 0,
            guest_end: 0,
            mode: Mode::default(),
            code: Vec::new(),
            exits: Vec::new(),
            map: Vec::new(),
            insns: Vec::new(),
            end: UnitEnd::LengthCap,
        }
    }
}

impl Unit {
    /// An empty unit, to be filled by [`translate_unit_into`].
    pub fn empty() -> Unit {
        Unit {
            guest_start: 0,
            guest_end: 0,
            mode: Mode::default(),
            code: Vec::with_capacity(512),
            exits: Vec::with_capacity(4),
            map: Vec::with_capacity(MAX_UNIT_INSNS + 4),
            insns: Vec::with_capacity(MAX_UNIT_INSNS),
            end: UnitEnd::LengthCap,
        }
    }
}

/// [`translate_unit`] into a unit whose buffers are reused: the cache
/// translates hundreds of thousands of units and keeps one scratch unit
/// rather than allocating four vectors for each.
pub fn translate_unit_into(unit: &mut Unit, src: &mut dyn CodeSource, eip: u32, mode: Mode, breaks: &BTreeSet<u32>) {
    unit.guest_start = eip;
    unit.guest_end = eip;
    unit.mode = mode;
    unit.code.clear();
    unit.exits.clear();
    unit.map.clear();
    unit.insns.clear();
    unit.end = UnitEnd::LengthCap;
    let mut b = Builder { unit };
    let cap = if mode.single_step { 1 } else { MAX_UNIT_INSNS };
    // Read enough guest code for a whole unit at once (at most 15 bytes an
    // instruction) and decode it with one decoder.
    let mut window = [0u8; MAX_UNIT_INSNS * 15 + 16];
    let window = &mut window[..cap * 15 + 16];
    src.read_code(eip, window);
    // The caller made sure the first page is fetchable. If the next one is
    // not, the decoder sees only the bytes up to the page end, and an
    // instruction that runs across it ends the unit before it (below):
    // entered on its own, its fetch then faults in the monitor with the
    // exact #PF.
    let to_page_end = (0x1000 - (eip & 0xFFF)) as usize;
    let readable = if to_page_end < window.len() && src.frame((eip >> 12).wrapping_add(1)).is_none() {
        to_page_end
    } else {
        window.len()
    };
    let mut decoder = Decoder::with_ip(32, &window[..readable], u64::from(eip), DecoderOptions::NONE);
    let mut pc = eip;
    loop {
        let at = pc.wrapping_sub(eip) as usize;
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&window[at..at + 16]);
        let insn = decoder.decode();
        if insn.is_invalid() && decoder.last_error() == iced_x86::DecoderError::NoMoreBytes && pc != eip {
            // Runs into a page that cannot be fetched: end before it.
            b.exit(pc, ExitKind::Branch { target: pc });
            b.unit.end = UnitEnd::PageBoundary;
            break;
        }
        let (class, len) = if insn.is_invalid() {
            (Class::Fault(undecodable(&bytes)), 0)
        } else {
            (classify(&insn, mode), insn.len())
        };
        let insn_bytes = &bytes[..len];
        let tc_start = b.unit.code.len() as u32;
        let next = pc.wrapping_add(len as u32);
        let end = match class {
            Class::Ident => {
                b.map(pc, MapKind::Ident);
                b.unit.code.extend_from_slice(insn_bytes);
                None
            }
            Class::Inline(inline) => {
                b.map(pc, MapKind::Rewritten);
                match inline {
                    Inline::PushSegment { sreg } => emit::push_guest_selector(&mut b.unit.code, sreg),
                    Inline::ReadSegment { sreg, dest } => {
                        emit::read_guest_selector(&mut b.unit.code, sreg, dest.number() as u8, dest.size() == 2)
                    }
                }
                None
            }
            Class::Branch(branch) => {
                b.branch(&insn, branch, insn_bytes);
                Some(UnitEnd::ControlTransfer)
            }
            Class::Callout(reason) => {
                b.exit(pc, ExitKind::Callout { eip: pc, insn, reason });
                Some(UnitEnd::Callout)
            }
            Class::Fault(exception) => {
                b.exit(pc, ExitKind::Fault { eip: pc, exception });
                Some(UnitEnd::Fault)
            }
        };
        b.unit.insns.push(TranslatedInsn {
            insn,
            raw: bytes,
            len: len as u8,
            class,
            tc_start,
            tc_end: b.unit.code.len() as u32,
        });
        b.unit.guest_end = next.max(b.unit.guest_end);
        if let Some(end) = end {
            b.unit.end = end;
            break;
        }
        let end = if b.unit.insns.len() >= cap {
            Some(if mode.single_step { UnitEnd::SingleStep } else { UnitEnd::LengthCap })
        } else if next >> 12 != eip >> 12 {
            Some(UnitEnd::PageBoundary)
        } else if breaks.contains(&next) {
            Some(UnitEnd::Break)
        } else {
            None
        };
        if let Some(end) = end {
            b.exit(next, ExitKind::Branch { target: next });
            if let Some(last) = b.unit.insns.last_mut() {
                // The fall-through stub belongs to the last instruction in
                // traces, as its continuation.
                last.tc_end = b.unit.code.len() as u32;
            }
            b.unit.end = end;
            break;
        }
        pc = next;
    }
}

/// The exception an undecodable instruction raises: #GP(0) if it is only
/// invalid because it runs past the 15-byte limit (SDM Vol. 2 §2.3.11),
/// #UD otherwise.
fn undecodable(bytes: &[u8; 16]) -> Exception {
    let prefixes = bytes
        .iter()
        .take_while(|b| matches!(b, 0xF0 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 | 0x66 | 0x67))
        .count();
    if prefixes >= 15 {
        return Exception::GeneralProtection(0);
    }
    let mut rest = [0u8; 16];
    rest[..16 - prefixes].copy_from_slice(&bytes[prefixes..]);
    let mut decoder = Decoder::with_ip(32, &rest, 0, DecoderOptions::NONE);
    let insn = decoder.decode();
    if !insn.is_invalid() && prefixes + insn.len() > 15 {
        Exception::GeneralProtection(0)
    } else {
        Exception::InvalidOpcode
    }
}

struct Builder<'a> {
    unit: &'a mut Unit,
}

impl Builder<'_> {
    fn map(&mut self, eip: u32, kind: MapKind) {
        self.unit.map.push(MapEntry { tc_offset: self.unit.code.len() as u32, guest_eip: eip, kind });
    }

    /// Appends an exit stub; `eip` is the guest EIP it stands for.
    fn exit(&mut self, eip: u32, kind: ExitKind) {
        self.exit_via(eip, kind, None);
    }

    /// Appends an exit stub reached by the `rel32` at `branch_site`.
    fn exit_via(&mut self, eip: u32, kind: ExitKind, branch_site: Option<u32>) {
        self.map(eip, MapKind::Stub);
        let stub_offset = self.unit.code.len() as u32;
        emit::exit_stub(&mut self.unit.code, 0);
        self.unit.exits.push(ExitSpec { stub_offset, kind, branch_site });
    }

    /// Ends an indirect branch whose guest target is in ECX: the inline
    /// lookup, or for a single-step or isolated unit the miss path itself,
    /// so that such a unit always comes back to the monitor instead of
    /// running on into a unit the IB table knows.
    fn indirect_exit(&mut self) {
        if self.unit.mode.single_step || self.unit.mode.isolated {
            emit::ib_miss_stub(&mut self.unit.code, ExitId::INDIRECT_MISS.0);
        } else {
            emit::ib_dispatch(&mut self.unit.code);
        }
    }

    fn branch(&mut self, insn: &Instruction, branch: Branch, bytes: &[u8]) {
        let eip = insn.ip32();
        let next = insn.next_ip32();
        match branch {
            Branch::Jump { target } => self.exit(eip, ExitKind::Branch { target }),
            Branch::Conditional { target } => {
                // jcc rel32 to the taken stub, which follows the
                // fall-through stub.
                self.map(eip, MapKind::Stub);
                let cc = condition_code(insn.condition_code());
                self.unit.code.extend_from_slice(&[0x0F, 0x80 | cc]);
                let site = self.unit.code.len() as u32;
                self.unit.code.extend_from_slice(&(emit::EXIT_STUB_LEN as u32).to_le_bytes());
                self.exit(next, ExitKind::Branch { target: next });
                self.exit_via(target, ExitKind::Branch { target }, Some(site));
            }
            Branch::ShortConditional { target } => {
                // loop/loopcc/jecxz exist only with rel8: branch over a
                // short jmp to the taken stub.
                //   loop +2 ; jmp +18 ; taken stub ; fall-through stub
                self.map(eip, MapKind::Stub);
                // The rel8 is the last byte; prefixes (an address-size
                // override selects CX over ECX) are kept as they were.
                let mut copy = bytes.to_vec();
                if let Some(rel8) = copy.last_mut() {
                    *rel8 = 2;
                }
                self.unit.code.extend_from_slice(&copy);
                self.unit.code.extend_from_slice(&[0xEB, emit::EXIT_STUB_LEN as u8]);
                self.exit(target, ExitKind::Branch { target });
                self.exit(next, ExitKind::Branch { target: next });
            }
            Branch::Call { target } => {
                self.map(eip, MapKind::Rewritten);
                emit::push_imm32(&mut self.unit.code, next);
                self.exit(target, ExitKind::Branch { target });
            }
            Branch::Return { pop } => {
                self.map(eip, MapKind::ScratchSequence);
                emit::save_scratch(&mut self.unit.code);
                emit::pop_ecx(&mut self.unit.code);
                if pop != 0 {
                    emit::lea_esp_plus(&mut self.unit.code, u32::from(pop));
                }
                self.indirect_exit();
            }
            Branch::IndirectJump | Branch::IndirectCall => {
                let Some(load) = load_target_into_ecx(insn) else {
                    // An operand the encoder cannot express as a mov:
                    // let the monitor carry out the branch instead.
                    self.exit(eip, ExitKind::Callout { eip, insn: *insn, reason: CalloutReason::OddBranch });
                    return;
                };
                self.map(eip, MapKind::ScratchSequence);
                emit::save_scratch(&mut self.unit.code);
                self.unit.code.extend_from_slice(&load);
                if branch == Branch::IndirectCall {
                    emit::push_imm32(&mut self.unit.code, next);
                }
                self.indirect_exit();
            }
        }
    }
}

/// The jcc condition-code nibble (SDM Vol. 2 Appendix B.1.4.7).
fn condition_code(cc: ConditionCode) -> u8 {
    use ConditionCode as C;
    match cc {
        C::o => 0x0,
        C::no => 0x1,
        C::b => 0x2,
        C::ae => 0x3,
        C::e => 0x4,
        C::ne => 0x5,
        C::be => 0x6,
        C::a => 0x7,
        C::s => 0x8,
        C::ns => 0x9,
        C::p => 0xA,
        C::np => 0xB,
        C::l => 0xC,
        C::ge => 0xD,
        C::le => 0xE,
        C::g => 0xF,
        C::None => 0x0,
    }
}

/// `mov ecx, <operand of jmp/call r/m>`: the target is read with the guest's
/// own addressing mode and segment, before `call` pushes anything, as the
/// SDM's CALL pseudo-code does.
fn load_target_into_ecx(insn: &Instruction) -> Option<Vec<u8>> {
    let mov = if insn.op0_kind() == OpKind::Register {
        Instruction::with2(iced_x86::Code::Mov_r32_rm32, Register::ECX, insn.op0_register())
    } else {
        let mem = MemoryOperand::new(
            insn.memory_base(),
            insn.memory_index(),
            insn.memory_index_scale(),
            insn.memory_displacement32() as i64,
            insn.memory_displ_size(),
            false,
            insn.segment_prefix(),
        );
        Instruction::with2(iced_x86::Code::Mov_r32_rm32, Register::ECX, mem)
    };
    let mut encoder = Encoder::new(32);
    // Every 32-bit r/m operand of jmp/call is also a valid operand of mov,
    // so this does not fail for decoded input; the caller copes if it does.
    mov.ok().and_then(|m| encoder.encode(&m, 0).ok()).map(|_| encoder.take_buffer())
}
