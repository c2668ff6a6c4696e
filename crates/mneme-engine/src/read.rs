//! Reads: recall (plan, fetch a similarity window, re-rank by confidence), inject-context,
//! get, list and stats. Reads take only the agent's read locks.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use mneme_index::{Filter, Hit};
use mneme_scoring::{MemoryType, Scored, score_hybrid, window_is_exact};

use crate::agent::{Agent, AgentState};
use crate::engine::{Engine, Inner, Touch};
use crate::error::{Error, Result};
use crate::limits::{
    self, MAX_TOKENS_DEFAULT, MAX_TOKENS_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, TOP_K_DEFAULT,
    TOP_K_MAX,
};
use crate::model::{
    AgentStats, InjectedContext, ListPage, ListQuery, Memory, RecallQuery, Recalled, Scope,
};

fn check_scope(scope: &Scope) -> Result<()> {
    limits::check_session_id("session_id", &scope.session_id)?;
    if scope.session_only && scope.session_id.is_empty() {
        return Err(Error::invalid("session_only", "requires a session_id"));
    }
    if scope.memory_types.len() > limits::MEMORY_TYPES_MAX {
        return Err(Error::invalid(
            "memory_types",
            format!(
                "has {} entries, the limit is {}",
                scope.memory_types.len(),
                limits::MEMORY_TYPES_MAX
            ),
        ));
    }
    limits::check_metadata("metadata", &scope.metadata)
}

fn check_recall(q: &RecallQuery) -> Result<usize> {
    check_scope(&q.scope)?;
    let top_k = limits::count_or_default("top_k", q.top_k, TOP_K_DEFAULT, TOP_K_MAX)?;
    if q.query.len() > limits::QUERY_BYTES_MAX {
        return Err(Error::invalid(
            "query",
            format!(
                "is {} bytes, the limit is {} bytes",
                q.query.len(),
                limits::QUERY_BYTES_MAX
            ),
        ));
    }
    match &q.vector {
        Some(v) => limits::check_vector("vector", v)?,
        None if q.query.trim().is_empty() => {
            return Err(Error::invalid(
                "query",
                "must not be empty when no vector is given",
            ));
        }
        None => {}
    }
    if !(0.0..=1.0).contains(&q.min_confidence) {
        return Err(Error::invalid(
            "min_confidence",
            format!("is {}, must be in [0, 1]", q.min_confidence),
        ));
    }
    Ok(top_k)
}

impl Inner {
    fn query_vector(&self, agent: &Agent, q: &RecallQuery) -> Result<Vec<f32>> {
        let config = agent.state.read().config.clone();
        match &q.vector {
            Some(v) if config.embedder != crate::embed::CLIENT_EMBEDDER_ID => {
                Err(Error::FailedPrecondition(format!(
                    "vector: this agent embeds text with {:?}; send `query` text instead",
                    config.embedder
                )))
            }
            Some(v) if v.len() != config.dim => Err(Error::invalid(
                "vector",
                format!(
                    "has {} dimensions, this agent's vectors have {}",
                    v.len(),
                    config.dim
                ),
            )),
            Some(v) => Ok(v.clone()),
            None => {
                let embedder = self.embedder_of(&config)?;
                Ok(self
                    .embed(embedder.as_ref(), &[q.query.as_str()])?
                    .remove(0))
            }
        }
    }

