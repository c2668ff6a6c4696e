//! The one apply path: `apply(state, entry, lsn)`, the only code that changes an agent.
//!
//! It is deterministic and infallible: given the same state and the same entry it makes the
//! same change (index keys included) on every run, every replay and every replica, and it
//! cannot fail half-way. An entry that does not fit the state it lands on (a vector space
//! the agent no longer has, a re-embedding that raced a write) changes nothing and says why
//! in its [`Outcome`]. Decisions that depend on the state are made here, in log order:
//! near-duplicates (compared in f64, summed in order, so every CPU agrees), whether an id
//! exists, which memories a session or an expiry covers.
//!
//! Entries at or below an agent's `applied_lsn` are skipped, so replaying a log over a
//! snapshot that already contains part of it is harmless.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mneme_index::VectorIndex;

use crate::agent::{Agent, AgentConfig, AgentState, MemoryState, normalized_text, type_from_wire};
use crate::codec::AgentConfigRecord;
use crate::engine::Inner;
use crate::limits::MEMORIES_PER_AGENT_MAX;
use crate::model::{Memory, Remembered};
use crate::mutation::{Configure, Entry, Import, Mutation, NewMemory, Remember, Space, Update};

/// What applying an entry did, for the caller that logged it (replay ignores it).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Per remembered item, in order.
    Remembered(Vec<Remembered>),
    /// The updated memory (`None`: no such live memory).
    Updated(Option<Memory>),
    /// How many memories were removed or imported.
    Count(u64),
    /// Done (touch, configure).
    Done,
    /// Nothing changed, because the entry does not fit the agent's current state.
    Rejected(String),
    /// Already applied (replay over a snapshot).
    Skipped,
}

/// The configuration an entry creates its agent with, if it can create one.
fn creates(mutation: &Mutation) -> Option<&AgentConfigRecord> {
    match mutation {
        Mutation::Remember(r) | Mutation::RememberOnce { remember: r, .. } => Some(&r.create),
        Mutation::Import(i) => Some(&i.create),
        Mutation::Configure(c) => Some(&c.config),
        Mutation::Update(_)
        | Mutation::Forget { .. }
        | Mutation::ForgetSession { .. }
        | Mutation::ClearAll
        | Mutation::Touch { .. }
        | Mutation::Expire { .. } => None,
    }
}

/// What an entry for an agent that does not exist (and is not created by it) returns.
fn absent(mutation: &Mutation) -> Outcome {
    match mutation {
        Mutation::Update(_) => Outcome::Updated(None),
        Mutation::Touch { .. } => Outcome::Done,
        _ => Outcome::Count(0),
    }
}

impl Inner {
    /// Applies `entry`, logged at `lsn`, to the engine's state.
    pub(crate) fn apply(&self, lsn: u64, entry: &Entry) -> Outcome {
        let agent = match self.agent(&entry.agent) {
            Some(agent) => agent,
            None => match creates(&entry.mutation) {
                Some(config) => self.create_agent(&entry.agent, config),
                None => {
                    self.applied_lsn.fetch_max(lsn, Ordering::SeqCst);
                    return absent(&entry.mutation);
                }
            },
        };
        let outcome = {
            let mut state = agent.state.write();
            if lsn <= state.applied_lsn {
                return Outcome::Skipped;
            }
            let mut index = agent.index.write();
            #[cfg(feature = "fault-injection")]
            if let (Some(marker), Mutation::Remember(r)) =
                (&self.config.fault_panic_on_content, &entry.mutation)
                && r.items.iter().any(|i| i.record.content == *marker)
            {
                panic!("injected fault: applying {marker:?}");
            }
            let mut cx = Cx {
                agent: &agent,
                state: &mut state,
                index: &mut index,
                index_config: self.config.index,
            };
            let outcome = cx.apply(&entry.mutation);
            state.applied_lsn = lsn;
            state.dirty_since.get_or_insert(lsn);
            outcome
        };
        agent
            .graph_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.applied_lsn.fetch_max(lsn, Ordering::SeqCst);
        outcome
    }

