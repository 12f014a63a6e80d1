//! Differential tests for protection and interrupts: bt86 against QEMU on
//! the guests that run user code at ring 3 and take hardware interrupts.
//!
//! - `rings`: privilege transitions (int 0x80 through a DPL-3 gate, #GP
//!   through DPL-0 gates, privileged instructions at CPL 3, popf, IRET
//!   nulling data segment registers, the I/O permission bitmap, IOPL 3,
//!   sysenter/sysexit, segment loads at CPL 3, an IRQ at CPL 3, call gates).
//! - `timer`: the 8259A PICs, the 8254 PIT and the CMOS RTC.
//! - `multitask`: three ring-3 tasks preempted by the timer.
//! - `spin`: timer interrupts reaching a guest spinning without hlt.
//!
//! Each guest prints deterministic text to COM1 and exits through
//! isa-debug-exit; bt86 must print the same bytes and exit with the same
//! status as QEMU. The `qemu_*` test checks the reference half alone, line
//! by line where the Intel SDM fixes the answer, so that a broken guest is
//! told apart from a broken monitor. Every test is skipped, with a
//! message, when qemu-system-i386 is not installed.
//!
//! The timer guests wait for real time (`spin` for five seconds), so these
//! tests take a few seconds each under both machines.

mod common;

use common::{compare_with_qemu, guest, qemu, run_qemu, GUEST_PASS};

#[test]
fn rings_matches_qemu() {
    compare_with_qemu("rings", &[], &[]);
}

#[test]
fn rings_without_call_gates_matches_qemu() {
    compare_with_qemu("rings", &["-append", "callgate=0"], &["-append", "callgate=0"]);
}

#[test]
fn timer_matches_qemu() {
    compare_with_qemu("timer", &[], &[]);
}

#[test]
fn multitask_matches_qemu() {
    compare_with_qemu("multitask", &[], &[]);
}

#[test]
fn spin_matches_qemu() {
    compare_with_qemu("spin", &[], &[]);
}

