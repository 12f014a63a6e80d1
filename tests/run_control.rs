//! Run control: stepping a guest one instruction at a time must give
//! exactly what a free run gives — the same serial output, the same exit
//! status and the same final registers. Stepping translates every
//! instruction into a unit of its own that is never chained, so this also
//! checks that single-instruction units, their exits and the world switch
//! keep all guest state between any two instructions.

mod common;

use bt86::{Exit, RunConfig};


struct Outcome {
    exit: Exit,
    serial: Vec<u8>,
    gpr: [u32; 8],
    eflags: u32,
    steps: u64,
}

fn run(stepwise: bool) -> Outcome {
    let config = RunConfig {
        kernel: Some(common::guest("compute")),
        append: "workload=fib n=12".to_string(),
        ..RunConfig::default()
    };
    let serial = common::SharedBuf::default();
    let mut vm = bt86::build_vm(&config, Box::new(serial.clone())).expect("the VM builds");
    let mut steps = 0;
    let exit = if stepwise {
        loop {
            steps += 1;
            match vm.step_instruction().expect("a step") {
                Exit::StepLimit => continue,
                other => break other,
            }
        }
    } else {
        vm.run().expect("the run")
    };
    let out = serial.0.lock().unwrap().clone();
    Outcome { exit, serial: out, gpr: vm.cpu.gpr, eflags: vm.cpu.eflags, steps }
}

#[test]
fn stepping_gives_the_same_result_as_running() {
    let free = run(false);
    let stepped = run(true);
    assert_eq!(free.exit, Exit::GuestExit(33), "the free run ends as the guest asks");
    assert_eq!(stepped.exit, free.exit);
    assert_eq!(String::from_utf8_lossy(&stepped.serial), String::from_utf8_lossy(&free.serial));
    assert!(String::from_utf8_lossy(&free.serial).contains("fib(12) = 144"));
    assert_eq!(stepped.gpr, free.gpr, "general-purpose registers at the exit");
    assert_eq!(stepped.eflags, free.eflags, "EFLAGS at the exit");
    // Thousands of instructions, one step each: the stepping really
    // happened one instruction at a time.
    assert!(stepped.steps > 5_000, "only {} steps", stepped.steps);
}
