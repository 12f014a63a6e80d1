//! The terminal UI, without a terminal: screens rendered with ratatui's
//! `TestBackend` and compared as insta snapshots, and keys and commands
//! driven through `App` with their effect read from the view model.
//!
//! The guest is a Multiboot kernel written out byte by byte below, so the
//! screens do not change with the host's compiler. The translation-cache
//! addresses on the screens are those of a fresh VM, the same on every run
//! (the monitor area and the TC's placement are fixed); a change to the
//! translator's code changes them, and the snapshots are then re-blessed
//! with `INSTA_UPDATE=always cargo test -p bt86-debug --test tui` after
//! reading the diff.
//!
//! One VM per process: every test that builds one takes [`VM_LOCK`].

use std::sync::Mutex;

use bt86_cpu::state::gpr;
use bt86_cpu::{Cpu, DescriptorTable, SegReg, Segment};
use bt86_debug::tui::{self, App, Input, Key, SerialCapture, ViewModel};
use bt86_debug::{Session, Symbols};
use bt86_machine::Machine;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

static VM_LOCK: Mutex<()> = Mutex::new(());

/// The size of the screens in the snapshots.
const WIDTH: u16 = 120;
const HEIGHT: u16 = 40;

/// Where the kernel's one loadable segment starts: its ELF header, program
/// header and Multiboot header, then the code.
const LOAD: u32 = 0x0010_0000;
/// The file offset (and offset from [`LOAD`]) of the code.
const CODE_OFFSET: u32 = 0x60;

/// The guest: sums 5 + 3 + 2 + 1 in a loop, writes "A\n" to COM1 and exits
/// through isa-debug-exit with value 0x10 (status 33). Addresses are those
/// of each instruction.
const CODE: &[(u32, &[u8], &str)] = &[
    (0x10_0060, &[0xFA], "cli"),
    (0x10_0061, &[0xBC, 0x00, 0x00, 0x09, 0x00], "mov esp, 0x90000"),
    (0x10_0066, &[0xB8, 0x05, 0x00, 0x00, 0x00], "mov eax, 5"),
    (0x10_006B, &[0xB9, 0x03, 0x00, 0x00, 0x00], "mov ecx, 3"),
    (0x10_0070, &[0x01, 0xC8], "loop: add eax, ecx"),
    (0x10_0072, &[0x49], "dec ecx"),
    (0x10_0073, &[0x75, 0xFB], "jnz loop"),
    (0x10_0075, &[0x66, 0xBA, 0xF8, 0x03], "mov dx, 0x3f8"),
    (0x10_0079, &[0xB0, 0x41], "mov al, 'A'"),
    (0x10_007B, &[0xEE], "out dx, al"),
    (0x10_007C, &[0xB0, 0x0A], "mov al, 10"),
    (0x10_007E, &[0xEE], "out dx, al"),
    (0x10_007F, &[0x66, 0xBA, 0xF4, 0x00], "mov dx, 0xf4"),
    (0x10_0083, &[0xB0, 0x10], "mov al, 0x10"),
    (0x10_0085, &[0xEE], "out dx, al"),
    (0x10_0086, &[0xF4], "hlt"),
];

/// The address of the instruction whose listing text is `text`.
fn at(text: &str) -> u32 {
    CODE.iter().find(|(_, _, t)| *t == text).map(|(a, _, _)| *a).expect("the instruction is in CODE")
}

/// The kernel file: an ELF32 header, one PT_LOAD program header covering
/// the whole file at [`LOAD`] (System V ABI, ELF chapter), a Multiboot
/// header (Multiboot 0.6.96 §3.1: magic, flags, checksum), then the code.
fn kernel() -> Vec<u8> {
    let mut code = Vec::new();
    for (addr, bytes, _) in CODE {
        assert_eq!(LOAD + CODE_OFFSET + code.len() as u32, *addr, "CODE's addresses follow each other");
        code.extend_from_slice(bytes);
    }
    let total = CODE_OFFSET + code.len() as u32;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: executable
    f.extend_from_slice(&3u16.to_le_bytes()); // e_machine: Intel 80386
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(LOAD + CODE_OFFSET).to_le_bytes()); // e_entry
    f.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [52u16, 32, 1, 40, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        f.extend_from_slice(&half.to_le_bytes());
    }
    for word in [1u32, 0, LOAD, LOAD, total, total, 7, 0x1000] {
        // p_type PT_LOAD, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
        // p_flags RWX, p_align
        f.extend_from_slice(&word.to_le_bytes());
    }
    let (magic, flags) = (0x1BAD_B002u32, 0x0000_0003u32);
    for word in [magic, flags, 0u32.wrapping_sub(magic).wrapping_sub(flags)] {
        f.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(f.len() as u32, CODE_OFFSET);
    f.extend_from_slice(&code);
    f
}

