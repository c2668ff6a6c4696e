//! Agents never see each other; sessions see themselves plus agent-wide memories.

use std::sync::Arc;

use mneme_engine::{ListQuery, ManualClock, RecallQuery, RememberInput, Scope};

use crate::{T0, open, query};

fn remember(
    engine: &mneme_engine::Engine,
    agent: &str,
    session: &str,
    content: &str,
    v: Vec<f32>,
) -> String {
    engine
        .remember(
            agent,
            RememberInput {
                content: content.into(),
                session_id: session.into(),
                vector: Some(v),
                ..Default::default()
            },
        )
        .unwrap()
        .memory
        .id
}

#[test]
fn agents_with_identical_vectors_and_session_names_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let v = vec![0.3, 0.1, 0.9, 0.2];
    let a = remember(&engine, "agent-a", "s1", "secret of A", v.clone());
    let b = remember(&engine, "agent-b", "s1", "secret of B", v.clone());
    for (agent, own, other) in [("agent-a", &a, &b), ("agent-b", &b, &a)] {
        let hits = engine
            .recall(
                agent,
                &RecallQuery {
                    vector: Some(v.clone()),
                    top_k: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(&hits[0].memory.id, own);
        assert!(
            engine.get(agent, other, false).unwrap().is_none(),
            "{agent} read the other's memory by id"
        );
        assert_eq!(
            engine.forget(agent, std::slice::from_ref(other)).unwrap(),
            0
        );
        let list = engine.list(agent, &ListQuery::default()).unwrap();
        assert_eq!(list.memories.len(), 1);
        assert_eq!(engine.forget_session(agent, "nothing").unwrap(), 0);
    }
    assert_eq!(engine.clear_all("agent-a").unwrap(), 1);
    assert!(
        engine.get("agent-b", &b, false).unwrap().is_some(),
        "clearing A touched B"
    );
    assert_eq!(
        engine
            .recall(
                "agent-c",
                &RecallQuery {
                    vector: Some(v),
                    ..Default::default()
                }
            )
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_session_sees_itself_and_agent_wide_memories_never_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let v = vec![1.0, 0.0, 0.0];
    let alice = remember(
        &engine,
        "bot",
        "alice",
        "Alice is VP of Engineering",
        v.clone(),
    );
    let bob = remember(
        &engine,
        "bot",
        "bob",
        "Bob is on the free plan",
        vec![0.9, 0.1, 0.0],
    );
    let wide = remember(
        &engine,
        "bot",
        "",
        "Company uses Slack",
        vec![0.8, 0.2, 0.0],
    );
    let scope = |session: &str, only: bool| Scope {
        session_id: session.into(),
        session_only: only,
        ..Scope::default()
    };
    let ids = |hits: Vec<mneme_engine::Recalled>| {
        hits.into_iter().map(|h| h.memory.id).collect::<Vec<_>>()
    };
    let recall = |s: Scope| {
        ids(engine
            .recall(
                "bot",
                &RecallQuery {
                    vector: Some(v.clone()),
                    top_k: 10,
                    scope: s,
                    ..Default::default()
                },
            )
            .unwrap())
    };
    let bob_sees = recall(scope("bob", false));
    assert!(bob_sees.contains(&bob) && bob_sees.contains(&wide) && !bob_sees.contains(&alice));
    assert_eq!(recall(scope("bob", true)), vec![bob.clone()]);
    assert_eq!(recall(scope("carol", false)), vec![wide.clone()]);
    assert_eq!(recall(Scope::default()).len(), 3);
    let listed: Vec<String> = engine
        .list(
            "bot",
            &ListQuery {
                scope: scope("alice", false),
                ..Default::default()
            },
        )
        .unwrap()
        .memories
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert!(listed.contains(&alice) && listed.contains(&wide) && !listed.contains(&bob));
    let ctx = engine
        .inject_context(
            "bot",
            &RecallQuery {
                vector: Some(v.clone()),
                top_k: 10,
                scope: scope("bob", false),
                ..Default::default()
            },
            0,
        )
        .unwrap();
    assert!(!ctx.context.contains("Alice"), "{}", ctx.context);
    assert_eq!(engine.forget_session("bot", "alice").unwrap(), 1);
    assert!(engine.get("bot", &alice, false).unwrap().is_none());
    assert!(engine.get("bot", &wide, false).unwrap().is_some());
}

#[test]
fn text_recall_is_scoped_by_session_with_the_default_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    for (session, content) in [
        ("alice", "Alice is VP of Engineering"),
        ("bob", "Bob is on the free plan"),
    ] {
        engine
            .remember(
                "bot",
                RememberInput {
                    content: content.into(),
                    session_id: session.into(),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let q = RecallQuery {
        scope: Scope {
            session_id: "bob".into(),
            ..Scope::default()
        },
        top_k: 10,
        ..query("what role does this user have?")
    };
    let hits = engine.recall("bot", &q).unwrap();
    assert!(hits.iter().all(|h| !h.memory.content.contains("Alice")));
}
