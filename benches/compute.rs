//! Criterion bench: the compute kernels of `guests/kernels.c`, translated
//! against native.
//!
//! Each kernel is called by symbol in the compute guest, natively in
//! compatibility mode (`native/NAME`) and through the translator
//! (`bt86/NAME`). Compare the two lines of each kernel in criterion's
//! report: the targets are at least 0.9x native speed for the
//! loop kernels and less than 4x native time for the call-heavy fib. This
//! bench owns only the measuring; the calls are `bt86::bench::BenchVm`'s,
//! shared with `bt86 bench`.

use std::time::Duration;

use bt86::bench::{BenchVm, Kernel};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Sizes that make one call take about a millisecond natively: long
/// enough that entering and leaving the guest is noise, short enough for
/// criterion to take its samples in a few seconds.
fn size(kernel: Kernel) -> u32 {
    match kernel {
        Kernel::Sieve => 200_000,
        Kernel::Crc32 => 400_000,
        Kernel::Matmul => 96,
        Kernel::Loop => 1_000_000,
        Kernel::Fib => 25,
    }
}

fn compute(c: &mut Criterion) {
    let mut bench = BenchVm::new().unwrap_or_else(|e| panic!("cannot build the benchmark VM: {e}"));
    let mut group = c.benchmark_group("compute");
    for kernel in Kernel::ALL {
        let n = size(kernel);
        // A direct call discards the translations, so each kernel's native
        // line runs first and the translated line warms its cache up in
        // criterion's warm-up phase.
        let want = bench.call_native(kernel, n).unwrap_or_else(|e| panic!("{e}"));
        group.bench_with_input(BenchmarkId::new("native", kernel.name()), &n, |b, &n| {
            b.iter(|| bench.call_native(kernel, n).unwrap_or_else(|e| panic!("{e}")))
        });
        group.bench_with_input(BenchmarkId::new("bt86", kernel.name()), &n, |b, &n| {
            b.iter(|| {
                let got = bench.call_translated(kernel, n).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got, want, "{}({n}): translated and native results differ", kernel.name());
                got
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = compute
}
criterion_main!(benches);
