//! Every write request: remember, update, forget, clear, agent configuration.
//!
//! Each one validates its input, embeds text with no lock held (an embedder may take
//! seconds), decides what is not a function of the state — ids, timestamps, normalised
//! vectors — and submits one [`Entry`]. The change happens when the entry is applied
//! ([`crate::apply`]), after the log holds it durably and in log order, so concurrent
//! writers to one agent share a group commit instead of queueing behind each other's fsync.

use mneme_index::distance::normalize;
use mneme_scoring::{MemoryType, ScoringParams};

use crate::agent::{AgentConfig, type_to_wire};
use crate::apply::Outcome;
use crate::codec::MemoryRecord;
use crate::embed::CLIENT_EMBEDDER_ID;
use crate::engine::{Engine, Inner};
use crate::error::{Error, Result};
use crate::ids::new_memory_id;
use crate::limits::{self, BATCH_ITEMS_MAX, FORGET_IDS_MAX};
use crate::model::{Memory, RememberInput, Remembered, UpdateInput};
use crate::mutation::{Configure, Entry, Mutation, NewMemory, Remember, Update};

/// How an agent should embed and score from now on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSettings {
    /// Switch to this embedder (re-embeds every memory).
    pub embedder: Option<String>,
    /// Replace the scoring parameters.
    pub scoring: Option<ScoringParams>,
    /// With `scoring`: ignore its `lexical_weight` and use the default of the agent's
    /// embedder family (after any switch in the same call), as a new agent would get. What
    /// a client that leaves the (optional) wire field unset means.
    pub lexical_weight_from_family: bool,
}

/// Largest agent whose embedder can be changed (the re-embedded vectors are logged in one
/// atomic entry, bounded by the storage entry limit).
pub const REEMBED_MEMORIES_MAX: usize = 20_000;

