//! Storage benchmark: durable appends from concurrent writers, recovery and replay of a large
//! WAL, and writing and reading back a large snapshot. Prints numbers; asserts nothing about
//! speed.
//!
//! `cargo bench -p mneme-storage --bench storage` (set `MNEME_BENCH_DIR` to choose the disk,
//! `MNEME_BENCH_WAL_GIB` to size the recovery run, default 1).

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mneme_storage::{Options, Store};

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
                while start.elapsed() < duration {
                    let t0 = Instant::now();
                    store.commit(value.clone(), |_| ()).unwrap();
                    hist.record(t0.elapsed().as_micros() as u64).unwrap();
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

fn recovery_and_snapshots(wal_gib: u64) {
    let dir = bench_dir();
    let opts = Options {
        wal_segment_bytes_max: 256 * 1024 * 1024,
        ..Options::default()
    };
    let n_records = wal_gib * 1024 * 1024 * 1024 / (RECORD_BYTES as u64 * 1000 + 24);
    let t0 = Instant::now();
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let value = vec![0xabu8; RECORD_BYTES * 1000];
        for _ in 0..n_records {
            store.commit(value.clone(), |_| ()).unwrap();
        }
        let stats = store.stats();
        println!(
            "durable appends of 1000 KiB entries: {:.0} MiB/s; WAL {:.2} GiB",
            stats.wal_bytes as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64(),
            stats.wal_bytes as f64 / (1u64 << 30) as f64
        );
    }
    let t0 = Instant::now();
    let store = Store::open(dir.path(), opts).unwrap();
    let opened = t0.elapsed().as_secs_f64();
    let mut bytes = 0u64;
    store
        .replay(&mut |e| {
            bytes += e.payload.len() as u64;
            Ok(())
        })
        .unwrap();
    println!(
        "recovery of a {wal_gib} GiB WAL: open (validate, truncate) {opened:.2} s, then replay {:.2} s ({:.2} GiB of entries)",
        t0.elapsed().as_secs_f64() - opened,
        bytes as f64 / (1u64 << 30) as f64
    );
    let t0 = Instant::now();
    let chunk = vec![0x5au8; 1 << 20];
    let mut writer = store
        .begin_snapshot(b"bench", store.stats().last_lsn)
        .unwrap();
    for _ in 0..(wal_gib * 1024) {
        std::io::Write::write_all(&mut writer, &chunk).unwrap();
    }
    let snapshot = writer.finish().unwrap();
    let written = t0.elapsed().as_secs_f64();
    store
        .install(vec![snapshot.clone()], snapshot.lsn + 1)
        .unwrap();
    println!(
        "snapshot of {wal_gib} GiB: written and synced in {written:.2} s, installed (WAL retired) in {:.2} s",
        t0.elapsed().as_secs_f64() - written
    );
    let t0 = Instant::now();
    let map = store.read_snapshot(&snapshot).unwrap();
    println!(
        "snapshot mapped and checksummed: {:.2} s ({:.2} GiB/s)",
        t0.elapsed().as_secs_f64(),
        map.bytes().len() as f64 / (1u64 << 30) as f64 / t0.elapsed().as_secs_f64()
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
        recovery_and_snapshots(wal_gib);
    }
}
