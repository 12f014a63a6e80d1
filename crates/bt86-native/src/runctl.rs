//! Run control for debuggers: step, run until an event, breakpoints,
//! watchpoints, the event log, and memory access without side effects.
//!
//! This module owns everything a debugger (the `bt86 debug` session, its
//! terminal UI and the gdb stub in bt86-debug) asks of the monitor. It
//! keeps its state in one [`DebugState`] inside the [`Vm`], and reaches
//! the run loop in `vm.rs` only through a handful of one-line hooks:
//!
//! - before entering a translation unit, the run loop asks
//!   [`Vm::debug_stop_before_unit`] whether a breakpoint is at EIP;
//! - before chaining an exit or installing an indirect-branch target, it
//!   asks [`Vm::debug_is_break`], so that no chained jump ever enters a
//!   unit that starts at a breakpoint without passing the monitor;
//! - every exit, exception and interrupt is reported to
//!   [`Vm::debug_record_exit`] and [`Vm::debug_delivered`] for the event
//!   log and for stopping on events;
//! - a host fault on a watched page goes to [`Vm::debug_watch_fault`]
//!   first, which emulates the access and checks it against the
//!   watchpoints;
//! - every change of a guest page's host protection is followed by
//!   [`Vm::debug_reprotect`], so that the protections of watchpoints and of
//!   self-modifying-code detection compose.
//!
//! It must not hold guest semantics (those are bt86-cpu's) and must not
//! change how an undebugged run behaves: with no breakpoint, watchpoint or
//! event log, every hook is a test of an empty set or a false flag, and
//! [`Vm::resume`] is the normal run loop.
//!
//! Guest EIPs are the only addresses this API reports: a stop is always at
//! a guest instruction boundary, never at a translation-cache address.
//!
//! Watchpoints work through page protection. While paging is off, guest
//! RAM is mapped at its physical addresses in the host, so a watched page
//! is made inaccessible (read watches) or read-only (write watches). With
//! paging on, a watched linear page is kept out of the shadow mappings
//! altogether (the hidden-fault path never maps it), so every access to it
//! faults. Either way the host fault lands in [`Vm::debug_watch_fault`],
//! which emulates the instruction and checks what it touched against the
//! watched ranges (translated to physical addresses through the guest's
//! tables when paging is on). Accesses made by callouts, by interrupt
//! delivery (a `push` by `iret`'s emulation, say) and by indirect branches
//! the debugger steps itself (see [`Vm::step`]) run in the monitor and are
//! not watched.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use bt86_cpu::emulate::{emulate, EmulateError};
use bt86_cpu::paging::{self, PageAccess};
use bt86_cpu::state::cr;
use bt86_cpu::{Exception, LinearAddr, SegReg};
use bt86_machine::{Bus, GuestPhysAddr};
use bt86_translate::{ExitId, ExitKind, Mode};
use iced_x86::{Decoder, DecoderOptions, Instruction, InstructionInfoFactory, OpAccess, Register};

use crate::vm::{AccessLog, Exit, Vm};
use crate::NativeError;

/// How many events the log keeps; older ones are dropped.
pub const EVENT_LOG_CAPACITY: usize = 1024;

/// The host's page size, which is also the guest's small page.
const PAGE: u32 = 4096;

/// A breakpoint's address: linear (what EIP holds, since code segments are
/// based at 0) or physical (where the bytes are in guest RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakAddr {
    Linear(u32),
    Physical(u32),
}

/// Which accesses a watchpoint catches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    Read,
    Write,
    /// Reads and writes.
    Access,
}

impl WatchKind {
    /// Whether an access (a write if `write`) is one this kind catches.
    fn catches(self, write: bool) -> bool {
        match self {
            WatchKind::Read => !write,
            WatchKind::Write => write,
            WatchKind::Access => true,
        }
    }

    /// The word the debugger shows.
    pub fn name(self) -> &'static str {
        match self {
            WatchKind::Read => "read",
            WatchKind::Write => "write",
            WatchKind::Access => "access",
        }
    }
}

/// Why a debugger-driven run stopped. EIPs are always guest EIPs, never TC
/// addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// [`Vm::step`] or [`Vm::step_unit`] completed.
    Stepped,
    /// About to execute the instruction at `eip`.
    Breakpoint { eip: u32 },
    /// Stopped after the access completed; `eip` is the next instruction.
    /// `addr` is the first watched byte the access touched.
    Watchpoint { kind: WatchKind, addr: u32, eip: u32 },
    /// A guest exception was just delivered; `eip` is its handler (only if
    /// [`RunLimit::stop_on_events`]).
    Exception { vector: u8, eip: u32 },
    /// A hardware interrupt was just delivered; `eip` is its handler (only
    /// if [`RunLimit::stop_on_events`]).
    Interrupt { vector: u8, eip: u32 },
    /// `max_insns` instructions ran, or the `until` instant passed.
    Limit,
    /// The guest stopped for good (exit port, triple fault, ...).
    Exit(Exit),
}

