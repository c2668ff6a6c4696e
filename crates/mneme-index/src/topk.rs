//! A bounded top-k collector (a min-heap of the best k seen so far).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One search result: the caller's key and its similarity (dot product of unit vectors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The key the vector was inserted under.
    pub key: u64,
    /// Cosine similarity to the query.
    pub score: f32,
}

#[derive(Debug, Clone, Copy)]
struct MinFirst(f32, u64);

impl PartialEq for MinFirst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for MinFirst {}
impl PartialOrd for MinFirst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MinFirst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the worst kept hit (lowest score, then highest key).
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// Keeps the `k` highest-scoring hits offered to it.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<MinFirst>,
}

impl TopK {
    /// A collector for `k` hits.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The score a new hit must beat to enter (−∞ while not full).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |m| m.0)
        }
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, key: u64, score: f32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(MinFirst(score, key));
        } else if score > self.threshold() {
            self.heap.pop();
            self.heap.push(MinFirst(score, key));
        }
    }

    /// The kept hits, best first (ties by ascending key, so results are deterministic).
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .heap
            .into_iter()
            .map(|m| Hit {
                key: m.1,
                score: m.0,
            })
            .collect();
        sort_hits(&mut hits);
        hits
    }
}

/// Sorts best first, ties by ascending key.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.key.cmp(&b.key)));
}
