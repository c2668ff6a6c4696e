//! Mneme's embeddable engine: durable agent memory as a Rust API.
//!
//! [`Engine`] turns `mneme-storage` (durability), `mneme-index` (vector search) and
//! `mneme-scoring` (confidence) into the memory semantics of Mneme's wire contract:
//! remember, recall, inject context, get, list, update, forget, clear, stats, export,
//! import, per-agent configuration. Agents are separate partitions; sessions scope reads.
//! Every write is durable when the call returns (with the default storage options).
//!
//! State is a function of the log: every write becomes one [`mutation::Entry`], logged
//! and then applied by [`apply`] in log order — the same function recovery and replicas
//! use. Agents are snapshotted with the LSN they reflect; a restart loads the snapshots and
//! replays only the log after them.
//!
//! See [`Engine`] for an example, and `examples/quickstart.rs`.

mod agent;
pub mod apply;
mod clock;
mod codec;
/// The embedders (re-exported from `mneme-embed`).
pub use mneme_embed as embed;
mod engine;
mod error;
mod graphs;
mod ids;
pub mod inspect;
pub mod limits;
mod model;
pub mod mutation;
mod read;
pub mod replicate;
mod snapshot;
mod transfer;
mod write;

pub use apply::Outcome;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{AccessRecord, AgentConfigRecord, MemoryRecord, ScoringRecord};
pub use engine::{
    CHECKPOINT_WAL_BYTES_MAX, DEDUP_COSINE_MIN, Engine, EngineConfig, INDEX_TAIL_MAX_DEFAULT,
    WRITER_ABSORB_MAX,
};
pub use error::{Error, Result};
pub use graphs::GRAPH_SNAPSHOT_INTERVAL;
pub use ids::{is_memory_id, new_memory_id};
pub use mneme_index::{GraphKind, IndexConfig, panic_is_caught_here};
pub use mneme_scoring::{Calibration, ScoringParams, TypeParams};
pub use mneme_storage::{Durability, Error as StorageError, Options as StorageOptions, StoreStats};
pub use model::*;
pub use read::{
    LIGHT_READ_LEXICAL_MAX, LIGHT_READ_SCAN_MAX, LIGHT_READ_TOP_K_MAX, estimate_tokens,
};
pub use replicate::{AgentFile, ReadConsistency, Replicator};
pub use transfer::{
    EXPORT_FORMAT_VERSION, EXPORT_LINE_BYTES_MAX, EXPORT_PAGE_MEMORIES, ExportCursor, ExportHeader,
    ExportedMemory, IMPORT_BATCH, Importer,
};
pub use write::{AgentSettings, REEMBED_MEMORIES_MAX};

/// The scoring parameters new agents get for an embedder family: the defaults, with the
/// lexical weight measured best for the family on the evaluation sets (BENCHMARKS.md,
/// "Recall quality": the static models' cosines separate less, so words count more).
pub fn scoring_of(family: embed::Family) -> ScoringParams {
    let lexical_weight = match family {
        embed::Family::StaticMiniLm | embed::Family::StaticMiniLmCentered => 1.0,
        _ => mneme_scoring::LEXICAL_WEIGHT_DEFAULT,
    };
    ScoringParams {
        lexical_weight,
        ..ScoringParams::default()
    }
}

/// The calibration new agents get for an embedder family (fitted per family on held-out
/// data; see `mneme_scoring::Calibration`).
pub fn calibration_of(family: embed::Family) -> Calibration {
    match family {
        embed::Family::MiniLm => Calibration::MINILM,
        embed::Family::StaticMiniLm => Calibration::STATIC_M2V,
        embed::Family::StaticMiniLmCentered => Calibration::STATIC_M2V_CENTERED,
        embed::Family::LexicalHash => Calibration::LEXICAL_HASH,
        embed::Family::Unknown => Calibration::UNKNOWN,
    }
}
