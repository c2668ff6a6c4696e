//! API keys: every RPC refuses a missing key, a wrong key, and a key for agent A used on
//! agent B — and says nothing about B in the refusal.

use mneme_server::pb;
use mneme_server::pb::admin_service_client::AdminServiceClient;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::harness::Server;

const RPCS: [&str; 15] = [
    "Remember",
    "RememberBatch",
    "Recall",
    "InjectContext",
    "Get",
    "List",
    "Update",
    "Forget",
    "ForgetSession",
    "ClearAll",
    "Stats",
    "Export",
    "Import",
    "ConfigureAgent",
    "Compact",
];

fn req<T>(key: Option<&str>, message: T) -> Request<T> {
    match key {
        Some(key) => crate::harness::keyed(key, message),
        None => Request::new(message),
    }
}

async fn call(
    rpc: &str,
    c: &mut MemoryServiceClient<Channel>,
    a: &mut AdminServiceClient<Channel>,
    key: Option<&str>,
    agent: &str,
    id: &str,
) -> Result<(), Status> {
    let agent_id = agent.to_owned();
    match rpc {
        "Remember" => c
            .remember(req(
                key,
                pb::RememberRequest {
                    agent_id,
                    content: "x".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RememberBatch" => c
            .remember_batch(req(
                key,
                pb::RememberBatchRequest {
                    agent_id,
                    request_id: String::new(),
                    items: vec![pb::RememberRequest {
                        content: "y".into(),
                        ..Default::default()
                    }],
                },
            ))
            .await
            .map(drop),
        "Recall" => c
            .recall(req(
                key,
                pb::RecallRequest {
                    agent_id,
                    query: "secret".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "InjectContext" => c
            .inject_context(req(
                key,
                pb::InjectContextRequest {
                    agent_id,
                    query: "secret".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "Get" => c
            .get(req(
                key,
                pb::GetRequest {
                    agent_id,
                    id: id.into(),
                    include_vector: false,
                },
            ))
            .await
            .map(drop),
        "List" => c
            .list(req(
                key,
                pb::ListRequest {
                    agent_id,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "Update" => c
            .update(req(
                key,
                pb::UpdateRequest {
                    agent_id,
                    id: id.into(),
                    pinned: Some(true),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "Forget" => c
            .forget(req(
                key,
                pb::ForgetRequest {
                    agent_id,
                    ids: vec![id.into()],
                },
            ))
            .await
            .map(drop),
        "ForgetSession" => c
            .forget_session(req(
                key,
                pb::ForgetSessionRequest {
                    agent_id,
                    session_id: "s".into(),
                },
            ))
            .await
            .map(drop),
        "ClearAll" => c
            .clear_all(req(key, pb::ClearAllRequest { agent_id }))
            .await
            .map(drop),
        "Stats" => c
            .stats(req(key, pb::StatsRequest { agent_id }))
            .await
            .map(drop),
        "Export" => {
            let mut stream = a
                .export(req(key, pb::ExportRequest { agent_id }))
                .await?
                .into_inner();
            while let Some(chunk) = stream.next().await {
                chunk?;
            }
            Ok(())
        }
        "Import" => {
            let chunks = vec![pb::ImportChunk {
                agent_id,
                data: b"{}".to_vec(),
            }];
            a.import(req(key, tokio_stream::iter(chunks)))
                .await
                .map(drop)
        }
        "ConfigureAgent" => a
            .configure_agent(req(
                key,
                pb::ConfigureAgentRequest {
                    agent_id,
                    embedder: "hash-v1".into(),
                    scoring: None,
                },
            ))
            .await
            .map(drop),
        "Compact" => a.compact(req(key, pb::CompactRequest {})).await.map(drop),
        other => panic!("unknown rpc {other}"),
    }
}

#[tokio::test]
async fn every_rpc_refuses_missing_wrong_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"a\"\nsha256 = \"{}\"\nagents = [\"agent-a\"]\n\n[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nadmin = true\n",
            mneme_server::hash_key("key-for-a"),
            mneme_server::hash_key("admin-key")
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--keys-file", keys.to_str().unwrap()]);
    let mut c = server.client().await;
    let mut a = server.admin().await;
    let b_memory = c
        .remember(crate::harness::keyed(
            "admin-key",
            pb::RememberRequest {
                agent_id: "agent-b".into(),
                content: "B's secret launch date".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .memory
        .unwrap();
    for rpc in RPCS {
        for (key, expected) in [
            (None, Code::Unauthenticated),
            (Some("wrong-key"), Code::Unauthenticated),
            (Some("key-for-a"), Code::PermissionDenied),
        ] {
            let err = call(rpc, &mut c, &mut a, key, "agent-b", &b_memory.id)
                .await
                .unwrap_err();
            assert_eq!(err.code(), expected, "{rpc} with {key:?}: {err:?}");
            let msg = err.message();
            assert!(
                !msg.contains("secret") && !msg.contains(&b_memory.id) && !msg.contains("agent-a"),
                "{rpc}: {msg}"
            );
        }
    }
    // Key A works on agent A for everything but the admin-only Compact.
    for rpc in RPCS {
        let result = call(
            rpc,
            &mut c,
            &mut a,
            Some("key-for-a"),
            "agent-a",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        )
        .await;
        match rpc {
            "Compact" => assert_eq!(result.unwrap_err().code(), Code::PermissionDenied),
            "Get" | "Update" => assert_eq!(result.unwrap_err().code(), Code::NotFound),
            "Export" | "Import" => {
                if let Err(e) = result {
                    assert!(
                        matches!(e.code(), Code::InvalidArgument | Code::FailedPrecondition),
                        "{rpc}: {e:?}"
                    );
                }
            }
            _ => assert!(result.is_ok(), "{rpc}: {result:?}"),
        }
    }
    // B's memory is untouched by everything above.
    let still = c
        .get(crate::harness::keyed(
            "admin-key",
            pb::GetRequest {
                agent_id: "agent-b".into(),
                id: b_memory.id.clone(),
                include_vector: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still.content, "B's secret launch date");
    assert!(!still.pinned);
}

#[tokio::test]
async fn without_keys_a_public_address_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mneme"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
}
