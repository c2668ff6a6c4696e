//! [`VectorIndex`]: one collection's vectors (one agent's, in Mneme), the planner that picks
//! exact scan or graph per query, and [`maintain`], which grows the graph off the request
//! path.
//!
//! Every live vector sits in the flat store, so exact search is always possible. Large
//! collections also get an HNSW graph; vectors not yet in it (the tail) are scanned exactly
//! on every graph search, so a new vector is searchable the moment `insert` returns.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::IndexError;
use crate::distance::normalize;
use crate::flat::FlatIndex;
use crate::graph::{Graph, GraphKind};
use crate::hnsw::HnswParams;
use crate::topk::{Hit, TopK};

/// When to build a graph, how to search it, and when to scan instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexConfig {
    /// Collections smaller than this are only ever scanned (exact and fast at this size).
    pub graph_min_vectors: usize,
    /// Which graph implementation to build.
    pub graph: GraphKind,
    /// HNSW parameters.
    pub hnsw: HnswParams,
    /// Rebuild the graph once at least this share of its point slots are tombstones. The
    /// native graph relinks around deletions as they come ([`Self::repair_tombstones_min`]),
    /// so for it a rebuild only reclaims memory; hnsw_rs cannot, so its searches degrade
    /// until the rebuild.
    pub rebuild_tombstone_ratio: f64,
    /// The native graph relinks around tombstones once this many are waiting (or 1 % of
    /// its points, whichever is larger).
    pub repair_tombstones_min: usize,
    /// A filter expected to match at most this many vectors is answered by an exact scan.
    pub exact_filter_max: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            graph_min_vectors: 20_000,
            graph: GraphKind::Native,
            hnsw: HnswParams::default(),
            rebuild_tombstone_ratio: 0.2,
            repair_tombstones_min: 64,
            exact_filter_max: 20_000,
        }
    }
}

/// Which vectors a search may return.
#[derive(Clone, Copy)]
pub enum Filter<'a> {
    /// Every vector.
    All,
    /// Exactly these keys (always an exact scan of them).
    Keys(&'a [u64]),
    /// Keys the predicate accepts; `estimated_matches` steers the planner.
    Predicate {
        /// Returns true for admissible keys.
        accept: &'a (dyn Fn(u64) -> bool + Sync),
        /// Roughly how many vectors it accepts.
        estimated_matches: usize,
    },
}

impl std::fmt::Debug for Filter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => write!(f, "All"),
            Self::Keys(keys) => write!(f, "Keys({})", keys.len()),
            Self::Predicate {
                estimated_matches, ..
            } => write!(f, "Predicate(~{estimated_matches})"),
        }
    }
}

/// How a query will be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Exact scan of every (accepted) vector.
    Exact,
    /// Exact scan of the listed keys.
    ExactKeys,
    /// Graph search plus an exact scan of the tail.
    Graph,
}

/// One collection of unit vectors keyed by `u64`.
#[derive(Debug)]
pub struct VectorIndex {
    flat: FlatIndex,
    graph: Option<Arc<Graph>>,
    /// Keys live in `flat` but not in `graph`.
    tail: HashSet<u64>,
    config: IndexConfig,
    /// Keys inserted or removed while a [`maintain`] rebuild is building outside the lock.
    dirty: Mutex<Option<HashSet<u64>>>,
    /// Tail keys some [`absorb`] pass is linking into the graph right now (no other pass
    /// takes them; searches still scan them as tail until they are linked).
    claimed: HashSet<u64>,
    /// Bumped by [`VectorIndex::clear`]; a maintenance pass started before it is discarded.
    generation: u64,
    /// Held by the one [`maintain`] pass allowed at a time.
    maintaining: Arc<Mutex<()>>,
}

impl VectorIndex {
    /// An empty collection of `dim`-dimensional vectors.
    pub fn new(dim: usize, config: IndexConfig) -> Self {
        Self {
            flat: FlatIndex::new(dim),
            graph: None,
            tail: HashSet::new(),
            config,
            dirty: Mutex::new(None),
            claimed: HashSet::new(),
            generation: 0,
            maintaining: Arc::new(Mutex::new(())),
        }
    }

    /// A collection of the unit vectors `data` (see [`FlatIndex::from_unit_vectors`]), every
    /// one in the exact tail until a graph is built or installed. A collection that will
    /// be served by the native graph (which keeps its own int8 codes) skips computing the
    /// flat store's.
    pub fn from_unit_vectors(
        dim: usize,
        config: IndexConfig,
        keys: Vec<u64>,
        data: Vec<f32>,
    ) -> Result<Self, IndexError> {
        let native_graph_due =
            config.graph == GraphKind::Native && keys.len() >= config.graph_min_vectors;
        let tail = keys.iter().copied().collect();
        let flat = FlatIndex::from_unit_vectors(dim, keys, data, !native_graph_due)?;
        Ok(Self {
            flat,
            graph: None,
            tail,
            config,
            dirty: Mutex::new(None),
            claimed: HashSet::new(),
            generation: 0,
            maintaining: Arc::new(Mutex::new(())),
        })
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.flat.dim()
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.flat.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.flat.is_empty()
    }

