//! The debugger's run control, session and batch mode.
//!
//! - Run control: every way of driving a guest (free run, `step`,
//!   `step_unit`, `resume` with an instruction limit) ends in the same
//!   state; breakpoints stop at the right EIP as often as the guest really
//!   passes there, even where chaining and indirect-branch lookups would
//!   skip the monitor; watchpoints stop after the access, at the next
//!   instruction; events stop at the guest's handler.
//! - The session: bad commands, addresses and ranges give one-line errors
//!   and the session goes on.
//! - Batch mode through the `bt86` binary: the transcript and the exit
//!   status.
//!
//! Single-stepping compared with QEMU's gdb stub is in `tests/step_qemu.rs`.
//!
//! One VM per process: the tests that build a VM take [`VM_LOCK`] first.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use bt86::{Exit, RunConfig, Vm};
use bt86_debug::{Session, Symbols};
use bt86_native::{BreakAddr, RunLimit, Stop, WatchKind};

static VM_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn compute_vm(serial: &common::SharedBuf) -> Vm {
    let config = RunConfig {
        kernel: Some(common::guest("compute")),
        append: "workload=fib n=12".to_string(),
        ..RunConfig::default()
    };
    bt86::build_vm(&config, Box::new(serial.clone())).expect("the VM builds")
}

fn symbols(guest: &str) -> Symbols {
    Symbols::from_elf(&std::fs::read(common::guest(guest)).expect("the guest is built"))
}

fn symbol(guest: &str, name: &str) -> u32 {
    symbols(guest).lookup(name).unwrap_or_else(|| panic!("{guest}.elf has no symbol {name}"))
}

/// The end state of a run: what a debugger must not be able to change.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    exit: Exit,
    serial: String,
    gpr: [u32; 8],
    eflags: u32,
}

#[derive(Clone, Copy, Debug)]
enum Drive {
    Free,
    Step,
    StepUnit,
    Limited(u64),
}

fn drive(how: Drive) -> (Outcome, u64) {
    let serial = common::SharedBuf::default();
    let mut vm = compute_vm(&serial);
    let mut calls = 0u64;
    let exit = loop {
        calls += 1;
        let stop = match how {
            Drive::Free => Stop::Exit(vm.run().expect("the run")),
            Drive::Step => vm.step().expect("a step"),
            Drive::StepUnit => vm.step_unit().expect("a unit"),
            Drive::Limited(n) => vm.resume(RunLimit { max_insns: Some(n), ..RunLimit::default() }).expect("a resume"),
        };
        match stop {
            Stop::Stepped | Stop::Limit => continue,
            Stop::Exit(exit) => break exit,
            other => panic!("{how:?}: unexpected stop {other:?}"),
        }
    };
    let out = String::from_utf8_lossy(&serial.0.lock().unwrap()).into_owned();
    (Outcome { exit, serial: out, gpr: vm.cpu.gpr, eflags: vm.cpu.eflags }, calls)
}

#[test]
fn every_way_of_driving_the_guest_ends_in_the_free_runs_state() {
    let _g = lock();
    let (free, _) = drive(Drive::Free);
    assert_eq!(free.exit, Exit::GuestExit(33));
    assert!(free.serial.contains("fib(12) = 144"), "{}", free.serial);
    let (_, steps) = drive(Drive::Step);
    for (how, min_calls) in [(Drive::Step, 5_000), (Drive::StepUnit, 500), (Drive::Limited(1_000), 5)] {
        let (outcome, calls) = drive(how);
        assert_eq!(outcome, free, "{how:?} ends differently from the free run");
        assert!(calls >= min_calls, "{how:?}: only {calls} calls; the run was not really driven piecewise");
        if let Drive::StepUnit = how {
            assert!(calls < steps, "step_unit ran one instruction at a time ({calls} units for {steps} steps)");
        }
    }
}

#[test]
fn an_instruction_limit_stops_where_stepping_does() {
    let _g = lock();
    for n in [1u64, 7, 100, 2_500] {
        let serial = common::SharedBuf::default();
        let mut vm = compute_vm(&serial);
        let stop = vm.resume(RunLimit { max_insns: Some(n), ..RunLimit::default() }).expect("resume");
        assert_eq!(stop, Stop::Limit, "after {n} instructions");
        let (eip, gpr) = (vm.cpu.eip, vm.cpu.gpr);
        drop(vm);
        let mut vm = compute_vm(&serial);
        for _ in 0..n {
            assert_eq!(vm.step().expect("step"), Stop::Stepped);
        }
        assert_eq!((vm.cpu.eip, vm.cpu.gpr), (eip, gpr), "{n} steps and a limit of {n} end in different places");
    }
}

