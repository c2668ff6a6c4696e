//! Hostile and careless clients against the real binary (issue: hardening).

use mneme_server::pb;

use crate::harness::{Server, remember};

/// Agent ids that are path components (`..`, `.`), dotted ids that differ only after a dot,
/// a maximum-length id and ids that differ only in case: none may touch a file outside its
/// own, and none may share one with another agent, across snapshots, restarts and clear-all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ids_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let long = "L".repeat(128);
    let hostile: Vec<&str> = vec!["..", ".", "a.b", "a.c", "Bot", "bot", long.as_str()];
    let mut server = Server::start(dir.path(), &[]);
    {
        let mut client = server.client().await;
        for i in 0..50 {
            client
                .remember(remember("victim", &format!("victim fact number {i}")))
                .await
                .unwrap();
        }
        // An agent big enough for a vector graph, so that graph snapshots exist on disk.
        for chunk in 0..21 {
            let items = (0..1_000)
                .map(|i| {
                    let n = chunk * 1_000 + i;
                    pb::RememberRequest {
                        content: format!("big {n}"),
                        vector: (0..8)
                            .map(|d| ((n * 7 + d * 13) % 31) as f32 + 0.5)
                            .collect(),
                        ..Default::default()
                    }
                })
                .collect();
            client
                .remember_batch(pb::RememberBatchRequest {
                    agent_id: "big".into(),
                    items,
                })
                .await
                .unwrap();
        }
        for agent in &hostile {
            client
                .remember(remember(agent, &format!("memory of {agent}")))
                .await
                .unwrap();
        }
        let mut admin = server.admin().await;
        admin.compact(pb::CompactRequest {}).await.unwrap();
    }
    assert!(server.terminate().success());
    for round in 0..2 {
        let mut server = Server::start(dir.path(), &[]);
        let mut client = server.client().await;
        let stats = client
            .stats(pb::StatsRequest {
                agent_id: "victim".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            stats.total_memories, 50,
            "round {round}: victim's data lost"
        );
        for agent in &hostile {
            let stats = client
                .stats(pb::StatsRequest {
                    agent_id: (*agent).into(),
                })
                .await
                .unwrap()
                .into_inner();
            let expected = u64::from(round == 0);
            assert_eq!(
                stats.total_memories, expected,
                "round {round}: agent {agent:?}"
            );
        }
        if round == 0 {
            for agent in &hostile {
                client
                    .clear_all(pb::ClearAllRequest {
                        agent_id: (*agent).into(),
                    })
                    .await
                    .unwrap();
            }
            let mut admin = server.admin().await;
            admin.compact(pb::CompactRequest {}).await.unwrap();
        }
        assert!(server.terminate().success());
    }
    assert!(dir.path().exists());
}
