//! The gdb remote stub against the real gdb: `bt86 run --gdb` serves a
//! guest, and `gdb -batch` connects, steps, reads registers and memory,
//! sets breakpoints and a watchpoint, talks to the `monitor`, and
//! detaches. Each test checks what gdb printed (values the guest's ELF
//! symbols or the architecture determine, not just the absence of errors)
//! and how bt86 ended.
//!
//! One test replays the gdb session of Lab 4 (`book/src/lab4.md`): it
//! types the commands the book shows into gdb, as a reader does, and
//! compares what gdb printed with the book, line by line.
//!
//! bt86 listens on port 0 so that the kernel picks a free port; the test
//! reads the real one from the line bt86 prints before it waits. Every
//! test that needs gdb is skipped, with the reason printed, when gdb is not
//! installed (Debian: `sudo apt-get install gdb`).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// bt86's statuses for a gdb session that ended without the guest
/// exiting, as `bt86 run --help` documents them.
const STATUS_DISCONNECTED: i32 = 10;
const STATUS_KILLED: i32 = 12;

/// How long a gdb script or a bt86 run may take before it is killed.
const LIMIT: Duration = Duration::from_secs(60);

/// gdb, or why the test is skipped.
fn gdb_path() -> Option<PathBuf> {
    common::gdb("test bt86's gdb stub")
}

/// A symbol's address in a guest's ELF file.
fn symbol(elf: &Path, name: &str) -> u32 {
    let bytes = std::fs::read(elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
    let file = goblin::elf::Elf::parse(&bytes).expect("the guest is an ELF file");
    file.syms
        .iter()
        .find(|s| file.strtab.get_at(s.st_name) == Some(name))
        .map(|s| s.st_value as u32)
        .unwrap_or_else(|| panic!("{} has no symbol {name}", elf.display()))
}

/// The lowest symbol address above `addr`: where the function at `addr`
/// ends at the latest.
fn symbol_after(elf: &Path, addr: u32) -> u32 {
    let bytes = std::fs::read(elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
    let file = goblin::elf::Elf::parse(&bytes).expect("the guest is an ELF file");
    file.syms.iter().map(|s| s.st_value as u32).filter(|&a| a > addr).min().unwrap_or(u32::MAX)
}

/// A `bt86 run --gdb` process, with its output collected in the
/// background.
struct Bt86 {
    process: common::Process,
    port: u16,
    /// Standard error read while looking for the port.
    seen: Vec<String>,
}

/// What a finished bt86 process left behind.
struct Finished {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Bt86 {
    /// Starts `bt86 run --gdb 127.0.0.1:0 [args] GUEST` and waits for the
    /// line that names the port it listens on.
    fn start(guest: &str, args: &[&str]) -> Bt86 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bt86"));
        cmd.args(["run", "--gdb", "127.0.0.1:0", "--timeout", "60"]).args(args).arg(common::guest(guest));
        let process = common::Process::spawn(cmd, "bt86");
        let mut seen = Vec::new();
        let port = loop {
            let line = process
                .stderr
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("bt86 never said where it listens; it printed:\n{}", seen.join("\n")));
            if let Some(rest) = line.strip_prefix("bt86: waiting for gdb on 127.0.0.1:") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse().unwrap_or_else(|_| panic!("no port in {line:?}"));
            }
            seen.push(line);
        };
        Bt86 { process, port, seen }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for bt86 to end (killing it after the harness's time limit).
    fn finish(self) -> Finished {
        let (status, stdout, stderr) = self.process.finish();
        let mut lines = self.seen;
        lines.extend(stderr.lines().map(str::to_string));
        Finished { status, stdout, stderr: lines.join("\n") }
    }
}

/// Runs `gdb -batch` on `elf` with `commands`, connected to `bt86`, and
/// returns everything it printed (standard output, then standard error).
fn gdb(gdb: &Path, elf: &Path, bt86: &Bt86, commands: &[&str]) -> String {
    let mut cmd = Command::new(gdb);
    cmd.args(["-batch", "-nx"]);
    let target = format!("target remote {}", bt86.address());
    for c in ["set pagination off", "set confirm off", "set width 0", target.as_str()].iter().chain(commands) {
        cmd.arg("-ex").arg(c);
    }
    cmd.arg(elf).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("gdb starts");
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    while child.try_wait().expect("wait for gdb").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gdb did not finish within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    format!("{}{}", out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// The line of `output` that contains `needle`, or a failure that shows
/// the whole output.
fn line_with<'a>(output: &'a str, needle: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("gdb printed no line containing {needle:?}:\n{output}"))
}

/// `info registers` output as name -> value.
fn registers(output: &str) -> HashMap<String, u32> {
    output
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let value = words.next()?.strip_prefix("0x")?;
            Some((name.to_string(), u32::from_str_radix(value, 16).ok()?))
        })
        .collect()
}

