//! A debugging session: one VM, the commands a student types, and the text
//! each command prints.
//!
//! The command names are Bochs's where Bochs has one (`s`, `c`, `b`, `pb`,
//! `x`, `xp`, `r`, `sreg`, `creg`, `info gdt`, `page`, ...), so that a
//! student who learned one debugger knows the other. Every command returns
//! its output as text, which batch mode prints, the terminal UI shows in a
//! panel, and tests compare. A bad command, address or range is a
//! [`CommandError`] whose message is one line; the session goes on.
//!
//! This module owns the command language, the numbering of breakpoints and
//! watchpoints, symbols, and instruction tracing. It drives the guest only
//! through the monitor's run-control API and never touches the translation
//! cache or the run loop itself.

use std::collections::HashMap;
use std::fmt::Write;

use bt86_native::{BreakAddr, Exit, RunLimit, Stop, Vm, WatchKind};

use crate::inspect;

/// At most this many instructions are printed by one command while
/// tracing; the rest are counted.
pub const TRACE_CAP: usize = 2000;

/// At most this many units of memory are shown by one `x` or `xp`.
const MAX_EXAMINE: u32 = 4096;

/// Why a command could not run. Each message is one line that says what
/// was wrong and what to type instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("unknown command {0:?}; type `help` for the list")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("bad address {text:?}: {why}; give hex (0x100000), decimal, or a symbol of the kernel")]
    BadAddress { text: String, why: &'static str },
    #[error("bad number {0:?}; give a decimal or 0x-prefixed hex number")]
    BadNumber(String),
    #[error("bad range: {0}")]
    BadRange(String),
    #[error("no breakpoint or watchpoint number {0}; `blist` lists them")]
    NoSuchPoint(u32),
    #[error("cannot read guest memory at {addr:#010x}: {exception}; that linear address is not mapped")]
    Unmapped { addr: u32, exception: String },
    #[error("the guest has stopped ({0}); there is nothing more to run, but you can still look around (r, x, info ...)")]
    Finished(String),
    #[error("monitor error: {0}")]
    Monitor(String),
}

/// Symbols of the kernel's ELF symbol table, to name addresses in both
/// directions.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    by_name: HashMap<String, u32>,
    /// Function and object symbols sorted by address: (address, size, name).
    sorted: Vec<(u32, u32, String)>,
}

impl Symbols {
    /// Reads the symbol table of an ELF image. An image without one, or
    /// one goblin cannot parse, gives no symbols: addresses still work.
    pub fn from_elf(image: &[u8]) -> Symbols {
        let mut symbols = Symbols::default();
        let Ok(elf) = goblin::elf::Elf::parse(image) else { return symbols };
        for sym in elf.syms.iter() {
            let Some(name) = elf.strtab.get_at(sym.st_name) else { continue };
            if name.is_empty() || sym.st_value == 0 || sym.is_import() || sym.st_type() == goblin::elf::sym::STT_FILE || sym.st_type() == goblin::elf::sym::STT_SECTION {
                continue;
            }
            let (addr, size) = (sym.st_value as u32, sym.st_size as u32);
            symbols.by_name.entry(name.to_string()).or_insert(addr);
            symbols.sorted.push((addr, size, name.to_string()));
        }
        symbols.sorted.sort();
        symbols
    }

    /// The address of symbol `name`.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// `name` or `name+0x12` for an address inside a symbol.
    pub fn describe(&self, addr: u32) -> Option<String> {
        let i = self.sorted.partition_point(|(a, _, _)| *a <= addr);
        let (start, size, name) = self.sorted.get(i.checked_sub(1)?)?;
        let off = addr - start;
        if off != 0 && off >= (*size).max(1) {
            return None;
        }
        Some(if off == 0 { name.clone() } else { format!("{name}+{off:#x}") })
    }
}

/// A numbered breakpoint or watchpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    Break(BreakAddr),
    Watch(WatchKind, u32, u32),
}

/// One debugging session on one VM.
pub struct Session {
    pub vm: Vm,
    symbols: Symbols,
    points: Vec<(u32, Point)>,
    next_point: u32,
    /// Tracing on, and the EIP range `[from, to]` it prints.
    trace: Option<(u32, u32)>,
    /// How the guest stopped for good, once it has.
    finished: Option<Exit>,
    quit: bool,
}

