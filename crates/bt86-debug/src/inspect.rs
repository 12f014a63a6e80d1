//! Plain-text views of the virtual machine, shared by batch mode, the
//! terminal UI and the gdb stub's `monitor` command.
//!
//! Each function renders one thing a student asks about: the registers,
//! the segment registers with their hidden parts, the control registers
//! and the rest of the virtual CPU, the descriptor tables, the TSS, the
//! page tables, the counters, and the translation of the current unit.
//! They read guest memory only through the monitor's side-effect-free
//! accessors (`Vm::read_linear`), so looking never sets an Accessed bit.
//! They never change guest state, except that `translation` translates the
//! unit at EIP if it is not in the cache yet, as running it would.

use std::fmt::Write;

use bt86_cpu::descriptor::{Descriptor, GateKind, SegmentKind};
use bt86_cpu::paging::entry;
use bt86_cpu::state::{cr, flags, gpr};
use bt86_cpu::{SegReg, Segment};
use bt86_native::Vm;

/// The general-purpose registers, EIP and EFLAGS, as Bochs's `r` shows
/// them: each register in hex and decimal.
pub fn registers(vm: &Vm) -> String {
    let mut out = String::new();
    for (i, name) in gpr::NAMES.iter().enumerate() {
        let v = vm.cpu.gpr[i];
        let _ = writeln!(out, "{name}: {v:#010x} {v}");
    }
    let _ = writeln!(out, "eip: {:#010x}", vm.cpu.eip);
    let _ = writeln!(out, "eflags {:#010x}: {}", vm.cpu.eflags, eflags_letters(vm.cpu.eflags));
    out
}

/// EFLAGS as Bochs prints it: every flag's name, upper case when set.
fn eflags_letters(e: u32) -> String {
    let bit = |mask: u32, name: &str| if e & mask != 0 { name.to_uppercase() } else { name.to_string() };
    [
        bit(flags::ID, "id"),
        bit(flags::VIP, "vip"),
        bit(flags::VIF, "vif"),
        bit(flags::AC, "ac"),
        bit(flags::VM, "vm"),
        bit(flags::RF, "rf"),
        bit(flags::NT, "nt"),
        format!("IOPL={}", (e >> 12) & 3),
        bit(flags::OF, "of"),
        bit(flags::DF, "df"),
        bit(flags::IF, "if"),
        bit(flags::TF, "tf"),
        bit(flags::SF, "sf"),
        bit(flags::ZF, "zf"),
        bit(flags::AF, "af"),
        bit(flags::PF, "pf"),
        bit(flags::CF, "cf"),
    ]
    .join(" ")
}

/// `info eflags`: each flag that is set, with its meaning, and which of
/// them are virtual (kept by the virtual CPU, not the host's EFLAGS).
pub fn info_eflags(vm: &Vm) -> String {
    let e = vm.cpu.eflags;
    let mut out = format!("eflags {e:#010x}\n");
    let table: [(u32, &str, &str); 15] = [
        (flags::CF, "CF", "carry"),
        (flags::PF, "PF", "parity"),
        (flags::AF, "AF", "adjust"),
        (flags::ZF, "ZF", "zero"),
        (flags::SF, "SF", "sign"),
        (flags::TF, "TF", "trap: #DB after each instruction (virtual)"),
        (flags::IF, "IF", "interrupts enabled (virtual: the host keeps its own IF)"),
        (flags::DF, "DF", "direction: string instructions count down"),
        (flags::OF, "OF", "overflow"),
        (flags::NT, "NT", "nested task (virtual)"),
        (flags::RF, "RF", "resume (virtual)"),
        (flags::VM, "VM", "virtual-8086 mode (virtual)"),
        (flags::AC, "AC", "alignment check (virtual)"),
        (flags::VIF, "VIF", "virtual interrupt flag"),
        (flags::ID, "ID", "CPUID available (virtual)"),
    ];
    for (mask, name, meaning) in table {
        if e & mask != 0 {
            let _ = writeln!(out, "  {name:<4}{meaning}");
        }
    }
    let _ = writeln!(out, "  IOPL {} (virtual: the host runs guest code at ring 3 whatever it says)", (e >> 12) & 3);
    out
}