    /// The stored unit vector of `key`.
    pub fn get(&self, key: u64) -> Option<&[f32]> {
        self.flat.get(key)
    }

    /// Vectors not yet absorbed by the graph (0 when there is no graph and none is due).
    pub fn tail_len(&self) -> usize {
        if self.graph.is_none() && self.flat.len() < self.config.graph_min_vectors {
            0
        } else {
            self.tail.len()
        }
    }

    /// The graph serving this collection, if any (to snapshot it).
    pub fn graph(&self) -> Option<Arc<Graph>> {
        self.graph.clone()
    }

    /// Serves searches from `graph` (loaded from a snapshot); every vector it does not hold
    /// live becomes the exact tail, to be absorbed by [`maintain`].
    pub fn install_graph(&mut self, graph: Arc<Graph>) {
        self.tail = self
            .flat
            .keys()
            .iter()
            .copied()
            .filter(|k| !graph.contains(*k))
            .collect();
        self.set_graph(graph);
    }

    /// Serves from `graph`. The native graph holds its own int8 codes, so the flat store
    /// drops its copy (exact scans then use f32): that is what keeps 1M×384 within its
    /// memory budget.
    fn set_graph(&mut self, graph: Arc<Graph>) {
        self.flat.set_quantized(graph.kind() != GraphKind::Native);
        self.graph = Some(graph);
    }

    /// The configuration.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// True when a graph serves this collection.
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    fn mark_dirty(&self, key: u64) {
        if let Some(dirty) = self.dirty.lock().as_mut() {
            dirty.insert(key);
        }
    }

    /// Inserts or replaces `key`; searchable as soon as this returns.
    pub fn insert(&mut self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.flat.insert(key, vector)?;
        if let Some(graph) = &self.graph {
            graph.remove(key);
        }
        self.tail.insert(key);
        self.mark_dirty(key);
        Ok(())
    }

    /// Inserts or replaces `key` with a vector the caller normalised, stored bit for bit
    /// (see [`FlatIndex::insert_unit`]); searchable as soon as this returns.
    pub fn insert_unit(&mut self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        self.flat.insert_unit(key, vector)?;
        if let Some(graph) = &self.graph {
            graph.remove(key);
        }
        self.tail.insert(key);
        self.mark_dirty(key);
        Ok(())
    }

    /// Removes `key`; it is never returned again. Returns whether it was present.
    pub fn remove(&mut self, key: u64) -> bool {
        if let Some(graph) = &self.graph {
            graph.remove(key);
        }
        self.tail.remove(&key);
        self.mark_dirty(key);
        self.flat.remove(key)
    }

    /// Removes every vector.
    pub fn clear(&mut self) {
        self.flat = FlatIndex::new(self.dim());
        self.graph = None;
        self.tail.clear();
        self.claimed.clear();
        self.generation += 1;
    }

    /// The plan [`VectorIndex::search`] would follow.
    pub fn plan(&self, filter: &Filter<'_>) -> Plan {
        match filter {
            Filter::Keys(_) => Plan::ExactKeys,
            _ if self.graph.is_none() => Plan::Exact,
            Filter::All => Plan::Graph,
            Filter::Predicate {
                estimated_matches, ..
            } if *estimated_matches <= self.config.exact_filter_max => Plan::Exact,
            Filter::Predicate { .. } => Plan::Graph,
        }
    }

    fn unit_query(&self, query: &[f32]) -> Result<Vec<f32>, IndexError> {
        if query.len() != self.dim() {
            return Err(IndexError::DimensionMismatch {
                expected: self.dim(),
                actual: query.len(),
            });
        }
        let mut q = query.to_vec();
        normalize(&mut q)?;
        Ok(q)
    }

