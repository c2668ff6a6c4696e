//! Per-type and per-agent scoring parameters with documented defaults.

use crate::{DAY_MS, MemoryType};

/// How one memory type is weighted and how it decays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypeParams {
    /// Multiplier in (0, 1] applied to this type's confidence.
    pub type_weight: f32,
    /// Time for the decaying part of recency to halve, in days (`f64::INFINITY`: never).
    pub half_life_days: f64,
    /// Recency never falls below this (in [0, 1]): old but relevant memories stay findable.
    pub decay_floor: f32,
}

/// Everything that shapes a confidence. Defaults are documented in `docs/scoring.md`;
/// every field can be overridden per agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringParams {
    /// Episodic memories: what happened.
    pub episodic: TypeParams,
    /// Semantic memories: what is true.
    pub semantic: TypeParams,
    /// Procedural memories: how to do things.
    pub procedural: TypeParams,
    /// Accesses at which frequency reaches 1 − 1/e ≈ 0.63 of its maximum.
    pub frequency_saturation: f32,
    /// Half-life of the boost from the last access, in days.
    pub access_half_life_days: f64,
    /// Weight of recency in the context score (the three weights sum to 1).
    pub recency_weight: f32,
    /// Weight of frequency in the context score.
    pub frequency_weight: f32,
    /// Weight of importance in the context score.
    pub importance_weight: f32,
    /// Most cosine a memory can lose to poor context (stale, unimportant, never used).
    pub context_shift: f32,
    /// Cosine a full lexical match is worth (0: semantic similarity alone).
    pub lexical_weight: f32,
}

/// The default [`ScoringParams::lexical_weight`], measured on the evaluation sets in
/// BENCHMARKS.md ("Recall quality").
pub const LEXICAL_WEIGHT_DEFAULT: f32 = 0.5;

/// Largest [`ScoringParams::lexical_weight`] accepted.
pub const LEXICAL_WEIGHT_MAX: f32 = 2.0;

impl Default for ScoringParams {
    fn default() -> Self {
        Self {
            episodic: TypeParams {
                type_weight: 0.9,
                half_life_days: 7.0,
                decay_floor: 0.3,
            },
            semantic: TypeParams {
                type_weight: 1.0,
                half_life_days: 365.0,
                decay_floor: 0.7,
            },
            procedural: TypeParams {
                type_weight: 1.0,
                half_life_days: 90.0,
                decay_floor: 0.5,
            },
            frequency_saturation: 5.0,
            access_half_life_days: 30.0,
            recency_weight: 0.5,
            frequency_weight: 0.2,
            importance_weight: 0.3,
            context_shift: 0.1,
            lexical_weight: LEXICAL_WEIGHT_DEFAULT,
        }
    }
}

impl ScoringParams {
    /// The parameters of one type.
    pub fn for_type(&self, memory_type: MemoryType) -> &TypeParams {
        match memory_type {
            MemoryType::Episodic => &self.episodic,
            MemoryType::Semantic => &self.semantic,
            MemoryType::Procedural => &self.procedural,
        }
    }

    /// Mutable parameters of one type.
    pub fn for_type_mut(&mut self, memory_type: MemoryType) -> &mut TypeParams {
        match memory_type {
            MemoryType::Episodic => &mut self.episodic,
            MemoryType::Semantic => &mut self.semantic,
            MemoryType::Procedural => &mut self.procedural,
        }
    }

    /// Checks every field's range; returns the first violation as `(field, reason)`.
    /// Scoring clamps anyway, but configuration should be refused rather than clamped.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for t in MemoryType::ALL {
            let p = self.for_type(t);
            let name = t.name();
            if !(p.type_weight > 0.0 && p.type_weight <= 1.0) {
                return Err((format!("{name}.type_weight"), "must be in (0, 1]".into()));
            }
            if p.half_life_days.is_nan() || p.half_life_days <= 0.0 {
                return Err((format!("{name}.half_life_days"), "must be > 0".into()));
            }
            if !(0.0..=1.0).contains(&p.decay_floor) {
                return Err((format!("{name}.decay_floor"), "must be in [0, 1]".into()));
            }
        }
        let unit = [
            ("recency_weight", self.recency_weight),
            ("frequency_weight", self.frequency_weight),
            ("importance_weight", self.importance_weight),
            ("context_shift", self.context_shift),
        ];
        for (field, value) in unit {
            if !(0.0..=1.0).contains(&value) {
                return Err((field.into(), "must be in [0, 1]".into()));
            }
        }
        let sum = self.recency_weight + self.frequency_weight + self.importance_weight;
        if (sum - 1.0).abs() > 1e-3 {
            return Err((
                "recency_weight + frequency_weight + importance_weight".into(),
                format!("must sum to 1, not {sum}"),
            ));
        }
        if !(0.0..=LEXICAL_WEIGHT_MAX).contains(&self.lexical_weight) {
            return Err((
                "lexical_weight".into(),
                format!("must be in [0, {LEXICAL_WEIGHT_MAX}]"),
            ));
        }
        if self.frequency_saturation.is_nan() || self.frequency_saturation <= 0.0 {
            return Err(("frequency_saturation".into(), "must be > 0".into()));
        }
        if self.access_half_life_days.is_nan() || self.access_half_life_days <= 0.0 {
            return Err(("access_half_life_days".into(), "must be > 0".into()));
        }
        Ok(())
    }
}

pub(crate) fn half_life_ms(days: f64) -> f64 {
    days * DAY_MS
}
