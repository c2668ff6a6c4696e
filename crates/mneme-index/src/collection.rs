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
use crate::hnsw::{HnswGraph, HnswParams};
use crate::topk::{Hit, TopK};

/// When to build a graph, how to search it, and when to scan instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexConfig {
    /// Collections smaller than this are only ever scanned (exact and fast at this size).
    pub graph_min_vectors: usize,
    /// HNSW parameters.
    pub hnsw: HnswParams,
    /// Rebuild the graph once at least this share of its points are tombstones.
    pub rebuild_tombstone_ratio: f64,
    /// A filter expected to match at most this many vectors is answered by an exact scan.
    pub exact_filter_max: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            graph_min_vectors: 20_000,
            hnsw: HnswParams::default(),
            rebuild_tombstone_ratio: 0.2,
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
    graph: Option<Arc<HnswGraph>>,
    /// Keys live in `flat` but not in `graph`.
    tail: HashSet<u64>,
    config: IndexConfig,
    /// Keys inserted or removed while a [`maintain`] pass is building outside the lock.
    dirty: Mutex<Option<HashSet<u64>>>,
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
            generation: 0,
            maintaining: Arc::new(Mutex::new(())),
        }
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
    pub fn graph(&self) -> Option<Arc<HnswGraph>> {
        self.graph.clone()
    }

    /// Serves searches from `graph` (loaded from a snapshot); every vector it does not hold
    /// live becomes the exact tail, to be absorbed by [`maintain`].
    pub fn install_graph(&mut self, graph: Arc<HnswGraph>) {
        self.tail = self
            .flat
            .keys()
            .iter()
            .copied()
            .filter(|k| !graph.contains(*k))
            .collect();
        self.graph = Some(graph);
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
            (_, Filter::Predicate { accept, .. }) => self.graph_search(&q, k, accept),
            (_, Filter::All) => self.graph_search(&q, k, &all),
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
        Ok(self.graph_search_ef(&q, k, ef, &|_| true))
    }

    fn graph_search(&self, q: &[f32], k: usize, accept: &dyn Fn(u64) -> bool) -> Vec<Hit> {
        self.graph_search_ef(q, k, self.config.hnsw.ef_search, accept)
    }

    fn graph_search_ef(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u64) -> bool,
    ) -> Vec<Hit> {
        let Some(graph) = &self.graph else {
            return self.flat.search(q, k, accept);
        };
        let ef = ef.max(k);
        let mut keys = graph.search(q, k, ef, accept);
        let mut tail = TopK::new(k);
        for &key in &self.tail {
            if let Some(v) = self.flat.get(key).filter(|_| accept(key)) {
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

/// What one [`maintain`] pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Nothing to do.
    Idle,
    /// Moved this many tail vectors into the graph.
    Absorbed(usize),
    /// Built a new graph over this many vectors.
    Rebuilt(usize),
}

enum Work {
    Absorb(Arc<HnswGraph>, Vec<(u64, Vec<f32>)>),
    Rebuild(Arc<HnswGraph>, Vec<(u64, Vec<f32>)>),
}

/// Does one bounded step of graph upkeep for the collection behind `lock`: builds the graph
/// once the collection is large enough, absorbs up to `batch` tail vectors, or rebuilds it
/// when tombstones pass the configured ratio. The slow part (graph inserts) runs without
/// holding the lock; searches and writes proceed meanwhile.
pub fn maintain(lock: &RwLock<VectorIndex>, batch: usize) -> Maintenance {
    let maintaining = Arc::clone(&lock.read().maintaining);
    let Some(_only_pass) = maintaining.try_lock() else {
        return Maintenance::Idle;
    };
    let (work, generation) = {
        let index = lock.read();
        let rebuild = match &index.graph {
            None => index.flat.len() >= index.config.graph_min_vectors,
            Some(graph) => graph.tombstone_ratio() >= index.config.rebuild_tombstone_ratio,
        };
        let snapshot = |keys: &mut dyn Iterator<Item = u64>| -> Vec<(u64, Vec<f32>)> {
            keys.filter_map(|k| index.flat.get(k).map(|v| (k, v.to_vec())))
                .collect()
        };
        *index.dirty.lock() = Some(HashSet::new());
        if rebuild {
            let vectors = snapshot(&mut index.flat.keys().iter().copied());
            let graph = Arc::new(HnswGraph::new(index.config.hnsw, vectors.len()));
            (Work::Rebuild(graph, vectors), index.generation)
        } else if let (Some(graph), false) = (&index.graph, index.tail.is_empty()) {
            let vectors = snapshot(&mut index.tail.iter().copied().take(batch.max(1)));
            (Work::Absorb(Arc::clone(graph), vectors), index.generation)
        } else {
            *index.dirty.lock() = None;
            return Maintenance::Idle;
        }
    };
    match work {
        Work::Absorb(graph, vectors) => {
            insert_all(&graph, &vectors);
            let mut index = lock.write();
            let dirty = index.dirty.lock().take().unwrap_or_default();
            if index.generation != generation {
                return Maintenance::Idle;
            }
            for (key, _) in &vectors {
                if dirty.contains(key) {
                    // Replaced or removed while we inserted: the graph's copy is stale.
                    graph.remove(*key);
                } else {
                    index.tail.remove(key);
                }
            }
            Maintenance::Absorbed(vectors.len())
        }
        Work::Rebuild(graph, vectors) => {
            insert_all(&graph, &vectors);
            let mut index = lock.write();
            let dirty = index.dirty.lock().take().unwrap_or_default();
            if index.generation != generation {
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
            index.graph = Some(graph);
            Maintenance::Rebuilt(vectors.len())
        }
    }
}

/// Inserts on every core for large batches (graph inserts take `&self` and run concurrently).
fn insert_all(graph: &HnswGraph, vectors: &[(u64, Vec<f32>)]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if vectors.len() < 1_024 || threads == 1 {
        for (key, v) in vectors {
            graph.insert(*key, v);
        }
        return;
    }
    let chunk = vectors.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in vectors.chunks(chunk) {
            s.spawn(move || {
                for (key, v) in part {
                    graph.insert(*key, v);
                }
            });
        }
    });
}
