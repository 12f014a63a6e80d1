//! The view model: everything one screen of the terminal UI shows, as
//! plain data.
//!
//! This module owns the data types of the screen and the functions that
//! fill them from the [`Session`]'s VM. The renderer (`render.rs`) draws a
//! [`ViewModel`] and nothing else, so a screen is a pure function of this
//! struct and can be tested with ratatui's `TestBackend`. Building a view
//! reads the guest only through the monitor's side-effect-free accessors
//! (`describe_insn`, `read_linear`, `read_physical`), except that the
//! current translation unit is translated if it is not in the cache yet,
//! exactly as the `t` command does. Nothing here runs the guest.

use bt86_cpu::state::{flags, gpr};
use bt86_cpu::{SegReg, Segment};
use bt86_native::{BreakAddr, Vm};

use crate::inspect;
use crate::session::{Session, Symbols};

/// How many guest instructions the code panel decodes before and after
/// EIP; the renderer shows the ones that fit.
pub const CODE_BEFORE: usize = 12;
pub const CODE_AFTER: usize = 48;

/// How many 16-byte rows the memory panel reads.
pub const MEMORY_ROWS: usize = 48;

/// How far back from EIP the code panel looks for the start of the
/// enclosing symbol, to disassemble forward from there.
const MAX_SYMBOL_LOOKBACK: u32 = 1024;

/// One screen of the terminal UI.
#[derive(Clone, Debug, Default)]
pub struct ViewModel {
    /// The kernel's name, for the title bar.
    pub title: String,
    /// What the guest is doing, for the title bar: `stopped`, `running ...`,
    /// or how it ended.
    pub status: String,
    /// A `continue` is in progress.
    pub running: bool,
    pub code: CodeView,
    pub unit: UnitPanel,
    pub registers: RegistersView,
    pub vcpu: VcpuView,
    pub memory: MemoryView,
    pub events: EventsView,
    /// The counters of `--stats`: (name, value).
    pub stats: Vec<(String, String)>,
    /// The last command and what it printed.
    pub output: Vec<String>,
    /// The guest's COM1 output, one entry per line.
    pub serial: Vec<String>,
    /// The command line being typed, and the cursor's position in it (in
    /// characters).
    pub command: String,
    pub cursor: usize,
    /// The help screen is shown over the panels.
    pub help: Option<Vec<String>>,
    pub scroll: Scroll,
}

/// How far each panel is scrolled away from where it shows by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scroll {
    /// Guest code: instructions below (positive) or above (negative) the
    /// default window around EIP.
    pub code: i32,
    /// Translation unit: lines from the top.
    pub unit: usize,
    /// Event log: events back from the newest.
    pub events: usize,
    /// Command output: lines from the top.
    pub output: usize,
    /// Serial output: lines back from the newest.
    pub serial: usize,
    /// Counters: lines from the top.
    pub stats: usize,
    /// Help screen: lines from the top.
    pub help: usize,
}

/// The guest code around EIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeView {
    pub lines: Vec<CodeLine>,
    /// The index in `lines` of the instruction at EIP.
    pub eip_index: usize,
}

/// One guest instruction, tagged as the translator would tag it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeLine {
    pub addr: u32,
    /// The symbol that starts at this address, if one does.
    pub label: Option<String>,
    /// The instruction's bytes in hex.
    pub bytes: String,
    /// Intel syntax, or why the bytes could not be read.
    pub text: String,
    /// `IDENT`, `REWRITE`, `CALLOUT`, `FAULT`, or empty if unreadable.
    pub tag: &'static str,
    pub reason: String,
    pub is_eip: bool,
    pub breakpoint: bool,
}

/// The translation unit at EIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitPanel {
    /// The unit's guest range and where its translation is, for the title.
    pub title: String,
    /// One line about the unit (or why it cannot be translated).
    pub header: String,
    pub rows: Vec<UnitRow>,
}

/// One line of the translation panel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitRow {
    /// A guest instruction of the unit.
    Guest { eip: u32, text: String, tag: &'static str, reason: String, current: bool },
    /// A translation-cache instruction it became.
    Tc { addr: u32, text: String },
    /// An exit stub: what it does and whether chaining patched it.
    Exit { stub: u32, what: String, chained_to: Option<u32> },
}