/// A session on the kernel, with the CPU as a Multiboot loader leaves it
/// (flat 4 GiB segments, as QEMU's loader sets them up).
fn session(serial: &SerialCapture) -> Session {
    let ram = bt86_native::create_ram(16 << 20, &std::env::temp_dir()).expect("guest RAM can be created");
    let mut machine = Machine::new(ram, Box::new(serial.clone()));
    let boot = bt86_machine::load_multiboot(machine.ram_mut(), &kernel(), "tiny", &[]).expect("the kernel loads");
    let entry = &boot.cpu;
    let mut cpu = Cpu::new();
    cpu.gpr[gpr::EAX] = entry.eax;
    cpu.gpr[gpr::EBX] = entry.ebx;
    cpu.gpr[gpr::ESP] = entry.esp;
    cpu.eip = entry.eip;
    cpu.eflags = entry.eflags;
    cpu.cr0 = entry.cr0;
    for reg in SegReg::ALL {
        let seg = if reg == SegReg::Cs { Segment::flat(entry.cs, 0xC09B) } else { Segment::flat(entry.data_selector, 0xC093) };
        cpu.set_segment(reg, seg);
    }
    cpu.gdtr = DescriptorTable { base: entry.gdtr_base, limit: entry.gdtr_limit };
    cpu.idtr = DescriptorTable { base: entry.idtr_base, limit: entry.idtr_limit };
    let vm = bt86_native::Vm::new(machine, cpu).expect("the VM builds");
    Session::new(vm)
}

