//! Time to embed one short query with all-MiniLM-L6-v2, per inference thread count.
//!
//! `cargo run --release -p mneme-embed --features minilm --example minilm_latency -- <model dir>`

#![allow(clippy::print_stdout, reason = "an example program prints")]

#[cfg(feature = "minilm")]
fn main() -> Result<(), String> {
    use std::time::Instant;

    use mneme_embed::{Embedder, MiniLmEmbedder};

    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: minilm_latency <model dir>")?;
    let queries: Vec<String> = (0..200)
        .map(|i| format!("how do I rotate the logs of service number {i} every night?"))
        .collect();
    for threads in [1, 2] {
        let model = MiniLmEmbedder::from_dir(std::path::Path::new(&dir), threads)?;
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
            "threads {threads}: p50 {:.2} ms, p99 {:.2} ms",
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
