//! The `bt86` command as a user meets it: how each kind of run ends (exit
//! status and message), what `--stats`, `--trace`, `-d` and `-D` print and
//! where, the QEMU spellings of the options, and `--help`.
//!
//! The exit statuses are a contract with scripts and test harnesses (see
//! `bt86::status`): 0 for an ACPI power-off, (v << 1) | 1 for a write of v
//! to isa-debug-exit, 4 for a guest halted for good, 6 for a triple fault
//! and 124 for `--timeout`. The tests spell the numbers out, so a change to
//! the contract shows up here as a failure to be read in review.
//!
//! Where QEMU is installed, guest-visible behaviour is also compared with
//! it; without QEMU those halves are skipped with a message.

mod cli_support;
mod common;

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use cli_support::tiny_kernel::{code, TinyKernel};
use cli_support::{bt86, scratch_dir, write_file, Outcome};

/// `bt86 run ARGS... GUEST` for one of the guests in guests/.
fn run_guest(name: &str, args: &[&str]) -> Outcome {
    let mut full: Vec<OsString> = vec!["run".into()];
    full.extend(args.iter().map(OsString::from));
    full.push(common::guest(name).into_os_string());
    bt86(&full)
}

/// `bt86 run ARGS... KERNEL` for a kernel file.
fn run_kernel(kernel: &Path, args: &[&str]) -> Outcome {
    let mut full: Vec<OsString> = vec!["run".into()];
    full.extend(args.iter().map(OsString::from));
    full.push(kernel.as_os_str().to_owned());
    bt86(&full)
}

/// `bt86 ARGS...`, exactly as given.
fn run_args(args: &[&str]) -> Outcome {
    bt86(args)
}

fn assert_no_panic(run: &Outcome) {
    assert!(
        !run.stderr.contains("panicked"),
        "bt86 panicked: {}",
        run.describe()
    );
}

// ---------------------------------------------------------------------
// Exit statuses.
// ---------------------------------------------------------------------

/// Without a kernel, bt86 runs its built-in demo guest, which prints a
/// banner and powers off through ACPI: status 0 and no message of bt86's.
#[test]
fn demo_guest_prints_its_banner_and_powers_off() {
    let run = run_args(&["run"]);
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert!(
        run.stdout.starts_with("bt86 demo guest"),
        "no banner: {}",
        run.describe()
    );
    assert!(
        run.stdout.contains("powering off through port 0x604"),
        "{}",
        run.describe()
    );
    assert!(
        run.messages().is_empty(),
        "a clean power-off needs no message: {}",
        run.describe()
    );
}

/// The demo guest's kernel file on the command line runs the same guest.
#[test]
fn demo_guest_from_its_file_matches_the_built_in_one() {
    let built_in = run_args(&["run"]);
    let from_file = run_guest("demo", &[]);
    assert_eq!(from_file.status, Some(0), "{}", from_file.describe());
    // The command line differs (QEMU puts the kernel's path first), so
    // compare everything but that line.
    let without_cmdline = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with("boot:     command line"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        without_cmdline(&built_in.stdout),
        without_cmdline(&from_file.stdout)
    );
}

/// A write of v to isa-debug-exit ends the run with (v << 1) | 1, cut to
/// the 8 bits a process exit status has, exactly as under QEMU.
#[test]
fn isa_debug_exit_status_is_twice_the_value_plus_one() {
    let dir = scratch_dir("cli_debug_exit");
    let qemu = common::qemu();
    for value in [0u8, 1, 0x10, 0x2A, 0x7F, 0x80, 0xFF] {
        let kernel =
            TinyKernel::new(&code::debug_exit(value)).write(&dir, &format!("exit{value:02x}.elf"));
        let want = ((i32::from(value) << 1) | 1) & 0xFF;
        let run = run_kernel(&kernel, &[]);
        assert_eq!(
            run.status,
            Some(want),
            "debug-exit value {value:#x}: {}",
            run.describe()
        );
        assert!(
            run.messages().is_empty(),
            "the guest's own exit needs no message: {}",
            run.describe()
        );
        if qemu.is_some() {
            let (_, qemu_status) = common::run_qemu(&kernel, &[]);
            assert_eq!(
                qemu_status, want,
                "QEMU disagrees with the contract for value {value:#x}"
            );
        }
    }
}