/// The general-purpose registers, EFLAGS and the segment registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistersView {
    /// In the order eax, ecx, edx, ebx, esp, ebp, esi, edi.
    pub gpr: [u32; 8],
    pub eip: u32,
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS with their hidden descriptor parts.
    pub segments: Vec<SegmentView>,
}

/// A segment register (or LDTR, TR): the selector and the descriptor cache
/// loaded with it (SDM Vol. 3A §3.4.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentView {
    pub name: &'static str,
    pub selector: u16,
    pub base: u32,
    pub limit: u32,
    /// The access rights as `lar` returns them.
    pub access: u16,
    /// The access rights in words (`code er`, `data rw`, `TSS`, ...), with
    /// the DPL and the default size; `null` for an unusable register.
    pub kind: String,
}

/// The virtual CPU's own state: what the host CPU does not hold while
/// translated code runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuView {
    pub cpl: u8,
    pub virtual_if: bool,
    pub iopl: u8,
    pub halted: bool,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    /// The set bits of CR0 and CR4 by name.
    pub cr0_bits: String,
    pub cr4_bits: String,
    pub gdtr: (u32, u16),
    pub idtr: (u32, u16),
    pub tr: SegmentView,
    pub ldtr: SegmentView,
}

/// Which memory the memory panel shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemorySource {
    /// Linear addresses from ESP: the stack, following ESP as it moves.
    Stack,
    Linear(u32),
    Physical(u32),
}

/// Sixteen bytes a row, from `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryView {
    pub source: MemorySource,
    pub start: u32,
    /// Each row's address and bytes, or why they cannot be read.
    pub rows: Vec<(u32, Result<[u8; 16], String>)>,
}

impl Default for MemoryView {
    fn default() -> Self {
        MemoryView { source: MemorySource::Stack, start: 0, rows: Vec::new() }
    }
}

/// The monitor's event log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsView {
    /// Events recorded since the VM started.
    pub total: u64,
    /// How many the bounded log still holds, by kind, in first-seen order.
    pub counts: Vec<(&'static str, u64)>,
    /// The events the log holds, oldest first: kind, guest EIP, detail.
    pub lines: Vec<(&'static str, u32, String)>,
}

/// Builds the guest code panel: instructions decoded forward from a point
/// at or before EIP. x86 code cannot be decoded backwards, so the start is
/// `anchor` (where the previous screen started, if EIP is still one of its
/// instruction boundaries), else the start of the symbol EIP is in, else
/// EIP itself. Returns the view and the start it used.
pub fn code_view(vm: &mut Vm, symbols: &Symbols, anchor: Option<u32>) -> (CodeView, u32) {
    let eip = vm.cpu.eip;
    let breaks = vm.breakpoints();
    let symbol_start = symbols.describe(eip).map(|name| match name.split_once("+0x") {
        Some((_, off)) => eip.wrapping_sub(u32::from_str_radix(off, 16).unwrap_or(0)),
        None => eip,
    });
    let candidates = [anchor, symbol_start.filter(|s| eip.wrapping_sub(*s) <= MAX_SYMBOL_LOOKBACK)];
    let mut start = eip;
    for candidate in candidates.into_iter().flatten() {
        if candidate <= eip && reaches(vm, candidate, eip) {
            start = candidate;
            break;
        }
    }
    // Keep at most CODE_BEFORE instructions before EIP.
    let mut before = boundaries(vm, start, eip);
    if before.len() > CODE_BEFORE {
        before.drain(..before.len() - CODE_BEFORE);
    }
    let first = before.first().copied().unwrap_or(eip);
    let mut view = CodeView { lines: Vec::new(), eip_index: before.len() };
    let mut at = first;
    for _ in 0..before.len() + CODE_AFTER {
        let label = symbols.describe(at).filter(|s| !s.contains('+'));
        let breakpoint = breaks.iter().any(|b| match *b {
            BreakAddr::Linear(a) => a == at,
            BreakAddr::Physical(p) => vm.linear_to_physical(at) == Some(p),
        });
        let line = match vm.describe_insn(at) {
            Ok(insn) => {
                let len = insn.bytes.len().max(1) as u32;
                let line = CodeLine {
                    addr: at,
                    label,
                    bytes: insn.bytes.iter().map(|b| format!("{b:02x}")).collect(),
                    text: insn.text,
                    tag: insn.tag,
                    reason: insn.reason,
                    is_eip: at == eip,
                    breakpoint,
                };
                at = at.wrapping_add(len);
                line
            }
            Err(e) => {
                let line = CodeLine {
                    addr: at,
                    label,
                    text: format!("cannot fetch: {e}"),
                    is_eip: at == eip,
                    breakpoint,
                    ..CodeLine::default()
                };
                view.lines.push(line);
                break;
            }
        };
        view.lines.push(line);
    }
    (view, first)
}

/// Whether decoding forward from `from` lands exactly on `to`.
fn reaches(vm: &mut Vm, from: u32, to: u32) -> bool {
    let mut at = from;
    while at < to {
        match vm.describe_insn(at) {
            Ok(insn) => at = at.wrapping_add(insn.bytes.len().max(1) as u32),
            Err(_) => return false,
        }
        if at < from {
            return false;
        }
    }
    at == to
}

/// The instruction boundaries in `[from, to)`, decoding forward.
fn boundaries(vm: &mut Vm, from: u32, to: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        out.push(at);
        match vm.describe_insn(at) {
            Ok(insn) => at = at.wrapping_add(insn.bytes.len().max(1) as u32),
            Err(_) => break,
        }
    }
    out
}

