//! Text → vectors and text → terms, for Mneme and nothing else of it.
//!
//! Embedders turn texts into vectors; each has an id and a dimension that are stored with
//! every agent that uses it, so vector spaces never mix. [`analyze`] turns a text into the
//! terms a lexical index stores. This crate knows nothing of memories, agents or scoring.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub mod analyzer;
#[cfg(all(feature = "minilm", target_arch = "x86_64"))]
mod avx512;
mod hash;
#[cfg(feature = "minilm")]
mod minilm;
#[cfg(feature = "openai")]
mod openai;
pub mod static_model;
mod wordpiece;

pub use analyzer::{TERMS_MAX, analyze};
pub use hash::{HASH_DIM, HashEmbedder};
#[cfg(feature = "minilm")]
pub use minilm::{MINILM_BATCH_MAX, MINILM_TOKENS_MAX, MiniLmEmbedder, MiniLmKernel};
#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiEmbedder};
pub use static_model::StaticEmbedder;

/// Largest dimension any embedder here produces or accepts.
pub const DIMENSIONS_MAX: usize = 4096;

/// Id stored for agents whose vectors come from the client.
pub const CLIENT_EMBEDDER_ID: &str = "client";

/// Turns texts into vectors.
pub trait Embedder: Send + Sync + fmt::Debug {
    /// Stable id, stored with each agent (changing what an id computes is a format change).
    fn id(&self) -> &str;
    /// Output dimension.
    fn dim(&self) -> usize;
    /// Which family of vector geometry it produces (scoring calibrates per family).
    fn family(&self) -> Family;
    /// Embeds each text; every output has `dim()` components (not necessarily unit length).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
    /// True when embedding one query-sized text takes microseconds of CPU and no I/O, so
    /// a caller may run it inline on an async executor. The default is the safe answer.
    fn is_cheap(&self) -> bool {
        false
    }
}

/// The geometry family of an embedder's vectors: embedders of one family give comparable
/// cosines (so one calibration fits them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// all-MiniLM-L6-v2 (384 dims).
    MiniLm,
    /// A static model distilled from MiniLM, as distributed.
    StaticMiniLm,
    /// The built-in static model with its common direction removed.
    StaticMiniLmCentered,
    /// The lexical hash embedder.
    LexicalHash,
    /// Anything else (remote endpoints, client vectors).
    Unknown,
}

/// The embedders a process offers, and which one new agents get.
#[derive(Clone)]
pub struct Embedders {
    default_id: String,
    by_id: BTreeMap<String, Arc<dyn Embedder>>,
}

impl fmt::Debug for Embedders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedders")
            .field("default", &self.default_id)
            .field("available", &self.by_id.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Embedders {
    /// A registry whose default is `default`.
    pub fn new(default: Arc<dyn Embedder>) -> Self {
        let mut by_id = BTreeMap::new();
        let default_id = default.id().to_owned();
        by_id.insert(default_id.clone(), default);
        Self { default_id, by_id }
    }

    /// Adds another embedder agents may be configured with.
    pub fn with(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.by_id.insert(embedder.id().to_owned(), embedder);
        self
    }

    /// The default embedder.
    pub fn default_embedder(&self) -> &Arc<dyn Embedder> {
        &self.by_id[&self.default_id]
    }

    /// An embedder by id.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn Embedder>> {
        self.by_id.get(id)
    }

    /// Ids on offer.
    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }
}

impl Default for Embedders {
    /// The centered built-in static model when compiled in (with the model as distributed,
    /// for agents created with it), else the lexical hash.
    fn default() -> Self {
        let hash: Arc<dyn Embedder> = Arc::new(HashEmbedder::new());
        match (
            StaticEmbedder::builtin_centered(),
            StaticEmbedder::builtin(),
        ) {
            (Some(Ok(centered)), Some(Ok(plain))) => Self::new(Arc::new(centered))
                .with(Arc::new(plain))
                .with(hash),
            _ => Self::new(hash),
        }
    }
}
