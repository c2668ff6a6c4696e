//! The MiniLM embedder reproduces sentence-transformers. Needs the model files: set
//! `MNEME_MINILM_DIR` (`.ci/run` fetches and verifies them). Without them the test fails in
//! CI and is skipped elsewhere.

use std::path::PathBuf;

use mneme_engine::embed::{Embedder, MiniLmEmbedder, MiniLmKernel};

fn model_dir() -> Option<PathBuf> {
    match std::env::var("MNEME_MINILM_DIR") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "MNEME_MINILM_DIR must be set in CI"
            );
            eprintln!("skipping: set MNEME_MINILM_DIR to the all-MiniLM-L6-v2 model directory");
            None
        }
    }
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
        * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn f16(bits: u16) -> f32 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// On every dense kernel this CPU runs.
#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let mut model = MiniLmEmbedder::from_dir(&dir, 0).unwrap();
    assert_eq!(model.dim(), 384);
    for kernel in MiniLmKernel::available() {
        model = model.with_kernel(kernel).unwrap();
        let v = model
            .embed(&[
                "User prefers formal tone",
                "how should I write my responses?",
                "Last deployment was on March 10",
            ])
            .unwrap();
        let relevant = cos(&v[0], &v[1]);
        let unrelated = cos(&v[0], &v[2]);
        eprintln!(
            "{kernel:?}: pair cosines {relevant:.5} (reference 0.2507), {unrelated:.5} (-0.0501)"
        );
        assert!(
            (relevant - 0.2507).abs() < 1e-3,
            "{kernel:?}: cos(formal tone, how should I write) = {relevant}"
        );
        assert!(
            (unrelated - (-0.0501)).abs() < 1e-3,
            "{kernel:?}: cos(formal tone, last deployment) = {unrelated}"
        );
    }
}

/// Against the reference vectors of `shared/data/minilm-manpages` (float16), when present.
#[test]
fn minilm_reproduces_reference_vectors_of_real_sentences() {
    let Some(dir) = model_dir() else { return };
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/minilm-manpages");
    let (Ok(sentences), Ok(npy)) = (
        std::fs::read_to_string(data.join("sentences.txt")),
        std::fs::read(data.join("vectors.npy")),
    ) else {
        eprintln!("skipping: shared/data/minilm-manpages not found");
        return;
    };
    let mut model = MiniLmEmbedder::from_dir(&dir, 0).unwrap();
    let header = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let body = &npy[10 + header..];
    let texts: Vec<&str> = sentences.lines().take(64).collect();
    for kernel in MiniLmKernel::available() {
        model = model.with_kernel(kernel).unwrap();
        let ours = model.embed(&texts).unwrap();
        let mut lowest = 1f32;
        for (i, v) in ours.iter().enumerate() {
            let reference: Vec<f32> = body[i * 384 * 2..(i + 1) * 384 * 2]
                .chunks_exact(2)
                .map(|c| f16(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            let c = cos(v, &reference);
            lowest = lowest.min(c);
            assert!(
                c > 0.999,
                "{kernel:?}: sentence {i} {:?}: cosine to the reference {c}",
                texts[i]
            );
        }
        eprintln!(
            "{kernel:?}: lowest cosine to the reference over {} sentences: {lowest:.6}",
            ours.len()
        );
    }
}
