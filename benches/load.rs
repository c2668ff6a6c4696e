//! Load generator: the real `mneme` binary on 127.0.0.1 driven over gRPC.
//!
//! It loads memories (384-d vectors from the reproducible clustered generator) into one
//! agent or spread over many, waits until the graph index has absorbed them, checks
//! recall@10 against exact ground truth, times single-client Recall, then runs timed mixes
//! of Recall, InjectContext, Remember and RememberBatch with each requested number of
//! concurrent clients. It reports throughput and p50/p95/p99/max from full histograms,
//! server RSS, bytes on disk, and restart times (after SIGKILL, and after SIGTERM, which
//! saves graph snapshots), and writes everything as JSON.
//!
//! `cargo bench --bench load`, configured by environment:
//! - `MNEME_LOAD_MEMORIES` (default 10,000) and `MNEME_LOAD_AGENTS` (default 1): the
//!   memories are spread evenly over that many agents;
//! - `MNEME_LOAD_CLIENTS` (default `8`): a comma-separated list of client counts;
//! - `MNEME_LOAD_SECONDS` (default 10) per client count;
//! - `MNEME_LOAD_MIX`: `mixed` (default: 70 % Recall, 10 % InjectContext, 15 % Remember,
//!   5 % RememberBatch of 100) or `recall` (Recall only);
//! - `MNEME_LOAD_DUMP=dir`: also write the vectors and queries (raw little-endian f32) for
//!   the peer benchmarks;
//! - `MNEME_LOAD_OUT` (default `target/bench-results/load.json`);
//! - `MNEME_LOAD_SERVER_ARGS`: extra `mneme serve` flags, space-separated.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "a benchmark fails loudly and prints"
)]

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mneme_index::FlatIndex;
use mneme_index::synthetic::{SplitMix64, clustered};
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

#[path = "common/server.rs"]
mod server;

const DIM: usize = 384;
const N_QUERIES: usize = 1_000;
const RECALL_CHECKS: usize = 200;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
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

fn agent_name(agents: usize, a: usize) -> String {
    if agents == 1 {
        "load".to_owned()
    } else {
        format!("agent-{a:05}")
    }
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

/// Times `$call` (an expression that awaits one call) back to back for `$secs`, into a
/// [`summary`].
macro_rules! time_calls {
    ($secs:expr, $call:expr) => {{
        let t0 = Instant::now();
        let mut h = Histogram::<u64>::new(3).unwrap();
        while t0.elapsed() < $secs {
            let t = Instant::now();
            $call;
            h.record(t.elapsed().as_micros() as u64).unwrap();
        }
        summary(&h, t0.elapsed().as_secs_f64())
    }};
}

fn summary(h: &Histogram<u64>, seconds: f64) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "calls": h.len(),
        "calls_per_s": h.len() as f64 / seconds,
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": h.max() as f64 / 1000.0,
    })
}

struct Workload {
    agents: usize,
    recall_only: bool,
    queries: Arc<Vec<f32>>,
}

async fn client_loop(
    mut c: MemoryServiceClient<Channel>,
    seed: u64,
    deadline: Instant,
    w: Arc<Workload>,
    h: Histograms,
) {
    let mut rng = SplitMix64::new(seed);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let roll = if w.recall_only {
            0
        } else {
            rng.next_u64() % 100
        };
        let agent_id = agent_name(w.agents, rng.next_u64() as usize % w.agents);
        let q = (rng.next_u64() as usize % (w.queries.len() / DIM)) * DIM;
        let vector = w.queries[q..q + DIM].to_vec();
        let t = Instant::now();
        let op = match roll {
            0..70 => {
                let r = pb::RecallRequest {
                    agent_id,
                    vector,
                    top_k: 10,
                    ..Default::default()
                };
                c.recall(r).await.unwrap();
                "Recall"
            }
            70..80 => {
                let r = pb::InjectContextRequest {
                    agent_id,
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
                    agent_id,
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
                    agent_id,
                    items,
                    ..Default::default()
                })
                .await
                .unwrap();
                "RememberBatch(100)"
            }
        };
        record(&h, op, t.elapsed());
    }
}

async fn connect(url: &str) -> (Channel, MemoryServiceClient<Channel>) {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel.clone(), MemoryServiceClient::new(channel))
}

