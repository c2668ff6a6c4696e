//! One agent's partition: its configuration, memories, session sets, counters and index.
//! Nothing here is shared between agents, so isolation does not hinge on a filter.
//!
//! Only [`crate::apply`] changes an [`AgentState`] (and recovery builds one from a
//! snapshot); everything else reads it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use mneme_index::{IndexConfig, VectorIndex};
use mneme_scoring::{Calibration, MemorySignals, MemoryType, ScoringParams, TypeParams};
use parking_lot::{Mutex, RwLock};

use crate::codec::{AccessRecord, AgentConfigRecord, MemoryRecord, ScoringRecord};
use crate::model::{Memory, Scope};
use crate::mutation::Space;

/// How an agent embeds and scores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentConfig {
    pub(crate) embedder: String,
    pub(crate) dim: usize,
    pub(crate) calibration: Calibration,
    pub(crate) scoring: ScoringParams,
}

pub(crate) fn type_from_wire(n: u8) -> Option<MemoryType> {
    match n {
        1 => Some(MemoryType::Episodic),
        2 => Some(MemoryType::Semantic),
        3 => Some(MemoryType::Procedural),
        _ => None,
    }
}

pub(crate) fn type_to_wire(t: MemoryType) -> u8 {
    match t {
        MemoryType::Episodic => 1,
        MemoryType::Semantic => 2,
        MemoryType::Procedural => 3,
    }
}

impl AgentConfig {
    pub(crate) fn to_record(&self) -> AgentConfigRecord {
        let p = &self.scoring;
        let t = |tp: &TypeParams| (tp.type_weight, tp.half_life_days, tp.decay_floor);
        AgentConfigRecord {
            embedder: self.embedder.clone(),
            dim: self.dim as u32,
            calibration: (self.calibration.center, self.calibration.slope),
            scoring: ScoringRecord {
                types: [t(&p.episodic), t(&p.semantic), t(&p.procedural)],
                frequency_saturation: p.frequency_saturation,
                access_half_life_days: p.access_half_life_days,
                weights: [p.recency_weight, p.frequency_weight, p.importance_weight],
                context_shift: p.context_shift,
                lexical_weight: p.lexical_weight,
            },
        }
    }

    pub(crate) fn from_record(r: &AgentConfigRecord) -> Self {
        let t = |(type_weight, half_life_days, decay_floor): (f32, f64, f32)| TypeParams {
            type_weight,
            half_life_days,
            decay_floor,
        };
        let s = &r.scoring;
        Self {
            embedder: r.embedder.clone(),
            dim: r.dim as usize,
            calibration: Calibration {
                center: r.calibration.0,
                slope: r.calibration.1,
            },
            scoring: ScoringParams {
                episodic: t(s.types[0]),
                semantic: t(s.types[1]),
                procedural: t(s.types[2]),
                frequency_saturation: s.frequency_saturation,
                access_half_life_days: s.access_half_life_days,
                recency_weight: s.weights[0],
                frequency_weight: s.weights[1],
                importance_weight: s.weights[2],
                context_shift: s.context_shift,
                lexical_weight: s.lexical_weight,
            },
        }
    }

    /// The vector space of this configuration.
    pub(crate) fn space(&self) -> Space {
        Space {
            embedder: self.embedder.clone(),
            dim: self.dim as u32,
        }
    }
}

/// One memory held in memory (its vector lives in the index).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemoryState {
    pub(crate) id: String,
    pub(crate) memory_type: MemoryType,
    pub(crate) record: MemoryRecord,
    pub(crate) access: AccessRecord,
}

impl MemoryState {
    pub(crate) fn expired(&self, now_ms: i64) -> bool {
        self.record.expires_at_ms != 0 && self.record.expires_at_ms <= now_ms
    }

    /// True when a read with `scope` may see this memory at `now_ms`.
    pub(crate) fn visible(&self, scope: &Scope, now_ms: i64) -> bool {
        if self.expired(now_ms) {
            return false;
        }
        let session = &self.record.session_id;
        if !scope.session_id.is_empty() {
            let own = *session == scope.session_id;
            let agent_wide = session.is_empty() && !scope.session_only;
            if !own && !agent_wide {
                return false;
            }
        }
        if !scope.memory_types.is_empty() && !scope.memory_types.contains(&self.memory_type) {
            return false;
        }
        scope
            .metadata
            .iter()
            .all(|(k, v)| self.record.metadata.get(k) == Some(v))
    }

