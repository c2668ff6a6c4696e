//! Mneme clusters: the engine's mutations replicated with [openraft].
//!
//! A write is built into an engine entry on the node that took it (text embedded there,
//! once), wrapped in a [`Proposal`], and appended to the replicated log — by the leader, or
//! forwarded to it over the cluster port. Once a majority holds it durably it is committed,
//! and every node's state machine hands it to [`mneme_engine::Engine::apply_replicated`]:
//! the same `apply` a single node runs, so replicas agree. The proposer's node answers the
//! client with the outcome its own state machine produced.
//!
//! A node runs one raft group per log it takes part in (see [`GroupId`]): a replicated
//! cluster has one, holding every agent; a sharded one has a metadata group holding the
//! shard map ([`meta`]) and a group per shard, each over the engine's agents of that shard,
//! with the map kept even by [`balance`].
//!
//! - [`log`]: the raft log (vote, entries, committed index) in a `mneme-storage` store.
//! - [`sm`]: the state machine (the engine) and its snapshots (the engine's agent files).
//! - [`net`]: node-to-node gRPC (entries, votes, resumable checksummed snapshot transfer,
//!   forwarded writes, read index), authenticated by a shared secret.
//! - [`node`]: starting a node and its groups, the [`mneme_engine::Replicator`] it gives the
//!   engine (a proposal or read goes to the group of the agent's shard), routing, and the
//!   admin operations (`init`, `status`, `add-node`, `remove-node`).
//! - [`meta`]: the shard map and the metadata group's state machine.
//! - [`balance`]: starting and stopping shard groups as the map says, and planning and
//!   carrying out shard moves.

#![allow(
    clippy::result_large_err,
    reason = "openraft's error types are large, and they are its API"
)]

pub mod admin;
pub mod balance;
pub mod log;
pub mod meta;
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

/// A raft group on a node. A replicated (unsharded) cluster has one, [`DATA_GROUP`], holding
/// every agent. A sharded cluster has the metadata group [`META_GROUP`] (the shard map) and
/// one group per shard: shard `s` is group `s + 1`.
pub type GroupId = u32;

/// The one group of a replicated cluster.
pub const DATA_GROUP: GroupId = 0;

/// The metadata group of a sharded cluster (the same id: a node is one or the other).
pub const META_GROUP: GroupId = 0;

/// Most shards a cluster may have.
pub const SHARDS_MAX: u32 = 4_096;

/// The group of shard `shard`.
pub fn shard_group(shard: u32) -> GroupId {
    shard + 1
}

/// The shard holding `agent` among `shards`: FNV-1a (64-bit) of the agent id, modulo the
/// count. Stable across builds and platforms (the placement of every agent depends on it;
/// it must never change for a cluster's life).
pub fn shard_of(agent: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

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
