//! Every state change: remember, update, forget, clear, access counts, expiry, agent
//! configuration.
//!
//! Each one follows the same order under the agent's write lock: validate, embed, build one
//! storage batch, commit it (durable before anything becomes visible), then apply the same
//! change to the in-memory state and index.

use std::collections::BTreeMap;
use std::sync::Arc;

use mneme_index::distance::normalize;
use mneme_scoring::{MemoryType, ScoringParams};
use mneme_storage::WriteBatch;

use crate::agent::{Agent, AgentConfig, MemoryState, normalized_text, type_to_wire};
use crate::codec::{self, AccessRecord, MemoryRecord, RecordKind};
use crate::embed::CLIENT_EMBEDDER_ID;
use crate::engine::{Engine, Inner};
use crate::error::{Error, Result};
use crate::ids::new_memory_id;
use crate::limits::{self, BATCH_ITEMS_MAX, FORGET_IDS_MAX};
use crate::model::{Memory, RememberInput, Remembered, UpdateInput};

/// How an agent should embed and score from now on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSettings {
    /// Switch to this embedder (re-embeds every memory).
    pub embedder: Option<String>,
    /// Replace the scoring parameters.
    pub scoring: Option<ScoringParams>,
}

/// Largest agent whose embedder can be changed (the re-embedded vectors are committed in
/// one atomic batch, bounded by the storage batch limit).
pub const REEMBED_MEMORIES_MAX: usize = 20_000;

fn storage_op(result: mneme_storage::Result<()>) -> Result<()> {
    result.map_err(Error::from)
}

fn put_memory(batch: &mut WriteBatch, agent: &str, m: &MemoryState) -> Result<()> {
    storage_op(batch.put(
        codec::memory_key(agent, RecordKind::Memory, &m.id),
        codec::encode(&m.record),
    ))
}

fn put_access(batch: &mut WriteBatch, agent: &str, m: &MemoryState) -> Result<()> {
    storage_op(batch.put(
        codec::memory_key(agent, RecordKind::Access, &m.id),
        codec::encode(&m.access),
    ))
}

fn put_vector(batch: &mut WriteBatch, agent: &str, id: &str, v: &[f32]) -> Result<()> {
    storage_op(batch.put(
        codec::memory_key(agent, RecordKind::Vector, id),
        codec::encode_vector(v),
    ))
}

fn delete_memory(batch: &mut WriteBatch, agent: &str, id: &str) -> Result<()> {
    for kind in [RecordKind::Memory, RecordKind::Vector, RecordKind::Access] {
        storage_op(batch.delete(codec::memory_key(agent, kind, id)))?;
    }
    Ok(())
}

fn expiry(now_ms: i64, ttl_seconds: u64) -> i64 {
    if ttl_seconds == 0 {
        0
    } else {
        now_ms.saturating_add((ttl_seconds as i64).saturating_mul(1_000))
    }
}

fn check_input(prefix: &str, item: &RememberInput) -> Result<()> {
    let named = |e: Error| match e {
        Error::InvalidArgument { field, reason } => Error::InvalidArgument {
            field: format!("{prefix}{field}"),
            reason,
        },
        other => other,
    };
    limits::check_content(&item.content).map_err(named)?;
    limits::check_session_id("session_id", &item.session_id).map_err(named)?;
    limits::check_ttl(item.ttl_seconds).map_err(named)?;
    limits::check_metadata("metadata", &item.metadata).map_err(named)?;
    if let Some(importance) = item.importance {
        limits::check_importance(importance).map_err(named)?;
    }
    if let Some(v) = &item.vector {
        limits::check_vector("vector", v).map_err(named)?;
    }
    Ok(())
}

/// What to do with one remembered item.
enum Plan {
    New(MemoryState, Vec<f32>),
    /// Reinforce an existing memory (by key) or an earlier item of this batch (by position).
    Existing(u64),
    EarlierInBatch(usize),
}

impl Engine {
    /// Stores one memory durably (or reinforces a near-identical one).
    pub fn remember(&self, agent_id: &str, input: RememberInput) -> Result<Remembered> {
        let mut out = self.remember_items(agent_id, vec![input], "")?;
        out.pop()
            .ok_or_else(|| Error::invalid("content", "nothing was remembered"))
    }

