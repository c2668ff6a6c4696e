//! Semantic recall acceptance over gRPC with the real all-MiniLM-L6-v2 (feature `minilm`,
//! model from `MNEME_MINILM_DIR`; `.ci/run` provides it).

use mneme_server::pb;

use crate::harness::{Server, recall};

fn model_dir() -> Option<String> {
    match std::env::var("MNEME_MINILM_DIR") {
        Ok(dir) => Some(dir),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "MNEME_MINILM_DIR must be set in CI"
            );
            eprintln!("skipping: set MNEME_MINILM_DIR (scripts/fetch-minilm.sh)");
            None
        }
    }
}

#[tokio::test]
async fn minilm_finds_paraphrases_and_keeps_sessions_apart() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--embedder", "minilm", "--model-dir", &model]);
    let mut c = server.client().await;
    for (content, memory_type) in [
        ("User prefers formal tone", pb::MemoryType::Semantic),
        ("User is on the Pro plan", pb::MemoryType::Semantic),
        ("Company uses Slack for comms", pb::MemoryType::Semantic),
        ("Last deployment was on March 10", pb::MemoryType::Episodic),
    ] {
        c.remember(pb::RememberRequest {
            agent_id: "assistant".into(),
            content: content.into(),
            memory_type: memory_type as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let hits = c
        .recall(pb::RecallRequest {
            top_k: 2,
            ..recall("assistant", "how should I write my responses?")
        })
        .await
        .unwrap()
        .into_inner()
        .memories;
    assert_eq!(hits.len(), 2);
    let first = hits[0].memory.as_ref().unwrap();
    assert_eq!(first.content, "User prefers formal tone");
    // The calibration is fitted on held-out data (not on this pair): the relevant memory
    // must score well above the next one, whatever the absolute level.
    assert!(
        hits[0].confidence > 2.0 * hits[1].confidence,
        "confidences {} and {}",
        hits[0].confidence,
        hits[1].confidence
    );
    assert!(
        hits.iter()
            .all(|h| h.memory.as_ref().unwrap().content != "Last deployment was on March 10")
    );
    let stats = c
        .stats(pb::StatsRequest {
            agent_id: "assistant".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.dimensions, stats.embedder.starts_with("minilm")),
        (384, true)
    );

    for (session, content) in [
        ("alice", "Alice is VP of Engineering"),
        ("bob", "Bob is on the free plan"),
    ] {
        c.remember(pb::RememberRequest {
            agent_id: "crm".into(),
            session_id: session.into(),
            content: content.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let hits = c
        .recall(pb::RecallRequest {
            session_id: "bob".into(),
            ..recall("crm", "what role does this user have?")
        })
        .await
        .unwrap()
        .into_inner()
        .memories;
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|h| !h.memory.as_ref().unwrap().content.contains("Alice"))
    );
}