/// When [`Vm::resume`] must give control back even with no breakpoint hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunLimit {
    /// Stop after this many guest instructions. The run then goes one
    /// instruction at a time (counting instructions inside chained
    /// translated code is not possible without stepping).
    pub max_insns: Option<u64>,
    /// Stop once this instant has passed. It is checked when translated
    /// code exits to the monitor, so a guest spinning in chained code with
    /// no device to interrupt it is not stopped by it.
    pub until: Option<Instant>,
    /// Stop after each guest exception or hardware interrupt is delivered.
    pub stop_on_events: bool,
}

/// One line of the event log (exits, callouts, faults, interrupts, hidden
/// faults), kept in a bounded ring in the Vm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `branch`, `indirect-miss`, `callout`, `fault`, `memory-fault`,
    /// `timer`, `exception`, `interrupt` or `watch`.
    pub kind: &'static str,
    /// The guest EIP the event happened at.
    pub eip: u32,
    pub detail: String,
}

/// A watchpoint: `len` bytes from linear address `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Watch {
    kind: WatchKind,
    addr: u32,
    len: u32,
}

impl Watch {
    /// The first byte of `[addr, addr + len)` this watch covers, if any.
    fn overlap(&self, addr: u32, len: u32) -> Option<u32> {
        let (a0, a1) = (u64::from(addr), u64::from(addr) + u64::from(len));
        let (w0, w1) = (u64::from(self.addr), u64::from(self.addr) + u64::from(self.len));
        (a0 < w1 && w0 < a1).then(|| a0.max(w0) as u32)
    }

    fn pages(&self) -> std::ops::RangeInclusive<u32> {
        let last = (u64::from(self.addr) + u64::from(self.len) - 1) as u32;
        (self.addr / PAGE)..=(last / PAGE)
    }
}

/// The debugger's state inside a [`Vm`]. Empty by default, which makes
/// every hook of the run loop a no-op.
#[derive(Debug, Default)]
pub struct DebugState {
    breakpoints: Vec<BreakAddr>,
    /// Linear breakpoint addresses, for the check before each unit.
    linear: BTreeSet<u32>,
    /// Physical breakpoint addresses.
    physical: BTreeSet<u32>,
    watches: Vec<Watch>,
    /// A debugger is driving the run (inside [`Vm::step`],
    /// [`Vm::step_unit`] or [`Vm::resume`]): stops may be raised.
    driving: bool,
    /// The run loop's breakpoint check is on (inside [`Vm::resume`]).
    check_breaks: bool,
    stop_on_events: bool,
    /// Why the run loop returned early, for [`Vm::resume`] to report.
    pending: Option<Stop>,
    /// Record events in `events`.
    log_events: bool,
    events: VecDeque<Event>,
    events_total: u64,
    /// Guest pages this state made inaccessible or read-only.
    guarded: BTreeSet<u32>,
    /// The last [`Vm::resume`] ended with [`Stop::Limit`]: a caller running
    /// in slices will resume again, and a breakpoint at EIP then was
    /// reached, not stopped at, so it must be reported rather than
    /// stepped off.
    after_limit: bool,
}

/// The host protection a guest page needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageProt {
    None,
    ReadOnly,
    ReadWrite,
}

/// One guest instruction as the debugger shows it: where it is, its text,
/// and what the translator does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsnView {
    pub eip: u32,
    pub bytes: Vec<u8>,
    /// Intel syntax.
    pub text: String,
    /// `IDENT`, `REWRITE`, `CALLOUT` or `FAULT`.
    pub tag: &'static str,
    /// Why it is rewritten (empty for IDENT).
    pub reason: String,
    /// Its translation: (TC address, Intel syntax) pairs. Empty when the
    /// instruction is not part of a translated unit.
    pub tc: Vec<(u32, String)>,
}

/// An exit stub of a unit, and whether chaining patched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitView {
    /// The stub's TC address.
    pub stub: u32,
    /// What the exit does: `branch to 0x...`, `callout cli`, ...
    pub what: String,
    /// The guest EIP of the unit it is chained to, if it is.
    pub chained_to: Option<u32>,
}

/// A translation unit as the debugger shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitView {
    pub guest_start: u32,
    pub guest_end: u32,
    /// Where its translated code is, and how long.
    pub tc: u32,
    pub tc_len: u32,
    /// Why the unit ends, in words.
    pub end: &'static str,
    pub insns: Vec<InsnView>,
    pub exits: Vec<ExitView>,
}

impl Vm {
    // ----- Breakpoints -----