    /// Ranked, scored results for `q` (before `min_confidence` and `top_k`).
    ///
    /// Candidates are the union of a similarity window (the vector index) and a lexical
    /// window (BM25 over the query's words); each candidate gets both signals exactly. The
    /// windows widen until the ranking is provably the ranking of everything: no memory
    /// outside both windows (cosine ≤ the window's last, lexical ≤ the lexical window's
    /// last) can reach the k-th confidence.
    fn ranked(
        &self,
        agent: &Agent,
        q: &RecallQuery,
        top_k: usize,
        now: i64,
    ) -> Result<Vec<(u64, f32, Scored)>> {
        let mut query = self.query_vector(agent, q)?;
        let field = if q.vector.is_some() {
            "vector"
        } else {
            "query"
        };
        mneme_index::distance::normalize(&mut query)
            .map_err(|e| Error::invalid(field, e.to_string()))?;
        let terms = if q.query.is_empty() {
            Vec::new()
        } else {
            mneme_embed::analyze(&q.query)
        };
        let state = agent.state.read();
        let index = agent.index.read();
        let scope = &q.scope;
        let visible = state.scope_filter(scope, now);
        let session_keys: Vec<u64>;
        let filter = if state.sees_everything(scope, now) {
            // Nothing to filter out: the graph search runs without a per-node predicate.
            Filter::All
        } else if scope.session_only {
            session_keys = state
                .sessions
                .get(&scope.session_id)
                .map(|keys| keys.iter().copied().filter(|k| visible(*k)).collect())
                .unwrap_or_default();
            Filter::Keys(&session_keys)
        } else {
            Filter::Predicate {
                accept: &visible,
                estimated_matches: state.estimate(scope),
            }
        };
        let config = &state.config;
        let lexical = state.lexical.prepare(&terms);
        let hybrid = config.scoring.lexical_weight > 0.0 && !lexical.is_empty();
        // What no memory outside the windows can beat: the best signals any memory has.
        let best_signals = state.best_signals(now);
        let factor = self.config.recall_window_factor.max(4);
        let mut window = (top_k * factor).min(self.config.recall_window_max.max(top_k));
        loop {
            let hits: Vec<Hit> = index
                .search(&query, window, filter)
                .map_err(|e| Error::invalid(field, e.to_string()))?;
            let lexical_hits = if hybrid {
                state.lexical.search(&lexical, window, &visible)
            } else {
                Vec::new()
            };
            let mut candidates: HashMap<u64, (f32, f32)> =
                HashMap::with_capacity(hits.len() + lexical_hits.len());
            for h in &hits {
                // Reported even when it does not count (lexical_weight 0): the explanation.
                let lex = if lexical.is_empty() {
                    0.0
                } else {
                    state.lexical.score(&lexical, h.key)
                };
                candidates.insert(h.key, (h.score, lex));
            }
            for &(key, lex) in &lexical_hits {
                if let Some(v) = index.get(key) {
                    candidates
                        .entry(key)
                        .or_insert_with(|| (mneme_index::distance::dot(&query, v), lex));
                }
            }
            let mut ranked: Vec<((u64, f32), Scored)> = candidates
                .into_iter()
                .filter_map(|(key, (cos, lex))| {
                    let m = state.memories.get(&key)?;
                    let s = score_hybrid(
                        &config.scoring,
                        &config.calibration,
                        cos,
                        lex,
                        &m.signals(),
                        now,
                    );
                    Some(((key, cos), s))
                })
                .collect();
            // Equal confidences rank by key (creation order): the same on every run, one sort.
            ranked.sort_by(|a, b| {
                b.1.rank_key
                    .total_cmp(&a.1.rank_key)
                    .then(a.0.0.cmp(&b.0.0))
            });
            let lexical_exhausted = lexical_hits.len() < window;
            let exhausted = hits.len() < window && lexical_exhausted;
            let best_excluded = |last_cos: f32| {
                let lex_bound = if lexical_exhausted {
                    0.0
                } else {
                    lexical_hits.last().map_or(0.0, |h| h.1)
                };
                match &best_signals {
                    Some(best) => {
                        score_hybrid(
                            &config.scoring,
                            &config.calibration,
                            last_cos,
                            lex_bound,
                            best,
                            now,
                        )
                        .rank_key
                    }
                    None => f64::NEG_INFINITY,
                }
            };
            let proven = match (ranked.get(top_k.saturating_sub(1)), hits.last()) {
                (Some((_, kth)), Some(last)) => {
                    window_is_exact(kth.rank_key, best_excluded(last.score))
                }
                _ => true,
            };
            if exhausted || proven || window >= self.config.recall_window_max {
                return Ok(ranked.into_iter().map(|((k, c), s)| (k, c, s)).collect());
            }
            window = (window * 4).min(self.config.recall_window_max);
        }
    }

    fn recalled(
        &self,
        agent: &Agent,
        state: &AgentState,
        key: u64,
        cos: f32,
        s: Scored,
        with_vector: bool,
    ) -> Recalled {
        let m = &state.memories[&key];
        let vector = with_vector
            .then(|| agent.index.read().get(key).map(<[f32]>::to_vec))
            .flatten();
        Recalled {
            memory: m.to_memory(&agent.id, vector),
            similarity: cos,
            confidence: s.confidence,
            scores: s.scores,
        }
    }
}

/// A read that scans at most this many vectors exactly counts as light.
pub const LIGHT_READ_SCAN_MAX: usize = 10_000;
/// A light read returns at most this many results.
pub const LIGHT_READ_TOP_K_MAX: u64 = 100;
/// A light text read's lexical search covers at most this many memories.
pub const LIGHT_READ_LEXICAL_MAX: usize = 100_000;

