//! Replicated mode: the engine as a state machine under a consensus log it does not own.
//!
//! With [`crate::EngineConfig::replicated`], the engine writes nothing to its own log. Every
//! entry a write builds goes to the [`Replicator`] (the cluster), which orders it in the
//! replicated log and, once a majority holds it durably, hands it back to every replica's
//! [`Engine::apply_replicated`] at its log index — the same `apply` as a single node's, so
//! replicas agree bit for bit. The engine's durable state is its agent snapshots: each
//! records the index it reflects, and an entry at or below an agent's index is skipped, so
//! the cluster may re-apply its log from any earlier point after a restart.
//!
//! Snapshots move between replicas as agent snapshot files ([`Engine::snapshot_files`] on
//! the sender, [`Engine::install_agents`] on the receiver).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::agent::Agent;
use crate::apply::Outcome;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before it started (read index on the leader).
    #[default]
    Linearizable,
    /// This node's state, if it heard from the leader recently enough (a follower read,
    /// for throughput; may miss the latest writes).
    Stale,
}

/// The consensus log under a replicated engine (implemented by `mneme-cluster`).
pub trait Replicator: Send + Sync + std::fmt::Debug {
    /// Orders `entry` (an encoded [`crate::mutation::Entry`] of `agent`) in the replicated
    /// log that holds the agent and returns the outcome of applying it on this node, once a
    /// majority has it durably. Errors: [`Error::Unavailable`] when there is no leader to
    /// take it (retryable).
    fn propose(&self, agent: &str, entry: Vec<u8>) -> Result<Outcome>;

    /// Waits until this node may serve a read of `agent` of the given consistency.
    fn read_barrier(&self, agent: &str, consistency: ReadConsistency) -> Result<()>;

    /// True while this node leads the log holding `agent` (it alone sweeps the agent's
    /// expired memories).
    fn leads(&self, agent: &str) -> bool;

    /// True while this node holds a replica of `agent` (in a sharded cluster, its shard
    /// may move away, and the copy here is then dropped).
    fn holds(&self, agent: &str) -> bool;
}

/// One agent's snapshot file, as a replica sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFile {
    /// The agent.
    pub agent: String,
    /// The log index it reflects.
    pub index: u64,
    /// Where it is.
    pub path: PathBuf,
    /// Its length.
    pub bytes: u64,
    /// CRC-32 of its bytes.
    pub crc: u32,
}

impl Engine {
    /// Attaches the consensus log (once; replicated engines refuse writes before this).
    pub fn set_replicator(&self, replicator: Arc<dyn Replicator>) -> Result<()> {
        if !self.inner.config.replicated {
            return Err(Error::FailedPrecondition(
                "this engine is not in replicated mode".into(),
            ));
        }
        self.inner
            .replicator
            .set(replicator)
            .map_err(|_| Error::FailedPrecondition("a replicator is already attached".into()))
    }

    /// Applies a committed entry of the replicated log at `index`; returns what it did. An
    /// entry that does not decode (it cannot: proposers validate) changes nothing.
    pub fn apply_replicated(&self, index: u64, payload: &[u8]) -> Outcome {
        match crate::mutation::decode(payload) {
            Ok(entry) => self.inner.apply(index, &entry),
            Err(reason) => {
                self.note_applied(index);
                Outcome::Rejected(format!("undecodable entry: {reason}"))
            }
        }
    }

    /// Records that the log entry at `index` (no mutation: a leader's blank entry, a
    /// membership change) has been applied.
    pub fn note_applied(&self, index: u64) {
        self.inner.applied_lsn.fetch_max(index, Ordering::SeqCst);
    }

    /// True when this engine's writes go through a replicated log (its reads may wait on
    /// [`Engine::read_barrier`]).
    pub fn is_replicated(&self) -> bool {
        self.inner.config.replicated
    }

    /// Waits until this node may serve a read of `agent` of `consistency` (at once on a
    /// single node).
    pub fn read_barrier(&self, agent: &str, consistency: ReadConsistency) -> Result<()> {
        if !self.inner.config.replicated {
            return Ok(());
        }
        match self.inner.replicator.get() {
            Some(r) => r.read_barrier(agent, consistency),
            None => Err(Error::Unavailable("the cluster is starting".into())),
        }
    }

