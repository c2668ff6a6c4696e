//! Load generator: the real `mneme` binary on 127.0.0.1 driven over gRPC by concurrent
//! clients. It loads memories (384-d vectors from the reproducible clustered generator, so
//! recall@10 can be checked against exact ground truth), then runs a timed mix of Recall,
//! InjectContext, Remember and RememberBatch, and reports throughput and p50/p95/p99/max
//! from full histograms, recall@10, server RSS, bytes on disk and restart time. Results are
//! also written as JSON to `target/bench-results/load.json`.
//!
//! `cargo bench --bench load` — `MNEME_LOAD_MEMORIES` (default 10,000),
//! `MNEME_LOAD_CLIENTS` (default 8), `MNEME_LOAD_SECONDS` (default 10).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly and prints"
)]

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mneme_index::synthetic::{SplitMix64, clustered};
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tonic::transport::Channel;

#[path = "common/server.rs"]
mod server;

const DIM: usize = 384;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn start(dir: &std::path::Path) -> (Child, String, Duration) {
    server::spawn(dir, &[])
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

type Histograms = Arc<Mutex<BTreeMap<&'static str, Histogram<u64>>>>;

fn record(h: &Histograms, op: &'static str, elapsed: Duration) {
    h.lock()
        .unwrap()
        .entry(op)
        .or_insert_with(|| Histogram::new(3).unwrap())
        .record(elapsed.as_micros().max(1) as u64)
        .unwrap();
}

async fn client_loop(
    mut c: MemoryServiceClient<Channel>,
    seed: u64,
    deadline: Instant,
    queries: Arc<Vec<f32>>,
    h: Histograms,
) {
    let mut rng = SplitMix64::new(seed);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let roll = rng.next_u64() % 100;
        let q = (rng.next_u64() as usize % (queries.len() / DIM)) * DIM;
        let vector = queries[q..q + DIM].to_vec();
        let t = Instant::now();
        let op = match roll {
            0..70 => {
                let r = pb::RecallRequest {
                    agent_id: "load".into(),
                    vector,
                    top_k: 10,
                    ..Default::default()
                };
                c.recall(r).await.unwrap();
                "Recall"
            }
            70..80 => {
                let r = pb::InjectContextRequest {
                    agent_id: "load".into(),
                    vector,
                    top_k: 10,
                    max_tokens: 500,
                    ..Default::default()
                };
                c.inject_context(r).await.unwrap();
                "InjectContext"
            }
            80..95 => {
                n += 1;
                let r = pb::RememberRequest {
                    agent_id: "load".into(),
                    content: format!("load {seed} {n}"),
                    vector,
                    ..Default::default()
                };
                c.remember(r).await.unwrap();
                "Remember"
            }
            _ => {
                let items = (0..100)
                    .map(|i| {
                        n += 1;
                        let mut v = vector.clone();
                        v[i % DIM] += 0.01;
                        pb::RememberRequest {
                            content: format!("batch {seed} {n}"),
                            vector: v,
                            ..Default::default()
                        }
                    })
                    .collect();
                c.remember_batch(pb::RememberBatchRequest {
                    agent_id: "load".into(),
                    items,
                })
                .await
                .unwrap();
                "RememberBatch(100)"
            }
        };
        record(&h, op, t.elapsed());
    }
}

#[tokio::main]
async fn main() {
    let n = env_usize("MNEME_LOAD_MEMORIES", 10_000);
    let clients = env_usize("MNEME_LOAD_CLIENTS", 8);
    let seconds = env_usize("MNEME_LOAD_SECONDS", 10);
    let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        load1
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, start_time) = start(dir.path());
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = MemoryServiceClient::new(channel.clone());

    let (data, queries) = clustered(42, n, 1_000, DIM);
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for (b, chunk) in data.chunks(1_000 * DIM).enumerate() {
        let items = chunk
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| pb::RememberRequest {
                content: format!("memory {}", b * 1_000 + i),
                vector: v.to_vec(),
                ..Default::default()
            })
            .collect();
        let out = c
            .remember_batch(pb::RememberBatchRequest {
                agent_id: "load".into(),
                items,
            })
            .await
            .unwrap();
        ids.extend(
            out.into_inner()
                .results
                .into_iter()
                .map(|r| r.memory.unwrap().id),
        );
    }
    let load_secs = t0.elapsed().as_secs_f64();
    println!(
        "loaded {n} × {DIM} in {load_secs:.1} s ({:.0} memories/s, batches of 1,000, durable)",
        n as f64 / load_secs
    );

    // recall@10 of the similarity order against exact ground truth (before any new writes).
    let mut recall_sum = 0.0;
    let n_checks = 200.min(queries.len() / DIM);
    for q in queries.chunks_exact(DIM).take(n_checks) {
        let mut exact: Vec<(f32, usize)> = data
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<&String> = exact[..10].iter().map(|(_, i)| &ids[*i]).collect();
        let r = c
            .recall(pb::RecallRequest {
                agent_id: "load".into(),
                vector: q.to_vec(),
                top_k: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut hits: Vec<(f32, String)> = r
            .into_inner()
            .memories
            .into_iter()
            .map(|h| (h.similarity, h.memory.unwrap().id))
            .collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0));
        recall_sum += hits
            .iter()
            .take(10)
            .filter(|(_, id)| truth.contains(id))
            .count() as f64
            / 10.0;
    }
    let recall_at_10 = recall_sum / n_checks as f64;

    let histograms: Histograms = Arc::default();
    let queries = Arc::new(queries);
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(client_loop(
                MemoryServiceClient::new(channel.clone()),
                i as u64 + 1,
                deadline,
                Arc::clone(&queries),
                Arc::clone(&histograms),
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let rss = rss_mib(child.id());
    let disk = dir_bytes(dir.path());
    println!(
        "\n{clients} clients for {seconds} s (70 % Recall, 10 % InjectContext, 15 % Remember, 5 % RememberBatch of 100); recall@10 {recall_at_10:.4}"
    );
    println!("| op | calls/s | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let mut json_ops = Vec::new();
    for (op, h) in histograms.lock().unwrap().iter() {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {op} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |",
            h.len() as f64 / elapsed,
            ms(0.5),
            ms(0.95),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
        json_ops.push(format!(
            "{{\"op\":\"{op}\",\"calls_per_s\":{:.1},\"p50_ms\":{:.4},\"p95_ms\":{:.4},\"p99_ms\":{:.4},\"max_ms\":{:.4}}}",
            h.len() as f64 / elapsed, ms(0.5), ms(0.95), ms(0.99), h.max() as f64 / 1000.0
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, _, restart) = start(dir.path());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "\nserver RSS {rss:.0} MiB; {:.1} MiB on disk; cold start {:.2} s; restart after SIGKILL to serving {:.2} s",
        disk as f64 / 1048576.0,
        start_time.as_secs_f64(),
        restart.as_secs_f64()
    );
    let json = format!(
        "{{\"memories\":{n},\"dim\":{DIM},\"clients\":{clients},\"seconds\":{seconds},\"load_memories_per_s\":{:.1},\"recall_at_10\":{recall_at_10:.4},\"server_rss_mib\":{rss:.1},\"disk_bytes\":{disk},\"restart_s\":{:.3},\"loadavg\":\"{}\",\"ops\":[{}]}}\n",
        n as f64 / load_secs,
        restart.as_secs_f64(),
        load1.trim(),
        json_ops.join(",")
    );
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("load.json"), json).unwrap();
}
