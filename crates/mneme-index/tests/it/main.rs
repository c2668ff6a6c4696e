//! Integration tests of `mneme-index`: recall against the exact oracle, deletions,
//! filters, the planner, and graph upkeep racing with writes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::HashSet;

use mneme_index::synthetic::{SplitMix64, clustered};
use mneme_index::{
    Filter, FlatIndex, Graph, GraphKind, HnswParams, IndexConfig, Maintenance, Plan, SnapshotError,
    VectorIndex, absorb, maintain,
};

const KINDS: [GraphKind; 2] = [GraphKind::Native, GraphKind::HnswRs];
use parking_lot::RwLock;

fn recall_at_k(got: &[u64], truth: &[u64]) -> f64 {
    let truth: HashSet<_> = truth.iter().collect();
    got.iter().filter(|k| truth.contains(k)).count() as f64 / truth.len().max(1) as f64
}

/// The native graph repairs around deletions, so it only rebuilds to reclaim space (at 50 %
/// here, to test the repair); hnsw_rs rebuilds at 20 %.
fn graph_config(kind: GraphKind) -> IndexConfig {
    IndexConfig {
        graph_min_vectors: 1_000,
        graph: kind,
        repair_tombstones_min: 64,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        },
        rebuild_tombstone_ratio: match kind {
            GraphKind::Native => 0.5,
            GraphKind::HnswRs => 0.2,
        },
        exact_filter_max: 300,
    }
}

fn build(n: usize, dim: usize, seed: u64, kind: GraphKind) -> (RwLock<VectorIndex>, Vec<f32>) {
    let (data, queries) = clustered(seed, n, 100, dim);
    let mut index = VectorIndex::new(dim, graph_config(kind));
    for (i, v) in data.chunks_exact(dim).enumerate() {
        index.insert(i as u64, v).unwrap();
    }
    let lock = RwLock::new(index);
    drain(&lock);
    (lock, queries)
}

fn drain(lock: &RwLock<VectorIndex>) {
    while maintain(lock, 10_000) != Maintenance::Idle {}
}

fn mean_recall(index: &VectorIndex, queries: &[f32], filter: Filter<'_>) -> f64 {
    let dim = index.dim();
    let n = queries.len() / dim;
    queries
        .chunks_exact(dim)
        .map(|q| {
            let got: Vec<u64> = index
                .search(q, 10, filter)
                .unwrap()
                .iter()
                .map(|h| h.key)
                .collect();
            let truth: Vec<u64> = index
                .search_exact(q, 10, filter)
                .unwrap()
                .iter()
                .map(|h| h.key)
                .collect();
            recall_at_k(&got, &truth)
        })
        .sum::<f64>()
        / n as f64
}

#[test]
fn graph_recall_at_10_is_at_least_0_95_on_a_fixed_seed_set() {
    for kind in KINDS {
        let (lock, queries) = build(6_000, 48, 11, kind);
        let index = lock.read();
        assert_eq!(index.graph().unwrap().kind(), kind);
        assert_eq!(index.tail_len(), 0);
        assert_eq!(index.plan(&Filter::All), Plan::Graph);
        let recall = mean_recall(&index, &queries, Filter::All);
        assert!(recall >= 0.95, "{kind:?}: recall@10 = {recall}");
    }
}

#[test]
fn int8_scan_with_rescoring_matches_the_f32_oracle_exactly() {
    let dim = 384;
    let (data, queries) = clustered(5, 10_000, 50, dim);
    let mut flat = FlatIndex::new(dim);
    for (i, v) in data.chunks_exact(dim).enumerate() {
        flat.insert(i as u64, v).unwrap();
    }
    for q in queries.chunks_exact(dim) {
        let fast = flat.search(q, 10, &|_| true);
        let oracle = flat.search_f32(q, 10, &|_| true);
        let fast_keys: Vec<u64> = fast.iter().map(|h| h.key).collect();
        let oracle_keys: Vec<u64> = oracle.iter().map(|h| h.key).collect();
        assert_eq!(fast_keys, oracle_keys);
        assert_eq!(fast[0].score, oracle[0].score, "rescored scores are exact");
    }
}

