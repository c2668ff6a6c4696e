//! End-to-end text recall over gRPC with each embedder: starts the real `mneme` binary on
//! 127.0.0.1, stores real sentences (`shared/data/minilm-manpages`, or generated text when
//! absent) as text, then times `Recall` calls with text queries from one client.
//!
//! `cargo bench --bench grpc_recall` — `MNEME_BENCH_EMBEDDERS` (default `hash,static`;
//! add `minilm` with `--features minilm` and `MNEME_MINILM_DIR`), `MNEME_BENCH_MEMORIES`
//! (default 2,000), `MNEME_BENCH_QUERIES` (default 500), `MNEME_BENCH_QUERY_WORDS` (keep the
//! first N words of each query sentence: a question-length query; default all, ~40 tokens).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly and prints"
)]

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;

#[path = "common/server.rs"]
mod server;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn sentences(n: usize) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/minilm-manpages/sentences.txt"
    );
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .skip(1_000)
            .take(n)
            .map(str::to_owned)
            .collect(),
        Err(_) => (0..n)
            .map(|i| {
                format!(
                    "generated memory {i} about topic {} and detail {}",
                    i % 97,
                    i % 13
                )
            })
            .collect(),
    }
}

fn queries(n: usize, words: usize) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/minilm-manpages/sentences.txt"
    );
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .take(n)
            .map(|line| {
                line.split_whitespace()
                    .take(words)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
        Err(_) => (0..n)
            .map(|i| format!("what about topic {}?", i % 97))
            .collect(),
    }
}

async fn run(embedder: &str, memories: &[String], queries: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--embedder".to_owned(), embedder.to_owned()];
    if embedder == "minilm" {
        args.extend([
            "--model-dir".to_owned(),
            std::env::var("MNEME_MINILM_DIR").expect("MNEME_MINILM_DIR"),
        ]);
    }
    let (mut child, url, _) = server::spawn(dir.path(), &args);
    let mut client = MemoryServiceClient::connect(url).await.unwrap();
    let t0 = Instant::now();
    for chunk in memories.chunks(100) {
        let items = chunk
            .iter()
            .map(|c| pb::RememberRequest {
                content: c.clone(),
                ..Default::default()
            })
            .collect();
        client
            .remember_batch(pb::RememberBatchRequest {
                agent_id: "bench".into(),
                request_id: String::new(),
                items,
            })
            .await
            .unwrap();
    }
    let load = t0.elapsed();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    for q in queries {
        let t = Instant::now();
        let out = client
            .recall(pb::RecallRequest {
                agent_id: "bench".into(),
                query: q.clone(),
                top_k: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        hist.record(t.elapsed().as_micros() as u64).unwrap();
        assert!(!out.into_inner().memories.is_empty());
    }
    println!(
        "| {embedder} | {} | {:.0} memories/s | {:.3} | {:.3} | {:.3} |",
        memories.len(),
        memories.len() as f64 / load.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::main]
async fn main() {
    let memories = sentences(env_usize("MNEME_BENCH_MEMORIES", 2_000));
    let queries = queries(
        env_usize("MNEME_BENCH_QUERIES", 500),
        env_usize("MNEME_BENCH_QUERY_WORDS", usize::MAX),
    );
    println!(
        "machine: {} cores; one client, sequential calls",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| embedder | memories | load (RememberBatch of 100 texts) | Recall p50 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|");
    let which = std::env::var("MNEME_BENCH_EMBEDDERS").unwrap_or_else(|_| "hash,static".into());
    for embedder in which.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        run(embedder, &memories, &queries).await;
    }
}
