//! Keys and mouse-wheel turns, decoded from the bytes a terminal sends.
//!
//! This module owns the translation of the terminal's input byte stream
//! (ASCII, UTF-8 and the escape sequences of xterm-compatible terminals,
//! tmux and the Linux console) into [`Input`] values. It reads nothing and
//! draws nothing: the event loop in `tui/mod.rs` feeds it the bytes each
//! `read` of standard input returned.
//!
//! Why not crossterm's event reader: the first call to it installs a
//! SIGWINCH handler (through signal-hook) for the whole process, and a
//! process-directed signal is delivered to any thread that does not block
//! it, including the VM's thread while it runs guest code in 32-bit
//! compatibility mode, on the guest's stack and with the guest's FS base.
//! That handler saves and restores `errno`, a thread-local reached through
//! FS, and would fault there (see bt86-native's `shutdown` module for the
//! same reasoning about SIGINT). Decoding the bytes ourselves leaves
//! SIGWINCH at its default action, which is to ignore it; the UI notices a
//! new terminal size when it next draws.

/// A key the UI acts on. Modifiers other than Ctrl on a few letters are
/// not reported: the UI has no use for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Tab,
    Esc,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
    /// A function key, F1 to F12.
    F(u8),
    /// Ctrl and a letter (`'c'` for Ctrl-C), as the terminal sends it in
    /// raw mode: a control byte below 0x20.
    Ctrl(char),
}

/// One decoded input event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Key(Key),
    /// The mouse wheel turned over the cell at (`column`, `row`), both
    /// counted from 0 at the top left.
    Wheel { up: bool, column: u16, row: u16 },
}

/// Decodes one chunk of input bytes into events.
///
/// A terminal writes each key's whole sequence at once, so a chunk never
/// ends inside a sequence in practice; a lone ESC byte is the Esc key.
/// Bytes that form no known sequence are dropped rather than typed.
pub fn decode(bytes: &[u8]) -> Vec<Input> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (event, used) = decode_one(&bytes[i..]);
        if let Some(event) = event {
            out.push(event);
        }
        i += used.max(1);
    }
    out
}

/// Decodes the event at the start of `b`: the event (if the bytes form a
/// known one) and how many bytes it took.
fn decode_one(b: &[u8]) -> (Option<Input>, usize) {
    let key = |k| Some(Input::Key(k));
    match b[0] {
        0x1B => decode_escape(b),
        b'\r' | b'\n' => (key(Key::Enter), 1),
        b'\t' => (key(Key::Tab), 1),
        0x7F | 0x08 => (key(Key::Backspace), 1),
        c @ 0x01..=0x1A => (key(Key::Ctrl(char::from(b'a' + c - 1))), 1),
        c if c < 0x80 => (key(Key::Char(char::from(c))), 1),
        _ => decode_utf8(b),
    }
}

/// A UTF-8 character typed into the command line.
fn decode_utf8(b: &[u8]) -> (Option<Input>, usize) {
    let len = match b[0] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return (None, 1),
    };
    let Some(seq) = b.get(..len) else { return (None, b.len()) };
    match std::str::from_utf8(seq).ok().and_then(|s| s.chars().next()) {
        Some(c) => (Some(Input::Key(Key::Char(c))), len),
        None => (None, 1),
    }
}

/// An escape sequence: `ESC [ ...` (CSI), `ESC O x` (SS3), or Esc alone.
fn decode_escape(b: &[u8]) -> (Option<Input>, usize) {
    let key = |k| Some(Input::Key(k));
    match b.get(1) {
        None => (key(Key::Esc), 1),
        Some(b'[') => decode_csi(b),
        Some(b'O') => {
            let Some(&c) = b.get(2) else { return (key(Key::Esc), 2) };
            let k = match c {
                b'A' => Key::Up,
                b'B' => Key::Down,
                b'C' => Key::Right,
                b'D' => Key::Left,
                b'H' => Key::Home,
                b'F' => Key::End,
                b'P' => Key::F(1),
                b'Q' => Key::F(2),
                b'R' => Key::F(3),
                b'S' => Key::F(4),
                _ => return (None, 3),
            };
            (key(k), 3)
        }
        // ESC followed by anything else: Esc, then that byte on its own.
        Some(_) => (key(Key::Esc), 1),
    }
}