#[test]
fn deleted_ids_are_never_returned_and_recall_holds_after_deleting_20_percent() {
    for kind in KINDS {
        let (lock, queries) = build(5_000, 32, 21, kind);
        let mut rng = SplitMix64::new(3);
        let mut deleted = HashSet::new();
        while deleted.len() < 1_000 {
            let key = rng.next_u64() % 5_000;
            if deleted.insert(key) {
                assert!(lock.write().remove(key));
            }
        }
        let check = |index: &VectorIndex| {
            for q in queries.chunks_exact(32) {
                for hit in index.search(q, 50, Filter::All).unwrap() {
                    assert!(
                        !deleted.contains(&hit.key),
                        "{kind:?}: deleted key {} returned",
                        hit.key
                    );
                }
            }
        };
        check(&lock.read());
        // The native graph relinks around the tombstones; hnsw_rs has passed its 20 %
        // threshold and rebuilds.
        let expected = match kind {
            GraphKind::Native => Maintenance::Repaired(1_000),
            GraphKind::HnswRs => Maintenance::Rebuilt(4_000),
        };
        assert_eq!(maintain(&lock, 10_000), expected);
        let index = lock.read();
        check(&index);
        let recall = mean_recall(&index, &queries, Filter::All);
        assert!(
            recall >= 0.95,
            "{kind:?}: recall@10 after deletions = {recall}"
        );
    }
}

#[test]
fn native_repair_leaves_no_link_to_a_tombstone_and_keeps_results_exact_in_score() {
    let (lock, queries) = build(4_000, 32, 23, GraphKind::Native);
    for key in (0..4_000u64).filter(|k| k % 3 == 0) {
        lock.write().remove(key);
    }
    assert!(matches!(maintain(&lock, 10_000), Maintenance::Repaired(n) if n == 1_334));
    let index = lock.read();
    let Graph::Native(graph) = &*index.graph().unwrap() else {
        panic!("native graph expected");
    };
    assert_eq!(graph.unrepaired(), 0);
    assert_eq!(graph.len(), 4_000 - 1_334);
    // Every result is live, and recall holds with a third of the graph gone.
    for q in queries.chunks_exact(32) {
        assert!(graph.search(q, 10, 64, None).iter().all(|k| k % 3 != 0));
    }
    let recall = mean_recall(&index, &queries, Filter::All);
    assert!(
        recall >= 0.95,
        "recall@10 after repairing a third = {recall}"
    );
}

#[test]
fn filtered_results_always_satisfy_the_filter_under_every_plan() {
    for kind in KINDS {
        filtered_results_always_satisfy_the_filter_under_every_plan_with(kind);
    }
}

fn filtered_results_always_satisfy_the_filter_under_every_plan_with(kind: GraphKind) {
    let (lock, queries) = build(4_000, 32, 31, kind);
    let index = lock.read();
    for modulus in [2u64, 10, 100] {
        let accept = move |k: u64| k.is_multiple_of(modulus);
        let filter = Filter::Predicate {
            accept: &accept,
            estimated_matches: 4_000 / modulus as usize,
        };
        let expected_plan = if 4_000 / modulus as usize <= 300 {
            Plan::Exact
        } else {
            Plan::Graph
        };
        assert_eq!(index.plan(&filter), expected_plan);
        for q in queries.chunks_exact(32) {
            let hits = index.search(q, 10, filter).unwrap();
            assert_eq!(hits.len(), 10);
            assert!(hits.iter().all(|h| h.key.is_multiple_of(modulus)));
        }
        let recall = mean_recall(&index, &queries, filter);
        assert!(recall >= 0.95, "modulus {modulus}: recall {recall}");
    }
    let keys: Vec<u64> = (0..4_000).step_by(7).collect();
    for q in queries.chunks_exact(32) {
        let hits = index.search(q, 10, Filter::Keys(&keys)).unwrap();
        assert!(hits.iter().all(|h| h.key.is_multiple_of(7)));
    }
}

#[test]
fn planner_scans_are_exact() {
    for kind in KINDS {
        planner_scans_are_exact_with(kind);
    }
}

fn planner_scans_are_exact_with(kind: GraphKind) {
    let (lock, queries) = build(3_000, 32, 41, kind);
    let index = lock.read();
    let accept = |k: u64| k.is_multiple_of(50);
    let filter = Filter::Predicate {
        accept: &accept,
        estimated_matches: 60,
    };
    assert_eq!(index.plan(&filter), Plan::Exact);
    let keys: Vec<u64> = (0..3_000u64).filter(|k| k.is_multiple_of(3)).collect();
    for q in queries.chunks_exact(32) {
        assert_eq!(
            index.search(q, 10, filter).unwrap(),
            index.search_exact(q, 10, filter).unwrap()
        );
        let f = Filter::Keys(&keys);
        assert_eq!(
            index.search(q, 10, f).unwrap(),
            index.search_exact(q, 10, f).unwrap()
        );
    }
}

