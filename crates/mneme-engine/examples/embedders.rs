//! Measures every embedder on the written paraphrase set (`data/paraphrases.tsv`):
//! top-1 and MRR of query → memory retrieval, a calibration fitted on its relevant and
//! unrelated pairs, how the built-in calibration separates them, and embedding speed at
//! batch 1 and 32.
//!
//! `cargo run --release -p mneme-engine --example embedders`
//! (`--features minilm` with `MNEME_MINILM_DIR` set adds all-MiniLM-L6-v2).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "an example program"
)]

use std::sync::Arc;
use std::time::Instant;

use mneme_engine::embed::{Embedder, HashEmbedder, StaticEmbedder};
use mneme_scoring::fit_calibration;

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn embedders() -> Vec<Arc<dyn Embedder>> {
    let mut out: Vec<Arc<dyn Embedder>> = vec![Arc::new(HashEmbedder::new())];
    if let Some(Ok(m)) = StaticEmbedder::builtin() {
        out.push(Arc::new(m));
    }
    #[cfg(feature = "minilm")]
    if let Ok(dir) = std::env::var("MNEME_MINILM_DIR") {
        out.push(Arc::new(
            mneme_engine::embed::MiniLmEmbedder::from_dir(std::path::Path::new(&dir), 0).unwrap(),
        ));
    }
    out
}

fn main() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/paraphrases.tsv"))
            .unwrap();
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let memories: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let queries: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    println!("{} memory/query pairs\n", pairs.len());
    println!(
        "| embedder | top-1 | MRR | built-in (center, slope): relevant ≥ 0.6 / unrelated ≤ 0.3 | fitted (center, slope): relevant ≥ 0.6 / unrelated ≤ 0.3 | batch 1 p50 / p99 per text | batch 32 texts/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for e in embedders() {
        let m: Vec<Vec<f32>> = e.embed(&memories).unwrap().into_iter().map(unit).collect();
        let q: Vec<Vec<f32>> = e.embed(&queries).unwrap().into_iter().map(unit).collect();
        let (mut top1, mut mrr) = (0usize, 0f64);
        let mut labelled = Vec::new();
        for (i, qv) in q.iter().enumerate() {
            let own = dot(qv, &m[i]);
            let rank = 1 + m.iter().filter(|mv| dot(qv, mv) > own).count();
            top1 += usize::from(rank == 1);
            mrr += 1.0 / rank as f64;
            for (j, mv) in m.iter().enumerate() {
                labelled.push((dot(qv, mv), i == j));
            }
        }
        let fitted = fit_calibration(&labelled).unwrap();
        let separation = |cal: mneme_scoring::Calibration| {
            let rel: Vec<f32> = labelled
                .iter()
                .filter(|p| p.1)
                .map(|p| cal.relevance(p.0))
                .collect();
            let unrel: Vec<f32> = labelled
                .iter()
                .filter(|p| !p.1)
                .map(|p| cal.relevance(p.0))
                .collect();
            let share = |v: &[f32], f: &dyn Fn(f32) -> bool| {
                100.0 * v.iter().filter(|x| f(**x)).count() as f64 / v.len() as f64
            };
            format!(
                "({:.3}, {:.1}): {:.0} % / {:.0} %",
                cal.center,
                cal.slope,
                share(&rel, &|x| x >= 0.6),
                share(&unrel, &|x| x <= 0.3)
            )
        };

        let mut single: Vec<f64> = Vec::new();
        for _ in 0..3 {
            for t in memories.iter().chain(&queries) {
                let t0 = Instant::now();
                e.embed(&[t]).unwrap();
                single.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        single.sort_by(f64::total_cmp);
        let all: Vec<&str> = memories
            .iter()
            .chain(&queries)
            .copied()
            .cycle()
            .take(32 * 8)
            .collect();
        let t0 = Instant::now();
        for chunk in all.chunks(32) {
            e.embed(chunk).unwrap();
        }
        let per_sec = all.len() as f64 / t0.elapsed().as_secs_f64();
        println!(
            "| {} | {:.2} | {:.3} | {} | {} | {:.3} / {:.3} ms | {:.0} |",
            e.id(),
            top1 as f64 / q.len() as f64,
            mrr / q.len() as f64,
            separation(mneme_engine::calibration_of(e.family())),
            separation(fitted),
            percentile(&single, 0.5),
            percentile(&single, 0.99),
            per_sec
        );
    }
}
