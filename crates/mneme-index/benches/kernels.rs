//! Criterion micro-benchmarks of the inner loops: f32 and int8 dot products at 384
//! dimensions, and exact top-10 scans of 10k vectors (f32, and int8 + f32 rescore).
//!
//! `cargo bench -p mneme-index --bench kernels`

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use criterion::{Criterion, criterion_group, criterion_main};
use mneme_index::FlatIndex;
use mneme_index::distance::{dot, dot_i8, dot_i8_portable, quantize};
use mneme_index::synthetic::clustered;

fn kernels(c: &mut Criterion) {
    let (data, queries) = clustered(7, 10_000, 10, 384);
    let (a, b) = (&data[..384], &data[384..768]);
    c.bench_function("dot f32 384", |bench| {
        bench.iter(|| dot(std::hint::black_box(a), std::hint::black_box(b)))
    });
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    quantize(a, &mut qa);
    quantize(b, &mut qb);
    c.bench_function("dot i8 384", |bench| {
        bench.iter(|| dot_i8(std::hint::black_box(&qa), std::hint::black_box(&qb)))
    });
    c.bench_function("dot i8 384, portable kernel", |bench| {
        bench.iter(|| dot_i8_portable(std::hint::black_box(&qa), std::hint::black_box(&qb)))
    });
    let mut flat = FlatIndex::new(384);
    for (i, v) in data.chunks_exact(384).enumerate() {
        flat.insert(i as u64, v).unwrap();
    }
    let q = &queries[..384];
    c.bench_function("exact top-10 of 10k, f32 scan", |bench| {
        bench.iter(|| flat.search_f32(q, 10, &|_| true))
    });
    c.bench_function("exact top-10 of 10k, int8 scan + f32 rescore", |bench| {
        bench.iter(|| flat.search(q, 10, &|_| true))
    });
}

criterion_group!(benches, kernels);
criterion_main!(benches);