    pub(crate) fn signals(&self) -> MemorySignals {
        MemorySignals {
            memory_type: self.memory_type,
            updated_at_ms: self.record.updated_at_ms,
            last_accessed_at_ms: self.access.last_accessed_at_ms,
            access_count: self.access.access_count,
            importance: self.record.importance,
            pinned: self.record.pinned,
        }
    }

    pub(crate) fn to_memory(&self, agent_id: &str, vector: Option<Vec<f32>>) -> Memory {
        Memory {
            id: self.id.clone(),
            agent_id: agent_id.to_owned(),
            session_id: self.record.session_id.clone(),
            memory_type: self.memory_type,
            content: self.record.content.clone(),
            metadata: self.record.metadata.clone(),
            pinned: self.record.pinned,
            importance: self.record.importance,
            access_count: self.access.access_count,
            created_at_ms: self.record.created_at_ms,
            updated_at_ms: self.record.updated_at_ms,
            last_accessed_at_ms: self.access.last_accessed_at_ms,
            expires_at_ms: self.record.expires_at_ms,
            vector,
        }
    }

    /// Approximate bytes this memory occupies in records on disk (for stats).
    pub(crate) fn approx_bytes(&self, dim: usize) -> u64 {
        let meta: usize = self
            .record
            .metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        (self.record.content.len()
            + meta
            + self.record.session_id.len()
            + self.id.len()
            + dim * 4
            + 48) as u64
    }
}

/// Text compared for deduplication: lower-cased words, punctuation and spacing ignored.
/// Vectors alone cannot decide: "the door code is 1234" and "… 4321" embed almost
/// identically but are different facts, and merging them would lose the newer one.
pub(crate) fn normalized_text(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    normalized_chars(content, |c| out.push(c));
    out
}

/// A stable 64-bit FNV-1a hash of [`normalized_text`], computed without building it.
pub(crate) fn text_hash(content: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = [0u8; 4];
    normalized_chars(content, |c| {
        for b in c.encode_utf8(&mut buf).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    });
    h
}

/// The characters of the normalised text: each character lower-cased on its own (so the
/// result never depends on context), alphanumeric runs kept, anything else a single space
/// between words.
fn normalized_chars(content: &str, mut emit: impl FnMut(char)) {
    let mut started = false;
    let mut gap = false;
    for c in content.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if gap && started {
                emit(' ');
            }
            gap = false;
            started = true;
            emit(c);
        } else {
            gap = true;
        }
    }
}

/// What a visibility check needs, in a dense table indexed by key: filtering a scan costs
/// an array read per vector, not a hash lookup.
#[derive(Debug, Clone, Copy)]
struct KeyMeta {
    session: u32,
    memory_type: MemoryType,
    expires_at_ms: i64,
}

/// A snapshot being written: the agent as of `lsn`. Changes after it save the memory's
/// earlier version here first (copy on write), so the snapshot stays exact while writes go
/// on; a change too large to save that way (clear-all, a new embedder) aborts it instead.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) lsn: u64,
    pub(crate) config: AgentConfig,
    pub(crate) next_key: u64,
    /// Keys live at `lsn`.
    pub(crate) keys: Vec<u64>,
    /// Request ids as of `lsn`, oldest first.
    pub(crate) requests: Vec<(String, Vec<String>)>,
    /// Versions as of `lsn` of memories changed since.
    pub(crate) saved: HashMap<u64, (MemoryState, Vec<f32>)>,
    pub(crate) aborted: bool,
}

/// An agent's memories and the maps that make scoped reads cheap.
#[derive(Debug)]
pub(crate) struct AgentState {
    pub(crate) config: AgentConfig,
    pub(crate) memories: HashMap<u64, MemoryState>,
    /// Memory id → index key, ordered (ids are time-ordered ULIDs, so this is creation order).
    pub(crate) ids: BTreeMap<String, u64>,
    /// Session → keys; agent-wide memories under "".
    pub(crate) sessions: HashMap<String, HashSet<u64>>,
    /// The key the next new memory gets (keys are never reused).
    pub(crate) next_key: u64,
    meta: Vec<Option<KeyMeta>>,
    session_numbers: HashMap<String, u32>,
    next_session_number: u32,
    /// Hash of normalised text → keys, for deduplication.
    by_text: HashMap<u64, Vec<u64>>,
    /// (expiry, key) of memories that expire.
    expiries: BTreeSet<(i64, u64)>,
    by_type: [u64; 3],
    bytes: u64,
    /// Bounds on every memory's signals (for the recall certificate).
    signal_bounds: mneme_scoring::SignalBounds,
    /// The last log entry applied to this agent.
    pub(crate) applied_lsn: u64,
    /// The first entry applied since this agent's last snapshot (`None`: clean).
    pub(crate) dirty_since: Option<u64>,
    pub(crate) capture: Option<Arc<Mutex<Capture>>>,
    /// Recent client request ids and the memory ids their remember returned.
    pub(crate) requests: RequestIds,
    /// BM25 over the memories' content (derived, like every index, from the memories).
    pub(crate) lexical: mneme_index::LexicalIndex,
}

