//! Time to embed one query with all-MiniLM-L6-v2, per dense kernel this CPU runs and per
//! inference thread count: a short question (17 tokens) and a long sentence (41 tokens).
//!
//! `cargo run --release -p mneme-embed --features minilm --example minilm_latency -- <model dir>
//! [kernel]`, where `kernel` (`Avx512Bf16`, `Avx512`, `Portable`) keeps to one kernel.

#![allow(clippy::print_stdout, reason = "an example program prints")]

#[cfg(feature = "minilm")]
fn main() -> Result<(), String> {
    use std::time::Instant;

    use mneme_embed::{Embedder, MiniLmEmbedder, MiniLmKernel};

    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: minilm_latency <model dir>")?;
    let short: Vec<String> = (0..200)
        .map(|i| format!("how do I rotate the logs of service number {i} every night?"))
        .collect();
    let long: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "the service number {i} writes its logs to a directory that fills the disk \
                 every few days, so the operator wants them rotated, compressed and removed \
                 after a week"
            )
        })
        .collect();
    let only = std::env::args().nth(2);
    for (kernel, threads, (name, queries)) in MiniLmKernel::available()
        .into_iter()
        .filter(|k| only.as_ref().is_none_or(|o| *o == format!("{k:?}")))
        .flat_map(|k| [1, 2].map(|t| (k, t)))
        .flat_map(|(k, t)| [("short", &short), ("long", &long)].map(|q| (k, t, q)))
    {
        let model =
            MiniLmEmbedder::from_dir(std::path::Path::new(&dir), threads)?.with_kernel(kernel)?;
        model.embed(&["warm up"])?;
        let mut times: Vec<f64> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let _ = model.embed(&[q.as_str()]);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{kernel:?}, threads {threads}, {name}: p50 {:.2} ms, p99 {:.2} ms",
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    }
    Ok(())
}

#[cfg(not(feature = "minilm"))]
fn main() {
    println!("build with --features minilm");
}
