//! [`Graph`]: the approximate index behind a [`crate::VectorIndex`], either Mneme's native
//! graph (the default) or the hnsw_rs one (selectable, and the benchmarks' baseline). Both
//! answer the same calls, so the planner, the exact tail, upkeep and snapshots are shared.

use std::path::Path;

use crate::hnsw::{HnswGraph, HnswParams};
use crate::native::{NativeGraph, SNAPSHOT_FILE};
use crate::snapshot::{MANIFEST, SnapshotError, write_atomically};

/// Which graph implementation serves large collections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum GraphKind {
    /// Mneme's flat-layout graph: int8 traversal, parallel build, repaired deletes, own
    /// snapshot format.
    #[default]
    Native,
    /// HNSW from the `hnsw_rs` crate.
    HnswRs,
}

impl GraphKind {
    /// Its name in configuration (`native`, `hnsw-rs`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::HnswRs => "hnsw-rs",
        }
    }
}

impl std::str::FromStr for GraphKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(Self::Native),
            "hnsw-rs" | "hnsw_rs" => Ok(Self::HnswRs),
            other => Err(format!(
                "unknown graph index {other:?} (expected native or hnsw-rs)"
            )),
        }
    }
}

/// A graph over one collection's unit vectors.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per collection, always behind an Arc"
)]
pub enum Graph {
    /// Mneme's own.
    Native(NativeGraph),
    /// hnsw_rs.
    HnswRs(HnswGraph),
}

impl Graph {
    /// An empty graph of the given kind with room for about `capacity` points.
    pub fn new(kind: GraphKind, dim: usize, params: HnswParams, capacity: usize) -> Self {
        match kind {
            GraphKind::Native => Self::Native(NativeGraph::new(dim, params, capacity)),
            GraphKind::HnswRs => Self::HnswRs(HnswGraph::new(params, capacity)),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> GraphKind {
        match self {
            Self::Native(_) => GraphKind::Native,
            Self::HnswRs(_) => GraphKind::HnswRs,
        }
    }

    /// Inserts unit vectors (replacing earlier points of the same keys), on every core.
    /// `vectors` holds the vectors of `keys`, one after another.
    pub fn insert_batch(&self, keys: &[u64], vectors: &[f32]) -> Result<(), crate::IndexError> {
        match self {
            Self::Native(g) => g.insert_batch(keys, vectors),
            Self::HnswRs(g) => {
                let dim = vectors.len() / keys.len().max(1);
                if dim * keys.len() != vectors.len() {
                    return Err(crate::IndexError::DimensionMismatch {
                        expected: dim,
                        actual: vectors.len(),
                    });
                }
                hnsw_insert_all(g, keys, vectors, dim);
                Ok(())
            }
        }
    }

    /// Tombstones `key`; returns whether it was live.
    pub fn remove(&self, key: u64) -> bool {
        match self {
            Self::Native(g) => g.remove(key),
            Self::HnswRs(g) => g.remove(key),
        }
    }

    /// True when `key` is live in the graph.
    pub fn contains(&self, key: u64) -> bool {
        match self {
            Self::Native(g) => g.contains(key),
            Self::HnswRs(g) => g.contains(key),
        }
    }

    /// Live points.
    pub fn len(&self) -> usize {
        match self {
            Self::Native(g) => g.len(),
            Self::HnswRs(g) => g.len(),
        }
    }

    /// True when no point is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Share of point slots held by tombstones.
    pub fn tombstone_ratio(&self) -> f64 {
        match self {
            Self::Native(g) => g.tombstone_ratio(),
            Self::HnswRs(g) => g.tombstone_ratio(),
        }
    }

    /// Tombstones whose neighbours can still be relinked by [`Graph::repair`] (hnsw_rs
    /// cannot repair: always 0).
    pub fn unrepaired(&self) -> usize {
        match self {
            Self::Native(g) => g.unrepaired(),
            Self::HnswRs(_) => 0,
        }
    }

    /// Relinks around tombstones (native only); returns how many were repaired.
    pub fn repair(&self) -> usize {
        match self {
            Self::Native(g) => g.repair(),
            Self::HnswRs(_) => 0,
        }
    }

    /// Candidate keys for the query, nearest first by the graph's own score: at least `k`
    /// admitted keys when the graph holds them (the native graph returns up to `ef`, for the
    /// caller to rescore exactly). `None` admits every key.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<u64> {
        match self {
            Self::Native(g) => g.search(query, k, ef, accept),
            Self::HnswRs(g) => g.search(query, k, ef, accept.unwrap_or(&|_| true)),
        }
    }

    /// Approximate bytes of RAM held (0 when unknown: hnsw_rs does not say).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Self::Native(g) => g.memory_bytes(),
            Self::HnswRs(_) => 0,
        }
    }

    /// Saves the graph atomically into the directory `dir`, labelling every live point
    /// with `label(key)` (`None`: saved as a tombstone).
    pub fn save(
        &self,
        dir: &Path,
        label: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        match self {
            Self::Native(g) => write_atomically(dir, |tmp| g.write_snapshot(tmp, label)),
            Self::HnswRs(g) => g.save(dir, label),
        }
    }

    /// True when `dir` holds a snapshot of either kind.
    pub fn snapshot_exists(dir: &Path) -> bool {
        dir.join(SNAPSHOT_FILE).exists() || dir.join(MANIFEST).exists()
    }

    /// Loads the snapshot in `dir`, which must be of `kind` (another kind's snapshot is
    /// [`SnapshotError::Invalid`]), mapping each label to a current key with `resolve`
    /// (`None`: the point becomes a tombstone).
    pub fn load(
        dir: &Path,
        kind: GraphKind,
        dim: usize,
        params: HnswParams,
        resolve: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> Result<Self, SnapshotError> {
        match kind {
            GraphKind::Native => {
                NativeGraph::read_snapshot(dir, dim, params, resolve).map(Self::Native)
            }
            GraphKind::HnswRs => {
                let graph = HnswGraph::load(dir, params, resolve)?;
                match graph.dim() {
                    Some(found) if found != dim => Err(SnapshotError::Invalid {
                        path: dir.to_path_buf(),
                        reason: format!("dimension {found} but the collection has {dim}"),
                    }),
                    _ => Ok(Self::HnswRs(graph)),
                }
            }
        }
    }
}

/// Inserts into an hnsw_rs graph on every core for large batches.
fn hnsw_insert_all(graph: &HnswGraph, keys: &[u64], vectors: &[f32], dim: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if keys.is_empty() || dim == 0 {
        return;
    }
    if keys.len() < 1_024 || threads == 1 {
        for (key, v) in keys.iter().zip(vectors.chunks_exact(dim)) {
            graph.insert(*key, v);
        }
        return;
    }
    let chunk = keys.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (keys, vectors) in keys.chunks(chunk).zip(vectors.chunks(chunk * dim)) {
            s.spawn(move || {
                for (key, v) in keys.iter().zip(vectors.chunks_exact(dim)) {
                    graph.insert(*key, v);
                }
            });
        }
    });
}
