//! Criterion bench: system call round trips from ring 3 under bt86.
//!
//! `int80` times iterations of a ring-3 loop of `int 0x80` through a DPL-3
//! trap gate whose ring-0 handler is a bare `iret`; `sysenter` the same
//! loop with `sysenter` and a handler that is a bare `sysexit`; `host`
//! the host's own `getppid()` for scale. The target: at most
//! 1.5 us per round trip under bt86, against about 0.24 us for a host
//! system call. The comparisons with QEMU and the timer latency need
//! whole QEMU processes and are made by `bt86 bench` only.

use std::time::{Duration, Instant};

use bt86::bench::{BenchVm, SystemCall};
use criterion::{criterion_group, criterion_main, Criterion};

fn syscall(c: &mut Criterion) {
    let mut bench = BenchVm::new().unwrap_or_else(|e| panic!("cannot build the benchmark VM: {e}"));
    let mut group = c.benchmark_group("syscall");
    for (name, call) in [("int80", SystemCall::Int80), ("sysenter", SystemCall::Sysenter)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let count = u32::try_from(iters).unwrap_or(u32::MAX);
                let t0 = Instant::now();
                bench.run_system_calls(call, count).unwrap_or_else(|e| panic!("{e}"));
                t0.elapsed()
            })
        });
    }
    group.bench_function("host", |b| {
        b.iter_custom(|iters| bt86_native::measure_host::host_syscall_round_trip(u32::try_from(iters).unwrap_or(u32::MAX)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = syscall
}
criterion_main!(benches);
