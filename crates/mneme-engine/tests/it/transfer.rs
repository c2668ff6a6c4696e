//! Export → import reproduces memories and recall results exactly.

use std::sync::Arc;

use mneme_engine::{ManualClock, MemoryType, RecallQuery, RememberInput};

use crate::{T0, open, query};

#[test]
fn export_then_import_reproduces_the_same_recall_results() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    for i in 0..50 {
        let memory_type = [
            MemoryType::Episodic,
            MemoryType::Semantic,
            MemoryType::Procedural,
        ][i % 3];
        engine
            .remember(
                "src",
                RememberInput {
                    content: format!("note {i}: the build uses cache shard {}", i % 5),
                    memory_type: Some(memory_type),
                    session_id: if i % 4 == 0 {
                        "s1".into()
                    } else {
                        String::new()
                    },
                    metadata: [("n".to_owned(), i.to_string())].into(),
                    importance: Some((i % 10) as f32 / 10.0),
                    ..Default::default()
                },
            )
            .unwrap();
        clock.advance_ms(3_600_000);
    }
    engine.recall("src", &query("cache shard 3")).unwrap();
    engine.flush().unwrap();
    let mut buf = Vec::new();
    assert_eq!(engine.export("src", &mut buf).unwrap(), 50);
    let dir2 = tempfile::tempdir().unwrap();
    let engine2 = open(dir2.path(), &clock);
    let imported = engine2.import("dst", &mut buf.as_slice(), &|_| {}).unwrap();
    assert_eq!(imported, 50);
    let q = RecallQuery {
        top_k: 10,
        ..query("which cache shard does the build use?")
    };
    let a = engine.recall("src", &q).unwrap();
    let b = engine2.recall("dst", &q).unwrap();
    let strip = |hits: Vec<mneme_engine::Recalled>| {
        hits.into_iter()
            .map(|h| {
                (
                    h.memory.id,
                    h.memory.content,
                    h.memory.access_count,
                    h.confidence,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(a), strip(b));
    // A second export of the import is byte-identical apart from the agent id.
    let mut again = Vec::new();
    engine2.export("dst", &mut again).unwrap();
    let text = String::from_utf8(again)
        .unwrap()
        .replace("\"dst\"", "\"src\"");
    let mut original = Vec::new();
    engine.export("src", &mut original).unwrap();
    assert_eq!(text, String::from_utf8(original).unwrap());
}

#[test]
fn malformed_imports_are_refused_with_the_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = open(dir.path(), &clock);
    let header = r#"{"format":"mneme-export","version":1,"agent_id":"x","embedder":"client","dim":2,"count":1}"#;
    let bad = format!("{header}\n{{\"id\":\"nope\"}}\n");
    let err = engine
        .import("x", &mut bad.as_bytes(), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        engine
            .import("x", &mut "garbage\n".as_bytes(), &|_| {})
            .is_err()
    );
    assert!(engine.import("x", &mut "".as_bytes(), &|_| {}).is_err());
}