    /// Stores many memories with one durable commit.
    pub fn remember_batch(
        &self,
        agent_id: &str,
        items: Vec<RememberInput>,
    ) -> Result<Vec<Remembered>> {
        if items.is_empty() {
            return Err(Error::invalid("items", "must not be empty"));
        }
        if items.len() > BATCH_ITEMS_MAX {
            return Err(Error::invalid(
                "items",
                format!("has {} items, the limit is {BATCH_ITEMS_MAX}", items.len()),
            ));
        }
        self.remember_items(agent_id, items, "items")
    }

    fn remember_items(
        &self,
        agent_id: &str,
        items: Vec<RememberInput>,
        list: &str,
    ) -> Result<Vec<Remembered>> {
        limits::check_agent_id(agent_id)?;
        let prefix = |i: usize| {
            if list.is_empty() {
                String::new()
            } else {
                format!("{list}[{i}].")
            }
        };
        for (i, item) in items.iter().enumerate() {
            check_input(&prefix(i), item)?;
        }
        let inner = &self.inner;
        let client_dim = items[0].vector.as_ref().map(Vec::len);
        let agent = inner.agent_for_write(agent_id, client_dim)?;
        let _write = agent.write.lock();
        let config = agent.state.read().config.clone();
        let vectors = item_vectors(inner, &config, &items, &prefix)?;
        let now = inner.now_ms();
        let plans = plan_items(inner, &agent, &items, vectors, now);
        commit_plans(inner, &agent, &items, plans, now)
    }

    /// Changes one memory; `Ok(None)` when it does not exist (or expired).
    pub fn update(&self, agent_id: &str, id: &str, input: UpdateInput) -> Result<Option<Memory>> {
        limits::check_agent_id(agent_id)?;
        if let Some(content) = &input.content {
            limits::check_content(content)?;
        }
        if let Some(metadata) = &input.metadata {
            limits::check_metadata("metadata", metadata)?;
        }
        if let Some(ttl) = input.ttl_seconds {
            limits::check_ttl(ttl)?;
        }
        if let Some(importance) = input.importance {
            limits::check_importance(importance)?;
        }
        let inner = &self.inner;
        let Some(agent) = inner.agent(agent_id) else {
            return Ok(None);
        };
        let _write = agent.write.lock();
        let now = inner.now_ms();
        let (key, mut memory, config) = {
            let state = agent.state.read();
            let Some(key) = state.key_of(id) else {
                return Ok(None);
            };
            let memory = state.memories[&key].clone();
            if memory.expired(now) {
                return Ok(None);
            }
            (key, memory, state.config.clone())
        };
        let mut new_vector = None;
        if let Some(content) = input.content.filter(|c| *c != memory.record.content) {
            let embedder = inner.embedder_of(&config).map_err(|_| {
                Error::FailedPrecondition(format!(
                    "content cannot change: this agent's embedder {:?} cannot re-embed it here",
                    config.embedder
                ))
            })?;
            let mut v = inner.embed(embedder.as_ref(), &[&content])?.remove(0);
            normalize(&mut v).map_err(|e| {
                Error::invalid("content", format!("embeds to an unusable vector: {e}"))
            })?;
            new_vector = Some(v);
            memory.record.content = content;
        }
        if let Some(metadata) = input.metadata {
            memory.record.metadata = metadata;
        }
        if let Some(ttl) = input.ttl_seconds {
            memory.record.expires_at_ms = expiry(now, ttl);
        }
        if let Some(pinned) = input.pinned {
            memory.record.pinned = pinned;
        }
        if let Some(importance) = input.importance {
            memory.record.importance = importance;
        }
        memory.record.updated_at_ms = now;
        let mut batch = WriteBatch::new();
        put_memory(&mut batch, &agent.id, &memory)?;
        if let Some(v) = &new_vector {
            put_vector(&mut batch, &agent.id, &memory.id, v)?;
        }
        inner.store.commit(batch)?;
        let out = memory.to_memory(&agent.id, None);
        agent.state.write().put(memory);
        if let Some(v) = new_vector {
            agent
                .index
                .write()
                .insert(key, &v)
                .map_err(|e| Error::invalid("content", e.to_string()))?;
        }
        Ok(Some(out))
    }

