//! The gdb remote stub against the real gdb: `bt86 run --gdb` serves a
//! guest, and `gdb -batch` connects, steps, reads registers and memory,
//! sets breakpoints and a watchpoint, talks to the `monitor`, and
//! detaches. Each test checks what gdb printed (values the guest's ELF
//! symbols or the architecture determine, not just the absence of errors)
//! and how bt86 ended.
//!
//! bt86 listens on port 0 so that the kernel picks a free port; the test
//! reads the real one from the line bt86 prints before it waits. Every
//! test that needs gdb is skipped, with the reason printed, when gdb is not
//! installed (Debian: `sudo apt-get install gdb`).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// bt86's statuses for a gdb session that ended without the guest
/// exiting, as `bt86 run --help` documents them.
const STATUS_DISCONNECTED: i32 = 10;
const STATUS_KILLED: i32 = 12;

/// How long a gdb script or a bt86 run may take before it is killed.
const LIMIT: Duration = Duration::from_secs(60);

/// Finds gdb (or the program `BT86_GDB` names); prints why the test is
/// skipped when there is none.
fn gdb_path() -> Option<PathBuf> {
    let found = match std::env::var_os("BT86_GDB") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("gdb")).find(|p| p.is_file())),
    };
    if found.is_none() {
        eprintln!("skipped: gdb was not found on PATH (nor BT86_GDB set); install it (Debian: `sudo apt-get install gdb`) to test bt86's gdb stub");
    }
    found
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
    child: Child,
    port: u16,
    stdout: thread::JoinHandle<String>,
    stderr: mpsc::Receiver<String>,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_bt86"))
            .args(["run", "--gdb", "127.0.0.1:0", "--timeout", "60"])
            .args(args)
            .arg(common::guest(guest))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bt86 starts");
        let mut out = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let (tx, rx) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().expect("piped"));
        thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let port = loop {
            let line = rx.recv_timeout(LIMIT).unwrap_or_else(|_| panic!("bt86 never said where it listens; it printed:\n{}", seen.join("\n")));
            if let Some(rest) = line.strip_prefix("bt86: waiting for gdb on 127.0.0.1:") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse().unwrap_or_else(|_| panic!("no port in {line:?}"));
            }
            seen.push(line);
        };
        let mut bt86 = Bt86 { child, port, stdout, stderr: rx };
        bt86.stderr_prefix(seen);
        bt86
    }

    /// Puts back the lines read while looking for the port.
    fn stderr_prefix(&mut self, lines: Vec<String>) {
        let (tx, rx) = mpsc::channel();
        for line in lines {
            let _ = tx.send(line);
        }
        let old = std::mem::replace(&mut self.stderr, rx);
        thread::spawn(move || {
            while let Ok(line) = old.recv() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for bt86 to end (killing it after [`LIMIT`]).
    fn finish(mut self) -> Finished {
        let start = Instant::now();
        let status = loop {
            match self.child.try_wait().expect("wait for bt86") {
                Some(status) => break status.code().unwrap_or(-1),
                None if start.elapsed() > LIMIT => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break common::TIMED_OUT;
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        };
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr: Vec<String> = self.stderr.iter().collect();
        Finished { status, stdout, stderr: stderr.join("\n") }
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

    // Ten single steps through _start's straight-line code: ten stops,
    // each after the one before.
    let steps: Vec<u32> = out
        .lines()
        .filter(|l| l.ends_with(" in _start ()"))
        .filter_map(|l| u32::from_str_radix(l.split_whitespace().next()?.strip_prefix("0x")?, 16).ok())
        .collect();
    assert_eq!(steps.len(), 11, "the stop at connection and ten stepi stops:\n{out}");
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "straight-line code moves forward: {steps:x?}\n{out}");

    // After ten instructions, _start has copied the Multiboot magic to
    // ESI, cleared .bss with `rep stosb` (ECX counted down to 0, EDI
    // stopped at _end) and loaded its stack pointer. The segment
    // registers still hold the loader's flat selectors (CS 0x08, data
    // 0x10); gdb sees the guest's selectors, not the monitor's shadows.
    let regs = registers(&out);
    let expect = [
        ("eip", steps[10]),
        ("esi", 0x2BAD_B002),
        ("eax", 0),
        ("ecx", 0),
        ("edi", symbol(&elf, "_end")),
        ("esp", symbol(&elf, "boot_stack_top")),
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
