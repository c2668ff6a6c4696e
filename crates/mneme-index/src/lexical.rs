//! One agent's lexical index: BM25 over hashed terms, scored in [0, 1].
//!
//! Terms arrive already analyzed (`mneme-embed`'s analyzer), as 64-bit hashes. Documents
//! live in dense slots (reused after removal) so a search sums scores in an array. Postings
//! are append-only lists of `(slot, generation, tf)`; a document's current generation lives
//! in its slot, so removing or re-inserting a document leaves stale postings that searches
//! skip, and a compaction rewrites the lists once stale postings outnumber live ones.
//!
//! ```text
//! idf(t)   = ln(1 + (N − df + ½) / (df + ½))
//! bm25     = Σ_t∈q∩d idf(t) · tf · (k1 + 1) / (tf + k1 · (1 − b + b · len / avg_len))
//! score    = bm25 / Σ_t∈q idf(t) · (k1 + 1)            in [0, 1]
//! ```
//! The normaliser is BM25's bound for this query (every term, with unbounded frequency), so
//! a score is comparable across queries and agents and never clamps (a clamped score was
//! measured to lose the ranking among full matches): a short memory with every query word
//! once scores about 0.45, one with half of the (idf-weighted) words about 0.2, none 0.
//! A query term no memory has counts in the normaliser at the idf of an unseen term (df 0):
//! matching one word of a question whose other words this agent never stored is weak
//! evidence. Dropping such terms (as before) made that one word a full match; counting them
//! raised R@10 and the confidence's separation on both evaluation sets (BENCHMARKS.md).

use foldhash::HashMap;

/// BM25's term-frequency saturation.
pub const BM25_K1: f32 = 1.2;
/// BM25's length normalisation.
pub const BM25_B: f32 = 0.75;

#[derive(Debug, Clone)]
struct Doc {
    key: u64,
    generation: u32,
    len: u32,
    /// Distinct terms and their frequencies, sorted by term.
    terms: Box<[(u64, u32)]>,
}

#[derive(Debug, Clone, Copy)]
struct Posting {
    slot: u32,
    generation: u32,
    tf: u32,
}

/// BM25 over one agent's memories. Documents live in dense slots (reused after removal), so
/// a search accumulates scores in an array, not a hash map.
#[derive(Debug, Clone, Default)]
pub struct LexicalIndex {
    slot_of: HashMap<u64, u32>,
    docs: Vec<Option<Doc>>,
    free: Vec<u32>,
    postings: HashMap<u64, Vec<Posting>>,
    /// Live documents containing each term.
    df: HashMap<u64, u32>,
    total_len: u64,
    next_generation: u32,
    live_postings: usize,
    stale_postings: usize,
}

impl LexicalIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents indexed.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    fn doc(&self, slot: u32) -> Option<&Doc> {
        self.docs.get(slot as usize).and_then(Option::as_ref)
    }

    /// Indexes `key` with `terms` (repeats are term frequencies), replacing what it had.
    pub fn insert(&mut self, key: u64, terms: &[u64]) {
        self.remove(key);
        let mut sorted = terms.to_vec();
        sorted.sort_unstable();
        let mut distinct: Vec<(u64, u32)> = Vec::new();
        for t in sorted {
            match distinct.last_mut() {
                Some((last, n)) if *last == t => *n += 1,
                _ => distinct.push((t, 1)),
            }
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.docs.push(None);
                (self.docs.len() - 1) as u32
            }
        };
        for &(term, tf) in &distinct {
            self.postings.entry(term).or_default().push(Posting {
                slot,
                generation,
                tf,
            });
            *self.df.entry(term).or_default() += 1;
        }
        self.live_postings += distinct.len();
        self.total_len += terms.len() as u64;
        self.slot_of.insert(key, slot);
        self.docs[slot as usize] = Some(Doc {
            key,
            generation,
            len: terms.len() as u32,
            terms: distinct.into_boxed_slice(),
        });
    }

    /// Forgets `key` (its postings go stale).
    pub fn remove(&mut self, key: u64) {
        let Some(slot) = self.slot_of.remove(&key) else {
            return;
        };
        let Some(doc) = self.docs.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        for (term, _) in doc.terms.iter() {
            if let Some(n) = self.df.get_mut(term) {
                *n -= 1;
                if *n == 0 {
                    self.df.remove(term);
                }
            }
        }
        self.total_len -= u64::from(doc.len);
        self.live_postings -= doc.terms.len();
        self.stale_postings += doc.terms.len();
        if self.stale_postings > self.live_postings.max(1024) {
            self.compact();
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self {
            next_generation: self.next_generation,
            ..Self::default()
        };
    }

    fn compact(&mut self) {
        let docs = &self.docs;
        self.postings.retain(|_, list| {
            list.retain(|p| {
                docs.get(p.slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| d.generation == p.generation)
            });
            list.shrink_to_fit();
            !list.is_empty()
        });
        self.stale_postings = 0;
    }

    /// The query's distinct terms with their idf, and the normaliser (BM25's bound for the
    /// query). Terms no document has match nothing but count in the normaliser.
    pub fn prepare(&self, query_terms: &[u64]) -> PreparedQuery {
        let n = self.len() as f32;
        let mut terms: Vec<u64> = query_terms.to_vec();
        terms.sort_unstable();
        terms.dedup();
        let mut max = 0.0f32;
        let weighted: Vec<(u64, f32)> = terms
            .into_iter()
            .filter_map(|t| {
                let df = self.df.get(&t).map_or(0.0, |&df| df as f32);
                let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                max += idf * (BM25_K1 + 1.0);
                (df > 0.0).then_some((t, idf))
            })
            .collect();
        PreparedQuery {
            terms: weighted,
            max,
            avg_len: if self.is_empty() {
                1.0
            } else {
                self.total_len as f32 / n
            },
        }
    }

    fn term_score(&self, q: &PreparedQuery, idf: f32, tf: u32, len: u32) -> f32 {
        let tf = tf as f32;
        let norm = 1.0 - BM25_B + BM25_B * len as f32 / q.avg_len.max(f32::MIN_POSITIVE);
        idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)
    }

    /// The normalised score of one document (0 when absent or nothing matches).
    pub fn score(&self, q: &PreparedQuery, key: u64) -> f32 {
        if q.max <= 0.0 {
            return 0.0;
        }
        let Some(doc) = self.slot_of.get(&key).and_then(|s| self.doc(*s)) else {
            return 0.0;
        };
        let mut s = 0.0;
        for &(term, idf) in &q.terms {
            if let Ok(i) = doc.terms.binary_search_by_key(&term, |(t, _)| *t) {
                s += self.term_score(q, idf, doc.terms[i].1, doc.len);
            }
        }
        (s / q.max).clamp(0.0, 1.0)
    }

    /// The `k` best documents `accept` lets through, best first, with normalised scores
    /// (only documents sharing at least one term).
    pub fn search(
        &self,
        q: &PreparedQuery,
        k: usize,
        accept: &dyn Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        if q.max <= 0.0 || k == 0 {
            return Vec::new();
        }
        // Scores by slot; `touched` lists the slots with a score, in first-touch order.
        let mut acc = vec![0.0f32; self.docs.len()];
        let mut touched: Vec<u32> = Vec::new();
        for &(term, idf) in &q.terms {
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            for p in list {
                let Some(doc) = self.doc(p.slot) else {
                    continue;
                };
                if doc.generation != p.generation {
                    continue;
                }
                let a = &mut acc[p.slot as usize];
                if *a == 0.0 {
                    touched.push(p.slot);
                }
                // Every matching term adds a positive score, so 0 means untouched.
                *a += self
                    .term_score(q, idf, p.tf, doc.len)
                    .max(f32::MIN_POSITIVE);
            }
        }
        let mut hits: Vec<(u64, f32)> = touched
            .into_iter()
            .filter_map(|slot| {
                let key = self.doc(slot)?.key;
                accept(key).then(|| (key, (acc[slot as usize] / q.max).clamp(0.0, 1.0)))
            })
            .collect();
        let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, by_score);
            hits.truncate(k);
        }
        hits.sort_unstable_by(by_score);
        hits
    }
}

