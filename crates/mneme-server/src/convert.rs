//! Wire ↔ engine conversions, and the one place engine errors become gRPC statuses.

use std::collections::BTreeMap;

use mneme_engine as engine;
use mneme_engine::MemoryType;
use prost_types::Timestamp;
use tonic::Status;

use crate::pb;

/// Maps every engine error to its status. Exhaustive on purpose: a new variant must be
/// placed here, it cannot fall through to `INTERNAL`.
pub fn status(err: engine::Error) -> Status {
    use mneme_engine::StorageError as Se;
    match err {
        engine::Error::InvalidArgument { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        engine::Error::FailedPrecondition(msg) => Status::failed_precondition(msg),
        engine::Error::Storage(e) => match e {
            Se::Poisoned { .. } | Se::Io { .. } | Se::Locked { .. } => {
                Status::unavailable(format!("store cannot write safely: {e}"))
            }
            Se::Corruption { .. } | Se::Unsupported { .. } => Status::data_loss(e.to_string()),
            Se::TooLarge { .. } => Status::invalid_argument(e.to_string()),
        },
        engine::Error::Embedder { embedder, reason } => {
            Status::unavailable(format!("embedder {embedder} failed: {reason}"))
        }
        engine::Error::CorruptRecord { key, reason } => {
            Status::data_loss(format!("corrupt record {key}: {reason}"))
        }
        engine::Error::Io(e) => Status::internal(format!("I/O: {e}")),
        engine::Error::Unavailable(msg) => Status::unavailable(msg),
    }
}

/// Wire enum → engine type (`None` for unspecified).
pub fn memory_type(field: &str, value: i32) -> Result<Option<MemoryType>, Status> {
    match pb::MemoryType::try_from(value) {
        Ok(pb::MemoryType::Unspecified) => Ok(None),
        Ok(pb::MemoryType::Episodic) => Ok(Some(MemoryType::Episodic)),
        Ok(pb::MemoryType::Semantic) => Ok(Some(MemoryType::Semantic)),
        Ok(pb::MemoryType::Procedural) => Ok(Some(MemoryType::Procedural)),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: unknown memory type {value}"
        ))),
    }
}

fn memory_type_to_wire(t: MemoryType) -> pb::MemoryType {
    match t {
        MemoryType::Episodic => pb::MemoryType::Episodic,
        MemoryType::Semantic => pb::MemoryType::Semantic,
        MemoryType::Procedural => pb::MemoryType::Procedural,
    }
}

fn memory_types(values: &[i32]) -> Result<Vec<MemoryType>, Status> {
    let mut out = Vec::new();
    for v in values {
        match memory_type("memory_types", *v)? {
            Some(t) => out.push(t),
            None => {
                return Err(Status::invalid_argument(
                    "memory_types: MEMORY_TYPE_UNSPECIFIED is not a filter",
                ));
            }
        }
    }
    Ok(out)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    }
}

fn optional_timestamp(ms: i64) -> Option<Timestamp> {
    (ms != 0).then(|| timestamp(ms))
}