/// What a segment's access rights mean, in words.
fn segment_kind(seg: &Segment) -> String {
    let d = bt86_cpu::descriptor::SegmentDescriptor { base: seg.base, limit: seg.limit, access: seg.access };
    let what = match d.kind() {
        Some(SegmentKind::Code { readable, conforming }) => format!(
            "code, execute{}{}",
            if readable { "/read" } else { "-only" },
            if conforming { ", conforming" } else { "" }
        ),
        Some(SegmentKind::Data { writable, expand_down }) => format!(
            "data, read{}{}",
            if writable { "/write" } else { "-only" },
            if expand_down { ", expand-down" } else { "" }
        ),
        Some(SegmentKind::Ldt) => "LDT".to_string(),
        Some(SegmentKind::Tss { is_32bit, busy }) => {
            format!("{}-bit TSS{}", if is_32bit { 32 } else { 16 }, if busy { ", busy" } else { "" })
        }
        None => format!("system type {:#x}", d.type_bits()),
    };
    let size = if seg.access & Segment::ACCESS_S != 0 {
        if seg.is_32bit() {
            ", 32-bit"
        } else {
            ", 16-bit"
        }
    } else {
        ""
    };
    format!("{what}, DPL {}{size}{}", seg.dpl(), if seg.is_present() { "" } else { ", not present" })
}

fn segment_line(name: &str, seg: &Segment) -> String {
    if seg.selector.is_null() && !seg.is_present() {
        return format!("{name:<4} {:#06x}  null\n", seg.selector.0);
    }
    format!(
        "{name:<4} {:#06x}  base={:#010x} limit={:#010x}  {}\n",
        seg.selector.0,
        seg.base,
        seg.limit,
        segment_kind(seg)
    )
}

/// The segment registers with their hidden descriptor parts (what the
/// processor loaded when the selector was written), then LDTR, TR, GDTR
/// and IDTR.
pub fn sreg(vm: &Vm) -> String {
    let mut out = String::new();
    for reg in SegReg::ALL {
        out += &segment_line(reg.name(), vm.cpu.segment(reg));
    }
    out += &segment_line("ldtr", &vm.cpu.ldtr);
    out += &segment_line("tr", &vm.cpu.tr);
    let _ = writeln!(out, "gdtr base={:#010x} limit={:#06x}", vm.cpu.gdtr.base, vm.cpu.gdtr.limit);
    let _ = writeln!(out, "idtr base={:#010x} limit={:#06x}", vm.cpu.idtr.base, vm.cpu.idtr.limit);
    out
}

/// The CR0 bits the virtual CPU knows, by name.
const CR0_BITS: [(u32, &str); 11] = [
    (cr::CR0_PG, "PG"),
    (cr::CR0_CD, "CD"),
    (cr::CR0_NW, "NW"),
    (cr::CR0_AM, "AM"),
    (cr::CR0_WP, "WP"),
    (cr::CR0_NE, "NE"),
    (cr::CR0_ET, "ET"),
    (cr::CR0_TS, "TS"),
    (cr::CR0_EM, "EM"),
    (cr::CR0_MP, "MP"),
    (cr::CR0_PE, "PE"),
];

/// The CR4 bits the virtual CPU knows, by name.
const CR4_BITS: [(u32, &str); 10] = [
    (cr::CR4_OSXMMEXCPT, "OSXMMEXCPT"),
    (cr::CR4_OSFXSR, "OSFXSR"),
    (cr::CR4_PCE, "PCE"),
    (cr::CR4_PGE, "PGE"),
    (cr::CR4_PAE, "PAE"),
    (cr::CR4_PSE, "PSE"),
    (cr::CR4_DE, "DE"),
    (cr::CR4_TSD, "TSD"),
    (cr::CR4_PVI, "PVI"),
    (cr::CR4_VME, "VME"),
];

/// The names of the bits of `value` that are set, from `table`, or `-`.
fn bit_names(value: u32, table: &[(u32, &str)]) -> String {
    let set: Vec<&str> = table.iter().filter(|(m, _)| value & m != 0).map(|(_, n)| *n).collect();
    if set.is_empty() {
        "-".to_string()
    } else {
        set.join(" ")
    }
}

/// The names of the CR0 bits set in `cr0` (`PG ET PE`), or `-`.
pub fn cr0_bits(cr0: u32) -> String {
    bit_names(cr0, &CR0_BITS)
}

/// The names of the CR4 bits set in `cr4`, or `-`.
pub fn cr4_bits(cr4: u32) -> String {
    bit_names(cr4, &CR4_BITS)
}

