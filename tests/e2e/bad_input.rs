//! Bad input gets INVALID_ARGUMENT naming the field (and limit); the server stays up.

use mneme_server::pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::harness::{Server, remember};

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(field),
        "message {:?} should name {field}",
        err.message()
    );
}

/// Sends raw bytes as a request body.
#[derive(Debug, Default, Clone)]
pub struct RawCodec;
#[derive(Debug, Default, Clone)]
pub struct RawEncoder;
#[derive(Debug, Default, Clone)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, _: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[tokio::test]
async fn bad_input_is_refused_by_name_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let mut c = server.client().await;
    let with_vector = |v: Vec<f32>| pb::RememberRequest {
        vector: v,
        ..remember("vecs", "v")
    };
    assert_invalid(
        c.remember(with_vector(vec![1.0, f32::NAN, 0.0, 0.0])).await,
        "vector",
    );
    assert_invalid(
        c.remember(with_vector(vec![f32::INFINITY, 0.0, 0.0, 0.0]))
            .await,
        "vector",
    );
    c.remember(with_vector(vec![1.0, 0.0, 0.0, 0.0]))
        .await
        .unwrap();
    let err = c
        .remember(with_vector(vec![1.0, 0.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("vector")
            && err.message().contains("3 dimensions")
            && err.message().contains('4'),
        "{err:?}"
    );
    assert_invalid(c.remember(remember("", "no agent")).await, "agent_id");
    assert_invalid(
        c.remember(remember("bot", &"x".repeat(10 * 1024 * 1024)))
            .await,
        "content",
    );
    let huge_k = pb::RecallRequest {
        agent_id: "bot".into(),
        query: "q".into(),
        top_k: 1_000_000_000,
        ..Default::default()
    };
    let err = c.recall(huge_k).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("top_k") && err.message().contains("1000"),
        "{err:?}"
    );
    let metadata = (0..10_000)
        .map(|i| (format!("key{i}"), "v".to_owned()))
        .collect();
    assert_invalid(
        c.remember(pb::RememberRequest {
            metadata,
            ..remember("bot", "m")
        })
        .await,
        "metadata",
    );
    assert_invalid(
        c.remember(pb::RememberRequest {
            memory_type: 42,
            ..remember("bot", "t")
        })
        .await,
        "memory_type",
    );
    assert_invalid(
        c.remember(pb::RememberRequest {
            importance: 7.0,
            ..remember("bot", "i")
        })
        .await,
        "importance",
    );
    assert_invalid(
        c.recall(pb::RecallRequest {
            agent_id: "vecs".into(),
            vector: vec![f32::NAN; 4],
            ..Default::default()
        })
        .await,
        "vector",
    );

    // Garbage bytes where a protobuf message belongs.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/mneme.v1.MemoryService/Remember");
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99, 0x01, 0x02];
    let err = grpc
        .unary(tonic::Request::new(garbage), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Still up, still answering, nothing half-stored.
    assert!(server.alive());
    let ok = c
        .remember(remember("bot", "still here"))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.deduplicated);
    let stats = c
        .stats(pb::StatsRequest {
            agent_id: "bot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_memories, 1);
}
