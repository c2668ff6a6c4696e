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
    assert!(dir.path().join("graphs/bot").join(snapshot_file).exists());

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
    let data = dir.path().join("graphs/bot").join(damaged_file);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let engine = open(dir.path(), kind);
    assert!(
        engine.stats("bot").unwrap().index_lag > 0,
        "a damaged snapshot was used"
    );
    assert!(!dir.path().join("graphs/bot").exists());
    assert!((best(&engine, &vector(74)) - 1.0).abs() < 1e-5);
    assert!(ids_of(&engine, &vector(74)).contains(&ids[74]));
    engine.settle_indexes();
    assert!(ids_of(&engine, &vector(74)).contains(&ids[74]));
}