    /// Deletes memories by id; returns how many existed.
    pub fn forget(&self, agent_id: &str, ids: &[String]) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        if ids.len() > FORGET_IDS_MAX {
            return Err(Error::invalid(
                "ids",
                format!("has {} ids, the limit is {FORGET_IDS_MAX}", ids.len()),
            ));
        }
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(0);
        };
        let _write = agent.write.lock();
        let keys: Vec<u64> = {
            let state = agent.state.read();
            ids.iter().filter_map(|id| state.key_of(id)).collect()
        };
        self.inner.delete_keys(&agent, keys)
    }

    /// Deletes every memory of one session; returns how many.
    pub fn forget_session(&self, agent_id: &str, session_id: &str) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        limits::check_session_id("session_id", session_id)?;
        if session_id.is_empty() {
            return Err(Error::invalid(
                "session_id",
                "must not be empty (agent-wide memories are removed with ClearAll or Forget)",
            ));
        }
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(0);
        };
        let _write = agent.write.lock();
        let keys: Vec<u64> = agent
            .state
            .read()
            .sessions
            .get(session_id)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default();
        self.inner.delete_keys(&agent, keys)
    }

    /// Deletes every memory of the agent (its configuration stays); returns how many. One
    /// storage operation, whatever the count.
    pub fn clear_all(&self, agent_id: &str) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(0);
        };
        let _write = agent.write.lock();
        let count = agent.state.read().memories.len() as u64;
        let mut batch = WriteBatch::new();
        for kind in [RecordKind::Memory, RecordKind::Vector, RecordKind::Access] {
            storage_op(batch.delete_prefix(codec::memory_key(agent_id, kind, "")))?;
        }
        self.inner.store.commit(batch)?;
        agent.state.write().clear();
        agent.index.write().clear();
        // Its graph snapshot goes at the next save: forgotten vectors leave the disk.
        agent
            .graph_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(count)
    }

    /// Changes how an agent embeds or scores. Changing the embedder re-embeds every memory
    /// (calling `progress(done, total)` along the way) and commits the new vectors and the
    /// new configuration atomically.
    pub fn configure_agent(
        &self,
        agent_id: &str,
        settings: AgentSettings,
        progress: &dyn Fn(usize, usize),
    ) -> Result<()> {
        limits::check_agent_id(agent_id)?;
        if let Some(scoring) = &settings.scoring {
            scoring
                .validate()
                .map_err(|(field, reason)| Error::invalid(format!("scoring.{field}"), reason))?;
        }
        let inner = &self.inner;
        let agent = inner.agent_for_write(agent_id, None)?;
        let _write = agent.write.lock();
        let mut config = agent.state.read().config.clone();
        if let Some(scoring) = settings.scoring {
            config.scoring = scoring;
        }
        let mut vectors = Vec::new();
        if let Some(id) = settings.embedder.filter(|id| *id != config.embedder) {
            let embedder = inner.config.embedders.get(&id).cloned().ok_or_else(|| {
                Error::invalid(
                    "embedder",
                    format!(
                        "{id:?} is not available (available: {})",
                        inner.config.embedders.ids().join(", ")
                    ),
                )
            })?;
            vectors = reembed(inner, &agent, embedder.as_ref(), progress)?;
            config.embedder = embedder.id().to_owned();
            config.dim = embedder.dim();
            config.calibration = embedder.calibration();
        }
        let mut batch = WriteBatch::new();
        storage_op(batch.put(
            codec::config_key(agent_id),
            codec::encode(&config.to_record()),
        ))?;
        for (id, _, v) in &vectors {
            put_vector(&mut batch, agent_id, id, v)?;
        }
        inner.store.commit(batch)?;
        let mut state = agent.state.write();
        let mut index = agent.index.write();
        if state.config.dim != config.dim || state.config.embedder != config.embedder {
            *index = mneme_index::VectorIndex::new(config.dim, inner.config.index);
            for (_, key, v) in &vectors {
                index
                    .insert(*key, v)
                    .map_err(|e| Error::invalid("embedder", e.to_string()))?;
            }
        }
        state.config = config;
        state.config_persisted = true;
        Ok(())
    }
}