/// The control registers with their bits decoded, and the virtual CPU's
/// own state: CPL and the virtual interrupt flag.
pub fn creg(vm: &Vm) -> String {
    let c = &vm.cpu;
    let mut out = String::new();
    let _ = writeln!(out, "cr0 {:#010x}  {}", c.cr0, cr0_bits(c.cr0));
    let _ = writeln!(out, "cr2 {:#010x}  (last page-fault address)", c.cr2);
    let _ = writeln!(out, "cr3 {:#010x}  (page directory at {:#010x})", c.cr3, c.cr3 & entry::FRAME_4K);
    let _ = writeln!(out, "cr4 {:#010x}  {}", c.cr4, cr4_bits(c.cr4));
    let _ = writeln!(
        out,
        "cpl {}  virtual IF {}  IOPL {}{}",
        c.cpl(),
        u8::from(c.interrupts_enabled()),
        c.iopl(),
        if c.halted { "  (halted)" } else { "" }
    );
    out
}

/// Reads the descriptor-table entry at linear `addr`, as a debugger does:
/// no Accessed bit is set.
fn read_u64(vm: &mut Vm, addr: u32) -> Option<u64> {
    let mut b = [0u8; 8];
    vm.read_linear(addr, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

fn describe_descriptor(raw: u64) -> String {
    match Descriptor::parse(raw) {
        Descriptor::Segment(s) => {
            let seg = s.to_segment(bt86_cpu::Selector(0));
            format!("base={:#010x} limit={:#010x}  {}", s.base, s.limit, segment_kind(&seg))
        }
        Descriptor::Gate(g) => {
            let kind = match g.kind {
                GateKind::Call => "call gate",
                GateKind::Task => "task gate",
                GateKind::Interrupt => "interrupt gate",
                GateKind::Trap => "trap gate",
            };
            let target = if g.kind == GateKind::Task {
                format!("TSS {:#06x}", g.selector.0)
            } else {
                format!("{:04x}:{:08x}", g.selector.0, g.offset)
            };
            format!(
                "{kind} -> {target}, DPL {}{}{}",
                g.dpl,
                if g.kind == GateKind::Call { format!(", {} params", g.param_count) } else { String::new() },
                if g.present { "" } else { ", not present" }
            )
        }
        Descriptor::Reserved { type_bits, dpl, .. } => format!("reserved system type {type_bits:#x}, DPL {dpl}"),
    }
}

/// Shows every entry of a descriptor table, eliding empty ones.
fn table(vm: &mut Vm, name: &str, base: u32, limit: u16, selector_style: bool) -> String {
    let count = (u32::from(limit) + 1) / 8;
    let mut out = format!("{name} (base={base:#010x}, limit={limit:#06x}): {count} entries\n");
    let mut empty = 0;
    for i in 0..count {
        let Some(raw) = read_u64(vm, base.wrapping_add(i * 8)) else {
            let _ = writeln!(out, "  [{i:#04x}] not readable (unmapped)");
            continue;
        };
        if raw == 0 {
            empty += 1;
            continue;
        }
        let label = if selector_style { format!("{:#06x}", i * 8) } else { format!("{i:#04x}") };
        let _ = writeln!(out, "  [{label}] {}", describe_descriptor(raw));
    }
    if empty > 0 {
        let _ = writeln!(out, "  ({empty} empty entries not shown)");
    }
    out
}

/// `info gdt`: every non-empty GDT entry, indexed by selector.
pub fn info_gdt(vm: &mut Vm) -> String {
    let (base, limit) = (vm.cpu.gdtr.base, vm.cpu.gdtr.limit);
    table(vm, "GDT", base, limit, true)
}

/// `info idt`: every non-empty IDT gate, indexed by vector.
pub fn info_idt(vm: &mut Vm) -> String {
    let (base, limit) = (vm.cpu.idtr.base, vm.cpu.idtr.limit);
    table(vm, "IDT", base, limit, false)
}

/// `info tss`: the current TSS's ring stacks and I/O map base (SDM Vol. 3A
/// Figure 7-2).
pub fn info_tss(vm: &mut Vm) -> String {
    let tr = vm.cpu.tr;
    if tr.selector.is_null() || !tr.is_present() {
        return "TR is null: no TSS is loaded (ltr was never executed)\n".to_string();
    }
    let mut out = format!("TSS selector {:#06x} base={:#010x} limit={:#010x}\n", tr.selector.0, tr.base, tr.limit);
    let mut b = [0u8; 0x68];
    let len = (tr.limit as usize + 1).min(b.len());
    if vm.read_linear(tr.base, &mut b[..len]).is_err() {
        out += "  not readable (unmapped)\n";
        return out;
    }
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    for ring in 0..3 {
        let _ = writeln!(out, "  ring {ring} stack {:04x}:{:08x}", u16_at(8 + ring * 8), u32_at(4 + ring * 8));
    }
    if len >= 0x68 {
        let _ = writeln!(out, "  I/O map base {:#06x}", u16_at(0x66));
    }
    out
}

/// One present mapping while walking the page tables.
struct Run {
    linear: u32,
    phys: u32,
    size: u64,
    writable: bool,
    user: bool,
}

/// `info tab`: every present mapping of the guest's page tables, with
/// neighbouring pages of contiguous physical frames and equal rights
/// coalesced into one line (SDM Vol. 3A §4.3).
pub fn info_tab(vm: &mut Vm) -> String {
    if vm.cpu.cr0 & cr::CR0_PG == 0 {
        return "paging is off (CR0.PG = 0): linear addresses are physical addresses\n".to_string();
    }
    let pd = vm.cpu.cr3 & entry::FRAME_4K;
    let pse = vm.cpu.cr4 & cr::CR4_PSE != 0;
    let mut runs: Vec<Run> = Vec::new();
    let push = |runs: &mut Vec<Run>, linear: u32, phys: u32, size: u32, writable: bool, user: bool| {
        if let Some(last) = runs.last_mut() {
            if u64::from(last.linear) + last.size == u64::from(linear)
                && u64::from(last.phys) + last.size == u64::from(phys)
                && last.writable == writable
                && last.user == user
            {
                last.size += u64::from(size);
                return;
            }
        }
        runs.push(Run { linear, phys, size: u64::from(size), writable, user });
    };
    let mut pde_bytes = vec![0u8; 4096];
    vm.read_physical(pd, &mut pde_bytes);
    for i in 0..1024u32 {
        let pde = u32::from_le_bytes(pde_bytes[i as usize * 4..i as usize * 4 + 4].try_into().unwrap_or([0; 4]));
        if pde & entry::P == 0 {
            continue;
        }
        let linear = i << 22;
        if pse && pde & entry::PS != 0 {
            push(&mut runs, linear, pde & entry::FRAME_4M, 4 << 20, pde & entry::RW != 0, pde & entry::US != 0);
            continue;
        }
        let mut pt = vec![0u8; 4096];
        vm.read_physical(pde & entry::FRAME_4K, &mut pt);
        for j in 0..1024u32 {
            let pte = u32::from_le_bytes(pt[j as usize * 4..j as usize * 4 + 4].try_into().unwrap_or([0; 4]));
            if pte & entry::P == 0 {
                continue;
            }
            let writable = pde & pte & entry::RW != 0;
            let user = pde & pte & entry::US != 0;
            push(&mut runs, linear | (j << 12), pte & entry::FRAME_4K, 4096, writable, user);
        }
    }
    let mut out = format!("page directory at {pd:#010x}: {} mapped ranges\n", runs.len());
    for r in runs {
        let end = (u64::from(r.linear) + r.size - 1) as u32;
        let pend = (u64::from(r.phys) + r.size - 1) as u32;
        let _ = writeln!(
            out,
            "  {:#010x}-{end:#010x} -> {:#010x}-{pend:#010x}  {} {}",
            r.linear,
            r.phys,
            if r.writable { "rw" } else { "ro" },
            if r.user { "user" } else { "supervisor" }
        );
    }
    out
}

/// `page LADDR`: the walk of one linear address through the page
/// directory and page table, entry by entry (SDM Vol. 3A §4.3).
pub fn page(vm: &mut Vm, laddr: u32) -> String {
    if vm.cpu.cr0 & cr::CR0_PG == 0 {
        return format!("paging is off (CR0.PG = 0): linear {laddr:#010x} is physical {laddr:#010x}\n");
    }
    let entry_text = |e: u32| {
        let mut f = Vec::new();
        for (m, n) in [(entry::P, "P"), (entry::RW, "RW"), (entry::US, "US"), (entry::A, "A"), (entry::D, "D"), (entry::PS, "PS"), (entry::G, "G")] {
            if e & m != 0 {
                f.push(n);
            }
        }
        format!("{e:#010x} [{}]", f.join(" "))
    };
    let read = |vm: &mut Vm, a: u32| {
        let mut b = [0u8; 4];
        vm.read_physical(a, &mut b);
        u32::from_le_bytes(b)
    };
    let pde_addr = (vm.cpu.cr3 & entry::FRAME_4K) | ((laddr >> 22) << 2);
    let pde = read(vm, pde_addr);
    let mut out = format!("linear {laddr:#010x}: directory index {}, table index {}, offset {:#05x}\n", laddr >> 22, (laddr >> 12) & 0x3FF, laddr & 0xFFF);
    let _ = writeln!(out, "  PDE at {pde_addr:#010x} = {}", entry_text(pde));
    if pde & entry::P == 0 {
        out += "  not present: an access raises #PF\n";
        return out;
    }
    if vm.cpu.cr4 & cr::CR4_PSE != 0 && pde & entry::PS != 0 {
        let phys = (pde & entry::FRAME_4M) | (laddr & 0x3F_FFFF);
        let _ = writeln!(out, "  4 MiB page: physical {phys:#010x}");
        return out;
    }
    let pte_addr = (pde & entry::FRAME_4K) | (((laddr >> 12) & 0x3FF) << 2);
    let pte = read(vm, pte_addr);
    let _ = writeln!(out, "  PTE at {pte_addr:#010x} = {}", entry_text(pte));
    if pte & entry::P == 0 {
        out += "  not present: an access raises #PF\n";
        return out;
    }
    let _ = writeln!(out, "  physical {:#010x}", (pte & entry::FRAME_4K) | (laddr & 0xFFF));
    out
}

/// The counters of `--stats`: the translator's and the monitor's.
pub fn stats(vm: &Vm) -> String {
    let tc = &vm.translation_cache().stats;
    let run = &vm.stats;
    let mut rows: Vec<(String, u64)> = vec![
        ("units translated".into(), tc.units),
        ("guest instructions translated".into(), tc.guest_instructions),
        ("IDENT instructions".into(), tc.ident),
        ("rewritten instructions".into(), tc.rewritten.values().sum()),
        ("chain patches".into(), tc.chain_patches),
        ("invalidated units".into(), tc.invalidated_units),
        ("world switches into the TC".into(), run.entries),
    ];
    for (reason, n) in &run.exits {
        rows.push((format!("exits: {reason}"), *n));
    }
    for (class, n) in &run.callouts {
        rows.push((format!("callouts: {class}"), *n));
    }
    rows.push(("indirect lookups: hits".into(), run.ib_hits));
    rows.push(("indirect lookups: misses".into(), run.ib_misses));
    for (name, n) in &run.exceptions {
        rows.push((format!("exceptions: {name}"), *n));
    }
    rows.push(("hardware interrupts delivered".into(), run.interrupts));
    rows.push(("emulated accesses after a host fault".into(), run.emulated_accesses));
    rows.push(("self-modifying-code faults".into(), run.smc_faults));
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<width$}  {value:>10}");
    }
    out
}

