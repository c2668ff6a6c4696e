//! HNSW on `hnsw_rs`, wrapped to survive its limits (measured on 0.3.5):
//! - it cannot delete: keys map to stable internal ids, deletions are tombstones honoured at
//!   search time, and the owner rebuilds once tombstones pass a ratio;
//! - its filtered search explodes for selective filters: it is never given a filter; the
//!   wrapper over-fetches and filters the results itself (the planner scans exactly instead
//!   when a filter is selective);
//! - its scalar `DistDot` panics on near-self queries: `DistL2` on unit vectors is used
//!   (`simdeez_f`: AVX2 when the CPU has it), with L2² = 2 − 2·cos.
//!
//! The graph is derived state: it is built from the vectors the owner holds and rebuilt from
//! them, never the only copy of anything.

use std::collections::HashMap;
use std::fmt;

use hnsw_rs::anndists::dist::DistL2;
use hnsw_rs::hnsw::Hnsw;
use parking_lot::RwLock;

/// Graph construction and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node per layer (`M`).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Beam width while searching (raised to the number of results asked for, and scaled
    /// up for collections above [`crate::EF_SCALE_FROM`] by [`crate::scaled_ef`]).
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 128,
            ef_search: 96,
        }
    }
}

/// Most layers the graph may grow.
const LAYERS_MAX: usize = 16;
/// Links per node are bounded by hnsw_rs (it exits the process above 256).
pub const HNSW_M_MAX: usize = 64;

#[derive(Debug, Default)]
struct IdMap {
    /// Internal id → key.
    keys: Vec<u64>,
    /// Key → internal id, for keys not deleted.
    ids: HashMap<u64, usize>,
    deleted: Vec<bool>,
    n_deleted: usize,
}

/// An HNSW graph over unit vectors, addressed by the caller's `u64` keys.
pub struct HnswGraph {
    hnsw: Hnsw<'static, f32, DistL2>,
    map: RwLock<IdMap>,
    params: HnswParams,
}

impl fmt::Debug for HnswGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HnswGraph")
            .field("params", &self.params)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl HnswGraph {
    /// An empty graph expecting about `capacity` points.
    pub fn new(params: HnswParams, capacity: usize) -> Self {
        let m = params.m.clamp(2, HNSW_M_MAX);
        Self {
            hnsw: Hnsw::new(
                m,
                capacity.max(1024),
                LAYERS_MAX,
                params.ef_construction,
                DistL2,
            ),
            map: RwLock::new(IdMap::default()),
            params,
        }
    }

    /// The parameters it was built with.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Inserts a unit vector under `key` (replacing an earlier one). Takes `&self`: inserts
    /// may run concurrently with each other and with searches.
    pub fn insert(&self, key: u64, unit_vector: &[f32]) {
        let id = {
            let mut map = self.map.write();
            let id = map.keys.len();
            map.keys.push(key);
            map.deleted.push(false);
            if let Some(old) = map.ids.insert(key, id) {
                map.deleted[old] = true;
                map.n_deleted += 1;
            }
            id
        };
        self.hnsw.insert_slice((unit_vector, id));
    }

    /// Tombstones `key`; returns whether it was live in the graph.
    pub fn remove(&self, key: u64) -> bool {
        let mut map = self.map.write();
        let Some(id) = map.ids.remove(&key) else {
            return false;
        };
        map.deleted[id] = true;
        map.n_deleted += 1;
        true
    }

    /// True when `key` is live in the graph.
    pub fn contains(&self, key: u64) -> bool {
        self.map.read().ids.contains_key(&key)
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.map.read().ids.len()
    }

    /// True when no point is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dimension of the stored vectors (`None` while empty).
    pub fn dim(&self) -> Option<usize> {
        let dim = self.hnsw.get_point_indexation().get_data_dimension();
        (dim > 0).then_some(dim)
    }

    /// Share of inserted points that are tombstones.
    pub fn tombstone_ratio(&self) -> f64 {
        let map = self.map.read();
        if map.keys.is_empty() {
            0.0
        } else {
            map.n_deleted as f64 / map.keys.len() as f64
        }
    }

    pub(crate) fn hnsw_ref(&self) -> &Hnsw<'static, f32, DistL2> {
        &self.hnsw
    }

    /// Labels by internal id for a snapshot (tombstones and unlabelled keys as `None`).
    pub(crate) fn encode_labels(&self, label: &dyn Fn(u64) -> Option<Vec<u8>>) -> Vec<u8> {
        let map = self.map.read();
        let labels: Vec<Option<Vec<u8>>> = map
            .keys
            .iter()
            .zip(&map.deleted)
            .map(|(key, deleted)| if *deleted { None } else { label(*key) })
            .collect();
        crate::snapshot::encode_labels(&labels)
    }

    /// Wraps a reloaded hnsw_rs graph; `keys[i]` is the current key of internal id `i`.
    pub(crate) fn from_loaded(
        hnsw: Hnsw<'static, f32, DistL2>,
        params: HnswParams,
        keys: Vec<Option<u64>>,
    ) -> Result<Self, String> {
        if hnsw.get_nb_point() != keys.len() {
            return Err(format!(
                "the graph holds {} points but {} labels",
                hnsw.get_nb_point(),
                keys.len()
            ));
        }
        let mut map = IdMap::default();
        for (id, key) in keys.into_iter().enumerate() {
            map.keys.push(key.unwrap_or(u64::MAX));
            map.deleted.push(key.is_none());
            match key {
                Some(key) => {
                    if let Some(old) = map.ids.insert(key, id) {
                        map.deleted[old] = true;
                        map.n_deleted += 1;
                    }
                }
                None => map.n_deleted += 1,
            }
        }
        Ok(Self {
            hnsw,
            map: RwLock::new(map),
            params,
        })
    }

    /// Keys of up to `k` approximate nearest live neighbours that `accept` admits, nearest
    /// first. Over-fetches (doubling) until `k` admitted keys are found or the graph is
    /// exhausted; `ef` is raised to at least the number fetched.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u64) -> bool,
    ) -> Vec<u64> {
        let inserted = self.map.read().keys.len();
        if k == 0 || inserted == 0 {
            return Vec::new();
        }
        let mut fetch = k;
        loop {
            let found = self.hnsw.search(query, fetch, ef.max(fetch));
            let map = self.map.read();
            let keys: Vec<u64> = found
                .iter()
                .filter(|n| !map.deleted.get(n.d_id).copied().unwrap_or(true))
                .map(|n| map.keys[n.d_id])
                .filter(|key| accept(*key))
                .take(k)
                .collect();
            if keys.len() >= k || found.len() < fetch || fetch >= inserted {
                return keys;
            }
            fetch = (fetch * 2).min(inserted);
        }
    }
}
