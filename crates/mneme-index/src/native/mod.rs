//! Mneme's own HNSW graph, laid out flat for the memory system rather than for generality.
//!
//! - **Ids.** Points get dense `u32` ids in insertion order; the caller's `u64` keys live in
//!   one array beside them.
//! - **Vectors.** Only int8 codes (one scale per vector) are kept, in one contiguous buffer:
//!   384 bytes per point at 384 dimensions. Traversal ranks by int8 dot products; the owner
//!   rescores the returned candidates with its f32 vectors ([`crate::VectorIndex`] does).
//! - **Links.** Layer 0 is one fixed-stride `u32` array (`[count, id × 2M]` per point); the
//!   rare points on upper layers have blocks of `[count, id × M]` in a second array. Links are
//!   atomics, so inserts, repairs and searches share the graph without a lock per read.
//! - **Traversal allocates nothing** in steady state: each search borrows a [`Searcher`] (a
//!   visited array stamped with a per-search epoch, reusable heaps and query buffer) from a
//!   small pool; only the returned candidate list is allocated.
//! - **Inserts** run on every core: [`NativeGraph::insert_batch`] appends the points under a
//!   brief write lock, then links them in parallel with per-point link locks, choosing
//!   neighbours with the HNSW heuristic (keep a candidate only if it is closer to the new
//!   point than to every neighbour already kept).
//! - **Deletes** are tombstones (never returned, still traversed) followed by local repair:
//!   [`NativeGraph::repair`] relinks every point that pointed at a tombstone through the
//!   tombstone's own neighbours, after which nothing points at it.
//! - **Snapshots** are Mneme's own checksummed file ([`persist`]); a loaded graph serves its
//!   codes straight from the mapped file and copies only the links, which stay mutable.

mod persist;
mod sys;

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::distance::{dot_i8, quantize};
use crate::hnsw::HnswParams;
use crate::synthetic::SplitMix64;

pub(crate) use persist::SNAPSHOT_FILE;
pub(crate) use sys::{advise_huge_pages, dot_i8_avx512, prefetch};

/// Highest layer a point can be drawn on.
pub const NATIVE_LEVELS_MAX: u8 = 15;
/// Links per point per upper layer, at most (layer 0 has twice as many).
pub const NATIVE_M_MAX: usize = 64;
/// Points per graph, at most (ids are `u32`, and `u32::MAX` means "none").
pub const NATIVE_POINTS_MAX: usize = u32::MAX as usize - 1;
/// Searchers kept for reuse per graph; more concurrent searches allocate their own.
const SEARCHERS_POOLED: usize = 8;
/// Cache lines of a neighbour's code prefetched ahead of scoring it.
const PREFETCH_LINES: usize = 6;

const NONE: u32 = u32::MAX;

/// A point's similarity during a search, ordered by score then id (a total order).
#[derive(Debug, Clone, Copy)]
struct Cand {
    sim: f32,
    id: u32,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.sim.total_cmp(&other.sim).then(other.id.cmp(&self.id))
    }
}

/// Min-heap adapter: the worst result sits on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Worst(std::cmp::Reverse<Cand>);

/// Per-search scratch space, reused across searches.
#[derive(Debug, Default)]
struct Searcher {
    visited: Vec<u32>,
    epoch: u32,
    candidates: BinaryHeap<Cand>,
    results: BinaryHeap<Worst>,
    fresh: Vec<u32>,
    /// The query's int8 codes.
    query: Vec<i8>,
}

