//! What the debugger costs when it has nothing to do.
//!
//! Issue 5 asks that a guest run under the debugger with no breakpoint
//! and no watchpoint goes as fast as a plain run: every hook the run
//! control adds to the monitor's loop is then a test of an empty set or a
//! false flag, and `Vm::resume` is the ordinary run loop. This module
//! checks that claim on the compute guest's `fib` kernel, whose calls and
//! returns make it the workload that leans hardest on chained branches and
//! indirect-branch lookups, the paths a breakpoint check would slow down.
//!
//! Each repetition builds two fresh VMs, one after the other (a process
//! holds one VM at a time), runs one with `Vm::run` and the other with
//! `Vm::resume` and the event log off, as `bt86 debug` and the gdb stub
//! drive a guest on `continue`, and times only the run. The medians are
//! compared.

use std::time::{Duration, Instant};

use bt86_native::{RunLimit, Stop};

use super::{external, median, BenchError, BenchOptions, Measurement, COMPUTE_GUEST};
use crate::{Exit, RunConfig};

/// The workload: about 30 million calls and returns.
const APPEND: &str = "workload=fib n=36";

/// The status the compute guest exits with when it ran to its end.
const PASS_STATUS: i32 = 33;

/// How a run is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drive {
    Run,
    Resume,
}

/// Times one run of the workload, driven as `how` says.
fn time_run(image: &std::path::Path, how: Drive) -> Result<Duration, BenchError> {
    let config = RunConfig { kernel: Some(image.to_path_buf()), append: APPEND.to_string(), ..RunConfig::default() };
    let mut vm = crate::build_vm(&config, Box::new(std::io::sink()))?;
    vm.set_deadline(Instant::now() + external::RUN_LIMIT);
    let t0 = Instant::now();
    let exit = match how {
        Drive::Run => vm.run()?,
        Drive::Resume => match vm.resume(RunLimit::default())? {
            Stop::Exit(exit) => exit,
            other => {
                return Err(BenchError::External {
                    what: format!("the compute guest ({APPEND}) under Vm::resume"),
                    problem: format!("stopped with {other:?} although no breakpoint or watchpoint was set"),
                })
            }
        },
    };
    let time = t0.elapsed();
    if exit != Exit::GuestExit(PASS_STATUS) {
        return Err(BenchError::External {
            what: format!("the compute guest ({APPEND}) under {how:?}"),
            problem: format!("ended with {exit:?} instead of exit status {PASS_STATUS}"),
        });
    }
    Ok(time)
}

/// The row: `fib` resumed by the debugger against the same run by `run`.
pub fn measure_debugger_overhead(options: &BenchOptions) -> Result<Measurement, BenchError> {
    let image = external::TempImage::new("compute-debugger", COMPUTE_GUEST)?;
    let (mut plain, mut debugged) = (Vec::new(), Vec::new());
    // Interleaved, so that a slow spell of the shared machine hits both,
    // and in alternating order, so that neither always runs first.
    for rep in 0..options.repeats.max(3) * 2 {
        let order = if rep % 2 == 0 { [Drive::Run, Drive::Resume] } else { [Drive::Resume, Drive::Run] };
        for how in order {
            let time = time_run(image.path(), how)?;
            match how {
                Drive::Run => plain.push(time),
                Drive::Resume => debugged.push(time),
            }
        }
    }
    Ok(Measurement {
        name: "compute fib under the debugger, no breakpoints".to_string(),
        bt86: median(&debugged).unwrap_or_default(),
        reference: median(&plain).unwrap_or_default(),
        reference_name: "bt86 run",
        limit: 1.1,
        target: "no measurable cost (<= 1.1x)",
        note: format!(
            "`{APPEND}` (about 30 million calls and returns) driven by Vm::resume, as `bt86 debug` and the gdb stub continue, against Vm::run; medians of {} runs each, interleaved in alternating order",
            options.repeats.max(3) * 2
        ),
    })
}