    /// Sets a breakpoint. Translation units end before it from now on, and
    /// the units already translated across it or starting at it are
    /// dropped (with every chained jump into them), so execution always
    /// comes back to the monitor there.
    pub fn add_breakpoint(&mut self, at: BreakAddr) -> Result<(), NativeError> {
        if self.debug.breakpoints.contains(&at) {
            return Ok(());
        }
        self.debug.breakpoints.push(at);
        self.sync_breaks();
        let page = match at {
            BreakAddr::Linear(a) | BreakAddr::Physical(a) => a >> 12,
        };
        self.tc.invalidate_page(&mut self.space.monitor(), page);
        Ok(())
    }

    /// Removes a breakpoint; false if there was none at `at`.
    pub fn remove_breakpoint(&mut self, at: BreakAddr) -> bool {
        let before = self.debug.breakpoints.len();
        self.debug.breakpoints.retain(|b| *b != at);
        if self.debug.breakpoints.len() == before {
            return false;
        }
        self.sync_breaks();
        true
    }

    /// The breakpoints, in the order they were set.
    pub fn breakpoints(&self) -> Vec<BreakAddr> {
        self.debug.breakpoints.clone()
    }

    /// Rebuilds the address sets and tells the translator where units must
    /// end. A physical breakpoint ends units at the same linear address,
    /// which is exact while paging is off.
    fn sync_breaks(&mut self) {
        let (mut linear, mut physical) = (BTreeSet::new(), BTreeSet::new());
        for b in &self.debug.breakpoints {
            match *b {
                BreakAddr::Linear(a) => linear.insert(a),
                BreakAddr::Physical(a) => physical.insert(a),
            };
        }
        let cut: BTreeSet<u32> = linear.union(&physical).copied().collect();
        self.debug.linear = linear;
        self.debug.physical = physical;
        self.set_unit_breaks(cut);
    }

    /// Whether a breakpoint is set at guest EIP `eip` (by linear address,
    /// or by the physical address it maps to). The run loop asks before it
    /// chains a branch to `eip`, so the check must stay cheap when no
    /// breakpoint is set.
    #[inline]
    pub(crate) fn debug_is_break(&mut self, eip: u32) -> bool {
        if self.debug.linear.is_empty() && self.debug.physical.is_empty() {
            return false;
        }
        if self.debug.linear.contains(&eip) {
            return true;
        }
        !self.debug.physical.is_empty() && self.linear_to_physical(eip).is_some_and(|p| self.debug.physical.contains(&p))
    }

    /// The run loop's hook before it enters a translation unit: inside
    /// [`Vm::resume`], a breakpoint at EIP stops the run before the
    /// instruction executes.
    #[inline]
    pub(crate) fn debug_stop_before_unit(&mut self) -> bool {
        if !self.debug.check_breaks {
            return false;
        }
        let eip = self.cpu.eip;
        if self.debug_is_break(eip) {
            self.debug.pending = Some(Stop::Breakpoint { eip });
            return true;
        }
        false
    }

    // ----- Watchpoints -----

    /// Sets a watchpoint on `len` bytes at linear address `addr`.
    pub fn add_watchpoint(&mut self, kind: WatchKind, addr: u32, len: u32) -> Result<(), NativeError> {
        if len == 0 || u64::from(addr) + u64::from(len) > 1 << 32 {
            return Err(NativeError::Internal(format!(
                "a watchpoint of {len} bytes at {addr:#010x} does not fit in the 4 GiB linear address space; give a length of at least 1 that ends below 4 GiB"
            )));
        }
        let watch = Watch { kind, addr, len };
        if !self.debug.watches.contains(&watch) {
            self.debug.watches.push(watch);
        }
        self.guard_pages(watch.pages())
    }

    /// Removes a watchpoint; false if there was no such watchpoint.
    pub fn remove_watchpoint(&mut self, kind: WatchKind, addr: u32, len: u32) -> bool {
        let watch = Watch { kind, addr, len };
        let before = self.debug.watches.len();
        self.debug.watches.retain(|w| *w != watch);
        if self.debug.watches.len() == before {
            return false;
        }
        // The pages go back to what code protection alone needs; a failure
        // here leaves a page more protected than needed, which only costs
        // emulated accesses.
        let _ = self.guard_pages(watch.pages());
        true
    }

    /// The watchpoints, as (kind, address, length).
    pub fn watchpoints(&self) -> Vec<(WatchKind, u32, u32)> {
        self.debug.watches.iter().map(|w| (w.kind, w.addr, w.len)).collect()
    }

    fn guard_pages(&mut self, pages: impl IntoIterator<Item = u32>) -> Result<(), NativeError> {
        for page in pages {
            self.debug_reprotect(page)?;
        }
        Ok(())
    }

    /// What page `page` needs: no access under a read watch, read-only
    /// under a write watch or when it holds translated code, else normal.
    fn page_prot(&self, page: u32) -> PageProt {
        // With paging on, code protection belongs to the shadow mappings,
        // which keep it by frame; only the watches are this module's.
        let code = !self.paged_layout() && self.protected.contains(&page);
        let mut prot = if code { PageProt::ReadOnly } else { PageProt::ReadWrite };
        for w in &self.debug.watches {
            if w.pages().contains(&page) {
                match w.kind {
                    WatchKind::Read | WatchKind::Access => return PageProt::None,
                    WatchKind::Write => prot = PageProt::ReadOnly,
                }
            }
        }
        prot
    }