/// The conformance guests report success by writing 0x10 to isa-debug-exit.
#[test]
fn conformance_guests_exit_with_33() {
    for name in ["probe", "exceptions", "compute"] {
        let run = run_guest(name, &[]);
        assert_eq!(
            run.status,
            Some(common::GUEST_PASS),
            "guest {name}: {}",
            run.describe()
        );
        assert_no_panic(&run);
    }
}

/// A guest that powers off through the ACPI PM1a control port (0x604)
/// ends the run with status 0, as QEMU does.
#[test]
fn acpi_power_off_exits_0() {
    let dir = scratch_dir("cli_poweroff");
    let kernel = TinyKernel::new(&code::acpi_poweroff()).write(&dir, "off.elf");
    let run = run_kernel(&kernel, &[]);
    assert_eq!(run.status, Some(0), "{}", run.describe());
    if common::qemu().is_some() {
        let (_, qemu_status) = common::run_qemu(&kernel, &[]);
        assert_eq!(qemu_status, 0, "QEMU did not power off either");
    }
}

/// `cli; hlt` can never wake up: status 4 and a message that says why.
#[test]
fn halt_with_interrupts_disabled_exits_4_with_a_message() {
    let run = run_guest("halt", &[]);
    assert_eq!(run.status, Some(4), "{}", run.describe());
    assert!(
        run.stdout
            .contains("halt: halting with interrupts disabled"),
        "{}",
        run.describe()
    );
    let messages = run.messages();
    assert_eq!(messages.len(), 1, "{}", run.describe());
    assert!(
        messages[0].contains("the guest halted with interrupts disabled"),
        "{}",
        run.describe()
    );
    assert!(messages[0].contains("exit status 4"), "{}", run.describe());
}

/// `sti; hlt` waits for an interrupt that no device of this version can
/// raise: status 4 as well, with a message that says so instead.
#[test]
fn a_halted_guest_sleeps_without_using_the_cpu() {
    // mov al, 0xff; out 0x21, al; out 0xa1, al (mask every IRQ); sti;
    // 1: hlt; jmp 1b. Nothing can wake it: QEMU waits for ever, and so
    // does bt86, sleeping in the monitor until --timeout ends the run.
    let code = [0xB0, 0xFF, 0xE6, 0x21, 0xE6, 0xA1, 0xFB, 0xF4, 0xEB, 0xFD];
    let dir = scratch_dir("cli_halt_sleeps");
    let kernel = TinyKernel::new(&code).write(&dir, "masked_hlt.elf");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_bt86"))
        .args(["run", "--timeout", "3"])
        .arg(&kernel)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bt86 starts");
    std::thread::sleep(std::time::Duration::from_millis(2000));
    // utime + stime of the running process, in clock ticks (fields 14 and
    // 15 of /proc/PID/stat, after the parenthesised command name).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("bt86 is still running");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = child.wait_with_output().expect("bt86 ends");
    assert_eq!(out.status.code(), Some(124), "{}", String::from_utf8_lossy(&out.stderr));
    // Two seconds of wall time; a spinning monitor would use about 200
    // ticks. Allow start-up and a little polling.
    assert!(ticks <= 20, "bt86 used {ticks} clock ticks of CPU in 2 s of halted guest");
}

/// The same for a tiny `cli; hlt`, where the hlt's address is known
/// exactly: the message must name the hlt, not the instruction after it.
#[test]
fn halt_message_gives_the_address_of_the_hlt() {
    let dir = scratch_dir("cli_cli_hlt");
    let kernel = TinyKernel::new(code::CLI_HLT);
    let run = run_kernel(&kernel.write(&dir, "cli_hlt.elf"), &[]);
    assert_eq!(run.status, Some(4), "{}", run.describe());
    let eip = format!("hlt at EIP {:#010x} after cli", kernel.code_addr() + 1);
    let messages = run.messages();
    assert_eq!(messages.len(), 1, "{}", run.describe());
    assert!(
        messages[0].contains("interrupts disabled"),
        "{}",
        run.describe()
    );
    assert!(
        messages[0].contains(&eip),
        "the message does not say {eip:?}: {}",
        run.describe()
    );
}

