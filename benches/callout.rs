//! Criterion bench: one callout against one bare world-switch round trip.
//!
//! `callout` times iterations of a guest loop whose `out 0x80, al` exits
//! to the monitor every time (bt86-cpu executes the `out`, the run loop
//! finds the next unit and re-enters). `world-switch` times the round trip
//! alone: into 32-bit code and straight back through the direct-return
//! exit stub. The target: a callout costs at most twice the bare
//! round trip.

use std::time::{Duration, Instant};

use bt86::bench::BenchVm;
use criterion::{criterion_group, criterion_main, Criterion};

fn callout(c: &mut Criterion) {
    let mut bench = BenchVm::new().unwrap_or_else(|e| panic!("cannot build the benchmark VM: {e}"));
    let mut group = c.benchmark_group("round-trip");
    group.bench_function("world-switch", |b| {
        b.iter_custom(|iters| {
            let count = u32::try_from(iters).unwrap_or(u32::MAX);
            bench.world_switches(count).unwrap_or_else(|e| panic!("{e}"))
        })
    });
    group.bench_function("callout", |b| {
        b.iter_custom(|iters| {
            let count = u32::try_from(iters).unwrap_or(u32::MAX);
            let t0 = Instant::now();
            bench.run_callouts(count).unwrap_or_else(|e| panic!("{e}"));
            t0.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = callout
}
criterion_main!(benches);
