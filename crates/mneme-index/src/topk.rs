//! A bounded top-k collector (a min-heap of the best k seen so far).

use std::cmp::Ordering;

/// One search result: the caller's key and its similarity (dot product of unit vectors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The key the vector was inserted under.
    pub key: u64,
    /// Cosine similarity to the query.
    pub score: f32,
}

/// Keeps the `k` highest-scoring hits offered to it.
///
/// Candidates go into a buffer; whenever it holds 2k, a linear-time selection keeps the best
/// k and raises the admission threshold. That is O(n) for n offers whatever k is — a binary
/// heap costs O(n log k), which dominated scans with windows of hundreds or thousands.
/// Ordering is total (score descending, then key ascending), so results are deterministic.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    buf: Vec<(f32, u64)>,
    threshold: f32,
}

fn better(a: &(f32, u64), b: &(f32, u64)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl TopK {
    /// A collector for `k` hits.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            buf: Vec::with_capacity(2 * k.min(1 << 16)),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// A score a new hit must reach to be worth offering (a lower bound of the k-th best
    /// so far; −∞ until k hits were seen).
    #[inline]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, key: u64, score: f32) {
        if self.k == 0 || score < self.threshold {
            return;
        }
        self.buf.push((score, key));
        if self.buf.len() >= 2 * self.k.max(32) {
            self.prune();
        }
    }

    fn prune(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, better);
            self.buf.truncate(self.k);
            self.threshold = self.buf.iter().map(|h| h.0).fold(f32::INFINITY, f32::min);
        }
    }

    /// The kept hits, best first (ties by ascending key).
    pub fn into_sorted(mut self) -> Vec<Hit> {
        self.prune();
        self.buf.sort_unstable_by(better);
        self.buf
            .into_iter()
            .map(|(score, key)| Hit { key, score })
            .collect()
    }
}

/// Sorts best first, ties by ascending key.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn keeps_exactly_the_best_k_in_total_order(scores in proptest::collection::vec(-100i32..100, 0..400), k in 0usize..80) {
            let mut top = TopK::new(k);
            for (key, s) in scores.iter().enumerate() {
                top.push(key as u64, *s as f32 / 7.0);
            }
            let mut naive: Vec<Hit> = scores.iter().enumerate().map(|(key, s)| Hit { key: key as u64, score: *s as f32 / 7.0 }).collect();
            sort_hits(&mut naive);
            naive.truncate(k);
            prop_assert_eq!(top.into_sorted(), naive);
        }
    }
}
