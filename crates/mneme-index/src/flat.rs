//! Exact search over contiguous memory: f32 vectors plus their int8 codes.
//!
//! A scan first ranks every (accepted) vector by its int8 dot product, keeps the best
//! [`rescore_window`]`(k)`, and rescores those with f32. It is the
//! whole search for small collections, the search of the not-yet-indexed tail and of
//! selective filters, and the oracle in tests ([`FlatIndex::search_f32`]).

use std::collections::HashMap;

use crate::IndexError;
use crate::distance::{dot, dot_i8, normalize, quantize};
use crate::topk::{Hit, TopK, sort_hits};

/// Candidates kept from the int8 pass beyond the `k` wanted, at least.
pub const RESCORE_MIN: usize = 64;

/// Candidates of an int8 pass rescored in f32 for `k` results: `k` plus a margin of half
/// of `k`, at least [`RESCORE_MIN`]. The int8 order errs only among near ties (a dot
/// product's rounding error is about 1e-3 of a unit vector's), so the margin covers every
/// exact top-`k` member in practice; it used to be `4k`, and at the engine's usual window
/// (`k` = 80) rescoring 320 vectors, cold in memory when an agent has not been read lately,
/// cost more than the int8 scan of a thousand.
pub fn rescore_window(k: usize) -> usize {
    k.saturating_add((k / 2).max(RESCORE_MIN))
}
/// Vectors requested ahead of the one being rescored: enough to keep several memory fetches
/// in flight, few enough to stay in L1 (asking for all of them at once overflows the
/// CPU's miss queue).
const PREFETCH_AHEAD: usize = 4;
/// Below this many vectors the f32 scan is used directly.
pub const INT8_MIN_VECTORS: usize = 512;