/// The last [`crate::limits::REQUEST_IDS_PER_AGENT_MAX`] request ids of an agent (kept
/// across clear-all, in its snapshots, and identical on every replica).
#[derive(Debug, Default, Clone)]
pub(crate) struct RequestIds {
    order: std::collections::VecDeque<String>,
    ids: HashMap<String, Vec<String>>,
}

impl RequestIds {
    pub(crate) fn get(&self, request_id: &str) -> Option<&Vec<String>> {
        self.ids.get(request_id)
    }

    /// Records a new request id, forgetting the oldest beyond the limit.
    pub(crate) fn insert(&mut self, request_id: String, memory_ids: Vec<String>) {
        if self.ids.insert(request_id.clone(), memory_ids).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > crate::limits::REQUEST_IDS_PER_AGENT_MAX {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Oldest first.
    pub(crate) fn to_vec(&self) -> Vec<(String, Vec<String>)> {
        self.order
            .iter()
            .filter_map(|r| self.ids.get(r).map(|ids| (r.clone(), ids.clone())))
            .collect()
    }
}

impl AgentState {
    pub(crate) fn new(config: AgentConfig) -> Self {
        Self {
            config,
            memories: HashMap::new(),
            ids: BTreeMap::new(),
            sessions: HashMap::new(),
            next_key: 0,
            meta: Vec::new(),
            session_numbers: HashMap::new(),
            next_session_number: 0,
            by_text: HashMap::new(),
            expiries: BTreeSet::new(),
            by_type: [0; 3],
            bytes: 0,
            signal_bounds: mneme_scoring::SignalBounds::default(),
            applied_lsn: 0,
            dirty_since: None,
            capture: None,
            requests: RequestIds::default(),
            lexical: mneme_index::LexicalIndex::new(),
        }
    }

    fn session_number(&mut self, session: &str) -> u32 {
        if let Some(n) = self.session_numbers.get(session) {
            return *n;
        }
        let n = self.next_session_number;
        self.next_session_number = self.next_session_number.wrapping_add(1);
        self.session_numbers.insert(session.to_owned(), n);
        n
    }

    fn index_memory(&mut self, key: u64, m: &MemoryState) {
        let session = self.session_number(&m.record.session_id);
        let slot = key as usize;
        if self.meta.len() <= slot {
            self.meta.resize(slot + 1, None);
        }
        self.meta[slot] = Some(KeyMeta {
            session,
            memory_type: m.memory_type,
            expires_at_ms: m.record.expires_at_ms,
        });
        self.by_text
            .entry(text_hash(&m.record.content))
            .or_default()
            .push(key);
        if m.record.expires_at_ms != 0 {
            self.expiries.insert((m.record.expires_at_ms, key));
        }
        self.sessions
            .entry(m.record.session_id.clone())
            .or_default()
            .insert(key);
        self.by_type[usize::from(type_to_wire(m.memory_type) - 1)] += 1;
        self.bytes += m.approx_bytes(self.config.dim);
        self.signal_bounds.widen(&m.signals());
        self.lexical
            .insert(key, &mneme_embed::analyze(&m.record.content));
    }

    fn unindex_memory(&mut self, key: u64, m: &MemoryState) {
        if let Some(slot) = self.meta.get_mut(key as usize) {
            *slot = None;
        }
        let h = text_hash(&m.record.content);
        if let Some(keys) = self.by_text.get_mut(&h) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_text.remove(&h);
            }
        }
        if m.record.expires_at_ms != 0 {
            self.expiries.remove(&(m.record.expires_at_ms, key));
        }
        let session = &m.record.session_id;
        if let Some(keys) = self.sessions.get_mut(session) {
            keys.remove(&key);
            if keys.is_empty() {
                self.sessions.remove(session);
                self.session_numbers.remove(session);
            }
        }
        self.by_type[usize::from(type_to_wire(m.memory_type) - 1)] -= 1;
        self.bytes = self.bytes.saturating_sub(m.approx_bytes(self.config.dim));
        self.lexical.remove(key);
    }