/// How often EIP reaches `addr` in a whole run, counted by stepping.
fn visits_by_stepping(addr: u32) -> u64 {
    let serial = common::SharedBuf::default();
    let mut vm = compute_vm(&serial);
    let mut visits = 0;
    loop {
        if vm.cpu.eip == addr {
            visits += 1;
        }
        match vm.step().expect("step") {
            Stop::Stepped => {}
            Stop::Exit(_) => return visits,
            other => panic!("unexpected stop {other:?}"),
        }
    }
}

#[test]
fn breakpoints_stop_at_their_eip_every_time_the_guest_passes() {
    let _g = lock();
    let fib = symbol("compute", "fib");
    // The first instruction of a function reached by direct calls (chained
    // exits), an instruction in the middle of a unit, the instruction after
    // a call (reached by `ret` through the inline indirect-branch lookup),
    // and a function entry by physical address.
    let cases = [
        ("fib entry", BreakAddr::Linear(fib)),
        ("jbe inside fib's first unit", BreakAddr::Linear(fib + 0x8)),
        ("return point after call fib", BreakAddr::Linear(fib + 0x19)),
        ("fib entry by physical address", BreakAddr::Physical(fib)),
    ];
    for (what, at) in cases {
        let addr = match at {
            BreakAddr::Linear(a) | BreakAddr::Physical(a) => a,
        };
        let expected = visits_by_stepping(addr);
        assert!(expected > 10, "{what}: the guest passes {addr:#x} only {expected} times");
        let serial = common::SharedBuf::default();
        let mut vm = compute_vm(&serial);
        vm.add_breakpoint(at).expect("breakpoint");
        let mut hits = 0;
        let exit = loop {
            match vm.resume(RunLimit::default()).expect("resume") {
                Stop::Breakpoint { eip } => {
                    assert_eq!(eip, addr, "{what}: stopped at the wrong EIP");
                    assert_eq!(vm.cpu.eip, addr, "{what}: the CPU's EIP is not the breakpoint's");
                    hits += 1;
                }
                Stop::Exit(exit) => break exit,
                other => panic!("{what}: unexpected stop {other:?}"),
            }
        };
        assert_eq!(exit, Exit::GuestExit(33), "{what}");
        assert_eq!(hits, expected, "{what}: breakpoint hits differ from the visits seen by stepping");
        assert!(String::from_utf8_lossy(&serial.0.lock().unwrap()).contains("fib(12) = 144"));
    }
}

#[test]
fn watchpoints_stop_after_the_access_at_the_next_instruction() {
    let _g = lock();
    let fib = symbol("compute", "fib");
    let kernel_fib = symbol("compute", "kernel_fib");
    // (where to stop first, kind, watched address from ESP, the EIP the
    // watchpoint must report: the instruction after the access).
    // fib begins with `push edi`, which writes [esp-4]; kernel_fib begins
    // with `mov eax, [esp+4]`, which reads its argument.
    let cases: [(u32, WatchKind, i32, u32); 3] = [
        (fib, WatchKind::Write, -4, fib + 1),
        (kernel_fib, WatchKind::Read, 4, kernel_fib + 4),
        (kernel_fib, WatchKind::Access, 4, kernel_fib + 4),
    ];
    for (start, kind, offset, want_eip) in cases {
        let serial = common::SharedBuf::default();
        let mut vm = compute_vm(&serial);
        vm.add_breakpoint(BreakAddr::Linear(start)).expect("breakpoint");
        assert_eq!(vm.resume(RunLimit::default()).expect("resume"), Stop::Breakpoint { eip: start });
        vm.remove_breakpoint(BreakAddr::Linear(start));
        let addr = vm.cpu.gpr[4].wrapping_add(offset as u32);
        let edi = vm.cpu.gpr[7];
        vm.add_watchpoint(kind, addr, 4).expect("watchpoint");
        let stop = vm.resume(RunLimit::default()).expect("resume");
        assert_eq!(stop, Stop::Watchpoint { kind, addr, eip: want_eip }, "{kind:?} watch at {addr:#x}");
        assert_eq!(vm.cpu.eip, want_eip);
        if kind == WatchKind::Write {
            let mut word = [0u8; 4];
            vm.read_linear(addr, &mut word).expect("stack is mapped");
            assert_eq!(u32::from_le_bytes(word), edi, "the push completed before the stop");
        }
        // Without the watchpoint, the guest runs to its end as usual.
        assert!(vm.remove_watchpoint(kind, addr, 4));
        assert_eq!(vm.resume(RunLimit::default()).expect("resume"), Stop::Exit(Exit::GuestExit(33)));
        assert!(String::from_utf8_lossy(&serial.0.lock().unwrap()).contains("fib(12) = 144"));
    }
}