pub(crate) fn expiry(now_ms: i64, ttl_seconds: u64) -> i64 {
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

/// The outcome's error, or the outcome.
pub(crate) fn accepted(outcome: Outcome) -> Result<Outcome> {
    match outcome {
        Outcome::Rejected(reason) => Err(Error::FailedPrecondition(reason)),
        Outcome::Skipped => Err(Error::FailedPrecondition(
            "the entry was already applied".into(),
        )),
        other => Ok(other),
    }
}

fn unexpected(outcome: &Outcome) -> Error {
    Error::FailedPrecondition(format!("unexpected outcome {outcome:?}"))
}

impl Engine {
    /// Stores one memory durably (or reinforces a near-identical one).
    pub fn remember(&self, agent_id: &str, input: RememberInput) -> Result<Remembered> {
        self.remember_once(agent_id, input, "")
    }

    /// [`Engine::remember`] under a client request id (empty: none): a retry with the same
    /// id (after a timeout, a failover) returns what the first attempt stored, marked
    /// `deduplicated`, instead of storing again. An agent keeps its last
    /// [`limits::REQUEST_IDS_PER_AGENT_MAX`] request ids.
    pub fn remember_once(
        &self,
        agent_id: &str,
        input: RememberInput,
        request_id: &str,
    ) -> Result<Remembered> {
        let mut out = self.remember_items(agent_id, vec![input], "", request_id)?;
        out.pop()
            .ok_or_else(|| Error::invalid("content", "nothing was remembered"))
    }

    /// Stores many memories with one durable commit.
    pub fn remember_batch(
        &self,
        agent_id: &str,
        items: Vec<RememberInput>,
    ) -> Result<Vec<Remembered>> {
        self.remember_batch_once(agent_id, items, "")
    }

    /// [`Engine::remember_batch`] under a client request id (see [`Engine::remember_once`]).
    pub fn remember_batch_once(
        &self,
        agent_id: &str,
        items: Vec<RememberInput>,
        request_id: &str,
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
        self.remember_items(agent_id, items, "items", request_id)
    }

    fn remember_items(
        &self,
        agent_id: &str,
        items: Vec<RememberInput>,
        list: &str,
        request_id: &str,
    ) -> Result<Vec<Remembered>> {
        limits::check_agent_id(agent_id)?;
        limits::check_request_id(request_id)?;
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
        let config = inner.config_for_write(agent_id, client_dim);
        let vectors = item_vectors(inner, &config, &items, &prefix)?;
        let now = inner.now_ms();
        let new_items = items
            .into_iter()
            .zip(vectors)
            .map(|(item, vector)| {
                let memory_type = item.memory_type.unwrap_or(MemoryType::Semantic);
                NewMemory {
                    id: new_memory_id(now),
                    record: MemoryRecord {
                        session_id: item.session_id,
                        memory_type: type_to_wire(memory_type),
                        content: item.content,
                        metadata: item.metadata,
                        pinned: item.pinned,
                        importance: item.importance.unwrap_or(0.5),
                        created_at_ms: now,
                        updated_at_ms: now,
                        expires_at_ms: expiry(now, item.ttl_seconds),
                    },
                    importance_set: item.importance.is_some(),
                    vector,
                }
            })
            .collect();
        let entry = Entry {
            agent: agent_id.to_owned(),
            mutation: Mutation::Remember(Remember {
                at_ms: now,
                create: config.to_record(),
                space: config.space(),
                dedup_cosine_min: inner.config.dedup_cosine_min,
                items: new_items,
            }),
        };
        let entry = match entry.mutation {
            Mutation::Remember(remember) if !request_id.is_empty() => Entry {
                agent: entry.agent,
                mutation: Mutation::RememberOnce {
                    request_id: request_id.to_owned(),
                    remember,
                },
            },
            mutation => Entry {
                agent: entry.agent,
                mutation,
            },
        };
        match accepted(self.submit(entry)?)? {
            Outcome::Remembered(out) => Ok(out),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes one memory; `Ok(None)` when it does not exist (or expired).
    pub fn update(&self, agent_id: &str, id: &str, input: UpdateInput) -> Result<Option<Memory>> {
        limits::check_agent_id(agent_id)?;
        limits::check_memory_id("id", id)?;
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
        let config = agent.state.read().config.clone();
        let now = inner.now_ms();
        let content = match input.content {
            Some(content) => {
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
                Some((content, v, config.space()))
            }
            None => None,
        };
        let entry = Entry {
            agent: agent_id.to_owned(),
            mutation: Mutation::Update(Update {
                at_ms: now,
                id: id.to_owned(),
                content,
                metadata: input.metadata,
                expires_at_ms: input.ttl_seconds.map(|ttl| expiry(now, ttl)),
                pinned: input.pinned,
                importance: input.importance,
            }),
        };
        match accepted(self.submit(entry)?)? {
            Outcome::Updated(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    fn count(&self, agent_id: &str, mutation: Mutation) -> Result<u64> {
        if self.inner.agent(agent_id).is_none() {
            return Ok(0);
        }
        let entry = Entry {
            agent: agent_id.to_owned(),
            mutation,
        };
        match accepted(self.submit(entry)?)? {
            Outcome::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    /// Counts memories as used by the caller (the feedback that reinforces them: frequency
    /// rewards use, not being shown). Durable when it returns; returns how many of the ids
    /// exist. A repeated id counts once per call.
    pub fn mark_used(&self, agent_id: &str, ids: &[String]) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        if ids.len() > limits::MARK_USED_IDS_MAX {
            return Err(Error::invalid(
                "ids",
                format!(
                    "has {} ids, the limit is {}",
                    ids.len(),
                    limits::MARK_USED_IDS_MAX
                ),
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            limits::check_memory_id(&format!("ids[{i}]"), id)?;
        }
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(0);
        };
        let now = self.inner.now_ms();
        let mut distinct: Vec<&String> = ids.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let found = {
            let state = agent.state.read();
            distinct
                .iter()
                .filter(|id| {
                    state
                        .key_of(id)
                        .and_then(|k| state.memories.get(&k))
                        .is_some_and(|m| !m.expired(now))
                })
                .count() as u64
        };
        if found == 0 {
            return Ok(0);
        }
        let entry = Entry {
            agent: agent_id.to_owned(),
            mutation: Mutation::Touch {
                at_ms: now,
                hits: distinct.into_iter().map(|id| (id.clone(), 1)).collect(),
            },
        };
        accepted(self.submit(entry)?)?;
        Ok(found)
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
        for (i, id) in ids.iter().enumerate() {
            limits::check_memory_id(&format!("ids[{i}]"), id)?;
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.count(agent_id, Mutation::Forget { ids: ids.to_vec() })
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
        self.count(
            agent_id,
            Mutation::ForgetSession {
                session_id: session_id.to_owned(),
            },
        )
    }

    /// Deletes every memory of the agent (its configuration stays); returns how many. One
    /// logged entry, whatever the count.
    pub fn clear_all(&self, agent_id: &str) -> Result<u64> {
        limits::check_agent_id(agent_id)?;
        self.count(agent_id, Mutation::ClearAll)
    }

    /// Changes how an agent embeds or scores. Changing the embedder re-embeds every memory
    /// (calling `progress(done, total)` along the way, with no lock held) and logs the new
    /// vectors and the new configuration as one entry; if the agent's memories changed
    /// meanwhile, that entry is refused and the call fails (retry it).
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
        let mut config = inner.config_for_write(agent_id, None);
        if let Some(scoring) = settings.scoring {
            config.scoring = scoring;
        }
        let mut vectors = None;
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
            vectors = Some(reembed(inner, agent_id, embedder.as_ref(), progress)?);
            config.embedder = embedder.id().to_owned();
            config.dim = embedder.dim();
            config.calibration = crate::calibration_of(embedder.family());
        }
        if settings.lexical_weight_from_family {
            let family = inner
                .config
                .embedders
                .get(&config.embedder)
                .map_or(crate::embed::Family::Unknown, |e| e.family());
            config.scoring.lexical_weight = crate::scoring_of(family).lexical_weight;
        }
        let entry = Entry {
            agent: agent_id.to_owned(),
            mutation: Mutation::Configure(Configure {
                config: config.to_record(),
                vectors,
            }),
        };
        accepted(self.submit(entry)?).map(|_| ())
    }
}

fn reembed(
    inner: &Inner,
    agent_id: &str,
    embedder: &dyn crate::embed::Embedder,
    progress: &dyn Fn(usize, usize),
) -> Result<Vec<(String, Vec<f32>)>> {
    let items: Vec<(String, String)> = match inner.agent(agent_id) {
        Some(agent) => {
            let state = agent.state.read();
            state
                .memories
                .values()
                .map(|m| (m.id.clone(), m.record.content.clone()))
                .collect()
        }
        None => Vec::new(),
    };
    if items.len() > REEMBED_MEMORIES_MAX {
        return Err(Error::FailedPrecondition(format!(
            "the agent has {} memories; changing the embedder re-embeds atomically up to {REEMBED_MEMORIES_MAX} — export, clear, reconfigure and import instead",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(256) {
        let texts: Vec<&str> = chunk.iter().map(|(_, c)| c.as_str()).collect();
        for ((id, _), mut v) in chunk.iter().zip(inner.embed(embedder, &texts)?) {
            normalize(&mut v).map_err(|e| Error::Embedder {
                embedder: embedder.id().to_owned(),
                reason: format!("memory {id}: {e}"),
            })?;
            out.push((id.clone(), v));
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
            Some(_) if !client => {
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