    /// Keys whose normalised text hashes like `content`'s (callers compare the text).
    pub(crate) fn same_text_keys(&self, content: &str) -> &[u64] {
        self.by_text
            .get(&text_hash(content))
            .map_or(&[], Vec::as_slice)
    }

    /// True when `scope` at `now_ms` sees every memory of the agent (so every key in its
    /// index): no session, type or metadata restriction, and nothing expired but unswept.
    pub(crate) fn sees_everything(&self, scope: &Scope, now_ms: i64) -> bool {
        scope.session_id.is_empty()
            && scope.memory_types.is_empty()
            && scope.metadata.is_empty()
            && self.next_expiry().is_none_or(|t| t > now_ms)
    }

    /// A predicate over index keys: true for memories `scope` may see at `now_ms`.
    pub(crate) fn scope_filter<'a>(
        &'a self,
        scope: &'a Scope,
        now_ms: i64,
    ) -> impl Fn(u64) -> bool + Sync + 'a {
        let own = (!scope.session_id.is_empty())
            .then(|| self.session_numbers.get(&scope.session_id).copied());
        let wide = self.session_numbers.get("").copied();
        let type_mask = scope
            .memory_types
            .iter()
            .fold(0u8, |mask, t| mask | (1 << type_to_wire(*t)));
        move |key: u64| {
            let Some(Some(m)) = self.meta.get(key as usize) else {
                return false;
            };
            if m.expires_at_ms != 0 && m.expires_at_ms <= now_ms {
                return false;
            }
            if let Some(own) = own {
                let mine = own == Some(m.session);
                let agent_wide = !scope.session_only && wide == Some(m.session);
                if !mine && !agent_wide {
                    return false;
                }
            }
            if type_mask != 0 && type_mask & (1 << type_to_wire(m.memory_type)) == 0 {
                return false;
            }
            scope.metadata.is_empty()
                || self.memories.get(&key).is_some_and(|mem| {
                    scope
                        .metadata
                        .iter()
                        .all(|(k, v)| mem.record.metadata.get(k) == Some(v))
                })
        }
    }

    /// The state of a loaded snapshot: `memories` with their keys, built in bulk. Fails on
    /// a duplicate id (a damaged or hostile snapshot), naming it.
    pub(crate) fn from_memories(
        config: AgentConfig,
        memories: Vec<(u64, MemoryState)>,
        next_key: u64,
    ) -> std::result::Result<Self, String> {
        let mut state = Self::new(config);
        let mut ids: Vec<(String, u64)> =
            memories.iter().map(|(k, m)| (m.id.clone(), *k)).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("memory id {} appears twice", w[0].0));
        }
        // Sorted input: the map is built in one pass.
        state.ids = ids.into_iter().collect();
        // A quarter of headroom: the first writes after a load must not rehash everything.
        state.memories.reserve(memories.len() + memories.len() / 4);
        for (key, m) in memories {
            state.index_memory(key, &m);
            state.memories.insert(key, m);
        }
        state.next_key = next_key;
        Ok(state)
    }

    /// Inserts a memory under a key it does not have yet.
    pub(crate) fn insert(&mut self, key: u64, memory: MemoryState) {
        self.ids.insert(memory.id.clone(), key);
        self.index_memory(key, &memory);
        self.memories.insert(key, memory);
        self.next_key = self.next_key.max(key + 1);
    }

    /// Replaces the memory under `key` (same id).
    pub(crate) fn replace(&mut self, key: u64, memory: MemoryState) {
        if let Some(old) = self.memories.remove(&key) {
            self.unindex_memory(key, &old);
        }
        self.index_memory(key, &memory);
        self.memories.insert(key, memory);
    }

    /// Changes only the access counters of `key` (nothing indexed depends on them).
    pub(crate) fn set_access(&mut self, key: u64, access: AccessRecord) {
        if let Some(m) = self.memories.get_mut(&key) {
            m.access = access;
            self.signal_bounds.widen(&m.signals());
        }
    }

    /// Removes a memory by key.
    pub(crate) fn remove(&mut self, key: u64) -> Option<MemoryState> {
        let memory = self.memories.remove(&key)?;
        self.ids.remove(&memory.id);
        self.unindex_memory(key, &memory);
        Some(memory)
    }

    /// Removes every memory (keys are not reused afterwards).
    pub(crate) fn clear(&mut self) {
        self.memories.clear();
        self.ids.clear();
        self.sessions.clear();
        self.meta.clear();
        self.session_numbers.clear();
        self.by_text.clear();
        self.expiries.clear();
        self.by_type = [0; 3];
        self.bytes = 0;
        self.signal_bounds = mneme_scoring::SignalBounds::default();
        self.lexical.clear();
    }

    pub(crate) fn key_of(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Keys of memories that expired at or before `at_ms`.
    pub(crate) fn expired_keys(&self, at_ms: i64) -> Vec<u64> {
        self.expiries
            .range(..=(at_ms, u64::MAX))
            .map(|(_, k)| *k)
            .collect()
    }

    /// The earliest expiry of any memory.
    pub(crate) fn next_expiry(&self) -> Option<i64> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Live memories by type (episodic, semantic, procedural), counting expired-but-not-yet-
    /// swept ones out, and approximate bytes. O(expired), not O(memories).
    pub(crate) fn counts(&self, now_ms: i64) -> ([u64; 3], HashMap<&str, u64>, u64) {
        let mut by_type = self.by_type;
        let mut bytes = self.bytes;
        let mut expired_by_session: HashMap<&str, u64> = HashMap::new();
        for (_, key) in self.expiries.range(..=(now_ms, u64::MAX)) {
            if let Some(m) = self.memories.get(key) {
                by_type[usize::from(type_to_wire(m.memory_type) - 1)] -= 1;
                bytes = bytes.saturating_sub(m.approx_bytes(self.config.dim));
                *expired_by_session.entry(&m.record.session_id).or_default() += 1;
            }
        }
        (by_type, expired_by_session, bytes)
    }

    /// A memory's signals at least as favoured as any of this agent's at `now_ms` (see
    /// [`mneme_scoring::SignalBounds::best`]); `None` when the agent holds none.
    pub(crate) fn best_signals(&self, now_ms: i64) -> Option<mneme_scoring::MemorySignals> {
        let present = MemoryType::ALL
            .into_iter()
            .zip(self.by_type)
            .filter(|(_, n)| *n > 0)
            .map(|(t, _)| t);
        self.signal_bounds
            .best(&self.config.scoring, present, now_ms)
    }

    /// About how many memories a scope can see (for the planner).
    pub(crate) fn estimate(&self, scope: &Scope) -> usize {
        if scope.session_id.is_empty() {
            return self.memories.len();
        }
        let own = self.sessions.get(&scope.session_id).map_or(0, HashSet::len);
        let wide = if scope.session_only {
            0
        } else {
            self.sessions.get("").map_or(0, HashSet::len)
        };
        own + wide
    }
}