/// Waits until `agent`'s graph index has absorbed every memory; returns the seconds waited.
async fn settle(c: &mut MemoryServiceClient<Channel>, agent: &str) -> f64 {
    let t0 = Instant::now();
    loop {
        let stats = c
            .stats(pb::StatsRequest {
                agent_id: agent.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if stats.index_lag == 0 {
            return t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dump(dir: &str, n: usize, data: &[f32], queries: &[f32]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, v) in [("data", data), ("queries", queries)] {
        let path = format!("{dir}/{name}-{n}.f32");
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for x in v {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

fn machine() -> Value {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |c| c.get()),
        "loadavg": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

#[tokio::main]
async fn main() {
    let n = env_usize("MNEME_LOAD_MEMORIES", 10_000);
    let agents = env_usize("MNEME_LOAD_AGENTS", 1).max(1);
    let seconds = env_usize("MNEME_LOAD_SECONDS", 10);
    let clients: Vec<usize> = std::env::var("MNEME_LOAD_CLIENTS")
        .unwrap_or_else(|_| "8".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let recall_only = std::env::var("MNEME_LOAD_MIX").is_ok_and(|m| m == "recall");
    let extra: Vec<String> = std::env::var("MNEME_LOAD_SERVER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let machine = machine();
    println!("machine: {machine}");
    let dir = tempfile::tempdir().unwrap();
    let (child, url, start_time) = server::spawn(dir.path(), &extra);
    let (channel, mut c) = connect(&url).await;

    let (data, queries) = clustered(42, n, N_QUERIES, DIM);
    if let Ok(d) = std::env::var("MNEME_LOAD_DUMP") {
        dump(&d, n, &data, &queries);
    }
    // Memory i belongs to agent i % agents.
    let t0 = Instant::now();
    let mut ids = vec![String::new(); n];
    for a in 0..agents {
        let rows: Vec<usize> = (a..n).step_by(agents).collect();
        for chunk in rows.chunks(1_000) {
            let items = chunk
                .iter()
                .map(|&i| pb::RememberRequest {
                    content: format!("memory {i}"),
                    vector: data[i * DIM..(i + 1) * DIM].to_vec(),
                    ..Default::default()
                })
                .collect();
            let out = c
                .remember_batch(pb::RememberBatchRequest {
                    agent_id: agent_name(agents, a),
                    items,
                    request_id: String::new(),
                })
                .await
                .unwrap();
            for (&i, r) in chunk.iter().zip(out.into_inner().results) {
                ids[i] = r.memory.unwrap().id;
            }
        }
    }
    let load_secs = t0.elapsed().as_secs_f64();
    println!(
        "loaded {n} × {DIM} into {agents} agent(s) in {load_secs:.1} s ({:.0} memories/s, batches of up to 1,000, durable)",
        n as f64 / load_secs
    );
    // The first seconds after the load was acknowledged: Recall at once, before anything
    // settles (writes link their vectors before they are answered, so the exact tail stays
    // bounded; this is what shows if it ever does not).
    let after_load = {
        let mut rng = SplitMix64::new(11);
        let mut h = Histogram::<u64>::new(3).unwrap();
        let mut lag_max = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let k = rng.next_u64() as usize % N_QUERIES;
            let t_call = Instant::now();
            c.recall(pb::RecallRequest {
                agent_id: agent_name(agents, k % agents),
                vector: queries[k * DIM..(k + 1) * DIM].to_vec(),
                top_k: 10,
                ..Default::default()
            })
            .await
            .unwrap();
            h.record(t_call.elapsed().as_micros() as u64).unwrap();
            if h.len() % 500 == 1 {
                let lag = c
                    .stats(pb::StatsRequest {
                        agent_id: agent_name(agents, 0),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .index_lag;
                lag_max = lag_max.max(lag);
            }
        }
        let mut s = summary(&h, t.elapsed().as_secs_f64());
        s["index_lag_max"] = json!(lag_max);
        println!(
            "Recall in the first 3 s after the load: p50 {:.3} ms, p99 {:.3} ms (index lag up to {lag_max})",
            s["p50_ms"].as_f64().unwrap(),
            s["p99_ms"].as_f64().unwrap()
        );
        s
    };
    let mut settle_secs = 0.0;
    for a in 0..agents.min(8) {
        settle_secs += settle(&mut c, &agent_name(agents, a)).await;
    }
    let rss_loaded = rss_mib(child.id());
    println!("graph index settled after {settle_secs:.1} s more; server RSS {rss_loaded:.0} MiB");

    // recall@10 of the similarity order against exact ground truth, and single-client
    // Recall latency (read-only, so the histogram is of recall alone).
    let agent_rows = |a: usize| -> FlatIndex {
        let mut flat = FlatIndex::new(DIM);
        for i in (a..n).step_by(agents) {
            flat.insert(i as u64, &data[i * DIM..(i + 1) * DIM])
                .unwrap();
        }
        flat
    };
    let single = (agents == 1).then(|| agent_rows(0));
    let mut recall_sum = 0.0;
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for (k, q) in queries.chunks_exact(DIM).take(RECALL_CHECKS).enumerate() {
        let a = k % agents;
        let scoped;
        let flat = match &single {
            Some(f) => f,
            None => {
                scoped = agent_rows(a);
                &scoped
            }
        };
        let truth: HashSet<&String> = flat
            .search_f32(q, 10, &|_| true)
            .iter()
            .map(|h| &ids[h.key as usize])
            .collect();
        let t = Instant::now();
        let r = c
            .recall(pb::RecallRequest {
                agent_id: agent_name(agents, a),
                vector: q.to_vec(),
                top_k: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        latency.record(t.elapsed().as_micros() as u64).unwrap();
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
    drop(single);
    let recall_at_10 = recall_sum / RECALL_CHECKS as f64;
    let mut rng = SplitMix64::new(7);
    let mut recall_of = |agent_id: String| {
        let k = rng.next_u64() as usize % N_QUERIES;
        pb::RecallRequest {
            agent_id: if agent_id.is_empty() {
                agent_name(agents, k % agents)
            } else {
                agent_id
            },
            vector: queries[k * DIM..(k + 1) * DIM].to_vec(),
            top_k: 10,
            ..Default::default()
        }
    };
    let single_client = time_calls!(
        Duration::from_secs(seconds.clamp(1, 5) as u64),
        c.recall(recall_of(String::new())).await.unwrap()
    );
    println!(
        "recall@10 {recall_at_10:.4}; one client, Recall top-10: p50 {:.3} ms, p99 {:.3} ms ({:.0} calls/s)",
        single_client["p50_ms"].as_f64().unwrap(),
        single_client["p99_ms"].as_f64().unwrap(),
        single_client["calls_per_s"].as_f64().unwrap()
    );
    // The floor of the path: the same call for an agent that holds nothing (a full
    // request and response over gRPC, authentication, admission, no search).
    let floor = time_calls!(
        Duration::from_secs(2),
        c.recall(recall_of("nobody-here".into())).await.unwrap()
    );
    // Below that, the transport alone: grpc.health.v1 Check (tonic's own service, tiny
    // messages, none of Mneme's handler code) on the same connection.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let transport = time_calls!(
        Duration::from_secs(2),
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
    );
    println!(
        "the transport's floor (grpc.health.v1 Check): p50 {:.3} ms, p99 {:.3} ms",
        transport["p50_ms"].as_f64().unwrap(),
        transport["p99_ms"].as_f64().unwrap(),
    );
    // Stats of the (first) loaded agent: counters, not a walk over its memories.
    let stats_latency = time_calls!(
        Duration::from_secs(1),
        c.stats(pb::StatsRequest {
            agent_id: agent_name(agents, 0),
        })
        .await
        .unwrap()
    );
    println!(
        "Stats of a {}-memory agent: p50 {:.3} ms, p99 {:.3} ms",
        n / agents,
        stats_latency["p50_ms"].as_f64().unwrap(),
        stats_latency["p99_ms"].as_f64().unwrap(),
    );
    println!(
        "the path's floor (Recall of an empty agent): p50 {:.3} ms, p99 {:.3} ms",
        floor["p50_ms"].as_f64().unwrap(),
        floor["p99_ms"].as_f64().unwrap(),
    );

    let workload = Arc::new(Workload {
        agents,
        recall_only,
        queries: Arc::new(queries),
    });
    let mix = if recall_only {
        "Recall only"
    } else {
        "70 % Recall, 10 % InjectContext, 15 % Remember, 5 % RememberBatch of 100"
    };
    let mut runs = Vec::new();
    for &nc in &clients {
        let histograms: Histograms = Arc::default();
        let deadline = Instant::now() + Duration::from_secs(seconds as u64);
        let t0 = Instant::now();
        // Vectors not yet in the graph are scanned exactly by every query: watch how many.
        let lag_task = {
            let mut c = MemoryServiceClient::new(channel.clone());
            let agent_id = agent_name(agents, 0);
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    if let Ok(s) = c
                        .stats(pb::StatsRequest {
                            agent_id: agent_id.clone(),
                        })
                        .await
                    {
                        samples.push(s.into_inner().index_lag);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                samples
            })
        };
        let tasks: Vec<_> = (0..nc)
            .map(|i| {
                tokio::spawn(client_loop(
                    MemoryServiceClient::new(channel.clone()),
                    i as u64 + 1,
                    deadline,
                    Arc::clone(&workload),
                    Arc::clone(&histograms),
                ))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let lag = lag_task.await.unwrap();
        let lag_mean = lag.iter().sum::<u64>() as f64 / lag.len().max(1) as f64;
        let lag_max = lag.iter().copied().max().unwrap_or(0);
        println!("\n{nc} clients for {seconds} s ({mix})");
        println!(
            "index lag (vectors scanned exactly by every query): mean {lag_mean:.0}, max {lag_max}"
        );
        println!("| op | calls/s | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        let mut ops = serde_json::Map::new();
        let mut total = 0u64;
        for (op, h) in histograms.lock().unwrap().iter() {
            let s = summary(h, elapsed);
            println!(
                "| {op} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |",
                s["calls_per_s"].as_f64().unwrap(),
                s["p50_ms"].as_f64().unwrap(),
                s["p95_ms"].as_f64().unwrap(),
                s["p99_ms"].as_f64().unwrap(),
                s["max_ms"].as_f64().unwrap()
            );
            total += h.len();
            ops.insert((*op).to_owned(), s);
        }
        runs.push(json!({
            "clients": nc,
            "index_lag_mean": lag_mean,
            "index_lag_max": lag_max,
            "seconds": elapsed,
            "calls_per_s": total as f64 / elapsed,
            "ops": ops,
        }));
    }
    let rss = rss_mib(child.id());
    let disk = dir_bytes(dir.path());

    // Restart after SIGKILL (graphs rebuild or load an older snapshot in the background),
    // then after SIGTERM (graceful: snapshots saved), each to serving and to settled.
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let restarts = restart_times(dir.path(), &extra, agents).await;
    println!(
        "\nserver RSS {rss:.0} MiB; {:.1} MiB on disk; cold start {:.2} s; {restarts}",
        disk as f64 / 1048576.0,
        start_time.as_secs_f64(),
    );
    let out = json!({
        "machine": machine,
        "memories": n,
        "agents": agents,
        "dim": DIM,
        "mix": mix,
        "load_memories_per_s": n as f64 / load_secs,
        "settle_s": settle_secs,
        "recall_at_10": recall_at_10,
        "single_client_recall": single_client,
        "empty_agent_recall": floor,
        "health_check": transport,
        "stats_latency": stats_latency,
        "recall_after_load": after_load,
        "server_rss_mib_loaded": rss_loaded,
        "server_rss_mib": rss,
        "disk_bytes": disk,
        "cold_start_s": start_time.as_secs_f64(),
        "restart": restarts,
        "runs": runs,
        "server_args": extra,
    });
    let path = std::env::var("MNEME_LOAD_OUT").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/bench-results/load.json"
        )
        .to_owned()
    });
    if let Some(parent) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("results: {path}");
}

async fn restart_times(dir: &std::path::Path, extra: &[String], agents: usize) -> Value {
    let mut out = serde_json::Map::new();
    for how in ["after_sigkill", "after_sigterm"] {
        let (mut child, url, serving) = server::spawn(dir, extra);
        let (_, mut c) = connect(&url).await;
        let t0 = Instant::now();
        for a in 0..agents.min(8) {
            settle(&mut c, &agent_name(agents, a)).await;
        }
        let settled = serving.as_secs_f64() + t0.elapsed().as_secs_f64();
        out.insert(
            how.to_owned(),
            json!({"to_serving_s": serving.as_secs_f64(), "to_settled_s": settled}),
        );
        if how == "after_sigkill" {
            // Graceful stop: the server saves graph snapshots on the way out.
            terminate(&mut child);
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    Value::Object(out)
}

fn terminate(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
