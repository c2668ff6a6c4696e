//! In-process recall latency of the embedded engine, without gRPC: loads `N` memories of
//! 384-d clustered vectors (the load benchmark's generator) into one agent, waits for the
//! graph, then times `Engine::recall` (top 10) from one thread. Comparing it with
//! `cargo bench --bench load` separates the engine's cost from the server path's.
//!
//! `cargo run --release -p mneme-engine --example recall_latency -- [N] [queries]`

#![allow(clippy::print_stdout, reason = "an example program prints")]

use std::time::Instant;

use hdrhistogram::Histogram;
use mneme_engine::{Engine, EngineConfig, RecallQuery, RememberInput};
use mneme_index::synthetic::clustered;

const DIM: usize = 384;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let queries: usize = args.next().map_or(Ok(5_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), EngineConfig::default())?;
    let (data, qs) = clustered(42, n, 1_000, DIM);
    let t0 = Instant::now();
    for (b, chunk) in data.chunks(1_000 * DIM).enumerate() {
        let items = chunk
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| RememberInput {
                content: format!("memory {}", b * 1_000 + i),
                vector: Some(v.to_vec()),
                ..Default::default()
            })
            .collect();
        engine.remember_batch("bench", items)?;
    }
    println!("loaded {n} in {:.1} s", t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    engine.settle_indexes();
    while engine.stats("bench")?.index_lag > 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("settled in {:.1} s", t1.elapsed().as_secs_f64());
    if let Some(pause) = std::env::var("PAUSE").ok().and_then(|s| s.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_secs(pause));
    }
    let mut h = Histogram::<u64>::new(3)?;
    let t2 = Instant::now();
    for i in 0..queries {
        let q = &qs[(i % 1_000) * DIM..(i % 1_000 + 1) * DIM];
        let t = Instant::now();
        let out = engine.recall(
            "bench",
            &RecallQuery {
                vector: Some(q.to_vec()),
                top_k: 10,
                ..Default::default()
            },
        )?;
        h.record(t.elapsed().as_nanos() as u64)?;
        assert_eq!(out.len(), 10);
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    println!(
        "engine recall top 10 at {n}: p50 {:.3} ms, p99 {:.3} ms, {:.0} calls/s",
        ms(0.5),
        ms(0.99),
        queries as f64 / t2.elapsed().as_secs_f64()
    );
    Ok(())
}