const HELP: &str = "\
commands (Bochs names; ADDR is hex 0x..., decimal, or a kernel symbol, optionally +offset):
  s|step [N]             execute N guest instructions (default 1), one single-instruction unit each
  su                     execute the translation unit at EIP
  n|next                 step, but run a call through to its return
  c|continue             run until a breakpoint, a watchpoint or the end of the guest
  b|lb ADDR, pb ADDR     breakpoint at a linear / physical address
  watch r|w|rw ADDR [LEN] watchpoint on LEN bytes (default 4): stops after the access
  blist, d N             list breakpoints and watchpoints; delete number N
  x /NUF ADDR, xp /NUF ADDR  examine linear / physical memory: N units of U (b h w g)
                         bytes in format F (x d u c, or i to disassemble with x)
  r, sreg, creg          registers; segment registers with hidden parts; control registers and CPL
  info gdt|idt|tss|tab|eflags   descriptor tables, TSS, page-table mappings, flags
  page ADDR              the page walk of one linear address
  trace on [FROM TO]|off print every executed instruction (in [FROM, TO]) while stepping and continuing
  t|translation [ADDR]   the translation unit at EIP (or ADDR): tags, reasons, TC code, exits
  events [N]             the last N events of the monitor (exits, callouts, faults, interrupts)
  stats                  the translator's and the monitor's counters
  help, q|quit
";

/// The usual short names of the architectural exception vectors.
fn vector_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        19 => "#XM",
        _ => "vector",
    }
}

/// How a guest that stopped for good stopped, in words.
pub fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::GuestExit(status) => format!("the guest exited with status {status}"),
        Exit::Halted { eip, interrupts_enabled: false } => {
            format!("the guest halted with interrupts disabled at {:#010x}", eip.wrapping_sub(1))
        }
        Exit::Halted { eip, interrupts_enabled: true } => {
            format!("the guest halted at {:#010x} and no device will wake it", eip.wrapping_sub(1))
        }
        Exit::Shutdown(s) => format!("triple fault: {s}"),
        Exit::Unsupported(what) => format!("monitor error: {what}"),
        Exit::Timeout => "the time limit passed".to_string(),
        Exit::StepLimit => "the step limit was reached".to_string(),
    }
}

/// Parses a number: `0x` hex or decimal.
fn parse_number(text: &str) -> Result<u32, CommandError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|_| CommandError::BadNumber(text.to_string()))
}

impl Session {
    /// A session on `vm`, with the event log switched on.
    pub fn new(mut vm: Vm) -> Session {
        vm.set_event_log(true);
        Session { vm, symbols: Symbols::default(), points: Vec::new(), next_point: 1, trace: None, finished: None, quit: false }
    }

    /// Names addresses with the kernel's symbols from now on.
    pub fn set_symbols(&mut self, symbols: Symbols) {
        self.symbols = symbols;
    }

    /// How the guest stopped for good, if it has.
    pub fn finished(&self) -> Option<&Exit> {
        self.finished.as_ref()
    }

