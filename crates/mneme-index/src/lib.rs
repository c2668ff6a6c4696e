//! Vector search for Mneme.
//!
//! Vectors are L2-normalised at ingest and similarity is the dot product. Three layers:
//! - [`FlatIndex`]: exact scan over contiguous memory, int8 first pass with f32 rescoring
//!   (SIMD by autovectorised code, dispatched at run time to AVX2+FMA or SSE4.1);
//! - [`Graph`]: the approximate index of large collections — [`NativeGraph`], Mneme's own
//!   flat-layout HNSW (the default), or [`HnswGraph`] on `hnsw_rs`, with tombstones and
//!   over-fetching around its limits;
//! - [`VectorIndex`]: one collection — the planner choosing exact scan or graph per query,
//!   the exact tail that makes new vectors searchable at once, and [`maintain`], which
//!   builds, grows, repairs and rebuilds the graph off the request path.
//!
//! The index is derived state: its owner can always rebuild it from stored vectors.
//!
//! ```
//! use mneme_index::{Filter, IndexConfig, VectorIndex};
//! let mut index = VectorIndex::new(3, IndexConfig::default());
//! index.insert(1, &[1.0, 0.0, 0.0])?;
//! index.insert(2, &[0.0, 1.0, 0.0])?;
//! let hits = index.search(&[0.9, 0.1, 0.0], 1, Filter::All)?;
//! assert_eq!(hits[0].key, 1);
//! # Ok::<(), mneme_index::IndexError>(())
//! ```

mod collection;
pub mod distance;
mod flat;
mod graph;
mod hnsw;
pub mod lexical;
mod native;
mod snapshot;
pub mod synthetic;
mod topk;

pub use collection::{
    EF_SCALE_FROM, Filter, IndexConfig, Maintenance, Plan, VectorIndex, absorb, maintain, scaled_ef,
};
pub use flat::FlatIndex;
pub use graph::{Graph, GraphKind};
pub use hnsw::{HnswGraph, HnswParams};
pub use lexical::{LexicalIndex, PreparedQuery};
pub use native::{NATIVE_LEVELS_MAX, NATIVE_M_MAX, NATIVE_POINTS_MAX, NativeGraph};
pub use snapshot::{LABEL_BYTES_MAX, SnapshotError, panic_is_caught_here};
pub use topk::{Hit, TopK};

/// Largest vector dimension accepted anywhere in Mneme.
pub const DIMENSIONS_MAX: usize = 4_096;

/// What can be wrong with a vector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The vector's length is not the collection's dimension.
    #[error("vector has {actual} dimensions, the collection has {expected}")]
    DimensionMismatch {
        /// The collection's dimension.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// A component is NaN or infinite.
    #[error("vector component {index} is NaN or infinite")]
    NotFinite {
        /// Position of the first bad component.
        index: usize,
    },
    /// Every component is zero, so it has no direction.
    #[error("vector is all zeros")]
    ZeroVector,
    /// The collection holds 2^32 vectors already.
    #[error("collection is full")]
    Full,
    /// A bulk load named a key twice.
    #[error("key {key} appears twice")]
    DuplicateKey {
        /// The key.
        key: u64,
    },
}
