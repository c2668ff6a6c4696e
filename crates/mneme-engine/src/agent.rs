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
        }
    }

    /// Inserts or replaces a memory; returns its index key.
    pub(crate) fn put(&mut self, memory: MemoryState) -> u64 {
        let key = match self.ids.get(&memory.id) {
            Some(key) => {
                let key = *key;
                if let Some(old) = self.memories.get(&key) {
                    let old_session = old.record.session_id.clone();
                    self.unlink_session(&old_session, key);
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
        let session = memory.record.session_id.clone();
        self.unlink_session(&session, key);
        Some(memory)
    }

    /// Removes every memory.
    pub(crate) fn clear(&mut self) {
        self.memories.clear();
        self.ids.clear();
        self.sessions.clear();
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
}

impl Agent {
    pub(crate) fn new(id: &str, config: AgentConfig, persisted: bool, index: IndexConfig) -> Self {
        let dim = config.dim;
        Self {
            id: id.to_owned(),
            write: Mutex::new(()),
            state: RwLock::new(AgentState::new(config, persisted)),
            index: RwLock::new(VectorIndex::new(dim, index)),
        }
    }
}
