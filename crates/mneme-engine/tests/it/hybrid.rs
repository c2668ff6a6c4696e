//! Hybrid (lexical + semantic) recall is exact: the top k of a recall equals the first k of
//! an exhaustive one, whatever the windows and the certificate decided. (It fails if the
//! lexical candidates are left out of the union; on this data the certificate's lexical
//! bound is rarely the deciding term, so a looser bound would not be caught here.)

use std::sync::Arc;

use mneme_engine::{
    AgentSettings, ManualClock, MemoryType, RecallQuery, RememberInput, ScoringParams,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::{T0, open};

const WORDS: &[&str] = &[
    "deploy",
    "server",
    "database",
    "backup",
    "password",
    "invoice",
    "customer",
    "tone",
    "formal",
    "meeting",
    "standup",
    "release",
    "ticket",
    "support",
    "plan",
    "billing",
    "network",
    "latency",
    "cache",
    "memory",
    "user",
    "prefers",
    "email",
    "weekly",
    "report",
    "error",
    "restart",
    "worker",
    "queue",
    "disk",
    "login",
    "security",
    "settings",
    "team",
    "finance",
    "order",
    "status",
    "portal",
    "reminder",
    "yesterday",
    "friday",
    "morning",
    "coffee",
    "office",
    "holiday",
    "contract",
    "renewal",
    "price",
    "discount",
    "refund",
];

fn sentence(rng: &mut StdRng, words: usize) -> String {
    (0..words)
        .map(|_| *WORDS.choose(rng).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_top_k_of_a_hybrid_recall_is_the_top_k_of_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let mut rng = StdRng::seed_from_u64(16);
    let mut stored = 0;
    while stored < 1_500 {
        let n = rng.random_range(3..10);
        let memory_type = [
            MemoryType::Semantic,
            MemoryType::Episodic,
            MemoryType::Procedural,
        ]
        .choose(&mut rng)
        .copied();
        let input = RememberInput {
            content: sentence(&mut rng, n),
            memory_type,
            importance: Some(rng.random_range(0.0..1.0)),
            ..Default::default()
        };
        if !engine.remember("bot", input).unwrap().deduplicated {
            stored += 1;
        }
        clock.advance_ms(rng.random_range(0..6 * 3_600_000));
    }
    // The default weight, then a heavy one: lexical evidence dominates and many memories
    // share a query word, so the lexical window truncates and its bound decides.
    for (round, weight) in [None, Some(2.0)].into_iter().enumerate() {
        if let Some(lexical_weight) = weight {
            let settings = AgentSettings {
                scoring: Some(ScoringParams {
                    lexical_weight,
                    ..Default::default()
                }),
                ..Default::default()
            };
            engine.configure_agent("bot", settings, &|_, _| {}).unwrap();
        }
        check_queries(&engine, &mut rng, round);
    }
}

fn check_queries(engine: &mneme_engine::Engine, rng: &mut StdRng, round: usize) {
    for q in 0..60 {
        let query = sentence(rng, 1 + q % 4);
        let top = |k: u64| {
            engine
                .recall(
                    "bot",
                    &RecallQuery {
                        query: query.clone(),
                        top_k: k,
                        ..Default::default()
                    },
                )
                .unwrap()
        };
        let all = top(1_000);
        assert_eq!(all.len(), 1_000);
        for k in [1, 5, 10] {
            let ids: Vec<String> = top(k).iter().map(|r| r.memory.id.clone()).collect();
            let want: Vec<String> = all[..k as usize]
                .iter()
                .map(|r| r.memory.id.clone())
                .collect();
            assert_eq!(ids, want, "round {round}, query {query:?}, k {k}");
        }
        assert!(all.windows(2).all(|w| w[0].confidence >= w[1].confidence));
        assert!(all.iter().any(|r| r.scores.lexical > 0.0), "{query:?}");
    }
}