fn reembed(
    inner: &Inner,
    agent: &Agent,
    embedder: &dyn crate::embed::Embedder,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<(String, u64, Vec<f32>)>> {
    let items: Vec<(String, u64, String)> = {
        let state = agent.state.read();
        state
            .memories
            .iter()
            .map(|(key, m)| (m.id.clone(), *key, m.record.content.clone()))
            .collect()
    };
    if items.len() > REEMBED_MEMORIES_MAX {
        return Err(Error::FailedPrecondition(format!(
            "the agent has {} memories; changing the embedder re-embeds atomically up to {REEMBED_MEMORIES_MAX} — export, clear, reconfigure and import instead",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(256) {
        let texts: Vec<&str> = chunk.iter().map(|(_, _, c)| c.as_str()).collect();
        for ((id, key, _), mut v) in chunk.iter().zip(inner.embed(embedder, &texts)?) {
            normalize(&mut v).map_err(|e| Error::Embedder {
                embedder: embedder.id().to_owned(),
                reason: format!("memory {id}: {e}"),
            })?;
            out.push((id.clone(), *key, v));
        }
        progress(out.len(), items.len());
    }
    progress(items.len(), items.len());
    Ok(out)
}

/// Each item's unit vector: the client's (checked against the agent) or embedded.
fn item_vectors(
    inner: &Inner,
    config: &AgentConfig,
    items: &[RememberInput],
    prefix: &dyn Fn(usize) -> String,
) -> Result<Vec<Vec<f32>>> {
    let client = config.embedder == CLIENT_EMBEDDER_ID;
    let to_embed: Vec<&str> = items
        .iter()
        .filter(|i| i.vector.is_none())
        .map(|i| i.content.as_str())
        .collect();
    let mut embedded = if to_embed.is_empty() {
        Vec::new()
    } else {
        let embedder = inner.embedder_of(config)?;
        inner.embed(embedder.as_ref(), &to_embed)?
    }
    .into_iter();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut v = match &item.vector {
            Some(v) if !client => {
                return Err(Error::FailedPrecondition(format!(
                    "{}vector: this agent embeds text with {:?}; omit `vector` or use an agent created with client vectors",
                    prefix(i),
                    config.embedder
                )));
            }
            Some(v) if v.len() != config.dim => {
                return Err(Error::invalid(
                    format!("{}vector", prefix(i)),
                    format!(
                        "has {} dimensions, this agent's vectors have {}",
                        v.len(),
                        config.dim
                    ),
                ));
            }
            Some(v) => v.clone(),
            None => embedded.next().ok_or_else(|| Error::Embedder {
                embedder: config.embedder.clone(),
                reason: "returned too few vectors".into(),
            })?,
        };
        normalize(&mut v)
            .map_err(|e| Error::invalid(format!("{}vector", prefix(i)), e.to_string()))?;
        out.push(v);
    }
    Ok(out)
}

fn plan_items(
    inner: &Inner,
    agent: &Agent,
    items: &[RememberInput],
    vectors: Vec<Vec<f32>>,
    now: i64,
) -> Vec<Plan> {
    let state = agent.state.read();
    let index = agent.index.read();
    let threshold = inner.config.dedup_cosine_min;
    let mut plans: Vec<Plan> = Vec::with_capacity(items.len());
    // Earlier new items of this batch by normalised text, for in-batch duplicates.
    let mut batch_texts: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, (item, v)) in items.iter().zip(vectors).enumerate() {
        let memory_type = item.memory_type.unwrap_or(MemoryType::Semantic);
        let text = normalized_text(&item.content);
        let same_place = |m: &MemoryState| {
            m.record.session_id == item.session_id
                && m.memory_type == memory_type
                && !m.expired(now)
        };
        let close = |w: &[f32]| mneme_index::distance::dot(w, &v) >= threshold;
        let existing = state.same_text_keys(&text).iter().copied().find(|key| {
            let m = &state.memories[key];
            same_place(m)
                && normalized_text(&m.record.content) == text
                && index.get(*key).is_some_and(close)
        });
        let earlier = batch_texts.get(&text).and_then(|js| {
            js.iter()
                .copied()
                .find(|j| matches!(&plans[*j], Plan::New(m, w) if same_place(m) && close(w)))
        });
        let plan = match (existing, earlier) {
            (Some(key), _) => Plan::Existing(key),
            (None, Some(j)) => Plan::EarlierInBatch(j),
            (None, None) => {
                batch_texts.entry(text).or_default().push(i);
                Plan::New(new_memory(item, memory_type, now, i), v)
            }
        };
        plans.push(plan);
    }
    plans
}

fn new_memory(
    item: &RememberInput,
    memory_type: MemoryType,
    now: i64,
    _position: usize,
) -> MemoryState {
    MemoryState {
        id: new_memory_id(now),
        memory_type,
        record: MemoryRecord {
            session_id: item.session_id.clone(),
            memory_type: type_to_wire(memory_type),
            content: item.content.clone(),
            metadata: item.metadata.clone(),
            pinned: item.pinned,
            importance: item.importance.unwrap_or(0.5),
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: expiry(now, item.ttl_seconds),
        },
        access: AccessRecord::default(),
    }
}

/// Folds a duplicate into the memory it repeats: it counts as an access, may raise
/// importance, pin it, extend its life and add metadata, and refreshes its recency.
fn reinforce(m: &mut MemoryState, item: &RememberInput, now: i64) {
    m.access.access_count += 1;
    m.access.last_accessed_at_ms = now;
    if let Some(importance) = item.importance {
        m.record.importance = m.record.importance.max(importance);
    }
    m.record.pinned |= item.pinned;
    let new_expiry = expiry(now, item.ttl_seconds);
    m.record.expires_at_ms = match (m.record.expires_at_ms, new_expiry) {
        (0, _) | (_, 0) => 0,
        (a, b) => a.max(b),
    };
    for (k, v) in &item.metadata {
        if m.record.metadata.len() < limits::METADATA_ENTRIES_MAX
            || m.record.metadata.contains_key(k)
        {
            m.record.metadata.insert(k.clone(), v.clone());
        }
    }
    m.record.updated_at_ms = now;
}

fn commit_plans(
    inner: &Inner,
    agent: &Arc<Agent>,
    items: &[RememberInput],
    plans: Vec<Plan>,
    now: i64,
) -> Result<Vec<Remembered>> {
    let mut batch = WriteBatch::new();
    let persist_config = !agent.state.read().config_persisted;
    if persist_config {
        let record = agent.state.read().config.to_record();
        storage_op(batch.put(codec::config_key(&agent.id), codec::encode(&record)))?;
    }
    // Resolve reinforcements into final states, in item order.
    let mut new: Vec<(MemoryState, Vec<f32>)> = Vec::new();
    let mut slot_of_item: Vec<(bool, usize)> = Vec::with_capacity(plans.len());
    let mut reinforced: BTreeMap<u64, MemoryState> = BTreeMap::new();
    for (item, plan) in items.iter().zip(plans) {
        match plan {
            Plan::New(m, v) => {
                slot_of_item.push((true, new.len()));
                new.push((m, v));
            }
            Plan::EarlierInBatch(j) => {
                let (is_new, slot) = slot_of_item[j];
                if is_new {
                    reinforce(&mut new[slot].0, item, now);
                } else if let Some(m) = reinforced.get_mut(&(slot as u64)) {
                    reinforce(m, item, now);
                }
                slot_of_item.push((is_new, slot));
            }
            Plan::Existing(key) => {
                let m = reinforced
                    .entry(key)
                    .or_insert_with(|| agent.state.read().memories[&key].clone());
                reinforce(m, item, now);
                slot_of_item.push((false, key as usize));
            }
        }
    }
    for (m, v) in &new {
        put_memory(&mut batch, &agent.id, m)?;
        put_vector(&mut batch, &agent.id, &m.id, v)?;
        put_access(&mut batch, &agent.id, m)?;
    }
    for m in reinforced.values() {
        put_memory(&mut batch, &agent.id, m)?;
        put_access(&mut batch, &agent.id, m)?;
    }
    inner.store.commit(batch)?;
    let results: Vec<Remembered> = slot_of_item
        .iter()
        .enumerate()
        .map(|(i, (is_new, slot))| {
            let first = *is_new && slot_of_item.iter().position(|s| s == &(true, *slot)) == Some(i);
            let m = if *is_new {
                &new[*slot].0
            } else {
                &reinforced[&(*slot as u64)]
            };
            Remembered {
                memory: m.to_memory(&agent.id, None),
                deduplicated: !first,
            }
        })
        .collect();
    let mut state = agent.state.write();
    let mut index = agent.index.write();
    state.config_persisted = true;
    for (m, v) in new {
        let key = state.put(m);
        index
            .insert(key, &v)
            .map_err(|e| Error::invalid("vector", e.to_string()))?;
    }
    for (_, m) in reinforced {
        state.put(m);
    }
    Ok(results)
}

impl Inner {
    /// Deletes memories by key, durably; returns how many.
    pub(crate) fn delete_keys(&self, agent: &Agent, keys: Vec<u64>) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = {
            let state = agent.state.read();
            keys.iter()
                .filter_map(|k| state.memories.get(k).map(|m| m.id.clone()))
                .collect()
        };
        for chunk in ids.chunks(50_000) {
            let mut batch = WriteBatch::new();
            for id in chunk {
                delete_memory(&mut batch, &agent.id, id)?;
            }
            self.store.commit(batch)?;
        }
        let mut state = agent.state.write();
        let mut index = agent.index.write();
        for key in &keys {
            state.remove(*key);
            index.remove(*key);
        }
        Ok(ids.len() as u64)
    }

    /// Persists queued access counts (batched: one commit per agent per flush).
    pub(crate) fn flush_touches(&self) -> Result<()> {
        let touches = std::mem::take(&mut *self.touches.lock());
        let mut by_agent: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for t in touches {
            let list = by_agent.entry(t.agent).or_default();
            list.extend(t.ids.into_iter().map(|id| (id, t.at_ms)));
        }
        for (agent_id, hits) in by_agent {
            let Some(agent) = self.agent(&agent_id) else {
                continue;
            };
            let _write = agent.write.lock();
            let mut updated: BTreeMap<u64, MemoryState> = BTreeMap::new();
            {
                let state = agent.state.read();
                for (id, at) in hits {
                    let Some(key) = state.key_of(&id) else {
                        continue;
                    };
                    let m = updated
                        .entry(key)
                        .or_insert_with(|| state.memories[&key].clone());
                    m.access.access_count += 1;
                    m.access.last_accessed_at_ms = m.access.last_accessed_at_ms.max(at);
                }
            }
            if updated.is_empty() {
                continue;
            }
            let mut batch = WriteBatch::new();
            for m in updated.values() {
                put_access(&mut batch, &agent.id, m)?;
            }
            self.store.commit(batch)?;
            let mut state = agent.state.write();
            for (key, m) in updated {
                if let Some(current) = state.memories.get_mut(&key) {
                    current.access = m.access;
                }
            }
        }
        Ok(())
    }

    /// Deletes expired memories durably; returns how many.
    pub(crate) fn sweep_expired(&self) -> Result<u64> {
        let now = self.now_ms();
        let mut total = 0;
        for agent in self.agents_snapshot() {
            let any = agent.state.read().memories.values().any(|m| m.expired(now));
            if !any {
                continue;
            }
            let _write = agent.write.lock();
            let keys: Vec<u64> = agent
                .state
                .read()
                .memories
                .iter()
                .filter(|(_, m)| m.expired(now))
                .map(|(k, _)| *k)
                .collect();
            total += self.delete_keys(&agent, keys)?;
        }
        Ok(total)
    }
}