impl Engine {
    /// True when `q` (a recall or inject-context) is predictably short — a fraction of a
    /// millisecond of CPU, no I/O, no waiting: no cluster read barrier, a client vector or
    /// a cheap embedder, a small `top_k`, and either an agent of at most
    /// [`LIGHT_READ_SCAN_MAX`] vectors or an unfiltered search of its graph with a small
    /// exact tail, and no writer holding the agent right now. A server runs such reads
    /// inline on its async workers instead of handing them to a thread pool (two thread
    /// switches per call). A prediction, not a promise: a window that must widen, or a
    /// writer that takes the agent between this check and the read, can still make it
    /// longer.
    pub fn read_is_light(&self, agent_id: &str, q: &RecallQuery) -> bool {
        if self.inner.config.replicated || q.top_k > LIGHT_READ_TOP_K_MAX {
            return false;
        }
        let Some(agent) = self.inner.agent(agent_id) else {
            return true;
        };
        // A writer holding the agent (a long apply, a re-embed) makes the read wait: not
        // light, so it waits on the blocking pool, not on an async worker.
        let Some(state) = agent.state.try_read() else {
            return false;
        };
        if q.vector.is_none() {
            let cheap = self
                .inner
                .embedder_of(&state.config)
                .is_ok_and(|e| e.is_cheap());
            if !cheap || state.memories.len() > LIGHT_READ_LEXICAL_MAX {
                return false;
            }
        }
        let Some(index) = agent.index.try_read() else {
            return false;
        };
        index.len() <= LIGHT_READ_SCAN_MAX
            || (index.has_graph()
                && index.tail_len() <= LIGHT_READ_SCAN_MAX
                && state.sees_everything(&q.scope, self.inner.now_ms()))
    }

    /// The most relevant memories for a query, ranked by confidence, each with its
    /// explanation. Being returned is not being used: only with `q.mark_used` (or a later
    /// [`Engine::mark_used`]) do the results count as accessed, so recall does not feed on
    /// itself.
    pub fn recall(&self, agent_id: &str, q: &RecallQuery) -> Result<Vec<Recalled>> {
        limits::check_agent_id(agent_id)?;
        let top_k = check_recall(q)?;
        let inner = &self.inner;
        let Some(agent) = inner.agent(agent_id) else {
            return Ok(Vec::new());
        };
        let now = inner.now_ms();
        let ranked = inner.ranked(&agent, q, top_k, now)?;
        let state = agent.state.read();
        let out: Vec<Recalled> = ranked
            .into_iter()
            .filter(|(key, _, s)| {
                s.confidence >= q.min_confidence && state.memories.contains_key(key)
            })
            .take(top_k)
            .map(|(key, cos, s)| inner.recalled(&agent, &state, key, cos, s, q.include_vectors))
            .collect();
        drop(state);
        if q.mark_used && !out.is_empty() {
            inner.queue_touch(Touch {
                agent: agent_id.to_owned(),
                ids: out.iter().map(|r| r.memory.id.clone()).collect(),
                at_ms: now,
            });
        }
        Ok(out)
    }

    /// Recalls, then renders a compact context block grouped by type within `max_tokens`
    /// (0: 1,024). Tokens are estimated as ⌈characters / 4⌉.
    pub fn inject_context(
        &self,
        agent_id: &str,
        q: &RecallQuery,
        max_tokens: u64,
    ) -> Result<InjectedContext> {
        let budget =
            limits::count_or_default("max_tokens", max_tokens, MAX_TOKENS_DEFAULT, MAX_TOKENS_MAX)?;
        let recalled = self.recall(agent_id, q)?;
        Ok(render_context(recalled, budget))
    }