/// With paging on, a watched linear page is kept out of the shadow
/// mappings, so every access to it comes back to the monitor. pagetest's
/// `pf_count` is written once by every #PF its handler takes, and four
/// times more when the repair-and-retry cases reset it: a write watch must
/// stop exactly that often, each time right after the write, and leave the
/// guest's output as it is.
#[test]
fn write_watchpoints_with_paging_stop_at_every_write() {
    let _g = lock();
    let pf_count = symbol("pagetest", "pf_count");
    let on_page_fault = symbol("pagetest", "on_page_fault");
    let run = |watch: bool| {
        let serial = common::SharedBuf::default();
        let config = RunConfig { kernel: Some(common::guest("pagetest")), ..RunConfig::default() };
        let mut vm = bt86::build_vm(&config, Box::new(serial.clone())).expect("the VM builds");
        if watch {
            vm.add_watchpoint(WatchKind::Write, pf_count, 4).expect("watchpoint");
        }
        let (mut stops, mut in_handler) = (0u64, 0u64);
        let exit = loop {
            match vm.resume(RunLimit::default()).expect("resume") {
                Stop::Watchpoint { kind, addr, eip } => {
                    assert_eq!((kind, addr, eip), (WatchKind::Write, pf_count, vm.cpu.eip));
                    // The boot code clears .bss before paging is on: that
                    // write is the page-protection path without paging.
                    if vm.cpu.cr0 & 0x8000_0000 != 0 {
                        stops += 1;
                        in_handler += u64::from((on_page_fault..on_page_fault + 0xDE).contains(&eip));
                    }
                }
                Stop::Exit(exit) => break exit,
                other => panic!("unexpected stop {other:?}"),
            }
        };
        let page_faults = vm.stats.exceptions.get("#PF");
        let out = String::from_utf8_lossy(&serial.0.lock().unwrap()).into_owned();
        (exit, out, stops, in_handler, page_faults)
    };
    let (free_exit, free_out, _, _, faults) = run(false);
    let (exit, out, stops, in_handler, watched_faults) = run(true);
    assert_eq!(exit, free_exit);
    assert_eq!(out, free_out, "the watchpoint changed what the guest printed");
    assert_eq!(watched_faults, faults);
    assert!(faults > 10, "pagetest takes many page faults ({faults})");
    assert_eq!(stops, faults + 4, "one stop per write to pf_count with paging on");
    assert_eq!(in_handler, faults, "one stop per #PF inside the handler");
}

/// A step is one guest instruction even when the monitor has work to do
/// first: with paging on, the first touch of a page is a hidden fault,
/// after which the instruction runs again, and that must not count as a
/// step. pagetest's #PF handler begins with straight-line code that reads
/// a variable on a page nothing touched since the last CR3 switch, so
/// each of the first steps into it must move to the next instruction.
#[test]
fn a_step_through_a_hidden_fault_is_still_one_instruction() {
    let _g = lock();
    let on_page_fault = symbol("pagetest", "on_page_fault");
    let config = RunConfig { kernel: Some(common::guest("pagetest")), ..RunConfig::default() };
    let mut vm = bt86::build_vm(&config, Box::new(common::SharedBuf::default())).expect("the VM builds");
    vm.add_breakpoint(BreakAddr::Linear(on_page_fault)).expect("breakpoint");
    let mut hidden_before_steps = 0;
    for hit in 0..6 {
        assert_eq!(vm.resume(RunLimit::default()).expect("resume"), Stop::Breakpoint { eip: on_page_fault }, "hit {hit}");
        for _ in 0..4 {
            let eip = vm.cpu.eip;
            let insn = vm.describe_insn(eip).expect("the handler is mapped");
            let hidden = vm.stats.shadow.hidden_faults;
            assert_eq!(vm.step().expect("a step"), Stop::Stepped);
            assert_eq!(vm.cpu.eip, eip + insn.bytes.len() as u32, "hit {hit}: one step from {eip:#x} (`{}`)", insn.text);
            hidden_before_steps += vm.stats.shadow.hidden_faults - hidden;
        }
    }
    assert!(hidden_before_steps > 0, "no step met a hidden fault; the test no longer tests anything");
}

