//! Mneme's embeddable engine: durable agent memory as a Rust API.
//!
//! [`Engine`] turns `mneme-storage` (durability), `mneme-index` (vector search) and
//! `mneme-scoring` (confidence) into the memory semantics of Mneme's wire contract:
//! remember, recall, inject context, get, list, update, forget, clear, stats, export,
//! import, per-agent configuration. Agents are separate partitions; sessions scope reads.
//! Every write is durable when the call returns (with the default storage options).
//!
//! See [`Engine`] for an example, and `examples/quickstart.rs`.

mod agent;
mod clock;
mod codec;
pub mod embed;
mod engine;
mod error;
mod graphs;
mod ids;
pub mod limits;
mod model;
mod read;
mod transfer;
mod write;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{DEDUP_COSINE_MIN, Engine, EngineConfig};
pub use error::{Error, Result};
pub use graphs::GRAPH_SNAPSHOT_INTERVAL;
pub use mneme_index::{GraphKind, IndexConfig};
pub use mneme_scoring::{Calibration, ScoringParams, TypeParams};
pub use mneme_storage::{Durability, Error as StorageError, Options as StorageOptions, StoreStats};
pub use model::*;
pub use read::estimate_tokens;
pub use transfer::{EXPORT_FORMAT_VERSION, ExportHeader, ExportedMemory};
pub use write::{AgentSettings, REEMBED_MEMORIES_MAX};
