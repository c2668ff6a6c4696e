//! Index benchmark: exact scan (f32 and int8+rescore) and HNSW on hnsw_rs, on the
//! reproducible clustered generator (fixed seed, 1,000 held-out queries, exact ground
//! truth). Prints build rate, RSS, recall@10 and p50/p99 per query at several `ef`, and
//! filtered search at 10 % and 1 % selectivity. Asserts nothing about speed.
//!
//! `cargo bench -p mneme-index --bench index` — sizes from `MNEME_BENCH_SIZES`
//! (default `10000,100000`; `minilm` is the 59k real MiniLM vectors of
//! `shared/data/minilm-manpages`, or `MNEME_MINILM_VECTORS`), dimension 384; graphs from
//! `MNEME_BENCH_GRAPHS` (default `native,hnsw-rs`). `MNEME_BENCH_DUMP=dir` also writes the vectors,
//! queries and ground truth as raw little-endian files for the peer script.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use mneme_index::synthetic::clustered;
use mneme_index::{
    Filter, FlatIndex, Graph, GraphKind, HnswParams, IndexConfig, Maintenance, VectorIndex,
    maintain,
};
use parking_lot::RwLock;

const DIM: usize = 384;
const N_QUERIES: usize = 1_000;

/// Rows for `MNEME_BENCH_JSON`.
static RESULTS: Mutex<Vec<serde_json::Value>> = Mutex::new(Vec::new());

fn emit(row: serde_json::Value) {
    RESULTS.lock().unwrap().push(row);
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms, p99 {:.3} ms",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0
    )
}

fn timed<T>(hist: &mut Histogram<u64>, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    hist.record(t0.elapsed().as_micros() as u64).unwrap();
    out
}

fn recall(got: &[u64], truth: &[u64]) -> f64 {
    let truth: HashSet<_> = truth.iter().collect();
    got.iter().filter(|k| truth.contains(k)).count() as f64 / truth.len().max(1) as f64
}

fn dump(dir: &str, n: usize, data: &[f32], queries: &[f32], truth: &[Vec<u64>]) {
    std::fs::create_dir_all(dir).unwrap();
    let write_f32 = |name: String, v: &[f32]| {
        let mut f = std::fs::File::create(format!("{dir}/{name}")).unwrap();
        for x in v {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    };
    write_f32(format!("data-{n}.f32"), data);
    write_f32(format!("queries-{n}.f32"), queries);
    let mut f = std::fs::File::create(format!("{dir}/truth-{n}.u32")).unwrap();
    for row in truth {
        for k in row {
            f.write_all(&(*k as u32).to_le_bytes()).unwrap();
        }
    }
}

/// A benchmark data set: corpus and held-out queries, row-major.
struct Dataset {
    name: String,
    data: Vec<f32>,
    queries: Vec<f32>,
}

impl Dataset {
    fn clustered(n: usize) -> Self {
        let (data, queries) = clustered(42, n, N_QUERIES, DIM);
        Self {
            name: format!("{n} × {DIM} (clustered, seed 42, {N_QUERIES} queries)"),
            data,
            queries,
        }
    }

    /// `shared/data/minilm-manpages/vectors.npy`: 60,000 real MiniLM embeddings (float16);
    /// the first 1,000 rows are the queries, the rest the corpus.
    fn minilm(path: &str) -> Self {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY", "{path} is not an .npy file");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(
            header.contains("'<f2'") && header.contains(", 384)"),
            "{header}"
        );
        let all: Vec<f32> = bytes[10 + header_len..]
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect();
        let (queries, data) = all.split_at(N_QUERIES * DIM);
        Self {
            name: format!(
                "{} × {DIM} real MiniLM embeddings (minilm-manpages, {N_QUERIES} queries)",
                data.len() / DIM
            ),
            data: data.to_vec(),
            queries: queries.to_vec(),
        }
    }

    fn len(&self) -> usize {
        self.data.len() / DIM
    }
}

/// IEEE half → single precision (normals, subnormals, zeros, infinities and NaN).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            let value = f as f32 / 1024.0 * 2f32.powi(-14);
            return if sign == 0 { value } else { -value };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