/// The whole course of a debugging session: ten `stepi`, registers,
/// a breakpoint at a symbol, memory, a `monitor` command, a watchpoint, a
/// hardware breakpoint (gdb's `Z1`, what course graders send), and a
/// detach after which the guest runs to its end.
#[test]
fn a_gdb_session_steps_breaks_watches_and_detaches() {
    let Some(gdb_bin) = gdb_path() else { return };
    let elf = common::guest("compute");
    let bt86 = Bt86::start("compute", &["-S", "--append", "workload=crc32"]);
    let mut commands = vec!["stepi"; 10];
    commands.extend([
        "info registers",
        "break kernel_crc32",
        "continue",
        "x/4xw $esp",
        "monitor info gdt",
        "watch *(unsigned int *)((char *)&crc_table + 4)",
        "continue",
        "delete",
        "hbreak printf",
        "continue",
        "detach",
    ]);
    let out = gdb(&gdb_bin, &elf, &bt86, &commands);
    let end = bt86.finish();

    // -S holds the guest at its entry point, where gdb finds it.
    let start = symbol(&elf, "_start");
    line_with(&out, &format!("{start:#010x} in _start ()"));

    // Ten single steps from _start: eight instructions of straight-line
    // code bring it to `rep stosb`, which clears .bss; single-stepping
    // stops after each of its iterations with EIP still at it, as on
    // hardware (SDM Vol. 3A 17.3.1.4), so the last three stops are there.
    let steps: Vec<u32> = out
        .lines()
        .filter(|l| l.ends_with(" in _start ()"))
        .filter_map(|l| u32::from_str_radix(l.split_whitespace().next()?.strip_prefix("0x")?, 16).ok())
        .collect();
    assert_eq!(steps.len(), 11, "the stop at connection and ten stepi stops:\n{out}");
    assert!(steps[..9].windows(2).all(|w| w[0] < w[1]), "straight-line code moves forward: {steps:x?}\n{out}");
    assert!(steps[8..].iter().all(|&eip| eip == steps[8]), "the rep stosb iterations stay at it: {steps:x?}\n{out}");

    // After those steps, _start has copied the Multiboot magic to ESI and
    // cleared two bytes of .bss (ECX counted down by two, EDI moved up by
    // two). The segment registers still hold the loader's flat selectors
    // (CS 0x08, data 0x10); gdb sees the guest's selectors, not the
    // monitor's shadows.
    let (bss, end_of_bss) = (symbol(&elf, "__bss_start"), symbol(&elf, "_end"));
    let regs = registers(&out);
    let expect = [
        ("eip", steps[10]),
        ("esi", 0x2BAD_B002),
        ("eax", 0),
        ("ecx", end_of_bss - bss - 2),
        ("edi", bss + 2),
        ("cs", 0x08),
        ("ss", 0x10),
        ("ds", 0x10),
        ("es", 0x10),
        ("fs", 0x10),
        ("gs", 0x10),
    ];
    for (name, value) in expect {
        assert_eq!(regs.get(name).copied(), Some(value), "{name} in `info registers`:\n{out}");
    }

    // A breakpoint at a symbol gdb read from the ELF, hit at its address.
    let crc = symbol(&elf, "kernel_crc32");
    line_with(&out, &format!("Breakpoint 1 at {crc:#x}"));
    line_with(&out, &format!("Breakpoint 1, {crc:#010x} in kernel_crc32 ()"));

    // The stack at the breakpoint: the return address into kmain, then
    // the argument n, 65536 by default for crc32.
    let stack: Vec<&str> = line_with(&out, "\t0x00010000\t").split('\t').collect();
    let ret = u32::from_str_radix(stack[1].trim_start_matches("0x"), 16).expect("a hex word");
    let kmain = symbol(&elf, "kmain");
    assert!(ret > kmain && ret < symbol_after(&elf, kmain), "return address {ret:#x} is not in kmain: {stack:?}");
    assert_eq!(stack[2], "0x00010000", "{stack:?}");

    // The monitor shows the guest's own GDT, which guest_entry loaded
    // from the `gdt` array.
    let gdt = symbol(&elf, "gdt");
    assert!(
        out.to_lowercase().contains(&format!("{gdt:#010x}")) || out.to_lowercase().contains(&format!("{gdt:#x}")),
        "`monitor info gdt` does not show the GDT base {gdt:#x}:\n{out}"
    );

    // The write watchpoint stops after the first store to crc_table[1]:
    // CRC-32's table entry for 1 is 0x77073096.
    line_with(&out, "Hardware watchpoint 2: *(unsigned int *)((char *)&crc_table + 4)");
    line_with(&out, "Old value = 0");
    line_with(&out, &format!("New value = {}", 0x7707_3096u32));

    // `hbreak` sends Z1; the stop is reported at the function's address.
    let printf = symbol(&elf, "printf");
    line_with(&out, &format!("Hardware assisted breakpoint 3 at {printf:#x}"));
    line_with(&out, &format!("3, {printf:#010x} in printf ()"));

    // After the detach the guest runs to its end, as without gdb.
    assert!(line_with(&out, "[Inferior 1 (").ends_with(") detached]"), "{out}");
    assert_eq!(end.status, common::GUEST_PASS, "bt86 stderr:\n{}\ngdb:\n{out}", end.stderr);
    assert!(end.stdout.contains("crc32(65536) = "), "{}", end.stdout);
    assert!(end.stdout.contains("checksum 0x"), "{}", end.stdout);
}

