//! The engine's public data types: memories, what callers send, what they get back.

use std::collections::BTreeMap;

pub use mneme_scoring::{MemoryType, ScoreBreakdown};

/// One stored memory, as returned to callers.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Server-assigned ULID, unique across agents and nodes.
    pub id: String,
    /// Owning agent.
    pub agent_id: String,
    /// Session (empty: agent-wide).
    pub session_id: String,
    /// Type.
    pub memory_type: MemoryType,
    /// Text.
    pub content: String,
    /// Free-form string metadata.
    pub metadata: BTreeMap<String, String>,
    /// Pinned memories never decay.
    pub pinned: bool,
    /// Importance in [0, 1].
    pub importance: f32,
    /// Times returned by recall (or reinforced by a duplicate).
    pub access_count: u64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: i64,
    /// Last content/metadata change, ms since the epoch.
    pub updated_at_ms: i64,
    /// Last recall that returned it (0: never).
    pub last_accessed_at_ms: i64,
    /// Expiry (0: never).
    pub expires_at_ms: i64,
    /// Its unit vector, when asked for.
    pub vector: Option<Vec<f32>>,
}

/// What to remember.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RememberInput {
    /// Text (required, ≤ 64 KiB).
    pub content: String,
    /// Type (`None`: semantic).
    pub memory_type: Option<MemoryType>,
    /// Session (empty: agent-wide).
    pub session_id: String,
    /// Seconds until it expires (0: never).
    pub ttl_seconds: u64,
    /// A vector to store instead of embedding `content`.
    pub vector: Option<Vec<f32>>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Never decays.
    pub pinned: bool,
    /// Importance in [0, 1] (`None`: 0.5).
    pub importance: Option<f32>,
}

/// Result of a remember.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    /// The stored (or reinforced) memory.
    pub memory: Memory,
    /// True when a near-identical memory existed and was reinforced instead.
    pub deduplicated: bool,
}

/// Which memories a read may see; shared by recall, inject-context and list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// A session: it sees its own memories plus agent-wide ones (never another session's).
    pub session_id: String,
    /// With a session: drop the agent-wide memories.
    pub session_only: bool,
    /// Only these types (empty: all).
    pub memory_types: Vec<MemoryType>,
    /// Exact-match metadata filter: every pair must be present.
    pub metadata: BTreeMap<String, String>,
}

/// A recall request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecallQuery {
    /// Query text (embedded with the agent's embedder).
    pub query: String,
    /// Or a query vector (for agents that store client-supplied vectors).
    pub vector: Option<Vec<f32>>,
    /// Results wanted (0: 5).
    pub top_k: u64,
    /// Visibility.
    pub scope: Scope,
    /// Drop results below this confidence.
    pub min_confidence: f32,
    /// Return vectors too.
    pub include_vectors: bool,
    /// Count the results as used (reinforcing them), as [`crate::Engine::mark_used`] does.
    pub mark_used: bool,
}

/// One recall result.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// The memory.
    pub memory: Memory,
    /// Raw cosine similarity to the query.
    pub similarity: f32,
    /// Calibrated confidence in [0, 1]; results are ranked by it.
    pub confidence: f32,
    /// Why.
    pub scores: ScoreBreakdown,
}

/// A rendered context block.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedContext {
    /// Ready-to-paste text.
    pub context: String,
    /// The memories it contains, ranked.
    pub memories: Vec<Recalled>,
    /// True when memories were left out to stay within the budget.
    pub truncated: bool,
}

/// A list request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Visibility.
    pub scope: Scope,
    /// Page size (0: 50).
    pub page_size: u64,
    /// Opaque token from the previous page (empty: first page).
    pub page_token: String,
    /// Return vectors too.
    pub include_vectors: bool,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// Memories in creation order.
    pub memories: Vec<Memory>,
    /// Token for the next page (empty: no more).
    pub next_page_token: String,
}

/// Changes to one memory; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateInput {
    /// New content (re-embedded).
    pub content: Option<String>,
    /// New metadata (replaces the map).
    pub metadata: Option<BTreeMap<String, String>>,
    /// New time to live from now (0: never expires).
    pub ttl_seconds: Option<u64>,
    /// Pin or unpin.
    pub pinned: Option<bool>,
    /// New importance.
    pub importance: Option<f32>,
}

/// Counts and sizes of one agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentStats {
    /// Live (unexpired) memories.
    pub total_memories: u64,
    /// Count per type.
    pub by_type: BTreeMap<String, u64>,
    /// Count per session (agent-wide ones under "").
    pub by_session: BTreeMap<String, u64>,
    /// Vector dimension (0 before the first memory).
    pub dimensions: u32,
    /// Embedder id.
    pub embedder: String,
    /// Approximate bytes of this agent's records on disk.
    pub agent_bytes: u64,
    /// Bytes of the whole store on disk.
    pub store_bytes_on_disk: u64,
    /// Vectors waiting to be absorbed into the graph index.
    pub index_lag: u64,
}