    /// Sets the host protection of guest page `page` to what the
    /// watchpoints and code protection together need. The run loop calls
    /// this after it changes a page's protection for code, so that making
    /// a code page writable again does not drop a watchpoint's guard.
    pub(crate) fn debug_reprotect(&mut self, page: u32) -> Result<(), NativeError> {
        if self.debug.watches.is_empty() && !self.debug.guarded.contains(&page) {
            return Ok(());
        }
        let prot = self.page_prot(page);
        let guarded = match prot {
            PageProt::ReadWrite => false,
            PageProt::ReadOnly => !self.protected.contains(&page),
            PageProt::None => true,
        };
        let was_guarded = if guarded { !self.debug.guarded.insert(page) } else { self.debug.guarded.remove(&page) };
        if self.paged_layout() {
            // A guarded linear page is never mapped, for reads or writes
            // (`Vm::debug_guards_page`); an unguarded one comes back by its
            // next hidden fault.
            return if guarded || was_guarded { self.unmap_linear_page(page) } else { Ok(()) };
        }
        set_page_protection(self.space.ram_size(), page, prot).map_err(NativeError::Protect)
    }

    /// Whether the hidden-fault path must leave linear page `page` unmapped
    /// (with paging on): a watchpoint guards it.
    pub(crate) fn debug_guards_page(&self, page: u32) -> bool {
        !self.debug.guarded.is_empty() && self.debug.guarded.contains(&page)
    }

    /// The watched ranges as physical ranges, each with the amount to
    /// subtract from a physical address to get the linear one: the watches
    /// themselves while paging is off, and with paging on one piece per
    /// mapped page of each watch.
    fn watched_pieces(&mut self) -> Vec<(Watch, u32)> {
        let watches = self.debug.watches.clone();
        if !self.paged_layout() {
            return watches.into_iter().map(|w| (w, 0)).collect();
        }
        let mut pieces = Vec::new();
        for w in watches {
            for page in w.pages() {
                let start = (page * PAGE).max(w.addr);
                let end = (u64::from(page * PAGE) + u64::from(PAGE)).min(u64::from(w.addr) + u64::from(w.len)) as u32;
                let probe = paging::probe(&self.cpu, &mut self.machine, LinearAddr(start), PageAccess::read(false));
                if let Ok(walk) = probe {
                    let delta = walk.phys.0.wrapping_sub(start);
                    pieces.push((Watch { kind: w.kind, addr: walk.phys.0, len: end - start }, delta));
                }
            }
        }
        pieces
    }

    /// Re-applies the watchpoints' guards to every page (after all code
    /// protections were dropped at once).
    pub(crate) fn debug_reprotect_all(&mut self) -> Result<(), NativeError> {
        let pages: BTreeSet<u32> = self.debug.watches.iter().flat_map(|w| w.pages()).chain(self.debug.guarded.iter().copied()).collect();
        self.guard_pages(pages)
    }

    /// The run loop's hook for a host fault: if it is on a page a
    /// watchpoint guards, emulate the instruction here (against the
    /// machine, recording its accesses), drop translations of code it
    /// changed, and stop if it touched a watched range. `None` means the
    /// fault is not the watchpoints' business.
    pub(crate) fn debug_watch_fault(&mut self, trapno: u32, addr: u32, trap_flag: bool) -> Result<Option<Option<Exit>>, NativeError> {
        if trapno != 14 || !self.debug.guarded.contains(&(addr / PAGE)) {
            return Ok(None);
        }
        let insn = self.decode_at(self.cpu.eip);
        let eip = self.cpu.eip;
        let mut rec = AccessLog::new(&mut self.machine);
        match emulate(&mut self.cpu, &mut rec, &insn) {
            Ok(()) => {}
            Err(EmulateError::Exception(e)) => return self.deliver(e).map(Some),
            // Leave it to the ordinary path, which knows what to do with
            // instructions the emulator lacks.
            Err(EmulateError::Unsupported { .. }) => return Ok(None),
        }
        let written = rec.written_frames();
        let accesses = rec.accesses;
        self.stats.emulated_accesses += 1;
        // The write may have changed translated code.
        self.check_written_code(&written)?;
        // The first recorded access that a watchpoint of its kind covers.
        // Accesses are physical; with paging on, each watched page is
        // looked up in the guest's tables as they are now.
        let watches: Vec<(Watch, u32)> = self.watched_pieces();
        let hit = accesses.iter().find_map(|&(a, l, write)| {
            watches
                .iter()
                .filter(|(w, _)| w.kind.catches(write))
                .find_map(|(w, delta)| w.overlap(a, l).map(|at| (w.kind, at.wrapping_sub(*delta))))
        });
        if let Some((kind, at)) = hit {
            self.record(Event { kind: "watch", eip, detail: format!("{} watchpoint hit at {at:#010x}", kind.name()) });
        }
        if let Some(exit) = self.single_step_trap(trap_flag)? {
            return Ok(Some(Some(exit)));
        }
        match hit {
            Some((kind, addr)) if self.debug.driving => {
                self.debug.pending = Some(Stop::Watchpoint { kind, addr, eip: self.cpu.eip });
                Ok(Some(Some(Exit::StepLimit)))
            }
            _ => Ok(Some(None)),
        }
    }

