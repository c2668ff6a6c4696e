//! Record encodings shared by log entries and agent snapshots (documented in
//! `docs/design.md`): bincode 2, standard configuration (little-endian, varints), decoded
//! with an allocation limit; vectors are raw little-endian f32.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

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

/// What decoding must know about the layout it reads: the decode context of every record
/// that holds a [`ScoringRecord`] (entries and snapshot metas name their version; this says
/// what that version means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// [`ScoringRecord::lexical_weight`] is stored (entry format ≥ 3, snapshot format ≥ 3).
    pub scoring_lexical: bool,
}

impl Layout {
    /// What this build writes.
    pub const CURRENT: Layout = Layout {
        scoring_lexical: true,
    };
}

/// The lexical weight of agents stored before it existed: the default, so upgraded agents
/// get hybrid recall too.
pub const LEGACY_LEXICAL_WEIGHT: f32 = mneme_scoring::LEXICAL_WEIGHT_DEFAULT;

/// Scoring parameters as stored per agent (mirrors `mneme_scoring::ScoringParams`).
#[derive(Debug, Clone, Copy, PartialEq, Encode)]
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
    /// lexical_weight (absent before entry format 3 and snapshot format 3).
    pub lexical_weight: f32,
}

impl Decode<Layout> for ScoringRecord {
    fn decode<D: bincode::de::Decoder<Context = Layout>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let types = Decode::decode(decoder)?;
        let frequency_saturation = Decode::decode(decoder)?;
        let access_half_life_days = Decode::decode(decoder)?;
        let weights = Decode::decode(decoder)?;
        let context_shift = Decode::decode(decoder)?;
        let lexical_weight = if decoder.context().scoring_lexical {
            Decode::decode(decoder)?
        } else {
            LEGACY_LEXICAL_WEIGHT
        };
        Ok(Self {
            types,
            frequency_saturation,
            access_half_life_days,
            weights,
            context_shift,
            lexical_weight,
        })
    }
}
bincode::impl_borrow_decode_with_context!(ScoringRecord, Layout);

/// An agent's configuration as stored.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
#[bincode(decode_context = "Layout")]
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

/// One memory as an agent snapshot stores it (its vector is stored apart).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct StoredMemory {
    /// Index key.
    pub key: u64,
    /// Memory id.
    pub id: String,
    /// Record.
    pub record: MemoryRecord,
    /// Counters.
    pub access: AccessRecord,
}

/// [`StoredMemory`] by reference, for writing without copying (same encoding).
#[derive(Debug, Clone, Copy, Encode)]
pub struct StoredMemoryRef<'a> {
    /// Index key.
    pub key: u64,
    /// Memory id.
    pub id: &'a str,
    /// Record.
    pub record: &'a MemoryRecord,
    /// Counters.
    pub access: &'a AccessRecord,
}

/// Largest record a snapshot decodes (a memory's content, metadata and ids fit easily).
const RECORD_DECODE_LIMIT: usize = 4 * 1024 * 1024;

pub(crate) fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RECORD_DECODE_LIMIT>()
}

/// Encodes a record onto `out`.
pub fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot fail for these plain types.
    let _ = bincode::encode_into_std_write(value, out, config());
}

/// Decodes one record from the front of `bytes`; returns it and the bytes it used.
pub fn decode_prefix<T: Decode<()>>(bytes: &[u8]) -> Result<(T, usize), String> {
    bincode::decode_from_slice(bytes, config()).map_err(|e| e.to_string())
}

/// [`decode_prefix`] for records laid out as `layout` says.
pub fn decode_prefix_in<T: Decode<Layout>>(
    bytes: &[u8],
    layout: Layout,
) -> Result<(T, usize), String> {
    bincode::decode_from_slice_with_context(bytes, config(), layout).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_a_typed_error() {
        let rec = AccessRecord {
            access_count: 3,
            last_accessed_at_ms: 99,
        };
        let mut bytes = Vec::new();
        encode_into(&rec, &mut bytes);
        assert_eq!(
            decode_prefix::<AccessRecord>(&bytes).unwrap(),
            (rec, bytes.len())
        );
        assert!(decode_prefix::<MemoryRecord>(&[0xff, 0xff, 0xff]).is_err());
        assert!(
            decode_prefix::<StoredMemory>(&[
                0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
    }
}