/// When the guest stops for good while gdb is attached, gdb hears the
/// status bt86 exits with (gdb prints it in octal).
#[test]
fn gdb_hears_how_the_guest_ended() {
    let Some(gdb_bin) = gdb_path() else { return };
    let cases: &[(&str, &[&str], i32)] = &[
        ("compute", &["--append", "workload=fib n=5"], common::GUEST_PASS),
        // A triple fault ends the run with bt86's status 6.
        ("triple", &[], 6),
    ];
    for &(guest, args, status) in cases {
        let mut full = vec!["-S"];
        full.extend_from_slice(args);
        let bt86 = Bt86::start(guest, &full);
        let out = gdb(&gdb_bin, &common::guest(guest), &bt86, &["continue"]);
        let end = bt86.finish();
        let exited = line_with(&out, "[Inferior 1 (");
        assert!(exited.ends_with(&format!(" exited with code 0{status:o}]")), "{guest}: {exited}");
        assert_eq!(end.status, status, "{guest}: bt86 stderr:\n{}", end.stderr);
    }
}

/// A client that goes away without detaching ends bt86 with status 10
/// and a message saying so, whether the guest was stopped or running;
/// `kill` ends it with status 12. Neither waits for another client.
#[test]
fn a_client_that_goes_away_ends_bt86_as_documented() {
    // Raw protocol: a stop-reason query answered, then the socket closed;
    // and a `c` (continue) followed at once by the close.
    for (what, packets) in [("while stopped", "+$?#3f"), ("while running", "+$c#63")] {
        let bt86 = Bt86::start("compute", &["-S", "--append", "workload=all"]);
        let mut conn = TcpStream::connect(bt86.address()).expect("connect to the stub");
        conn.write_all(packets.as_bytes()).expect("send");
        if packets.contains("$?") {
            // Wait for the reply so that the request was really served.
            let stop = reply(&mut conn);
            assert!(stop.starts_with('S') || stop.starts_with('T'), "a stop reply, got {stop:?}");
        }
        drop(conn);
        let end = bt86.finish();
        assert_eq!(end.status, STATUS_DISCONNECTED, "{what}: bt86 stderr:\n{}", end.stderr);
        assert!(end.stderr.contains("went away without detaching"), "{what}: {}", end.stderr);
        // The guest did not run on without its debugger.
        assert!(!end.stdout.contains("checksum"), "{what}: {}", end.stdout);
    }

    let Some(gdb_bin) = gdb_path() else { return };
    let bt86 = Bt86::start("compute", &["-S"]);
    let out = gdb(&gdb_bin, &common::guest("compute"), &bt86, &["stepi", "kill"]);
    let end = bt86.finish();
    // bt86 ends the session by closing the connection, which gdb reports
    // either way, depending on its version.
    assert!(
        out.lines().any(|l| l.starts_with("[Inferior 1 (") && l.ends_with(") killed]") || l == "Remote connection closed"),
        "{out}"
    );
    assert_eq!(end.status, STATUS_KILLED, "bt86 stderr:\n{}", end.stderr);
    assert!(end.stderr.contains("gdb killed the guest"), "{}", end.stderr);
    // The guest never ran past its first instructions.
    assert!(!end.stdout.contains("checksum"), "{}", end.stdout);
}

/// Sends one remote-protocol packet and returns the stub's reply packet's
/// contents (after any `+` acknowledgements).
fn packet(conn: &mut TcpStream, body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    conn.write_all(format!("${body}#{sum:02x}").as_bytes()).expect("send a packet");
    reply(conn)
}

