//! A failed fsync under a running server: writes answer UNAVAILABLE from then on, health
//! turns NOT_SERVING, reads keep working. The engine runs over the fault-injecting file
//! system (the real binary cannot be made to fail an fsync on demand); everything else is
//! the real server over real gRPC on 127.0.0.1.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::Duration;

use mneme_engine::embed::{Embedders, HashEmbedder};
use mneme_engine::{Engine, EngineConfig};
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use mneme_storage::sim::{Fault, OpType, SimFs};
use mneme_storage::{Options, Store};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_makes_writes_unavailable_and_health_not_serving() {
    let fs = SimFs::new(11);
    let store = Store::open_with(Arc::new(fs.clone()), "/data", Options::default()).unwrap();
    let config = EngineConfig {
        background: false,
        embedders: Embedders::new(Arc::new(HashEmbedder::new())),
        ..EngineConfig::default()
    };
    let engine = Engine::with_store(store, config).unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mneme_server::run(
        engine,
        mneme_server::ServerConfig::new("127.0.0.1:0".parse().unwrap()),
        async move {
            let _ = stop_rx.await;
        },
        move |bound| {
            let _ = addr_tx.send(bound.grpc);
        },
    ));
    let url = format!("http://{}", addr_rx.await.unwrap());
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = MemoryServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let remember = |content: &str| pb::RememberRequest {
        agent_id: "bot".into(),
        content: content.into(),
        ..Default::default()
    };
    let kept = client
        .remember(remember("before the fault"))
        .await
        .unwrap()
        .into_inner();

    fs.inject(Fault {
        op: Some(OpType::Sync),
        skip: 0,
        crash: false,
    });
    let err = client
        .remember(remember("during the fault"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // The disk works again, but the store must not: no retry-then-acknowledge.
    let err = client
        .remember(remember("after the fault"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    let mut status = ServingStatus::Serving as i32;
    for _ in 0..50 {
        let check = tonic_health::pb::HealthCheckRequest {
            service: "mneme.v1.MemoryService".into(),
        };
        status = health.check(check).await.unwrap().into_inner().status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);

    let got = client
        .get(pb::GetRequest {
            agent_id: "bot".into(),
            id: kept.memory.unwrap().id,
            include_vector: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.content, "before the fault");
    let _ = stop_tx.send(());
    // Closing flushes, which fails on the poisoned store: run reports it.
    assert!(server.await.unwrap().is_err());
}
