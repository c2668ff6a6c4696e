//! A reproducible generator of embedding-like vectors for tests and benchmarks: points
//! scattered around random cluster centres (like topics), plus held-out queries drawn the
//! same way, so nearest-neighbour structure resembles real sentence embeddings more than
//! uniform noise does.

/// A small, fast, seedable PRNG (SplitMix64), so the generator needs no dependency and
/// produces the same data everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn next_gaussian(&mut self) -> f32 {
        let u1 = self.next_f32().max(1e-7);
        let u2 = self.next_f32();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// `n` clustered unit vectors of `dim` dimensions (row-major), then `n_queries` queries.
pub fn clustered(seed: u64, n: usize, n_queries: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let n_clusters = (n / 100).clamp(8, 1_000);
    let centres: Vec<f32> = (0..n_clusters * dim).map(|_| rng.next_gaussian()).collect();
    let mut draw = |count: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(count * dim);
        for _ in 0..count {
            let c = (rng.next_u64() % n_clusters as u64) as usize;
            let start = out.len();
            for d in 0..dim {
                out.push(centres[c * dim + d] + 0.9 * rng.next_gaussian());
            }
            let v = &mut out[start..];
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
        }
        out
    };
    let data = draw(n);
    let queries = draw(n_queries);
    (data, queries)
}
