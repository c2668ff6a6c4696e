//! Measures how often re-ranking only the top-k' by similarity changes the final top-k
//! compared with re-ranking every memory, on real MiniLM vectors with realistic ages,
//! access counts and types.
//!
//! `cargo run --release -p mneme-scoring --example rerank_window [path/to/vectors.npy]`

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "an example program"
)]

use mneme_scoring::{
    Calibration, DAY_MS, MemorySignals, MemoryType, ScoringParams, score, window_is_exact,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 384;

fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        0x1f if frac == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

fn load_npy(path: &str, rows: usize) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = &bytes[10 + header_len..];
    data.chunks_exact(2)
        .take(rows * DIM)
        .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/minilm-manpages/vectors.npy".to_owned());
    let n_queries = 200;
    let n_corpus = 20_000;
    let vectors = load_npy(&path, n_queries + n_corpus);
    let (queries, corpus) = vectors.split_at(n_queries * DIM);
    let now: i64 = 1_800_000_000_000;
    let mut rng = StdRng::seed_from_u64(7);
    let memories: Vec<MemorySignals> = (0..n_corpus)
        .map(|_| {
            let memory_type = match rng.random_range(0..100) {
                0..50 => MemoryType::Episodic,
                50..85 => MemoryType::Semantic,
                _ => MemoryType::Procedural,
            };
            // Ages: exponential, mean 30 days; accesses: heavy-tailed, most never.
            let age_days = -30.0 * (1.0 - rng.random::<f64>()).ln();
            let access_count = if rng.random_bool(0.7) {
                0
            } else {
                (1.0 / rng.random::<f64>().max(1e-3)) as u64
            };
            let since_access = age_days * rng.random::<f64>();
            MemorySignals {
                memory_type,
                updated_at_ms: now - (age_days * DAY_MS) as i64,
                last_accessed_at_ms: now - (since_access * DAY_MS) as i64,
                access_count,
                importance: rng.random_range(0.0..=1.0),
                pinned: rng.random_bool(0.02),
            }
        })
        .collect();
    let params = ScoringParams::default();
    let cal = Calibration::PARAPHRASE_REFERENCE;
    println!(
        "{n_corpus} real MiniLM memories, {n_queries} held-out queries; ages exp(mean 30 d), 30% accessed"
    );
    println!(
        "| k | k' | queries whose top-k differs | mean overlap | certified exact by window_is_exact |"
    );
    println!("|---|---|---|---|---|");
    for k in [5usize, 10] {
        for window in [k, 4 * k, 8 * k, 16 * k, 256, 1024] {
            let (mut differ, mut overlap, mut certified) = (0, 0.0, 0);
            for q in queries.chunks_exact(DIM) {
                let mut by_sim: Vec<(usize, f32)> = corpus
                    .chunks_exact(DIM)
                    .enumerate()
                    .map(|(i, v)| (i, q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>()))
                    .collect();
                by_sim.sort_by(|a, b| b.1.total_cmp(&a.1));
                let conf = |&(i, cos): &(usize, f32)| {
                    (i, score(&params, &cal, cos, &memories[i], now).rank_key)
                };
                let mut all: Vec<(usize, f64)> = by_sim.iter().map(conf).collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                let mut win: Vec<(usize, f64)> = by_sim[..window].iter().map(conf).collect();
                win.sort_by(|a, b| b.1.total_cmp(&a.1));
                let exact: Vec<usize> = all[..k].iter().map(|x| x.0).collect();
                let got: Vec<usize> = win[..k].iter().map(|x| x.0).collect();
                let common = got.iter().filter(|i| exact.contains(i)).count();
                overlap += common as f64 / k as f64;
                if common != k {
                    differ += 1;
                }
                if window_is_exact(win[k - 1].1, cal.log_relevance(by_sim[window].1)) {
                    certified += 1;
                }
            }
            println!(
                "| {k} | {window} | {:.1}% | {:.3} | {:.1}% |",
                100.0 * differ as f64 / n_queries as f64,
                overlap / n_queries as f64,
                100.0 * certified as f64 / n_queries as f64
            );
        }
    }
}