impl Searcher {
    fn begin(&mut self, points: usize) {
        if self.visited.len() < points {
            self.visited.resize(points, 0);
            sys::advise_huge_pages(&self.visited);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `id` visited; returns false if it already was.
    fn visit(&mut self, id: u32) -> bool {
        let slot = &mut self.visited[id as usize];
        if *slot == self.epoch {
            false
        } else {
            *slot = self.epoch;
            true
        }
    }

    fn worst(&self) -> f32 {
        self.results.peek().map_or(f32::NEG_INFINITY, |w| w.0.0.sim)
    }

    /// Results best first.
    fn sorted_results(&mut self) -> Vec<Cand> {
        let mut out: Vec<Cand> = self.results.drain().map(|w| w.0.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }
}

/// The int8 codes of every point: a prefix served from a mapped snapshot, the rest owned.
struct Codes {
    dim: usize,
    mapped: Option<(Arc<sys::Mapped>, usize)>,
    mapped_points: usize,
    owned: Vec<i8>,
}

impl Codes {
    fn new(dim: usize) -> Self {
        Self {
            dim,
            mapped: None,
            mapped_points: 0,
            owned: Vec::new(),
        }
    }

    #[inline]
    fn get(&self, id: u32) -> &[i8] {
        let id = id as usize;
        match &self.mapped {
            Some((map, offset)) if id < self.mapped_points => {
                let at = offset + id * self.dim;
                bytemuck::cast_slice(&map.bytes()[at..at + self.dim])
            }
            _ => {
                let at = (id - self.mapped_points) * self.dim;
                &self.owned[at..at + self.dim]
            }
        }
    }

    fn resident_bytes(&self) -> usize {
        self.owned.capacity()
    }
}

/// Everything indexed by point id. Grows only under the graph's write lock (briefly, when a
/// batch is appended); links change through atomics under the read lock.
struct Points {
    keys: Vec<u64>,
    deleted: Vec<AtomicBool>,
    levels: Vec<u8>,
    scales: Vec<f32>,
    codes: Codes,
    /// `[count, id × m0]` per point.
    layer0: Vec<AtomicU32>,
    /// First upper block of each point (`NONE` for level-0 points); block `b + l − 1` holds
    /// layer `l`.
    upper_at: Vec<u32>,
    /// `[count, id × m]` per block.
    upper: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
}

impl Points {
    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Mneme's native HNSW graph over unit vectors, addressed by the caller's `u64` keys.
///
/// Inserts, removals, repairs and searches all take `&self` and may run concurrently.
pub struct NativeGraph {
    dim: usize,
    m: usize,
    m0: usize,
    params: HnswParams,
    points: RwLock<Points>,
    /// Key → id of live points.
    ids: Mutex<HashMap<u64, u32>>,
    /// `level << 32 | id` of the entry point, or `u64::MAX` when empty.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    /// Tombstones not yet repaired around.
    unrepaired: Mutex<Vec<u32>>,
    deleted: AtomicUsize,
    rng: Mutex<SplitMix64>,
    searchers: Mutex<Vec<Searcher>>,
}

impl fmt::Debug for NativeGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeGraph")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("points", &self.points.read().len())
            .field("deleted", &self.deleted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn pack_entry(id: u32, level: u8) -> u64 {
    (u64::from(level) << 32) | u64::from(id)
}

fn unpack_entry(e: u64) -> Option<(u32, u8)> {
    (e != u64::MAX).then_some((e as u32, (e >> 32) as u8))
}

/// Reads a `[count, ids…]` block into `out` (appending).
#[inline]
fn read_links(block: &[AtomicU32], out: &mut Vec<u32>) {
    let count = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
    out.extend(block[1..=count].iter().map(|a| a.load(Ordering::Relaxed)));
}

/// Writes `ids` into a `[count, ids…]` block: ids first, then the count (readers that see
/// the new count see valid ids; every id ever written is a valid point).
fn write_links(block: &[AtomicU32], ids: &[u32]) {
    let n = ids.len().min(block.len() - 1);
    for (slot, id) in block[1..=n].iter().zip(ids) {
        slot.store(*id, Ordering::Relaxed);
    }
    block[0].store(n as u32, Ordering::Release);
}

impl NativeGraph {
    /// An empty graph of `dim`-dimensional unit vectors, with room reserved for `capacity`.
    pub fn new(dim: usize, params: HnswParams, capacity: usize) -> Self {
        let m = params.m.clamp(2, NATIVE_M_MAX);
        let m0 = 2 * m;
        let capacity = capacity.min(NATIVE_POINTS_MAX);
        let points = Points {
            keys: Vec::with_capacity(capacity),
            deleted: Vec::with_capacity(capacity),
            levels: Vec::with_capacity(capacity),
            scales: Vec::with_capacity(capacity),
            codes: Codes {
                owned: Vec::with_capacity(capacity.saturating_mul(dim)),
                ..Codes::new(dim)
            },
            layer0: Vec::with_capacity(capacity.saturating_mul(m0 + 1)),
            upper_at: Vec::with_capacity(capacity),
            upper: Vec::new(),
            locks: Vec::with_capacity(capacity),
        };
        sys::advise_huge_pages(&points.codes.owned);
        sys::advise_huge_pages(&points.layer0);
        Self::from_parts(dim, params, points, u64::MAX)
    }

    fn from_parts(dim: usize, params: HnswParams, points: Points, entry: u64) -> Self {
        let m = params.m.clamp(2, NATIVE_M_MAX);
        let mut ids = HashMap::with_capacity(points.len());
        let mut deleted = 0;
        let mut unrepaired = Vec::new();
        for (id, key) in points.keys.iter().enumerate() {
            if points.deleted[id].load(Ordering::Relaxed) {
                deleted += 1;
                unrepaired.push(id as u32);
            } else if let Some(old) = ids.insert(*key, id as u32) {
                points.deleted[old as usize].store(true, Ordering::Relaxed);
                deleted += 1;
                unrepaired.push(old);
            }
        }
        Self {
            dim,
            m,
            m0: 2 * m,
            params,
            points: RwLock::new(points),
            ids: Mutex::new(ids),
            entry: AtomicU64::new(entry),
            entry_lock: Mutex::new(()),
            unrepaired: Mutex::new(unrepaired),
            deleted: AtomicUsize::new(deleted),
            rng: Mutex::new(SplitMix64::new(0x6d6e_656d_6567_7261)),
            searchers: Mutex::new(Vec::new()),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The parameters it was built with.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.ids.lock().len()
    }

    /// True when no point is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `key` is live in the graph.
    pub fn contains(&self, key: u64) -> bool {
        self.ids.lock().contains_key(&key)
    }

    /// Share of point slots held by tombstones (repaired or not).
    pub fn tombstone_ratio(&self) -> f64 {
        let total = self.points.read().len();
        if total == 0 {
            0.0
        } else {
            self.deleted.load(Ordering::Relaxed) as f64 / total as f64
        }
    }

    /// Tombstones whose neighbours have not been relinked yet.
    pub fn unrepaired(&self) -> usize {
        self.unrepaired.lock().len()
    }

    /// Approximate bytes of RAM the graph holds (codes served from a mapped snapshot count
    /// only once paged in, so they are not included).
    pub fn memory_bytes(&self) -> usize {
        let p = self.points.read();
        p.keys.capacity() * 8
            + p.deleted.capacity()
            + p.levels.capacity()
            + p.scales.capacity() * 4
            + p.codes.resident_bytes()
            + (p.layer0.capacity() + p.upper.capacity()) * 4
            + p.upper_at.capacity() * 4
            + p.locks.capacity()
            + self.ids.lock().capacity() * 16
    }

    fn block0<'p>(&self, p: &'p Points, id: u32) -> &'p [AtomicU32] {
        let at = id as usize * (self.m0 + 1);
        &p.layer0[at..at + self.m0 + 1]
    }

    fn block<'p>(&self, p: &'p Points, id: u32, layer: u8) -> &'p [AtomicU32] {
        if layer == 0 {
            return self.block0(p, id);
        }
        let at = (p.upper_at[id as usize] as usize + usize::from(layer) - 1) * (self.m + 1);
        &p.upper[at..at + self.m + 1]
    }

    fn capacity(&self, layer: u8) -> usize {
        if layer == 0 { self.m0 } else { self.m }
    }

    #[inline]
    fn sim_points(&self, p: &Points, a: u32, b: u32) -> f32 {
        dot_i8(p.codes.get(a), p.codes.get(b)) as f32 * p.scales[a as usize] * p.scales[b as usize]
    }

    fn random_level(&self) -> u8 {
        let u = f64::from(self.rng.lock().next_f32()).max(1e-9);
        let mult = 1.0 / (self.m as f64).ln();
        ((-u.ln() * mult).floor() as u64).min(u64::from(NATIVE_LEVELS_MAX)) as u8
    }

    fn take_searcher(&self) -> Searcher {
        self.searchers.lock().pop().unwrap_or_default()
    }

    fn return_searcher(&self, s: Searcher) {
        let mut pool = self.searchers.lock();
        if pool.len() < SEARCHERS_POOLED {
            pool.push(s);
        }
    }

    /// Inserts unit vectors (replacing earlier points of the same keys), linking them on
    /// every core when the batch is large. Fails only when the graph would pass
    /// [`NATIVE_POINTS_MAX`] points.
    ///
    /// `vectors` holds the vectors of `keys`, one after another.
    pub fn insert_batch(&self, keys: &[u64], vectors: &[f32]) -> Result<(), crate::IndexError> {
        if vectors.len() != keys.len() * self.dim {
            return Err(crate::IndexError::DimensionMismatch {
                expected: self.dim,
                actual: vectors.len() / keys.len().max(1),
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        let first = self.append(keys, vectors)?;
        let ids: Vec<u32> = (first..first + keys.len() as u32).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if ids.len() < 256 || threads == 1 {
            let mut s = self.take_searcher();
            for &id in &ids {
                self.link(id, &mut s);
            }
            self.return_searcher(s);
            return Ok(());
        }
        std::thread::scope(|scope| {
            for t in 0..threads {
                let ids = &ids;
                scope.spawn(move || {
                    let mut s = self.take_searcher();
                    for &id in ids.iter().skip(t).step_by(threads) {
                        self.link(id, &mut s);
                    }
                    self.return_searcher(s);
                });
            }
        });
        Ok(())
    }

    /// Appends the points (codes, levels, empty link blocks) under the write lock; returns
    /// the first new id. Searches cannot reach the new points until they are linked.
    fn append(&self, keys: &[u64], vectors: &[f32]) -> Result<u32, crate::IndexError> {
        let levels: Vec<u8> = keys.iter().map(|_| self.random_level()).collect();
        let mut codes = Vec::with_capacity(vectors.len());
        let scales: Vec<f32> = vectors
            .chunks_exact(self.dim)
            .map(|v| quantize(v, &mut codes))
            .collect();
        let mut p = self.points.write();
        let first = p.len();
        if first + keys.len() > NATIVE_POINTS_MAX {
            return Err(crate::IndexError::Full);
        }
        let before = (p.codes.owned.capacity(), p.layer0.capacity());
        p.codes.owned.reserve(codes.len());
        p.layer0.reserve(keys.len() * (self.m0 + 1));
        if (p.codes.owned.capacity(), p.layer0.capacity()) != before {
            sys::advise_huge_pages(&p.codes.owned);
            sys::advise_huge_pages(&p.layer0);
            sys::advise_huge_pages(&p.scales);
        }
        p.codes.owned.extend_from_slice(&codes);
        p.scales.extend_from_slice(&scales);
        for (&key, &level) in keys.iter().zip(&levels) {
            p.keys.push(key);
            p.deleted.push(AtomicBool::new(false));
            p.levels.push(level);
            p.layer0
                .extend(std::iter::repeat_with(|| AtomicU32::new(0)).take(self.m0 + 1));
            if level == 0 {
                p.upper_at.push(NONE);
            } else {
                let blocks = p.upper.len() / (self.m + 1);
                p.upper_at.push(blocks as u32);
                p.upper.extend(
                    std::iter::repeat_with(|| AtomicU32::new(0))
                        .take(usize::from(level) * (self.m + 1)),
                );
            }
            p.locks.push(Mutex::new(()));
        }
        let mut ids = self.ids.lock();
        for (i, &key) in keys.iter().enumerate() {
            if let Some(old) = ids.insert(key, (first + i) as u32) {
                p.deleted[old as usize].store(true, Ordering::Relaxed);
                self.deleted.fetch_add(1, Ordering::Relaxed);
                self.unrepaired.lock().push(old);
            }
        }
        Ok(first as u32)
    }

    /// Tombstones `key`: never returned again. Returns whether it was live.
    pub fn remove(&self, key: u64) -> bool {
        let Some(id) = self.ids.lock().remove(&key) else {
            return false;
        };
        self.points.read().deleted[id as usize].store(true, Ordering::Release);
        self.deleted.fetch_add(1, Ordering::Relaxed);
        self.unrepaired.lock().push(id);
        true
    }

    /// Greedy descent on one upper layer from `cur` towards the query scored by `sim`.
    fn greedy(
        &self,
        p: &Points,
        mut cur: Cand,
        layer: u8,
        sim: &dyn Fn(u32) -> f32,
        buf: &mut Vec<u32>,
    ) -> Cand {
        loop {
            buf.clear();
            read_links(self.block(p, cur.id, layer), buf);
            let mut improved = false;
            for &n in buf.iter() {
                let s = sim(n);
                if s > cur.sim {
                    cur = Cand { sim: s, id: n };
                    improved = true;
                }
            }
            if !improved {
                return cur;
            }
        }
    }

    /// Beam search of one layer from `entries`; leaves the best `ef` admissible points in
    /// `s.results`. Inadmissible points are traversed but never become results.
    #[allow(
        clippy::too_many_arguments,
        reason = "the inner loop's state, passed flat"
    )]
    fn search_layer(
        &self,
        p: &Points,
        s: &mut Searcher,
        entries: &[Cand],
        ef: usize,
        layer: u8,
        sim: &dyn Fn(u32) -> f32,
        admissible: &dyn Fn(u32) -> bool,
    ) {
        s.begin(p.len());
        for &e in entries {
            if s.visit(e.id) {
                s.candidates.push(e);
                if admissible(e.id) {
                    s.results.push(Worst(std::cmp::Reverse(e)));
                    if s.results.len() > ef {
                        s.results.pop();
                    }
                }
            }
        }
        let mut fresh = std::mem::take(&mut s.fresh);
        while let Some(c) = s.candidates.pop() {
            if s.results.len() >= ef && c.sim < s.worst() {
                break;
            }
            fresh.clear();
            let block = self.block(p, c.id, layer);
            let count = (block[0].load(Ordering::Acquire) as usize).min(block.len() - 1);
            for slot in &block[1..=count] {
                let n = slot.load(Ordering::Relaxed);
                if s.visit(n) {
                    sys::prefetch(p.codes.get(n), PREFETCH_LINES);
                    fresh.push(n);
                }
            }
            for &n in &fresh {
                let sn = sim(n);
                if s.results.len() < ef || sn > s.worst() {
                    let cand = Cand { sim: sn, id: n };
                    s.candidates.push(cand);
                    if admissible(n) {
                        s.results.push(Worst(std::cmp::Reverse(cand)));
                        if s.results.len() > ef {
                            s.results.pop();
                        }
                    }
                }
            }
        }
        s.fresh = fresh;
    }

    /// The HNSW heuristic: from candidates sorted best first, keep each one that is not
    /// more similar to a neighbour already kept than to `base`, up to `m`.
    ///
    /// Copies of one vector (agents do store repeats) need care when `base` is itself a
    /// copy: its twins tie with each other, and rejecting ties would let the first twin
    /// shadow the rest, unreachable; keeping them all would fill the block with twins, and
    /// a group of more than `m` copies would become a closed clique that traps every search
    /// entering it. So a candidate identical to a kept neighbour (and as similar to `base`)
    /// is kept, but at most a quarter of the block of them, those nearest to `base` in
    /// insertion order: the copies link as a ring lattice (connected, each reachable from
    /// its id-neighbours) and keep most of their links for the way out.
    fn select(&self, p: &Points, base: u32, sorted: &[Cand], m: usize) -> Vec<u32> {
        /// Rounding slack of int8 similarities in `f32` (products taken in other orders).
        const TIE: f32 = 1e-6;
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        let mut twins: Vec<u32> = Vec::new();
        for &c in sorted {
            if kept.len() >= m {
                break;
            }
            let own = self.sim_points(p, c.id, c.id);
            let mut twin = false;
            let diverse = kept.iter().all(|&r| {
                let s = self.sim_points(p, c.id, r);
                twin |= s >= own - TIE;
                s <= c.sim + TIE
            });
            match (diverse, twin) {
                (true, false) => kept.push(c.id),
                (true, true) => twins.push(c.id),
                (false, _) => {}
            }
        }
        twins.sort_unstable_by_key(|&t| (t.abs_diff(base), t));
        let room = m.saturating_sub(kept.len()).min((m / 4).max(2));
        kept.extend(twins.into_iter().take(room));
        kept
    }

    /// Links the appended point `id` into every layer up to its level.
    fn link(&self, id: u32, s: &mut Searcher) {
        let p = self.points.read();
        let level = p.levels[id as usize];
        let entry = {
            let current = unpack_entry(self.entry.load(Ordering::Acquire));
            match current {
                Some(e) => e,
                None => {
                    let _guard = self.entry_lock.lock();
                    match unpack_entry(self.entry.load(Ordering::Acquire)) {
                        Some(e) => e,
                        None => {
                            self.entry.store(pack_entry(id, level), Ordering::Release);
                            return;
                        }
                    }
                }
            }
        };
        let (ep, top) = entry;
        let code = p.codes.get(id);
        let scale = p.scales[id as usize];
        let sim = |n: u32| dot_i8(code, p.codes.get(n)) as f32 * scale * p.scales[n as usize];
        let mut cur = Cand {
            sim: sim(ep),
            id: ep,
        };
        let mut buf = Vec::new();
        for layer in (level.saturating_add(1)..=top).rev() {
            cur = self.greedy(&p, cur, layer, &sim, &mut buf);
        }
        let mut entries = vec![cur];
        let live = |n: u32| n != id && !p.deleted[n as usize].load(Ordering::Relaxed);
        for layer in (0..=level.min(top)).rev() {
            self.search_layer(
                &p,
                s,
                &entries,
                self.params.ef_construction.max(self.m),
                layer,
                &sim,
                &live,
            );
            let found = s.sorted_results();
            let chosen = self.select(&p, id, &found, self.m);
            {
                let block = self.block(&p, id, layer);
                let _guard = p.locks[id as usize].lock();
                buf.clear();
                read_links(block, &mut buf);
                if buf.is_empty() {
                    write_links(block, &chosen);
                } else {
                    // Others linked to this point while it was being placed: merge.
                    buf.extend_from_slice(&chosen);
                    self.prune_into(&p, id, layer, &mut buf);
                }
            }
            for &n in &chosen {
                self.add_link(&p, n, id, layer);
            }
            if !found.is_empty() {
                entries = found;
            }
        }
        if level > top {
            let _guard = self.entry_lock.lock();
            if let Some((_, top_now)) = unpack_entry(self.entry.load(Ordering::Acquire))
                && level > top_now
            {
                self.entry.store(pack_entry(id, level), Ordering::Release);
            }
        }
    }

    /// Rewrites `base`'s block at `layer` with the heuristic's choice among `ids` (live
    /// ones, deduplicated). Caller holds `base`'s link lock.
    fn prune_into(&self, p: &Points, base: u32, layer: u8, ids: &mut Vec<u32>) {
        ids.sort_unstable();
        ids.dedup();
        let mut cands: Vec<Cand> = ids
            .iter()
            .filter(|&&n| n != base && !p.deleted[n as usize].load(Ordering::Relaxed))
            .map(|&n| Cand {
                sim: self.sim_points(p, base, n),
                id: n,
            })
            .collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let chosen = self.select(p, base, &cands, self.capacity(layer));
        write_links(self.block(p, base, layer), &chosen);
    }

    /// Adds the link `from → to` at `layer`, pruning `from`'s links when full.
    fn add_link(&self, p: &Points, from: u32, to: u32, layer: u8) {
        if p.levels[from as usize] < layer {
            return;
        }
        let block = self.block(p, from, layer);
        let _guard = p.locks[from as usize].lock();
        let count = block[0].load(Ordering::Acquire) as usize;
        if block[1..=count.min(block.len() - 1)]
            .iter()
            .any(|a| a.load(Ordering::Relaxed) == to)
        {
            return;
        }
        if count < self.capacity(layer) {
            block[count + 1].store(to, Ordering::Relaxed);
            block[0].store(count as u32 + 1, Ordering::Release);
            return;
        }
        let mut ids = Vec::with_capacity(count + 1);
        read_links(block, &mut ids);
        ids.push(to);
        self.prune_into(p, from, layer, &mut ids);
    }

    /// Keys of the approximate nearest live neighbours that `accept` admits, nearest first
    /// by the int8 score: the best `4·k` (at least 64) of a beam of `ef.max(k)`, for the
    /// caller to rescore with exact vectors.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<u64> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let Some((ep, top)) = unpack_entry(self.entry.load(Ordering::Acquire)) else {
            return Vec::new();
        };
        let mut s = self.take_searcher();
        let mut q_codes = std::mem::take(&mut s.query);
        q_codes.clear();
        let q_scale = quantize(query, &mut q_codes);
        let p = self.points.read();
        let sim = |n: u32| dot_i8(&q_codes, p.codes.get(n)) as f32 * q_scale * p.scales[n as usize];
        let mut cur = Cand {
            sim: sim(ep),
            id: ep,
        };
        let mut buf = std::mem::take(&mut s.fresh);
        for layer in (1..=top).rev() {
            cur = self.greedy(&p, cur, layer, &sim, &mut buf);
        }
        s.fresh = buf;
        let admissible = |n: u32| {
            !p.deleted[n as usize].load(Ordering::Acquire)
                && accept.is_none_or(|accept| accept(p.keys[n as usize]))
        };
        self.search_layer(&p, &mut s, &[cur], ef.max(k), 0, &sim, &admissible);
        // The int8 order is close to exact: the best few per result wanted are enough for
        // the caller's f32 rescoring.
        let rescore = crate::flat::rescore_window(k);
        let keys = s
            .sorted_results()
            .into_iter()
            .take(rescore)
            .map(|c| p.keys[c.id as usize])
            .collect();
        s.query = q_codes;
        self.return_searcher(s);
        keys
    }

    /// Relinks the neighbours of every tombstone recorded since the last repair, so that no
    /// link leads to it any more, and moves the entry point off a tombstone. Runs on every
    /// core; searches and removals proceed meanwhile. Returns the tombstones repaired.
    pub fn repair(&self) -> usize {
        let repaired = std::mem::take(&mut *self.unrepaired.lock());
        if repaired.is_empty() {
            return 0;
        }
        let p = self.points.read();
        let n = p.len() as u32;
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let p_ref = &*p;
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    let mut links = Vec::new();
                    let mut merged = Vec::new();
                    for id in (t as u32..n).step_by(threads) {
                        if p_ref.deleted[id as usize].load(Ordering::Relaxed) {
                            continue;
                        }
                        for layer in 0..=p_ref.levels[id as usize] {
                            self.repair_point(p_ref, id, layer, &mut links, &mut merged);
                        }
                    }
                });
            }
        });
        if let Some((ep, _)) = unpack_entry(self.entry.load(Ordering::Acquire))
            && p.deleted[ep as usize].load(Ordering::Relaxed)
        {
            let _guard = self.entry_lock.lock();
            let best = (0..n)
                .filter(|&i| !p.deleted[i as usize].load(Ordering::Relaxed))
                .max_by_key(|&i| (p.levels[i as usize], std::cmp::Reverse(i)));
            let packed = best.map_or(u64::MAX, |i| pack_entry(i, p.levels[i as usize]));
            self.entry.store(packed, Ordering::Release);
        }
        repaired.len()
    }

    fn repair_point(
        &self,
        p: &Points,
        id: u32,
        layer: u8,
        links: &mut Vec<u32>,
        merged: &mut Vec<u32>,
    ) {
        let block = self.block(p, id, layer);
        links.clear();
        read_links(block, links);
        if !links
            .iter()
            .any(|&n| p.deleted[n as usize].load(Ordering::Relaxed))
        {
            return;
        }
        let _guard = p.locks[id as usize].lock();
        links.clear();
        read_links(block, links);
        merged.clear();
        for &n in links.iter() {
            if p.deleted[n as usize].load(Ordering::Relaxed) {
                if p.levels[n as usize] >= layer {
                    read_links(self.block(p, n, layer), merged);
                }
            } else {
                merged.push(n);
            }
        }
        self.prune_into(p, id, layer, merged);
    }
}