/// The lines each guest must print under QEMU, in this order (others may
/// come between them). Each is what the Intel SDM or the device's data
/// sheet says the machine does, so a guest that tests the wrong thing
/// fails here before it is ever compared with bt86.
const REFERENCE: &[(&str, &[&str], &[&str])] = &[
    (
        "rings",
        &[],
        &[
            // Vol. 3A 6.12.1: the ring-0 stack comes from TSS.SS0:ESP0 and
            // gets SS, ESP, EFLAGS, CS, EIP of ring 3 (20 bytes).
            "int 0x80: handler ran with CS=0x0008 SS=0x0010 (SS0 of the TSS)\n",
            "int 0x80: frame CS=0x001b SS=0x0023 EFLAGS & (IF|IOPL) = 0x00000202\n",
            "int 0x80: frame ESP is the ring-3 ESP: yes; pushed EIP lies at ESP0-20\n",
            // Vol. 3A 6.12.1.1: gate DPL < CPL gives #GP(vector*8+2).
            "int 0x81 (DPL-0 gate): #GP(0x040a) at +0\n",
            "int3 (DPL-0 gate): #GP(0x001a) at +0\n",
            "int 0x82 (DPL-3 gate, not present): #NP(0x0412) at +0\n",
            "cli: #GP(0x0000) at +0\n",
            "hlt: #GP(0x0000) at +0\n",
            "mov cr0, eax: #GP(0x0000) at +0\n",
            "lgdt: #GP(0x0000) at +0\n",
            "in al, 0x71 (IOPL 0, no bitmap): #GP(0x0000) at +0\n",
            "out 0x80, al (IOPL 0, no bitmap): #GP(0x0000) at +0\n",
            // Vol. 2B POPF: IF and IOPL unchanged at CPL 3 with IOPL 0.
            "popf 0x00003003 with EFLAGS 0x00000202: read back 0x00000203\n",
            "popf 0x00003203 with EFLAGS 0x00000002: read back 0x00000003\n",
            // Vol. 2A IRET: DPL-0 data selectors are nulled, a DPL-3 one
            // and a conforming code segment are kept.
            "DS=0x0000 ES=0x0000 FS=0x0020 GS=0x0030\n",
            // Vol. 1 19.5.2: the I/O permission bitmap.
            "out/in 0x3ff (allowed): no fault\n  read back 0x5a\n",
            "in 0x3fe (neighbour, denied): #GP(0x0000) at +0\n",
            "in ax, 0x3ff (0x400 is in the 0xff end byte): #GP(0x0000) at +0\n",
            "IOPL 3: EFLAGS & (IF|IOPL) = 0x00003202\ncli: no fault\n",
            "popf 0x00000002 at IOPL 3: read back 0x00003002\n",
            "in 0x3fe: no fault\n",
            // Vol. 2B SYSENTER/SYSEXIT.
            "sysenter: handler ran 1 time(s) with CS=0x0008 SS=0x0010 IF=0, ESP = SYSENTER_ESP: yes, \
             ECX = user ESP: yes\n",
            "sysexit: back at CPL 3 with CS=0x001b SS=0x0023, ESP restored: yes, IF=0\n",
            // Vol. 2A MOV: segment loads at CPL 3.
            "mov ds, 0x0010 (DPL 0 data): #GP(0x0010) at +0\n",
            "mov ds, 0x003b (not present): #NP(0x0038) at +0\n",
            "mov ss, 0x003b (not present): #SS(0x0038) at +0\n",
            "mov ss, 0x0020 (RPL 0 != CPL): #GP(0x0020) at +0\n",
            "IRQ 0 taken at CPL 3: frame CS=0x001b SS=0x0023, ESP the ring-3 ESP and EIP at ESP0-20\n",
            // Vol. 3A 5.8.5: a call gate to ring 0 and back.
            "call far 0x43:0 (call gate, DPL 3): no fault\n",
            "parameter 0xc0ffee, SS=0x0023, ESP the caller's: yes\n",
            "lret 4: back at CPL 3, parameter released: yes\n",
            "call far 0x4b:0 (call gate, DPL 0): #GP(0x0048) at +0\n",
            "rings: done\n",
        ],
    ),
    (
        "rings",
        &["-append", "callgate=0"],
        &["-- call gates: skipped (callgate=0)\nrings: done\n"],
    ),
    (
        "timer",
        &[],
        &[
            "sti; hlt: 10 ticks, no wakeup without one: yes\n",
            "read-back status of channel 0 (bits 5-0): 0x34\n",
            "IRQ 0 masked for 50 ms with IF=1: 0 ticks\n  IRR bit 0 (a request waits): 1\n",
            "  unmasked: the waiting tick arrives at once: yes\n",
            "handler without EOI for 25 ms: ISR=0x0001, IRR bit 0=1\n",
            "maximum nesting depth: 1\n",
            "after specific EOI 0x60: ISR=0x0000\noutside any handler: ISR=0x0000\n",
            "CMOS: register A=0x26 B=0x02 D=0x80\n",
            "RTC: 8 periodic interrupts on IRQ 8, no wakeup without one: yes, register A=0x2a\n",
            "RTC: register C in the handler had IRQF=1 PF=1\n",
            "spinning without hlt: 20 ticks arrived\n",
            "timer: done\n",
        ],
    ),
    (
        "multitask",
        &[],
        &[
            "task A step 1: ",
            "task B step 1: 303 primes below 2000 (sysenter)\n",
            "task C step 1: ",
            "task A step 2: ",
            "task B step 2: ",
            "task C step 2: ",
            "task A step 3: ",
            "task B step 3: ",
            "task C step 3: executing cli at CPL 3\ntask C killed: #GP(0x0000) at entry+",
            "task A step 4: ",
            "task B step 4: 1007 primes below 8000 (sysenter)\n",
            "task A: done\ntask B: done\n",
            "writes through int 0x80: 8, through sysenter: 5\n",
            "kernel: timer ticks > 0: yes, preemptions > 0: yes\n",
            "multitask: done\n",
        ],
    ),
    (
        "spin",
        &[],
        &["tick 100\ntick 200\ntick 300\ntick 400\ntick 500\nspin: done\n"],
    ),
];

/// Each guest under QEMU alone: it exits with the pass status, prints the
/// reference lines in order, and takes no exception it did not expect.
/// These pass without a working monitor.
#[test]
fn qemu_prints_the_reference_lines() {
    if qemu().is_none() {
        return;
    }
    for &(name, args, lines) in REFERENCE {
        let (out, status) = run_qemu(&guest(name), args);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            status, GUEST_PASS,
            "{name} {args:?} under QEMU exited with {status}; output:\n{text}"
        );
        assert!(
            !text.contains("unexpected exception") && !text.contains("exception in the kernel"),
            "{name} {args:?} under QEMU took an unexpected exception:\n{text}"
        );
        let mut rest: &str = &text;
        for line in lines {
            match rest.find(line) {
                Some(at) => rest = &rest[at + line.len()..],
                None => panic!(
                    "{name} {args:?} under QEMU did not print {line:?} (after the lines \
                     before it in the table); output:\n{text}"
                ),
            }
        }
    }
}
