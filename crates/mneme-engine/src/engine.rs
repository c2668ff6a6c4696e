//! [`Engine`]: opening a data directory, the agent map, and the background worker that
//! grows vector graphs, persists access counts and sweeps expired memories.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mneme_index::{IndexConfig, Maintenance, maintain};
use mneme_scoring::ScoringParams;
use mneme_storage::{Options, Store};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::agent::{Agent, AgentConfig, AgentState, MemoryState};
use crate::clock::{Clock, SystemClock};
use crate::codec::{self, AccessRecord, AgentConfigRecord, MemoryRecord, RecordKind};
use crate::embed::{CLIENT_EMBEDDER_ID, Embedder, Embedders};
use crate::error::{Error, Result};

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
}

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
    /// Opens (or creates) the engine's data directory and loads every agent.
    /// Vector graphs are snapshotted under `dir/graphs` and restored from there.
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
        let agents = load_agents(&store, &config)?;
        if let Some(root) = &graphs_dir {
            crate::graphs::remove_strays(root);
            for agent in agents.values() {
                crate::graphs::restore(root, agent, &config.index);
            }
        }
        let inner = Arc::new(Inner {
            store,
            config,
            graphs_dir,
            agents: RwLock::new(agents),
            touches: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
        });
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

    /// Writes pending access counts, checkpoints and syncs; returns storage errors.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_touches()?;
        self.inner.store.sync()?;
        Ok(())
    }

    /// Compacts storage now: deleted and expired memories' bytes leave the disk.
    pub fn compact(&self) -> Result<()> {
        self.inner.sweep_expired()?;
        self.inner.store.compact()?;
        Ok(())
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

    /// Ids of every agent with a configuration.
    pub fn agent_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.agents.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Embedders this engine offers.
    pub fn embedders(&self) -> &Embedders {
        &self.inner.config.embedders
    }

    /// Stops the worker, persists access counts and syncs everything.
    pub fn close(mut self) -> Result<()> {
        self.stop_worker();
        self.inner.save_graphs(true);
        self.flush()
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

    /// The agent, created in memory with the configuration its first write implies (the
    /// configuration becomes durable with that write).
    pub(crate) fn agent_for_write(
        &self,
        id: &str,
        client_dim: Option<usize>,
    ) -> Result<Arc<Agent>> {
        if let Some(agent) = self.agent(id) {
            return Ok(agent);
        }
        let config = match client_dim {
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
                    calibration: e.calibration(),
                    scoring: ScoringParams::default(),
                }
            }
        };
        let mut agents = self.agents.write();
        let agent = agents
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Agent::new(id, config, false, self.config.index)));
        Ok(Arc::clone(agent))
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
}

fn background(inner: &Arc<Inner>) {
    let tick = Duration::from_millis(100);
    let mut last_sweep = Instant::now();
    loop {
        {
            let mut guard = inner.wake.lock();
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            inner.wake_cv.wait_for(&mut guard, tick);
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
        }
        // Errors poison the store; requests report them. Nothing to do here but go on.
        let _ = inner.flush_touches();
        let budget = Instant::now() + Duration::from_millis(200);
        for agent in inner.agents_snapshot() {
            while Instant::now() < budget && maintain(&agent.index, 1_024) != Maintenance::Idle {
                agent.graph_dirty.store(true, Ordering::Relaxed);
            }
        }
        inner.save_graphs(false);
        if last_sweep.elapsed() >= inner.config.ttl_sweep_interval {
            let _ = inner.sweep_expired();
            last_sweep = Instant::now();
        }
    }
}

#[derive(Default)]
struct Loading {
    config: Option<AgentConfigRecord>,
    memories: HashMap<String, MemoryRecord>,
    vectors: HashMap<String, Vec<f32>>,
    access: HashMap<String, AccessRecord>,
}

fn load_agents(store: &Store, config: &EngineConfig) -> Result<HashMap<String, Arc<Agent>>> {
    let mut loading: HashMap<String, Loading> = HashMap::new();
    for (key, value) in store.scan_prefix(codec::AGENTS_PREFIX) {
        let Some((agent, kind, id)) = codec::parse_key(&key) else {
            return Err(Error::CorruptRecord {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: "unrecognised key".into(),
            });
        };
        let slot = loading.entry(agent.to_owned()).or_default();
        match kind {
            RecordKind::Config => slot.config = Some(codec::decode(&key, &value)?),
            RecordKind::Memory => {
                slot.memories
                    .insert(id.to_owned(), codec::decode(&key, &value)?);
            }
            RecordKind::Vector => {
                slot.vectors
                    .insert(id.to_owned(), codec::decode_vector(&key, &value)?);
            }
            RecordKind::Access => {
                slot.access
                    .insert(id.to_owned(), codec::decode(&key, &value)?);
            }
        }
    }
    let mut agents = HashMap::new();
    for (name, mut slot) in loading {
        let Some(record) = slot.config else {
            if slot.memories.is_empty() {
                continue;
            }
            return Err(Error::CorruptRecord {
                key: name,
                reason: "memories without an agent configuration".into(),
            });
        };
        let agent_config = AgentConfig::from_record(&record);
        let agent = Agent::new(&name, agent_config, true, config.index);
        {
            let mut state: parking_lot::RwLockWriteGuard<'_, AgentState> = agent.state.write();
            let mut index = agent.index.write();
            for (id, memory) in slot.memories {
                let vector = slot
                    .vectors
                    .remove(&id)
                    .ok_or_else(|| Error::CorruptRecord {
                        key: format!("{name}/{id}"),
                        reason: "memory without a vector".into(),
                    })?;
                let access = slot.access.remove(&id).unwrap_or_default();
                let key = state.put(MemoryState::from_records(&id, memory, access)?);
                index
                    .insert(key, &vector)
                    .map_err(|e| Error::CorruptRecord {
                        key: format!("{name}/{id}"),
                        reason: e.to_string(),
                    })?;
            }
        }
        agents.insert(name, Arc::new(agent));
    }
    Ok(agents)
}
