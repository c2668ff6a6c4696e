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
pub const ENTRY_FORMAT_VERSION: u8 = 3;

/// The oldest entry encoding this build still reads: version 2 only added variants, version
/// 3 added the scoring's lexical weight (decoded by layout; see `codec.rs`).
pub const ENTRY_FORMAT_VERSION_MIN: u8 = 1;

/// One logged change to one agent.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
#[bincode(decode_context = "crate::codec::Layout")]
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
#[bincode(decode_context = "crate::codec::Layout")]
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
    /// [`Mutation::Remember`] under a client request id: applied once per id; a retry
    /// (the same id again) returns the memories the first one stored, marked duplicates.
    RememberOnce {
        /// The client's request id (≤ [`crate::limits::REQUEST_ID_BYTES_MAX`] bytes).
        request_id: String,
        /// The memories.
        remember: Remember,
    },
}

/// A batch of new memories.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
#[bincode(decode_context = "crate::codec::Layout")]
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
#[bincode(decode_context = "crate::codec::Layout")]
pub struct Configure {
    /// The configuration (creating the agent if needed).
    pub config: AgentConfigRecord,
    /// With a new embedder: the re-embedded vector of every memory, which must be exactly
    /// the agent's memories when this is applied (otherwise it is refused, and retried).
    pub vectors: Option<Vec<(String, Vec<f32>)>>,
}

/// Exported memories.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
#[bincode(decode_context = "crate::codec::Layout")]
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

/// Decodes an entry and checks what every entry the write path builds satisfies (see
/// [`Entry::validate`]); any malformation is a description, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let (&version, body) = bytes.split_first().ok_or("empty entry")?;
    if !(ENTRY_FORMAT_VERSION_MIN..=ENTRY_FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "entry format version {version}; this build reads {ENTRY_FORMAT_VERSION_MIN} to {ENTRY_FORMAT_VERSION}"
        ));
    }
    let layout = crate::codec::Layout {
        scoring_lexical: version >= 3,
    };
    let entry = match bincode::decode_from_slice_with_context::<_, Entry, _>(body, config(), layout)
    {
        Ok((entry, used)) if used == body.len() => entry,
        Ok((_, used)) => {
            return Err(format!(
                "{} trailing bytes after the entry",
                body.len() - used
            ));
        }
        Err(err) => return Err(format!("undecodable entry: {err}")),
    };
    entry.validate()?;
    Ok(entry)
}

fn check_record(what: &str, r: &MemoryRecord) -> Result<(), String> {
    if !(1..=3).contains(&r.memory_type) {
        return Err(format!("{what}: memory type {}", r.memory_type));
    }
    if !(0.0..=1.0).contains(&r.importance) {
        return Err(format!("{what}: importance {}", r.importance));
    }
    Ok(())
}