    /// Whether `q` was typed.
    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// Parses an address: hex, decimal, a symbol, or `symbol+offset`.
    pub fn parse_address(&self, text: &str) -> Result<u32, CommandError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(CommandError::BadAddress { text: text.to_string(), why: "it is empty" });
        }
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            return parse_number(t).map_err(|_| CommandError::BadAddress {
                text: text.to_string(),
                why: "it is not a number below 2^32",
            });
        }
        let (name, offset) = match t.split_once('+') {
            Some((n, o)) => (n, parse_number(o)?),
            None => (t, 0),
        };
        match self.symbols.lookup(name) {
            Some(a) => a.checked_add(offset).ok_or_else(|| CommandError::BadAddress { text: text.to_string(), why: "it is beyond 4 GiB" }),
            None => Err(CommandError::BadAddress { text: text.to_string(), why: "no such symbol in the kernel" }),
        }
    }

    /// Runs one command line and returns what it prints.
    pub fn execute(&mut self, line: &str) -> Result<String, CommandError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, args)) = words.split_first() else { return Ok(String::new()) };
        match cmd {
            "s" | "step" => {
                let n = match args {
                    [] => 1,
                    [n] => parse_number(n)?,
                    _ => return Err(CommandError::Usage("s [N]")),
                };
                if n == 0 {
                    return Err(CommandError::BadRange("s 0 executes nothing; give N of at least 1".into()));
                }
                self.step(u64::from(n))
            }
            "su" => {
                no_args(args, "su")?;
                self.running()?;
                let before = self.vm.event_count();
                let start = self.vm.cpu.eip;
                let stop = self.vm.step_unit().map_err(|e| CommandError::Monitor(e.to_string()))?;
                let mut out = format!("ran the unit at {start:#010x}\n");
                out += &self.report(stop, before, 0);
                Ok(out)
            }
            "n" | "next" => {
                no_args(args, "n")?;
                self.next()
            }
            "c" | "cont" | "continue" => {
                no_args(args, "c")?;
                self.cont()
            }
            "b" | "lb" | "break" | "pb" => {
                let [addr] = args else { return Err(CommandError::Usage("b|lb|pb ADDR")) };
                let a = self.parse_address(addr)?;
                let at = if cmd == "pb" { BreakAddr::Physical(a) } else { BreakAddr::Linear(a) };
                if self.points.iter().any(|(_, p)| *p == Point::Break(at)) {
                    return Err(CommandError::BadAddress { text: addr.to_string(), why: "a breakpoint is already set there" });
                }
                self.vm.add_breakpoint(at).map_err(|e| CommandError::Monitor(e.to_string()))?;
                let n = self.add_point(Point::Break(at));
                Ok(format!("Breakpoint {n} at {}\n", self.point_text(Point::Break(at))))
            }
            "watch" => {
                let (kind, addr, len) = match args {
                    [k, a] => (*k, *a, "4"),
                    [k, a, l] => (*k, *a, *l),
                    _ => return Err(CommandError::Usage("watch r|w|rw ADDR [LEN]")),
                };
                let kind = match kind {
                    "r" => WatchKind::Read,
                    "w" => WatchKind::Write,
                    "rw" | "a" => WatchKind::Access,
                    _ => return Err(CommandError::Usage("watch r|w|rw ADDR [LEN]")),
                };
                let a = self.parse_address(addr)?;
                let len = parse_number(len)?;
                if len == 0 || u64::from(a) + u64::from(len) > 1 << 32 {
                    return Err(CommandError::BadRange(format!(
                        "{len} bytes at {a:#010x} is empty or runs past 4 GiB; give LEN of at least 1 that stays below 4 GiB"
                    )));
                }
                self.vm.add_watchpoint(kind, a, len).map_err(|e| CommandError::Monitor(e.to_string()))?;
                let p = Point::Watch(kind, a, len);
                let n = self.add_point(p);
                Ok(format!("Watchpoint {n}: {}\n", self.point_text(p)))
            }
            "blist" | "info break" => {
                no_args(args, "blist")?;
                if self.points.is_empty() {
                    return Ok("no breakpoints or watchpoints\n".to_string());
                }
                let mut out = String::from("Num  Type        Where\n");
                for (n, p) in &self.points {
                    let kind = match p {
                        Point::Break(BreakAddr::Linear(_)) => "lbreak",
                        Point::Break(BreakAddr::Physical(_)) => "pbreak",
                        Point::Watch(..) => "watch",
                    };
                    let _ = writeln!(out, "{n:<4} {kind:<11} {}", self.point_text(*p));
                }
                Ok(out)
            }
            "d" | "del" | "delete" => {
                let [n] = args else { return Err(CommandError::Usage("d N")) };
                let n = parse_number(n)?;
                let Some(i) = self.points.iter().position(|(m, _)| *m == n) else {
                    return Err(CommandError::NoSuchPoint(n));
                };
                let (_, p) = self.points.remove(i);
                match p {
                    Point::Break(at) => {
                        self.vm.remove_breakpoint(at);
                    }
                    Point::Watch(k, a, l) => {
                        self.vm.remove_watchpoint(k, a, l);
                    }
                }
                Ok(format!("deleted {n}\n"))
            }
            "x" | "xp" => self.examine(cmd == "xp", args),
            "r" | "regs" | "registers" => {
                no_args(args, "r")?;
                Ok(inspect::registers(&self.vm))
            }
            "sreg" => {
                no_args(args, "sreg")?;
                Ok(inspect::sreg(&self.vm))
            }
            "creg" => {
                no_args(args, "creg")?;
                Ok(inspect::creg(&self.vm))
            }
            "info" => match args {
                ["gdt"] => Ok(inspect::info_gdt(&mut self.vm)),
                ["idt"] => Ok(inspect::info_idt(&mut self.vm)),
                ["tss"] => Ok(inspect::info_tss(&mut self.vm)),
                ["tab"] => Ok(inspect::info_tab(&mut self.vm)),
                ["eflags"] | ["flags"] => Ok(inspect::info_eflags(&self.vm)),
                ["break"] => self.execute("blist"),
                _ => Err(CommandError::Usage("info gdt|idt|tss|tab|eflags")),
            },
            "page" => {
                let [addr] = args else { return Err(CommandError::Usage("page LADDR")) };
                let a = self.parse_address(addr)?;
                Ok(inspect::page(&mut self.vm, a))
            }
            "trace" => match args {
                ["on"] => {
                    self.trace = Some((0, u32::MAX));
                    Ok("tracing every executed instruction\n".into())
                }
                ["on", from, to] => {
                    let (f, t) = (self.parse_address(from)?, self.parse_address(to)?);
                    if f > t {
                        return Err(CommandError::BadRange(format!("{f:#010x} is above {t:#010x}; give FROM <= TO")));
                    }
                    self.trace = Some((f, t));
                    Ok(format!("tracing executed instructions in [{f:#010x}, {t:#010x}]\n"))
                }
                ["off"] => {
                    self.trace = None;
                    Ok("tracing off\n".into())
                }
                _ => Err(CommandError::Usage("trace on [FROM TO] | trace off")),
            },
            "t" | "translation" => match args {
                [] => Ok(inspect::translation(&mut self.vm)),
                [addr] => {
                    let a = self.parse_address(addr)?;
                    Ok(inspect::translation_at(&mut self.vm, a))
                }
                _ => Err(CommandError::Usage("t|translation [ADDR]")),
            },
            "events" => {
                let n = match args {
                    [] => 20,
                    [n] => parse_number(n)? as usize,
                    _ => return Err(CommandError::Usage("events [N]")),
                };
                Ok(self.events_text(n))
            }
            "stats" => {
                no_args(args, "stats")?;
                Ok(inspect::stats(&self.vm))
            }
            "help" | "h" | "?" => Ok(HELP.to_string()),
            "q" | "quit" | "exit" => {
                self.quit = true;
                Ok(String::new())
            }
            other => Err(CommandError::Unknown(other.to_string())),
        }
    }

    fn add_point(&mut self, p: Point) -> u32 {
        let n = self.next_point;
        self.next_point += 1;
        self.points.push((n, p));
        n
    }

    fn addr_text(&self, a: u32) -> String {
        match self.symbols.describe(a) {
            Some(s) => format!("{a:#010x} <{s}>"),
            None => format!("{a:#010x}"),
        }
    }

    fn point_text(&self, p: Point) -> String {
        match p {
            Point::Break(BreakAddr::Linear(a)) => format!("linear {}", self.addr_text(a)),
            Point::Break(BreakAddr::Physical(a)) => format!("physical {a:#010x}"),
            Point::Watch(k, a, l) => format!("{} of {l} bytes at {}", k.name(), self.addr_text(a)),
        }
    }

    /// Refuses to run a guest that has stopped for good.
    fn running(&self) -> Result<(), CommandError> {
        match &self.finished {
            Some(exit) => Err(CommandError::Finished(describe_exit(exit))),
            None => Ok(()),
        }
    }

    /// The line that says where the guest is: physical address in
    /// brackets, CS:EIP, the symbol, the tag and the instruction, as
    /// Bochs prints `(0) [0x00100012] 0008:00100012 (unk. ctxt): ...`.
    pub fn where_line(&mut self) -> String {
        let eip = self.vm.cpu.eip;
        let phys = self.vm.linear_to_physical(eip).map_or("unmapped".to_string(), |p| format!("{p:#010x}"));
        let sym = self.symbols.describe(eip).map(|s| format!(" <{s}>")).unwrap_or_default();
        let cs = self.vm.cpu.segment(bt86_cpu::SegReg::Cs).selector.0;
        let insn = match self.vm.describe_insn(eip) {
            Ok(i) if i.reason.is_empty() => format!("{:<8} {}", i.tag, i.text),
            Ok(i) => format!("{:<8} {:<28} ; {}", i.tag, i.text, i.reason),
            Err(e) => format!("(cannot fetch: {e})"),
        };
        format!("[{phys}] {cs:04x}:{eip:08x}{sym}  {insn}\n")
    }

    /// One trace line for the instruction at EIP, if tracing covers it.
    fn trace_line(&mut self) -> Option<String> {
        let (from, to) = self.trace?;
        let eip = self.vm.cpu.eip;
        if eip < from || eip > to {
            return None;
        }
        let sym = self.symbols.describe(eip).map(|s| format!(" <{s}>")).unwrap_or_default();
        Some(match self.vm.describe_insn(eip) {
            Ok(i) => format!("trace {eip:08x}{sym}  {:<8} {}\n", i.tag, i.text),
            Err(e) => format!("trace {eip:08x}{sym}  (cannot fetch: {e})\n"),
        })
    }

    /// The events logged since event number `before`, as indented lines
    /// (only exceptions, interrupts and watch hits: the rest is in
    /// `events`).
    fn new_events(&self, before: u64) -> String {
        let new = (self.vm.event_count() - before) as usize;
        let all: Vec<_> = self.vm.events().collect();
        let mut out = String::new();
        for e in &all[all.len().saturating_sub(new)..] {
            if matches!(e.kind, "exception" | "interrupt") {
                let _ = writeln!(out, "  ({} at {:#010x}: {})", e.kind, e.eip, e.detail);
            }
        }
        out
    }

    fn events_text(&self, n: usize) -> String {
        let all: Vec<_> = self.vm.events().collect();
        if all.is_empty() {
            return "no events yet\n".to_string();
        }
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for e in &all {
            match counts.iter_mut().find(|(k, _)| *k == e.kind) {
                Some(c) => c.1 += 1,
                None => counts.push((e.kind, 1)),
            }
        }
        let mut out = String::new();
        for e in &all[all.len().saturating_sub(n)..] {
            let _ = writeln!(out, "{:<13} {:#010x}  {}", e.kind, e.eip, e.detail);
        }
        let summary: Vec<String> = counts.iter().map(|(k, c)| format!("{k} {c}")).collect();
        let _ = writeln!(out, "({} of {} events kept: {})", all.len(), self.vm.event_count(), summary.join(", "));
        out
    }

    /// Says why the run stopped, then where the guest is.
    fn report(&mut self, stop: Stop, events_before: u64, executed: u64) -> String {
        let mut out = self.new_events(events_before);
        match stop {
            Stop::Stepped => {}
            Stop::Breakpoint { eip } => {
                let n = self
                    .points
                    .iter()
                    .find(|(_, p)| matches!(p, Point::Break(BreakAddr::Linear(a)) if *a == eip))
                    .or_else(|| self.points.iter().find(|(_, p)| matches!(p, Point::Break(BreakAddr::Physical(_)))))
                    .map_or(0, |(n, _)| *n);
                let _ = writeln!(out, "Breakpoint {n}, {}", self.addr_text(eip));
            }
            Stop::Watchpoint { kind, addr, .. } => {
                let n = self
                    .points
                    .iter()
                    .find(|(_, p)| matches!(p, Point::Watch(k, a, l) if *k == kind && addr >= *a && u64::from(addr) < u64::from(*a) + u64::from(*l)))
                    .map_or(0, |(n, _)| *n);
                let _ = writeln!(out, "Watchpoint {n}: {} at {}; stopped after the access", kind.name(), self.addr_text(addr));
            }
            Stop::Exception { vector, .. } => {
                let _ = writeln!(out, "exception {} (vector {vector}) delivered to the guest's handler", vector_name(vector));
            }
            Stop::Interrupt { vector, .. } => {
                let _ = writeln!(out, "hardware interrupt vector {vector:#04x} delivered");
            }
            Stop::Limit => {
                let _ = writeln!(out, "stopped after {executed} instructions");
            }
            Stop::Exit(exit) => {
                let _ = writeln!(out, "{}", describe_exit(&exit));
                self.finished = Some(exit);
                return out;
            }
        }
        out += &self.where_line();
        out
    }

    fn step(&mut self, n: u64) -> Result<String, CommandError> {
        self.running()?;
        let before = self.vm.event_count();
        let mut out = String::new();
        let mut traced = 0usize;
        let mut stop = Stop::Stepped;
        for _ in 0..n {
            self.trace_into(&mut out, &mut traced);
            stop = self.vm.step().map_err(|e| CommandError::Monitor(e.to_string()))?;
            if stop != Stop::Stepped {
                break;
            }
        }
        self.trace_summary(&mut out, traced);
        out += &self.report(stop, before, n);
        Ok(out)
    }

    fn trace_into(&mut self, out: &mut String, traced: &mut usize) {
        if let Some(line) = self.trace_line() {
            if *traced < TRACE_CAP {
                out.push_str(&line);
            }
            *traced += 1;
        }
    }

    fn trace_summary(&self, out: &mut String, traced: usize) {
        if traced > TRACE_CAP {
            let _ = writeln!(out, "trace: {} more instructions not shown (at most {TRACE_CAP} per command)", traced - TRACE_CAP);
        }
    }

    fn next(&mut self) -> Result<String, CommandError> {
        self.running()?;
        let eip = self.vm.cpu.eip;
        let insn = self.vm.describe_insn(eip).map_err(|e| CommandError::Unmapped { addr: eip, exception: e.to_string() })?;
        if !insn.text.starts_with("call ") || self.trace.is_some() {
            return self.step(1);
        }
        // Run the call through: a temporary breakpoint at the return
        // address, unless the user already has one there.
        let ret = eip.wrapping_add(insn.bytes.len() as u32);
        let at = BreakAddr::Linear(ret);
        let temporary = !self.vm.breakpoints().contains(&at);
        if temporary {
            self.vm.add_breakpoint(at).map_err(|e| CommandError::Monitor(e.to_string()))?;
        }
        let before = self.vm.event_count();
        let stop = self.vm.resume(RunLimit::default());
        if temporary {
            self.vm.remove_breakpoint(at);
        }
        let stop = stop.map_err(|e| CommandError::Monitor(e.to_string()))?;
        // Reaching the temporary breakpoint is the end of the step, not a
        // breakpoint hit to report.
        let stop = match stop {
            Stop::Breakpoint { eip } if temporary && eip == ret => Stop::Stepped,
            other => other,
        };
        Ok(self.report(stop, before, 0))
    }

    fn cont(&mut self) -> Result<String, CommandError> {
        self.running()?;
        let before = self.vm.event_count();
        if self.trace.is_none() {
            let stop = self.vm.resume(RunLimit::default()).map_err(|e| CommandError::Monitor(e.to_string()))?;
            return Ok(self.report(stop, before, 0));
        }
        // Tracing: one instruction at a time, so that each can be shown.
        let mut out = String::new();
        let mut traced = 0usize;
        let mut executed = 0u64;
        let stop = loop {
            if executed > 0 && self.vm.breakpoints().iter().any(|b| self.at_break(*b)) {
                break Stop::Breakpoint { eip: self.vm.cpu.eip };
            }
            self.trace_into(&mut out, &mut traced);
            let stop = self.vm.step().map_err(|e| CommandError::Monitor(e.to_string()))?;
            executed += 1;
            if stop != Stop::Stepped {
                break stop;
            }
        };
        self.trace_summary(&mut out, traced);
        out += &self.report(stop, before, executed);
        Ok(out)
    }

    fn at_break(&mut self, b: BreakAddr) -> bool {
        let eip = self.vm.cpu.eip;
        match b {
            BreakAddr::Linear(a) => a == eip,
            BreakAddr::Physical(a) => self.vm.linear_to_physical(eip) == Some(a),
        }
    }

    /// `x /NUF ADDR` and `xp /NUF ADDR`.
    fn examine(&mut self, physical: bool, args: &[&str]) -> Result<String, CommandError> {
        const USAGE: &str = "x|xp [/NUF] ADDR   (N count, U unit b|h|w|g, F format x|d|u|c|i)";
        let (spec, addr) = match args {
            [addr] => ("", *addr),
            [spec, addr] if spec.starts_with('/') => (&spec[1..], *addr),
            _ => return Err(CommandError::Usage(USAGE)),
        };
        let digits: String = spec.chars().take_while(|c| c.is_ascii_digit()).collect();
        let count = if digits.is_empty() { 1 } else { parse_number(&digits)? };
        let (mut unit, mut format) = (4u32, 'x');
        for c in spec[digits.len()..].chars() {
            match c {
                'b' => unit = 1,
                'h' => unit = 2,
                'w' => unit = 4,
                'g' => unit = 8,
                'x' | 'd' | 'u' | 'c' | 'i' => format = c,
                _ => return Err(CommandError::Usage(USAGE)),
            }
        }
        if count == 0 || count > MAX_EXAMINE {
            return Err(CommandError::BadRange(format!("{count} units; show between 1 and {MAX_EXAMINE} at a time")));
        }
        let a = self.parse_address(addr)?;
        if format == 'i' {
            if physical {
                return Err(CommandError::Usage("xp cannot disassemble; use x /Ni with a linear address"));
            }
            let mut out = String::new();
            let mut at = a;
            for _ in 0..count {
                let i = self.vm.describe_insn(at).map_err(|e| CommandError::Unmapped { addr: at, exception: e.to_string() })?;
                let sym = self.symbols.describe(at).map(|s| format!(" <{s}>")).unwrap_or_default();
                let _ = writeln!(out, "{at:08x}{sym}  {:<8} {}", i.tag, i.text);
                at = at.wrapping_add(i.bytes.len() as u32);
            }
            return Ok(out);
        }
        if format == 'c' {
            unit = 1;
        }
        let len = u64::from(count) * u64::from(unit);
        if u64::from(a) + len > 1 << 32 {
            return Err(CommandError::BadRange(format!("{len} bytes at {a:#010x} run past 4 GiB")));
        }
        let mut buf = vec![0u8; len as usize];
        if physical {
            self.vm.read_physical(a, &mut buf);
        } else {
            self.vm.read_linear(a, &mut buf).map_err(|e| CommandError::Unmapped { addr: a, exception: e.to_string() })?;
        }
        let per_line = (16 / unit).max(1) as usize;
        let mut out = String::new();
        for (i, chunk) in buf.chunks(unit as usize).enumerate() {
            if i % per_line == 0 {
                if i > 0 {
                    out.push('\n');
                }
                let line_addr = a + (i as u32) * unit;
                let sym = if physical { String::new() } else { self.symbols.describe(line_addr).map(|s| format!(" <{s}>")).unwrap_or_default() };
                let _ = write!(out, "{line_addr:#010x}{sym}:");
            }
            let mut v = [0u8; 8];
            v[..chunk.len()].copy_from_slice(chunk);
            let value = u64::from_le_bytes(v);
            let text = match format {
                'd' => {
                    let shift = 64 - 8 * unit;
                    (((value << shift) as i64) >> shift).to_string()
                }
                'u' => value.to_string(),
                'c' => {
                    let c = chunk[0];
                    if c.is_ascii_graphic() || c == b' ' {
                        format!("'{}'", c as char)
                    } else {
                        format!("\\x{c:02x}")
                    }
                }
                _ => format!("{value:#0w$x}", w = 2 + 2 * unit as usize),
            };
            let _ = write!(out, " {text}");
        }
        out.push('\n');
        Ok(out)
    }
}

fn no_args(args: &[&str], usage: &'static str) -> Result<(), CommandError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(CommandError::Usage(usage))
    }
}
