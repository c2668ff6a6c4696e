//! Storage keys and record encodings (documented in `docs/design.md`).
//!
//! Every key of an agent starts with `a/{agent_id}\0`, so clearing an agent is one
//! delete-prefix and no key of one agent can be a prefix of another's (agent ids never
//! contain `\0`). Records are bincode 2 (standard configuration: little-endian, varints);
//! vectors are raw little-endian f32.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::error::{Error, Result};

/// Prefix of every key of every agent.
pub const AGENTS_PREFIX: &[u8] = b"a/";

/// Prefix of every key of `agent`.
pub fn agent_prefix(agent: &str) -> Vec<u8> {
    let mut key = AGENTS_PREFIX.to_vec();
    key.extend_from_slice(agent.as_bytes());
    key.push(0);
    key
}

/// Which record of an agent a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Agent configuration.
    Config,
    /// Memory record (everything but the vector and access counters).
    Memory,
    /// The memory's unit vector.
    Vector,
    /// The memory's access counters.
    Access,
}

impl RecordKind {
    fn tag(self) -> u8 {
        match self {
            Self::Config => b'c',
            Self::Memory => b'm',
            Self::Vector => b'v',
            Self::Access => b't',
        }
    }
}

/// Key of a memory's record of `kind`.
pub fn memory_key(agent: &str, kind: RecordKind, id: &str) -> Vec<u8> {
    let mut key = agent_prefix(agent);
    key.push(kind.tag());
    key.push(b'/');
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of an agent's configuration.
pub fn config_key(agent: &str) -> Vec<u8> {
    let mut key = agent_prefix(agent);
    key.push(RecordKind::Config.tag());
    key
}

/// Splits a key into (agent, kind, memory id).
pub fn parse_key(key: &[u8]) -> Option<(&str, RecordKind, &str)> {
    let rest = key.strip_prefix(AGENTS_PREFIX)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let agent = std::str::from_utf8(&rest[..nul]).ok()?;
    let rest = &rest[nul + 1..];
    match rest {
        [b'c'] => Some((agent, RecordKind::Config, "")),
        [tag, b'/', id @ ..] => {
            let kind = match tag {
                b'm' => RecordKind::Memory,
                b'v' => RecordKind::Vector,
                b't' => RecordKind::Access,
                _ => return None,
            };
            Some((agent, kind, std::str::from_utf8(id).ok()?))
        }
        _ => None,
    }
}

/// A memory record as stored.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct MemoryRecord {
    /// Session (empty: agent-wide).
    pub session_id: String,
    /// 1 episodic, 2 semantic, 3 procedural (the wire numbers).
    pub memory_type: u8,
    /// Text.
    pub content: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Pinned.
    pub pinned: bool,
    /// Importance.
    pub importance: f32,
    /// Created.
    pub created_at_ms: i64,
    /// Updated.
    pub updated_at_ms: i64,
    /// Expires (0: never).
    pub expires_at_ms: i64,
}

/// Access counters as stored (a separate record so a recall rewrites a few bytes, not the
/// memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct AccessRecord {
    /// Count.
    pub access_count: u64,
    /// Last access (0: never).
    pub last_accessed_at_ms: i64,
}

/// Scoring parameters as stored per agent (mirrors `mneme_scoring::ScoringParams`).
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub struct ScoringRecord {
    /// (type_weight, half_life_days, decay_floor) for episodic, semantic, procedural.
    pub types: [(f32, f64, f32); 3],
    /// frequency_saturation.
    pub frequency_saturation: f32,
    /// access_half_life_days.
    pub access_half_life_days: f64,
    /// recency, frequency, importance weights.
    pub weights: [f32; 3],
    /// context_shift.
    pub context_shift: f32,
}

/// An agent's configuration as stored.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct AgentConfigRecord {
    /// Embedder id (`client` for client-supplied vectors).
    pub embedder: String,
    /// Vector dimension.
    pub dim: u32,
    /// Calibration (center, slope) for the embedder.
    pub calibration: (f32, f32),
    /// Scoring parameters.
    pub scoring: ScoringRecord,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a record.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these plain types.
    bincode::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a record, naming the key on failure.
pub fn decode<T: Decode<()>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    match bincode::decode_from_slice(bytes, config()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(Error::CorruptRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("{} trailing bytes", bytes.len() - used),
        }),
        Err(err) => Err(Error::CorruptRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: err.to_string(),
        }),
    }
}

/// Encodes a vector as little-endian f32.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes a little-endian f32 vector.
pub fn decode_vector(key: &[u8], bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::CorruptRecord {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("vector of {} bytes is not a multiple of 4", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_agents_never_prefix_each_other() {
        let key = memory_key("bot-1", RecordKind::Vector, "01ABC");
        assert_eq!(
            parse_key(&key),
            Some(("bot-1", RecordKind::Vector, "01ABC"))
        );
        assert_eq!(
            parse_key(&config_key("x")),
            Some(("x", RecordKind::Config, ""))
        );
        assert!(!memory_key("bot-10", RecordKind::Memory, "1").starts_with(&agent_prefix("bot-1")));
    }

    #[test]
    fn records_round_trip_and_garbage_is_a_typed_error() {
        let rec = AccessRecord {
            access_count: 3,
            last_accessed_at_ms: 99,
        };
        let bytes = encode(&rec);
        assert_eq!(decode::<AccessRecord>(b"k", &bytes).unwrap(), rec);
        assert!(decode::<MemoryRecord>(b"k", &[0xff, 0xff, 0xff]).is_err());
        assert!(decode_vector(b"k", &[1, 2, 3]).is_err());
    }
}