#[test]
fn step_unit_runs_the_whole_unit() {
    let _g = lock();
    let fib = symbol("compute", "fib");
    let serial = common::SharedBuf::default();
    let mut vm = compute_vm(&serial);
    vm.add_breakpoint(BreakAddr::Linear(fib)).expect("breakpoint");
    assert_eq!(vm.resume(RunLimit::default()).expect("resume"), Stop::Breakpoint { eip: fib });
    vm.remove_breakpoint(BreakAddr::Linear(fib));
    let unit = vm.translation_at(fib).expect("translation");
    // push edi; push esi; mov esi, eax; push ebx; cmp eax, 1; jbe
    assert_eq!(unit.insns.len(), 6, "{unit:#?}");
    assert_eq!(unit.insns[5].tag, "REWRITE");
    let esp = vm.cpu.gpr[4];
    let entries = vm.stats.entries;
    assert_eq!(vm.step_unit().expect("su"), Stop::Stepped);
    // The unit ran natively, as one piece: one world switch into it.
    assert_eq!(vm.stats.entries - entries, 1, "the unit did not run in one trip");
    // Three pushes ran, and EIP left the unit through its jbe: to the taken
    // target or the fall-through.
    assert_eq!(vm.cpu.gpr[4], esp - 12, "the unit's three pushes did not all run");
    assert!([fib + 0x26, fib + 0xa].contains(&vm.cpu.eip), "EIP {:#x} is not an exit of the unit", vm.cpu.eip);
}

#[test]
fn stop_on_events_stops_at_the_guests_handler() {
    let _g = lock();
    let serial = common::SharedBuf::default();
    let config = RunConfig { kernel: Some(common::guest("probe")), ..RunConfig::default() };
    let mut vm = bt86::build_vm(&config, Box::new(serial.clone())).expect("the VM builds");
    vm.set_event_log(true);
    // probe's first exception is the #UD of `syscall`, reflected through
    // its IDT to isr_stub_6.
    let stop = vm.resume(RunLimit { stop_on_events: true, ..RunLimit::default() }).expect("resume");
    let handler = symbol("probe", "isr_stub_6");
    assert_eq!(stop, Stop::Exception { vector: 6, eip: handler });
    assert_eq!(vm.cpu.eip, handler);
    let last = vm.events().last().expect("an event").clone();
    assert_eq!(last.kind, "exception");
    assert!(last.detail.contains("#UD"), "{last:?}");
    // The guest goes on as if nothing had looked.
    let stop = vm.resume(RunLimit::default()).expect("resume");
    assert_eq!(stop, Stop::Exit(Exit::GuestExit(33)));
}

#[test]
fn bad_input_gives_one_line_errors_and_the_session_goes_on() {
    let _g = lock();
    let serial = common::SharedBuf::default();
    let mut session = Session::new(compute_vm(&serial));
    session.set_symbols(symbols("compute"));
    let cases = [
        ("frobnicate", "unknown command"),
        ("b", "usage: b|lb|pb ADDR"),
        ("b nosuchsymbol", "no such symbol"),
        ("b 0x1_0000", "bad address"),
        ("pb 99999999999", "not a number below 2^32"),
        ("x /0wx 0x100000", "bad range"),
        ("x /5000bx 0x100000", "bad range"),
        ("x /4q 0x100000", "usage: x|xp"),
        ("x /4wx 0xfffffffc", "bad range"),
        ("watch w 0xfffffff0 0x100", "bad range"),
        ("watch z 0x1000", "usage: watch"),
        ("d 42", "no breakpoint or watchpoint number 42"),
        ("trace on 0x2000 0x1000", "bad range"),
        ("s 0", "bad range"),
        ("s many", "bad number"),
        ("info nothing", "usage: info"),
        ("page", "usage: page"),
        ("xp /2i 0x100000", "xp cannot disassemble"),
    ];
    for (command, expected) in cases {
        let err = session.execute(command).expect_err(command).to_string();
        assert!(err.contains(expected), "{command:?} gave {err:?}, which does not say {expected:?}");
        assert!(!err.contains('\n'), "{command:?}: the error is not one line: {err:?}");
        // The session goes on: a command still works.
        let regs = session.execute("r").expect("r after an error");
        assert!(regs.starts_with("eax: "), "{regs}");
    }
    // And the guest still runs to its end.
    let out = session.execute("c").expect("c");
    assert!(out.contains("the guest exited with status 33"), "{out}");
    assert!(matches!(session.execute("s"), Err(bt86_debug::CommandError::Finished(_))));
}