/// A query ready to score: its distinct known terms with idf, and its normaliser.
#[derive(Debug, Clone, Default)]
pub struct PreparedQuery {
    terms: Vec<(u64, f32)>,
    max: f32,
    avg_len: f32,
}

impl PreparedQuery {
    /// True when no query term occurs in the agent (every score is 0).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(docs: &[&[u64]]) -> LexicalIndex {
        let mut ix = LexicalIndex::new();
        for (k, d) in docs.iter().enumerate() {
            ix.insert(k as u64, d);
        }
        ix
    }

    #[test]
    fn rarer_terms_weigh_more_and_scores_stay_in_bounds() {
        let ix = index(&[&[1, 2], &[1, 3], &[1, 4], &[5, 6]]);
        let q = ix.prepare(&[1, 3]);
        let hits = ix.search(&q, 10, &|_| true);
        assert_eq!(hits[0].0, 1, "{hits:?}");
        assert_eq!(hits.len(), 3);
        assert!(hits.iter().all(|(_, s)| (0.0..=1.0).contains(s)));
        assert_eq!(ix.score(&q, 3), 0.0);
        assert!((ix.score(&q, 1) - hits[0].1).abs() < 1e-6);
        assert!(ix.search(&ix.prepare(&[99]), 10, &|_| true).is_empty());
    }

    #[test]
    fn query_words_no_memory_has_weaken_a_match() {
        let ix = index(&[&[1, 2], &[3, 4]]);
        let known = ix.score(&ix.prepare(&[1]), 0);
        let with_unknown = ix.score(&ix.prepare(&[1, 99]), 0);
        assert!(known > 0.0 && with_unknown > 0.0);
        assert!(with_unknown < known * 0.6, "{with_unknown} vs {known}");
        assert!(ix.prepare(&[99]).is_empty());
    }

    #[test]
    fn removed_and_replaced_documents_never_match_stale_terms() {
        let mut ix = index(&[&[1], &[1, 2], &[2]]);
        ix.remove(1);
        ix.insert(2, &[3]);
        let q = ix.prepare(&[1, 2]);
        let hits = ix.search(&q, 10, &|_| true);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0]);
        assert_eq!(ix.len(), 2);
        ix.clear();
        assert!(ix.is_empty() && ix.search(&ix.prepare(&[1]), 10, &|_| true).is_empty());
    }

    #[test]
    fn compaction_keeps_exactly_the_live_postings() {
        let mut ix = LexicalIndex::new();
        for round in 0..5u64 {
            for k in 0..1000u64 {
                ix.insert(k, &[k % 7, 100 + round]);
            }
        }
        for k in 0..500u64 {
            ix.remove(k);
        }
        let q = ix.prepare(&[104]);
        let hits = ix.search(&q, 2000, &|_| true);
        assert_eq!(hits.len(), 500);
        assert!(ix.search(&ix.prepare(&[100]), 10, &|_| true).is_empty());
        let filtered = ix.search(&q, 2000, &|k| k % 2 == 0);
        assert_eq!(filtered.len(), 250);
        let top = ix.search(&q, 3, &|_| true);
        assert_eq!(top.len(), 3);
    }
}
