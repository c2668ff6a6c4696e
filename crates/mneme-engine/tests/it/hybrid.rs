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

/// The certificate bounds the memories it did not score by the agent's best signals. Here
/// each agent holds 300 plain memories (fresh, unused, default importance) packed in a
/// narrow band of similarity to its query, and one favoured memory (pinned, important, much
/// used) just below the band, outside the first window. Its signals lift it to the top:
/// the certificate must see that and widen. (With bounds that ignored importance or uses,
/// the first window would pass as proven and the favoured memory would be lost: this test
/// fails then.)
#[test]
fn a_favoured_memory_outside_the_first_window_still_ranks_where_it_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let dim = 64;
    let mut rng = StdRng::seed_from_u64(17);
    let unit = |rng: &mut StdRng| -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    };
    // A unit vector at cosine `c` to the unit vector `q`.
    let at = |rng: &mut StdRng, q: &[f32], c: f32| -> Vec<f32> {
        let r = unit(rng);
        let along: f32 = r.iter().zip(q).map(|(a, b)| a * b).sum();
        let ortho: Vec<f32> = r.iter().zip(q).map(|(a, b)| a - along * b).collect();
        let n = ortho.iter().map(|x| x * x).sum::<f32>().sqrt();
        let s = (1.0 - c * c).sqrt();
        q.iter()
            .zip(&ortho)
            .map(|(a, o)| c * a + s * o / n)
            .collect()
    };
    for a in 0..8 {
        let agent = format!("bot-{a}");
        let q = unit(&mut rng);
        for i in 0..300 {
            let input = RememberInput {
                content: format!("plain {i}"),
                vector: Some(at(&mut rng, &q, 0.60 - 0.0001 * i as f32)),
                ..Default::default()
            };
            engine.remember(&agent, input).unwrap();
        }
        let input = RememberInput {
            content: "favoured".into(),
            vector: Some(at(&mut rng, &q, 0.585)),
            memory_type: Some(MemoryType::Semantic),
            importance: Some(1.0),
            pinned: true,
            ..Default::default()
        };
        let favoured = engine.remember(&agent, input).unwrap().memory.id;
        for _ in 0..20 {
            engine
                .mark_used(&agent, std::slice::from_ref(&favoured))
                .unwrap();
        }
        let top = |k: u64| {
            engine
                .recall(
                    &agent,
                    &RecallQuery {
                        vector: Some(q.clone()),
                        top_k: k,
                        ..Default::default()
                    },
                )
                .unwrap()
        };
        let all = top(301);
        assert_eq!(all.len(), 301);
        let at_rank = all.iter().position(|r| r.memory.id == favoured).unwrap();
        assert!(at_rank < 10, "the favoured memory ranks {at_rank} of all");
        for k in [1, 5, 10] {
            let ids: Vec<String> = top(k).into_iter().map(|r| r.memory.id).collect();
            let want: Vec<String> = all[..k as usize]
                .iter()
                .map(|r| r.memory.id.clone())
                .collect();
            assert_eq!(ids, want, "{agent}, k {k}");
        }
    }
}

/// Replacing the scoring parameters without a lexical weight keeps the family's default
/// (1.0 for the built-in static model), not the generic 0.5: the same confidences as an
/// explicit 1.0, other ones than an explicit 0.5.
#[test]
fn scoring_without_a_lexical_weight_keeps_the_family_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let texts = [
        "the deploy server restarts every friday morning",
        "billing portal password reset steps",
        "weekly finance report for the team",
    ];
    let configure = |agent: &str, weight: Option<f32>| {
        for text in texts {
            let input = RememberInput {
                content: text.into(),
                ..Default::default()
            };
            engine.remember(agent, input).unwrap();
        }
        let settings = AgentSettings {
            scoring: Some(ScoringParams {
                lexical_weight: weight.unwrap_or(0.5),
                ..Default::default()
            }),
            lexical_weight_from_family: weight.is_none(),
            ..Default::default()
        };
        engine.configure_agent(agent, settings, &|_, _| {}).unwrap();
    };
    configure("unset", None);
    configure("one", Some(1.0));
    configure("half", Some(0.5));
    let confidences = |agent: &str| -> Vec<f32> {
        let q = RecallQuery {
            query: "server restarts on friday".into(),
            ..Default::default()
        };
        engine
            .recall(agent, &q)
            .unwrap()
            .iter()
            .map(|r| r.confidence)
            .collect()
    };
    assert_eq!(confidences("unset"), confidences("one"));
    assert_ne!(confidences("unset"), confidences("half"));
}
