//! Mutations: every change to the engine's state, as logged.
//!
//! A write request is turned into one [`Entry`] *before* it is logged, carrying everything
//! that is not a pure function of the state it lands on: ids, timestamps, vectors (already
//! embedded and normalised, bit-exact), the agent configuration to create, thresholds. What
//! *is* a function of that state — whether a memory is a duplicate, whether an id exists,
//! which index key a memory gets — is decided by [`crate::apply`] when the entry is applied,
//! in log order, identically on every replay and every replica.
//!
//! Encoding (documented in `docs/design.md`): one version byte
//! ([`ENTRY_FORMAT_VERSION`]) followed by the bincode 2 encoding of [`Entry`] (standard
//! configuration: little-endian, varints), decoded with an allocation limit so that no
//! length prefix can ask for more memory than the entry could hold.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::codec::{AccessRecord, AgentConfigRecord, MemoryRecord};

/// Version of the entry encoding; bump on any change to the types below.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// One logged change to one agent.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Entry {
    /// The agent it changes.
    pub agent: String,
    /// The change.
    pub mutation: Mutation,
}

/// The vector space a mutation's vectors live in; an agent whose space differs refuses it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Space {
    /// Embedder id (`client` for client-supplied vectors).
    pub embedder: String,
    /// Dimension.
    pub dim: u32,
}

/// Every kind of change.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Mutation {
    /// Store memories (or reinforce near-duplicates of existing ones).
    Remember(Remember),
    /// Change one memory.
    Update(Update),
    /// Delete memories by id.
    Forget {
        /// Ids.
        ids: Vec<String>,
    },
    /// Delete every memory of one session.
    ForgetSession {
        /// The session.
        session_id: String,
    },
    /// Delete every memory of the agent (its configuration stays).
    ClearAll,
    /// Count uses of memories.
    Touch {
        /// When.
        at_ms: i64,
        /// Memory id and how many uses.
        hits: Vec<(String, u32)>,
    },
    /// Delete every memory that expired at or before `at_ms`.
    Expire {
        /// The sweep's time.
        at_ms: i64,
    },
    /// Change the agent's configuration (and, with a new embedder, every vector).
    Configure(Configure),
    /// Store exported memories with their ids, times and counters.
    Import(Import),
}

/// A batch of new memories.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Remember {
    /// The request's time.
    pub at_ms: i64,
    /// The configuration the agent is created with if it does not exist yet.
    pub create: AgentConfigRecord,
    /// The space of the vectors below.
    pub space: Space,
    /// Near-duplicate threshold (cosine), fixed by the node that took the request.
    pub dedup_cosine_min: f32,
    /// The memories, in request order.
    pub items: Vec<NewMemory>,
}

/// One memory to remember.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct NewMemory {
    /// Its id (unused when it turns out to be a duplicate).
    pub id: String,
    /// Its record.
    pub record: MemoryRecord,
    /// Whether the caller set the importance (only then does a duplicate raise it).
    pub importance_set: bool,
    /// Its unit vector.
    pub vector: Vec<f32>,
}

/// Changes to one memory; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Update {
    /// The request's time.
    pub at_ms: i64,
    /// The memory.
    pub id: String,
    /// New content and its unit vector in `space`.
    pub content: Option<(String, Vec<f32>, Space)>,
    /// New metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// New expiry (0: never).
    pub expires_at_ms: Option<i64>,
    /// Pin or unpin.
    pub pinned: Option<bool>,
    /// New importance.
    pub importance: Option<f32>,
}

/// A new configuration.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Configure {
    /// The configuration (creating the agent if needed).
    pub config: AgentConfigRecord,
    /// With a new embedder: the re-embedded vector of every memory, which must be exactly
    /// the agent's memories when this is applied (otherwise it is refused, and retried).
    pub vectors: Option<Vec<(String, Vec<f32>)>>,
}

/// Exported memories.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Import {
    /// The configuration the agent is created with if it does not exist (or has no
    /// memories and another space).
    pub create: AgentConfigRecord,
    /// The space of the vectors.
    pub space: Space,
    /// The memories; an existing id is overwritten.
    pub memories: Vec<ImportedMemory>,
}

/// One imported memory.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ImportedMemory {
    /// Id.
    pub id: String,
    /// Record.
    pub record: MemoryRecord,
    /// Counters.
    pub access: AccessRecord,
    /// Unit vector.
    pub vector: Vec<f32>,
}

/// Largest entry decoded: the storage limit.
const DECODE_LIMIT: usize = mneme_storage::ENTRY_BYTES_MAX;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes an entry with its version byte.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = vec![ENTRY_FORMAT_VERSION];
    // Encoding into a Vec cannot fail for these plain types.
    let _ = bincode::encode_into_std_write(entry, &mut out, config());
    out
}

/// Decodes an entry; any malformation is a description, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let (&version, body) = bytes.split_first().ok_or("empty entry")?;
    if version != ENTRY_FORMAT_VERSION {
        return Err(format!(
            "entry format version {version}; this build reads {ENTRY_FORMAT_VERSION}"
        ));
    }
    match bincode::decode_from_slice::<Entry, _>(body, config()) {
        Ok((entry, used)) if used == body.len() => Ok(entry),
        Ok((_, used)) => Err(format!(
            "{} trailing bytes after the entry",
            body.len() - used
        )),
        Err(err) => Err(format!("undecodable entry: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            agent: "bot".into(),
            mutation: Mutation::Touch {
                at_ms: 5,
                hits: vec![("01ABC".into(), 2)],
            },
        }
    }

    #[test]
    fn entries_round_trip_and_damage_is_an_error_not_a_panic() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes).unwrap(), sample());
        assert!(decode(&[]).is_err());
        assert!(decode(&[9]).is_err());
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // Version, agent string of length u64::MAX (varint 0xFF + 8 bytes).
        let mut bytes = vec![ENTRY_FORMAT_VERSION, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }
}