/// An exception that cannot be delivered, twice over, shuts the virtual
/// CPU down (SDM Vol. 3A, 6.15, interrupt 8): status 6.
#[test]
fn triple_fault_exits_6_with_a_message() {
    let run = run_guest("triple", &[]);
    assert_eq!(run.status, Some(6), "{}", run.describe());
    assert!(run.stdout.contains("triple:"), "{}", run.describe());
    assert!(
        !run.stdout.contains("still running"),
        "the guest survived: {}",
        run.describe()
    );
    let messages = run.messages();
    assert_eq!(messages.len(), 1, "{}", run.describe());
    assert!(messages[0].contains("triple fault"), "{}", run.describe());
    assert!(messages[0].contains("exit status 6"), "{}", run.describe());
}

/// `jmp $` chains its translation to itself and never leaves the
/// translation cache, and with the PIT quiet no device brings it back;
/// `--timeout 1` must still end the run, with status 124, within a few
/// seconds.
#[test]
fn spinning_guest_times_out_with_124() {
    let dir = scratch_dir("cli_spin");
    let kernel = TinyKernel::new(code::SPIN_WITHOUT_DEVICES).write(&dir, "spin.elf");
    let run = run_kernel(&kernel, &["--timeout", "1"]);
    assert_eq!(run.status, Some(124), "{}", run.describe());
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "stopped before its time: {}",
        run.describe()
    );
    assert!(
        run.elapsed < Duration::from_secs(5),
        "the timeout was late: {}",
        run.describe()
    );
    assert!(
        run.messages().iter().any(|m| m.contains("timeout")),
        "{}",
        run.describe()
    );
    // The run loop itself stopped the guest (the host timer is armed for
    // the deadline), not the last-resort watchdog thread, whose message
    // says how long it waited.
    assert!(
        !run.messages().iter().any(|m| m.contains("still running after")),
        "the watchdog, not the monitor, ended the run: {}",
        run.describe()
    );
}

/// A guest that ends before its timeout is not affected by it.
#[test]
fn timeout_does_not_cut_a_short_run() {
    let run = run_guest("compute", &["--timeout", "30"]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
}

// ---------------------------------------------------------------------
// What the run prints: --stats, --trace, -d, -D.
// ---------------------------------------------------------------------

/// The number after `label` on its line of the `--stats` table.
fn stat(stderr: &str, label: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
}

#[test]
fn stats_prints_the_counters_on_stderr() {
    let plain = run_guest("probe", &[]);
    let run = run_guest("probe", &["--stats"]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    assert_eq!(
        run.stdout, plain.stdout,
        "--stats changed the guest's output"
    );
    assert!(
        !run.stdout.contains("units translated"),
        "the table went to stdout: {}",
        run.describe()
    );
    for label in [
        "units translated",
        "IDENT instructions",
        "rewritten instructions",
        "exits",
    ] {
        let value = stat(&run.stderr, label);
        assert!(
            value.is_some_and(|v| v > 0),
            "{label:?} is {value:?}: {}",
            run.describe()
        );
    }
    // Every IDENT or rewritten instruction is a translated one.
    let total = stat(&run.stderr, "guest instructions translated");
    let ident = stat(&run.stderr, "IDENT instructions");
    let rewritten = stat(&run.stderr, "rewritten instructions");
    assert_eq!(
        total,
        ident.zip(rewritten).map(|(i, r)| i + r),
        "{}",
        run.stderr
    );
    assert!(
        stat(&plain.stderr, "units translated").is_none(),
        "stats without --stats: {}",
        plain.stderr
    );
}

/// One guest instruction line of a trace: its address, bytes, disassembly,
/// tag and reason.
struct TraceLine<'a> {
    tag: &'a str,
    reason: &'a str,
}

/// Finds the guest instruction lines of a trace by their tag column.
fn trace_lines(log: &str) -> Vec<TraceLine<'_>> {
    const TAGS: [&str; 4] = ["IDENT", "REWRITE", "CALLOUT", "FAULT"];
    log.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| TAGS.contains(w))?;
            let tag = words[at];
            let reason = line
                .split_once(&format!(" {tag} "))
                .map_or("", |(_, r)| r.trim());
            Some(TraceLine { tag, reason })
        })
        .collect()
}

