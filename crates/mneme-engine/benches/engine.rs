//! Engine benchmark, in process: durable remember throughput (single, concurrent, batched;
//! client vectors and text through the built-in embedder), recall latency at 10k and at a
//! large size in one agent, and with many small agents. Prints numbers; asserts nothing.
//!
//! `cargo bench -p mneme-engine --bench engine` — `MNEME_BENCH_BIG` sets the large agent's
//! size (default 1,000,000), `MNEME_BENCH_AGENTS` the many-agents count (default 1,000 of
//! 1,000 memories), `MNEME_BENCH_DIR` the disk.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly and prints"
)]

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use mneme_engine::{Engine, EngineConfig, IndexConfig, RecallQuery, RememberInput};
use mneme_index::synthetic::{SplitMix64, clustered};

const DIM: usize = 384;

fn dir() -> tempfile::TempDir {
    match std::env::var("MNEME_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms, p99 {:.3} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    )
}

fn config() -> EngineConfig {
    EngineConfig {
        background: false,
        index: IndexConfig {
            // Benchmarks measure the exact path for one agent; graph numbers are the index's.
            graph_min_vectors: usize::MAX,
            ..IndexConfig::default()
        },
        ..EngineConfig::default()
    }
}

fn item(v: &[f32], i: usize) -> RememberInput {
    RememberInput {
        content: format!("memory number {i}"),
        vector: Some(v.to_vec()),
        ..Default::default()
    }
}

fn remember_rates() {
    let d = dir();
    let engine = Arc::new(Engine::open(d.path(), config()).unwrap());
    let (data, _) = clustered(1, 24_000, 0, DIM);
    let vectors: Vec<&[f32]> = data.chunks_exact(DIM).collect();

    let mut h = Histogram::<u64>::new(3).unwrap();
    let t0 = Instant::now();
    for (i, v) in vectors[..2_000].iter().enumerate() {
        let s = Instant::now();
        engine.remember("single", item(v, i)).unwrap();
        h.record(s.elapsed().as_micros() as u64).unwrap();
    }
    println!(
        "remember, 1 thread, durable (fsync per call): {:.0}/s; {}",
        2_000.0 / t0.elapsed().as_secs_f64(),
        pct(&h)
    );

    for (label, agents) in [("8 threads, 8 agents", 8usize), ("8 threads, 1 agent", 1)] {
        let t0 = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let engine = Arc::clone(&engine);
                let chunk: Vec<Vec<f32>> = vectors[2_000 + t * 1_000..3_000 + t * 1_000]
                    .iter()
                    .map(|v| v.to_vec())
                    .collect();
                std::thread::spawn(move || {
                    let agent = format!("conc-{}-{}", agents, t % agents);
                    for (i, v) in chunk.iter().enumerate() {
                        engine.remember(&agent, item(v, t * 100_000 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        println!(
            "remember, {label}, durable: {:.0}/s",
            8_000.0 / t0.elapsed().as_secs_f64()
        );
    }

    let t0 = Instant::now();
    for (b, chunk) in vectors[10_000..20_000].chunks(1_000).enumerate() {
        let items = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| item(v, b * 1_000 + i))
            .collect();
        engine.remember_batch("batched", items).unwrap();
    }
    println!(
        "remember_batch (1,000 per call), durable: {:.0} memories/s",
        10_000.0 / t0.elapsed().as_secs_f64()
    );

    let texts: Vec<String> = (0..2_000)
        .map(|i| {
            format!(
                "the user mentioned topic {i} during onboarding call {}",
                i % 37
            )
        })
        .collect();
    let t0 = Instant::now();
    for chunk in texts.chunks(500) {
        let items = chunk
            .iter()
            .map(|t| RememberInput {
                content: t.clone(),
                ..Default::default()
            })
            .collect();
        engine.remember_batch("text", items).unwrap();
    }
    println!(
        "remember_batch of text with the built-in static embedder (500 per call): {:.0} memories/s",
        2_000.0 / t0.elapsed().as_secs_f64()
    );
}

fn recall_latency(engine: &Engine, agents: &[String], queries: &[f32], label: &str) {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut rng = SplitMix64::new(9);
    for q in queries.chunks_exact(DIM) {
        let agent = &agents[(rng.next_u64() % agents.len() as u64) as usize];
        let query = RecallQuery {
            vector: Some(q.to_vec()),
            top_k: 10,
            ..Default::default()
        };
        let s = Instant::now();
        let hits = engine.recall(agent, &query).unwrap();
        h.record(s.elapsed().as_micros() as u64).unwrap();
        assert!(!hits.is_empty());
    }
    println!("recall top-10 (window 80, re-ranked), {label}: {}", pct(&h));
}

fn one_agent(n: usize) {
    let d = dir();
    let engine = Engine::open(d.path(), config()).unwrap();
    let (data, queries) = clustered(2, n, 1_000, DIM);
    let rss0 = rss_mib();
    let t0 = Instant::now();
    for (b, chunk) in data.chunks(1_000 * DIM).enumerate() {
        let items = chunk
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| item(v, b * 1_000 + i))
            .collect();
        engine.remember_batch("big", items).unwrap();
    }
    println!(
        "\none agent, {n} memories × {DIM}: loaded at {:.0}/s (batched, durable); RSS +{:.0} MiB",
        n as f64 / t0.elapsed().as_secs_f64(),
        rss_mib() - rss0
    );
    recall_latency(
        &engine,
        &["big".to_owned()],
        &queries,
        &format!("{n} in one agent, exact int8 scan"),
    );
    // A crash: nothing was checkpointed, the whole log is replayed.
    drop(engine);
    let t0 = Instant::now();
    let engine = Engine::open(d.path(), config()).unwrap();
    println!(
        "restart after a crash with no checkpoint (replay {n} memories from the log): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    // A clean stop checkpoints: the restart loads the agent's snapshot and replays nothing.
    let t0 = Instant::now();
    engine.close().unwrap();
    println!(
        "close (checkpoint: snapshot of {n} memories): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let rss0 = rss_mib();
    let t0 = Instant::now();
    let engine = Engine::open(d.path(), config()).unwrap();
    println!(
        "restart after a clean stop (load the snapshot of {n} memories): {:.2} s; RSS +{:.0} MiB",
        t0.elapsed().as_secs_f64(),
        rss_mib() - rss0
    );
    drop(engine);
}

fn many_agents(n_agents: usize, per_agent: usize) {
    let d = dir();
    let engine = Engine::open(d.path(), config()).unwrap();
    let (data, queries) = clustered(3, per_agent * 10, 1_000, DIM);
    let rss0 = rss_mib();
    let t0 = Instant::now();
    let agents: Vec<String> = (0..n_agents).map(|a| format!("agent-{a}")).collect();
    for (a, agent) in agents.iter().enumerate() {
        let start = (a % 10) * per_agent * DIM;
        let items = data[start..start + per_agent * DIM]
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| item(v, a * per_agent + i))
            .collect();
        engine.remember_batch(agent, items).unwrap();
    }
    println!(
        "\n{n_agents} agents × {per_agent} memories: loaded at {:.0}/s; RSS +{:.0} MiB",
        (n_agents * per_agent) as f64 / t0.elapsed().as_secs_f64(),
        rss_mib() - rss0
    );
    recall_latency(
        &engine,
        &agents,
        &queries,
        &format!("random agent of {n_agents} × {per_agent}"),
    );
}

fn main() {
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    remember_rates();
    one_agent(10_000);
    let big = env_usize("MNEME_BENCH_BIG", 1_000_000);
    if big > 10_000 {
        one_agent(big);
    }
    many_agents(env_usize("MNEME_BENCH_AGENTS", 1_000), 1_000);
}
