//! Vector graphs survive restarts as snapshots; stale or damaged snapshots never change
//! results.

use std::sync::Arc;

use mneme_engine::{
    Engine, EngineConfig, GraphKind, IndexConfig, ManualClock, RecallQuery, RememberInput,
};

use crate::T0;

fn open(dir: &std::path::Path, kind: GraphKind) -> Engine {
    let config = EngineConfig {
        clock: Arc::new(ManualClock::new(T0)),
        background: false,
        index: IndexConfig {
            graph_min_vectors: 200,
            graph: kind,
            ..IndexConfig::default()
        },
        ..EngineConfig::default()
    };
    Engine::open(dir, config).unwrap()
}

fn vector(i: usize) -> Vec<f32> {
    (0..16)
        .map(|d| {
            ((i * 31 + d * 7) % 17) as f32 - 8.0
                + ((i * 13 + d) as f32 * 0.618).sin()
                + if d == i % 16 { 20.0 } else { 0.0 }
        })
        .collect()
}

fn ids_of(engine: &Engine, q: &[f32]) -> Vec<String> {
    let query = RecallQuery {
        vector: Some(q.to_vec()),
        top_k: 20,
        ..Default::default()
    };
    let mut ids: Vec<String> = engine
        .recall("bot", &query)
        .unwrap()
        .into_iter()
        .map(|h| h.memory.id)
        .collect();
    ids.sort();
    ids
}

fn best(engine: &Engine, q: &[f32]) -> f32 {
    let query = RecallQuery {
        vector: Some(q.to_vec()),
        top_k: 20,
        ..Default::default()
    };
    engine
        .recall("bot", &query)
        .unwrap()
        .iter()
        .map(|h| h.similarity)
        .fold(f32::MIN, f32::max)
}

/// Where the engine keeps an agent's graph snapshot.
fn graph_dir(data: &std::path::Path, agent: &str) -> std::path::PathBuf {
    let name = mneme_storage::names::encode_name("a-", agent.as_bytes()).unwrap();
    data.join("graphs").join(name)
}