#[test]
fn trace_tags_every_instruction_and_gives_reasons() {
    let plain = run_guest("probe", &[]);
    let run = run_guest("probe", &["--trace"]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    assert_eq!(
        run.stdout, plain.stdout,
        "--trace changed the guest's output"
    );
    let units = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("unit 0x"))
        .count();
    assert!(
        units > 0,
        "no translation units in the trace:\n{}",
        run.stderr
    );
    let lines = trace_lines(&run.stderr);
    for tag in ["IDENT", "REWRITE", "CALLOUT"] {
        assert!(
            lines.iter().any(|l| l.tag == tag),
            "no {tag} line in the trace:\n{}",
            run.stderr
        );
    }
    for line in &lines {
        if line.tag != "IDENT" {
            assert!(
                line.reason.len() > 3,
                "a {} line without a reason in the trace:\n{}",
                line.tag,
                run.stderr
            );
        }
    }
    // The trace also shows the translation-cache code after each unit
    // header; there is more of it than there are units.
    let indented = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("      "))
        .count();
    assert!(indented > units, "no TC code in the trace:\n{}", run.stderr);
}

/// `-d ... -D FILE` writes the log to FILE and leaves stderr to bt86's
/// own messages, as QEMU's -D does.
#[test]
fn debug_log_goes_to_the_file_named_by_capital_d() {
    let dir = scratch_dir("cli_log_file");
    let log_path = dir.join("bt86.log");
    let log_arg = log_path.display().to_string();
    let run = run_guest("exceptions", &["-d", "in_asm,out_asm,int", "-D", &log_arg]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    let log =
        std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("no log at {log_arg}: {e}"));
    assert!(
        log.lines().any(|l| l.starts_with("unit 0x")),
        "in_asm is missing from the log:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("int: ")),
        "int is missing from the log:\n{log}"
    );
    assert!(
        !trace_lines(&log).is_empty(),
        "the log has no tagged instructions:\n{log}"
    );
    assert!(
        !run.stderr.contains("unit 0x"),
        "the log leaked to stderr: {}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("int: "),
        "the log leaked to stderr: {}",
        run.describe()
    );
}

