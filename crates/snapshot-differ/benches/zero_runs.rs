//! Zero-run detection over a 4 MiB object: the chunked OR scan against a byte-by-byte scan,
//! for an all-zero object (the worst case: every byte is looked at) and for a half-sparse one.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use snapshot_differ::zero::{data_runs, is_zero, ZERO_GRANULARITY};

const OBJECT_SIZE: usize = 4 << 20;

fn naive_runs(buf: &[u8], granularity: usize) -> usize {
    buf.chunks(granularity).filter(|b| !b.iter().all(|&x| x == 0)).count()
}

fn bench(c: &mut Criterion) {
    let zeros = vec![0u8; OBJECT_SIZE];
    // Every other 64 KiB has data (its last byte set: the scan must reach it).
    let mut sparse = vec![0u8; OBJECT_SIZE];
    for (i, b) in sparse.chunks_mut(64 << 10).enumerate() {
        if i % 2 == 0 {
            b.iter_mut().enumerate().for_each(|(j, x)| *x = (j % 251) as u8 | 1);
        }
    }
    let mut g = c.benchmark_group("zero_runs_4MiB");
    g.throughput(Throughput::Bytes(OBJECT_SIZE as u64));
    g.bench_function("is_zero/all_zero", |b| b.iter(|| is_zero(black_box(&zeros))));
    g.bench_function("naive_all/all_zero", |b| b.iter(|| black_box(&zeros).iter().all(|&x| x == 0)));
    g.bench_function("data_runs_4k/all_zero", |b| b.iter(|| data_runs(black_box(&zeros), ZERO_GRANULARITY)));
    g.bench_function("data_runs_4k/half_sparse", |b| {
        b.iter(|| data_runs(black_box(&sparse), ZERO_GRANULARITY))
    });
    g.bench_function("naive_runs_4k/all_zero", |b| {
        b.iter(|| naive_runs(black_box(&zeros), ZERO_GRANULARITY))
    });
    g.bench_function("naive_runs_4k/half_sparse", |b| {
        b.iter(|| naive_runs(black_box(&sparse), ZERO_GRANULARITY))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