    /// The `k` most similar admissible vectors, best first, with exact cosine scores.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Filter<'_>,
    ) -> Result<Vec<Hit>, IndexError> {
        let q = self.unit_query(query)?;
        let all = |_: u64| true;
        Ok(match (self.plan(&filter), filter) {
            (_, Filter::Keys(keys)) => self.flat.search_keys(&q, k, keys),
            (Plan::Exact, Filter::Predicate { accept, .. }) => self.flat.search(&q, k, accept),
            (Plan::Exact, _) => self.flat.search(&q, k, &all),
            (_, Filter::Predicate { accept, .. }) => self.graph_search(&q, k, Some(accept)),
            (_, Filter::All) => self.graph_search(&q, k, None),
        })
    }

    /// Exact search regardless of plan: the oracle.
    pub fn search_exact(
        &self,
        query: &[f32],
        k: usize,
        filter: Filter<'_>,
    ) -> Result<Vec<Hit>, IndexError> {
        let q = self.unit_query(query)?;
        Ok(match filter {
            Filter::All => self.flat.search_f32(&q, k, &|_| true),
            Filter::Keys(keys) => self.flat.search_keys(&q, k, keys),
            Filter::Predicate { accept, .. } => self.flat.search_f32(&q, k, accept),
        })
    }

    /// Unfiltered search with an explicit graph beam width (for recall/latency sweeps).
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let q = self.unit_query(query)?;
        Ok(self.graph_search_ef(&q, k, ef, None))
    }

    fn graph_search(&self, q: &[f32], k: usize, accept: Option<&dyn Fn(u64) -> bool>) -> Vec<Hit> {
        let ef = scaled_ef(self.config.hnsw.ef_search, self.flat.len());
        self.graph_search_ef(q, k, ef, accept)
    }

    fn graph_search_ef(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<Hit> {
        let all = |_: u64| true;
        let Some(graph) = &self.graph else {
            return self.flat.search(q, k, accept.unwrap_or(&all));
        };
        let ef = ef.max(k);
        let mut keys = graph.search(q, k, ef, accept);
        let mut tail = TopK::new(k);
        for &key in &self.tail {
            if let Some(v) = self.flat.get(key).filter(|_| accept.is_none_or(|a| a(key))) {
                tail.push(key, crate::distance::dot(q, v));
            }
        }
        keys.extend(tail.into_sorted().into_iter().map(|h| h.key));
        keys.sort_unstable();
        keys.dedup();
        let mut hits = self.flat.rescore_keys(q, keys);
        hits.truncate(k);
        hits
    }
}

/// Collections up to this size search with the configured `ef`.
pub const EF_SCALE_FROM: usize = 250_000;

/// The beam width for a collection of `len` vectors: the configured `ef` up to
/// [`EF_SCALE_FROM`], then growing with the square root of the size beyond it (×2 at 1M).
/// A fixed beam loses recall as the graph grows — measured on the clustered set, ef 96
/// gives recall@10 0.9999 at 100k but 0.92 at 1M, ef 192 about 0.97 there.
pub fn scaled_ef(ef: usize, len: usize) -> usize {
    if len <= EF_SCALE_FROM {
        ef
    } else {
        (ef as f64 * (len as f64 / EF_SCALE_FROM as f64).sqrt()).ceil() as usize
    }
}

/// What one [`maintain`] pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Nothing to do.
    Idle,
    /// Moved this many tail vectors into the graph.
    Absorbed(usize),
    /// Built a new graph over this many vectors.
    Rebuilt(usize),
    /// Relinked the graph around this many tombstones.
    Repaired(usize),
}

/// Keys and their vectors, one after another.
struct Batch {
    keys: Vec<u64>,
    vectors: Vec<f32>,
}

enum Work {
    Absorb,
    Rebuild(Arc<Graph>, Batch),
    Repair(Arc<Graph>),
}

/// Links up to `max` vectors of the exact tail into the graph, on the calling thread, and
/// returns how many: what writers call after a write (so the tail stays small and searches
/// do not scan it) and what [`maintain`] calls for the rest. Searches and writes proceed
/// meanwhile; concurrent passes never take the same key; a vector replaced or removed while
/// it was being linked is tombstoned in the graph and stays (or leaves) the tail.
pub fn absorb(lock: &RwLock<VectorIndex>, max: usize) -> usize {
    let (graph, batch) = {
        let mut index = lock.write();
        let Some(graph) = index.graph.clone() else {
            return 0;
        };
        let keys: Vec<u64> = index
            .tail
            .iter()
            .filter(|k| !index.claimed.contains(k))
            .take(max)
            .copied()
            .collect();
        if keys.is_empty() {
            return 0;
        }
        let mut batch = Batch {
            keys: Vec::with_capacity(keys.len()),
            vectors: Vec::with_capacity(keys.len() * index.dim()),
        };
        for key in keys {
            if let Some(v) = index.flat.get(key) {
                batch.keys.push(key);
                batch.vectors.extend_from_slice(v);
            }
        }
        for key in &batch.keys {
            index.claimed.insert(*key);
        }
        (graph, batch)
    };
    let inserted = graph.insert_batch(&batch.keys, &batch.vectors).is_ok();
    let mut index = lock.write();
    let same_graph = index.graph.as_ref().is_some_and(|g| Arc::ptr_eq(g, &graph));
    let dim = index.dim();
    let mut linked = 0;
    for (i, key) in batch.keys.iter().enumerate() {
        index.claimed.remove(key);
        if !inserted || !same_graph {
            continue;
        }
        let mine = &batch.vectors[i * dim..(i + 1) * dim];
        let unchanged = index
            .flat
            .get(*key)
            .is_some_and(|v| v.iter().zip(mine).all(|(a, b)| a.to_bits() == b.to_bits()));
        if unchanged {
            index.tail.remove(key);
            linked += 1;
        } else {
            // Replaced or removed while we linked it: the graph's copy is stale.
            graph.remove(*key);
        }
    }
    linked
}