/// `-d` without `-D` logs to stderr.
#[test]
fn debug_log_without_capital_d_goes_to_stderr() {
    let run = run_guest("exceptions", &["-d", "int"]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    assert!(
        run.stderr.lines().any(|l| l.starts_with("int: ")),
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains("int: "),
        "the log went to the guest's stdout: {}",
        run.describe()
    );
}

/// `-d int` logs every exception the exceptions guest raises. The guest
/// prints the vector it caught for each case; each one must appear in
/// the log.
#[test]
fn debug_int_logs_the_exceptions_the_guest_raises() {
    let dir = scratch_dir("cli_int_log");
    let log_path = dir.join("int.log");
    let run = run_guest(
        "exceptions",
        &["-d", "int", "-D", &log_path.display().to_string()],
    );
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    let log = std::fs::read_to_string(&log_path).expect("-D wrote the log");

    // The guest's lines look like "ud2: #UD at +0". Breakpoints and
    // overflow traps come from int3/int 3/into, which the log names by
    // instruction. A double fault may be logged as itself or as the
    // fault whose delivery raised it (SDM Vol. 3A, 6.15, interrupt 8).
    let mut checked = 0;
    for line in run.stdout.lines() {
        let Some((_, rest)) = line.split_once(": #") else {
            continue;
        };
        let mnemonic: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let expected: Vec<String> = match mnemonic.as_str() {
            "BP" => vec!["int: int".into()],
            "OF" => vec!["int: into".into()],
            "DF" => vec!["int: #DF".into(), "int: #GP".into()],
            other => vec![format!("int: #{other}")],
        };
        assert!(
            expected.iter().any(|e| log.contains(e.as_str())),
            "guest line {line:?}: none of {expected:?} in the log:\n{log}"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "the guest reported only {checked} exceptions:\n{}",
        run.stdout
    );

    // The single-step case reports how many #DB traps it took.
    let steps: usize = run
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("single-step: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the guest reports its single-step traps");
    let logged = log.lines().filter(|l| l.starts_with("int: #DB")).count();
    assert!(
        logged >= steps,
        "{steps} single-step traps, {logged} #DB in the log:\n{log}"
    );
}

/// Every -d item is accepted alone and in any combination.
#[test]
fn every_debug_item_is_accepted() {
    let dir = scratch_dir("cli_items");
    for items in [
        "in_asm",
        "out_asm",
        "int",
        "exec",
        "exec,int",
        "int,out_asm",
        "in_asm,out_asm,int,exec",
    ] {
        let log_path = dir.join(format!("{items}.log"));
        let run = run_guest(
            "compute",
            &["-d", items, "-D", &log_path.display().to_string()],
        );
        assert_eq!(
            run.status,
            Some(common::GUEST_PASS),
            "-d {items}: {}",
            run.describe()
        );
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if items.contains("exec") {
            assert!(
                log.lines().any(|l| l.starts_with("exec: ")),
                "-d {items} logged no exec:\n{log}"
            );
        } else {
            assert!(
                !log.lines().any(|l| l.starts_with("exec: ")),
                "-d {items} logged exec:\n{log}"
            );
        }
        // in_asm alone prints QEMU's "IN: unit ..." headers; with out_asm
        // the guest and TC code are shown together under "unit ...".
        let unit_headers = log
            .lines()
            .any(|l| l.starts_with("IN: unit 0x") || l.starts_with("unit 0x"));
        let translations = items.contains("in_asm") || items.contains("out_asm");
        assert_eq!(
            unit_headers, translations,
            "-d {items}: translations logged: {unit_headers}\n{log}"
        );
    }
}

// ---------------------------------------------------------------------
// QEMU's spellings and the guest's command line, memory and modules.
// ---------------------------------------------------------------------

/// The end of the memory map's available range that starts at 1 MiB, as
/// the demo guest prints it ("memory:   0x00100000-0x07fdffff ...").
fn upper_memory_end(stdout: &str) -> Option<u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memory:   0x00100000-"))?;
    let end = line
        .strip_prefix("memory:   0x00100000-0x")?
        .split_whitespace()
        .next()?;
    u64::from_str_radix(end, 16).ok()
}

/// `-kernel FILE -append "x=1" -m 64`, typed as for QEMU.
#[test]
fn qemu_spellings_work() {
    let demo = common::guest("demo");
    let demo_arg = demo.display().to_string();
    let run = run_args(&["run", "-kernel", &demo_arg, "-append", "x=1", "-m", "64"]);
    assert_eq!(run.status, Some(0), "{}", run.describe());
    let cmdline = format!("boot:     command line \"{demo_arg} x=1\"");
    assert!(
        run.stdout.contains(&cmdline),
        "expected {cmdline:?}: {}",
        run.describe()
    );
    let end = upper_memory_end(&run.stdout).expect("the demo prints its memory map");
    assert!(
        (63 << 20..64 << 20).contains(&end),
        "-m 64 gave memory up to {end:#x}: {}",
        run.describe()
    );

    // The double-dash spellings mean the same.
    let long = run_args(&["run", "--kernel", &demo_arg, "--append", "x=1", "-m", "64M"]);
    assert_eq!(long.status, Some(0), "{}", long.describe());
    assert_eq!(
        long.stdout, run.stdout,
        "--kernel/--append differ from -kernel/-append"
    );

    if common::qemu().is_some() {
        let (qemu_out, _) = common::run_qemu(&demo, &["-append", "x=1", "-m", "64"]);
        let memory = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("memory:") || l.starts_with("boot:     command"))
                .map(String::from)
                .collect()
        };
        assert_eq!(
            memory(&run.stdout),
            memory(&String::from_utf8_lossy(&qemu_out)),
            "memory map or command line differ from QEMU's"
        );
    }
}

/// Each -m spelling of the same size gives the guest the same memory.
#[test]
fn memory_size_spellings_agree() {
    let mut ends = Vec::new();
    for size in ["48", "48M", "49152K", "48m"] {
        let run = run_args(&["run", "-m", size]);
        assert_eq!(run.status, Some(0), "-m {size}: {}", run.describe());
        ends.push((size, upper_memory_end(&run.stdout)));
    }
    let first = ends[0].1;
    assert!(
        first.is_some_and(|e| (47 << 20..48 << 20).contains(&e)),
        "{ends:?}"
    );
    assert!(ends.iter().all(|(_, e)| *e == first), "{ends:?}");
}

