//! [`Engine`]: opening a data directory (agent snapshots, then the log after them), the
//! agent map, submitting mutations, checkpoints, and the background worker that grows
//! vector graphs, logs access counts, sweeps expired memories and checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mneme_index::{IndexConfig, Maintenance, maintain};
use mneme_scoring::ScoringParams;
use mneme_storage::{Options, Store};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::agent::{Agent, AgentConfig};
use crate::apply::Outcome;
use crate::clock::{Clock, SystemClock};
use crate::embed::{CLIENT_EMBEDDER_ID, Embedder, Embedders};
use crate::error::{Error, Result};
use crate::mutation::{Entry, Mutation};

/// A new memory is a duplicate of an existing one in the same agent, session and type when
/// their vectors have at least this cosine *and* their texts are equal up to case,
/// punctuation and spacing; the existing memory is then reinforced instead of stored again.
pub const DEDUP_COSINE_MIN: f32 = 0.97;

/// Everything an engine is opened with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Storage tunables (durability included).
    pub storage: Options,
    /// Embedders on offer, and the default for new agents.
    pub embedders: Embedders,
    /// Vector index tunables.
    pub index: IndexConfig,
    /// Source of time.
    pub clock: Arc<dyn Clock>,
    /// Duplicate threshold (cosine).
    pub dedup_cosine_min: f32,
    /// Recall fetches `top_k × this` candidates by similarity before re-ranking (≥ 4).
    pub recall_window_factor: usize,
    /// Recall widens its window up to this many candidates while re-ranking is not proven
    /// exact.
    pub recall_window_max: usize,
    /// Run the background worker (graph upkeep, access counts, TTL sweeps).
    pub background: bool,
    /// How often expired memories are physically deleted.
    pub ttl_sweep_interval: Duration,
    /// The background worker checkpoints (snapshots changed agents and retires the log
    /// they cover) once the log holds this many bytes, or a quarter of the snapshots'
    /// size if that is more (up to [`CHECKPOINT_WAL_BYTES_MAX`]): a restart then replays
    /// at most about that much.
    pub checkpoint_wal_bytes: u64,
    /// Vectors an agent may hold outside its graph (the exact tail every search scans)
    /// before writes wait for the graph: a write that leaves more than this links the
    /// excess (up to twice what it added) before it is answered. Bulk loads then proceed
    /// at the graph's insert rate and searches right after them stay fast; `usize::MAX`
    /// acknowledges at log speed and leaves linking to the background worker.
    pub index_tail_max: usize,
    /// Replicated mode (see [`crate::replicate`]): writes go to the attached
    /// [`crate::Replicator`] instead of this engine's log, which stays empty; state is the
    /// agent snapshots plus what the cluster re-applies. The worker neither checkpoints
    /// (the cluster does, when it snapshots) nor sweeps expiries unless this node leads.
    pub replicated: bool,
    /// Test-only: applying a memory with exactly this content panics.
    #[cfg(feature = "fault-injection")]
    pub fault_panic_on_content: Option<String>,
}

/// The log never grows past this many bytes before a checkpoint is due.
pub const CHECKPOINT_WAL_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// While its agent's exact tail is within [`EngineConfig::index_tail_max`], a write links at
/// most this many tail vectors into the graph before it returns (about 10 ms at 1M memories
/// on one core); the background worker links the rest.
pub const WRITER_ABSORB_MAX: usize = 64;

/// Default [`EngineConfig::index_tail_max`]. Every search scans the tail exactly (f32), so
/// it bounds what a search right after a bulk load pays: at 8,192 a 1M load's first
/// seconds of Recall had p99 8.2 ms against 1.3 ms settled (the tail, about 6,000 vectors,
/// scanned while the background worker linked it on the same cores); at 1,024, 1.4 ms
/// against 1.45 ms, with the load's rate within 5 % (6,178/s against 6,468/s).
pub const INDEX_TAIL_MAX_DEFAULT: usize = 1_024;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            storage: Options::default(),
            embedders: Embedders::default(),
            index: IndexConfig::default(),
            clock: Arc::new(SystemClock),
            dedup_cosine_min: DEDUP_COSINE_MIN,
            recall_window_factor: 8,
            recall_window_max: 4_096,
            background: true,
            ttl_sweep_interval: Duration::from_secs(10),
            checkpoint_wal_bytes: 64 * 1024 * 1024,
            index_tail_max: INDEX_TAIL_MAX_DEFAULT,
            replicated: false,
            #[cfg(feature = "fault-injection")]
            fault_panic_on_content: None,
        }
    }
}

