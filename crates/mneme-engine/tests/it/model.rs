//! Model-based test: random operations (reopens and clock advances included) against a
//! plain map of what should be visible.

use std::collections::BTreeMap;
use std::sync::Arc;

use mneme_engine::{ListQuery, ManualClock, RecallQuery, RememberInput, Scope};
use proptest::prelude::*;

use crate::{T0, open};

#[derive(Debug, Clone)]
enum Op {
    Remember { session: u8, v: [i8; 4], ttl: u8 },
    Forget(usize),
    ForgetSession(u8),
    ClearAll,
    Advance(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, any::<[i8; 4]>(), 0u8..4).prop_map(|(session, v, ttl)| Op::Remember { session, v, ttl }),
        2 => any::<usize>().prop_map(Op::Forget),
        1 => (0u8..3).prop_map(Op::ForgetSession),
        1 => Just(Op::ClearAll),
        2 => any::<u16>().prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Expected {
    session: String,
    expires_at_ms: i64,
}

fn session_name(s: u8) -> String {
    if s == 0 {
        String::new()
    } else {
        format!("s{s}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let mut engine = open(dir.path(), &clock);
        let mut model: BTreeMap<String, Expected> = BTreeMap::new();
        let mut n = 0u32;
        for op in ops {
            let now = mneme_engine::Clock::now_ms(clock.as_ref());
            match op {
                Op::Remember { session, v, ttl } => {
                    n += 1;
                    // A distinct component per memory keeps them from deduplicating.
                    let mut vector: Vec<f32> = v.iter().map(|x| f32::from(*x)).collect();
                    vector.push(1000.0 + n as f32 * 37.0);
                    vector.push((n as f32).sin() * 900.0);
                    let ttl_seconds = u64::from(ttl) * 30;
                    let out = engine.remember("agent", RememberInput {
                        content: format!("memory {n}"),
                        session_id: session_name(session),
                        vector: Some(vector),
                        ttl_seconds,
                        ..Default::default()
                    });
                    // Every generated memory is valid: a refusal is a bug, not noise to skip.
                    let out = out.unwrap();
                    if !out.deduplicated {
                        let expires_at_ms = if ttl_seconds == 0 { 0 } else { now + ttl_seconds as i64 * 1000 };
                        model.insert(out.memory.id.clone(), Expected { session: session_name(session), expires_at_ms });
                    }
                }
                Op::Forget(i) => {
                    if model.is_empty() { continue; }
                    let id = model.keys().nth(i % model.len()).unwrap().clone();
                    engine.forget("agent", std::slice::from_ref(&id)).unwrap();
                    model.remove(&id);
                }
                Op::ForgetSession(s) => {
                    if s == 0 { continue; }
                    engine.forget_session("agent", &session_name(s)).unwrap();
                    model.retain(|_, e| e.session != session_name(s));
                }
                Op::ClearAll => {
                    engine.clear_all("agent").unwrap();
                    model.clear();
                }
                Op::Advance(ms) => clock.advance_ms(i64::from(ms) * 10),
                Op::Reopen => {
                    drop(engine);
                    engine = open(dir.path(), &clock);
                }
            }
            let now = mneme_engine::Clock::now_ms(clock.as_ref());
            let visible: Vec<&String> = model.iter().filter(|(_, e)| e.expires_at_ms == 0 || e.expires_at_ms > now).map(|(id, _)| id).collect();
            let listed: Vec<String> = engine.list("agent", &ListQuery { page_size: 1000, ..Default::default() }).unwrap().memories.into_iter().map(|m| m.id).collect();
            prop_assert_eq!(listed.iter().collect::<Vec<_>>(), visible.clone());
            for s in 1..3u8 {
                let scope = Scope { session_id: session_name(s), ..Scope::default() };
                let hits = engine.recall("agent", &RecallQuery { vector: Some(vec![1.0; 6]), top_k: 1000, scope, ..Default::default() });
                let hits = hits.unwrap();
                let expected: usize = visible.iter().filter(|id| { let e = &model[**id]; e.session.is_empty() || e.session == session_name(s) }).count();
                prop_assert_eq!(hits.len(), expected);
                for h in hits {
                    let e = &model[&h.memory.id];
                    prop_assert!(e.session.is_empty() || e.session == session_name(s));
                }
            }
        }
    }
}