fn run(set: &Dataset, kinds: &[GraphKind]) {
    let n = set.len();
    let (data, queries) = (&set.data, &set.queries);
    let n_queries = queries.len() / DIM;
    println!("\n## {}", set.name);
    let mut flat = FlatIndex::new(DIM);
    for (i, v) in data.chunks_exact(DIM).enumerate() {
        flat.insert(i as u64, v).unwrap();
    }
    let mut truth = Vec::with_capacity(n_queries);
    let mut h32 = Histogram::<u64>::new(3).unwrap();
    for q in queries.chunks_exact(DIM) {
        let hits = timed(&mut h32, || flat.search_f32(q, 10, &|_| true));
        truth.push(hits.iter().map(|h| h.key).collect::<Vec<u64>>());
    }
    let mut h8 = Histogram::<u64>::new(3).unwrap();
    let mut r8 = 0.0;
    for (q, t) in queries.chunks_exact(DIM).zip(&truth) {
        let hits = timed(&mut h8, || flat.search(q, 10, &|_| true));
        r8 += recall(&hits.iter().map(|h| h.key).collect::<Vec<_>>(), t);
    }
    println!("exact f32 scan top-10: {}", percentiles(&h32));
    println!(
        "exact int8 scan + f32 rescore top-10: {}, recall@10 {:.4}",
        percentiles(&h8),
        r8 / n_queries as f64
    );
    if let Ok(dir) = std::env::var("MNEME_BENCH_DUMP") {
        dump(&dir, n, data, queries, &truth);
    }
    drop(flat);

    for &kind in kinds {
        let config = IndexConfig {
            graph_min_vectors: 1,
            graph: kind,
            hnsw: HnswParams::default(),
            ..IndexConfig::default()
        };
        let rss0 = rss_mib();
        let mut index = VectorIndex::new(DIM, config);
        for (i, v) in data.chunks_exact(DIM).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        let lock = RwLock::new(index);
        let t0 = Instant::now();
        while maintain(&lock, n) != Maintenance::Idle {}
        let build_s = t0.elapsed().as_secs_f64();
        let graph_mib = lock.read().graph().unwrap().memory_bytes() as f64 / (1 << 20) as f64;
        println!(
            "### {}\nbuild (M {}, ef_construction {}, all cores): {:.1} s, {:.0} inserts/s; \
             RSS of the whole collection (f32 vectors + graph) +{:.0} MiB; graph alone {:.0} MiB",
            kind.name(),
            config.hnsw.m,
            config.hnsw.ef_construction,
            build_s,
            n as f64 / build_s,
            rss_mib() - rss0,
            graph_mib
        );
        emit(serde_json::json!({
            "kind": "build", "data": set.name, "n": n, "graph": kind.name(),
            "seconds": build_s, "inserts_per_s": n as f64 / build_s,
            "rss_mib_added": rss_mib() - rss0, "graph_mib": graph_mib,
        }));
        sweep_ef(&lock, kind, &set.name, queries, &truth);
        filtered(&lock, queries, n);
        restart(&lock, kind, queries);
    }
}

/// Snapshot save and load (what a restart costs with a saved graph, vs. rebuilding it),
/// and a check that the loaded graph answers exactly as the saved one did.
fn restart(lock: &RwLock<VectorIndex>, kind: GraphKind, queries: &[f32]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph");
    let graph = lock.read().graph().unwrap();
    let t0 = Instant::now();
    graph
        .save(&path, &|key| Some(key.to_le_bytes().to_vec()))
        .unwrap();
    let saved = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let resolve = |l: &[u8]| l.try_into().ok().map(u64::from_le_bytes);
    let loaded = Graph::load(&path, kind, DIM, HnswParams::default(), &resolve).unwrap();
    let load_s = t0.elapsed().as_secs_f64();
    let same = queries
        .chunks_exact(DIM)
        .take(100)
        .all(|q| loaded.search(q, 10, 96, None) == graph.search(q, 10, 96, None));
    // Graph-only latency (no rescoring) before and after the reload: a loaded native graph
    // reads its codes through the mapped file.
    let time = |g: &Graph| {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        for q in queries.chunks_exact(DIM) {
            timed(&mut hist, || g.search(q, 10, 96, None));
        }
        percentiles(&hist)
    };
    println!(
        "graph search ef 96 (no rescoring): built {}; reloaded {}",
        time(&graph),
        time(&loaded)
    );
    emit(serde_json::json!({
        "kind": "snapshot", "graph": kind.name(), "n": loaded.len(),
        "save_s": saved, "load_s": load_s, "identical": same,
    }));
    println!(
        "snapshot: save {saved:.2} s, load (checksums and structure verified) {load_s:.2} s, \
         {} live points, identical answers: {same}",
        loaded.len()
    );
}

