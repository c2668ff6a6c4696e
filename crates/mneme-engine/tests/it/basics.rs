//! Every operation's happy path, bad input, and durability across reopen.

use std::sync::Arc;

use mneme_engine::{
    AgentSettings, Error, ListQuery, ManualClock, MemoryType, RecallQuery, RememberInput, Scope,
    UpdateInput,
};

use crate::{T0, open, open_hash, query, text};

#[test]
fn remember_recall_get_list_update_forget_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let a = engine
        .remember("bot", text("User prefers formal tone"))
        .unwrap();
    assert!(!a.deduplicated);
    assert_eq!(a.memory.memory_type, MemoryType::Semantic);
    assert_eq!(a.memory.importance, 0.5);
    engine
        .remember("bot", text("User is on the Pro plan"))
        .unwrap();
    let deploy = engine
        .remember(
            "bot",
            RememberInput {
                content: "Last deployment was on March 10".into(),
                memory_type: Some(MemoryType::Episodic),
                ..Default::default()
            },
        )
        .unwrap();
    let hits = engine.recall("bot", &query("formal tone")).unwrap();
    assert_eq!(hits[0].memory.id, a.memory.id);
    assert!(
        hits.windows(2).all(|w| w[0].confidence >= w[1].confidence),
        "ranked by confidence"
    );
    assert!(hits[0].scores.similarity > 0.0 && hits[0].scores.type_weight == 1.0);

    let got = engine.get("bot", &a.memory.id, true).unwrap().unwrap();
    assert_eq!(got.content, "User prefers formal tone");
    assert_eq!(got.vector.unwrap().len(), 256);
    assert!(
        engine
            .get("bot", "01ARZ3NDEKTSV4RRFFQ69G5FAV", false)
            .unwrap()
            .is_none()
    );

    let page = engine
        .list(
            "bot",
            &ListQuery {
                page_size: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.memories.len(), 2);
    let rest = engine
        .list(
            "bot",
            &ListQuery {
                page_size: 2,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rest.memories.len(), 1);
    assert!(rest.next_page_token.is_empty());

    clock.advance_ms(1_000);
    let updated = engine
        .update(
            "bot",
            &deploy.memory.id,
            UpdateInput {
                content: Some("Last deployment was on March 11".into()),
                pinned: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
    assert!(updated.pinned && updated.updated_at_ms == T0 + 1_000);

    let stats = engine.stats("bot").unwrap();
    assert_eq!(stats.total_memories, 3);
    assert_eq!(stats.by_type["semantic"], 2);
    assert_eq!(stats.dimensions, 256);
    assert!(stats.store_bytes_on_disk > 0);

    assert!(matches!(
        engine.forget("bot", &["nope".into()]),
        Err(mneme_engine::Error::InvalidArgument { .. })
    ));
    assert_eq!(
        engine
            .forget(
                "bot",
                &[a.memory.id.clone(), "01ARZ3NDEKTSV4RRFFQ69G5FAV".into()]
            )
            .unwrap(),
        1
    );
    assert!(engine.get("bot", &a.memory.id, false).unwrap().is_none());
    assert!(
        engine
            .recall("bot", &query("formal tone"))
            .unwrap()
            .iter()
            .all(|h| h.memory.id != a.memory.id)
    );
    drop(engine);

    // Everything above survives a reopen.
    let engine = open(dir.path(), &clock);
    assert!(engine.get("bot", &a.memory.id, false).unwrap().is_none());
    let again = engine
        .get("bot", &deploy.memory.id, false)
        .unwrap()
        .unwrap();
    assert_eq!(again.content, "Last deployment was on March 11");
    assert!(again.pinned);
    assert_eq!(engine.stats("bot").unwrap().total_memories, 2);
}

#[test]
fn only_use_counts_as_access_and_the_count_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let m = engine
        .remember("bot", text("Standup is at 9:30"))
        .unwrap()
        .memory;
    let count = |engine: &mneme_engine::Engine| {
        let got = engine.get("bot", &m.id, false).unwrap().unwrap();
        (got.access_count, got.last_accessed_at_ms)
    };
    // Being shown is not being used.
    engine.recall("bot", &query("when is standup")).unwrap();
    engine.flush().unwrap();
    assert_eq!(count(&engine), (0, 0));
    // Used: once by flag, once by an explicit call (durable when it returns).
    let used = RecallQuery {
        mark_used: true,
        ..query("standup time")
    };
    engine.recall("bot", &used).unwrap();
    engine.flush().unwrap();
    let ids = vec![
        m.id.clone(),
        m.id.clone(),
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
    ];
    assert_eq!(engine.mark_used("bot", &ids).unwrap(), 1);
    assert_eq!(engine.mark_used("nobody", &ids).unwrap(), 0);
    assert_eq!(count(&engine), (2, T0));
    let too_many = vec![m.id.clone(); mneme_engine::limits::MARK_USED_IDS_MAX + 1];
    assert!(matches!(
        engine.mark_used("bot", &too_many),
        Err(Error::InvalidArgument { .. })
    ));
    drop(engine);
    let engine = open(dir.path(), &clock);
    assert_eq!(count(&engine), (2, T0));
}

#[test]
fn recall_fuses_words_and_meaning_and_explains_the_lexical_part() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let target = engine
        .remember("bot", text("The invoice for order 7731 is overdue"))
        .unwrap()
        .memory;
    for filler in [
        "User prefers formal tone",
        "The payment reminder was sent yesterday",
        "Billing questions go to the finance team",
        "Order status can be checked in the portal",
    ] {
        engine.remember("bot", text(filler)).unwrap();
    }
    let hits = engine
        .recall("bot", &query("overdue invoice 7731"))
        .unwrap();
    assert_eq!(hits[0].memory.id, target.id);
    assert!(hits[0].scores.lexical > 0.4, "{:?}", hits[0].scores);
    assert!(
        hits[1..]
            .iter()
            .all(|h| h.scores.lexical < hits[0].scores.lexical)
    );
    // With the lexical weight at 0 the breakdown still reports the match, but it no longer
    // counts: confidence is the semantic one.
    engine
        .configure_agent(
            "bot",
            AgentSettings {
                scoring: Some(mneme_engine::ScoringParams {
                    lexical_weight: 0.0,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &|_, _| {},
        )
        .unwrap();
    let semantic = engine
        .recall("bot", &query("overdue invoice 7731"))
        .unwrap();
    let same = semantic.iter().find(|h| h.memory.id == target.id).unwrap();
    assert!(same.confidence < hits[0].confidence);
    // And it survives a restart (the lexical index is rebuilt from the memories; the weight
    // is in the log).
    drop(engine);
    let engine = open(dir.path(), &clock);
    let again = engine
        .recall("bot", &query("overdue invoice 7731"))
        .unwrap();
    let after = again.iter().find(|h| h.memory.id == target.id).unwrap();
    assert_eq!(after.confidence, same.confidence);
    assert!(after.scores.lexical > 0.4);
}

#[test]
fn bad_input_gets_errors_naming_field_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let field = |e: Error| match e {
        Error::InvalidArgument { field, reason } => format!("{field}: {reason}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    assert!(field(engine.remember("", text("x")).unwrap_err()).starts_with("agent_id"));
    assert!(field(engine.remember("a/b", text("x")).unwrap_err()).starts_with("agent_id"));
    let big = "x".repeat(10 * 1024 * 1024);
    let e = field(engine.remember("bot", text(&big)).unwrap_err());
    assert!(e.contains("content") && e.contains("65536"), "{e}");
    let nan = RememberInput {
        vector: Some(vec![1.0, f32::NAN]),
        ..text("v")
    };
    assert!(field(engine.remember("vec", nan).unwrap_err()).starts_with("vector"));
    let inf = RememberInput {
        vector: Some(vec![f32::INFINITY, 1.0]),
        ..text("v")
    };
    assert!(field(engine.remember("vec", inf).unwrap_err()).starts_with("vector"));
    let e = field(
        engine
            .recall(
                "bot",
                &RecallQuery {
                    top_k: 1_000_000_000,
                    ..query("x")
                },
            )
            .unwrap_err(),
    );
    assert!(e.starts_with("top_k") && e.contains("1000"), "{e}");
    let metadata = (0..10_000)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let e = field(
        engine
            .remember(
                "bot",
                RememberInput {
                    metadata,
                    ..text("m")
                },
            )
            .unwrap_err(),
    );
    assert!(e.starts_with("metadata") && e.contains("64"), "{e}");
    let e = field(
        engine
            .remember(
                "bot",
                RememberInput {
                    importance: Some(2.0),
                    ..text("i")
                },
            )
            .unwrap_err(),
    );
    assert!(e.starts_with("importance"), "{e}");
    assert!(matches!(
        engine.recall(
            "bot",
            &RecallQuery {
                scope: Scope {
                    session_only: true,
                    ..Scope::default()
                },
                ..query("x")
            }
        ),
        Err(Error::InvalidArgument { .. })
    ));
    // Wrong dimensions against an agent of client vectors.
    engine
        .remember(
            "vec",
            RememberInput {
                vector: Some(vec![1.0, 0.0, 0.0]),
                ..text("v")
            },
        )
        .unwrap();
    let e = field(
        engine
            .remember(
                "vec",
                RememberInput {
                    vector: Some(vec![1.0, 0.0]),
                    ..text("w")
                },
            )
            .unwrap_err(),
    );
    assert!(e.contains("2 dimensions") && e.contains('3'), "{e}");
    assert!(matches!(
        engine.recall("vec", &query("text")),
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(
        engine.stats("bot").unwrap().total_memories,
        0,
        "nothing half-stored"
    );
}

#[test]
fn inject_context_groups_by_type_and_respects_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open_hash(dir.path(), &clock);
    let kinds = [
        ("deploy with make release", MemoryType::Procedural),
        ("the deploy target is prod-eu", MemoryType::Semantic),
        ("deploy failed yesterday at noon", MemoryType::Episodic),
    ];
    for (content, t) in kinds {
        engine
            .remember(
                "bot",
                RememberInput {
                    content: content.into(),
                    memory_type: Some(t),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let q = RecallQuery {
        top_k: 10,
        ..query("deploy")
    };
    let full = engine.inject_context("bot", &q, 0).unwrap();
    assert!(!full.truncated);
    assert_eq!(full.memories.len(), 3);
    let facts = full.context.find("Facts:").unwrap();
    let procedures = full.context.find("Procedures:").unwrap();
    let events = full.context.find("Recent events:").unwrap();
    assert!(
        facts < procedures && procedures < events,
        "{}",
        full.context
    );
    for m in &full.memories {
        assert!(full.context.contains(&m.memory.id));
    }
    let small = engine.inject_context("bot", &q, 30).unwrap();
    assert!(small.truncated);
    assert!(small.memories.len() < 3);
    assert!(
        mneme_engine::estimate_tokens(&small.context) <= 30,
        "{}",
        small.context
    );
}

#[test]
fn changing_the_embedder_re_embeds_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    for i in 0..300 {
        engine
            .remember(
                "bot",
                text(&format!("fact number {i} about topic {}", i % 7)),
            )
            .unwrap();
    }
    let calls = std::sync::Mutex::new(Vec::new());
    engine
        .configure_agent(
            "bot",
            AgentSettings {
                embedder: Some("hash-v1".into()),
                ..Default::default()
            },
            &|done, total| {
                calls.lock().unwrap().push((done, total));
            },
        )
        .unwrap();
    assert_eq!(calls.lock().unwrap().last(), Some(&(300, 300)));
    assert_eq!(engine.stats("bot").unwrap().embedder, "hash-v1");
    assert_eq!(engine.stats("bot").unwrap().dimensions, 256);
    let hits = engine.recall("bot", &query("fact number 42")).unwrap();
    assert!(
        hits[0].memory.content.starts_with("fact number 42 "),
        "{:?}",
        hits[0].memory.content
    );
    drop(engine);
    let engine = open(dir.path(), &clock);
    assert_eq!(engine.stats("bot").unwrap().embedder, "hash-v1");
    let hits = engine.recall("bot", &query("fact number 42")).unwrap();
    assert!(hits[0].memory.content.starts_with("fact number 42 "));
    assert!(
        engine
            .configure_agent(
                "bot",
                AgentSettings {
                    embedder: Some("nope".into()),
                    ..Default::default()
                },
                &|_, _| {}
            )
            .is_err()
    );
}
