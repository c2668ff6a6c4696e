//! Storage benchmark: durable appends from concurrent writers, recovery of a large WAL, and
//! read throughput through the maps. Prints numbers; asserts nothing about speed.
//!
//! `cargo bench -p mneme-storage --bench storage` (set `MNEME_BENCH_DIR` to choose the disk,
//! `MNEME_BENCH_WAL_GIB` to size the recovery run, default 1).

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mneme_storage::{Options, Store, WriteBatch};
use rand::{Rng, SeedableRng};

const RECORD_BYTES: usize = 1024;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("MNEME_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn durable_appends(writers: usize, duration: Duration) {
    let dir = bench_dir();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let value = vec![t as u8; RECORD_BYTES];
                let mut i = 0u64;
                while start.elapsed() < duration {
                    let mut batch = WriteBatch::new();
                    batch
                        .put(format!("w{t}/{i:012}").into_bytes(), value.clone())
                        .unwrap();
                    let t0 = Instant::now();
                    store.commit(batch).unwrap();
                    hist.record(t0.elapsed().as_micros() as u64).unwrap();
                    i += 1;
                }
                hist
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for t in threads {
        hist.add(t.join().unwrap()).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "durable appends, {writers} writers, 1 KiB records: {:.0} acked/s; ack latency p50 {} µs, p99 {} µs, max {} µs ({} records)",
        hist.len() as f64 / secs,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
        hist.len()
    );
}

fn recovery_and_reads(wal_gib: u64) {
    let dir = bench_dir();
    let opts = Options {
        checkpoint_bytes: usize::MAX,
        wal_segment_bytes_max: 256 * 1024 * 1024,
        background_maintenance: false,
        ..Options::default()
    };
    let n_records = wal_gib * 1024 * 1024 * 1024 / (RECORD_BYTES as u64 + 40);
    let t0 = Instant::now();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let value = vec![0xabu8; RECORD_BYTES];
        let mut i = 0;
        while i < n_records {
            let mut batch = WriteBatch::new();
            for _ in 0..1000.min(n_records - i) {
                batch
                    .put(format!("k{i:012}").into_bytes(), value.clone())
                    .unwrap();
                i += 1;
            }
            store.commit(batch).unwrap();
        }
        let stats = store.stats();
        println!(
            "batched durable appends (1000 × 1 KiB per commit): {:.0} records/s; WAL {:.2} GiB",
            n_records as f64 / t0.elapsed().as_secs_f64(),
            stats.wal_bytes as f64 / (1u64 << 30) as f64
        );
    }
    let t0 = Instant::now();
    let store = Store::open(dir.path(), opts).unwrap();
    println!(
        "recovery of a {wal_gib} GiB WAL ({n_records} records): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    store.checkpoint().unwrap();
    println!(
        "checkpoint of it into the append log: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    drop(store);
    let t0 = Instant::now();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    println!(
        "reopen with everything in the append log: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let reads = 1_000_000u64;
    let t0 = Instant::now();
    let mut checksum = 0u64;
    for _ in 0..reads {
        let i = rng.random_range(0..n_records);
        let value = store.get(format!("k{i:012}").as_bytes()).unwrap();
        checksum = checksum.wrapping_add(value.iter().map(|b| u64::from(*b)).sum::<u64>());
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "random point reads through the maps: {:.0} reads/s, {:.2} GiB/s of values (checksum {checksum})",
        reads as f64 / secs,
        reads as f64 * RECORD_BYTES as f64 / secs / (1u64 << 30) as f64
    );
}

fn main() {
    let wal_gib = std::env::var("MNEME_BENCH_WAL_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    durable_appends(1, Duration::from_secs(3));
    durable_appends(8, Duration::from_secs(5));
    durable_appends(64, Duration::from_secs(5));
    if wal_gib > 0 {
        recovery_and_reads(wal_gib);
    }
}
