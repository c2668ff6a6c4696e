//! Expiry (read-time and physical) and deduplication.

use std::sync::Arc;

use mneme_engine::{ManualClock, MemoryType, RememberInput};

use crate::{T0, open, query, text};

#[test]
fn expired_memories_are_never_returned_and_are_swept_durably() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let short = engine
        .remember(
            "bot",
            RememberInput {
                ttl_seconds: 60,
                ..text("The door code is 4321")
            },
        )
        .unwrap()
        .memory;
    let long = engine
        .remember("bot", text("The door is blue"))
        .unwrap()
        .memory;
    assert_eq!(short.expires_at_ms, T0 + 60_000);
    assert!(engine.get("bot", &short.id, false).unwrap().is_some());
    clock.advance_ms(60_000);
    assert!(
        engine.get("bot", &short.id, false).unwrap().is_none(),
        "expired but returned by get"
    );
    let hits = engine.recall("bot", &query("door code")).unwrap();
    assert!(
        hits.iter().all(|h| h.memory.id != short.id),
        "expired but recalled"
    );
    assert_eq!(engine.stats("bot").unwrap().total_memories, 1);
    assert_eq!(engine.sweep_expired().unwrap(), 1);
    drop(engine);
    let engine = open(dir.path(), &clock);
    clock.advance_ms(-120_000);
    // Even with the clock turned back, the swept memory is gone for good.
    assert!(engine.get("bot", &short.id, false).unwrap().is_none());
    assert!(engine.get("bot", &long.id, false).unwrap().is_some());
}

#[test]
fn a_near_identical_memory_in_the_same_session_and_type_is_reinforced() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let first = engine
        .remember("bot", text("User prefers formal tone"))
        .unwrap();
    clock.advance_ms(5_000);
    let again = engine
        .remember(
            "bot",
            RememberInput {
                importance: Some(0.9),
                ..text("User prefers formal tone")
            },
        )
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.memory.id, first.memory.id);
    assert_eq!(again.memory.access_count, 1);
    assert_eq!(again.memory.importance, 0.9);
    // Another session or type is a different memory.
    let other = engine
        .remember(
            "bot",
            RememberInput {
                session_id: "s".into(),
                ..text("User prefers formal tone")
            },
        )
        .unwrap();
    assert!(!other.deduplicated);
    let episodic = engine
        .remember(
            "bot",
            RememberInput {
                memory_type: Some(MemoryType::Episodic),
                ..text("User prefers formal tone")
            },
        )
        .unwrap();
    assert!(!episodic.deduplicated);
    // Within one batch too.
    let batch = engine
        .remember_batch(
            "bot",
            vec![
                text("Deploys happen on Tuesdays"),
                text("Deploys happen on Tuesdays"),
            ],
        )
        .unwrap();
    assert!(!batch[0].deduplicated && batch[1].deduplicated);
    assert_eq!(batch[0].memory.id, batch[1].memory.id);
    assert_eq!(engine.stats("bot").unwrap().total_memories, 4);
    drop(engine);
    let engine = open(dir.path(), &clock);
    assert_eq!(
        engine
            .get("bot", &first.memory.id, false)
            .unwrap()
            .unwrap()
            .access_count,
        1
    );
}

#[test]
fn a_retried_request_id_stores_once_across_checkpoints_reopens_and_clear_all() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let first = engine
        .remember_once("bot", text("The deploy runs at noon"), "req-1")
        .unwrap();
    assert!(!first.deduplicated);
    // A retry, even with different content, returns what the first attempt stored.
    let retry = engine
        .remember_once("bot", text("something else entirely"), "req-1")
        .unwrap();
    assert!(retry.deduplicated);
    assert_eq!(retry.memory.id, first.memory.id);
    assert_eq!(engine.stats("bot").unwrap().total_memories, 1);
    // Batches too; another id stores again.
    let batch = engine
        .remember_batch_once("bot", vec![text("a"), text("b")], "req-2")
        .unwrap();
    let batch_retry = engine
        .remember_batch_once("bot", vec![text("a"), text("b")], "req-2")
        .unwrap();
    assert_eq!(
        batch.iter().map(|r| &r.memory.id).collect::<Vec<_>>(),
        batch_retry.iter().map(|r| &r.memory.id).collect::<Vec<_>>()
    );
    assert!(batch_retry.iter().all(|r| r.deduplicated));
    assert_eq!(engine.stats("bot").unwrap().total_memories, 3);
    // The ids survive a checkpoint (they are in the agent's snapshot) and a reopen.
    engine.checkpoint().unwrap();
    engine.close().unwrap();
    let engine = open(dir.path(), &clock);
    let after = engine
        .remember_once("bot", text("The deploy runs at noon"), "req-1")
        .unwrap();
    assert!(after.deduplicated);
    assert_eq!(after.memory.id, first.memory.id);
    assert_eq!(engine.stats("bot").unwrap().total_memories, 3);
    // Bad ids are refused, naming the field.
    let err = engine
        .remember_once("bot", text("x"), &"r".repeat(129))
        .unwrap_err();
    assert!(err.to_string().contains("request_id"), "{err}");
    let err = engine
        .remember_once("bot", text("x"), "has space")
        .unwrap_err();
    assert!(err.to_string().contains("request_id"), "{err}");
    // After clear-all the id still names a request already done: nothing is stored.
    engine.clear_all("bot").unwrap();
    let cleared = engine
        .remember_once("bot", text("The deploy runs at noon"), "req-1")
        .unwrap_err();
    assert!(
        cleared.to_string().contains("nothing was remembered"),
        "{cleared}"
    );
    assert_eq!(engine.stats("bot").unwrap().total_memories, 0);
}