#[test]
fn new_vectors_are_searchable_at_once_through_the_tail() {
    for kind in KINDS {
        new_vectors_are_searchable_at_once_through_the_tail_with(kind);
    }
}

fn new_vectors_are_searchable_at_once_through_the_tail_with(kind: GraphKind) {
    let (lock, _) = build(2_000, 16, 51, kind);
    let probe: Vec<f32> = (0..16).map(|i| if i == 3 { 1.0 } else { 0.0 }).collect();
    lock.write().insert(999_999, &probe).unwrap();
    let index = lock.read();
    assert_eq!(index.tail_len(), 1);
    let hits = index.search(&probe, 1, Filter::All).unwrap();
    assert_eq!(hits[0].key, 999_999);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
}

#[test]
fn writes_racing_with_graph_upkeep_never_surface_stale_vectors() {
    for kind in KINDS {
        writes_racing_with_graph_upkeep_never_surface_stale_vectors_with(kind);
    }
}

/// Writers that link their own vectors (`absorb`) while others move and delete keys and
/// upkeep runs: every key is linked exactly once and never stale, the tail drains, nothing
/// deleted comes back, and results match the oracle.
#[test]
fn writers_linking_their_vectors_concurrently_keep_the_graph_exact() {
    for kind in KINDS {
        let dim = 16;
        let (data, _) = clustered(62, 6_000, 0, dim);
        let lock = RwLock::new(VectorIndex::new(dim, graph_config(kind)));
        for (i, v) in data[..2_000 * dim].chunks_exact(dim).enumerate() {
            lock.write().insert(i as u64, v).unwrap();
        }
        drain(&lock);
        assert!(lock.read().has_graph());
        std::thread::scope(|s| {
            for t in 0..3u64 {
                let (lock, data) = (&lock, &data);
                s.spawn(move || {
                    for i in (2_000 + t..6_000).step_by(3) {
                        let v = &data[i as usize * dim..(i as usize + 1) * dim];
                        lock.write().insert(i, v).unwrap();
                        absorb(lock, 2);
                    }
                });
            }
            // Deletions and moves of keys that already exist, racing the linking.
            s.spawn(|| {
                for i in (0..2_000u64).step_by(11) {
                    lock.write().remove(i);
                    absorb(&lock, 4);
                }
            });
            s.spawn(|| {
                for i in (1..2_000u64).step_by(13).filter(|i| i % 11 != 0) {
                    let v: Vec<f32> = (0..dim)
                        .map(|d| if d == (i as usize % dim) { 1.0 } else { 0.01 })
                        .collect();
                    lock.write().insert(i, &v).unwrap();
                    absorb(&lock, 4);
                }
            });
            s.spawn(|| {
                for _ in 0..20 {
                    maintain(&lock, 100);
                }
            });
        });
        drain(&lock);
        let index = lock.read();
        assert_eq!(index.tail_len(), 0, "{kind:?}: the tail did not drain");
        let (_, queries) = clustered(62, 10, 50, dim);
        for q in queries.chunks_exact(dim) {
            let got = index.search(q, 10, Filter::All).unwrap();
            let exact = index.search_exact(q, 10, Filter::All).unwrap();
            for hit in &got {
                assert!(
                    hit.key >= 2_000 || hit.key % 11 != 0,
                    "{kind:?}: deleted {} returned",
                    hit.key
                );
                let stored = index.get(hit.key).unwrap();
                let score: f32 = stored.iter().zip(q).map(|(a, b)| a * b).sum::<f32>()
                    / q.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(
                    (hit.score - score).abs() < 1e-4,
                    "{kind:?}: stale {}",
                    hit.key
                );
            }
            let keys: HashSet<u64> = got.iter().map(|h| h.key).collect();
            assert_eq!(keys.len(), got.len(), "{kind:?}: a key returned twice");
            // Moved vectors share values, so compare scores, not keys (ties).
            let kth = exact.last().unwrap().score;
            let good = got.iter().filter(|h| h.score >= kth - 1e-5).count();
            assert!(good >= 8, "{kind:?}: {good}/10 at the exact scores");
        }
    }
}

