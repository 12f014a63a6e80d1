//! Criterion bench: translation throughput in guest instructions per
//! second.
//!
//! Every function of every built-in guest is translated, unit after unit,
//! into a plain buffer (bt86-translate's `BufferMemory`); nothing runs.
//! Criterion reports elements per second, where an element is one guest
//! instruction; the target is 5 million per second. The
//! `decode-only` line is iced-x86's decoder alone on the same code: the
//! floor under any translator built on it.

use std::time::{Duration, Instant};

use bt86::bench::{decode_all, translate_all, GuestCode};
use bt86_translate::{BufferMemory, TranslationCache};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn translate(c: &mut Criterion) {
    let guests = GuestCode::builtin().unwrap_or_else(|e| panic!("{e}"));
    let mut mem = BufferMemory::new();
    let insns = translate_all(&guests, &mut TranslationCache::new(&mut mem), &mut mem);
    let mut group = c.benchmark_group("translate");
    group.throughput(Throughput::Elements(insns));
    group.bench_function("all-guests", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // An empty cache for every pass, made before the clock
                // starts, as when a guest boots.
                let mut tc = TranslationCache::new(&mut mem);
                let t0 = Instant::now();
                std::hint::black_box(translate_all(&guests, &mut tc, &mut mem));
                total += t0.elapsed();
            }
            total
        })
    });
    group.throughput(Throughput::Elements(decode_all(&guests)));
    group.bench_function("decode-only", |b| b.iter(|| decode_all(std::hint::black_box(&guests))));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = translate
}
criterion_main!(benches);
