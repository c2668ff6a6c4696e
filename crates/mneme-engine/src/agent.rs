//! One agent's partition: its configuration, memories, session sets and vector index.
//! Nothing here is shared between agents, so isolation does not hinge on a filter.

use std::collections::{BTreeMap, HashMap, HashSet};

use mneme_index::{IndexConfig, VectorIndex};
use mneme_scoring::{Calibration, MemorySignals, MemoryType, ScoringParams, TypeParams};
use parking_lot::{Mutex, RwLock};

use crate::codec::{AccessRecord, AgentConfigRecord, MemoryRecord, ScoringRecord};
use crate::error::{Error, Result};
use crate::model::{Memory, Scope};

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
            },
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
    pub(crate) fn from_records(
        id: &str,
        record: MemoryRecord,
        access: AccessRecord,
    ) -> Result<Self> {
        let memory_type =
            type_from_wire(record.memory_type).ok_or_else(|| Error::CorruptRecord {
                key: id.to_owned(),
                reason: format!("unknown memory type {}", record.memory_type),
            })?;
        Ok(Self {
            id: id.to_owned(),
            memory_type,
            record,
            access,
        })
    }

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
}

/// Text compared for deduplication: lower-cased words, punctuation and spacing ignored.
/// Vectors alone cannot decide: "the door code is 1234" and "… 4321" embed almost
/// identically but are different facts, and merging them would lose the newer one.
pub(crate) fn normalized_text(content: &str) -> String {
    content
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// In-memory hash of normalised text (never stored, so the std hasher is fine).
pub(crate) fn text_hash(normalized: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    normalized.hash(&mut h);
    h.finish()
}

/// What a visibility check needs, in a dense table indexed by key: filtering a scan costs
/// an array read per vector, not a hash lookup.
#[derive(Debug, Clone, Copy)]
struct KeyMeta {
    session: u32,
    memory_type: MemoryType,
    expires_at_ms: i64,
}

/// An agent's memories and the maps that make scoped reads cheap.
#[derive(Debug)]
pub(crate) struct AgentState {
    pub(crate) config: AgentConfig,
    /// False until the configuration record is durable (the first write carries it).
    pub(crate) config_persisted: bool,
    pub(crate) memories: HashMap<u64, MemoryState>,
    /// Memory id → index key, ordered (ids are time-ordered ULIDs, so this is creation order).
    pub(crate) ids: BTreeMap<String, u64>,
    /// Session → keys; agent-wide memories under "".
    pub(crate) sessions: HashMap<String, HashSet<u64>>,
    next_key: u64,
    meta: Vec<Option<KeyMeta>>,
    session_numbers: HashMap<String, u32>,
    /// Hash of normalised text → keys, for deduplication.
    by_text: HashMap<u64, Vec<u64>>,
}

impl AgentState {
    pub(crate) fn new(config: AgentConfig, config_persisted: bool) -> Self {
        Self {
            config,
            config_persisted,
            memories: HashMap::new(),
            ids: BTreeMap::new(),
            sessions: HashMap::new(),
            next_key: 0,
            meta: Vec::new(),
            session_numbers: HashMap::new(),
            by_text: HashMap::new(),
        }
    }

    fn session_number(&mut self, session: &str) -> u32 {
        let next = self.session_numbers.len() as u32;
        *self
            .session_numbers
            .entry(session.to_owned())
            .or_insert(next)
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
            .entry(text_hash(&normalized_text(&m.record.content)))
            .or_default()
            .push(key);
    }

    fn unindex_memory(&mut self, key: u64, m: &MemoryState) {
        if let Some(slot) = self.meta.get_mut(key as usize) {
            *slot = None;
        }
        let h = text_hash(&normalized_text(&m.record.content));
        if let Some(keys) = self.by_text.get_mut(&h) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_text.remove(&h);
            }
        }
    }

    /// Keys whose normalised text hashes like `normalized` (callers compare the text).
    pub(crate) fn same_text_keys(&self, normalized: &str) -> &[u64] {
        self.by_text
            .get(&text_hash(normalized))
            .map_or(&[], Vec::as_slice)
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

    /// Inserts or replaces a memory; returns its index key.
    pub(crate) fn put(&mut self, memory: MemoryState) -> u64 {
        let key = match self.ids.get(&memory.id) {
            Some(key) => {
                let key = *key;
                if let Some(old) = self.memories.remove(&key) {
                    self.unlink_session(&old.record.session_id, key);
                    self.unindex_memory(key, &old);
                }
                key
            }
            None => {
                let key = self.next_key;
                self.next_key += 1;
                self.ids.insert(memory.id.clone(), key);
                key
            }
        };
        self.sessions
            .entry(memory.record.session_id.clone())
            .or_default()
            .insert(key);
        self.index_memory(key, &memory);
        self.memories.insert(key, memory);
        key
    }

    fn unlink_session(&mut self, session: &str, key: u64) {
        if let Some(keys) = self.sessions.get_mut(session) {
            keys.remove(&key);
            if keys.is_empty() {
                self.sessions.remove(session);
            }
        }
    }

    /// Removes a memory by key.
    pub(crate) fn remove(&mut self, key: u64) -> Option<MemoryState> {
        let memory = self.memories.remove(&key)?;
        self.ids.remove(&memory.id);
        self.unlink_session(&memory.record.session_id, key);
        self.unindex_memory(key, &memory);
        Some(memory)
    }

    /// Removes every memory.
    pub(crate) fn clear(&mut self) {
        self.memories.clear();
        self.ids.clear();
        self.sessions.clear();
        self.meta.clear();
        self.by_text.clear();
    }

    pub(crate) fn key_of(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
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

/// One agent: its write lock (serialising its writes so memory and log apply in the same
/// order), its state and its index. Reads take only the read locks.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) write: Mutex<()>,
    pub(crate) state: RwLock<AgentState>,
    pub(crate) index: RwLock<VectorIndex>,
    /// The graph changed since its last snapshot.
    pub(crate) graph_dirty: std::sync::atomic::AtomicBool,
    pub(crate) graph_saved_at: Mutex<Option<std::time::Instant>>,
}

impl Agent {
    pub(crate) fn new(id: &str, config: AgentConfig, persisted: bool, index: IndexConfig) -> Self {
        let dim = config.dim;
        Self {
            id: id.to_owned(),
            write: Mutex::new(()),
            state: RwLock::new(AgentState::new(config, persisted)),
            index: RwLock::new(VectorIndex::new(dim, index)),
            graph_dirty: std::sync::atomic::AtomicBool::new(false),
            graph_saved_at: Mutex::new(None),
        }
    }
}
