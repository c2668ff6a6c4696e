//! The confidence formula and its explanation.
//!
//! ```text
//! evidence   = cosine + lexical_weight · lexical                    (lexical: BM25 in [0, 1])
//! relevance  = calibration(evidence)                                in [0, 1]
//! recency    = 1 if pinned, else floor + (1 − floor) · 2^(−age / half_life)
//! frequency  = (1 − e^(−count / saturation)) · (½ + ½ · 2^(−since_access / access_half_life))
//! context    = w_r · recency + w_f · frequency + w_i · importance   (weights sum to 1)
//! shift      = context_shift · (1 − context)                        in [0, context_shift]
//! confidence = type_weight · calibration(evidence − shift)
//! ```
//! Lexical evidence (the query's words, stemmed, in the memory; see `mneme-index`'s
//! `lexical`) counts in cosine units too: a memory with every query word is treated as if it
//! were `lexical_weight` more similar. Both signals enter one calibrated curve, so the fused
//! confidence is increasing in each and the re-ranking certificate still holds.
//! Context acts in cosine units: a stale, unimportant, never-used memory is treated as if
//! it were at most `context_shift` (default 0.1) less similar. So context reorders
//! near-ties but never lets a loosely related memory overtake a much closer one of the same
//! type. Confidence is increasing in cosine, never exceeds `calibration(cosine)`, and is
//! bounded below by `type_weight · calibration(cosine − context_shift)`: decay can lower a
//! relevant memory, never bury it.

use std::cmp::Ordering;

use crate::MemoryType;
use crate::calibration::Calibration;
use crate::params::{ScoringParams, half_life_ms};

/// What scoring needs to know about one memory besides its similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemorySignals {
    /// Its type.
    pub memory_type: MemoryType,
    /// When its content was last written (creation or update), in ms since the epoch.
    pub updated_at_ms: i64,
    /// When it was last returned by a recall (0: never).
    pub last_accessed_at_ms: i64,
    /// How often it was returned by a recall.
    pub access_count: u64,
    /// Importance in [0, 1] (0.5 when the client gave none).
    pub importance: f32,
    /// Pinned memories never decay.
    pub pinned: bool,
}

impl MemorySignals {
    /// A memory of `memory_type` written at `now_ms`, never accessed, of default importance.
    pub fn new(memory_type: MemoryType, now_ms: i64) -> Self {
        Self {
            memory_type,
            updated_at_ms: now_ms,
            last_accessed_at_ms: 0,
            access_count: 0,
            importance: 0.5,
            pinned: false,
        }
    }
}

/// Upper bounds on the signals of a set of memories, so that a re-ranking certificate can
/// bound the confidence of the memories it did not score by their similarity alone, instead
/// of by the (much looser) bound that ignores signals. Widened by every memory added or
/// changed and never narrowed: after a removal the bounds still hold, only less tightly.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SignalBounds {
    /// The highest importance seen.
    pub importance_max: f32,
    /// The highest access count seen.
    pub access_count_max: u64,
}

impl SignalBounds {
    /// Takes `memory` into the bounds.
    pub fn widen(&mut self, memory: &MemorySignals) {
        self.importance_max = self.importance_max.max(unit(memory.importance));
        self.access_count_max = self.access_count_max.max(memory.access_count);
    }

    /// The signals of a memory at least as favoured as any within these bounds at
    /// `now_ms`, among memories of the `types` given: pinned (so fully fresh), used as
    /// often as the most used one just now, as important as the most important one, of the
    /// best-weighted type. Confidence increases in each of these, so scoring this memory
    /// with some evidence bounds every such memory's score with that evidence (computed by
    /// the same code, so without rounding slack). `None` when `types` is empty.
    pub fn best(
        &self,
        params: &ScoringParams,
        types: impl IntoIterator<Item = MemoryType>,
        now_ms: i64,
    ) -> Option<MemorySignals> {
        let memory_type = types.into_iter().max_by(|a, b| {
            let weight = |t: &MemoryType| unit(params.for_type(*t).type_weight);
            weight(a).total_cmp(&weight(b))
        })?;
        Some(MemorySignals {
            memory_type,
            updated_at_ms: now_ms,
            last_accessed_at_ms: now_ms,
            access_count: self.access_count_max,
            importance: self.importance_max,
            pinned: true,
        })
    }
}

