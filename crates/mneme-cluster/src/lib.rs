//! Mneme clusters: the engine's mutations replicated with [openraft].
//!
//! A write is built into an engine entry on the node that took it (text embedded there,
//! once), wrapped in a [`Proposal`], and appended to the replicated log — by the leader, or
//! forwarded to it over the cluster port. Once a majority holds it durably it is committed,
//! and every node's state machine hands it to [`mneme_engine::Engine::apply_replicated`]:
//! the same `apply` a single node runs, so replicas agree. The proposer's node answers the
//! client with the outcome its own state machine produced.
//!
//! - [`log`]: the raft log (vote, entries, committed index) in a `mneme-storage` store.
//! - [`sm`]: the state machine (the engine) and its snapshots (the engine's agent files).
//! - [`net`]: node-to-node gRPC (entries, votes, resumable checksummed snapshot transfer,
//!   forwarded writes, read index), authenticated by a shared secret.
//! - [`node`]: starting a node, the [`mneme_engine::Replicator`] it gives the engine, and
//!   the admin operations (`init`, `status`, `add-node`, `remove-node`).

#![allow(
    clippy::result_large_err,
    reason = "openraft's error types are large, and they are its API"
)]

pub mod admin;
pub mod log;
pub mod net;
pub mod node;
pub mod sm;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use node::{ClusterConfig, ClusterNode};

#[allow(missing_docs, clippy::all, clippy::pedantic, reason = "generated code")]
pub mod pb {
    tonic::include_proto!("mneme.cluster.v1");
}

/// A node's id (non-zero).
pub type NodeId = u64;

/// Where a node is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Its cluster port (`host:port`).
    pub raft: String,
    /// Its client port (`host:port`), for leader hints.
    pub api: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (api {})", self.raft, self.api)
    }
}

/// What the replicated log carries: an encoded engine entry and who proposed it (so that
/// the proposer's node can hand the outcome of applying it to the waiting request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposing node.
    pub origin: NodeId,
    /// Its sequence number there (unique per node and process run).
    pub seq: u64,
    /// The process run of the proposer (so that a restarted node never takes an old
    /// proposal's outcome for a new one's).
    pub run: u64,
    /// An encoded `mneme_engine::mutation::Entry`.
    pub entry: Vec<u8>,
}

openraft::declare_raft_types!(
    /// Mneme's raft types.
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = sm::SnapshotFiles,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// Errors of this crate (as strings at the gRPC boundary).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Configuration or flags.
    #[error("{0}")]
    Config(String),
    /// I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The raft log store.
    #[error("raft log: {0}")]
    Storage(#[from] mneme_storage::Error),
    /// openraft.
    #[error("raft: {0}")]
    Raft(String),
    /// The engine.
    #[error("engine: {0}")]
    Engine(#[from] mneme_engine::Error),
}

/// bincode (serde) for raft messages on the wire and in the log.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

/// Largest message decoded (a raft batch or a snapshot's metadata).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Decodes what [`encode`] wrote; never panics, never allocates past [`MESSAGE_BYTES_MAX`].
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<MESSAGE_BYTES_MAX>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok(_) => Err("trailing bytes".into()),
        Err(e) => Err(e.to_string()),
    }
}
