//! The terminal UI of `bt86 debug`: guest code, its translation, the
//! virtual CPU and the monitor's events on one screen, in the spirit of
//! Blinkenlights and of Bochs's debugger.
//!
//! This module owns the terminal: raw mode, the alternate screen, mouse
//! reporting, and putting all three back on exit and on panic; the thread
//! that reads keys; and the loop that draws a screen, waits for a key, and
//! runs a `continue` in slices between which it looks at the keyboard. The
//! rest is split so that it can be tested without a terminal:
//!
//! - `input` decodes the bytes the terminal sends into keys;
//! - `app` ([`App`]) is the UI's state and what each key and command does;
//! - `model` ([`ViewModel`]) is one screen as plain data, built from the
//!   session's VM;
//! - `render` ([`render()`]) draws a view model, and nothing else.
//!
//! Like every front end of the debugger, it drives the guest only through
//! the [`Session`] and the monitor's run-control API.

mod app;
mod input;
mod model;
mod render;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bt86_native::Exit;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::Rect;
use ratatui::Terminal;

pub use app::{App, SerialCapture};
pub use input::{decode, Input, Key};
pub use model::{CodeLine, CodeView, EventsView, MemorySource, MemoryView, RegistersView, Scroll, SegmentView, UnitPanel, UnitRow, VcpuView, ViewModel};
pub use render::{areas, panel_at, render, Areas, Panel};

use crate::session::{Session, Symbols};

/// How long one slice of a `continue` runs before the UI looks at the
/// keyboard again.
pub const SLICE: Duration = Duration::from_millis(20);

/// How often the screen is redrawn while the guest runs.
const REDRAW_WHILE_RUNNING: Duration = Duration::from_millis(100);

/// How long the guest may stay in one slice before Ctrl-C gives up on
/// stopping it at an instruction boundary and ends bt86 instead.
const STUCK_AFTER: Duration = Duration::from_secs(1);

/// Why the terminal UI could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("cannot set up the terminal for the debugger's UI: {0}; run `bt86 debug` in an interactive terminal, or use --batch")]
    Setup(io::Error),
    #[error("cannot draw on the terminal: {0}; the terminal may have gone away (use --batch for scripted sessions)")]
    Draw(io::Error),
    #[error("cannot read keys from standard input: {0}; run `bt86 debug` with a terminal on standard input, or use --batch")]
    Input(io::Error),
}

/// The VM's thread has been inside one slice since this many milliseconds
/// after [`START`] (0: not inside one). The key reader reads it to tell
/// a guest that will come back soon from one spinning in chained code.
static IN_SLICE_SINCE_MS: AtomicU64 = AtomicU64::new(0);

/// Whether the terminal is in the UI's modes, so that restoring twice
/// (the panic hook, then the guard's drop) does nothing the second time.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);

fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64 + 1
}

/// Puts the terminal into the UI's modes: raw (keys one at a time, no
/// echo, Ctrl-C as a key rather than SIGINT), the alternate screen (the
/// shell's screen comes back untouched), and mouse reporting of button
/// presses in SGR encoding (the wheel is buttons 64 and 65). Only button
/// presses are asked for (mode 1000, not crossterm's any-motion 1003), so
/// moving the mouse sends nothing.
fn take_terminal() -> io::Result<()> {
    terminal::enable_raw_mode()?;
    TERMINAL_TAKEN.store(true, Ordering::SeqCst);
    let mut out = io::stdout();
    execute!(out, terminal::EnterAlternateScreen)?;
    out.write_all(b"\x1b[?1000h\x1b[?1006h")?;
    out.flush()
}

/// Gives the terminal back as it was; safe to call more than once, from
/// any thread, and from the panic hook.
pub fn restore_terminal() {
    if !TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout();
    let _ = out.write_all(b"\x1b[?1006l\x1b[?1000l");
    let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
    let _ = out.flush();
}

