//! An agent's complete state, as plain data: for audits, and for tests that check that two
//! engines which applied the same log (a recovered one and a replayed one, or two replicas)
//! hold exactly the same state, index keys and vector bits included.

use crate::codec::{AccessRecord, AgentConfigRecord, MemoryRecord};
use crate::engine::Engine;

/// One agent's state.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDump {
    /// Agent id.
    pub agent: String,
    /// Its configuration.
    pub config: AgentConfigRecord,
    /// The key its next new memory gets.
    pub next_key: u64,
    /// Every memory (expired ones not yet swept included), by key.
    pub memories: Vec<MemoryDump>,
}

/// One memory's state.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryDump {
    /// Index key.
    pub key: u64,
    /// Id.
    pub id: String,
    /// Record.
    pub record: MemoryRecord,
    /// Counters.
    pub access: AccessRecord,
    /// The stored vector's bits (compared exactly).
    pub vector_bits: Vec<u32>,
}

/// Decodes an agent snapshot file's bytes (as the store names it: for `agent`, at `lsn`)
/// into the state it holds, checking everything (the decoder recovery uses). A malformed
/// file is `Err((offset, reason))`, never a panic.
pub fn read_agent_snapshot(
    bytes: &[u8],
    agent: &str,
    lsn: u64,
) -> Result<AgentDump, (u64, String)> {
    let loaded = crate::snapshot::load(bytes, agent, lsn, mneme_index::IndexConfig::default())?;
    let mut memories: Vec<MemoryDump> = loaded
        .state
        .memories
        .iter()
        .map(|(key, m)| MemoryDump {
            key: *key,
            id: m.id.clone(),
            record: m.record.clone(),
            access: m.access,
            vector_bits: loaded
                .index
                .get(*key)
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .unwrap_or_default(),
        })
        .collect();
    memories.sort_by_key(|m| m.key);
    Ok(AgentDump {
        agent: loaded.agent,
        config: loaded.state.config.to_record(),
        next_key: loaded.state.next_key,
        memories,
    })
}

impl Engine {
    /// Every agent's complete state, sorted by agent id and key. Holds each agent's read
    /// locks while copying it: not for hot paths.
    pub fn dump(&self) -> Vec<AgentDump> {
        let mut agents = self.inner.agents_snapshot();
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        agents
            .iter()
            .map(|agent| {
                let state = agent.state.read();
                let index = agent.index.read();
                let mut memories: Vec<MemoryDump> = state
                    .memories
                    .iter()
                    .map(|(key, m)| MemoryDump {
                        key: *key,
                        id: m.id.clone(),
                        record: m.record.clone(),
                        access: m.access,
                        vector_bits: index
                            .get(*key)
                            .map(|v| v.iter().map(|x| x.to_bits()).collect())
                            .unwrap_or_default(),
                    })
                    .collect();
                memories.sort_by_key(|m| m.key);
                AgentDump {
                    agent: agent.id.clone(),
                    config: state.config.to_record(),
                    next_key: state.next_key,
                    memories,
                }
            })
            .collect()
    }
}