/// The explanation of a confidence: every component that entered the formula.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ScoreBreakdown {
    /// Calibrated similarity (relevance of the raw cosine alone, before context) in [0, 1].
    pub similarity: f32,
    /// Lexical match (normalised BM25 of the query's words in the memory) in [0, 1].
    pub lexical: f32,
    /// Recency in [decay floor, 1].
    pub recency: f32,
    /// Access-frequency reinforcement in [0, 1].
    pub frequency: f32,
    /// Importance in [0, 1].
    pub importance: f32,
    /// The type weight applied.
    pub type_weight: f32,
}

/// A confidence and its explanation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scored {
    /// In [0, 1]; ranks results.
    pub confidence: f32,
    /// ln(confidence) in f64: the ranking key, which keeps ordering where the f32
    /// confidence has saturated.
    pub rank_key: f64,
    /// Why.
    pub scores: ScoreBreakdown,
}

fn halvings(elapsed_ms: f64, half_life_ms: f64) -> f64 {
    if half_life_ms.is_infinite() {
        return 1.0;
    }
    (-elapsed_ms.max(0.0) / half_life_ms).exp2()
}

fn unit(x: f32) -> f32 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Recency of a memory at `now_ms`: 1 when fresh or pinned, falling to the type's floor.
pub fn recency(params: &ScoringParams, memory: &MemorySignals, now_ms: i64) -> f32 {
    if memory.pinned {
        return 1.0;
    }
    let tp = params.for_type(memory.memory_type);
    let floor = unit(tp.decay_floor);
    let age_ms = (now_ms - memory.updated_at_ms) as f64;
    let decayed = halvings(age_ms, half_life_ms(tp.half_life_days)) as f32;
    unit(floor + (1.0 - floor) * decayed)
}

/// Access-frequency reinforcement: saturating in the count, fading with the last access.
pub fn frequency(params: &ScoringParams, memory: &MemorySignals, now_ms: i64) -> f32 {
    if memory.access_count == 0 {
        return 0.0;
    }
    let saturation = f64::from(params.frequency_saturation.max(f32::MIN_POSITIVE));
    let count = 1.0 - (-(memory.access_count as f64) / saturation).exp();
    let since_ms = (now_ms - memory.last_accessed_at_ms) as f64;
    let fresh = halvings(since_ms, half_life_ms(params.access_half_life_days));
    unit((count * (0.5 + 0.5 * fresh)) as f32)
}

/// Scores one candidate with raw `cosine` similarity to the query and no lexical evidence.
pub fn score(
    params: &ScoringParams,
    calibration: &Calibration,
    cosine: f32,
    memory: &MemorySignals,
    now_ms: i64,
) -> Scored {
    score_hybrid(params, calibration, cosine, 0.0, memory, now_ms)
}

/// The evidence (in cosine units) of a `cosine` and a `lexical` score in [0, 1].
pub fn evidence(params: &ScoringParams, cosine: f32, lexical: f32) -> f32 {
    let lexical = unit(lexical);
    if lexical == 0.0 {
        return cosine;
    }
    cosine + params.lexical_weight.max(0.0) * lexical
}