/// A pending access-count update from a recall.
#[derive(Debug, Clone)]
pub(crate) struct Touch {
    pub(crate) agent: String,
    pub(crate) ids: Vec<String>,
    pub(crate) at_ms: i64,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: EngineConfig,
    /// Where graph snapshots live (`None`: not snapshotted).
    pub(crate) graphs_dir: Option<std::path::PathBuf>,
    pub(crate) agents: RwLock<HashMap<String, Arc<Agent>>>,
    pub(crate) touches: Mutex<Vec<Touch>>,
    /// Every entry at or below this LSN has been applied.
    pub(crate) applied_lsn: AtomicU64,
    /// One checkpoint (or snapshot install) at a time.
    pub(crate) checkpointing: Mutex<()>,
    /// The consensus log of a replicated engine.
    pub(crate) replicator: std::sync::OnceLock<Arc<dyn crate::replicate::Replicator>>,
    closed: AtomicBool,
    wake: Mutex<()>,
    wake_cv: Condvar,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("agents", &self.agents.read().len())
            .finish_non_exhaustive()
    }
}

/// Agent memory: remember, recall, inject context — durable, isolated per agent.
///
/// ```
/// use mneme_engine::{Engine, EngineConfig, RecallQuery, RememberInput};
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path(), EngineConfig::default())?;
/// engine.remember("support-bot", RememberInput {
///     content: "User prefers formal tone".into(),
///     ..Default::default()
/// })?;
/// let hits = engine.recall("support-bot", &RecallQuery {
///     query: "how formal should replies be?".into(),
///     ..Default::default()
/// })?;
/// assert_eq!(hits[0].memory.content, "User prefers formal tone");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Opens (or creates) the engine's data directory: loads every agent's snapshot, then
    /// replays the log after them. Vector graphs are snapshotted under `dir/graphs` and
    /// restored from there.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Self> {
        let store = Store::open(dir.as_ref(), config.storage.clone())?;
        Self::build(store, config, Some(dir.as_ref().join("graphs")))
    }

    /// Opens over an already opened store (tests use a fault-injecting file system); graphs
    /// are not snapshotted.
    pub fn with_store(store: Store, config: EngineConfig) -> Result<Self> {
        Self::build(store, config, None)
    }

    fn build(
        store: Store,
        config: EngineConfig,
        graphs_dir: Option<std::path::PathBuf>,
    ) -> Result<Self> {
        let started = Instant::now();
        let agents = load_snapshots(&store, config.index)?;
        let loaded = started.elapsed();
        let applied = agents
            .values()
            .map(|a| a.state.read().applied_lsn)
            .max()
            .unwrap_or(0);
        let inner = Arc::new(Inner {
            store,
            config,
            graphs_dir,
            agents: RwLock::new(agents),
            touches: Mutex::new(Vec::new()),
            applied_lsn: AtomicU64::new(applied),
            checkpointing: Mutex::new(()),
            replicator: std::sync::OnceLock::new(),
            closed: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
        });
        let (mut entries, mut bytes) = (0u64, 0u64);
        inner.store.replay(&mut |e| {
            let entry = crate::mutation::decode(e.payload)?;
            inner.apply(e.lsn, &entry);
            entries += 1;
            bytes += e.payload.len() as u64;
            Ok(())
        })?;
        if inner.config.replicated && entries > 0 {
            return Err(Error::FailedPrecondition(format!(
                "{} holds {entries} single-node log entries: a replicated node starts from an empty \
                 data directory (move a single node's data into a cluster with export and import)",
                inner.store.dir().display()
            )));
        }
        let replayed = started.elapsed() - loaded;
        if let Some(root) = &inner.graphs_dir {
            crate::graphs::remove_strays(root);
            for agent in inner.agents_snapshot() {
                crate::graphs::restore(root, &agent, &inner.config.index);
            }
        }
        tracing::info!(
            agents = inner.agents.read().len(),
            snapshots_s = loaded.as_secs_f64(),
            replayed_entries = entries,
            replayed_bytes = bytes,
            replay_s = replayed.as_secs_f64(),
            graphs_s = (started.elapsed() - loaded - replayed).as_secs_f64(),
            "engine open"
        );
        // Graphs of large agents are built by the worker; until then recall scans exactly.
        let worker = inner.config.background.then(|| {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("mneme-engine".into())
                .spawn(move || background(&inner))
        });
        let worker = match worker {
            Some(Ok(handle)) => Some(handle),
            Some(Err(err)) => return Err(Error::Io(err)),
            None => None,
        };
        Ok(Self { inner, worker })
    }

    /// Logs `entry` and applies it once it is durable; returns what applying it did. This
    /// is the only way state changes: the write methods build their entry and call it, and
    /// so can anything that replays entries from another log.
    pub fn submit(&self, entry: Entry) -> Result<Outcome> {
        self.inner.submit(entry)
    }

    /// Logs pending access counts and syncs.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_touches()?;
        self.inner.store.sync()?;
        Ok(())
    }

    /// Physically removes what was deleted: sweeps expired memories, then snapshots every
    /// changed agent and retires the whole log before it, so deleted memories' bytes leave
    /// the disk (graph snapshots are rewritten by [`Engine::snapshot_indexes`]).
    pub fn compact(&self) -> Result<()> {
        self.inner.sweep_expired()?;
        self.inner.flush_touches()?;
        self.inner.checkpoint()?;
        Ok(())
    }

    /// Snapshots every agent that changed and retires the log they cover (the worker does
    /// this when the log grows; `close` does it on the way out).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Physically deletes expired memories now (the background worker does it periodically).
    pub fn sweep_expired(&self) -> Result<u64> {
        self.inner.sweep_expired()
    }

    /// Grows every agent's vector graph until nothing is pending (tests and benchmarks).
    pub fn settle_indexes(&self) {
        for agent in self.inner.agents_snapshot() {
            while maintain(&agent.index, usize::MAX) != Maintenance::Idle {
                agent.graph_dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Snapshots every changed vector graph now (the worker does it at most once a minute
    /// per agent, and `close` does it on the way out).
    pub fn snapshot_indexes(&self) {
        self.inner.save_graphs(true);
    }

    /// Why the store refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.store.poisoned()
    }

    /// Storage sizes and positions.
    pub fn store_stats(&self) -> mneme_storage::StoreStats {
        self.inner.store.stats()
    }

    /// The LSN up to which every logged entry has been applied.
    pub fn applied_lsn(&self) -> u64 {
        self.inner.applied_lsn.load(Ordering::SeqCst)
    }

    /// Ids of every agent, sorted.
    pub fn agent_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.agents.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Embedders this engine offers.
    pub fn embedders(&self) -> &Embedders {
        &self.inner.config.embedders
    }

    /// Stops the worker, logs access counts, checkpoints (so that the next open replays
    /// nothing) and syncs everything.
    pub fn close(mut self) -> Result<()> {
        self.stop_worker();
        self.inner.save_graphs(true);
        self.inner.flush_touches()?;
        self.inner.checkpoint()?;
        self.inner.store.sync()?;
        Ok(())
    }

    fn stop_worker(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        {
            let _guard = self.inner.wake.lock();
            self.inner.wake_cv.notify_all();
        }
        if let Some(worker) = self.worker.take() {
            // A panicked worker left nothing half-written: every write it made was a commit.
            let _ = worker.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_worker();
        // Access counts are best effort on drop; `close` reports errors.
        let _ = self.inner.flush_touches();
    }
}

impl Inner {
    pub(crate) fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }

    pub(crate) fn agent(&self, id: &str) -> Option<Arc<Agent>> {
        self.agents.read().get(id).cloned()
    }

    pub(crate) fn agents_snapshot(&self) -> Vec<Arc<Agent>> {
        self.agents.read().values().cloned().collect()
    }

    /// Logs `entry` and applies it in log order once durable.
    pub(crate) fn submit(self: &Arc<Self>, entry: Entry) -> Result<Outcome> {
        entry
            .validate()
            .map_err(|reason| Error::invalid("entry", reason))?;
        let payload = crate::mutation::encode(&entry);
        let new_vectors = entry.mutation.new_vectors();
        let agent_id = (new_vectors > 0).then(|| entry.agent.clone());
        let outcome = if self.config.replicated {
            let replicator = self
                .replicator
                .get()
                .ok_or_else(|| Error::Unavailable("the cluster is starting".into()))?;
            replicator.propose(&entry.agent, payload)?
        } else {
            let inner = Arc::clone(self);
            self.store
                .commit(payload, move |lsn| inner.apply(lsn, &entry))?
                .1
        };
        // The writer links (about) what it added into the agent's graph, outside every
        // lock a reader needs, so that searches do not scan a growing exact tail: up to
        // `WRITER_ABSORB_MAX`, or, when the tail is over its bound, the excess (at most
        // twice what it added, so concurrent writers share a backlog and it shrinks).
        if let Some(agent) = agent_id.and_then(|id| self.agent(&id)) {
            let tail = agent.index.read().tail_len();
            let excess = tail.saturating_sub(self.config.index_tail_max);
            let budget = new_vectors
                .saturating_mul(2)
                .min(excess.max(WRITER_ABSORB_MAX));
            mneme_index::absorb(&agent.index, budget);
            agent.graph_dirty.store(true, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// The configuration an agent has, or would get from its first write (with
    /// client-supplied vectors of `client_dim` dimensions, or the default embedder).
    pub(crate) fn config_for_write(&self, id: &str, client_dim: Option<usize>) -> AgentConfig {
        if let Some(agent) = self.agent(id) {
            return agent.state.read().config.clone();
        }
        self.default_config(client_dim)
    }

    /// The configuration record of an agent of client-supplied vectors (tests).
    #[cfg(test)]
    pub(crate) fn client_config_record(dim: usize) -> crate::codec::AgentConfigRecord {
        AgentConfig {
            embedder: CLIENT_EMBEDDER_ID.to_owned(),
            dim,
            calibration: mneme_scoring::Calibration::UNKNOWN,
            scoring: ScoringParams::default(),
        }
        .to_record()
    }

    pub(crate) fn default_config(&self, client_dim: Option<usize>) -> AgentConfig {
        match client_dim {
            Some(dim) => AgentConfig {
                embedder: CLIENT_EMBEDDER_ID.to_owned(),
                dim,
                calibration: mneme_scoring::Calibration::UNKNOWN,
                scoring: ScoringParams::default(),
            },
            None => {
                let e = self.config.embedders.default_embedder();
                AgentConfig {
                    embedder: e.id().to_owned(),
                    dim: e.dim(),
                    calibration: crate::calibration_of(e.family()),
                    scoring: crate::scoring_of(e.family()),
                }
            }
        }
    }

    /// The embedder of an agent, or why text cannot be embedded for it.
    pub(crate) fn embedder_of(&self, config: &AgentConfig) -> Result<Arc<dyn Embedder>> {
        if config.embedder == CLIENT_EMBEDDER_ID {
            return Err(Error::FailedPrecondition(
                "this agent stores client-supplied vectors: send `vector` (the server cannot embed text for it)"
                    .into(),
            ));
        }
        self.config
            .embedders
            .get(&config.embedder)
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "this agent's embedder {:?} is not loaded on this server (available: {})",
                    config.embedder,
                    self.config.embedders.ids().join(", ")
                ))
            })
    }

    pub(crate) fn embed(&self, embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let vectors = embedder.embed(texts).map_err(|reason| Error::Embedder {
            embedder: embedder.id().to_owned(),
            reason,
        })?;
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != embedder.dim()) {
            return Err(Error::Embedder {
                embedder: embedder.id().to_owned(),
                reason: "returned vectors of the wrong count or dimension".into(),
            });
        }
        Ok(vectors)
    }

    pub(crate) fn queue_touch(&self, touch: Touch) {
        self.touches.lock().push(touch);
    }

    /// Logs queued access counts (one entry per agent per flush).
    pub(crate) fn flush_touches(self: &Arc<Self>) -> Result<()> {
        let touches = std::mem::take(&mut *self.touches.lock());
        let mut by_agent: BTreeMap<String, (i64, BTreeMap<String, u32>)> = BTreeMap::new();
        for t in touches {
            let (at, hits) = by_agent.entry(t.agent).or_default();
            *at = (*at).max(t.at_ms);
            for id in t.ids {
                *hits.entry(id).or_default() += 1;
            }
        }
        for (agent, (at_ms, hits)) in by_agent {
            self.submit(Entry {
                agent,
                mutation: Mutation::Touch {
                    at_ms,
                    hits: hits.into_iter().collect(),
                },
            })?;
        }
        Ok(())
    }

    /// Deletes expired memories durably; returns how many.
    pub(crate) fn sweep_expired(self: &Arc<Self>) -> Result<u64> {
        let now = self.now_ms();
        let mut total = 0;
        for agent in self.agents_snapshot() {
            // A replica sweeps only the agents whose log it leads (the others learn of the
            // expiry through that log).
            let sweeps = !self.config.replicated
                || self.replicator.get().is_some_and(|r| r.leads(&agent.id));
            if !sweeps {
                continue;
            }
            let due = agent.state.read().next_expiry().is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let outcome = self.submit(Entry {
                agent: agent.id.clone(),
                mutation: Mutation::Expire { at_ms: now },
            })?;
            if let Outcome::Count(n) = outcome {
                total += n;
            }
        }
        Ok(total)
    }

    /// Snapshots every agent that changed since its last snapshot, installs the snapshots
    /// and retires the log entries no agent needs any more.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpointing.lock();
        let mut taken = Vec::new();
        let mut written = Vec::new();
        let mut failure = None;
        for agent in self.agents_snapshot() {
            let Some(taking) = crate::snapshot::begin(&agent) else {
                continue;
            };
            match crate::snapshot::write(&self.store, &agent, &taking) {
                Ok(Some(snapshot)) => {
                    written.push(snapshot);
                    taken.push((agent, taking));
                }
                Ok(None) => crate::snapshot::end(&agent, &taking, false),
                Err(err) => {
                    crate::snapshot::end(&agent, &taking, false);
                    failure = Some(err);
                    break;
                }
            }
        }
        let installed = match failure {
            Some(err) => Err(err),
            None => {
                // Entries below this are in some snapshot: an agent that changed since its
                // capture is dirty since its first entry after it; nothing unapplied is
                // below `applied + 1`.
                let applied = self.applied_lsn.load(Ordering::SeqCst);
                let retain_from = self
                    .agents_snapshot()
                    .iter()
                    .filter_map(|a| a.state.read().dirty_since)
                    .min()
                    .unwrap_or(applied + 1)
                    .min(applied + 1);
                self.store
                    .install(written, retain_from)
                    .map_err(Error::from)
            }
        };
        let ok = installed.is_ok();
        for (agent, taking) in &taken {
            crate::snapshot::end(agent, taking, ok);
        }
        installed
    }

    /// True when the log has grown enough since the last checkpoint.
    fn checkpoint_due(&self) -> bool {
        let stats = self.store.stats();
        let threshold = self
            .config
            .checkpoint_wal_bytes
            .max(stats.snapshot_bytes / 4)
            .min(CHECKPOINT_WAL_BYTES_MAX.max(self.config.checkpoint_wal_bytes));
        stats.wal_bytes >= threshold
    }
}