    // ----- Events -----

    /// Turns the event log on or off. It is off by default: recording
    /// every exit costs time a plain run should not pay.
    pub fn set_event_log(&mut self, on: bool) {
        self.debug.log_events = on;
    }

    /// The events in the log, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.debug.events.iter()
    }

    /// How many events were recorded since the VM started (including those
    /// the bounded log has dropped).
    pub fn event_count(&self) -> u64 {
        self.debug.events_total
    }

    fn record(&mut self, event: Event) {
        if !self.debug.log_events {
            return;
        }
        if self.debug.events.len() == EVENT_LOG_CAPACITY {
            self.debug.events.pop_front();
        }
        self.debug.events.push_back(event);
        self.debug.events_total += 1;
    }

    /// The run loop's hook at each exit from translated code, before it is
    /// handled: one event in the log.
    #[inline]
    pub(crate) fn debug_record_exit(&mut self) {
        if self.debug.log_events {
            self.record_exit();
        }
    }

    fn record_exit(&mut self) {
        use bt86_translate::layout::vcpu;
        let id = ExitId(self.space.vcpu_read(vcpu::EXIT_ID));
        let rip = self.space.vcpu_read_u64(vcpu::FAULT_RIP) as u32;
        let event = match id {
            ExitId::FAULT => {
                let trapno = self.space.vcpu_read(vcpu::FAULT_TRAPNO);
                let addr = self.space.vcpu_read_u64(vcpu::FAULT_ADDR) as u32;
                let eip = self.tc.locate(rip).map_or(0, |(_, m)| m.guest_eip);
                let detail = match trapno {
                    12..=14 => format!("host trap {trapno} on {addr:#010x}: emulated, or a guest fault"),
                    _ => format!("host trap {trapno}"),
                };
                Event { kind: if (12..=14).contains(&trapno) { "memory-fault" } else { "fault" }, eip, detail }
            }
            ExitId::ASYNC => {
                let eip = self.tc.boundary_at(rip).unwrap_or(0);
                Event { kind: "timer", eip, detail: "host timer stopped the guest for a device".into() }
            }
            ExitId::INDIRECT_MISS => {
                let target = self.space.vcpu_read(vcpu::IB_TARGET);
                Event { kind: "indirect-miss", eip: target, detail: format!("no translation of {target:#010x} in the indirect-branch table") }
            }
            id => match self.tc.exit(id).map(|r| r.kind) {
                Some(ExitKind::Branch { target }) => {
                    Event { kind: "branch", eip: target, detail: format!("unchained branch to {target:#010x}") }
                }
                Some(ExitKind::Callout { eip, insn, reason }) => Event {
                    kind: "callout",
                    eip,
                    detail: format!("{} ({})", bt86_translate::trace::format_insn(&insn), reason.class()),
                },
                Some(ExitKind::Fault { eip, exception }) => {
                    Event { kind: "fault", eip, detail: format!("{exception} raised by the translation") }
                }
                None => return,
            },
        };
        self.record(event);
    }

    /// The run loop's hook after an exception or interrupt was delivered
    /// through the guest's IDT: log it, and inside a debugger-driven run
    /// that stops on events, end the run (returning [`Exit::StepLimit`]
    /// with the stop pending).
    pub(crate) fn debug_delivered(&mut self, interrupt: bool, vector: u8, from: u32, what: &str) -> Option<Exit> {
        if !self.debug.log_events && !self.debug.stop_on_events {
            return None;
        }
        let eip = self.cpu.eip;
        let kind = if interrupt { "interrupt" } else { "exception" };
        self.record(Event { kind, eip: from, detail: format!("{what} (vector {vector:#04x}) -> handler at {eip:#010x}") });
        if self.debug.driving && self.debug.stop_on_events {
            self.debug.pending =
                Some(if interrupt { Stop::Interrupt { vector, eip } } else { Stop::Exception { vector, eip } });
            return Some(Exit::StepLimit);
        }
        None
    }

    // ----- Stepping and running -----

    /// Executes exactly one guest instruction, from a single-instruction
    /// unit (or takes one pending interrupt on the way, as
    /// [`Vm::step_instruction`] does). Breakpoints do not stop a step.
    pub fn step(&mut self) -> Result<Stop, NativeError> {
        self.debug.after_limit = false;
        self.drive_once(false, Vm::step_instruction)
    }

    /// Runs `run` (one instruction or one unit) as a debugger stop may
    /// interrupt it, stopping on events only if asked, and turns its exit
    /// into a [`Stop`]: a watchpoint or event the hooks recorded, else
    /// [`Stop::Stepped`], or the guest's end.
    fn drive_once(&mut self, stop_on_events: bool, run: fn(&mut Vm) -> Result<Exit, NativeError>) -> Result<Stop, NativeError> {
        let saved = (self.debug.driving, self.debug.stop_on_events);
        self.debug.driving = true;
        self.debug.stop_on_events = stop_on_events;
        let result = run(self);
        (self.debug.driving, self.debug.stop_on_events) = saved;
        let pending = self.debug.pending.take();
        match result? {
            Exit::StepLimit => Ok(pending.unwrap_or(Stop::Stepped)),
            exit => Ok(Stop::Exit(exit)),
        }
    }

    /// Executes the translation unit at EIP natively, as one piece: a
    /// copy translated for this run alone, never chained, whose indirect
    /// branches exit (see [`Vm::step_unit_native`]). It ends where the unit
    /// ends: at a branch, a callout, a fault or interrupt, a breakpoint
    /// (units end before them), or its length cap.
    pub fn step_unit(&mut self) -> Result<Stop, NativeError> {
        self.debug.after_limit = false;
        self.drive_once(false, Vm::step_unit_native)
    }

    /// Runs until a breakpoint, a watchpoint, an event (if asked), the
    /// limit, or the end of the guest. With no breakpoint, no watchpoint
    /// and no instruction count, this is the normal run loop at full speed
    /// (with the breakpoint check of each unit entry switched on).
    pub fn resume(&mut self, limit: RunLimit) -> Result<Stop, NativeError> {
        let eip = self.cpu.eip;
        if std::mem::take(&mut self.debug.after_limit) && self.debug_is_break(eip) {
            return Ok(Stop::Breakpoint { eip });
        }
        self.debug.driving = true;
        self.debug.stop_on_events = limit.stop_on_events;
        let result = self.resume_inner(limit);
        self.debug.after_limit = matches!(result, Ok(Stop::Limit));
        self.debug.driving = false;
        self.debug.check_breaks = false;
        self.debug.stop_on_events = false;
        self.debug.pending = None;
        result
    }

    fn resume_inner(&mut self, limit: RunLimit) -> Result<Stop, NativeError> {
        let paging = self.cpu.cr0 & cr::CR0_PG != 0;
        // Physical breakpoints need a page walk per instruction with paging
        // on; everything else runs at full speed.
        let slow = limit.max_insns.is_some() || (paging && !self.debug.physical.is_empty());
        let mut executed = 0u64;
        // Step off a breakpoint at the current EIP (the user just stopped
        // there), then go on at full speed, unless only stepping can
        // honour the limit or the watchpoints.
        let eip = self.cpu.eip;
        if slow || self.debug_is_break(eip) {
            loop {
                if executed > 0 && self.debug_is_break(self.cpu.eip) {
                    return Ok(Stop::Breakpoint { eip: self.cpu.eip });
                }
                if limit.max_insns.is_some_and(|max| executed >= max) || limit.until.is_some_and(|t| Instant::now() >= t) {
                    return Ok(Stop::Limit);
                }
                let predicted = if paging && !self.debug.watches.is_empty() { self.predicted_hit() } else { None };
                // One step that may stop on the exception or interrupt it
                // delivers.
                let stop = self.drive_once(limit.stop_on_events, Vm::step_instruction)?;
                executed += 1;
                match stop {
                    Stop::Stepped => {}
                    other => return Ok(other),
                }
                if let Some((kind, addr)) = predicted {
                    return Ok(Stop::Watchpoint { kind, addr, eip: self.cpu.eip });
                }
                if !slow {
                    break;
                }
            }
        }
        // Full speed: the run loop, with a deadline for `until`.
        let saved_deadline = self.deadline;
        if let Some(until) = limit.until {
            self.deadline = Some(saved_deadline.map_or(until, |d| d.min(until)));
        }
        self.debug.check_breaks = true;
        let result = self.run_loop(None);
        self.debug.check_breaks = false;
        self.deadline = saved_deadline;
        let exit = result?;
        let pending = self.debug.pending.take();
        Ok(match exit {
            Exit::StepLimit => pending.unwrap_or(Stop::Limit),
            Exit::Timeout if limit.until.is_some_and(|t| Instant::now() >= t) && saved_deadline.is_none_or(|d| Instant::now() < d) => {
                Stop::Limit
            }
            exit => Stop::Exit(exit),
        })
    }

    /// With paging on: whether the instruction at EIP will access a watched
    /// range, from its memory operands as iced-x86 computes them with the
    /// current registers.
    fn predicted_hit(&mut self) -> Option<(WatchKind, u32)> {
        let insn = self.decode_linear(self.cpu.eip)?;
        let mut factory = InstructionInfoFactory::new();
        let info = factory.info(&insn);
        let cpu = &self.cpu;
        for mem in info.used_memory() {
            let write = matches!(mem.access(), OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite);
            let read = matches!(mem.access(), OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite);
            let len = mem.memory_size().size().max(1) as u32;
            let Some(addr) = mem.virtual_address(0, |reg, _, _| register_value(cpu, reg)) else { continue };
            let addr = addr as u32;
            for w in &self.debug.watches {
                if (read && w.kind.catches(false)) || (write && w.kind.catches(true)) {
                    if let Some(at) = w.overlap(addr, len) {
                        return Some((w.kind, at));
                    }
                }
            }
        }
        None
    }

    // ----- Memory -----

    /// The physical address linear address `addr` maps to now, without
    /// setting Accessed or Dirty bits; `None` if it is not mapped.
    pub fn linear_to_physical(&mut self, addr: u32) -> Option<u32> {
        if self.cpu.cr0 & cr::CR0_PG == 0 {
            return Some(addr);
        }
        paging::probe(&self.cpu, &mut self.machine, LinearAddr(addr), PageAccess::read(false)).ok().map(|w| w.phys.0)
    }

    /// Reads guest memory at a linear address, through the guest's page
    /// tables when CR0.PG is set (as a supervisor read, with no Accessed or
    /// Dirty side effects). An unmapped page is the #PF a supervisor read
    /// would raise; nothing is delivered to the guest.
    pub fn read_linear(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), Exception> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr.wrapping_add(done as u32);
            let chunk = ((PAGE - at % PAGE) as usize).min(buf.len() - done);
            let phys = self.probe(at, false)?;
            self.machine.read_phys(GuestPhysAddr(phys), &mut buf[done..done + chunk]);
            done += chunk;
        }
        Ok(())
    }

    /// Writes guest memory at a linear address (as [`Vm::read_linear`]
    /// reads it, ignoring write protection as a debugger must to plant
    /// code), and drops the translations of any code it overwrites.
    pub fn write_linear(&mut self, addr: u32, bytes: &[u8]) -> Result<(), Exception> {
        // Translate every page first, so that a fault writes nothing.
        let mut pieces = Vec::new();
        let mut done = 0usize;
        while done < bytes.len() {
            let at = addr.wrapping_add(done as u32);
            let chunk = ((PAGE - at % PAGE) as usize).min(bytes.len() - done);
            pieces.push((at, self.probe(at, false)?, done, chunk));
            done += chunk;
        }
        for (linear, phys, from, len) in pieces {
            self.machine.write_phys(GuestPhysAddr(phys), &bytes[from..from + len]);
            let page = linear / PAGE;
            if self.tc.page_has_code(page) && !self.code_intact(page) {
                if self.protected.contains(&page) {
                    // A failure to unprotect leaves the page read-only, which
                    // the fault path copes with; the write itself is done.
                    let _ = self.release_code_page(page);
                } else {
                    self.tc.invalidate_page(&mut self.space.monitor(), page);
                }
            }
        }
        Ok(())
    }

    /// Reads guest-physical memory; addresses without RAM read as the bus
    /// says (all ones).
    pub fn read_physical(&mut self, addr: u32, buf: &mut [u8]) {
        self.machine.read_phys(GuestPhysAddr(addr), buf);
    }

    fn probe(&mut self, linear: u32, write: bool) -> Result<u32, Exception> {
        if self.cpu.cr0 & cr::CR0_PG == 0 {
            return Ok(linear);
        }
        let access = if write { PageAccess::write(false) } else { PageAccess::read(false) };
        paging::probe(&self.cpu, &mut self.machine, LinearAddr(linear), access).map(|w| w.phys.0)
    }

    fn decode_linear(&mut self, eip: u32) -> Option<Instruction> {
        let mut bytes = [0u8; 16];
        self.read_linear(eip, &mut bytes).ok()?;
        let insn = Decoder::with_ip(32, &bytes, u64::from(eip), DecoderOptions::NONE).decode();
        (!insn.is_invalid()).then_some(insn)
    }

    // ----- What the translator makes of the code -----

    /// The guest instruction at linear `eip`, classified as the translator
    /// would classify it now.
    pub fn describe_insn(&mut self, eip: u32) -> Result<InsnView, Exception> {
        let mut bytes = [0u8; 16];
        self.read_linear(eip, &mut bytes)?;
        let insn = Decoder::with_ip(32, &bytes, u64::from(eip), DecoderOptions::NONE).decode();
        let class = bt86_translate::classify(&insn, self.mode(false));
        Ok(InsnView {
            eip,
            bytes: bytes[..insn.len()].to_vec(),
            text: bt86_translate::trace::format_insn(&insn),
            tag: bt86_translate::trace::tag(&class),
            reason: bt86_translate::trace::reason(&class),
            tc: Vec::new(),
        })
    }

    /// The translation unit that runs at `eip` (translated now if it is not
    /// in the cache, and then protected like any other): each guest
    /// instruction with its tag and reason beside its TC code, and each
    /// exit with its chaining state.
    pub fn translation_at(&mut self, eip: u32) -> Result<UnitView, NativeError> {
        let mode = self.mode(false);
        // With paging, the fetch may fault; the frame is part of the key.
        let frame = self
            .code_frame(eip)
            .map_err(|e| NativeError::Internal(format!("the code at {eip:#010x} cannot be fetched: {e}")))?;
        let id = self.unit_for(eip, frame, mode, true)?;
        let u = self.tc.unit(id).clone();
        let code = self.monitor_bytes(u.tc.0, u.tc_len as usize).to_vec();
        let insns = u
            .insns
            .iter()
            .map(|t| {
                let (s, e) = (t.tc_start as usize, (t.tc_end as usize).min(code.len()));
                InsnView {
                    eip: t.insn.ip32(),
                    bytes: t.bytes().to_vec(),
                    text: bt86_translate::trace::format_insn(&t.insn),
                    tag: bt86_translate::trace::tag(&t.class),
                    reason: bt86_translate::trace::reason(&t.class),
                    tc: bt86_translate::trace::disassemble(&code[s.min(e)..e], u.tc.0 + t.tc_start),
                }
            })
            .collect();
        let exits = (u.first_exit..u.first_exit + u.exit_count)
            .filter_map(|e| self.tc.exit(ExitId(e)).copied())
            .map(|rec| ExitView {
                stub: rec.stub.0,
                what: match rec.kind {
                    ExitKind::Branch { target } => format!("branch to {target:#010x}"),
                    ExitKind::Callout { insn, reason, .. } => {
                        format!("callout: {} ({})", bt86_translate::trace::format_insn(&insn), reason.class())
                    }
                    ExitKind::Fault { exception, .. } => format!("raises {exception}"),
                },
                chained_to: rec.chained_to.map(|to| self.tc.unit(to).guest_start),
            })
            .collect();
        Ok(UnitView {
            guest_start: u.guest_start,
            guest_end: u.guest_end,
            tc: u.tc.0,
            tc_len: u.tc_len,
            end: bt86_translate::trace::end_reason(u.end),
            insns,
            exits,
        })
    }

    /// The translation mode the run loop uses now (for callers that
    /// classify instructions themselves).
    pub fn translation_mode(&self) -> Mode {
        self.mode(false)
    }
}