/// Reads one reply packet (`$...#xx`) and acknowledges it.
fn reply(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(LIMIT)).expect("a read timeout");
    let mut text = Vec::new();
    let mut byte = [0u8];
    while !text.ends_with(b"#") {
        conn.read_exact(&mut byte).expect("a reply from the stub");
        if byte[0] == b'$' {
            text.clear();
        }
        text.push(byte[0]);
    }
    let mut sum = [0u8; 2];
    conn.read_exact(&mut sum).expect("the checksum");
    conn.write_all(b"+").expect("ack");
    // Undo run-length encoding: `X*N` is X followed by N - 29 more X.
    let mut body = Vec::new();
    let mut bytes = text[1..text.len() - 1].iter().copied();
    while let Some(b) = bytes.next() {
        match (b, body.last().copied()) {
            (b'*', Some(prev)) => {
                let count = bytes.next().expect("a run length").saturating_sub(29);
                body.extend(std::iter::repeat_n(prev, usize::from(count)));
            }
            _ => body.push(b),
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Ctrl-C (the byte 0x03) stops a running guest at once, even one
/// spinning in chained translated code, and the registers then show where
/// it was: inside the loop it was running.
#[test]
fn ctrl_c_stops_a_running_guest_where_it_is() {
    let elf = common::guest("compute");
    // About four billion iterations: seconds of work, not milliseconds.
    let bt86 = Bt86::start("compute", &["-S", "--append", "workload=loop n=4000000000"]);
    let mut conn = TcpStream::connect(bt86.address()).expect("connect to the stub");
    conn.write_all(b"+").expect("ack");
    conn.write_all(b"$c#63").expect("continue");
    thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    conn.write_all(&[0x03]).expect("Ctrl-C");
    let stop = reply(&mut conn);
    let latency = asked.elapsed();
    // SIGINT is signal 2.
    assert!(stop == "S02" || stop.starts_with("T02"), "a SIGINT stop, got {stop:?}");
    assert!(latency < Duration::from_secs(1), "the stop took {latency:?}");
    // `g`: the registers as hex bytes, EIP the ninth little-endian word.
    let regs = packet(&mut conn, "g");
    let eip = u32::from_str_radix(&regs[64..72], 16).map(u32::swap_bytes).expect("EIP in the g reply");
    let (loop_start, loop_end) = (symbol(&elf, "kernel_loop"), symbol_after(&elf, symbol(&elf, "kernel_loop")));
    assert!((loop_start..loop_end).contains(&eip), "EIP {eip:#x} is not in kernel_loop ({loop_start:#x}..{loop_end:#x})");
    packet_no_reply(&mut conn, "k");
    let end = bt86.finish();
    assert_eq!(end.status, STATUS_KILLED, "{}", end.stderr);
}

/// Sends a packet that has no reply (`k`).
fn packet_no_reply(conn: &mut TcpStream, body: &str) {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    conn.write_all(format!("${body}#{sum:02x}").as_bytes()).expect("send a packet");
}

/// `monitor` commands print the debugger's views; a bad one is a
/// one-line message and the session goes on.
#[test]
fn monitor_commands_show_the_machine_and_survive_bad_input() {
    let Some(gdb_bin) = gdb_path() else { return };
    let bt86 = Bt86::start("compute", &["-S"]);
    let out = gdb(
        &gdb_bin,
        &common::guest("compute"),
        &bt86,
        &[
            "monitor help",
            "monitor frobnicate now",
            "monitor page nowhere",
            "monitor translation",
            "monitor stats",
            "info registers eip",
            "detach",
        ],
    );
    let end = bt86.finish();
    for command in ["info gdt", "info idt", "info tab", "stats", "translation", "help"] {
        line_with(&out, &format!("  {command}"));
    }
    line_with(&out, "unknown monitor command \"frobnicate now\"; `monitor help` lists them");
    line_with(&out, "page nowhere: not a linear address");
    // The unit at the entry point starts with `cli`, which is privileged:
    // a callout.
    let cli = line_with(&out, "cli");
    assert!(cli.contains("CALLOUT"), "{cli}\n{out}");
    // The session went on after the bad commands.
    let start = symbol(&common::guest("compute"), "_start");
    assert_eq!(registers(&out).get("eip").copied(), Some(start), "{out}");
    assert_eq!(end.status, common::GUEST_PASS, "{}", end.stderr);
}

/// Without -S the guest runs while bt86 waits for gdb, and a guest that
/// ends before anyone connects ends bt86 as usual.
#[test]
fn without_dash_capital_s_the_guest_runs_at_once() {
    let bt86 = Bt86::start("compute", &["--append", "workload=fib n=12"]);
    let end = bt86.finish();
    assert_eq!(end.status, common::GUEST_PASS, "{}", end.stderr);
    assert!(end.stdout.contains("fib(12) = 144"), "{}", end.stdout);
}

/// A bad `--gdb` address and a port already in use are bad input
/// (status 2), with a message naming the address.
#[test]
fn bad_gdb_addresses_are_bad_input() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("a port");
    let busy = busy.local_addr().expect("its address").to_string();
    let cases = [
        ("localhost", "\"localhost\""),
        ("127.0.0.1:99999", "\"127.0.0.1:99999\""),
        (busy.as_str(), busy.as_str()),
    ];
    for (addr, named) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_bt86"))
            .args(["run", "--gdb", addr])
            .arg(common::guest("compute"))
            .output()
            .expect("bt86 runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--gdb {addr}: {stderr}");
        assert!(stderr.contains(named), "--gdb {addr}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

/// The chapter whose gdb transcript [`lab4_gdb_transcript_matches_real_gdb`]
/// replays, relative to the repository root, and the heading of its section.
const LAB4: &str = "book/src/lab4.md";
const LAB4_GDB_SECTION: &str = "## The same session from gdb";

/// Lab 4's gdb session as the book shows it: the bt86 and gdb command
/// lines of its `sh` blocks and the transcript of its `text` block.
struct BookSession {
    /// The guest's name: `probe` for `guests/build/probe.elf`.
    guest: String,
    /// bt86's arguments other than where it listens and the guest (`-S`).
    bt86_args: Vec<String>,
    /// The transcript, each line with its line number in the chapter.
    lines: Vec<(usize, String)>,
}

impl BookSession {
    /// The commands typed at gdb's prompt, in order.
    fn commands(&self) -> Vec<&str> {
        self.lines.iter().filter_map(|(_, l)| l.strip_prefix("(gdb) ")).collect()
    }
}

/// Finds the gdb section of `chapter` (the Markdown text of Lab 4): the
/// `bt86 run` line and the `gdb` line of its `sh` blocks, and its first
/// `text` block with `(gdb) ` command lines. An error says what is
/// missing, so that a reworded chapter fails with a reason.
fn book_session(chapter: &str) -> Result<BookSession, String> {
    let mut in_section = false;
    let mut fence: Option<String> = None;
    let (mut bt86_line, mut gdb_line) = (None, None);
    let mut block: Vec<(usize, String)> = Vec::new();
    let mut transcript: Option<Vec<(usize, String)>> = None;
    for (i, line) in chapter.lines().enumerate() {
        // Fences are followed everywhere, so that a `#` line inside a code
        // block is never taken for a heading.
        if let Some(rest) = line.strip_prefix("```") {
            match fence.take() {
                None => {
                    fence = Some(rest.trim().to_string());
                    block.clear();
                }
                Some(language) => {
                    let commands = block.iter().any(|(_, l)| l.starts_with("(gdb) "));
                    if in_section && language == "text" && transcript.is_none() && commands {
                        transcript = Some(std::mem::take(&mut block));
                    }
                }
            }
            continue;
        }
        if fence.is_none() && (line.starts_with("# ") || line.starts_with("## ")) {
            in_section = line.trim_end() == LAB4_GDB_SECTION;
            continue;
        }
        if !in_section {
            continue;
        }
        match fence.as_deref() {
            Some("sh") if line.starts_with("bt86 run ") => bt86_line = Some(line.to_string()),
            Some("sh") if line.starts_with("gdb ") => gdb_line = Some(line.to_string()),
            Some(_) => block.push((i + 1, line.to_string())),
            None => {}
        }
    }
    let where_ = format!("{LAB4}, section {LAB4_GDB_SECTION:?}");
    let bt86_line = bt86_line.ok_or_else(|| format!("{where_} has no ```sh block with a `bt86 run ...` line"))?;
    let gdb_line = gdb_line.ok_or_else(|| format!("{where_} has no ```sh block with a `gdb ...` line"))?;
    let lines = transcript.ok_or_else(|| format!("{where_} has no ```text block with `(gdb) COMMAND` lines"))?;

    // `bt86 run -s -S guests/build/NAME.elf`: the test listens on a port of
    // its own instead of -s (127.0.0.1:1234), and keeps the other options.
    let mut words: Vec<&str> = bt86_line.split_whitespace().skip(2).collect();
    let guest_path = words.pop().unwrap_or("");
    let guest = guest_path
        .strip_prefix("guests/build/")
        .and_then(|p| p.strip_suffix(".elf"))
        .ok_or_else(|| format!("{where_}: `{bt86_line}` does not end with a guest guests/build/NAME.elf"))?
        .to_string();
    let mut bt86_args = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        match w {
            "-s" => {}
            "--gdb" => {
                words.next();
            }
            _ => bt86_args.push(w.to_string()),
        }
    }
    if !gdb_line.split_whitespace().any(|w| w == guest_path) || !gdb_line.contains("target remote") {
        return Err(format!("{where_}: `{gdb_line}` should start gdb on {guest_path} with `-ex 'target remote ...'`"));
    }
    Ok(BookSession { guest, bt86_args, lines })
}

/// Runs gdb the way the book's reader does, with commands typed at its
/// prompt rather than given with `-batch`: `gdb ELF -ex 'target remote
/// ADDR'`, then `commands` on standard input. gdb then behaves as for a
/// terminal (it says `Continuing.`, asks before deleting every breakpoint,
/// and so on). `set trace-commands on` makes it print each command after
/// its prompt, as `(gdb) +COMMAND`. Standard output and standard error go
/// to one file, so that error messages stay where gdb printed them.
fn gdb_typed(gdb: &Path, elf: &Path, bt86: &Bt86, commands: &[&str]) -> String {
    let log_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lab4-gdb-{}.txt", bt86.port));
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("cannot share {}: {e}", log_path.display()));
    let mut child = Command::new(gdb)
        .args(["-nx", "-q", "-ex", "set trace-commands on", "-ex"])
        .arg(format!("target remote {}", bt86.address()))
        .arg(elf)
        // The book prints gdb's messages in English.
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .expect("gdb starts");
    let mut typed: String = commands.iter().map(|c| format!("{c}\n")).collect();
    // `quit` ends gdb after the book's last command; the transcript stops
    // at the prompt before it.
    typed.push_str("quit\n");
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(typed.as_bytes()).expect("type the commands into gdb");
    drop(stdin);
    let start = Instant::now();
    while child.try_wait().expect("wait for gdb").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gdb did not finish within {LIMIT:?}:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", log_path.display()));
    let _ = std::fs::remove_file(&log_path);
    out
}

/// Turns what [`gdb_typed`] printed into a transcript in the book's form:
/// from the stop gdb reports on connecting, each command as `(gdb)
/// COMMAND` followed by what it printed, up to the prompt after the last
/// one. The lines before the connection (reading the ELF's symbols) and
/// the `Remote debugging using ADDRESS` line are left out: the book
/// starts at the stop, and its address is `:1234` where the test's is a
/// free port.
fn book_form(raw: &str, commands: &[&str]) -> Vec<String> {
    let mut lines = raw.lines().skip_while(|l| !l.starts_with("+target remote ")).skip(1).peekable();
    if lines.peek().is_some_and(|l| l.starts_with("Remote debugging using ")) {
        lines.next();
    }
    let mut out = Vec::new();
    let mut next = 0;
    for line in lines {
        // A command's last line may lack its newline; the prompt then
        // follows on the same line.
        let traced = commands.get(next).map(|c| format!("(gdb) +{c}"));
        if let Some(traced) = traced.filter(|t| line.ends_with(t.as_str())) {
            let before = &line[..line.len() - traced.len()];
            if !before.is_empty() {
                out.push(before.to_string());
            }
            out.push(format!("(gdb) {}", commands[next]));
            next += 1;
        } else if next == commands.len() && line.contains("(gdb) ") {
            let before = &line[..line.find("(gdb) ").unwrap_or(0)];
            if !before.is_empty() {
                out.push(before.to_string());
            }
            break;
        } else {
            out.push(line.to_string());
        }
    }
    out
}

/// Replaces every translation-cache address in `line` with `<tc>`. The
/// TC lives in the monitor's area, [0xFFC00000, 4 GiB), and a unit's
/// place in it depends on the order of translation, so the book's TC
/// addresses are examples. One is an 8-digit hex number starting with
/// ffc, written `0xffc53870`, `ffc53870` or, in iced-x86's MASM style,
/// `0FFC538E0h`.
fn mask_tc(line: &str) -> String {
    fn is_tc(word: &str) -> bool {
        let w = word.to_ascii_lowercase();
        let digits = match (w.strip_prefix("0x"), w.strip_suffix('h')) {
            (Some(hex), _) => hex,
            (None, Some(masm)) => masm.strip_prefix('0').unwrap_or(masm),
            (None, None) => w.as_str(),
        };
        digits.len() == 8 && digits.starts_with("ffc") && digits.chars().all(|c| c.is_ascii_hexdigit())
    }
    fn flush(word: &mut String, out: &mut String) {
        out.push_str(if is_tc(word) { "<tc>" } else { word });
        word.clear();
    }
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Compares the book's transcript (lines with their line numbers in the
/// chapter) with gdb's, in the book's form. Lines must be equal once TC
/// addresses are masked, except that a book line `...` matches any number
/// of gdb's lines, though never a `(gdb) ` command line: each command the
/// book shows must be there, in order. The error names the first book
/// line that does not match and shows both sides around it.
fn compare_transcript(book: &[(usize, String)], real: &[String]) -> Result<(), String> {
    // The book as runs of literal lines (indices into `book`), each noting
    // whether a `...` comes before it.
    let mut runs: Vec<(bool, Vec<usize>)> = Vec::new();
    let mut skip = false;
    for (i, (_, line)) in book.iter().enumerate() {
        if line == "..." {
            skip = true;
            continue;
        }
        match runs.last_mut() {
            Some((_, run)) if !skip => run.push(i),
            _ => runs.push((skip, vec![i])),
        }
        skip = false;
    }
    let trailing_skip = skip;
    let is_command = |r: &String| r.starts_with("(gdb) ");
    // How many lines of `run` match gdb's lines from `start` on.
    let matched = |run: &[usize], start: usize| {
        let real = &real[start.min(real.len())..];
        run.iter().zip(real).take_while(|&(&b, r)| mask_tc(&book[b].1) == mask_tc(r)).count()
    };
    let mut pos = 0;
    for (n, (skip, run)) in runs.iter().enumerate() {
        let must_end = n + 1 == runs.len() && !trailing_skip;
        // A `...` may skip lines up to, but not past, gdb's next command.
        let latest = if *skip { real[pos..].iter().position(is_command).map_or(real.len(), |k| pos + k) } else { pos };
        let fits = |s: usize| matched(run, s) == run.len() && (!must_end || s + run.len() == real.len());
        if let Some(start) = (pos..=latest).find(|&s| fits(s)) {
            pos = start + run.len();
            continue;
        }
        // Explain the failure where most of the run matched.
        let start = (pos..=latest).max_by_key(|&s| (matched(run, s), std::cmp::Reverse(s))).unwrap_or(pos);
        let k = matched(run, start);
        let (why, book_at, real_at) = if k == run.len() {
            let last = &book[run[k - 1]];
            (format!("gdb printed more lines after {LAB4}:{} than the book shows", last.0), run[k - 1] + 1, start + k)
        } else if *skip && k == 0 {
            let (at, line) = &book[run[0]];
            let until = match real.get(latest) {
                Some(next) => format!("before its next command, `{next}`"),
                None => "in the rest of its output".to_string(),
            };
            (format!("{LAB4}:{at}: the book shows `{line}` after a `...`, but gdb printed no such line {until}"), run[0], pos)
        } else {
            let (at, line) = &book[run[k]];
            let why = match real.get(start + k) {
                Some(got) => format!("{LAB4}:{at}: the book shows `{line}`, gdb printed `{got}`"),
                None => format!("{LAB4}:{at}: gdb's transcript ended before `{line}`"),
            };
            (why, run[k], start + k)
        };
        return Err(show_both(book, book_at, real, real_at, &why));
    }
    let rest = &real[pos..];
    match rest.iter().position(is_command) {
        Some(k) => Err(show_both(book, book.len(), real, pos + k, &format!("gdb ran `{}`, which the book does not show", rest[k]))),
        None if !rest.is_empty() && !trailing_skip => {
            Err(show_both(book, book.len(), real, pos, "gdb printed more lines at the end than the book shows"))
        }
        None => Ok(()),
    }
}

/// `why`, then the book's lines and gdb's around the places where they
/// part (marked `>`), each with its line number.
fn show_both(book: &[(usize, String)], book_at: usize, real: &[String], real_at: usize, why: &str) -> String {
    let book_at = book_at.min(book.len().saturating_sub(1));
    let window = |at: usize, len: usize| at.saturating_sub(3)..(at + 4).min(len);
    let mark = |i: usize, at: usize| if i == at { ">" } else { " " };
    let book_lines: Vec<String> =
        window(book_at, book.len()).map(|i| format!("{} {:>4} | {}", mark(i, book_at), book[i].0, book[i].1)).collect();
    let real_lines: Vec<String> =
        window(real_at, real.len()).map(|i| format!("{} {:>4} | {}", mark(i, real_at), i + 1, real[i])).collect();
    format!("{why}\n\nthe book ({LAB4}):\n{}\n\ngdb printed:\n{}", book_lines.join("\n"), real_lines.join("\n"))
}

/// Lab 4's gdb transcript is real: the test reads the section "The same
/// session from gdb", starts bt86 as its `sh` block says (on a free port
/// instead of -s), types every `(gdb) COMMAND` of its `text` block into
/// the real gdb, and compares gdb's output with the block line by line.
/// A `...` line in the book stands for any number of lines, and TC
/// addresses are masked on both sides; everything else must match. After
/// the `detach` the guest runs on to its end.
#[test]
fn lab4_gdb_transcript_matches_real_gdb() {
    let Some(gdb_bin) = gdb_path() else { return };
    let chapter_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(LAB4);
    let chapter = std::fs::read_to_string(&chapter_path).unwrap_or_else(|e| panic!("cannot read {}: {e}", chapter_path.display()));
    let session = book_session(&chapter).unwrap_or_else(|e| panic!("{e}"));
    let commands = session.commands();
    assert!(!commands.is_empty(), "{LAB4}: the gdb transcript has no `(gdb) COMMAND` lines; the test would check nothing");

    let args: Vec<&str> = session.bt86_args.iter().map(String::as_str).collect();
    let bt86 = Bt86::start(&session.guest, &args);
    let raw = gdb_typed(&gdb_bin, &common::guest(&session.guest), &bt86, &commands);
    let end = bt86.finish();
    let real = book_form(&raw, &commands);

    if let Err(why) = compare_transcript(&session.lines, &real) {
        panic!(
            "Lab 4's gdb transcript does not match what gdb printed.\n{why}\n\n\
             gdb's whole transcript, in the book's form:\n{}\n\n\
             If bt86 or gdb changed on purpose, update the ```text block under \
             {LAB4_GDB_SECTION:?} in {LAB4} from this transcript (keep `...` where \
             the book leaves lines out; TC addresses need not be updated, they are \
             masked), check that the prose still says what the block shows, and run \
             `cargo test --test gdb lab4` again.\n\nbt86 stderr:\n{}",
            real.join("\n"),
            end.stderr
        );
    }
    if commands.last() == Some(&"detach") {
        assert_eq!(end.status, common::GUEST_PASS, "after `detach` the guest runs to its end; bt86 stderr:\n{}", end.stderr);
    }
}

/// The rules by which the book's transcript is compared with gdb's, on
/// small cases: equal lines, `...` (which never swallows a command),
/// masked TC addresses, and lines missing or left over on either side.
#[test]
fn transcript_comparison_rules() {
    let cases: &[(&str, &[&str], &[&str], bool)] = &[
        ("equal", &["a", "(gdb) x", "b"], &["a", "(gdb) x", "b"], true),
        ("one character differs", &["(gdb) x", "cr0 0x11"], &["(gdb) x", "cr0 0x13"], false),
        ("TC addresses are masked", &["at 0xffc50050;", "tc ffc50050  jne 0FFC538E0h"], &["at 0xffc61234;", "tc ffc6aaaa  jne 0FFC00000h"], true),
        ("guest addresses are not", &["at 0x00100648"], &["at 0x00100649"], false),
        ("nor a shorter ffc number", &["x ffc5005"], &["x ffc5006"], false),
        ("... matches lines", &["(gdb) x", "...", "end"], &["(gdb) x", "1", "2", "end"], true),
        ("... matches no line", &["(gdb) x", "...", "end"], &["(gdb) x", "end"], true),
        ("... at the end", &["(gdb) x", "..."], &["(gdb) x", "1", "2"], true),
        ("... never skips a command", &["(gdb) x", "...", "(gdb) z"], &["(gdb) x", "(gdb) y", "(gdb) z"], false),
        ("a line missing from gdb", &["(gdb) x", "a", "b"], &["(gdb) x", "a"], false),
        ("a line more from gdb", &["(gdb) x", "a"], &["(gdb) x", "a", "b"], false),
        ("... after a line", &["(gdb) x", "a", "...", "(gdb) y"], &["(gdb) x", "a", "b", "(gdb) y"], true),
        ("a line more at the start", &["a"], &["z", "a"], false),
    ];
    for &(what, book, real, matches) in cases {
        let book: Vec<(usize, String)> = book.iter().enumerate().map(|(i, l)| (i + 1, l.to_string())).collect();
        let real: Vec<String> = real.iter().map(|l| l.to_string()).collect();
        let result = compare_transcript(&book, &real);
        assert_eq!(result.is_ok(), matches, "{what}: {result:?}");
    }
    // gdb's raw output in the book's form: the connection's address and
    // everything before it left out, commands as `(gdb) COMMAND`, a
    // command's output without its newline split from the next prompt.
    let raw = "Reading symbols from p.elf...\n+target remote 127.0.0.1:5\nRemote debugging using 127.0.0.1:5\n\
               0x0010000c in _start ()\n(gdb) +stepi\nno newline(gdb) +detach\n[Inferior 1 (process 1) detached]\n(gdb) +quit\n";
    assert_eq!(
        book_form(raw, &["stepi", "detach"]),
        ["0x0010000c in _start ()", "(gdb) stepi", "no newline", "(gdb) detach", "[Inferior 1 (process 1) detached]"]
    );
}