/// The translation unit at EIP, translated now if it is not in the cache.
pub fn unit_panel(vm: &mut Vm) -> UnitPanel {
    let eip = vm.cpu.eip;
    let view = match vm.translation_at(eip) {
        Ok(view) => view,
        Err(e) => return UnitPanel { title: String::new(), header: format!("cannot translate the unit at {eip:#010x}: {e}"), rows: Vec::new() },
    };
    let guest_bytes: usize = view.insns.iter().map(|i| i.bytes.len()).sum();
    let title = format!("{:08x}-{:08x} -> TC {:08x}", view.guest_start, view.guest_end, view.tc);
    let header = format!(
        "{} instructions, {guest_bytes} guest bytes -> {} TC bytes; ends at {}",
        view.insns.len(),
        view.tc_len,
        view.end
    );
    let mut rows = Vec::new();
    for insn in view.insns {
        rows.push(UnitRow::Guest { eip: insn.eip, text: insn.text, tag: insn.tag, reason: insn.reason, current: insn.eip == eip });
        for (addr, text) in insn.tc {
            rows.push(UnitRow::Tc { addr, text });
        }
    }
    for exit in view.exits {
        rows.push(UnitRow::Exit { stub: exit.stub, what: exit.what, chained_to: exit.chained_to });
    }
    UnitPanel { title, header, rows }
}

/// What a segment's access rights mean, in a few words: the type (code
/// `e`xecute/`r`ead, data `r`ead/`w`rite, e`x`pand-down), DPL and size
/// (SDM Vol. 3A §3.4.5.1, Table 3-1 and 3-2).
fn segment_kind(seg: &Segment) -> String {
    if !seg.is_present() && (seg.selector.is_null() || seg.access == 0) {
        return "null".to_string();
    }
    let t = seg.type_bits();
    let what = if seg.is_code_or_data() {
        if seg.is_code() {
            format!("code e{}{}", if t & 2 != 0 { "r" } else { "" }, if t & 4 != 0 { "c" } else { "" })
        } else {
            format!("data r{}{}", if t & 2 != 0 { "w" } else { "" }, if t & 4 != 0 { "x" } else { "" })
        }
    } else {
        match t {
            0x2 => "LDT".to_string(),
            0x9 => "TSS32".to_string(),
            0xB => "TSS32 busy".to_string(),
            other => format!("system {other:#x}"),
        }
    };
    let size = if seg.is_code_or_data() {
        if seg.is_32bit() {
            " 32"
        } else {
            " 16"
        }
    } else {
        ""
    };
    format!("{what} DPL{}{size}{}", seg.dpl(), if seg.is_present() { "" } else { " !P" })
}

fn segment_view(name: &'static str, seg: &Segment) -> SegmentView {
    SegmentView { name, selector: seg.selector.0, base: seg.base, limit: seg.limit, access: seg.access, kind: segment_kind(seg) }
}

/// The registers panel.
pub fn registers_view(vm: &Vm) -> RegistersView {
    let cpu = &vm.cpu;
    RegistersView {
        gpr: cpu.gpr,
        eip: cpu.eip,
        eflags: cpu.eflags,
        segments: SegReg::ALL.iter().map(|r| segment_view(r.name(), cpu.segment(*r))).collect(),
    }
}

