//! The terminal UI's state and what each key and command does to it.
//!
//! This module owns the UI's state between two screens: the command line
//! and its history, the last command's output, which panel is scrolled how
//! far, what the memory panel shows, and a `continue` in progress. Keys
//! and mouse-wheel turns come in as [`Input`]s; [`App::view`] turns the
//! state and the VM into the [`ViewModel`] the renderer draws. Commands
//! typed on the command line are the [`Session`]'s, so the UI and batch
//! mode speak one language; the UI handles itself only what must not
//! block it: `continue`, which runs in slices of a few milliseconds so
//! that Ctrl-C can stop it, and quitting.
//!
//! It knows nothing of the terminal: it neither reads keys nor draws, so
//! tests drive it with [`Input`]s and read the view model.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bt86_native::{BreakAddr, Exit, RunLimit, Stop};
use ratatui::layout::Rect;

use super::input::{Input, Key};
use super::model::{self, MemorySource, Scroll, ViewModel};
use super::render::{self, Panel};
use crate::session::{describe_exit, CommandError, Session, Symbols};

/// The longest command history kept.
const HISTORY: usize = 200;

/// How much of the guest's serial output is kept for the serial panel.
const SERIAL_KEEP: usize = 64 * 1024;

/// How many lines one turn of the mouse wheel scrolls.
const WHEEL_LINES: i32 = 3;

/// The guest's COM1 output, captured for the serial panel instead of being
/// written over the screen. Clones share one buffer: give one to the
/// machine as its serial output, keep one for the UI.
#[derive(Clone, Debug, Default)]
pub struct SerialCapture {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl SerialCapture {
    pub fn new() -> SerialCapture {
        SerialCapture::default()
    }