fn background(inner: &Arc<Inner>) {
    let tick = Duration::from_millis(100);
    let mut last_sweep = Instant::now();
    let mut behind = false;
    loop {
        {
            let mut guard = inner.wake.lock();
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            // Graph work left over from the last round goes on without a pause.
            if !behind {
                inner.wake_cv.wait_for(&mut guard, tick);
            }
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
        }
        // Errors poison the store; requests report them. Nothing to do here but go on.
        let _ = inner.flush_touches();
        let budget = Instant::now() + Duration::from_millis(200);
        behind = false;
        for agent in inner.agents_snapshot() {
            while maintain(&agent.index, 4_096) != Maintenance::Idle {
                agent.graph_dirty.store(true, Ordering::Relaxed);
                if Instant::now() >= budget {
                    behind = true;
                    break;
                }
            }
        }
        inner.save_graphs(false);
        if last_sweep.elapsed() >= inner.config.ttl_sweep_interval {
            let _ = inner.sweep_expired();
            last_sweep = Instant::now();
        }
        if !inner.config.replicated
            && inner.store.poisoned().is_none()
            && inner.checkpoint_due()
            && let Err(err) = inner.checkpoint()
        {
            tracing::warn!(%err, "checkpoint failed");
        }
    }
}

/// Loads every agent snapshot the store lists, on every core.
fn load_snapshots(store: &Store, index: IndexConfig) -> Result<HashMap<String, Arc<Agent>>> {
    let snapshots = store.snapshots();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(snapshots.len().max(1));
    let results: Mutex<Vec<Result<Agent>>> = Mutex::new(Vec::with_capacity(snapshots.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = snapshots.get(i) else { break };
                    let loaded = load_one(store, s, index);
                    results.lock().push(loaded);
                }
            });
        }
    });
    let mut agents = HashMap::new();
    for agent in results.into_inner() {
        let agent = agent?;
        agents.insert(agent.id.clone(), Arc::new(agent));
    }
    Ok(agents)
}

fn load_one(store: &Store, s: &mneme_storage::SnapshotRef, index: IndexConfig) -> Result<Agent> {
    let path = store
        .dir()
        .join(mneme_storage::snapshot_file_name(s.file_id));
    let corrupt = |offset: u64, reason: String| {
        Error::Storage(mneme_storage::Error::Corruption {
            path: path.clone(),
            offset,
            reason,
        })
    };
    let id = crate::snapshot::agent_of_tag(&s.tag)
        .ok_or_else(|| corrupt(0, "the manifest names a snapshot that is no agent's".into()))?;
    let bytes = store.read_snapshot(s)?;
    let loaded = crate::snapshot::load(bytes.bytes(), id, s.lsn, index)
        .map_err(|(offset, reason)| corrupt(offset, reason))?;
    let agent = Agent::new(&loaded.agent, loaded.state.config.clone(), index);
    *agent.state.write() = loaded.state;
    *agent.index.write() = loaded.index;
    Ok(agent)
}