/// Does one bounded step of graph upkeep for the collection behind `lock`: builds the graph
/// once the collection is large enough, relinks around waiting tombstones, absorbs up to
/// `batch` tail vectors, or rebuilds when tombstones pass the configured ratio. The slow
/// part (graph inserts, relinking) runs without holding the lock; searches and writes
/// proceed meanwhile.
pub fn maintain(lock: &RwLock<VectorIndex>, batch: usize) -> Maintenance {
    let maintaining = Arc::clone(&lock.read().maintaining);
    let Some(_only_pass) = maintaining.try_lock() else {
        return Maintenance::Idle;
    };
    {
        // The first graph starts empty, with every vector in the tail, and grows by
        // absorbing: writers link into it (and keep the tail bounded) from the moment it
        // exists, instead of writing past a build that cannot see their vectors.
        let mut index = lock.write();
        if index.graph.is_none() && index.flat.len() >= index.config.graph_min_vectors {
            let capacity = index.flat.len() + index.flat.len() / 4 + 1_024;
            let graph = Graph::new(index.config.graph, index.dim(), index.config.hnsw, capacity);
            index.set_graph(Arc::new(graph));
        }
    }
    let (work, generation) = {
        let index = lock.read();
        let config = index.config;
        let rebuild = index
            .graph
            .as_ref()
            .is_some_and(|graph| graph.tombstone_ratio() >= config.rebuild_tombstone_ratio);
        let snapshot = |keys: &mut dyn Iterator<Item = u64>, n: usize| -> Batch {
            let mut batch = Batch {
                keys: Vec::with_capacity(n),
                vectors: Vec::with_capacity(n * index.dim()),
            };
            for key in keys {
                if let Some(v) = index.flat.get(key) {
                    batch.keys.push(key);
                    batch.vectors.extend_from_slice(v);
                }
            }
            batch
        };
        if rebuild {
            *index.dirty.lock() = Some(HashSet::new());
            let vectors = snapshot(&mut index.flat.keys().iter().copied(), index.flat.len());
            let capacity = vectors.keys.len() + vectors.keys.len() / 4 + 1_024;
            let graph = Arc::new(Graph::new(config.graph, index.dim(), config.hnsw, capacity));
            (Work::Rebuild(graph, vectors), index.generation)
        } else if let Some(graph) = index
            .graph
            .as_ref()
            .filter(|g| g.unrepaired() >= config.repair_tombstones_min.max(g.len() / 100))
        {
            (Work::Repair(Arc::clone(graph)), index.generation)
        } else if index.graph.is_some() && index.tail.len() > index.claimed.len() {
            (Work::Absorb, index.generation)
        } else {
            return Maintenance::Idle;
        }
    };
    match work {
        Work::Repair(graph) => Maintenance::Repaired(graph.repair()),
        Work::Absorb => match absorb(lock, batch.max(1)) {
            0 => Maintenance::Idle,
            n => Maintenance::Absorbed(n),
        },
        Work::Rebuild(graph, vectors) => {
            let inserted = graph.insert_batch(&vectors.keys, &vectors.vectors).is_ok();
            let built = vectors.keys.len();
            drop(vectors);
            let mut index = lock.write();
            let dirty = index.dirty.lock().take().unwrap_or_default();
            if index.generation != generation || !inserted {
                return Maintenance::Idle;
            }
            for key in &dirty {
                graph.remove(*key);
            }
            let tail: HashSet<u64> = index
                .flat
                .keys()
                .iter()
                .copied()
                .filter(|k| !graph.contains(*k))
                .collect();
            index.tail = tail;
            index.set_graph(graph);
            Maintenance::Rebuilt(built)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_beam_widens_with_the_square_root_of_size_beyond_the_threshold() {
        assert_eq!(scaled_ef(96, 10_000), 96);
        assert_eq!(scaled_ef(96, EF_SCALE_FROM), 96);
        assert_eq!(scaled_ef(96, 4 * EF_SCALE_FROM), 192);
        assert!(scaled_ef(96, 500_000) > 96 && scaled_ef(96, 500_000) < 192);
    }
}