/// Scores one candidate with raw `cosine` similarity and a `lexical` match in [0, 1].
pub fn score_hybrid(
    params: &ScoringParams,
    calibration: &Calibration,
    cosine: f32,
    lexical: f32,
    memory: &MemorySignals,
    now_ms: i64,
) -> Scored {
    let evidence = evidence(params, cosine, lexical);
    let scores = ScoreBreakdown {
        similarity: calibration.relevance(cosine),
        lexical: unit(lexical),
        recency: recency(params, memory, now_ms),
        frequency: frequency(params, memory, now_ms),
        importance: unit(memory.importance),
        type_weight: unit(params.for_type(memory.memory_type).type_weight),
    };
    let context = unit(
        params.recency_weight * scores.recency
            + params.frequency_weight * scores.frequency
            + params.importance_weight * scores.importance,
    );
    let shift = unit(params.context_shift) * (1.0 - context);
    let log = f64::from(scores.type_weight).ln() + calibration.log_relevance(evidence - shift);
    Scored {
        confidence: unit(log.exp() as f32),
        rank_key: log,
        scores,
    }
}

/// Sorts by confidence (its unsaturated `rank_key`), highest first; ties keep their order
/// (stable).
pub fn rank<T>(items: &mut [(T, Scored)]) {
    items.sort_by(|a, b| {
        b.1.rank_key
            .partial_cmp(&a.1.rank_key)
            .unwrap_or(Ordering::Equal)
    });
}