    /// The output as lines of text (the last one possibly unfinished).
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<String> = text.split('\n').map(|l| l.trim_end_matches('\r').to_string()).collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
}

impl Write for SerialCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        bytes.extend_from_slice(buf);
        if bytes.len() > SERIAL_KEEP {
            let drop = bytes.len() - SERIAL_KEEP;
            bytes.drain(..drop);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `continue` in progress.
#[derive(Clone, Copy, Debug)]
struct Running {
    /// The event count when it started, to report new exceptions and
    /// interrupts at the stop.
    events_before: u64,
    /// Slices run so far.
    slices: u64,
    started: Instant,
}

/// The UI's state on one debugging session.
pub struct App<'a> {
    session: &'a mut Session,
    symbols: Symbols,
    serial: Option<SerialCapture>,
    title: String,
    /// The command line and the cursor in it (a character index).
    line: String,
    cursor: usize,
    history: Vec<String>,
    /// Where Up/Down is in the history, and what was typed before.
    history_pos: Option<usize>,
    typed: String,
    output: Vec<String>,
    status: String,
    help: bool,
    scroll: Scroll,
    memory: MemorySource,
    memory_rows_down: i64,
    code_anchor: Option<u32>,
    /// How the guest stopped for good, if a `continue` of the UI's saw it
    /// (the session learns it only from its own commands).
    finished: Option<Exit>,
    tracing: bool,
    running: Option<Running>,
    quit: bool,
}

/// Whether a command runs the guest (and so cannot once it has stopped).
fn runs_guest(cmd: &str) -> bool {
    matches!(cmd, "s" | "step" | "su" | "n" | "next" | "c" | "cont" | "continue")
}

impl<'a> App<'a> {
    /// A UI on `session`. `symbols` name addresses in the code panel;
    /// `serial` is the capture the machine writes COM1 to, if it does.
    pub fn new(session: &'a mut Session, symbols: Symbols, serial: Option<SerialCapture>, title: &str) -> App<'a> {
        App {
            session,
            symbols,
            serial,
            title: title.to_string(),
            line: String::new(),
            cursor: 0,
            history: Vec::new(),
            history_pos: None,
            typed: String::new(),
            output: vec!["F1 help  F7 step  F8 step unit  F5 continue  F10 quit; type commands below (help)".to_string()],
            status: "stopped at the kernel's entry point".to_string(),
            help: false,
            scroll: Scroll::default(),
            memory: MemorySource::Stack,
            memory_rows_down: 0,
            code_anchor: None,
            finished: None,
            tracing: false,
            running: None,
            quit: false,
        }
    }

    /// Whether the user asked to quit.
    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// Whether a `continue` is in progress.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// How the guest stopped for good, if it has.
    pub fn finished(&self) -> Option<Exit> {
        self.finished.clone().or_else(|| self.session.finished().cloned())
    }

    /// The screen as it is now. Building it may translate the unit at EIP
    /// (see `model`), never run the guest.
    pub fn view(&mut self) -> ViewModel {
        let (mut view, start) =
            model::machine_views(self.session, &self.symbols, self.code_anchor, self.memory, self.memory_rows_down);
        self.code_anchor = Some(start);
        view.title = self.title.clone();
        view.status = match (&self.running, self.finished()) {
            (Some(r), _) => format!("running for {:.1} s: Ctrl-C or F5 stops", r.started.elapsed().as_secs_f64()),
            (None, Some(exit)) => format!("finished: {}", describe_exit(&exit)),
            (None, None) => self.status.clone(),
        };
        view.running = self.running.is_some();
        view.output = self.output.clone();
        view.serial = self.serial.as_ref().map(SerialCapture::lines).unwrap_or_default();
        view.command = self.line.clone();
        view.cursor = self.cursor;
        view.help = self.help.then(|| help_lines(self.session));
        view.scroll = self.scroll;
        view
    }

    /// Acts on one key or wheel turn. `screen` is the terminal's size, for
    /// finding the panel under the mouse.
    pub fn handle(&mut self, input: Input, screen: Rect) {
        match input {
            Input::Wheel { up, column, row } => self.wheel(up, column, row, screen),
            Input::Key(key) if self.running.is_some() => self.key_while_running(key),
            Input::Key(key) if self.help => self.key_in_help(key),
            Input::Key(key) => self.key(key),
        }
    }

    fn key_while_running(&mut self, key: Key) {
        match key {
            Key::Ctrl('c') | Key::F(5) | Key::Esc => self.interrupt(),
            Key::F(10) => {
                self.interrupt();
                self.quit = true;
            }
            // Everything else waits for the guest to stop.
            _ => {}
        }
    }

    fn key_in_help(&mut self, key: Key) {
        match key {
            Key::Down | Key::PageDown => self.scroll.help += if key == Key::Down { 1 } else { 10 },
            Key::Up | Key::PageUp => self.scroll.help = self.scroll.help.saturating_sub(if key == Key::Up { 1 } else { 10 }),
            Key::F(10) => self.quit = true,
            _ => {
                self.help = false;
                self.scroll.help = 0;
            }
        }
    }

    fn key(&mut self, key: Key) {
        match key {
            Key::F(1) => self.help = true,
            Key::Char('?') if self.line.is_empty() => self.help = true,
            Key::F(2) => self.toggle_memory_space(),
            Key::F(5) => self.run_command("c"),
            Key::F(7) => self.run_command("s"),
            Key::F(8) => self.run_command("su"),
            Key::F(10) => self.quit = true,
            Key::Ctrl('d') if self.line.is_empty() => self.quit = true,
            Key::Ctrl('c') | Key::Ctrl('u') => {
                self.line.clear();
                self.cursor = 0;
                self.history_pos = None;
            }
            Key::Ctrl('l') => self.scroll = Scroll::default(),
            Key::Enter => {
                let line = std::mem::take(&mut self.line);
                self.cursor = 0;
                self.history_pos = None;
                let line = line.trim().to_string();
                if line.is_empty() {
                    // Enter alone repeats the last command, as in gdb and
                    // Bochs: s, Enter, Enter, ... steps on.
                    if let Some(last) = self.history.last().cloned() {
                        self.run_command(&last);
                    }
                } else {
                    if self.history.last() != Some(&line) {
                        self.history.push(line.clone());
                        if self.history.len() > HISTORY {
                            self.history.remove(0);
                        }
                    }
                    self.run_command(&line);
                }
            }
            Key::Up => self.history_step(true),
            Key::Down => self.history_step(false),
            Key::PageUp => self.scroll.code -= 8,
            Key::PageDown => self.scroll.code += 8,
            Key::Left => self.cursor = self.cursor.saturating_sub(1),
            Key::Right => self.cursor = (self.cursor + 1).min(self.line.chars().count()),
            Key::Home | Key::Ctrl('a') => self.cursor = 0,
            Key::End | Key::Ctrl('e') => self.cursor = self.line.chars().count(),
            Key::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.remove_char_at_cursor();
            }
            Key::Delete => self.remove_char_at_cursor(),
            Key::Char(c) if !c.is_control() => {
                let at = self.byte_index(self.cursor);
                self.line.insert(at, c);
                self.cursor += 1;
            }
            _ => {}
        }
    }

