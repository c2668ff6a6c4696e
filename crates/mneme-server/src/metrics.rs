//! Prometheus metrics: per-RPC request counts by status code and latency histograms,
//! memories and index lag (in total, and per agent only for admin keys), store sizes, fsync
//! count and time, poisoning. Served as text on HTTP `GET /metrics` by a deliberately small
//! HTTP/1.1 responder, bound under the same rule as the gRPC port (loopback only without
//! keys). Without an admin key (`authorization: Bearer <key>`) no agent id appears: who
//! the tenants are is not for whoever can reach the port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use mneme_engine::Engine;
use parking_lot::{Mutex, RwLock};

use crate::auth::Auth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_SECONDS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Agents listed individually in per-agent gauges (the rest are summed).
const AGENTS_LISTED_MAX: usize = 1_000;
/// Largest HTTP request head the metrics endpoint reads.
const HTTP_HEAD_BYTES_MAX: usize = 8 * 1024;

#[derive(Debug, Default, Clone)]
struct RpcStats {
    codes: BTreeMap<&'static str, u64>,
    buckets: [u64; BUCKETS_SECONDS.len()],
    sum_seconds: f64,
    count: u64,
}

/// Request metrics shared by every service.
#[derive(Debug, Default)]
pub struct Metrics {
    rpcs: Mutex<BTreeMap<&'static str, RpcStats>>,
    /// More series (a cluster's), rendered after ours.
    pub(crate) extra: Option<crate::ExtraMetrics>,
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Metrics {
    /// Records one finished call.
    pub fn record(&self, rpc: &'static str, code: tonic::Code, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut rpcs = self.rpcs.lock();
        let stats = rpcs.entry(rpc).or_default();
        *stats.codes.entry(code_name(code)).or_default() += 1;
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            if secs <= *le {
                stats.buckets[i] += 1;
            }
        }
        stats.sum_seconds += secs;
        stats.count += 1;
    }

    /// The Prometheus text exposition; per-agent series only when `per_agent`.
    pub fn render(&self, engine: &Engine, per_agent: bool) -> String {
        let mut out = String::new();
        if let Some(extra) = &self.extra {
            out.push_str(&(extra.0)());
        }
        let rpcs = self.rpcs.lock().clone();
        out.push_str("# HELP mneme_rpc_requests_total gRPC calls by method and status code.\n# TYPE mneme_rpc_requests_total counter\n");
        for (rpc, s) in &rpcs {
            for (code, n) in &s.codes {
                let _ = writeln!(
                    out,
                    "mneme_rpc_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP mneme_rpc_latency_seconds gRPC call latency.\n# TYPE mneme_rpc_latency_seconds histogram\n");
        for (rpc, s) in &rpcs {
            for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "mneme_rpc_latency_seconds_bucket{{rpc=\"{rpc}\",le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "mneme_rpc_latency_seconds_bucket{{rpc=\"{rpc}\",le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "mneme_rpc_latency_seconds_sum{{rpc=\"{rpc}\"}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "mneme_rpc_latency_seconds_count{{rpc=\"{rpc}\"}} {}",
                s.count
            );
        }
        self.render_engine(engine, &mut out, per_agent);
        out
    }

    fn render_engine(&self, engine: &Engine, out: &mut String, per_agent: bool) {
        let s = engine.store_stats();
        out.push_str("# HELP mneme_store_bytes Bytes on disk by file kind.\n# TYPE mneme_store_bytes gauge\n");
        let _ = writeln!(out, "mneme_store_bytes{{kind=\"wal\"}} {}", s.wal_bytes);
        let _ = writeln!(
            out,
            "mneme_store_bytes{{kind=\"snapshots\"}} {}",
            s.snapshot_bytes
        );
        out.push_str("# HELP mneme_fsync_seconds Time spent in WAL fdatasync.\n# TYPE mneme_fsync_seconds summary\n");
        let _ = writeln!(
            out,
            "mneme_fsync_seconds_sum {}",
            s.wal_sync_micros as f64 / 1e6
        );
        let _ = writeln!(out, "mneme_fsync_seconds_count {}", s.wal_syncs);
        out.push_str("# HELP mneme_store_poisoned 1 when an I/O failure stopped writes.\n# TYPE mneme_store_poisoned gauge\n");
        let _ = writeln!(
            out,
            "mneme_store_poisoned {}",
            u8::from(engine.poisoned().is_some())
        );
        let mut totals = (0u64, 0u64);
        let mut listed = String::new();
        let mut lag = String::new();
        let ids = engine.agent_ids();
        for (i, agent) in ids.iter().enumerate() {
            let Ok(stats) = engine.stats(agent) else {
                continue;
            };
            totals.0 += stats.total_memories;
            totals.1 += stats.index_lag;
            if per_agent && i < AGENTS_LISTED_MAX {
                let _ = writeln!(
                    listed,
                    "mneme_agent_memories{{agent=\"{agent}\"}} {}",
                    stats.total_memories
                );
                let _ = writeln!(
                    lag,
                    "mneme_agent_index_lag{{agent=\"{agent}\"}} {}",
                    stats.index_lag
                );
            }
        }
        out.push_str("# HELP mneme_agents Agents.\n# TYPE mneme_agents gauge\n");
        let _ = writeln!(out, "mneme_agents {}", ids.len());
        out.push_str(
            "# HELP mneme_memories Live memories, all agents.\n# TYPE mneme_memories gauge\n",
        );
        let _ = writeln!(out, "mneme_memories {}", totals.0);
        out.push_str("# HELP mneme_index_lag Vectors not yet in a graph index, all agents.\n# TYPE mneme_index_lag gauge\n");
        let _ = writeln!(out, "mneme_index_lag {}", totals.1);
        let s = engine.store_stats();
        out.push_str(
            "# HELP mneme_applied_lsn The log position applied.\n# TYPE mneme_applied_lsn gauge\n",
        );
        let _ = writeln!(out, "mneme_applied_lsn {}", engine.applied_lsn());
        out.push_str(
            "# HELP mneme_snapshots Live agent snapshot files.\n# TYPE mneme_snapshots gauge\n",
        );
        let _ = writeln!(out, "mneme_snapshots {}", s.snapshots);
        if per_agent {
            out.push_str("# HELP mneme_agent_memories Live memories per agent (admin keys only; the first 1,000 agents).\n# TYPE mneme_agent_memories gauge\n");
            out.push_str(&listed);
            out.push_str("# HELP mneme_agent_index_lag Vectors not yet in the agent's graph index (admin keys only).\n# TYPE mneme_agent_index_lag gauge\n");
            out.push_str(&lag);
        }
    }
}

/// The bearer token of an HTTP request head, if any.
fn bearer(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::to_owned)
    })
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: std::sync::Weak<Engine>,
    auth: Arc<RwLock<Arc<Auth>>>,
) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let engine = engine.clone();
        let auth = Arc::clone(&auth);
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HTTP_HEAD_BYTES_MAX {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let ok = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
            let keys = Arc::clone(&auth.read());
            let principal = match bearer(&head) {
                Some(token) => keys.key_of(&token),
                None if keys.enabled() => None,
                None => Some(crate::auth::Principal::Open),
            };
            let per_agent = keys.enabled() && principal.as_ref().is_some_and(|p| keys.is_admin(p));
            let (status, body) = if let (true, Some(engine)) = (ok, engine.upgrade()) {
                let body = tokio::task::spawn_blocking(move || metrics.render(&engine, per_agent))
                    .await
                    .unwrap_or_default();
                ("200 OK", body)
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_owned(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