/// `--append` reaches the guest: the compute guest runs the workload it
/// names, and prints what QEMU's run prints.
#[test]
fn append_reaches_the_compute_guest() {
    let run = run_guest("compute", &["--append", "workload=fib n=20"]);
    assert_eq!(run.status, Some(common::GUEST_PASS), "{}", run.describe());
    assert!(
        run.stdout.contains("compute: workload=fib"),
        "{}",
        run.describe()
    );
    // fib(20) = 6765 with fib(0) = 0, fib(1) = 1.
    let (mut a, mut b) = (0u32, 1u32);
    for _ in 0..20 {
        (a, b) = (b, a + b);
    }
    assert!(
        run.stdout.contains(&format!("fib(20) = {a} ")),
        "{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains("sieve("),
        "other workloads ran too: {}",
        run.describe()
    );
    if common::qemu().is_some() {
        let (want, status) =
            common::run_qemu(&common::guest("compute"), &["-append", "workload=fib n=20"]);
        assert_eq!(status, common::GUEST_PASS);
        assert_eq!(
            run.stdout.as_bytes(),
            want.as_slice(),
            "{}",
            common::diff("qemu", &want, "bt86", run.stdout.as_bytes())
        );
    }
}

/// `--initrd` (and QEMU's `-initrd`) pass files as Multiboot modules, in
/// order, each with its path as its string.
#[test]
fn initrd_passes_modules() {
    let dir = scratch_dir("cli_initrd");
    let files = [
        ("one.img", vec![0xAAu8; 5]),
        ("two.img", vec![0x55u8; 4097]),
        ("three.img", Vec::new()),
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|(n, d)| write_file(&dir, n, d).display().to_string())
        .collect();

    let none = run_args(&["run"]);
    assert!(none.stdout.contains("modules:  0\n"), "{}", none.describe());

    let run = run_args(&[
        "run", "--initrd", &paths[0], "-initrd", &paths[1], "--initrd", &paths[2],
    ]);
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert!(
        run.stdout.contains(&format!("modules:  {}\n", files.len())),
        "{}",
        run.describe()
    );
    let modules: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("module:"))
        .collect();
    assert_eq!(modules.len(), files.len(), "{}", run.describe());
    for ((line, (_, data)), path) in modules.iter().zip(&files).zip(&paths) {
        assert!(
            line.contains(&format!(" {} bytes at ", data.len())),
            "{line:?} for {path}"
        );
        assert!(
            line.ends_with(&format!("\"{path}\"")),
            "{line:?} for {path}"
        );
    }
}

// ---------------------------------------------------------------------
// Help.
// ---------------------------------------------------------------------

/// `bt86 run --help` documents every option of `run`, each with a
/// sentence, and names the QEMU spellings it accepts.
#[test]
fn run_help_documents_every_option() {
    let run = run_args(&["run", "--help"]);
    assert_eq!(run.status, Some(0), "{}", run.describe());
    let help = &run.stdout;
    assert!(
        help.contains("Usage: bt86 run [OPTIONS] [KERNEL]"),
        "{help}"
    );
    let options = [
        "[KERNEL]",
        "--kernel <KERNEL>",
        "-m <SIZE>",
        "--append <CMDLINE>",
        "--initrd <FILE>",
        "--disk <FILE[,readonly]>",
        "--timeout <SECONDS>",
        "--stats",
        "--trace",
        "-d <ITEMS>",
        "-D <FILE>",
        "--serial <stdio>",
        "--display <none>",
        "--device <DEVICE>",
        "--no-reboot",
        "--nographic",
        // The gdb stub's options; tests/gdb.rs tests what they do.
        "--gdb [<HOST:PORT>]",
        "-s",
        "-S",
        "--help",
    ];
    for option in options {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(option) || l.contains(&format!(", {option}")))
            .unwrap_or_else(|| panic!("`bt86 run --help` does not list {option}:\n{help}"));
        let description = line.split_once(option).map_or("", |(_, d)| d.trim());
        assert!(
            description.split_whitespace().count() >= 2,
            "{option} has no description in `bt86 run --help`:\n{help}"
        );
    }
    for spelling in [
        "-kernel", "-append", "-initrd", "in_asm", "out_asm", "int", "exec", "124",
    ] {
        assert!(
            help.contains(spelling),
            "`bt86 run --help` does not mention {spelling}:\n{help}"
        );
    }
    // Every option the help lists is one this test knows: a new option
    // needs its own test here.
    for line in help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
    {
        assert!(
            options
                .iter()
                .any(|o| line.starts_with(o) || line.contains(&format!(", {o}"))),
            "`bt86 run --help` lists an option this test does not know: {line:?}"
        );
    }
}

