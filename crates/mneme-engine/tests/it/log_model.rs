//! The proof that state is a function of the log.
//!
//! Random concurrent histories — every mutation kind, several agents and sessions, clock
//! advances, checkpoints racing the writers — run against an engine on a simulated disk
//! that crashes at a random I/O operation, under every tear mode, several times per
//! history. After the last recovery:
//!
//! 1. every acknowledged entry is in the recovered log, each writer's in its order, and
//!    nothing in the log was invented;
//! 2. the recovered state (agent snapshots + replay) equals a fresh engine that applied the
//!    recovered log from scratch, index keys and vector bits included, and a second
//!    recovery gives the same again;
//! 3. both equal an independent model of the semantics applied to the same log;
//! 4. recall answers of the recovered and the replayed engine are identical.
//!
//! The SIGKILL variant runs the same checks against a real child process on the real file
//! system (`kill.rs`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use mneme_engine::inspect::{AgentDump, MemoryDump};
use mneme_engine::mutation::{
    Configure, Entry, Import, ImportedMemory, Mutation, NewMemory, Remember, Space, Update,
};
use mneme_engine::{
    AccessRecord, AgentConfigRecord, Clock, Engine, EngineConfig, ManualClock, MemoryRecord,
    RecallQuery, ScoringParams, ScoringRecord, StorageOptions,
};
use mneme_storage::Store;
use mneme_storage::sim::{Fault, SimFs, TEAR_MODES};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const AGENTS: [&str; 3] = ["a", "b.c", ".."];
const SESSIONS: [&str; 3] = ["", "s1", "s2"];
const DIM: usize = 8;
const BASES: usize = 6;
const DEDUP: f32 = 0.97;
pub const T0: i64 = 1_800_000_000_000;

pub fn scoring_record(p: &ScoringParams) -> ScoringRecord {
    let t = |tp: &mneme_engine::TypeParams| (tp.type_weight, tp.half_life_days, tp.decay_floor);
    ScoringRecord {
        types: [t(&p.episodic), t(&p.semantic), t(&p.procedural)],
        frequency_saturation: p.frequency_saturation,
        access_half_life_days: p.access_half_life_days,
        weights: [p.recency_weight, p.frequency_weight, p.importance_weight],
        context_shift: p.context_shift,
        lexical_weight: p.lexical_weight,
    }
}

