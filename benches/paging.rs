//! Criterion bench: one hidden fault against one bare host SIGSEGV round
//! trip.
//!
//! `hidden-fault` runs the pagebench guest in process (`mode=hidden`):
//! reads of pages that the guest's page tables map but the host does not
//! yet, each a fault the guest never sees, resolved by walking the guest's
//! tables and mapping a run of pages with one `mmap`. A sample is
//! `(T(N) - T(0)) / (hidden faults(N) - hidden faults(0))` from a run with
//! N = `HIDDEN_READS` reads and one without, times the sample's iteration
//! count.
//! `host-sigsegv` is the floor under it: a read of a `PROT_NONE` page, a
//! handler that `mprotect`s it and returns, and `mprotect` back. The
//! issue's target: a hidden fault costs at most three host round trips.
//! The rows that compare with QEMU need whole QEMU processes and are made
//! by `bt86 bench` only.

use std::time::Duration;

use bt86::bench::paging::{PageBench, HIDDEN_READS};
use criterion::{criterion_group, criterion_main, Criterion};

fn paging(c: &mut Criterion) {
    let bench = PageBench::new().unwrap_or_else(|e| panic!("cannot write the pagebench guest: {e}"));
    let mut group = c.benchmark_group("paging");
    group.bench_function("hidden-fault", |b| {
        b.iter_custom(|iters| {
            let (one, faults) = bench.hidden_fault_cost(HIDDEN_READS).unwrap_or_else(|e| panic!("{e}"));
            assert!(faults > 0, "the hidden-fault run took no hidden faults");
            one * u32::try_from(iters).unwrap_or(u32::MAX)
        })
    });
    group.bench_function("host-sigsegv", |b| {
        b.iter_custom(|iters| {
            let count = u32::try_from(iters).unwrap_or(u32::MAX);
            bt86_native::measure_host::host_fault_round_trip(count).unwrap_or_else(|e| panic!("{e}")) * count
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = paging
}
criterion_main!(benches);