/// `bt86 --help` names the `run` subcommand, and `--version` works.
#[test]
fn top_level_help_and_version() {
    let help = run_args(&["--help"]);
    assert_eq!(help.status, Some(0), "{}", help.describe());
    assert!(
        help.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("run ")),
        "{}",
        help.stdout
    );
    let version = run_args(&["--version"]);
    assert_eq!(version.status, Some(0), "{}", version.describe());
    assert_eq!(
        version.stdout.trim(),
        format!("bt86 {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A QEMU command line pasted as it is means the same under bt86; options
/// bt86 accepts only in the form it implements fail clearly otherwise.
#[test]
fn a_pasted_qemu_command_line_runs() {
    let compute = common::guest("compute");
    let kernel = compute.display().to_string();
    let qemu_line = [
        "run", "-kernel", &kernel, "-serial", "stdio", "-display", "none", "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot", "-append", "workload=fib n=12",
    ];
    let run = run_args(&qemu_line);
    assert_eq!(run.status, Some(33), "{}", run.describe());
    assert!(run.stdout.contains("fib(12) = 144"), "{}", run.describe());

    for (option, value) in [("-serial", "file:out.txt"), ("-display", "gtk"), ("-device", "e1000")] {
        let bad = run_args(&["run", "-kernel", &kernel, option, value]);
        assert_eq!(bad.status, Some(2), "{option} {value}: {}", bad.describe());
        assert_no_panic(&bad);
        let messages = bad.messages();
        assert_eq!(messages.len(), 1, "{}", bad.describe());
        assert!(messages[0].contains(value), "the message names {value:?}: {}", bad.describe());
    }
}

/// Two exceptions QEMU does not model, so the QEMU comparison cannot cover
/// them: a write past an expand-up segment limit (#GP(0)) and an unmasked
/// SSE divide by zero (#XM). bt86 runs the guest's code natively, so it
/// gets them from the host CPU, as hardware does.
#[test]
fn exceptions_qemu_does_not_model_are_raised() {
    let run = run_guest("exceptions", &["--append", "strict=1"]);
    assert_eq!(run.status, Some(33), "{}", run.describe());
    for line in ["write beyond limit 0xfff: #GP(0x0000)", "dword at limit-3 = 1", "sse 1/0: #XM at +0"] {
        assert!(run.stdout.contains(line), "expected {line:?}: {}", run.describe());
    }
}

/// A kernel that turns paging on with page tables where no RAM is (CR3 at
/// the top of the address space, whose reads return what the bus returns
/// for nothing) must end the way a CPU would, with a fault the guest cannot
/// handle, and never crash the monitor: every walk reads the bus, every
/// frame it finds is outside RAM, so every fetch and access is emulated.
#[test]
fn paging_with_page_tables_outside_ram_ends_cleanly() {
    // mov eax, 0xFFFFF000; mov cr3, eax; mov eax, cr0;
    // or eax, 0x80000000; mov cr0, eax; mov eax, [0x1000]; hlt
    let code = [
        0xB8, 0x00, 0xF0, 0xFF, 0xFF, 0x0F, 0x22, 0xD8, 0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22,
        0xC0, 0xA1, 0x00, 0x10, 0x00, 0x00, 0xF4,
    ];
    let dir = scratch_dir("cli_paging_outside_ram");
    let kernel = TinyKernel::new(&code).write(&dir, "paging.elf");
    let run = run_kernel(&kernel, &["--timeout", "10"]);
    assert_no_panic(&run);
    // The loader's IDT is empty: the first fault escalates to a triple
    // fault (status 6); a halt (4) would mean the walk found usable
    // tables after all. Anything else is the monitor failing.
    assert!(matches!(run.status, Some(4) | Some(6)), "{}", run.describe());
}