/// The screen a view model draws, as text: one line per row.
fn screen(view: &ViewModel) -> String {
    let mut terminal = Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("a test terminal");
    terminal.draw(|frame| tui::render(frame, view)).expect("the screen draws");
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..HEIGHT {
        let line: String = (0..WIDTH).map(|x| buffer[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

const SCREEN: Rect = Rect { x: 0, y: 0, width: WIDTH, height: HEIGHT };

fn key(app: &mut App, k: Key) {
    app.handle(Input::Key(k), SCREEN);
}

fn type_line(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, Key::Char(c));
    }
    key(app, Key::Enter);
}

/// A `continue` runs to its stop in slices, as the UI runs it.
fn run_to_stop(app: &mut App) {
    assert!(app.is_running(), "a continue was started");
    app.run_to_stop(tui::SLICE, 500);
    assert!(!app.is_running(), "the continue stopped within 500 slices");
}

#[test]
fn main_layout_after_loading() {
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SerialCapture::new();
    let mut session = session(&serial);
    let mut app = App::new(&mut session, Symbols::default(), Some(serial), "tiny.elf");
    let view = app.view();
    assert_eq!(view.registers.eip, at("cli"), "the CPU starts at the kernel's entry");
    assert_eq!(view.code.lines[view.code.eip_index].tag, "CALLOUT", "cli is a callout");
    insta::assert_snapshot!("main_layout", screen(&view));
}

#[test]
fn help_screen() {
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SerialCapture::new();
    let mut session = session(&serial);
    let mut app = App::new(&mut session, Symbols::default(), Some(serial), "tiny.elf");
    key(&mut app, Key::F(1));
    let view = app.view();
    assert!(view.help.is_some(), "F1 opens the help screen");
    insta::assert_snapshot!("help", screen(&view));
    // Any key closes it; typing `help` opens it again.
    key(&mut app, Key::Esc);
    assert!(app.view().help.is_none(), "Esc closes the help screen");
    type_line(&mut app, "help");
    assert!(app.view().help.is_some(), "`help` opens the help screen");
}

/// Stopped before `mov dx, 0x3f8`: the unit at EIP ends with `out dx, al`,
/// a callout to the virtual UART, and the loop's `jnz` before it has
/// chained its taken exit.
#[test]
fn tagged_translation() {
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SerialCapture::new();
    let mut session = session(&serial);
    let mut app = App::new(&mut session, Symbols::default(), Some(serial), "tiny.elf");
    // The UI draws a screen before each key; the code panel then keeps
    // its start, so the instructions before EIP stay in view.
    let _ = app.view();
    type_line(&mut app, &format!("b {:#x}", at("mov dx, 0x3f8")));
    key(&mut app, Key::F(5));
    run_to_stop(&mut app);
    let view = app.view();
    assert_eq!(view.registers.eip, at("mov dx, 0x3f8"));
    let tags: Vec<(u32, &str)> = view
        .unit
        .rows
        .iter()
        .filter_map(|r| match r {
            tui::UnitRow::Guest { eip, tag, .. } => Some((*eip, *tag)),
            _ => None,
        })
        .collect();
    assert_eq!(tags, [(at("mov dx, 0x3f8"), "IDENT"), (at("mov al, 'A'"), "IDENT"), (at("out dx, al"), "CALLOUT")]);
    insta::assert_snapshot!("tagged_translation", screen(&view));
}

/// Keys and commands change the view model as they should: F7 steps one
/// instruction, `b ADDR` sets a breakpoint the code panel marks, F5 runs to
/// it, Up brings a command back, Enter alone repeats the last one, and a
/// continue to the guest's end reports its status and refuses to step.
#[test]
fn keys_step_break_and_continue() {
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SerialCapture::new();
    let mut session = session(&serial);
    let mut app = App::new(&mut session, Symbols::default(), Some(serial), "tiny.elf");

    key(&mut app, Key::F(7));
    let view = app.view();
    assert_eq!(view.registers.eip, at("mov esp, 0x90000"), "F7 stepped over cli");
    assert!(!view.vcpu.virtual_if, "cli cleared the virtual IF");
    assert_eq!(view.output.first().map(String::as_str), Some("(bt86) s"), "F7 runs the session's `s`");

    // `s` Enter, then Enter alone: two more instructions.
    type_line(&mut app, "s");
    key(&mut app, Key::Enter);
    let view = app.view();
    assert_eq!(view.registers.eip, at("mov ecx, 3"));
    assert_eq!(view.registers.gpr[gpr::EAX], 5);
    assert_eq!(view.registers.gpr[gpr::ESP], 0x90000);

    let target = at("mov dx, 0x3f8");
    type_line(&mut app, &format!("b {target:#x}"));
    let view = app.view();
    let marked: Vec<u32> = view.code.lines.iter().filter(|l| l.breakpoint).map(|l| l.addr).collect();
    assert_eq!(marked, [target], "the code panel marks the breakpoint");

    key(&mut app, Key::F(5));
    assert!(app.view().running, "F5 starts a continue");
    run_to_stop(&mut app);
    let view = app.view();
    assert_eq!(view.registers.eip, target, "the continue stopped at the breakpoint");
    assert_eq!(view.registers.gpr[gpr::EAX], 5 + 3 + 2 + 1, "the loop ran to its end");
    assert!(view.status.contains("breakpoint"), "status: {}", view.status);
    assert!(view.events.total > 0, "the loop's exits are in the event log");
    assert!(view.serial.is_empty(), "nothing was written to COM1 yet");

    // History: Up gives the last command back, Down the line being typed.
    type_line(&mut app, "x /4bx 0x100060");
    assert_eq!(app.view().memory.source, tui::MemorySource::Linear(0x10_0060), "x points the memory panel");
    assert_eq!(app.view().memory.rows[0].1.as_ref().ok().map(|r| r[0]), Some(0xFA), "the memory panel shows cli's byte");
    key(&mut app, Key::Char('r'));
    key(&mut app, Key::Up);
    assert_eq!(app.view().command, "x /4bx 0x100060");
    key(&mut app, Key::Up);
    assert_eq!(app.view().command, format!("b {target:#x}"));
    key(&mut app, Key::Down);
    key(&mut app, Key::Down);
    assert_eq!(app.view().command, "r", "Down past the newest entry gives back what was typed");
    key(&mut app, Key::Ctrl('u'));

    // A bad command is one line of error, and the session goes on.
    type_line(&mut app, "frobnicate");
    let view = app.view();
    assert!(view.output.iter().any(|l| l.starts_with("error: unknown command")), "{:?}", view.output);

    type_line(&mut app, "c");
    run_to_stop(&mut app);
    let view = app.view();
    assert_eq!(view.serial, ["A"], "the guest's COM1 output is in the serial panel");
    assert!(view.status.contains("exited with status 33"), "status: {}", view.status);
    assert_eq!(app.finished(), Some(bt86_native::Exit::GuestExit(33)));
    key(&mut app, Key::F(7));
    let view = app.view();
    assert!(view.output.iter().any(|l| l.contains("the guest has stopped")), "{:?}", view.output);

    key(&mut app, Key::F(10));
    assert!(app.quit_requested(), "F10 quits");
}

/// A continue can be interrupted between slices, and the mouse wheel
/// scrolls the panel under the pointer.
#[test]
fn interrupt_and_wheel() {
    let _lock = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SerialCapture::new();
    let mut session = session(&serial);
    let mut app = App::new(&mut session, Symbols::default(), Some(serial), "tiny.elf");
    key(&mut app, Key::F(5));
    key(&mut app, Key::Ctrl('c'));
    assert!(!app.is_running(), "Ctrl-C stopped the continue before it ran");
    assert!(app.view().status.contains("interrupted"));

    let areas = tui::areas(SCREEN);
    let before = app.view().memory.start;
    let wheel = |app: &mut App, area: Rect, up: bool| app.handle(Input::Wheel { up, column: area.x + 1, row: area.y + 1 }, SCREEN);
    wheel(&mut app, areas.memory, false);
    assert_eq!(app.view().memory.start, before + 3 * 16, "the wheel scrolled memory three rows down");
    wheel(&mut app, areas.code, false);
    assert_eq!(app.view().scroll.code, 3, "the wheel scrolled the code panel");
    wheel(&mut app, areas.events, true);
    assert_eq!(app.view().scroll.events, 3, "the wheel went back in the event log");
    key(&mut app, Key::Ctrl('l'));
    assert_eq!(app.view().scroll, tui::Scroll::default(), "Ctrl-L puts every panel back");
}