#[test]
fn session_commands_show_breakpoints_steps_and_memory() {
    let _g = lock();
    let serial = common::SharedBuf::default();
    let mut session = Session::new(compute_vm(&serial));
    session.set_symbols(symbols("compute"));
    let fib = symbol("compute", "fib");
    assert_eq!(session.execute("b fib").unwrap(), format!("Breakpoint 1 at linear {fib:#010x} <fib>\n"));
    let out = session.execute("c").unwrap();
    assert!(out.starts_with(&format!("Breakpoint 1, {fib:#010x} <fib>\n")), "{out}");
    assert!(out.contains(&format!("[{fib:#010x}] 0008:{fib:08x} <fib>  IDENT    push")), "{out}");
    let out = session.execute("s 2").unwrap();
    assert!(out.contains(&format!("0008:{:08x} <fib+0x2>  IDENT    mov", fib + 2)), "{out}");
    let out = session.execute("x /2i fib").unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().next().unwrap().contains("push"), "{out}");
    let out = session.execute("x /4bx fib").unwrap();
    assert!(out.starts_with(&format!("{fib:#010x} <fib>: 0x57 0x56 0x89 0xc6")), "{out}");
    let out = session.execute("t").unwrap();
    assert!(out.contains("=>"), "the translation marks EIP: {out}");
    assert!(out.contains("REWRITE"), "{out}");
    assert!(session.execute("blist").unwrap().contains("lbreak"));
    assert_eq!(session.execute("d 1").unwrap(), "deleted 1\n");
    let out = session.execute("trace on fib fib+0x30").unwrap();
    assert!(out.contains("tracing"), "{out}");
    let out = session.execute("s 5").unwrap();
    assert_eq!(out.lines().filter(|l| l.starts_with("trace ")).count(), 5, "{out}");
}

/// Runs `bt86 debug --batch` with `script` on standard input.
fn batch(guest: &str, script: &str) -> (String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bt86"))
        .args(["debug", "--batch", "-"])
        .arg(common::guest(guest))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bt86 starts");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().expect("bt86 ends");
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap_or(-1))
}

#[test]
fn batch_mode_echoes_commands_and_exits_with_the_guests_status() {
    let fib = symbol("compute", "fib");
    let (out, status) = batch("compute", "# a comment is not echoed\nb fib\nc\nbogus\nr\nd 1\nc\n");
    assert_eq!(status, 33, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "(bt86) b fib");
    assert_eq!(lines[1], format!("Breakpoint 1 at linear {fib:#010x} <fib>"));
    assert_eq!(lines[2], "(bt86) c");
    assert!(lines.contains(&"error: unknown command \"bogus\"; type `help` for the list"), "{out}");
    assert!(lines.contains(&"(bt86) r"), "{out}");
    assert!(out.contains("fib(24) = 46368"), "the guest's serial output is in the transcript: {out}");
    assert_eq!(lines.last(), Some(&"the guest exited with status 33"), "{out}");
    assert!(!out.contains("a comment"), "{out}");

    // A session that quits before the guest ends exits with 0.
    let (out, status) = batch("compute", "s\nq\ns\n");
    assert_eq!(status, 0, "{out}");
    assert!(!out.contains("(bt86) s\n(bt86) q\n(bt86) s"), "commands after q ran: {out}");
}

#[test]
fn debug_without_batch_needs_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_bt86")).arg("debug").arg(common::guest("compute")).output().expect("bt86 runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs a terminal") && err.contains("--batch"), "{err}");
}