    fn byte_index(&self, chars: usize) -> usize {
        self.line.char_indices().nth(chars).map_or(self.line.len(), |(i, _)| i)
    }

    fn remove_char_at_cursor(&mut self) {
        let at = self.byte_index(self.cursor);
        if at < self.line.len() {
            self.line.remove(at);
        }
    }

    /// Up (`older`) and Down through the history; Down past the newest
    /// entry gives back what was being typed.
    fn history_step(&mut self, older: bool) {
        if self.history.is_empty() {
            return;
        }
        let pos = match (self.history_pos, older) {
            (None, true) => {
                self.typed = self.line.clone();
                Some(self.history.len() - 1)
            }
            (None, false) => None,
            (Some(p), true) => Some(p.saturating_sub(1)),
            (Some(p), false) if p + 1 < self.history.len() => Some(p + 1),
            (Some(_), false) => None,
        };
        self.history_pos = pos;
        self.line = match pos {
            Some(p) => self.history[p].clone(),
            None => self.typed.clone(),
        };
        self.cursor = self.line.chars().count();
    }

    /// The memory panel switches between linear and physical addresses
    /// (the same number, read the other way).
    fn toggle_memory_space(&mut self) {
        let esp = self.session.vm.cpu.gpr[bt86_cpu::state::gpr::ESP] & !0xF;
        self.memory = match self.memory {
            MemorySource::Stack => MemorySource::Physical(esp),
            MemorySource::Linear(a) => MemorySource::Physical(a),
            MemorySource::Physical(a) => MemorySource::Linear(a),
        };
    }

    /// The mouse wheel scrolls the panel under the pointer.
    fn wheel(&mut self, up: bool, column: u16, row: u16, screen: Rect) {
        let lines = if up { -WHEEL_LINES } else { WHEEL_LINES };
        let add = |v: usize, d: i32| (v as i64 + i64::from(d)).max(0) as usize;
        if self.help {
            self.scroll.help = add(self.scroll.help, lines);
            return;
        }
        match render::panel_at(screen, column, row) {
            Some(Panel::Code) => self.scroll.code += lines,
            Some(Panel::Unit) => self.scroll.unit = add(self.scroll.unit, lines),
            Some(Panel::Memory) => self.memory_rows_down += i64::from(lines),
            // These show the newest line at the bottom: the wheel going up
            // goes back in time.
            Some(Panel::Events) => self.scroll.events = add(self.scroll.events, -lines),
            Some(Panel::Serial) => self.scroll.serial = add(self.scroll.serial, -lines),
            Some(Panel::Output) => self.scroll.output = add(self.scroll.output, lines),
            Some(Panel::Stats) => self.scroll.stats = add(self.scroll.stats, lines),
            _ => {}
        }
    }