/// The virtual CPU panel.
pub fn vcpu_view(vm: &Vm) -> VcpuView {
    let c = &vm.cpu;
    VcpuView {
        cpl: c.cpl(),
        virtual_if: c.interrupts_enabled(),
        iopl: c.iopl(),
        halted: c.halted,
        cr0: c.cr0,
        cr2: c.cr2,
        cr3: c.cr3,
        cr4: c.cr4,
        cr0_bits: inspect::cr0_bits(c.cr0),
        cr4_bits: inspect::cr4_bits(c.cr4),
        gdtr: (c.gdtr.base, c.gdtr.limit),
        idtr: (c.idtr.base, c.idtr.limit),
        tr: segment_view("tr", &c.tr),
        ldtr: segment_view("ldtr", &c.ldtr),
    }
}

/// The memory panel: [`MEMORY_ROWS`] rows of 16 bytes from the source's
/// address, `rows_down` rows further on (the panel's scroll).
pub fn memory_view(vm: &mut Vm, source: MemorySource, rows_down: i64) -> MemoryView {
    let base = match source {
        MemorySource::Stack => vm.cpu.gpr[gpr::ESP] & !0xF,
        MemorySource::Linear(a) | MemorySource::Physical(a) => a,
    };
    let start = (i64::from(base) + rows_down * 16).clamp(0, i64::from(u32::MAX) - 15) as u32;
    let mut rows = Vec::new();
    for i in 0..MEMORY_ROWS as u32 {
        let Some(addr) = start.checked_add(i * 16) else { break };
        let mut b = [0u8; 16];
        let row = match source {
            MemorySource::Physical(_) => {
                vm.read_physical(addr, &mut b);
                Ok(b)
            }
            _ => vm.read_linear(addr, &mut b).map(|()| b).map_err(|e| format!("not mapped ({e})")),
        };
        rows.push((addr, row));
    }
    MemoryView { source, start, rows }
}

/// The event log panel.
pub fn events_view(vm: &Vm) -> EventsView {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    let mut lines = Vec::new();
    for e in vm.events() {
        match counts.iter_mut().find(|(k, _)| *k == e.kind) {
            Some(c) => c.1 += 1,
            None => counts.push((e.kind, 1)),
        }
        lines.push((e.kind, e.eip, e.detail.clone()));
    }
    EventsView { total: vm.event_count(), counts, lines }
}

/// The counters of `--stats`, as `inspect::stats` prints them, split into
/// name and value.
pub fn stats_rows(vm: &Vm) -> Vec<(String, String)> {
    inspect::stats(vm)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim_end().rsplit_once(' ')?;
            Some((name.trim().to_string(), value.to_string()))
        })
        .collect()
}

/// The parts of a view that come from the VM alone. `code_anchor` is where
/// the previous code panel started; the new start is returned with it.
pub fn machine_views(session: &mut Session, symbols: &Symbols, code_anchor: Option<u32>, memory: MemorySource, memory_rows_down: i64) -> (ViewModel, u32) {
    let vm = &mut session.vm;
    // The unit first: translating it is part of what the counters show.
    let unit = unit_panel(vm);
    let (code, start) = code_view(vm, symbols, code_anchor);
    let view = ViewModel {
        code,
        unit,
        registers: registers_view(vm),
        vcpu: vcpu_view(vm),
        memory: memory_view(vm, memory, memory_rows_down),
        events: events_view(vm),
        stats: stats_rows(vm),
        ..ViewModel::default()
    };
    (view, start)
}

/// The EFLAGS bits the registers panel names, Bochs's way: upper case when
/// set (SDM Vol. 1 §3.4.3).
pub const EFLAGS_NAMES: [(u32, &str); 14] = [
    (flags::OF, "of"),
    (flags::DF, "df"),
    (flags::IF, "if"),
    (flags::TF, "tf"),
    (flags::SF, "sf"),
    (flags::ZF, "zf"),
    (flags::AF, "af"),
    (flags::PF, "pf"),
    (flags::CF, "cf"),
    (flags::NT, "nt"),
    (flags::RF, "rf"),
    (flags::VM, "vm"),
    (flags::AC, "ac"),
    (flags::ID, "id"),
];
