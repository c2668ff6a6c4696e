//! Where the tools' memory lives: an embedded engine, or a remote Mneme server over gRPC.
//! Both answer in the engine's terms, so the tools do not care which.

use std::sync::Arc;

use mneme_engine::{
    Engine, InjectedContext, ListPage, ListQuery, Memory, MemoryType, RecallQuery, Recalled,
    RememberInput, Remembered, ScoreBreakdown,
};
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tonic::transport::Channel;

/// The memory behind the tools.
#[derive(Debug, Clone)]
pub enum Backend {
    /// An engine in this process (a local data directory; no server needed).
    Embedded(Arc<Engine>),
    /// A `mneme serve` reached over gRPC, with an optional API key.
    Remote {
        /// The client.
        client: MemoryServiceClient<Channel>,
        /// API key sent as `authorization: Bearer …`.
        key: Option<String>,
    },
}

/// A failure, already phrased for the model.
pub type Failure = String;

fn status_error(status: tonic::Status) -> Failure {
    format!("{:?}: {}", status.code(), status.message())
}

async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> mneme_engine::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|e| format!("internal error: {e}"))?
        .map_err(|e| e.to_string())
}

fn wire_type(t: Option<MemoryType>) -> i32 {
    match t {
        None => pb::MemoryType::Unspecified as i32,
        Some(MemoryType::Episodic) => pb::MemoryType::Episodic as i32,
        Some(MemoryType::Semantic) => pb::MemoryType::Semantic as i32,
        Some(MemoryType::Procedural) => pb::MemoryType::Procedural as i32,
    }
}

fn from_wire_type(n: i32) -> MemoryType {
    match pb::MemoryType::try_from(n) {
        Ok(pb::MemoryType::Episodic) => MemoryType::Episodic,
        Ok(pb::MemoryType::Procedural) => MemoryType::Procedural,
        _ => MemoryType::Semantic,
    }
}

fn ms(t: Option<prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000)
}

fn memory(m: pb::Memory) -> Memory {
    Memory {
        id: m.id,
        agent_id: m.agent_id,
        session_id: m.session_id,
        memory_type: from_wire_type(m.memory_type),
        content: m.content,
        metadata: m.metadata.into_iter().collect(),
        pinned: m.pinned,
        importance: m.importance,
        access_count: m.access_count,
        created_at_ms: ms(m.created_at),
        updated_at_ms: ms(m.updated_at),
        last_accessed_at_ms: ms(m.last_accessed_at),
        expires_at_ms: ms(m.expires_at),
        vector: None,
    }
}

fn recalled(r: pb::RecalledMemory) -> Recalled {
    let s = r.scores.unwrap_or_default();
    Recalled {
        memory: memory(r.memory.unwrap_or_default()),
        similarity: r.similarity,
        confidence: r.confidence,
        scores: ScoreBreakdown {
            similarity: s.similarity,
            recency: s.recency,
            frequency: s.frequency,
            importance: s.importance,
            type_weight: s.type_weight,
            lexical: s.lexical,
        },
    }
}

impl Backend {
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Failure> {
        let mut request = tonic::Request::new(message);
        if let Self::Remote { key: Some(key), .. } = self {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| "the API key is not valid header text".to_owned())?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// Stores a memory.
    pub async fn remember(&self, agent: &str, input: RememberInput) -> Result<Remembered, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.remember(&agent, input)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::RememberRequest {
                    agent_id: agent.to_owned(),
                    content: input.content,
                    memory_type: wire_type(input.memory_type),
                    session_id: input.session_id,
                    ttl_seconds: input.ttl_seconds,
                    vector: Vec::new(),
                    metadata: input.metadata.into_iter().collect(),
                    pinned: input.pinned,
                    importance: input.importance.unwrap_or(0.0),
                    request_id: String::new(),
                })?;
                let r = client
                    .clone()
                    .remember(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok(Remembered {
                    memory: memory(r.memory.unwrap_or_default()),
                    deduplicated: r.deduplicated,
                })
            }
        }
    }

    /// The most relevant memories.
    pub async fn recall(&self, agent: &str, q: RecallQuery) -> Result<Vec<Recalled>, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.recall(&agent, &q)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::RecallRequest {
                    agent_id: agent.to_owned(),
                    query: q.query,
                    top_k: u32::try_from(q.top_k).unwrap_or(u32::MAX),
                    session_id: q.scope.session_id,
                    session_only: q.scope.session_only,
                    memory_types: q
                        .scope
                        .memory_types
                        .iter()
                        .map(|t| wire_type(Some(*t)))
                        .collect(),
                    min_confidence: q.min_confidence,
                    ..Default::default()
                })?;
                let r = client
                    .clone()
                    .recall(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok(r.memories.into_iter().map(recalled).collect())
            }
        }
    }

    /// A context block.
    pub async fn context(
        &self,
        agent: &str,
        q: RecallQuery,
        max_tokens: u64,
    ) -> Result<InjectedContext, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.inject_context(&agent, &q, max_tokens)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::InjectContextRequest {
                    agent_id: agent.to_owned(),
                    query: q.query,
                    top_k: u32::try_from(q.top_k).unwrap_or(u32::MAX),
                    session_id: q.scope.session_id,
                    session_only: q.scope.session_only,
                    max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
                    ..Default::default()
                })?;
                let r = client
                    .clone()
                    .inject_context(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok(InjectedContext {
                    context: r.context,
                    memories: r.memories.into_iter().map(recalled).collect(),
                    truncated: r.truncated,
                })
            }
        }
    }

    /// Deletes memories by id.
    pub async fn forget(&self, agent: &str, ids: Vec<String>) -> Result<u64, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.forget(&agent, &ids)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::ForgetRequest {
                    agent_id: agent.to_owned(),
                    ids,
                })?;
                Ok(client
                    .clone()
                    .forget(request)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .forgotten)
            }
        }
    }

    /// Counts memories as used (the feedback that reinforces them).
    pub async fn mark_used(&self, agent: &str, ids: Vec<String>) -> Result<u64, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.mark_used(&agent, &ids)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::MarkUsedRequest {
                    agent_id: agent.to_owned(),
                    ids,
                })?;
                Ok(client
                    .clone()
                    .mark_used(request)
                    .await
                    .map_err(status_error)?
                    .into_inner()
                    .marked)
            }
        }
    }

    /// A page of memories.
    pub async fn list(&self, agent: &str, q: ListQuery) -> Result<ListPage, Failure> {
        match self {
            Self::Embedded(engine) => {
                let agent = agent.to_owned();
                blocking(engine, move |e| e.list(&agent, &q)).await
            }
            Self::Remote { client, .. } => {
                let request = self.request(pb::ListRequest {
                    agent_id: agent.to_owned(),
                    page_size: u32::try_from(q.page_size).unwrap_or(u32::MAX),
                    page_token: q.page_token,
                    session_id: q.scope.session_id,
                    session_only: q.scope.session_only,
                    memory_types: q
                        .scope
                        .memory_types
                        .iter()
                        .map(|t| wire_type(Some(*t)))
                        .collect(),
                    metadata: q.scope.metadata.into_iter().collect(),
                    include_vectors: false,
                })?;
                let r = client
                    .clone()
                    .list(request)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                Ok(ListPage {
                    memories: r.memories.into_iter().map(memory).collect(),
                    next_page_token: r.next_page_token,
                })
            }
        }
    }
}