    /// Runs one command line: the UI's own `continue`, `help` and `quit`,
    /// or any command of the session.
    pub fn run_command(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, args)) = words.split_first() else { return };
        self.output = vec![format!("{}{line}", crate::batch::PROMPT)];
        self.scroll = Scroll { help: self.scroll.help, ..Scroll::default() };
        if runs_guest(cmd) {
            if let Some(exit) = self.finished() {
                self.output.push(format!("error: {}", CommandError::Finished(describe_exit(&exit))));
                return;
            }
        }
        match cmd {
            // A continue of the session would block the UI until the guest
            // stops; the UI runs it in slices instead. With tracing on, the
            // session's continue steps and prints every instruction.
            "c" | "cont" | "continue" if args.is_empty() && !self.tracing => {
                self.start_continue();
                return;
            }
            "help" | "h" | "?" if args.is_empty() => {
                self.help = true;
                self.output.push("(the help screen; any key closes it)".to_string());
                return;
            }
            "q" | "quit" | "exit" if args.is_empty() => {
                self.quit = true;
                return;
            }
            _ => {}
        }
        match self.session.execute(line) {
            Ok(text) => {
                self.output.extend(text.lines().map(str::to_string));
                self.after_command(cmd, args);
            }
            Err(e) => self.output.push(format!("error: {e}")),
        }
        if self.session.quit_requested() {
            self.quit = true;
        }
        if let Some(exit) = self.session.finished() {
            self.status = format!("finished: {}", describe_exit(exit));
        } else if runs_guest(cmd) {
            self.status = format!("stopped after `{line}`");
        }
    }

    /// What a successful session command changes in the UI.
    fn after_command(&mut self, cmd: &str, args: &[&str]) {
        match cmd {
            // The memory panel follows what was examined last.
            "x" | "xp" => {
                if let Some(addr) = args.last().and_then(|a| self.session.parse_address(a).ok()) {
                    self.memory = if cmd == "xp" { MemorySource::Physical(addr) } else { MemorySource::Linear(addr) };
                    self.memory_rows_down = 0;
                }
            }
            "trace" => self.tracing = args.first() == Some(&"on"),
            _ => {}
        }
    }

    fn start_continue(&mut self) {
        self.running = Some(Running { events_before: self.session.vm.event_count(), slices: 0, started: Instant::now() });
    }

    /// Stops a `continue` in progress at the guest's current instruction
    /// boundary (Ctrl-C, F5 or Esc).
    pub fn interrupt(&mut self) {
        if self.running.take().is_some() {
            self.output.push("interrupted".to_string());
            let line = self.session.where_line();
            self.output.push(line.trim_end().to_string());
            self.status = "stopped: interrupted".to_string();
        }
    }

    /// Runs the guest for one slice of a `continue` in progress: until a
    /// breakpoint, a watchpoint, the guest's end, or `slice` has passed
    /// (checked when translated code exits to the monitor). Returns whether
    /// the `continue` goes on.
    pub fn run_slice(&mut self, slice: Duration) -> bool {
        let Some(mut running) = self.running else { return false };
        // A slice may end just before a unit that starts at a breakpoint
        // (the deadline is checked first); the next slice would step off
        // it, as a continue from a breakpoint must. So a slice after the
        // first starts by looking for a breakpoint at EIP.
        if running.slices > 0 && self.at_breakpoint() {
            let eip = self.session.vm.cpu.eip;
            self.stop(Stop::Breakpoint { eip });
            return false;
        }
        running.slices += 1;
        self.running = Some(running);
        let limit = RunLimit { max_insns: None, until: Some(Instant::now() + slice), stop_on_events: false };
        match self.session.vm.resume(limit) {
            Ok(Stop::Limit) => true,
            Ok(stop) => {
                self.stop(stop);
                false
            }
            Err(e) => {
                self.running = None;
                self.output.push(format!("error: {}", CommandError::Monitor(e.to_string())));
                self.status = "stopped: monitor error".to_string();
                false
            }
        }
    }

    /// Runs a `continue` to its end without looking for keys (for tests
    /// and scripts); gives up after `max_slices` slices.
    pub fn run_to_stop(&mut self, slice: Duration, max_slices: u64) {
        for _ in 0..max_slices {
            if !self.run_slice(slice) {
                return;
            }
        }
        self.interrupt();
    }

    fn at_breakpoint(&mut self) -> bool {
        let eip = self.session.vm.cpu.eip;
        let breaks = self.session.vm.breakpoints();
        breaks.iter().any(|b| match *b {
            BreakAddr::Linear(a) => a == eip,
            BreakAddr::Physical(p) => self.session.vm.linear_to_physical(eip) == Some(p),
        })
    }

    /// Ends a `continue`: why it stopped, then where the guest is.
    fn stop(&mut self, stop: Stop) {
        let Some(running) = self.running.take() else { return };
        // Exceptions and interrupts delivered on the way, as the session
        // reports them.
        let new = (self.session.vm.event_count() - running.events_before) as usize;
        let events: Vec<_> = self.session.vm.events().collect();
        for e in &events[events.len().saturating_sub(new)..] {
            if matches!(e.kind, "exception" | "interrupt") {
                self.output.push(format!("  ({} at {:#010x}: {})", e.kind, e.eip, e.detail));
            }
        }
        let mut why = String::new();
        match &stop {
            Stop::Breakpoint { eip } => {
                let _ = write!(why, "breakpoint at {}", self.addr_text(*eip));
            }
            Stop::Watchpoint { kind, addr, .. } => {
                let _ = write!(why, "{} watchpoint at {}; stopped after the access", kind.name(), self.addr_text(*addr));
            }
            Stop::Exception { vector, .. } => {
                let _ = write!(why, "exception vector {vector} delivered");
            }
            Stop::Interrupt { vector, .. } => {
                let _ = write!(why, "interrupt vector {vector:#04x} delivered");
            }
            Stop::Stepped | Stop::Limit => why.push_str("stopped"),
            Stop::Exit(exit) => why = describe_exit(exit),
        }
        self.output.push(why.clone());
        if let Stop::Exit(exit) = stop {
            self.status = format!("finished: {why}");
            self.finished = Some(exit);
            return;
        }
        let line = self.session.where_line();
        self.output.push(line.trim_end().to_string());
        self.status = format!("stopped: {why}");
    }

    fn addr_text(&self, a: u32) -> String {
        match self.symbols.describe(a) {
            Some(s) => format!("{a:#010x} <{s}>"),
            None => format!("{a:#010x}"),
        }
    }
}

