//! Sessions and agents never leak, over the wire.

use mneme_server::pb;

use crate::harness::{Server, recall};

fn remember_in(agent: &str, session: &str, content: &str) -> pb::RememberRequest {
    pb::RememberRequest {
        agent_id: agent.into(),
        session_id: session.into(),
        content: content.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_memory_of_session_alice_is_never_seen_from_session_bob() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    c.remember(remember_in("bot", "alice", "Alice is VP of Engineering"))
        .await
        .unwrap();
    c.remember(remember_in("bot", "bob", "Bob is on the free plan"))
        .await
        .unwrap();
    c.remember(remember_in("bot", "", "Company uses Slack for comms"))
        .await
        .unwrap();
    for session_only in [false, true] {
        let q = pb::RecallRequest {
            session_id: "bob".into(),
            session_only,
            ..recall("bot", "what role does this user have? Alice VP Engineering")
        };
        let hits = c.recall(q).await.unwrap().into_inner().memories;
        assert!(!hits.is_empty());
        assert!(
            hits.iter()
                .all(|h| !h.memory.as_ref().unwrap().content.contains("Alice"))
        );
        let ctx = c
            .inject_context(pb::InjectContextRequest {
                agent_id: "bot".into(),
                query: "Alice VP of Engineering".into(),
                session_id: "bob".into(),
                session_only,
                top_k: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!ctx.context.contains("Alice"), "{}", ctx.context);
        let list = c
            .list(pb::ListRequest {
                agent_id: "bot".into(),
                session_id: "bob".into(),
                session_only,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(list.memories.iter().all(|m| m.session_id != "alice"));
        assert_eq!(list.memories.len(), if session_only { 1 } else { 2 });
    }
}

#[tokio::test]
async fn agents_with_identical_ids_vectors_and_session_names_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    let v = vec![0.1, 0.7, 0.2, 0.4];
    let mut ids = Vec::new();
    for agent in ["tenant-a", "tenant-b"] {
        let r = pb::RememberRequest {
            agent_id: agent.into(),
            session_id: "shared".into(),
            content: format!("secret of {agent}"),
            vector: v.clone(),
            ..Default::default()
        };
        ids.push(c.remember(r).await.unwrap().into_inner().memory.unwrap().id);
    }
    for (i, agent) in ["tenant-a", "tenant-b"].iter().enumerate() {
        let other = &ids[1 - i];
        let hits = c
            .recall(pb::RecallRequest {
                agent_id: (*agent).into(),
                vector: v.clone(),
                top_k: 100,
                session_id: "shared".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .memories;
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].memory.as_ref().unwrap().content,
            format!("secret of {agent}")
        );
        let err = c
            .get(pb::GetRequest {
                agent_id: (*agent).into(),
                id: other.clone(),
                include_vector: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(!err.message().contains("secret"));
        let forgotten = c
            .forget(pb::ForgetRequest {
                agent_id: (*agent).into(),
                ids: vec![other.clone()],
            })
            .await
            .unwrap();
        assert_eq!(forgotten.into_inner().forgotten, 0);
        let updated = c
            .update(pb::UpdateRequest {
                agent_id: (*agent).into(),
                id: other.clone(),
                pinned: Some(true),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(updated.code(), tonic::Code::NotFound);
    }
    c.forget_session(pb::ForgetSessionRequest {
        agent_id: "tenant-a".into(),
        session_id: "shared".into(),
    })
    .await
    .unwrap();
    let b = c
        .stats(pb::StatsRequest {
            agent_id: "tenant-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.total_memories, 1, "forgetting A's session touched B");
}
