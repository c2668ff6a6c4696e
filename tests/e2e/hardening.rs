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
                    request_id: String::new(),
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

fn keys_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("keys.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn key_entry(name: &str, key: &str, scope: &str) -> String {
    format!(
        "[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{scope}\n\n",
        mneme_server::hash_key(key)
    )
}

/// Hundreds of Export streams that are never read neither stall the server nor take every
/// permit: a tenant gets at most its share (the rest are refused at once), other tenants
/// are answered, and stalled streams give their permits back after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_export_streams_neither_stall_the_server_nor_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that no stalled stream times out (and frees its permit) while the loop
    // below opens 600 of them on a slow, busy machine.
    let server = Server::start(dir.path(), &["--stream-idle-timeout-ms", "8000"]);
    let mut c = server.client().await;
    for chunk in 0..4 {
        let items = (0..500)
            .map(|i| pb::RememberRequest {
                content: format!("exported memory {chunk} {i} {}", "padding ".repeat(20)),
                ..Default::default()
            })
            .collect();
        c.remember_batch(pb::RememberBatchRequest {
            agent_id: "hoarder".into(),
            request_id: String::new(),
            items,
        })
        .await
        .unwrap();
    }
    c.remember(remember("bystander", "a fact")).await.unwrap();
    // One stalled stream on a connection of its own (read at the end: on a shared
    // connection, the other unread streams would hold the connection's flow-control window).
    let mut solo_admin = server.admin().await;
    let mut solo = solo_admin
        .export(pb::ExportRequest {
            agent_id: "hoarder".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 1..600 {
        // A few connections, many HTTP/2 streams each; nothing is ever read.
        if held.is_empty() || i % 100 == 0 {
            held.push((server.admin().await, Vec::new()));
        }
        let (admin, streams) = held.last_mut().unwrap();
        match admin
            .export(pb::ExportRequest {
                agent_id: "hoarder".into(),
            })
            .await
        {
            Ok(stream) => streams.push(stream),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }
    let open: usize = held.iter().map(|(_, s)| s.len()).sum();
    assert!(
        open < mneme_server::CONCURRENT_REQUESTS_PER_TENANT_MAX,
        "{open} streams open"
    );
    assert_eq!(open + refused, 599);
    // Another tenant is answered promptly.
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        c.recall(crate::harness::recall("bystander", "fact")),
    )
    .await
    .expect("a bystander's call was not answered: the server is stalled")
    .unwrap();
    assert_eq!(answer.into_inner().memories.len(), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // After the idle timeout the stalled streams are gone, and so are their permits.
    tokio::time::sleep(std::time::Duration::from_millis(9_000)).await;
    let mut fresh = server.admin().await;
    let mut stream = fresh
        .export(pb::ExportRequest {
            agent_id: "hoarder".into(),
        })
        .await
        .expect("permits came back after the idle timeout")
        .into_inner();
    let mut bytes = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes += chunk.data.len();
    }

    assert!(bytes > 2_000 * 100, "{bytes}");
    // A stalled stream ends with an error, not as if the export were complete.
    let mut outcome = Ok(());
    while let Some(item) = solo.message().await.transpose() {
        if let Err(status) = item {
            outcome = Err(status);
            break;
        }
    }
    let status = outcome.expect_err("a stalled export ended as if complete");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
}

/// Ids are validated, and no client value comes back whole in a message.
#[tokio::test]
async fn client_values_are_validated_and_never_echoed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    let m = c
        .remember(remember("bot", "something"))
        .await
        .unwrap()
        .into_inner()
        .memory
        .unwrap();
    let huge = "X".repeat(1_000_000);
    let get = c
        .get(pb::GetRequest {
            agent_id: "bot".into(),
            id: huge.clone(),
            include_vector: false,
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), tonic::Code::InvalidArgument, "{get:?}");
    assert!(
        get.message().len() < 300,
        "{} bytes echoed",
        get.message().len()
    );
    let update = c
        .update(pb::UpdateRequest {
            agent_id: "bot".into(),
            id: huge.clone(),
            pinned: Some(true),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(update.code(), tonic::Code::InvalidArgument, "{update:?}");
    assert!(update.message().len() < 300);
    let forget = c
        .forget(pb::ForgetRequest {
            agent_id: "bot".into(),
            ids: vec![huge],
        })
        .await
        .unwrap_err();
    assert_eq!(forget.code(), tonic::Code::InvalidArgument);
    assert!(forget.message().len() < 300);
    // A well-formed id that does not exist is NOT_FOUND.
    let missing = c
        .get(pb::GetRequest {
            agent_id: "bot".into(),
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            include_vector: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    c.get(pb::GetRequest {
        agent_id: "bot".into(),
        id: m.id,
        include_vector: false,
    })
    .await
    .unwrap();
}

/// Over-limit messages are RESOURCE_EXHAUSTED; an undecodable health check is
/// INVALID_ARGUMENT like every other service.
#[tokio::test]
async fn over_limit_messages_and_undecodable_health_checks_get_the_contract_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    let big = c
        .remember(remember("bot", &"y".repeat(17 * 1024 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let err = grpc
        .unary(
            tonic::Request::new(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
            path,
            crate::bad_input::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // And the server is fine.
    c.remember(remember("bot", "after")).await.unwrap();
}

/// Finite vectors whose squared norm overflows or underflows f32 are normalised, not
/// refused; only zero and non-finite vectors are, with the right message.
#[tokio::test]
async fn extreme_but_finite_vectors_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    for (i, x) in [3e38f32, 1e-25, -3e38, f32::MIN_POSITIVE]
        .into_iter()
        .enumerate()
    {
        let mut v = vec![x; 384];
        v[i] = x * 0.5;
        c.remember(pb::RememberRequest {
            vector: v,
            ..remember("vec", &format!("extreme {x}"))
        })
        .await
        .unwrap_or_else(|e| panic!("{x}: {e:?}"));
    }
    let hits = c
        .recall(pb::RecallRequest {
            agent_id: "vec".into(),
            vector: vec![3e38; 384],
            top_k: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .memories;
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.similarity.is_finite()));
    let zero = c
        .remember(pb::RememberRequest {
            vector: vec![0.0; 384],
            ..remember("vec", "zero")
        })
        .await
        .unwrap_err();
    assert!(zero.message().contains("all zeros"), "{zero:?}");
    let nan = c
        .remember(pb::RememberRequest {
            vector: vec![f32::NAN; 384],
            ..remember("vec", "nan")
        })
        .await
        .unwrap_err();
    assert!(nan.message().contains("NaN"), "{nan:?}");
}

/// The metrics port follows the same bind rule as gRPC, and shows agent ids only to an
/// admin key.
#[tokio::test]
async fn metrics_need_keys_off_loopback_and_hide_tenants_from_non_admins() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = crate::harness::refused(
        &dir.path().join("data"),
        &["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"],
    );
    assert!(
        stderr.contains("metrics") && stderr.contains("keys"),
        "{stderr}"
    );
    let keys = keys_file(
        dir.path(),
        &(key_entry("ops", "admin-key", "admin = true")
            + &key_entry("app", "app-key", "agents = [\"secret-tenant\"]")),
    );
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--keys-file",
            keys.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut c = server.client().await;
    c.remember(crate::harness::keyed(
        "app-key",
        remember("secret-tenant", "hello"),
    ))
    .await
    .unwrap();
    let addr = server.metrics.unwrap();
    let get = |auth: Option<&'static str>| {
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let header = auth.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{header}\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .join()
        .unwrap()
    };
    for auth in [None, Some("app-key"), Some("wrong")] {
        let body = get(auth);
        assert!(body.contains("\nmneme_memories 1\n"), "{body}");
        assert!(
            !body.contains("secret-tenant"),
            "{auth:?} saw a tenant name"
        );
    }
    let admin = get(Some("admin-key"));
    assert!(
        admin.contains("mneme_agent_memories{agent=\"secret-tenant\"} 1"),
        "{admin}"
    );
}

/// The keys file refuses what would grant more than meant, and SIGHUP reloads it: a key
/// is revoked without a restart; a broken file on reload changes nothing.
#[tokio::test]
async fn keys_files_are_strict_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (body, why) in [
        (
            key_entry("a", "k1", "admin = true") + &key_entry("b", "k1", "admin = true"),
            "twice",
        ),
        (key_entry("a", "", "admin = true"), "empty key"),
        (
            key_entry("a", "k1", "agent_prefixes = [\"\"]"),
            "empty agent prefix",
        ),
        (key_entry("a", "k1", ""), "no scope"),
        (
            key_entry("a", "k1", "admin = true") + &key_entry("a", "k2", "admin = true"),
            "twice",
        ),
        (key_entry("a", "k1", "agents = [\"../x\"]"), "agents"),
    ] {
        let keys = keys_file(dir.path(), &body);
        let stderr = crate::harness::refused(&data, &["--keys-file", keys.to_str().unwrap()]);
        assert!(stderr.contains(why), "{why}: {stderr}");
    }
    let keys = keys_file(
        dir.path(),
        &(key_entry("old", "old-key", "agents = [\"bot\"]")
            + &key_entry("new", "new-key", "agent_prefixes = [\"bo\"]")),
    );
    let server = Server::start(&data, &["--keys-file", keys.to_str().unwrap()]);
    let mut c = server.client().await;
    for key in ["old-key", "new-key", "old-key"] {
        c.remember(crate::harness::keyed(key, remember("bot", key)))
            .await
            .unwrap();
    }
    let hup = |pid: u32| {
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    // Revoke "old".
    keys_file(
        dir.path(),
        &key_entry("new", "new-key", "agent_prefixes = [\"bo\"]"),
    );
    hup(server.pid());
    let err = c
        .remember(crate::harness::keyed("old-key", remember("bot", "late")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.remember(crate::harness::keyed("new-key", remember("bot", "still")))
        .await
        .unwrap();
    // A broken file on reload is refused; the keys in force stay.
    keys_file(dir.path(), "this is not toml [[");
    hup(server.pid());
    c.remember(crate::harness::keyed(
        "new-key",
        remember("bot", "and still"),
    ))
    .await
    .unwrap();
}

/// A panic while applying a logged write ends the process instead of leaving memory and
/// log disagreeing; the restart rebuilds memory from the log, the panicked write included
/// (it was durable before it was applied).
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_panic_while_applying_aborts_and_the_log_restores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = {
        // Set for the child only.
        temp_env_server(dir.path())
    };
    let mut c = server.client().await;
    c.remember(remember("bot", "before")).await.unwrap();
    let err = c.remember(remember("bot", "BOOM")).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown
        ),
        "{err:?}"
    );
    let status = server
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the server went on serving after a panic");
    assert!(!status.success());
    let server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    let stats = c
        .stats(pb::StatsRequest {
            agent_id: "bot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_memories, 2);
}

#[cfg(feature = "fault-injection")]
fn temp_env_server(dir: &std::path::Path) -> Server {
    Server::start_with_env(dir, &[], &[("MNEME_FAULT_PANIC_ON_CONTENT", "BOOM")])
}