/// A register's value for iced-x86's address computation; segment
/// registers stand for their bases.
fn register_value(cpu: &bt86_cpu::Cpu, reg: Register) -> Option<u64> {
    use bt86_cpu::state::gpr;
    if let Some(seg) = SegReg::from_iced(reg) {
        return Some(u64::from(cpu.segment(seg).base));
    }
    let full = reg.full_register32();
    let index = match full {
        Register::EAX => gpr::EAX,
        Register::ECX => gpr::ECX,
        Register::EDX => gpr::EDX,
        Register::EBX => gpr::EBX,
        Register::ESP => gpr::ESP,
        Register::EBP => gpr::EBP,
        Register::ESI => gpr::ESI,
        Register::EDI => gpr::EDI,
        _ => return None,
    };
    let value = cpu.gpr[index];
    // Addresses use 32-bit registers, or 16-bit ones with an
    // address-size prefix; never byte registers.
    Some(u64::from(if reg.size() == 2 { value & 0xFFFF } else { value }))
}

/// Changes the host protection of guest page `page` (a frame inside RAM;
/// other pages are left alone: they are never mapped, so every access to
/// them is emulated anyway).
fn set_page_protection(ram_size: u32, page: u32, prot: PageProt) -> std::io::Result<()> {
    let addr = u64::from(page) * u64::from(PAGE);
    // Page 0 is never mapped (vm.mmap_min_addr), and nothing past RAM is.
    if addr < u64::from(PAGE) || addr + u64::from(PAGE) > u64::from(ram_size) {
        return Ok(());
    }
    let flags = match prot {
        PageProt::None => libc::PROT_NONE,
        PageProt::ReadOnly => libc::PROT_READ,
        PageProt::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    // SAFETY: the page lies inside the guest RAM mapping the address space
    // created at guest-physical = host address. No Rust reference points
    // into that mapping: the machine reaches RAM through its own, separate
    // mapping of the same file, and the monitor never dereferences guest
    // addresses. Only translated guest code, whose faults the signal
    // handlers turn into exits, is affected.
    let r = unsafe { libc::mprotect(addr as usize as *mut libc::c_void, PAGE as usize, flags) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