fn map(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

/// Engine memory → wire.
pub fn memory(m: engine::Memory) -> pb::Memory {
    pb::Memory {
        id: m.id,
        agent_id: m.agent_id,
        session_id: m.session_id,
        memory_type: memory_type_to_wire(m.memory_type) as i32,
        content: m.content,
        metadata: m.metadata.into_iter().collect(),
        pinned: m.pinned,
        importance: m.importance,
        access_count: m.access_count,
        created_at: Some(timestamp(m.created_at_ms)),
        updated_at: Some(timestamp(m.updated_at_ms)),
        last_accessed_at: optional_timestamp(m.last_accessed_at_ms),
        expires_at: optional_timestamp(m.expires_at_ms),
        vector: m.vector.unwrap_or_default(),
    }
}

/// Wire remember → engine input.
pub fn remember_input(r: pb::RememberRequest) -> Result<engine::RememberInput, Status> {
    Ok(engine::RememberInput {
        memory_type: memory_type("memory_type", r.memory_type)?,
        content: r.content,
        session_id: r.session_id,
        ttl_seconds: r.ttl_seconds,
        vector: (!r.vector.is_empty()).then_some(r.vector),
        metadata: map(r.metadata),
        pinned: r.pinned,
        importance: (r.importance != 0.0).then_some(r.importance),
    })
}

/// Engine remembered → wire.
pub fn remembered(r: engine::Remembered) -> pb::RememberResponse {
    pb::RememberResponse {
        memory: Some(memory(r.memory)),
        deduplicated: r.deduplicated,
    }
}

/// The recall fields shared by Recall and InjectContext (same names, two wire types).
#[derive(Debug, Clone, Default)]
pub struct RecallFields {
    /// Query text.
    pub query: String,
    /// Or a query vector.
    pub vector: Vec<f32>,
    /// Results wanted (0: default).
    pub top_k: u32,
    /// Session scope.
    pub session_id: String,
    /// Drop agent-wide memories.
    pub session_only: bool,
    /// Type filter (wire numbers).
    pub memory_types: Vec<i32>,
    /// Drop results below this confidence.
    pub min_confidence: f32,
    /// Exact-match metadata filter.
    pub metadata: std::collections::HashMap<String, String>,
    /// Return vectors.
    pub include_vectors: bool,
    /// Count the results as used.
    pub mark_used: bool,
}

/// Wire recall fields → engine query.
pub fn recall_query(f: RecallFields) -> Result<engine::RecallQuery, Status> {
    Ok(engine::RecallQuery {
        query: f.query,
        vector: (!f.vector.is_empty()).then_some(f.vector),
        top_k: u64::from(f.top_k),
        scope: engine::Scope {
            session_id: f.session_id,
            session_only: f.session_only,
            memory_types: memory_types(&f.memory_types)?,
            metadata: map(f.metadata),
        },
        min_confidence: f.min_confidence,
        include_vectors: f.include_vectors,
        mark_used: f.mark_used,
    })
}

/// Engine recalled → wire.
pub fn recalled(r: engine::Recalled) -> pb::RecalledMemory {
    pb::RecalledMemory {
        memory: Some(memory(r.memory)),
        similarity: r.similarity,
        confidence: r.confidence,
        scores: Some(pb::ScoreBreakdown {
            similarity: r.scores.similarity,
            recency: r.scores.recency,
            frequency: r.scores.frequency,
            importance: r.scores.importance,
            type_weight: r.scores.type_weight,
            lexical: r.scores.lexical,
        }),
    }
}

/// Wire list → engine query.
pub fn list_query(r: pb::ListRequest) -> Result<engine::ListQuery, Status> {
    Ok(engine::ListQuery {
        scope: engine::Scope {
            session_id: r.session_id,
            session_only: r.session_only,
            memory_types: memory_types(&r.memory_types)?,
            metadata: map(r.metadata),
        },
        page_size: u64::from(r.page_size),
        page_token: r.page_token,
        include_vectors: r.include_vectors,
    })
}

/// Wire update → engine input.
pub fn update_input(r: pb::UpdateRequest) -> engine::UpdateInput {
    let metadata = (r.clear_metadata || !r.metadata.is_empty()).then(|| map(r.metadata));
    engine::UpdateInput {
        content: r.content,
        metadata,
        ttl_seconds: r.ttl_seconds,
        pinned: r.pinned,
        importance: r.importance,
    }
}

/// Engine stats → wire.
pub fn stats(agent_id: String, s: engine::AgentStats) -> pb::StatsResponse {
    pb::StatsResponse {
        agent_id,
        total_memories: s.total_memories,
        by_type: s.by_type.into_iter().collect(),
        by_session: s.by_session.into_iter().collect(),
        dimensions: s.dimensions,
        embedder: s.embedder,
        bytes_on_disk: s.store_bytes_on_disk,
        agent_bytes: s.agent_bytes,
        index_lag: s.index_lag,
    }
}

/// Wire scoring parameters → engine (unset type parameters keep the defaults).
pub fn scoring(p: pb::ScoringParameters) -> engine::ScoringParams {
    let d = engine::ScoringParams::default();
    let t = |tp: Option<pb::TypeParameters>, default: engine::TypeParams| match tp {
        Some(tp) => engine::TypeParams {
            type_weight: tp.type_weight,
            half_life_days: tp.half_life_days,
            decay_floor: tp.decay_floor,
        },
        None => default,
    };
    engine::ScoringParams {
        episodic: t(p.episodic, d.episodic),
        semantic: t(p.semantic, d.semantic),
        procedural: t(p.procedural, d.procedural),
        frequency_saturation: p.frequency_saturation,
        access_half_life_days: p.access_half_life_days,
        recency_weight: p.recency_weight,
        frequency_weight: p.frequency_weight,
        importance_weight: p.importance_weight,
        context_shift: p.context_shift,
        lexical_weight: p.lexical_weight.unwrap_or(d.lexical_weight),
    }
}