fn writes_racing_with_graph_upkeep_never_surface_stale_vectors_with(kind: GraphKind) {
    let dim = 16;
    let (data, _) = clustered(61, 3_000, 0, dim);
    let lock = RwLock::new(VectorIndex::new(dim, graph_config(kind)));
    for (i, v) in data.chunks_exact(dim).enumerate() {
        lock.write().insert(i as u64, v).unwrap();
    }
    std::thread::scope(|s| {
        s.spawn(|| drain(&lock));
        // Meanwhile, move every tenth key to a new place and delete every seventh.
        for i in (0..3_000u64).step_by(10) {
            let v: Vec<f32> = (0..dim)
                .map(|d| if d == (i as usize % dim) { 1.0 } else { 0.01 })
                .collect();
            lock.write().insert(i, &v).unwrap();
        }
        for i in (0..3_000u64).step_by(7) {
            lock.write().remove(i);
        }
    });
    drain(&lock);
    let index = lock.read();
    let mut total_good = 0;
    let mut total = 0;
    for d in 0..dim {
        let q: Vec<f32> = (0..dim).map(|x| if x == d { 1.0 } else { 0.01 }).collect();
        let got = index.search(&q, 20, Filter::All).unwrap();
        let exact = index.search_exact(&q, 20, Filter::All).unwrap();
        for hit in &got {
            assert!(!hit.key.is_multiple_of(7), "deleted {} returned", hit.key);
            let stored = index.get(hit.key).unwrap();
            let score: f32 = stored.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>()
                / q.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (hit.score - score).abs() < 1e-4,
                "stale score for {}",
                hit.key
            );
        }
        // Many moved vectors are identical, so compare scores, not keys (ties).
        let kth = exact.last().unwrap().score;
        let good = got.iter().filter(|h| h.score >= kth - 1e-5).count();
        assert!(
            good as f64 >= 0.75 * exact.len() as f64,
            "{kind:?} axis {d}: {good}/20 at the exact scores\n{got:?}\n{exact:?}\ngraph {:?} tail {}",
            index.graph().map(|g| g.len()),
            index.tail_len()
        );
        total_good += good;
        total += exact.len();
    }
    // An axis is far from every cluster, the graph's weakest case: hold the mean to 0.9.
    assert!(
        total_good as f64 >= 0.9 * total as f64,
        "{kind:?}: {total_good}/{total} at the exact scores over all axes"
    );
}

/// Agents store repeats. Large groups of identical vectors (here 4 groups of 60 copies, more
/// than a block holds) must neither trap a search that wanders into them nor hide copies
/// from a search for them. A group of copies once linked only to itself, and a query for
/// another axis returned 20 copies of the wrong one.
#[test]
fn groups_of_identical_vectors_neither_trap_searches_nor_hide_copies() {
    for kind in KINDS {
        let dim = 16;
        let (data, _) = clustered(71, 2_000, 0, dim);
        let mut index = VectorIndex::new(dim, graph_config(kind));
        let axis =
            |d: usize| -> Vec<f32> { (0..dim).map(|x| if x == d { 1.0 } else { 0.01 }).collect() };
        // Copies interleaved with the rest, as an agent's repeats arrive.
        let mut key = 0u64;
        for (i, v) in data.chunks_exact(dim).enumerate() {
            index.insert(key, v).unwrap();
            key += 1;
            if i % 8 == 0 {
                index.insert(key, &axis(2 * (i / 8 % 4))).unwrap();
                key += 1;
            }
        }
        let lock = RwLock::new(index);
        drain(&lock);
        let index = lock.read();
        assert!(index.has_graph() && index.tail_len() == 0);
        for d in 0..8 {
            let q = axis(d);
            let got = index.search(&q, 20, Filter::All).unwrap();
            let exact = index.search_exact(&q, 20, Filter::All).unwrap();
            let kth = exact.last().unwrap().score;
            let good = got.iter().filter(|h| h.score >= kth - 1e-5).count();
            assert!(good >= 18, "{kind:?} axis {d}: {good}/20 {got:?}");
        }
        // Every copy of a group is reachable: a query for it finds all 60. (hnsw_rs's
        // heuristic lets copies shadow each other: it finds about 50; a known limit of the
        // non-default graph.)
        if kind == GraphKind::HnswRs {
            continue;
        }
        for d in [0, 2, 4, 6] {
            let got = index.search(&axis(d), 60, Filter::All).unwrap();
            let copies = got.iter().filter(|h| h.score > 0.9999).count();
            assert_eq!(copies, 60, "{kind:?} axis {d}");
        }
    }
}

