//! Memory-mapped I/O end to end: the `mmio` guest against QEMU.
//!
//! The guest drives the memory window of QEMU's `pc-testdev` (64 KiB of
//! plain storage at physical 0xFF00_0000) with mov, movzx/movsx, the
//! arithmetic and logic instructions with memory operands, xchg and the
//! string instructions, and prints what it reads back. QEMU runs it with
//! `-device pc-testdev`; bt86 gets the same device from
//! `Machine::add_pc_testdev`. Under bt86 every one of those accesses faults
//! in the host (nothing is mapped at a device page), and the monitor
//! emulates the instruction against the machine's MMIO bus. The two must
//! print identical bytes and exit with the same status.
//!
//! Every test is skipped, with a message, when qemu-system-i386 is not
//! installed.

mod common;

use std::time::{Duration, Instant};

use common::{diff, guest, qemu, run_bt86, run_qemu, SharedBuf, GUEST_PASS};

/// The QEMU option that adds the device the guest needs.
const QEMU_TESTDEV: &[&str] = &["-device", "pc-testdev"];

/// The reference run: the guest under QEMU with the test device. Fails
/// unless the guest reached its end.
fn reference() -> Vec<u8> {
    let (out, status) = run_qemu(&guest("mmio"), QEMU_TESTDEV);
    assert_eq!(
        status,
        GUEST_PASS,
        "the reference run failed: mmio under QEMU exited with {status}; its output was:\n{}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// Without the device the window is unassigned memory, which reads 0: the
/// guest's output must then differ, or it would not be testing the device.
#[test]
fn qemu_runs_the_mmio_guest_and_it_needs_the_device() {
    if qemu().is_none() {
        return;
    }
    let with = reference();
    let text = String::from_utf8_lossy(&with);
    assert!(text.ends_with("mmio: done\n"), "{text}");
    assert!(
        text.contains("movl 0x11223344 -> +0x10: 11223344\n"),
        "{text}"
    );

    let (without, status) = run_qemu(&guest("mmio"), &[]);
    assert_eq!(status, GUEST_PASS);
    let text = String::from_utf8_lossy(&without);
    assert!(
        text.contains("movl 0x11223344 -> +0x10: 00000000\n"),
        "{text}"
    );
}


/// bt86 in this process, with the device added to the machine directly,
/// against QEMU. This is the only test in this file that builds a VM in
/// process: a VM owns the process's low 4 GiB.
#[test]
fn mmio_matches_qemu() {
    if qemu().is_none() {
        return;
    }
    let want = reference();

    let out = SharedBuf::default();
    let config = bt86::RunConfig {
        kernel: Some(guest("mmio")),
        ..Default::default()
    };
    let mut vm = bt86::build_vm(&config, Box::new(out.clone())).expect("build the VM");
    vm.machine
        .add_pc_testdev()
        .expect("the test device fits above 128 MiB of RAM");
    vm.set_deadline(Instant::now() + Duration::from_secs(60));
    let exit = vm.run().expect("run the VM");
    let (status, message) = bt86::describe_exit(&exit);
    let got = out.0.lock().unwrap().clone();
    if got != want || status != GUEST_PASS {
        panic!(
            "guest mmio: bt86 differs from QEMU (exit status: QEMU {GUEST_PASS}, bt86 {status}{})\n{}",
            message.map(|m| format!(": {m}")).unwrap_or_default(),
            diff("qemu", &want, "bt86", &got)
        );
    }
    assert!(
        vm.stats.emulated_accesses > 100,
        "the device accesses were emulated after host faults ({} emulated)",
        vm.stats.emulated_accesses
    );
}

/// The same through the command line, with the QEMU option as QEMU spells
/// it.
#[test]
fn mmio_matches_qemu_through_the_cli() {
    if qemu().is_none() {
        return;
    }
    let want = reference();
    let (got, status) = run_bt86(&guest("mmio"), QEMU_TESTDEV);
    if got != want || status != GUEST_PASS {
        panic!(
            "guest mmio: bt86 differs from QEMU (exit status: QEMU {GUEST_PASS}, bt86 {status})\n{}",
            diff("qemu", &want, "bt86", &got)
        );
    }
}