    /// Runs `read` (a read of `agent`) after the read barrier of `consistency`, and serves
    /// its result only if this node still holds the agent afterwards: a read that raced
    /// with its shard moving away (and the copy here being dropped) is refused as
    /// retryable rather than answered from an emptied agent. At once on a single node.
    pub fn consistent_read<T>(
        &self,
        agent: &str,
        consistency: ReadConsistency,
        read: impl FnOnce(&Engine) -> Result<T>,
    ) -> Result<T> {
        self.read_barrier(agent, consistency)?;
        let out = read(self)?;
        if let Some(r) = self.inner.replicator.get()
            && !r.holds(agent)
        {
            return Err(Error::Unavailable(
                "the agent's shard moved away from this node during the read; retry".into(),
            ));
        }
        Ok(out)
    }

    /// The live agent snapshot files (after a [`Engine::checkpoint`], they reflect every
    /// entry applied before it began).
    pub fn snapshot_files(&self) -> Vec<AgentFile> {
        self.snapshot_files_of(&|_| true)
    }

    /// The live snapshot files of the agents `part` selects (one shard's).
    pub fn snapshot_files_of(&self, part: &dyn Fn(&str) -> bool) -> Vec<AgentFile> {
        let store = &self.inner.store;
        store
            .snapshots()
            .into_iter()
            .filter_map(|s| {
                let agent = crate::snapshot::agent_of_tag(&s.tag)?.to_owned();
                if !part(&agent) {
                    return None;
                }
                Some(AgentFile {
                    agent,
                    index: s.lsn,
                    path: store
                        .dir()
                        .join(mneme_storage::snapshot_file_name(s.file_id)),
                    bytes: s.bytes,
                    crc: s.crc,
                })
            })
            .collect()
    }

    /// Replaces every agent with the ones in `files` (a leader's snapshot reflecting the
    /// log up to `index`), durably: the files are checked, copied into this engine's
    /// store and loaded; agents they do not name are dropped. The caller stops applying
    /// while this runs.
    pub fn install_agents(&self, files: &[AgentFile], index: u64) -> Result<()> {
        self.install_agents_of(files, index, &|_| true)
    }

    /// Like [`Engine::install_agents`], for the agents `part` selects only (one shard's,
    /// each replicated by its own log): those not in `files` are dropped, every other
    /// agent stays as it is. With no files, drops the part (a replica moved away).
    pub fn install_agents_of(
        &self,
        files: &[AgentFile],
        index: u64,
        part: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let inner = &self.inner;
        let _one = inner.checkpointing.lock();
        let mut written = Vec::with_capacity(files.len());
        let mut loaded: HashMap<String, Arc<Agent>> = HashMap::with_capacity(files.len());
        for f in files {
            crate::limits::check_agent_id(&f.agent)?;
            if !part(&f.agent) {
                return Err(Error::invalid(
                    "snapshot",
                    format!(
                        "agent {} does not belong to the part installed",
                        crate::limits::echo(&f.agent)
                    ),
                ));
            }
            let bytes = std::fs::read(&f.path)?;
            let corrupt = |offset: u64, reason: String| {
                Error::Storage(mneme_storage::Error::Corruption {
                    path: f.path.clone(),
                    offset,
                    reason,
                })
            };
            if bytes.len() as u64 != f.bytes || crc32fast::hash(&bytes) != f.crc {
                return Err(corrupt(
                    0,
                    "length or checksum differs from the sender's".into(),
                ));
            }
            let agent = crate::snapshot::load(&bytes, &f.agent, f.index, inner.config.index)
                .map_err(|(offset, reason)| corrupt(offset, reason))?;
            let mut out = inner
                .store
                .begin_snapshot(&crate::snapshot::tag(&f.agent), f.index)?;
            out.write_all(&bytes)?;
            written.push(out.finish()?);
            let a = Agent::new(&agent.agent, agent.state.config.clone(), inner.config.index);
            *a.state.write() = agent.state;
            *a.index.write() = agent.index;
            a.graph_dirty.store(true, Ordering::Relaxed);
            loaded.insert(f.agent.clone(), Arc::new(a));
        }
        let dropped: Vec<String> = inner
            .agents
            .read()
            .keys()
            .filter(|id| part(id) && !loaded.contains_key(*id))
            .cloned()
            .collect();
        if !dropped.is_empty() && !files.is_empty() {
            tracing::warn!(
                agents = dropped.len(),
                "the installed snapshot lacks agents this replica had"
            );
        }
        let covers = |tag: &[u8]| crate::snapshot::agent_of_tag(tag).is_some_and(part);
        inner.store.install_replacing(written, &covers, index + 1)?;
        let mut agents = inner.agents.write();
        agents.retain(|id, _| !part(id));
        agents.extend(loaded);
        drop(agents);
        inner.applied_lsn.fetch_max(index, Ordering::SeqCst);
        Ok(())
    }
}