    fn create_agent(&self, id: &str, config: &AgentConfigRecord) -> Arc<Agent> {
        let mut agents = self.agents.write();
        let agent = agents.entry(id.to_owned()).or_insert_with(|| {
            Arc::new(Agent::new(
                id,
                AgentConfig::from_record(config),
                self.config.index,
            ))
        });
        Arc::clone(agent)
    }
}

/// One agent's state and index, write-locked, for one entry.
struct Cx<'a> {
    agent: &'a Agent,
    state: &'a mut AgentState,
    index: &'a mut VectorIndex,
    index_config: mneme_index::IndexConfig,
}

/// Cosine of two unit vectors, in f64 summed in order: the same on every CPU.
fn exact_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn space_mismatch(agent: &AgentConfig, space: &Space) -> String {
    format!(
        "the agent's vectors are {:?} ({} dimensions) but this request's are {:?} ({} dimensions); \
         the agent changed meanwhile — retry",
        agent.embedder, agent.dim, space.embedder, space.dim
    )
}

impl Cx<'_> {
    fn apply(&mut self, mutation: &Mutation) -> Outcome {
        match mutation {
            Mutation::Remember(r) => self.remember(r),
            Mutation::RememberOnce {
                request_id,
                remember,
            } => self.remember_once(request_id, remember),
            Mutation::Update(u) => self.update(u),
            Mutation::Forget { ids } => {
                let keys: Vec<u64> = ids.iter().filter_map(|id| self.state.key_of(id)).collect();
                Outcome::Count(self.remove_keys(&keys))
            }
            Mutation::ForgetSession { session_id } => {
                let keys: Vec<u64> = self
                    .state
                    .sessions
                    .get(session_id)
                    .map(|keys| keys.iter().copied().collect())
                    .unwrap_or_default();
                Outcome::Count(self.remove_keys(&keys))
            }
            Mutation::ClearAll => {
                let count = self.state.memories.len() as u64;
                self.abort_capture();
                self.state.clear();
                self.index.clear();
                Outcome::Count(count)
            }
            Mutation::Touch { at_ms, hits } => {
                for (id, n) in hits {
                    let Some(key) = self.state.key_of(id) else {
                        continue;
                    };
                    self.preserve(key);
                    if let Some(m) = self.state.memories.get(&key) {
                        let mut access = m.access;
                        access.access_count = access.access_count.saturating_add(u64::from(*n));
                        access.last_accessed_at_ms = access.last_accessed_at_ms.max(*at_ms);
                        self.state.set_access(key, access);
                    }
                }
                Outcome::Done
            }
            Mutation::Expire { at_ms } => {
                let keys = self.state.expired_keys(*at_ms);
                Outcome::Count(self.remove_keys(&keys))
            }
            Mutation::Configure(c) => self.configure(c),
            Mutation::Import(i) => self.import(i),
        }
    }

    /// Before a memory changes while a snapshot is being written, keep the version the
    /// snapshot needs.
    fn preserve(&mut self, key: u64) {
        let Some(capture) = &self.state.capture else {
            return;
        };
        let mut capture = capture.lock();
        if capture.aborted || key >= capture.next_key || capture.saved.contains_key(&key) {
            return;
        }
        if let (Some(m), Some(v)) = (self.state.memories.get(&key), self.index.get(key)) {
            capture.saved.insert(key, (m.clone(), v.to_vec()));
        }
    }

    fn abort_capture(&mut self) {
        if let Some(capture) = &self.state.capture {
            capture.lock().aborted = true;
        }
    }

    fn remove_keys(&mut self, keys: &[u64]) -> u64 {
        let mut removed = 0;
        for key in keys {
            self.preserve(*key);
            if self.state.remove(*key).is_some() {
                self.index.remove(*key);
                removed += 1;
            }
        }
        removed
    }

    fn full(&self, adding: usize) -> Option<Outcome> {
        (self.state.memories.len() + adding > MEMORIES_PER_AGENT_MAX).then(|| {
            Outcome::Rejected(format!(
                "the agent holds {} memories; the limit is {MEMORIES_PER_AGENT_MAX}",
                self.state.memories.len()
            ))
        })
    }

    fn remember(&mut self, r: &Remember) -> Outcome {
        if self.state.config.space() != r.space {
            return Outcome::Rejected(space_mismatch(&self.state.config, &r.space));
        }
        if let Some(full) = self.full(r.items.len()) {
            return full;
        }
        let threshold = f64::from(r.dedup_cosine_min);
        let mut out = Vec::with_capacity(r.items.len());
        for item in &r.items {
            let duplicate = self.find_duplicate(item, r.at_ms, threshold);
            let (key, deduplicated) = match duplicate {
                Some(key) => {
                    self.reinforce(key, item, r.at_ms);
                    (key, true)
                }
                None => {
                    let Some(memory_type) = type_from_wire(item.record.memory_type) else {
                        continue;
                    };
                    let key = self.state.next_key;
                    self.state.insert(
                        key,
                        MemoryState {
                            id: item.id.clone(),
                            memory_type,
                            record: item.record.clone(),
                            access: Default::default(),
                        },
                    );
                    // Checked against the agent's dimension above; cannot fail.
                    let _ = self.index.insert_unit(key, &item.vector);
                    (key, false)
                }
            };
            if let Some(m) = self.state.memories.get(&key) {
                out.push(Remembered {
                    memory: m.to_memory(&self.agent.id, None),
                    deduplicated,
                });
            }
        }
        Outcome::Remembered(out)
    }

    /// A remember under a request id: the first time it is applied as usual and the ids it
    /// returned are kept; afterwards it returns those memories (as they are now, marked
    /// duplicates) and changes nothing.
    fn remember_once(&mut self, request_id: &str, r: &Remember) -> Outcome {
        if let Some(ids) = self.state.requests.get(request_id) {
            let out = ids
                .iter()
                .filter_map(|id| self.state.key_of(id))
                .filter_map(|key| self.state.memories.get(&key))
                .map(|m| Remembered {
                    memory: m.to_memory(&self.agent.id, None),
                    deduplicated: true,
                })
                .collect();
            return Outcome::Remembered(out);
        }
        let outcome = self.remember(r);
        if let Outcome::Remembered(out) = &outcome {
            let ids = out.iter().map(|r| r.memory.id.clone()).collect();
            self.state.requests.insert(request_id.to_owned(), ids);
        }
        outcome
    }

    /// The earliest (lowest-key) existing memory in the same session and of the same type,
    /// unexpired, with the same normalised text and a vector at least `threshold` close.
    fn find_duplicate(&self, item: &NewMemory, at_ms: i64, threshold: f64) -> Option<u64> {
        let text = normalized_text(&item.record.content);
        self.state
            .same_text_keys(&item.record.content)
            .iter()
            .copied()
            .filter(|key| {
                let Some(m) = self.state.memories.get(key) else {
                    return false;
                };
                m.record.session_id == item.record.session_id
                    && m.record.memory_type == item.record.memory_type
                    && !m.expired(at_ms)
                    && normalized_text(&m.record.content) == text
                    && self
                        .index
                        .get(*key)
                        .is_some_and(|v| exact_dot(v, &item.vector) >= threshold)
            })
            .min()
    }

    /// Folds a duplicate into the memory it repeats: it counts as a use, may raise
    /// importance, pin it, extend its life and add metadata, and refreshes its recency.
    fn reinforce(&mut self, key: u64, item: &NewMemory, at_ms: i64) {
        self.preserve(key);
        let Some(mut m) = self.state.memories.get(&key).cloned() else {
            return;
        };
        m.access.access_count = m.access.access_count.saturating_add(1);
        m.access.last_accessed_at_ms = at_ms;
        if item.importance_set {
            m.record.importance = m.record.importance.max(item.record.importance);
        }
        m.record.pinned |= item.record.pinned;
        m.record.expires_at_ms = match (m.record.expires_at_ms, item.record.expires_at_ms) {
            (0, _) | (_, 0) => 0,
            (a, b) => a.max(b),
        };
        for (k, v) in &item.record.metadata {
            if m.record.metadata.len() < crate::limits::METADATA_ENTRIES_MAX
                || m.record.metadata.contains_key(k)
            {
                m.record.metadata.insert(k.clone(), v.clone());
            }
        }
        m.record.updated_at_ms = at_ms;
        self.state.replace(key, m);
    }

    fn update(&mut self, u: &Update) -> Outcome {
        let Some(key) = self.state.key_of(&u.id) else {
            return Outcome::Updated(None);
        };
        let Some(mut m) = self.state.memories.get(&key).cloned() else {
            return Outcome::Updated(None);
        };
        if m.expired(u.at_ms) {
            return Outcome::Updated(None);
        }
        if let Some((_, _, space)) = &u.content
            && self.state.config.space() != *space
        {
            return Outcome::Rejected(space_mismatch(&self.state.config, space));
        }
        self.preserve(key);
        if let Some((content, vector, _)) = &u.content {
            m.record.content.clone_from(content);
            let _ = self.index.insert_unit(key, vector);
        }
        if let Some(metadata) = &u.metadata {
            m.record.metadata.clone_from(metadata);
        }
        if let Some(expires) = u.expires_at_ms {
            m.record.expires_at_ms = expires;
        }
        if let Some(pinned) = u.pinned {
            m.record.pinned = pinned;
        }
        if let Some(importance) = u.importance {
            m.record.importance = importance;
        }
        m.record.updated_at_ms = u.at_ms;
        let out = m.to_memory(&self.agent.id, None);
        self.state.replace(key, m);
        Outcome::Updated(Some(out))
    }

    fn configure(&mut self, c: &Configure) -> Outcome {
        let config = AgentConfig::from_record(&c.config);
        let space_changes = config.space() != self.state.config.space();
        match &c.vectors {
            Some(vectors) => {
                let ids: std::collections::HashSet<&str> =
                    vectors.iter().map(|(id, _)| id.as_str()).collect();
                let exact = ids.len() == vectors.len()
                    && vectors.len() == self.state.memories.len()
                    && vectors
                        .iter()
                        .all(|(id, v)| self.state.key_of(id).is_some() && v.len() == config.dim);
                if !exact {
                    return Outcome::Rejected(
                        "the agent's memories changed while they were re-embedded; retry".into(),
                    );
                }
                self.abort_capture();
                let mut index = VectorIndex::new(config.dim, self.index_config);
                for (id, v) in vectors {
                    if let Some(key) = self.state.key_of(id) {
                        let _ = index.insert_unit(key, v);
                    }
                }
                *self.index = index;
            }
            None if space_changes && !self.state.memories.is_empty() => {
                return Outcome::Rejected(
                    "a new embedder needs the agent's memories re-embedded; retry".into(),
                );
            }
            None if space_changes => {
                self.abort_capture();
                *self.index = VectorIndex::new(config.dim, self.index_config);
            }
            None => {}
        }
        self.state.config = config;
        Outcome::Done
    }

    fn import(&mut self, i: &Import) -> Outcome {
        if self.state.config.space() != i.space {
            if !self.state.memories.is_empty() {
                return Outcome::Rejected(format!(
                    "the agent holds {} memories in {:?} ({} dimensions); the import's are {:?} ({} dimensions)",
                    self.state.memories.len(),
                    self.state.config.embedder,
                    self.state.config.dim,
                    i.space.embedder,
                    i.space.dim
                ));
            }
            self.abort_capture();
            let mut config = AgentConfig::from_record(&i.create);
            config.scoring = self.state.config.scoring;
            self.state.config = config;
            *self.index = VectorIndex::new(i.space.dim as usize, self.index_config);
        }
        if let Some(full) = self.full(i.memories.len()) {
            return full;
        }
        let mut imported = 0;
        for m in &i.memories {
            let Some(memory_type) = type_from_wire(m.record.memory_type) else {
                continue;
            };
            let memory = MemoryState {
                id: m.id.clone(),
                memory_type,
                record: m.record.clone(),
                access: m.access,
            };
            match self.state.key_of(&m.id) {
                Some(key) => {
                    self.preserve(key);
                    self.state.replace(key, memory);
                    let _ = self.index.insert_unit(key, &m.vector);
                }
                None => {
                    let key = self.state.next_key;
                    self.state.insert(key, memory);
                    let _ = self.index.insert_unit(key, &m.vector);
                }
            }
            imported += 1;
        }
        Outcome::Count(imported)
    }
}
