//! Integration tests of `mneme-engine`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod basics;
mod graphs;
mod hybrid;
mod isolation;
mod kill;
mod log_model;
#[cfg(feature = "minilm")]
mod minilm;
mod model;
#[cfg(feature = "openai")]
mod openai;
mod transfer;
mod ttl_dedup;

use std::sync::Arc;

use mneme_engine::embed::{Embedders, HashEmbedder};
use mneme_engine::{Engine, EngineConfig, ManualClock};

pub const T0: i64 = 1_800_000_000_000;

/// An engine in `dir` with a manual clock and no background worker (deterministic).
pub fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let config = EngineConfig {
        clock: clock.clone(),
        background: false,
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

/// Same, with the lexical hash embedder as the default.
pub fn open_hash(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let config = EngineConfig {
        clock: clock.clone(),
        background: false,
        embedders: Embedders::new(Arc::new(HashEmbedder::new())),
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

pub fn text(content: &str) -> mneme_engine::RememberInput {
    mneme_engine::RememberInput {
        content: content.into(),
        ..Default::default()
    }
}

pub fn query(q: &str) -> mneme_engine::RecallQuery {
    mneme_engine::RecallQuery {
        query: q.into(),
        ..Default::default()
    }
}