/// One agent: its state and its index, each behind a lock. Writes to both happen only in
/// [`crate::apply`], in log order; reads take only the read locks.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) state: RwLock<AgentState>,
    pub(crate) index: RwLock<VectorIndex>,
    /// The graph changed since its last snapshot.
    pub(crate) graph_dirty: std::sync::atomic::AtomicBool,
    pub(crate) graph_saved_at: Mutex<Option<std::time::Instant>>,
    /// Points in the graph when it was last snapshotted.
    pub(crate) graph_saved_len: std::sync::atomic::AtomicUsize,
}

impl Agent {
    pub(crate) fn new(id: &str, config: AgentConfig, index: IndexConfig) -> Self {
        let dim = config.dim;
        Self {
            id: id.to_owned(),
            state: RwLock::new(AgentState::new(config)),
            index: RwLock::new(VectorIndex::new(dim, index)),
            graph_dirty: std::sync::atomic::AtomicBool::new(false),
            graph_saved_at: Mutex::new(None),
            graph_saved_len: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_hash_is_the_hash_of_the_normalised_text() {
        for (a, b) in [
            ("User prefers formal tone", "user prefers   FORMAL tone!"),
            ("Ünïcode Straße", "ünïcode straße"),
            ("  lead and trail ", "lead and trail"),
            ("ΟΔΟΣ İstanbul", "οδοσ i̇stanbul"),
        ] {
            assert_eq!(normalized_text(a), normalized_text(b));
            assert_eq!(text_hash(a), text_hash(b), "{a:?} vs {b:?}");
        }
        assert_ne!(text_hash("door code 1234"), text_hash("door code 4321"));
        assert_ne!(text_hash("ab c"), text_hash("a bc"));
        assert_eq!(normalized_text(" Hello, World! "), "hello world");
    }
}