pub fn client_config(dim: usize) -> AgentConfigRecord {
    AgentConfigRecord {
        embedder: "client".into(),
        dim: dim as u32,
        calibration: (
            mneme_engine::Calibration::UNKNOWN.center,
            mneme_engine::Calibration::UNKNOWN.slope,
        ),
        scoring: scoring_record(&ScoringParams::default()),
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    mneme_index::distance::normalize(&mut v).unwrap();
    v
}

fn base(k: usize, dim: usize) -> Vec<f32> {
    unit(
        (0..dim)
            .map(|d| {
                if d == k % dim {
                    5.0
                } else {
                    ((k * 7 + d * 3) % 5) as f32 * 0.1
                }
            })
            .collect(),
    )
}

/// Generates entries the way the engine's write path would: ids, times and unit vectors
/// decided up front.
pub struct Gen {
    pub rng: StdRng,
    pub thread: usize,
    pub n: u64,
    pub known_ids: Arc<Mutex<Vec<(String, String)>>>,
}

impl Gen {
    fn id(&mut self, at: i64) -> String {
        mneme_engine::new_memory_id(at)
    }

    fn known(&mut self, agent: &str) -> Option<String> {
        let ids = self.known_ids.lock();
        let mine: Vec<&String> = ids
            .iter()
            .filter(|(a, _)| a == agent)
            .map(|(_, id)| id)
            .collect();
        (!mine.is_empty()).then(|| mine[self.rng.random_range(0..mine.len())].clone())
    }

    fn record(&mut self, content: String, at: i64) -> MemoryRecord {
        let r = &mut self.rng;
        let ttl = if r.random_bool(0.3) {
            r.random_range(1_000..60_000)
        } else {
            0
        };
        let mut metadata = BTreeMap::new();
        if r.random_bool(0.3) {
            metadata.insert("k".to_owned(), format!("v{}", r.random_range(0..3)));
        }
        MemoryRecord {
            session_id: SESSIONS[r.random_range(0..SESSIONS.len())].to_owned(),
            memory_type: r.random_range(1..=3),
            content,
            metadata,
            pinned: r.random_bool(0.1),
            importance: f32::from(r.random_range(0u8..=10)) / 10.0,
            created_at_ms: at,
            updated_at_ms: at,
            expires_at_ms: if ttl == 0 { 0 } else { at + ttl },
        }
    }

    fn content(&mut self) -> (String, Vec<f32>) {
        self.n += 1;
        let k = self.rng.random_range(0..BASES);
        if self.rng.random_bool(0.6) {
            // A shared fact: same text, same vector (a duplicate of any earlier copy), or
            // a near vector, or a far one.
            let mut v = base(k, DIM);
            match self.rng.random_range(0..10) {
                0 => v = base(k + 1, DIM),
                1 => v[(k + 3) % DIM] += 0.05,
                _ => {}
            }
            (format!("Fact {k}!"), unit(v))
        } else {
            (format!("note {} {}", self.thread, self.n), base(k, DIM))
        }
    }

    pub fn entry(&mut self, at: i64) -> Entry {
        let agent = AGENTS[self.rng.random_range(0..AGENTS.len())].to_owned();
        let roll = self.rng.random_range(0..100);
        let mutation = match roll {
            0..40 => {
                let items = (0..self.rng.random_range(1..=4))
                    .map(|_| {
                        let (content, vector) = self.content();
                        let record = self.record(content, at);
                        NewMemory {
                            id: self.id(at),
                            importance_set: self.rng.random_bool(0.5),
                            record,
                            vector,
                        }
                    })
                    .collect();
                Mutation::Remember(Remember {
                    at_ms: at,
                    create: client_config(DIM),
                    space: Space {
                        embedder: "client".into(),
                        dim: DIM as u32,
                    },
                    dedup_cosine_min: DEDUP,
                    items,
                })
            }
            40..55 => {
                let id = match self.known(&agent) {
                    Some(id) if self.rng.random_bool(0.9) => id,
                    _ => self.id(at),
                };
                let content = self.rng.random_bool(0.4).then(|| {
                    let (c, v) = self.content();
                    (
                        c,
                        v,
                        Space {
                            embedder: "client".into(),
                            dim: DIM as u32,
                        },
                    )
                });
                let r = &mut self.rng;
                Mutation::Update(Update {
                    at_ms: at,
                    id,
                    content,
                    metadata: r.random_bool(0.3).then(BTreeMap::new),
                    expires_at_ms: r
                        .random_bool(0.2)
                        .then(|| if r.random_bool(0.5) { 0 } else { at + 5_000 }),
                    pinned: r.random_bool(0.2).then(|| r.random_bool(0.5)),
                    importance: r.random_bool(0.2).then_some(0.9),
                })
            }
            55..65 => {
                let ids = (0..self.rng.random_range(1..=3))
                    .filter_map(|_| self.known(&agent))
                    .collect();
                Mutation::Forget { ids }
            }
            65..69 => Mutation::ForgetSession {
                session_id: SESSIONS[self.rng.random_range(1..SESSIONS.len())].to_owned(),
            },
            69..71 => Mutation::ClearAll,
            71..83 => {
                let hits = (0..self.rng.random_range(1..=4))
                    .filter_map(|_| self.known(&agent).map(|id| (id, 1 + self.n as u32 % 3)))
                    .collect();
                Mutation::Touch { at_ms: at, hits }
            }
            83..88 => Mutation::Expire { at_ms: at },
            88..93 => {
                let scoring = ScoringParams {
                    recency_weight: f32::from(self.rng.random_range(0u8..5)) / 10.0,
                    ..ScoringParams::default()
                };
                let mut config = client_config(DIM);
                config.scoring = scoring_record(&scoring);
                Mutation::Configure(Configure {
                    config,
                    vectors: None,
                })
            }
            _ => {
                let memories = (0..self.rng.random_range(1..=3))
                    .map(|_| {
                        let (content, vector) = self.content();
                        let record = self.record(content, at - 1_000);
                        ImportedMemory {
                            id: self.id(at - 1_000),
                            record,
                            access: AccessRecord {
                                access_count: self.rng.random_range(0..5),
                                last_accessed_at_ms: at - 500,
                            },
                            vector,
                        }
                    })
                    .collect();
                Mutation::Import(Import {
                    create: client_config(DIM),
                    space: Space {
                        embedder: "client".into(),
                        dim: DIM as u32,
                    },
                    memories,
                })
            }
        };
        Entry { agent, mutation }
    }
}

// ---------------------------------------------------------------------------------------
// The independent model: the documented semantics, on plain maps.

#[derive(Debug, Clone)]
struct MMem {
    key: u64,
    record: MemoryRecord,
    access: AccessRecord,
    vector: Vec<f32>,
}

#[derive(Debug, Clone)]
struct MAgent {
    config: AgentConfigRecord,
    next_key: u64,
    mem: BTreeMap<String, MMem>,
    requests: std::collections::BTreeSet<String>,
}

fn norm_text(s: &str) -> String {
    let mut out = String::new();
    let mut gap = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn expired(r: &MemoryRecord, at: i64) -> bool {
    r.expires_at_ms != 0 && r.expires_at_ms <= at
}

/// The model of every agent.
#[derive(Debug, Default)]
pub struct Model {
    agents: BTreeMap<String, MAgent>,
}

impl Model {
    pub fn apply(&mut self, e: &Entry) {
        if let Mutation::RememberOnce {
            request_id,
            remember,
        } = &e.mutation
        {
            // Applied once per request id (recorded when it was accepted into its space).
            let seen = self
                .agents
                .get(&e.agent)
                .is_some_and(|a| a.requests.contains(request_id));
            if seen {
                return;
            }
            self.apply(&Entry {
                agent: e.agent.clone(),
                mutation: Mutation::Remember(remember.clone()),
            });
            if let Some(a) = self.agents.get_mut(&e.agent)
                && a.config.embedder == remember.space.embedder
                && a.config.dim == remember.space.dim
            {
                a.requests.insert(request_id.clone());
            }
            return;
        }
        let create = match &e.mutation {
            Mutation::Remember(r) => Some(&r.create),
            Mutation::Import(i) => Some(&i.create),
            Mutation::Configure(c) => Some(&c.config),
            _ => None,
        };
        if !self.agents.contains_key(&e.agent) {
            let Some(config) = create else { return };
            self.agents.insert(
                e.agent.clone(),
                MAgent {
                    config: config.clone(),
                    next_key: 0,
                    mem: BTreeMap::new(),
                    requests: Default::default(),
                },
            );
        }
        let a = self.agents.get_mut(&e.agent).unwrap();
        let same_space =
            |a: &MAgent, s: &Space| a.config.embedder == s.embedder && a.config.dim == s.dim;
        match &e.mutation {
            Mutation::Remember(r) => {
                if !same_space(a, &r.space) {
                    return;
                }
                for item in &r.items {
                    let text = norm_text(&item.record.content);
                    // Among several qualifying memories, the earliest (lowest key).
                    let dup = a
                        .mem
                        .values()
                        .filter(|m| {
                            m.record.session_id == item.record.session_id
                                && m.record.memory_type == item.record.memory_type
                                && !expired(&m.record, r.at_ms)
                                && norm_text(&m.record.content) == text
                                && dot64(&m.vector, &item.vector) >= f64::from(r.dedup_cosine_min)
                        })
                        .min_by_key(|m| m.key)
                        .map(|m| m.key);
                    match dup {
                        Some(key) => {
                            let m = a.mem.values_mut().find(|m| m.key == key).unwrap();
                            m.access.access_count += 1;
                            m.access.last_accessed_at_ms = r.at_ms;
                            if item.importance_set {
                                m.record.importance =
                                    m.record.importance.max(item.record.importance);
                            }
                            m.record.pinned |= item.record.pinned;
                            m.record.expires_at_ms =
                                match (m.record.expires_at_ms, item.record.expires_at_ms) {
                                    (0, _) | (_, 0) => 0,
                                    (x, y) => x.max(y),
                                };
                            for (k, v) in &item.record.metadata {
                                m.record.metadata.insert(k.clone(), v.clone());
                            }
                            m.record.updated_at_ms = r.at_ms;
                        }
                        None => {
                            let key = a.next_key;
                            a.next_key += 1;
                            a.mem.insert(
                                item.id.clone(),
                                MMem {
                                    key,
                                    record: item.record.clone(),
                                    access: AccessRecord::default(),
                                    vector: item.vector.clone(),
                                },
                            );
                        }
                    }
                }
            }
            Mutation::Update(u) => {
                let Some(m) = a.mem.get(&u.id) else { return };
                if expired(&m.record, u.at_ms) {
                    return;
                }
                if let Some((_, _, s)) = &u.content
                    && !same_space(a, s)
                {
                    return;
                }
                let m = a.mem.get_mut(&u.id).unwrap();
                if let Some((c, v, _)) = &u.content {
                    m.record.content.clone_from(c);
                    m.vector.clone_from(v);
                }
                if let Some(md) = &u.metadata {
                    m.record.metadata.clone_from(md);
                }
                if let Some(x) = u.expires_at_ms {
                    m.record.expires_at_ms = x;
                }
                if let Some(p) = u.pinned {
                    m.record.pinned = p;
                }
                if let Some(i) = u.importance {
                    m.record.importance = i;
                }
                m.record.updated_at_ms = u.at_ms;
            }
            Mutation::Forget { ids } => {
                for id in ids {
                    a.mem.remove(id);
                }
            }
            Mutation::ForgetSession { session_id } => {
                a.mem.retain(|_, m| m.record.session_id != *session_id);
            }
            Mutation::ClearAll => a.mem.clear(),
            Mutation::RememberOnce { .. } => unreachable!("applied above"),
            Mutation::Touch { at_ms, hits } => {
                for (id, n) in hits {
                    if let Some(m) = a.mem.get_mut(id) {
                        m.access.access_count += u64::from(*n);
                        m.access.last_accessed_at_ms = m.access.last_accessed_at_ms.max(*at_ms);
                    }
                }
            }
            Mutation::Expire { at_ms } => a.mem.retain(|_, m| !expired(&m.record, *at_ms)),
            Mutation::Configure(c) => {
                let space = Space {
                    embedder: c.config.embedder.clone(),
                    dim: c.config.dim,
                };
                match &c.vectors {
                    Some(vs) => {
                        let ids: HashSet<&String> = vs.iter().map(|(id, _)| id).collect();
                        let exact = ids.len() == vs.len()
                            && vs.len() == a.mem.len()
                            && vs.iter().all(|(id, v)| {
                                a.mem.contains_key(id) && v.len() == c.config.dim as usize
                            });
                        if !exact {
                            return;
                        }
                        for (id, v) in vs {
                            a.mem.get_mut(id).unwrap().vector.clone_from(v);
                        }
                    }
                    None if !same_space(a, &space) && !a.mem.is_empty() => return,
                    None => {}
                }
                a.config = c.config.clone();
            }
            Mutation::Import(i) => {
                if !same_space(a, &i.space) {
                    if !a.mem.is_empty() {
                        return;
                    }
                    let scoring = a.config.scoring;
                    a.config = i.create.clone();
                    a.config.scoring = scoring;
                }
                for m in &i.memories {
                    match a.mem.get_mut(&m.id) {
                        Some(existing) => {
                            existing.record = m.record.clone();
                            existing.access = m.access;
                            existing.vector.clone_from(&m.vector);
                        }
                        None => {
                            let key = a.next_key;
                            a.next_key += 1;
                            a.mem.insert(
                                m.id.clone(),
                                MMem {
                                    key,
                                    record: m.record.clone(),
                                    access: m.access,
                                    vector: m.vector.clone(),
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    pub fn dump(&self) -> Vec<AgentDump> {
        self.agents
            .iter()
            .map(|(name, a)| {
                let mut memories: Vec<MemoryDump> = a
                    .mem
                    .iter()
                    .map(|(id, m)| MemoryDump {
                        key: m.key,
                        id: id.clone(),
                        record: m.record.clone(),
                        access: m.access,
                        vector_bits: m.vector.iter().map(|x| x.to_bits()).collect(),
                    })
                    .collect();
                memories.sort_by_key(|m| m.key);
                AgentDump {
                    agent: name.clone(),
                    config: a.config.clone(),
                    next_key: a.next_key,
                    memories,
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------

pub fn config(clock: &Arc<ManualClock>) -> EngineConfig {
    EngineConfig {
        clock: clock.clone(),
        background: false,
        storage: StorageOptions {
            wal_segment_bytes_max: 16 * 1024,
            keep_wal: true,
            ..StorageOptions::default()
        },
        index: mneme_engine::IndexConfig {
            graph_min_vectors: 40,
            ..mneme_engine::IndexConfig::default()
        },
        ..EngineConfig::default()
    }
}

fn open_sim(fs: &SimFs, clock: &Arc<ManualClock>) -> mneme_engine::Result<Engine> {
    let c = config(clock);
    let store = Store::open_with(Arc::new(fs.clone()), Path::new("/data"), c.storage.clone())?;
    Engine::with_store(store, c)
}

/// Every entry in the log of the store at `dir` on `vfs`, in LSN order.
pub fn read_log(vfs: Arc<dyn mneme_storage::vfs::Vfs>, dir: &Path) -> Vec<Entry> {
    let store = Store::open_with(vfs, dir, StorageOptions::default()).unwrap();
    let mut entries = Vec::new();
    store
        .replay(&mut |e| {
            entries.push(mneme_engine::mutation::decode(e.payload)?);
            Ok(())
        })
        .unwrap();
    entries
}

/// What one writer thread did.
#[derive(Debug, Default)]
pub struct Writes {
    pub acked: Vec<Entry>,
    pub unacked: Vec<Entry>,
}

/// Checks 1–4 of the module doc. `reopen` opens the recovered engine again.
pub fn check(
    log: &[Entry],
    writes: &[Writes],
    recovered: &[AgentDump],
    reopen: &dyn Fn() -> Engine,
    clock: &Arc<ManualClock>,
    context: &str,
) {
    // 1. Acknowledged entries are in the log, in each writer's order; nothing invented.
    for (t, w) in writes.iter().enumerate() {
        let mut at = 0;
        for (i, e) in w.acked.iter().enumerate() {
            let pos = log[at..].iter().position(|x| x == e).unwrap_or_else(|| {
                panic!("{context}: writer {t}'s acknowledged entry {i} is not in the log (or out of order): {e:?}")
            });
            at += pos + 1;
        }
    }
    for e in log {
        assert!(
            writes
                .iter()
                .any(|w| w.acked.contains(e) || w.unacked.contains(e)),
            "{context}: the log holds an entry nobody wrote: {e:?}"
        );
    }
    // 2. Recovered == the log replayed from scratch == a second recovery.
    let fresh_fs = SimFs::new(1);
    let replayed = open_sim(&fresh_fs, clock).unwrap();
    for e in log {
        replayed.submit(e.clone()).unwrap();
    }
    let replayed_dump = replayed.dump();
    assert_dumps_eq(
        recovered,
        &replayed_dump,
        &format!("{context}: recovered vs replayed"),
    );
    let again = reopen();
    assert_dumps_eq(
        recovered,
        &again.dump(),
        &format!("{context}: second recovery"),
    );
    // 3. The model.
    let mut model = Model::default();
    for e in log {
        model.apply(e);
    }
    assert_dumps_eq(
        &model.dump(),
        recovered,
        &format!("{context}: model vs recovered"),
    );
    // 4. Recall answers.
    for k in 0..BASES {
        for agent in AGENTS {
            let q = RecallQuery {
                vector: Some(base(k, DIM)),
                top_k: 10,
                ..Default::default()
            };
            let (Ok(a), Ok(b)) = (again.recall(agent, &q), replayed.recall(agent, &q)) else {
                continue;
            };
            let view = |r: &[mneme_engine::Recalled]| -> Vec<(String, u32, u32)> {
                r.iter()
                    .map(|h| {
                        (
                            h.memory.id.clone(),
                            h.similarity.to_bits(),
                            h.confidence.to_bits(),
                        )
                    })
                    .collect()
            };
            assert_eq!(
                view(&a),
                view(&b),
                "{context}: recall of {agent:?} for base {k}"
            );
        }
    }
}

fn assert_dumps_eq(a: &[AgentDump], b: &[AgentDump], context: &str) {
    if a == b {
        return;
    }
    let names = |d: &[AgentDump]| d.iter().map(|x| x.agent.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{context}: agents differ");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.config, y.config, "{context}: config of {:?}", x.agent);
        assert_eq!(
            x.next_key, y.next_key,
            "{context}: next key of {:?}",
            x.agent
        );
        let ids = |d: &AgentDump| {
            d.memories
                .iter()
                .map(|m| (m.key, m.id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(x), ids(y), "{context}: keys and ids of {:?}", x.agent);
        for (m, n) in x.memories.iter().zip(&y.memories) {
            assert_eq!(m, n, "{context}: memory {} of {:?}", m.id, x.agent);
        }
    }
    panic!("{context}: dumps differ");
}

/// One history: `rounds` runs of concurrent writers and a checkpointer, each ended by a
/// crash at a random I/O operation (or by running out of work), then power loss under
/// `mode` and recovery.
fn history(seed: u64, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let fs = SimFs::new(seed);
    let clock = Arc::new(ManualClock::new(T0));
    let known = Arc::new(Mutex::new(Vec::new()));
    let writers = 3;
    let mut all: Vec<Writes> = (0..writers).map(|_| Writes::default()).collect();
    for round in 0..rounds {
        let mode = TEAR_MODES[rng.random_range(0..TEAR_MODES.len())];
        let engine = match open_sim(&fs, &clock) {
            Ok(engine) => engine,
            Err(err) => panic!("seed {seed} round {round}: recovery failed: {err}"),
        };
        let crash_at = rng.random_range(30..600);
        fs.inject(Fault {
            op: None,
            skip: crash_at,
            crash: true,
        });
        let engine = Arc::new(engine);
        let results: Vec<Writes> = std::thread::scope(|s| {
            let checkpointer = {
                let engine = Arc::clone(&engine);
                let clock = clock.clone();
                s.spawn(move || {
                    for _ in 0..20 {
                        std::thread::sleep(std::time::Duration::from_micros(300));
                        clock.advance_ms(700);
                        if engine.checkpoint().is_err() {
                            break;
                        }
                    }
                })
            };
            let handles: Vec<_> = (0..writers)
                .map(|t| {
                    let engine = Arc::clone(&engine);
                    let clock = clock.clone();
                    let known = Arc::clone(&known);
                    let seed = rng.random::<u64>();
                    s.spawn(move || {
                        let mut g = Gen {
                            rng: StdRng::seed_from_u64(seed),
                            thread: t,
                            n: round as u64 * 10_000,
                            known_ids: known,
                        };
                        let mut w = Writes::default();
                        for _ in 0..60 {
                            let e = g.entry(clock.now_ms());
                            match engine.submit(e.clone()) {
                                Ok(outcome) => {
                                    if let mneme_engine::Outcome::Remembered(r) = &outcome {
                                        let mut k = g.known_ids.lock();
                                        for m in r {
                                            k.push((e.agent.clone(), m.memory.id.clone()));
                                        }
                                    }
                                    if let Mutation::Import(i) = &e.mutation {
                                        let mut k = g.known_ids.lock();
                                        for m in &i.memories {
                                            k.push((e.agent.clone(), m.id.clone()));
                                        }
                                    }
                                    w.acked.push(e);
                                }
                                Err(_) => {
                                    w.unacked.push(e);
                                    break;
                                }
                            }
                        }
                        w
                    })
                })
                .collect();
            let out = handles.into_iter().map(|h| h.join().unwrap()).collect();
            checkpointer.join().unwrap();
            out
        });
        for (all, r) in all.iter_mut().zip(results) {
            all.acked.extend(r.acked);
            all.unacked.extend(r.unacked);
        }
        drop(engine);
        fs.reboot(mode, rng.random_bool(0.5));
    }
    let context = format!("seed {seed}");
    let recovered =
        open_sim(&fs, &clock).unwrap_or_else(|e| panic!("{context}: final recovery failed: {e}"));
    let dump = recovered.dump();
    drop(recovered);
    let log = read_log(Arc::new(fs.clone()), Path::new("/data"));
    assert!(!log.is_empty(), "{context}: nothing was logged");
    check(
        &log,
        &all,
        &dump,
        &|| open_sim(&fs, &clock).unwrap(),
        &clock,
        &context,
    );
}

#[test]
fn recovered_state_is_the_replayed_log_and_the_model_under_crashes() {
    let seeds: u64 = std::env::var("MNEME_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for seed in 0..seeds {
        history(seed, 4);
    }
}