fn check_vector(what: &str, v: &[f32], dim: u32) -> Result<(), String> {
    if v.len() != dim as usize {
        return Err(format!(
            "{what}: {} dimensions, the entry's space has {dim}",
            v.len()
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("{what}: a component is not finite"));
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if crate::ids::is_memory_id(id) {
        Ok(())
    } else {
        Err(format!("{what}: not a memory id"))
    }
}

fn check_config(what: &str, c: &AgentConfigRecord) -> Result<(), String> {
    if c.dim == 0 || c.dim as usize > crate::limits::DIMENSIONS_MAX {
        return Err(format!("{what}: dimension {}", c.dim));
    }
    Ok(())
}

impl Mutation {
    /// How many vectors applying it may add to the index (its writer links about as many
    /// into the graph afterwards, so that the exact tail stays small).
    pub fn new_vectors(&self) -> usize {
        match self {
            Mutation::Remember(r) | Mutation::RememberOnce { remember: r, .. } => r.items.len(),
            Mutation::Import(i) => i.memories.len(),
            Mutation::Update(u) => usize::from(u.content.is_some()),
            _ => 0,
        }
    }
}

impl Entry {
    /// What every entry the write path builds satisfies, and `apply` relies on: a valid
    /// agent id and memory ids, memory types and importances in range, configurations with
    /// a dimension in range, vectors of their space's dimension with finite components.
    /// A logged entry that fails this is corruption (or a bug), never something to apply.
    pub fn validate(&self) -> Result<(), String> {
        crate::limits::check_agent_id(&self.agent).map_err(|e| e.to_string())?;
        if let Mutation::RememberOnce { request_id, .. } = &self.mutation
            && (request_id.is_empty() || request_id.len() > crate::limits::REQUEST_ID_BYTES_MAX)
        {
            return Err(format!("request id of {} bytes", request_id.len()));
        }
        match &self.mutation {
            Mutation::Remember(r) | Mutation::RememberOnce { remember: r, .. } => {
                check_config("create", &r.create)?;
                if r.create.embedder != r.space.embedder || r.create.dim != r.space.dim {
                    return Err("remember: the configuration and the space differ".into());
                }
                for (i, item) in r.items.iter().enumerate() {
                    let what = format!("items[{i}]");
                    check_id(&what, &item.id)?;
                    check_record(&what, &item.record)?;
                    check_vector(&what, &item.vector, r.space.dim)?;
                }
            }
            Mutation::Update(u) => {
                check_id("update", &u.id)?;
                if let Some((_, v, space)) = &u.content {
                    check_vector("update", v, space.dim)?;
                }
                if u.importance.is_some_and(|i| !(0.0..=1.0).contains(&i)) {
                    return Err("update: importance out of range".into());
                }
            }
            Mutation::Forget { ids } => {
                for id in ids {
                    check_id("forget", id)?;
                }
            }
            Mutation::Touch { hits, .. } => {
                for (id, _) in hits {
                    check_id("touch", id)?;
                }
            }
            Mutation::ForgetSession { .. } | Mutation::ClearAll | Mutation::Expire { .. } => {}
            Mutation::Configure(c) => {
                check_config("configure", &c.config)?;
                for (id, v) in c.vectors.iter().flatten() {
                    check_id("configure", id)?;
                    check_vector("configure", v, c.config.dim)?;
                }
            }
            Mutation::Import(i) => {
                check_config("create", &i.create)?;
                if i.create.embedder != i.space.embedder || i.create.dim != i.space.dim {
                    return Err("import: the configuration and the space differ".into());
                }
                for (n, m) in i.memories.iter().enumerate() {
                    let what = format!("memories[{n}]");
                    check_id(&what, &m.id)?;
                    check_record(&what, &m.record)?;
                    check_vector(&what, &m.vector, i.space.dim)?;
                }
            }
        }
        Ok(())
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
                hits: vec![("01ARZ3NDEKTSV4RRFFQ69G5FAV".into(), 2)],
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
    fn entries_the_write_path_never_builds_are_refused() {
        let mut bad = sample();
        bad.agent = "../x".into();
        assert!(decode(&encode(&bad)).is_err());
        let mut bad = sample();
        bad.mutation = Mutation::Forget {
            ids: vec!["not-an-id".into()],
        };
        assert!(decode(&encode(&bad)).is_err());
    }

    #[test]
    fn version_2_entries_decode_with_the_legacy_lexical_weight() {
        let scoring = crate::codec::ScoringRecord {
            types: [(0.9, 7.0, 0.3), (1.0, 365.0, 0.7), (1.0, 90.0, 0.5)],
            frequency_saturation: 5.0,
            access_half_life_days: 30.0,
            weights: [0.5, 0.2, 0.3],
            context_shift: 0.1,
            lexical_weight: 1.25,
        };
        let entry = Entry {
            agent: "bot".into(),
            mutation: Mutation::Configure(Configure {
                config: AgentConfigRecord {
                    embedder: "client".into(),
                    dim: 4,
                    calibration: (0.2, 8.0),
                    scoring,
                },
                vectors: None,
            }),
        };
        let v3 = encode(&entry);
        assert_eq!(decode(&v3).unwrap(), entry);
        // Version 2 wrote the same record without the trailing lexical weight.
        let tail = [0.1f32.to_le_bytes(), 1.25f32.to_le_bytes()].concat();
        let at = v3.windows(8).position(|w| w == tail.as_slice()).unwrap();
        let mut v2 = v3.clone();
        v2.drain(at + 4..at + 8);
        v2[0] = 2;
        let Mutation::Configure(old) = decode(&v2).unwrap().mutation else {
            panic!("not a configure")
        };
        assert_eq!(
            old.config.scoring.lexical_weight,
            crate::codec::LEGACY_LEXICAL_WEIGHT
        );
        assert_eq!(old.config.scoring.context_shift, 0.1);
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // Version, agent string of length u64::MAX (varint 0xFF + 8 bytes).
        let mut bytes = vec![ENTRY_FORMAT_VERSION, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }
}