/// Vectors stored densely by slot, with a key → slot map. Removal moves the last slot into
/// the hole, so the storage stays contiguous.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    dim: usize,
    keys: Vec<u64>,
    data: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    slots: HashMap<u64, u32>,
    /// Whether `codes`/`scales` are kept (empty otherwise; scans then use f32 only).
    quantized: bool,
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            keys: Vec::new(),
            data: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            slots: HashMap::new(),
            quantized: true,
        }
    }

    /// An index of the unit vectors `data` (`keys.len()` of them, `dim` each, stored bit for
    /// bit), built in one pass; with `quantized` false the int8 codes are not computed.
    /// Fails on a length mismatch, a duplicate key or more than 2^32 vectors.
    pub fn from_unit_vectors(
        dim: usize,
        keys: Vec<u64>,
        data: Vec<f32>,
        quantized: bool,
    ) -> Result<Self, IndexError> {
        if keys.len() * dim != data.len() {
            return Err(IndexError::DimensionMismatch {
                expected: keys.len() * dim,
                actual: data.len(),
            });
        }
        if u32::try_from(keys.len()).is_err() {
            return Err(IndexError::Full);
        }
        let mut slots = HashMap::with_capacity(keys.len());
        for (slot, key) in keys.iter().enumerate() {
            if slots.insert(*key, slot as u32).is_some() {
                return Err(IndexError::DuplicateKey { key: *key });
            }
        }
        // Room to grow by a quarter without reallocating (and copying) the whole store on
        // the first insert after a load: only address space until it is written.
        let mut data = data;
        data.reserve(data.len() / 4);
        let mut keys = keys;
        keys.reserve(keys.len() / 4);
        slots.reserve(slots.len() / 4);
        crate::native::advise_huge_pages(&data);
        let mut flat = Self {
            dim,
            keys,
            data,
            codes: Vec::new(),
            scales: Vec::new(),
            slots,
            quantized: false,
        };
        flat.set_quantized(quantized);
        Ok(flat)
    }

    /// Keeps (true, the default) or drops the int8 codes. Without them every scan is f32:
    /// a collection served by the native graph, which holds its own codes, drops these to
    /// save a byte per dimension per vector.
    pub fn set_quantized(&mut self, quantized: bool) {
        if quantized == self.quantized {
            return;
        }
        self.quantized = quantized;
        self.codes = Vec::new();
        self.scales = Vec::new();
        if quantized {
            self.codes.reserve(self.data.len());
            for v in self.data.chunks_exact(self.dim) {
                let scale = quantize(v, &mut self.codes);
                self.scales.push(scale);
            }
        }
    }

    /// Dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when `key` is present.
    pub fn contains(&self, key: u64) -> bool {
        self.slots.contains_key(&key)
    }

    /// The stored (unit-length) vector of `key`.
    pub fn get(&self, key: u64) -> Option<&[f32]> {
        let slot = *self.slots.get(&key)? as usize;
        Some(&self.data[slot * self.dim..(slot + 1) * self.dim])
    }

    /// Every key, in slot order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// Inserts (or replaces) `key`, normalising a copy of `vector`.
    pub fn insert(&mut self, key: u64, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.dim,
                actual: vector.len(),
            });
        }
        let mut v = vector.to_vec();
        normalize(&mut v)?;
        self.insert_unit(key, &v)
    }

    /// Inserts (or replaces) `key` with `v` stored bit for bit: the caller has normalised
    /// it (so replicas applying the same log hold identical vectors). Only the dimension and
    /// the capacity are checked.
    pub fn insert_unit(&mut self, key: u64, v: &[f32]) -> Result<(), IndexError> {
        if v.len() != self.dim {
            return Err(IndexError::DimensionMismatch {
                expected: self.dim,
                actual: v.len(),
            });
        }
        self.remove(key);
        let slot = u32::try_from(self.keys.len()).map_err(|_| IndexError::Full)?;
        self.keys.push(key);
        let capacity = self.data.capacity();
        self.data.extend_from_slice(v);
        if self.data.capacity() != capacity {
            crate::native::advise_huge_pages(&self.data);
        }
        if self.quantized {
            let scale = quantize(v, &mut self.codes);
            self.scales.push(scale);
        }
        self.slots.insert(key, slot);
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: u64) -> bool {
        let Some(slot) = self.slots.remove(&key) else {
            return false;
        };
        let slot = slot as usize;
        let last = self.keys.len() - 1;
        let dim = self.dim;
        if slot != last {
            self.keys.swap(slot, last);
            self.data
                .copy_within(last * dim..(last + 1) * dim, slot * dim);
            if self.quantized {
                self.codes
                    .copy_within(last * dim..(last + 1) * dim, slot * dim);
                self.scales.swap(slot, last);
            }
            self.slots.insert(self.keys[slot], slot as u32);
        }
        self.keys.pop();
        self.data.truncate(last * dim);
        if self.quantized {
            self.codes.truncate(last * dim);
            self.scales.pop();
        }
        true
    }

    fn vector(&self, slot: usize) -> &[f32] {
        &self.data[slot * self.dim..(slot + 1) * self.dim]
    }

    fn code(&self, slot: usize) -> &[i8] {
        &self.codes[slot * self.dim..(slot + 1) * self.dim]
    }

    /// Exact f32 scan of every accepted vector (the oracle).
    pub fn search_f32(&self, query: &[f32], k: usize, accept: &dyn Fn(u64) -> bool) -> Vec<Hit> {
        let mut top = TopK::new(k);
        for (slot, &key) in self.keys.iter().enumerate() {
            if accept(key) {
                top.push(key, dot(query, self.vector(slot)));
            }
        }
        top.into_sorted()
    }

    /// Top-k of every accepted vector: int8 pass, then f32 rescoring of the best candidates.
    pub fn search(&self, query: &[f32], k: usize, accept: &dyn Fn(u64) -> bool) -> Vec<Hit> {
        if self.len() < INT8_MIN_VECTORS || !self.quantized {
            return self.search_f32(query, k, accept);
        }
        let mut q_codes = Vec::with_capacity(self.dim);
        let q_scale = quantize(query, &mut q_codes);
        let mut candidates = TopK::new(rescore_window(k));
        for (slot, &key) in self.keys.iter().enumerate() {
            if accept(key) {
                let approx = dot_i8(&q_codes, self.code(slot)) as f32 * q_scale * self.scales[slot];
                // Slots, not keys, ride through the heap so rescoring needs no map lookups.
                candidates.push(slot as u64, approx);
            }
        }
        self.rescore(
            query,
            k,
            candidates.into_sorted().into_iter().map(|h| h.key as usize),
        )
    }

    /// Exact top-k over an explicit list of keys (unknown keys are skipped).
    pub fn search_keys(&self, query: &[f32], k: usize, keys: &[u64]) -> Vec<Hit> {
        let mut top = TopK::new(k);
        for key in keys {
            if let Some(&slot) = self.slots.get(key) {
                top.push(*key, dot(query, self.vector(slot as usize)));
            }
        }
        top.into_sorted()
    }

    /// Exact scores for the given keys (for rescoring graph candidates).
    pub fn rescore_keys(&self, query: &[f32], keys: impl IntoIterator<Item = u64>) -> Vec<Hit> {
        let slots: Vec<usize> = keys
            .into_iter()
            .filter_map(|key| Some(*self.slots.get(&key)? as usize))
            .collect();
        let mut hits: Vec<Hit> = self.scored(query, &slots).collect();
        sort_hits(&mut hits);
        hits
    }

    fn rescore(&self, query: &[f32], k: usize, slots: impl Iterator<Item = usize>) -> Vec<Hit> {
        let slots: Vec<usize> = slots.collect();
        let mut top = TopK::new(k);
        for hit in self.scored(query, &slots) {
            top.push(hit.key, hit.score);
        }
        top.into_sorted()
    }

    /// The exact score of each slot's vector, in `slots` order. Candidates are scattered
    /// over the whole store, so each vector is requested [`PREFETCH_AHEAD`] ahead of its dot
    /// product and the memory fetches overlap.
    fn scored<'a>(
        &'a self,
        query: &'a [f32],
        slots: &'a [usize],
    ) -> impl Iterator<Item = Hit> + 'a {
        for &slot in slots.iter().take(PREFETCH_AHEAD) {
            crate::native::prefetch(self.vector(slot), usize::MAX);
        }
        slots.iter().enumerate().map(move |(i, &slot)| {
            if let Some(&next) = slots.get(i + PREFETCH_AHEAD) {
                crate::native::prefetch(self.vector(next), usize::MAX);
            }
            Hit {
                key: self.keys[slot],
                score: dot(query, self.vector(slot)),
            }
        })
    }

    /// Approximate heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        self.keys.len() * (8 + 4 + 16) + self.data.len() * 4 + self.codes.len()
    }
}