/// A CSI sequence `ESC [ params final`: cursor and editing keys, function
/// keys (`ESC [ 15 ~` is F5), and SGR mouse reports (`ESC [ < 64 ; x ; y M`
/// is the wheel turning up at column x, row y, both counted from 1).
fn decode_csi(b: &[u8]) -> (Option<Input>, usize) {
    // The Linux console sends F1-F5 as ESC [ [ A .. ESC [ [ E.
    if b.get(2) == Some(&b'[') {
        return match b.get(3) {
            Some(&c @ b'A'..=b'E') => (Some(Input::Key(Key::F(c - b'A' + 1))), 4),
            _ => (None, b.len().min(4)),
        };
    }
    // Parameter bytes run until a final byte in 0x40..=0x7E.
    let Some(end) = b[2..].iter().position(|c| (0x40..=0x7E).contains(c)).map(|p| p + 2) else {
        return (None, b.len());
    };
    let params = &b[2..end];
    let used = end + 1;
    let fin = b[end];
    if let Some(mouse) = params.strip_prefix(b"<") {
        return (decode_sgr_mouse(mouse, fin), used);
    }
    let text = std::str::from_utf8(params).unwrap_or("");
    // Modifiers (`1;5` for Ctrl) come after the first parameter; ignore them.
    let first: Option<u32> = text.split(';').next().and_then(|p| p.parse().ok());
    let k = match (fin, first) {
        (b'A', _) => Key::Up,
        (b'B', _) => Key::Down,
        (b'C', _) => Key::Right,
        (b'D', _) => Key::Left,
        (b'H', _) => Key::Home,
        (b'F', _) => Key::End,
        (b'P', _) => Key::F(1),
        (b'Q', _) => Key::F(2),
        (b'R', _) => Key::F(3),
        (b'S', _) => Key::F(4),
        (b'~', Some(n)) => match n {
            1 | 7 => Key::Home,
            3 => Key::Delete,
            4 | 8 => Key::End,
            5 => Key::PageUp,
            6 => Key::PageDown,
            11..=15 => Key::F((n - 10) as u8),
            17..=21 => Key::F((n - 11) as u8),
            23 | 24 => Key::F((n - 12) as u8),
            _ => return (None, used),
        },
        _ => return (None, used),
    };
    (Some(Input::Key(k)), used)
}

/// The SGR mouse report `button ; column ; row` ending in `M` (press) or
/// `m` (release). Buttons 64 and 65 are the wheel; clicks are ignored.
fn decode_sgr_mouse(params: &[u8], fin: u8) -> Option<Input> {
    let text = std::str::from_utf8(params).ok()?;
    let mut fields = text.split(';').map(|f| f.parse::<u16>().ok());
    let (button, column, row) = (fields.next()??, fields.next()??, fields.next()??);
    if fin != b'M' {
        return None;
    }
    // Bits 2-4 carry Shift, Meta and Ctrl; the wheel is 64 (up) or 65.
    let up = match button & !0x1C {
        64 => true,
        65 => false,
        _ => return None,
    };
    Some(Input::Wheel { up, column: column.saturating_sub(1), row: row.saturating_sub(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte sequences as xterm, tmux and the Linux console send them.
    #[test]
    fn sequences_decode_to_keys() {
        let table: &[(&[u8], &[Input])] = &[
            (b"s", &[Input::Key(Key::Char('s'))]),
            (b"x /4w 0x100000\r", &[]), // checked by length below
            (b"\r", &[Input::Key(Key::Enter)]),
            (b"\x7f", &[Input::Key(Key::Backspace)]),
            (b"\x03", &[Input::Key(Key::Ctrl('c'))]),
            (b"\x1b", &[Input::Key(Key::Esc)]),
            (b"\x1b[A", &[Input::Key(Key::Up)]),
            (b"\x1bOB", &[Input::Key(Key::Down)]),
            (b"\x1b[1;5C", &[Input::Key(Key::Right)]),
            (b"\x1bOP", &[Input::Key(Key::F(1))]),
            (b"\x1b[11~", &[Input::Key(Key::F(1))]),
            (b"\x1b[[E", &[Input::Key(Key::F(5))]),
            (b"\x1b[15~", &[Input::Key(Key::F(5))]),
            (b"\x1b[18~", &[Input::Key(Key::F(7))]),
            (b"\x1b[19~", &[Input::Key(Key::F(8))]),
            (b"\x1b[21~", &[Input::Key(Key::F(10))]),
            (b"\x1b[5~\x1b[6~", &[Input::Key(Key::PageUp), Input::Key(Key::PageDown)]),
            (b"\x1b[3~", &[Input::Key(Key::Delete)]),
            (b"\x1b[<64;10;5M", &[Input::Wheel { up: true, column: 9, row: 4 }]),
            (b"\x1b[<65;1;1M", &[Input::Wheel { up: false, column: 0, row: 0 }]),
            (b"\x1b[<0;3;3M\x1b[<0;3;3m", &[]),
            ("é".as_bytes(), &[Input::Key(Key::Char('é'))]),
            (b"\x1b[99~q", &[Input::Key(Key::Char('q'))]),
        ];
        for (bytes, want) in table {
            let got = decode(bytes);
            if bytes.starts_with(b"x /4w") {
                assert_eq!(got.len(), bytes.len(), "one key per byte of {bytes:?}");
                assert_eq!(got.last(), Some(&Input::Key(Key::Enter)));
                continue;
            }
            assert_eq!(&got, want, "decoding {bytes:?}");
        }
    }

    /// A truncated sequence decodes to nothing harmful and never panics.
    #[test]
    fn truncated_sequences_are_dropped() {
        for bytes in [&b"\x1b["[..], b"\x1b[<64;1", b"\x1bO", b"\xe2\x82", b"\x1b[["] {
            let got = decode(bytes);
            assert!(got.iter().all(|e| !matches!(e, Input::Key(Key::Char(_)))), "{bytes:?} gave {got:?}");
        }
    }
}