/// Restores the terminal when the UI ends, however it ends.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Reads standard input on its own thread and sends the decoded events.
/// A blocking `read` needs no signal and no polling; the thread ends with
/// the process. A Ctrl-C that finds the VM's thread inside one slice for
/// longer than [`STUCK_AFTER`] means the guest spins in chained code that
/// never exits to the monitor (nothing can stop it at an instruction
/// boundary there), so the reader gives the terminal back and ends bt86.
fn spawn_reader(start: Instant) -> mpsc::Receiver<io::Result<Vec<Input>>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = io::stdin();
        let mut buf = [0u8; 256];
        loop {
            let events = match stdin.read(&mut buf) {
                Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "standard input was closed")),
                Ok(n) => Ok(decode(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            if let Ok(events) = &events {
                let since = IN_SLICE_SINCE_MS.load(Ordering::SeqCst);
                let stuck = since != 0 && millis_since(start).saturating_sub(since) > STUCK_AFTER.as_millis() as u64;
                if stuck && events.contains(&Input::Key(Key::Ctrl('c'))) {
                    restore_terminal();
                    eprintln!(
                        "bt86: debug: the guest has not come back to the monitor for {} s (it spins in chained translated code with no device interrupt), so Ctrl-C cannot stop it at an instruction; quitting",
                        STUCK_AFTER.as_secs()
                    );
                    std::process::exit(130);
                }
            }
            let failed = events.is_err();
            if tx.send(events).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Runs the terminal UI on `session` until the user quits. `symbols` name
/// addresses in the code panel, `serial` is where the machine writes COM1
/// (shown in its own panel), and `title` names the kernel in the title bar.
///
/// Returns how the guest stopped for good, if it did. The caller must make
/// sure standard input and output are a terminal. Log records would be
/// written over the screen, so logging is off while the UI runs.
pub fn run(session: &mut Session, symbols: Symbols, serial: Option<SerialCapture>, title: &str) -> Result<Option<Exit>, TuiError> {
    let log_level = log::max_level();
    log::set_max_level(log::LevelFilter::Off);
    let result = run_inner(session, symbols, serial, title);
    log::set_max_level(log_level);
    result
}

fn run_inner(session: &mut Session, symbols: Symbols, serial: Option<SerialCapture>, title: &str) -> Result<Option<Exit>, TuiError> {
    take_terminal().map_err(TuiError::Setup)?;
    let _guard = TerminalGuard;
    // A panic anywhere must not leave the shell in raw mode on the
    // alternate screen: restore first, then report as usual.
    let previous = std::sync::Arc::new(std::panic::take_hook());
    {
        let previous = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout())).map_err(TuiError::Setup)?;
    terminal.clear().map_err(TuiError::Draw)?;
    let start = Instant::now();
    let keys = spawn_reader(start);
    let mut app = App::new(session, symbols, serial, title);
    let result = event_loop(&mut terminal, &mut app, &keys, start).map(|()| app.finished());
    let _ = terminal.show_cursor();
    // Put the default hook back (the closure above holds the old one).
    let _ = std::panic::take_hook();
    result
}

fn screen_rect(terminal: &Terminal<CrosstermBackend<io::Stdout>>) -> Rect {
    terminal.size().map(|s| Rect::new(0, 0, s.width, s.height)).unwrap_or_default()
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<io::Stdout>>,
    app: &mut App,
    keys: &mpsc::Receiver<io::Result<Vec<Input>>>,
    start: Instant,
) -> Result<(), TuiError> {
    let mut last_draw: Option<Instant> = None;
    loop {
        let due = last_draw.is_none_or(|t| !app.is_running() || t.elapsed() >= REDRAW_WHILE_RUNNING);
        if due {
            let view = app.view();
            terminal.draw(|frame| render(frame, &view)).map_err(TuiError::Draw)?;
            last_draw = Some(Instant::now());
        }
        if app.quit_requested() {
            return Ok(());
        }
        if app.is_running() {
            IN_SLICE_SINCE_MS.store(millis_since(start), Ordering::SeqCst);
            let more = app.run_slice(SLICE);
            IN_SLICE_SINCE_MS.store(0, Ordering::SeqCst);
            let screen = screen_rect(terminal);
            loop {
                match keys.try_recv() {
                    Ok(events) => {
                        for event in events.map_err(TuiError::Input)? {
                            app.handle(event, screen);
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if !more || !app.is_running() {
                // Draw the stop at once.
                last_draw = None;
            }
            continue;
        }
        // Stopped: wait for a key, redrawing now and then so that a new
        // terminal size is picked up.
        match keys.recv_timeout(Duration::from_millis(250)) {
            Ok(events) => {
                let screen = screen_rect(terminal);
                for event in events.map_err(TuiError::Input)? {
                    app.handle(event, screen);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}