fn sweep_ef(
    lock: &RwLock<VectorIndex>,
    kind: GraphKind,
    data: &str,
    queries: &[f32],
    truth: &[Vec<u64>],
) {
    let index = lock.read();
    // Warm up (page tables, huge-page faults) so the first ef measured is not penalised.
    for q in queries.chunks_exact(DIM).take(200) {
        index.search_with_ef(q, 10, 64).unwrap();
    }
    for ef in [16usize, 24, 32, 48, 64, 96, 128, 256] {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut r = 0.0;
        let t_loop = std::time::Instant::now();
        for (q, t) in queries.chunks_exact(DIM).zip(truth) {
            let hits = timed(&mut hist, || index.search_with_ef(q, 10, ef).unwrap());
            r += recall(&hits.iter().map(|h| h.key).collect::<Vec<_>>(), t);
        }
        // Measured: queries over the loop's wall time (recall bookkeeping included).
        let calls_per_s = hist.len() as f64 / t_loop.elapsed().as_secs_f64();
        let n_queries = (queries.len() / DIM) as f64;
        emit(serde_json::json!({
            "kind": "sweep", "data": data, "n": index.len(), "graph": kind.name(), "ef": ef,
            "recall_at_10": r / n_queries,
            "p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
            "calls_per_s": calls_per_s,
        }));
        println!(
            "{} ef {ef:>3}: recall@10 {:.4}, {}, {calls_per_s:.0} queries/s measured on one core",
            kind.name(),
            r / n_queries,
            percentiles(&hist),
        );
    }
}

fn filtered(lock: &RwLock<VectorIndex>, queries: &[f32], n: usize) {
    let index = lock.read();
    for (label, modulus) in [("10 %", 10u64), ("1 %", 100)] {
        let accept = move |k: u64| k.is_multiple_of(modulus);
        let filter = Filter::Predicate {
            accept: &accept,
            estimated_matches: n / modulus as usize,
        };
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let mut r = 0.0;
        for q in queries.chunks_exact(DIM) {
            let hits = timed(&mut hist, || index.search(q, 10, filter).unwrap());
            let exact = index.search_exact(q, 10, filter).unwrap();
            r += recall(
                &hits.iter().map(|h| h.key).collect::<Vec<_>>(),
                &exact.iter().map(|h| h.key).collect::<Vec<_>>(),
            );
        }
        println!(
            "filtered {label} ({:?} plan): recall@10 {:.4}, {}",
            index.plan(&filter),
            r / (queries.len() / DIM) as f64,
            percentiles(&hist)
        );
    }
}

fn main() {
    let sizes = std::env::var("MNEME_BENCH_SIZES").unwrap_or_else(|_| "10000,100000".to_owned());
    let kinds: Vec<GraphKind> = std::env::var("MNEME_BENCH_GRAPHS")
        .unwrap_or_else(|_| "native,hnsw-rs".to_owned())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for size in sizes.split(',').map(str::trim) {
        let set = if size == "minilm" {
            let path = std::env::var("MNEME_MINILM_VECTORS").unwrap_or_else(|_| {
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../../shared/data/minilm-manpages/vectors.npy"
                )
                .to_owned()
            });
            Dataset::minilm(&path)
        } else {
            Dataset::clustered(size.parse().unwrap())
        };
        run(&set, &kinds);
    }
    if let Ok(path) = std::env::var("MNEME_BENCH_JSON") {
        let rows = RESULTS.lock().unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&*rows).unwrap()).unwrap();
        println!("results: {path}");
    }
}