    /// One memory by id (`Ok(None)` when absent or expired).
    pub fn get(&self, agent_id: &str, id: &str, include_vector: bool) -> Result<Option<Memory>> {
        limits::check_agent_id(agent_id)?;
        limits::check_memory_id("id", id)?;
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(None);
        };
        let now = self.inner.now_ms();
        let state = agent.state.read();
        let Some(key) = state.key_of(id) else {
            return Ok(None);
        };
        let m = &state.memories[&key];
        if m.expired(now) {
            return Ok(None);
        }
        let vector = include_vector
            .then(|| agent.index.read().get(key).map(<[f32]>::to_vec))
            .flatten();
        Ok(Some(m.to_memory(&agent.id, vector)))
    }

    /// A page of the agent's visible memories in creation order.
    pub fn list(&self, agent_id: &str, q: &ListQuery) -> Result<ListPage> {
        limits::check_agent_id(agent_id)?;
        check_scope(&q.scope)?;
        let page_size =
            limits::count_or_default("page_size", q.page_size, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)?;
        if !q.page_token.is_empty() && !crate::ids::is_memory_id(&q.page_token) {
            return Err(Error::invalid(
                "page_token",
                "is not a token from a previous page",
            ));
        }
        let empty = ListPage {
            memories: Vec::new(),
            next_page_token: String::new(),
        };
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(empty);
        };
        let now = self.inner.now_ms();
        let state = agent.state.read();
        let index = agent.index.read();
        let start = std::ops::Bound::Excluded(q.page_token.clone());
        let range = if q.page_token.is_empty() {
            state.ids.range::<String, _>(..)
        } else {
            state.ids.range((start, std::ops::Bound::Unbounded))
        };
        let mut visible = range
            .map(|(_, key)| (*key, &state.memories[key]))
            .filter(|(_, m)| m.visible(&q.scope, now));
        let memories: Vec<Memory> = visible
            .by_ref()
            .take(page_size)
            .map(|(key, m)| {
                let v = q
                    .include_vectors
                    .then(|| index.get(key).map(<[f32]>::to_vec))
                    .flatten();
                m.to_memory(&agent.id, v)
            })
            .collect();
        let more = visible.next().is_some();
        let next_page_token = match (more, memories.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(ListPage {
            memories,
            next_page_token,
        })
    }

    /// Counts by type and session, dimensions, sizes. O(sessions + expired-not-yet-swept),
    /// never a walk over every memory.
    pub fn stats(&self, agent_id: &str) -> Result<AgentStats> {
        limits::check_agent_id(agent_id)?;
        // Never waits for a commit's fsync: stats are served inline.
        let store_bytes = self.inner.store.bytes_on_disk();
        let Some(agent) = self.inner.agent(agent_id) else {
            return Ok(AgentStats {
                store_bytes_on_disk: store_bytes,
                ..AgentStats::default()
            });
        };
        let now = self.inner.now_ms();
        let index_lag = agent.index.read().tail_len() as u64;
        let state = agent.state.read();
        let (by_type, expired_by_session, agent_bytes) = state.counts(now);
        let mut stats = AgentStats {
            dimensions: state.config.dim as u32,
            embedder: state.config.embedder.clone(),
            store_bytes_on_disk: store_bytes,
            index_lag,
            agent_bytes,
            total_memories: by_type.iter().sum(),
            ..AgentStats::default()
        };
        for (t, n) in MemoryType::ALL.iter().zip(by_type) {
            if n > 0 {
                stats.by_type.insert(t.name().to_owned(), n);
            }
        }
        for (session, keys) in &state.sessions {
            let expired = expired_by_session
                .get(session.as_str())
                .copied()
                .unwrap_or(0);
            let live = keys.len() as u64 - expired;
            if live > 0 {
                stats.by_session.insert(session.clone(), live);
            }
        }
        Ok(stats)
    }
}

/// Estimated tokens of a text: ⌈characters / 4⌉ (the usual rule of thumb for English with
/// BPE tokenizers; it over-counts code and under-counts CJK).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

const GROUPS: [(MemoryType, &str); 3] = [
    (MemoryType::Semantic, "Facts"),
    (MemoryType::Procedural, "Procedures"),
    (MemoryType::Episodic, "Recent events"),
];

fn render_context(recalled: Vec<Recalled>, budget: usize) -> InjectedContext {
    let header = "Relevant memories (most relevant first):\n";
    let mut used = estimate_tokens(header);
    let mut truncated = false;
    let mut kept: BTreeMap<usize, Recalled> = BTreeMap::new();
    let mut lines: BTreeMap<(usize, usize), String> = BTreeMap::new();
    let mut group_started = [false; 3];
    for (rank_pos, r) in recalled.into_iter().enumerate() {
        let g = GROUPS
            .iter()
            .position(|(t, _)| *t == r.memory.memory_type)
            .unwrap_or(0);
        let content = r.memory.content.replace('\n', " ");
        let line = format!(
            "- {content} [id {}, confidence {:.2}]\n",
            r.memory.id, r.confidence
        );
        let heading = if group_started[g] {
            String::new()
        } else {
            format!("{}:\n", GROUPS[g].1)
        };
        let cost = estimate_tokens(&line) + estimate_tokens(&heading);
        if used + cost > budget {
            truncated = true;
            break;
        }
        used += cost;
        if !group_started[g] {
            group_started[g] = true;
            lines.insert((g, 0), heading);
        }
        lines.insert((g, rank_pos + 1), line);
        kept.insert(rank_pos, r);
    }
    let context = if kept.is_empty() {
        String::new()
    } else {
        std::iter::once(header.to_owned())
            .chain(lines.into_values())
            .collect()
    };
    InjectedContext {
        context,
        memories: kept.into_values().collect(),
        truncated,
    }
}