/// The translation unit at the current EIP: each guest instruction with
/// its tag (IDENT, REWRITE, CALLOUT) and the reason, followed by the TC
/// instructions it became; then each exit stub, chained or not.
pub fn translation(vm: &mut Vm) -> String {
    let eip = vm.cpu.eip;
    translation_at(vm, eip)
}

/// The translation unit that starts at linear `eip`, shown as
/// [`translation`] shows the current one (`=>` marks the current EIP if it
/// is in the unit).
pub fn translation_at(vm: &mut Vm, eip: u32) -> String {
    let current = vm.cpu.eip;
    let view = match vm.translation_at(eip) {
        Ok(view) => view,
        Err(e) => return format!("cannot translate the unit at {eip:#010x}: {e}\n"),
    };
    let guest_bytes: usize = view.insns.iter().map(|i| i.bytes.len()).sum();
    let mut out = format!(
        "unit {:#010x}-{:#010x}: {} guest instructions, {guest_bytes} bytes -> {} TC bytes at {:#010x}; ends at {}\n",
        view.guest_start,
        view.guest_end,
        view.insns.len(),
        view.tc_len,
        view.tc,
        view.end
    );
    for insn in &view.insns {
        let bytes: String = insn.bytes.iter().map(|b| format!("{b:02x}")).collect();
        let marker = if insn.eip == current { "=>" } else { "  " };
        let line = format!("{marker}{:08x}  {bytes:<16} {:<30} {:<8} {}", insn.eip, insn.text, insn.tag, insn.reason);
        let _ = writeln!(out, "{}", line.trim_end());
        for (ip, text) in &insn.tc {
            let _ = writeln!(out, "        tc {ip:08x}  {text}");
        }
    }
    for exit in &view.exits {
        let state = match exit.chained_to {
            Some(to) => format!("chained to unit {to:#010x}"),
            None => "unchained: exits to the monitor".to_string(),
        };
        let _ = writeln!(out, "  exit stub {:08x}: {} -- {state}", exit.stub, exit.what);
    }
    out
}