/// True when re-ranking a window is provably the same as re-ranking everything: no memory
/// outside the window can beat the window's k-th best (its `rank_key`) when none can have a
/// `rank_key` above `best_excluded` — for example the score of [`SignalBounds::best`] with
/// the best evidence left outside, or, knowing nothing of the signals, the log relevance
/// of that evidence (confidence never exceeds relevance, see
/// [`Calibration::log_relevance`]).
pub fn window_is_exact(kth_rank_key: f64, best_excluded: f64) -> bool {
    kth_rank_key >= best_excluded
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::DAY_MS;

    const NOW: i64 = 1_800_000_000_000;

    fn any_type() -> impl Strategy<Value = MemoryType> {
        prop_oneof![
            Just(MemoryType::Episodic),
            Just(MemoryType::Semantic),
            Just(MemoryType::Procedural)
        ]
    }

    prop_compose! {
        fn any_memory()(
            memory_type in any_type(),
            age_days in 0.0f64..2000.0,
            access_days in 0.0f64..2000.0,
            access_count in 0u64..1_000_000,
            importance in 0.0f32..=1.0,
            pinned in any::<bool>(),
        ) -> MemorySignals {
            MemorySignals {
                memory_type,
                updated_at_ms: NOW - (age_days * DAY_MS) as i64,
                last_accessed_at_ms: NOW - (access_days * DAY_MS) as i64,
                access_count,
                importance,
                pinned,
            }
        }
    }

    proptest! {
        /// The certificate's premise: the best memory within a set's bounds scores at least
        /// as high as every memory of the set, at any evidence (rank keys compared exactly).
        #[test]
        fn the_best_within_bounds_outscores_every_memory_of_the_set(
            set in proptest::collection::vec(any_memory(), 1..20),
            cos in -1.0f32..1.0,
            lexical in 0.0f32..=1.0,
            lexical_weight in 0.0f32..=2.0,
        ) {
            let p = ScoringParams { lexical_weight, ..ScoringParams::default() };
            let cal = Calibration::PARAPHRASE_REFERENCE;
            let mut bounds = SignalBounds::default();
            for m in &set {
                bounds.widen(m);
            }
            let best = bounds.best(&p, set.iter().map(|m| m.memory_type), NOW).unwrap();
            let bound = score_hybrid(&p, &cal, cos, lexical, &best, NOW).rank_key;
            for m in &set {
                let s = score_hybrid(&p, &cal, cos, lexical, m, NOW);
                prop_assert!(s.rank_key <= bound, "{m:?} {s:?} > {bound}");
            }
            prop_assert!(bound <= cal.log_relevance(evidence(&p, cos, lexical)));
        }

        #[test]
        fn confidence_and_components_stay_in_bounds(m in any_memory(), cos in -1.5f32..1.5) {
            let s = score(&ScoringParams::default(), &Calibration::PARAPHRASE_REFERENCE, cos, &m, NOW);
            for v in [s.confidence, s.scores.similarity, s.scores.recency, s.scores.frequency,
                      s.scores.importance, s.scores.type_weight] {
                prop_assert!((0.0..=1.0).contains(&v), "{s:?}");
            }
            prop_assert!(s.confidence <= s.scores.similarity);
        }

        #[test]
        fn lexical_evidence_only_raises_confidence_and_is_bounded(m in any_memory(), cos in -1.0f32..1.0, a in 0.0f32..=1.0, b in 0.0f32..=1.0) {
            let p = ScoringParams::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let s_lo = score_hybrid(&p, &Calibration::PARAPHRASE_REFERENCE, cos, lo, &m, NOW);
            let s_hi = score_hybrid(&p, &Calibration::PARAPHRASE_REFERENCE, cos, hi, &m, NOW);
            prop_assert!(s_lo.confidence <= s_hi.confidence);
            prop_assert!(s_hi.confidence <= Calibration::PARAPHRASE_REFERENCE.relevance(evidence(&p, cos, hi)) + 1e-6);
            prop_assert_eq!(score_hybrid(&p, &Calibration::PARAPHRASE_REFERENCE, cos, 0.0, &m, NOW), score(&p, &Calibration::PARAPHRASE_REFERENCE, cos, &m, NOW));
        }

        #[test]
        fn confidence_is_monotone_in_similarity(m in any_memory(), a in -1.0f32..1.0, b in -1.0f32..1.0) {
            let p = ScoringParams::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let s_lo = score(&p, &Calibration::PARAPHRASE_REFERENCE, lo, &m, NOW).confidence;
            let s_hi = score(&p, &Calibration::PARAPHRASE_REFERENCE, hi, &m, NOW).confidence;
            prop_assert!(s_lo <= s_hi, "{lo}->{s_lo} vs {hi}->{s_hi}");
        }

        #[test]
        fn newer_episodic_memories_score_at_least_as_high(m in any_memory(), extra_days in 0.0f64..500.0, cos in -1.0f32..1.0) {
            let p = ScoringParams::default();
            let newer = MemorySignals { memory_type: MemoryType::Episodic, pinned: false, ..m };
            let older = MemorySignals { updated_at_ms: newer.updated_at_ms - (extra_days * DAY_MS) as i64, ..newer };
            let c_new = score(&p, &Calibration::PARAPHRASE_REFERENCE, cos, &newer, NOW).confidence;
            let c_old = score(&p, &Calibration::PARAPHRASE_REFERENCE, cos, &older, NOW).confidence;
            prop_assert!(c_new >= c_old);
        }

        #[test]
        fn pinned_never_decays_and_floors_hold(m in any_memory()) {
            let p = ScoringParams::default();
            let pinned = MemorySignals { pinned: true, ..m };
            prop_assert_eq!(recency(&p, &pinned, NOW), 1.0);
            let unpinned = MemorySignals { pinned: false, ..m };
            let floor = p.for_type(m.memory_type).decay_floor;
            prop_assert!(recency(&p, &unpinned, NOW) >= floor);
            // An old but relevant memory loses at most `context_shift` of cosine.
            let s = score(&p, &Calibration::PARAPHRASE_REFERENCE, 0.5, &unpinned, NOW);
            let bound = s.scores.type_weight * Calibration::PARAPHRASE_REFERENCE.relevance(0.5 - p.context_shift);
            prop_assert!(s.confidence >= bound - 1e-6);
        }

        #[test]
        fn calibration_keeps_order(a in -1.0f32..1.0, b in -1.0f32..1.0) {
            for cal in [Calibration::MINILM, Calibration::PARAPHRASE_REFERENCE, Calibration::STATIC_M2V, Calibration::STATIC_M2V_CENTERED, Calibration::LEXICAL_HASH, Calibration::UNKNOWN] {
                if a < b {
                    prop_assert!(cal.relevance(a) <= cal.relevance(b));
                }
            }
        }

        #[test]
        fn frequency_saturates(count in 1u64..u64::MAX) {
            let p = ScoringParams::default();
            let m = MemorySignals { access_count: count, last_accessed_at_ms: NOW, ..MemorySignals::new(MemoryType::Semantic, NOW) };
            let f = frequency(&p, &m, NOW);
            prop_assert!(f > 0.0 && f <= 1.0);
            let more = MemorySignals { access_count: count.saturating_mul(2), ..m };
            prop_assert!(frequency(&p, &more, NOW) >= f);
        }
    }

    #[test]
    fn ranking_keeps_order_where_confidence_saturates() {
        let p = ScoringParams::default();
        let m = MemorySignals::new(MemoryType::Semantic, NOW);
        let lo = score_hybrid(&p, &Calibration::PARAPHRASE_REFERENCE, 0.9, 0.8, &m, NOW);
        let hi = score_hybrid(&p, &Calibration::PARAPHRASE_REFERENCE, 0.95, 0.9, &m, NOW);
        assert_eq!(
            (lo.confidence, hi.confidence),
            (1.0, 1.0),
            "saturated in f32"
        );
        assert!(hi.rank_key > lo.rank_key);
        let mut items = vec![("lo", lo), ("hi", hi)];
        rank(&mut items);
        assert_eq!(items[0].0, "hi");
        assert!((f64::from(lo.confidence).ln() - lo.rank_key).abs() < 1e-6);
    }

    /// What makes windows prove early: for a set of fresh, never-used episodic memories of
    /// default importance, the bound sits well below the signal-blind one.
    #[test]
    fn bounds_of_a_plain_set_are_tighter_than_relevance() {
        let p = ScoringParams::default();
        let cal = Calibration::PARAPHRASE_REFERENCE;
        let mut bounds = SignalBounds::default();
        bounds.widen(&MemorySignals::new(MemoryType::Episodic, NOW));
        assert_eq!(bounds.best(&p, [], NOW), None);
        let best = bounds.best(&p, [MemoryType::Episodic], NOW).unwrap();
        let fresh = score(
            &p,
            &cal,
            0.5,
            &MemorySignals::new(MemoryType::Episodic, NOW),
            NOW,
        );
        let bound = score(&p, &cal, 0.5, &best, NOW).rank_key;
        assert!(bound >= fresh.rank_key);
        assert!(bound < cal.log_relevance(0.5) - 0.1, "{bound}");
    }

    #[test]
    fn a_plain_exp_decay_would_bury_old_memories_but_the_floor_does_not() {
        let p = ScoringParams::default();
        let old = MemorySignals {
            updated_at_ms: NOW - (242.0 * DAY_MS) as i64,
            ..MemorySignals::new(MemoryType::Episodic, NOW)
        };
        assert!(
            (-0.03f64 * 242.0).exp() < 0.001 + 0.0007,
            "the anchor's plain decay"
        );
        let s = score(&p, &Calibration::PARAPHRASE_REFERENCE, 0.4, &old, NOW);
        assert!(s.scores.recency >= 0.3);
        assert!(s.confidence > 0.5, "{s:?}");
    }

    #[test]
    fn default_params_are_valid_and_bad_ones_are_named() {
        assert_eq!(ScoringParams::default().validate(), Ok(()));
        let mut p = ScoringParams::default();
        p.episodic.decay_floor = 1.5;
        assert_eq!(p.validate().unwrap_err().0, "episodic.decay_floor");
        let p = ScoringParams {
            recency_weight: 0.9,
            ..ScoringParams::default()
        };
        assert!(p.validate().unwrap_err().1.contains("sum to 1"));
    }
}
