//! Scoring for Mneme: what an agent most needs now, and why.
//!
//! Pure functions only: no I/O, no clock (callers pass `now_ms`), no `Result`. The engine
//! fetches candidates by vector similarity and this crate turns each into a
//! [`Scored`] — a `confidence` in [0, 1] that ranks results, plus the [`ScoreBreakdown`]
//! that explains it. See `docs/scoring.md` for the formulas and why.
//!
//! ```
//! use mneme_scoring::{Calibration, MemorySignals, MemoryType, ScoringParams, score};
//! let params = ScoringParams::default();
//! let now_ms = 1_000_000_000_000;
//! let memory = MemorySignals::new(MemoryType::Semantic, now_ms);
//! let relevant = score(&params, &Calibration::PARAPHRASE_REFERENCE, 0.25, &memory, now_ms);
//! let unrelated = score(&params, &Calibration::PARAPHRASE_REFERENCE, -0.05, &memory, now_ms);
//! assert!(relevant.confidence >= 0.6 && unrelated.confidence <= 0.3);
//! ```

mod calibration;
mod params;
mod score;

pub use calibration::{Calibration, fit_calibration};
pub use params::{LEXICAL_WEIGHT_DEFAULT, LEXICAL_WEIGHT_MAX, ScoringParams, TypeParams};
pub use score::{
    MemorySignals, ScoreBreakdown, Scored, SignalBounds, evidence, rank, score, score_hybrid,
    window_is_exact,
};

/// What kind of memory this is; it decides the decay curve and the type weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryType {
    /// What happened: fades over days to weeks.
    Episodic,
    /// What is true: barely decays.
    Semantic,
    /// How to do things: fades slowly.
    Procedural,
}

impl MemoryType {
    /// All types, in wire order.
    pub const ALL: [MemoryType; 3] = [Self::Episodic, Self::Semantic, Self::Procedural];

    /// Lower-case name, as used in configuration and rendered context.
    pub fn name(self) -> &'static str {
        match self {
            Self::Episodic => "episodic",
            Self::Semantic => "semantic",
            Self::Procedural => "procedural",
        }
    }
}

/// Milliseconds in a day, for readable parameters.
pub const DAY_MS: f64 = 86_400_000.0;
