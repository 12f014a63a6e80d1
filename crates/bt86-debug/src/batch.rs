//! Batch mode: commands from a file or standard input, plain text out.
//!
//! `bt86 debug --batch [FILE] KERNEL` feeds each line to a [`Session`],
//! echoes it after the prompt (`(bt86) s 3`) and prints what the command
//! printed, or `error: ...` on one line when the command was wrong; the
//! session goes on either way. Blank lines and lines starting with `#`
//! are skipped without echo, so a script can carry comments. The book's
//! labs and the tests drive the debugger this way.
//!
//! This module owns only the reading and echoing; what commands mean is
//! [`crate::session`]'s business, and the process exit status is the
//! command line's.

use std::io::{BufRead, Write};

use bt86_native::Exit;

use crate::session::Session;

/// The prompt echoed before each command.
pub const PROMPT: &str = "(bt86) ";

/// How a batch run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOutcome {
    /// How the guest stopped for good, if it did.
    pub exit: Option<Exit>,
    /// Commands that failed with an error.
    pub errors: usize,
}

/// Runs every command of `input` on `session`, writing the transcript to
/// `out`, until the input ends or `q` is read.
pub fn run_batch(session: &mut Session, input: &mut dyn BufRead, out: &mut dyn Write) -> std::io::Result<BatchOutcome> {
    let mut errors = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let command = line.trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        writeln!(out, "{PROMPT}{command}")?;
        // The guest's serial output, written while the command runs, must
        // come after the echo.
        out.flush()?;
        match session.execute(command) {
            Ok(text) => out.write_all(text.as_bytes())?,
            Err(e) => {
                errors += 1;
                writeln!(out, "error: {e}")?;
            }
        }
        out.flush()?;
        if session.quit_requested() {
            break;
        }
    }
    Ok(BatchOutcome { exit: session.finished().cloned(), errors })
}