/// The help screen: the UI's keys, then the session's commands.
fn help_lines(session: &mut Session) -> Vec<String> {
    let mut lines: Vec<String> = KEYS_HELP.lines().map(str::to_string).collect();
    lines.push(String::new());
    match session.execute("help") {
        Ok(text) => lines.extend(text.lines().map(str::to_string)),
        Err(e) => lines.push(format!("error: {e}")),
    }
    lines
}

const KEYS_HELP: &str = "\
keys (any key closes this screen; Up/Down/PgUp/PgDn scroll it):
  F7                step one guest instruction (the command s)
  F8                step the translation unit at EIP (su)
  F5                continue; while the guest runs, F5, Esc or Ctrl-C stops it
  F2                memory panel: switch between linear and physical addresses
  F1, ?             this screen          F10, q Enter, Ctrl-D     quit
  Enter             run the command line; alone, repeat the last command
  Up, Down          command history      PgUp, PgDn               scroll the guest code
  mouse wheel       scroll the panel under the pointer; Ctrl-L puts every panel back
  x, xp             also point the memory panel at what they show
panels: guest code around EIP, tagged IDENT / REWRITE / CALLOUT with the reason;
  the translation unit at EIP, each guest instruction above the TC code it became,
  each exit stub chained or unchained; registers with the hidden parts of the
  segment registers; the virtual CPU; memory; the monitor's event log with counts;
  the counters of --stats; the last command's output; the guest's COM1 output.";