#[test]
fn bad_vectors_get_typed_errors() {
    let mut index = VectorIndex::new(4, IndexConfig::default());
    assert_eq!(
        index.insert(1, &[1.0, 2.0]).unwrap_err(),
        mneme_index::IndexError::DimensionMismatch {
            expected: 4,
            actual: 2
        }
    );
    assert!(index.insert(1, &[1.0, f32::NAN, 0.0, 0.0]).is_err());
    assert!(index.insert(1, &[0.0; 4]).is_err());
    assert!(
        index
            .search(&[f32::INFINITY, 0.0, 0.0, 0.0], 1, Filter::All)
            .is_err()
    );
    assert!(index.is_empty());
}

#[test]
fn a_saved_graph_loads_back_with_identical_results_and_damage_is_a_typed_error() {
    for kind in KINDS {
        a_saved_graph_loads_back_with(kind);
    }
}

fn a_saved_graph_loads_back_with(kind: GraphKind) {
    let config = graph_config(kind);
    let (lock, queries) = build(3_000, 32, 71, kind);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("graph");
    let graph = lock.read().graph().unwrap();
    // Label = the key as text; key 5 is left unlabelled (as if deleted since).
    graph
        .save(&snap, &|key| {
            (key != 5).then(|| key.to_string().into_bytes())
        })
        .unwrap();
    assert!(Graph::snapshot_exists(&snap));
    let resolve = |label: &[u8]| std::str::from_utf8(label).ok()?.parse::<u64>().ok();
    let load = || Graph::load(&snap, kind, 32, config.hnsw, &resolve);
    let loaded = load().unwrap();
    assert_eq!(loaded.kind(), kind);
    assert_eq!(loaded.len(), graph.len() - 1);
    let original = lock.read();
    let mut copy = VectorIndex::new(32, config);
    for key in 0..3_000u64 {
        copy.insert(key, original.get(key).unwrap()).unwrap();
    }
    copy.install_graph(std::sync::Arc::new(loaded));
    assert_eq!(
        copy.tail_len(),
        1,
        "the unlabelled point is served by the exact tail"
    );
    for q in queries.chunks_exact(32) {
        assert_eq!(
            copy.search(q, 10, Filter::All).unwrap(),
            original.search(q, 10, Filter::All).unwrap(),
            "{kind:?}"
        );
    }
    // A snapshot of the wrong dimension or kind is refused, not misread.
    assert!(Graph::load(&snap, kind, 33, config.hnsw, &resolve).is_err());
    let other = match kind {
        GraphKind::Native => GraphKind::HnswRs,
        GraphKind::HnswRs => GraphKind::Native,
    };
    assert!(Graph::load(&snap, other, 32, config.hnsw, &resolve).is_err());
    // Single-byte corruption anywhere in any file is caught before the graph is used.
    let files: &[&str] = match kind {
        GraphKind::Native => &["native.graph"],
        GraphKind::HnswRs => &[
            "MANIFEST",
            "labels.bin",
            "graph.hnsw.graph",
            "graph.hnsw.data",
        ],
    };
    for name in files {
        let path = snap.join(name);
        let good = std::fs::read(&path).unwrap();
        let mut offsets: Vec<usize> = (0..64).map(|i| i * good.len() / 64).collect();
        offsets.extend([0, 8, 12, 24, 40, 100, 208, good.len() - 1]);
        offsets.retain(|at| *at < good.len());
        for at in offsets {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            match load() {
                Err(SnapshotError::Invalid { .. }) => {}
                // Padding between native sections is not checksummed: a flip there is
                // harmless, and the graph must still answer identically.
                Ok(g) if kind == GraphKind::Native => {
                    let q = &queries[..32];
                    let a = g.search(q, 10, 64, None);
                    let b = graph.search(q, 10, 64, Some(&|k| k != 5));
                    assert_eq!(a, b, "{name}@{at} loaded but answers differently");
                }
                other => panic!("{kind:?} {name}@{at}: {other:?}"),
            }
        }
        std::fs::write(&path, &good).unwrap();
        // Truncation anywhere is caught too.
        for len in [0, good.len() / 3, good.len() - 1] {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(load().is_err(), "{name} truncated to {len}");
        }
        std::fs::write(&path, &good).unwrap();
    }
    assert!(load().is_ok());
    std::fs::remove_file(snap.join(files[files.len() - 1])).unwrap();
    assert!(load().is_err());
}