/// Agent ids that are path components, differ only after a dot or only in case, or have
/// the maximum length each get their own snapshot, restored to them alone; clearing one
/// touches no other; nothing outside `graphs/` is ever read as a snapshot or removed.
#[test]
fn hostile_agent_ids_get_their_own_snapshots() {
    let long = "L".repeat(128);
    let agents = ["..", ".", "a.b", "a.c", "Bot", "bot", long.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), GraphKind::Native);
    for (n, agent) in agents.iter().enumerate() {
        let items = (0..300)
            .map(|i| RememberInput {
                content: format!("{agent} {i}"),
                vector: Some(vector(i + 1_000 * n)),
                ..Default::default()
            })
            .collect();
        engine.remember_batch(agent, items).unwrap();
    }
    engine.settle_indexes();
    engine.close().unwrap();
    for agent in agents {
        assert!(
            graph_dir(dir.path(), agent).join("native.graph").exists(),
            "{agent:?}"
        );
    }
    for round in 0..2 {
        let engine = open(dir.path(), GraphKind::Native);
        for (n, agent) in agents.iter().enumerate() {
            let stats = engine.stats(agent).unwrap();
            let cleared = round == 1 && n % 2 == 0;
            assert_eq!(
                stats.total_memories,
                if cleared { 0 } else { 300 },
                "{agent:?}"
            );
            assert_eq!(stats.index_lag, 0, "{agent:?}: its graph was not restored");
            assert_eq!(
                graph_dir(dir.path(), agent).exists(),
                !cleared,
                "{agent:?}: snapshot after clear-all"
            );
            if !cleared {
                let hits = engine
                    .recall(
                        agent,
                        &RecallQuery {
                            vector: Some(vector(7 + 1_000 * n)),
                            top_k: 1,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                assert_eq!(hits[0].memory.content, format!("{agent} 7"));
            }
        }
        if round == 0 {
            for agent in agents.iter().step_by(2) {
                engine.clear_all(agent).unwrap();
            }
            engine.snapshot_indexes();
        }
        engine.close().unwrap();
    }
    assert!(dir.path().exists());
}

#[test]
fn graphs_are_restored_on_open_and_stale_or_damaged_snapshots_are_harmless() {
    for kind in [GraphKind::Native, GraphKind::HnswRs] {
        graphs_are_restored_with(kind);
    }
}

fn graphs_are_restored_with(kind: GraphKind) {
    let (snapshot_file, damaged_file) = match kind {
        GraphKind::Native => ("native.graph", "native.graph"),
        GraphKind::HnswRs => ("MANIFEST", "graph.hnsw.data"),
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), kind);
    let mut ids = Vec::new();
    for i in 0..600 {
        let input = RememberInput {
            content: format!("memory {i}"),
            vector: Some(vector(i)),
            ..Default::default()
        };
        ids.push(engine.remember("bot", input).unwrap().memory.id);
    }
    engine.settle_indexes();
    assert_eq!(engine.stats("bot").unwrap().index_lag, 0);
    // Best similarities (ranking by confidence also moves with access counts, which recall
    // itself updates).
    let before: Vec<f32> = (0..16)
        .map(|i| best(&engine, &vector(i * 37 + 1)))
        .collect();
    engine.close().unwrap();
    assert!(graph_dir(dir.path(), "bot").join(snapshot_file).exists());

    // Restored: no lag, same answers.
    let engine = open(dir.path(), kind);
    assert_eq!(
        engine.stats("bot").unwrap().index_lag,
        0,
        "graph was not restored"
    );
    let after: Vec<f32> = (0..16)
        .map(|i| best(&engine, &vector(i * 37 + 1)))
        .collect();
    assert_eq!(before, after);
    // Forget one, then reopen from the now stale snapshot: it must not come back.
    engine
        .forget("bot", std::slice::from_ref(&ids[37]))
        .unwrap();
    drop(engine);
    let engine = open(dir.path(), kind);
    assert!(ids_of(&engine, &vector(37)).iter().all(|id| *id != ids[37]));
    drop(engine);

    // A damaged snapshot is discarded; results are still right.
    let data = graph_dir(dir.path(), "bot").join(damaged_file);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let engine = open(dir.path(), kind);
    assert!(
        engine.stats("bot").unwrap().index_lag > 0,
        "a damaged snapshot was used"
    );
    assert!(!graph_dir(dir.path(), "bot").exists());
    assert!((best(&engine, &vector(74)) - 1.0).abs() < 1e-5);
    assert!(ids_of(&engine, &vector(74)).contains(&ids[74]));
    engine.settle_indexes();
    assert!(ids_of(&engine, &vector(74)).contains(&ids[74]));
}

/// Once an agent has a graph, no write leaves more than `index_tail_max` vectors outside
/// it (the writer links the excess before answering); with an unbounded tail, bulk writes
/// are answered first and linked later.
#[test]
fn writes_keep_the_exact_tail_within_its_bound() {
    let batch = |engine: &Engine, from: usize, n: usize| {
        let items = (from..from + n)
            .map(|i| RememberInput {
                content: format!("memory {i}"),
                vector: Some(vector(i)),
                ..Default::default()
            })
            .collect();
        engine.remember_batch("bot", items).unwrap();
    };
    for (tail_max, bounded) in [(100, true), (usize::MAX, false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            clock: Arc::new(ManualClock::new(T0)),
            background: false,
            index_tail_max: tail_max,
            index: IndexConfig {
                graph_min_vectors: 200,
                ..IndexConfig::default()
            },
            ..EngineConfig::default()
        };
        let engine = Engine::open(dir.path(), config).unwrap();
        batch(&engine, 0, 300);
        engine.settle_indexes();
        assert_eq!(engine.stats("bot").unwrap().index_lag, 0, "no graph built");
        let mut worst = 0;
        for round in 0..5 {
            batch(&engine, 300 + round * 400, 400);
            worst = worst.max(engine.stats("bot").unwrap().index_lag);
        }
        if bounded {
            assert!(worst <= 100, "tail reached {worst} over a bound of 100");
        } else {
            assert!(worst > 1_000, "unbounded tail only reached {worst}");
        }
        // Either way, the newest memories are found (or the near-duplicate they merged
        // into).
        for i in [2_250, 2_299] {
            assert!(best(&engine, &vector(i)) > 0.999, "memory {i} not found");
        }
        engine.close().unwrap();
    }
}
