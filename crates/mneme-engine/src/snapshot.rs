//! Agent snapshots: one agent's whole state as of one LSN, in one checksummed, versioned
//! file the store names in its manifest (layout in `docs/design.md`).
//!
//! ```text
//! header  64 B   magic "MNMAGNT\x01", version, dim, lsn, next_key, count, meta length,
//!                block count, reserved, CRC32 of the 60 bytes before it
//! meta           bincode {agent id, configuration}, zero-padded to 8
//! blocks         up to 4,096 memories each:
//!                16 B header: n, records length, CRC32 of records+padding+vectors, reserved
//!                n records (bincode StoredMemory), zero-padded to 8
//!                n × dim little-endian f32 vectors (8-aligned in the file, so mappable)
//! trailer 16 B   "MNMAGEND", total count
//! ```
//!
//! Writing copies no more than a block at a time: a [`Capture`] fixes the set of keys and
//! the LSN under a brief write lock, blocks are read under brief read locks, and any memory
//! that changes meanwhile leaves its earlier version in the capture first (copy on write),
//! so writes to the agent go on while its snapshot is written. Loading checks everything it
//! reads and never panics on a damaged or hostile file.

use std::io::Write;
use std::sync::Arc;

use mneme_index::VectorIndex;
use mneme_storage::{SnapshotRef, Store};
use parking_lot::Mutex;

use crate::agent::{Agent, AgentConfig, AgentState, Capture, MemoryState, type_from_wire};
use crate::codec::{self, AgentConfigRecord, StoredMemory};
use crate::error::{Error, Result};

const MAGIC: [u8; 8] = *b"MNMAGNT\x01";
const TRAILER_MAGIC: [u8; 8] = *b"MNMAGEND";
/// Version of the agent snapshot layout.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 3;
/// The oldest layout this build reads (version 1 has no request ids; versions before 3 no
/// lexical weight in the scoring).
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 1;
const HEADER_BYTES: usize = 64;
const BLOCK_HEADER_BYTES: usize = 16;
/// Memories per block.
const BLOCK_MEMORIES: usize = 4_096;

/// The store tag of an agent's snapshot.
pub(crate) fn tag(agent: &str) -> Vec<u8> {
    let mut tag = b"a/".to_vec();
    tag.extend_from_slice(agent.as_bytes());
    tag
}

/// The agent id of a snapshot tag.
pub(crate) fn agent_of_tag(tag: &[u8]) -> Option<&str> {
    std::str::from_utf8(tag.strip_prefix(b"a/")?).ok()
}

#[derive(Debug, bincode::Encode, bincode::Decode)]
#[bincode(decode_context = "codec::Layout")]
struct Meta {
    agent: String,
    config: AgentConfigRecord,
    /// Recent request ids, oldest first, with the memory ids each returned.
    requests: Vec<(String, Vec<String>)>,
}

/// [`Meta`] of version 1 snapshots.
#[derive(Debug, bincode::Encode, bincode::Decode)]
#[bincode(decode_context = "codec::Layout")]
struct MetaV1 {
    agent: String,
    config: AgentConfigRecord,
}

fn pad8(out: &mut dyn Write, len: usize) -> std::io::Result<()> {
    let pad = len.next_multiple_of(8) - len;
    out.write_all(&[0u8; 8][..pad])
}

/// A snapshot being taken of one agent.
pub(crate) struct Taking {
    capture: Arc<Mutex<Capture>>,
    /// `dirty_since` before the capture cleared it, restored if the snapshot is not installed.
    pub(crate) dirty_since: Option<u64>,
}

/// Starts a snapshot of `agent` if it changed since its last one.
pub(crate) fn begin(agent: &Agent) -> Option<Taking> {
    let mut state = agent.state.write();
    let dirty_since = state.dirty_since?;
    let capture = Arc::new(Mutex::new(Capture {
        lsn: state.applied_lsn,
        config: state.config.clone(),
        next_key: state.next_key,
        keys: state.memories.keys().copied().collect(),
        requests: state.requests.to_vec(),
        saved: Default::default(),
        aborted: false,
    }));
    state.capture = Some(Arc::clone(&capture));
    state.dirty_since = None;
    Some(Taking {
        capture,
        dirty_since: Some(dirty_since),
    })
}

/// Ends a capture; if the snapshot will not be installed, marks the agent dirty again
/// since its earlier position.
pub(crate) fn end(agent: &Agent, taking: &Taking, installed: bool) {
    let mut state = agent.state.write();
    state.capture = None;
    if !installed {
        state.dirty_since = match (state.dirty_since, taking.dirty_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Writes the captured state of `agent`; `Ok(None)` when the capture was aborted (the
/// agent was cleared or re-embedded meanwhile: it stays dirty and is taken next time).
pub(crate) fn write(store: &Store, agent: &Agent, taking: &Taking) -> Result<Option<SnapshotRef>> {
    let (lsn, config, next_key, mut keys, requests) = {
        let c = taking.capture.lock();
        (
            c.lsn,
            c.config.clone(),
            c.next_key,
            c.keys.clone(),
            c.requests.clone(),
        )
    };
    // In key order (creation order, mostly id order too): loading then builds its maps
    // from nearly sorted input and touches memory in order.
    keys.sort_unstable();
    let mut out = store.begin_snapshot(&tag(&agent.id), lsn)?;
    let mut meta = Vec::new();
    codec::encode_into(
        &Meta {
            agent: agent.id.clone(),
            config: config.to_record(),
            requests,
        },
        &mut meta,
    );
    let blocks = keys.len().div_ceil(BLOCK_MEMORIES);
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(config.dim as u32).to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&next_key.to_le_bytes());
    header[32..40].copy_from_slice(&(keys.len() as u64).to_le_bytes());
    header[40..44].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    header[44..48].copy_from_slice(&(blocks as u32).to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    let io = |e: std::io::Error| Error::Io(e);
    out.write_all(&header).map_err(io)?;
    out.write_all(&meta).map_err(io)?;
    pad8(&mut out, meta.len()).map_err(io)?;
    let mut records = Vec::new();
    let mut vectors: Vec<u8> = Vec::new();
    for chunk in keys.chunks(BLOCK_MEMORIES) {
        records.clear();
        vectors.clear();
        {
            let state = agent.state.read();
            let index = agent.index.read();
            let capture = taking.capture.lock();
            if capture.aborted {
                return Ok(None);
            }
            for key in chunk {
                let (m, v) = match capture.saved.get(key) {
                    Some((m, v)) => (m, v.as_slice()),
                    None => match (state.memories.get(key), index.get(*key)) {
                        (Some(m), Some(v)) => (m, v),
                        // Unreachable while the capture holds: every change saves first.
                        _ => {
                            return Err(Error::FailedPrecondition(format!(
                                "snapshot of {:?}: memory key {key} vanished during capture",
                                agent.id
                            )));
                        }
                    },
                };
                codec::encode_into(
                    &codec::StoredMemoryRef {
                        key: *key,
                        id: &m.id,
                        record: &m.record,
                        access: &m.access,
                    },
                    &mut records,
                );
                for x in v {
                    vectors.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        let padded = records.len().next_multiple_of(8);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&records);
        crc.update(&[0u8; 8][..padded - records.len()]);
        crc.update(&vectors);
        let mut block = [0u8; BLOCK_HEADER_BYTES];
        block[0..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        block[4..8].copy_from_slice(&(records.len() as u32).to_le_bytes());
        block[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
        out.write_all(&block).map_err(io)?;
        out.write_all(&records).map_err(io)?;
        pad8(&mut out, records.len()).map_err(io)?;
        out.write_all(&vectors).map_err(io)?;
    }
    out.write_all(&TRAILER_MAGIC).map_err(io)?;
    out.write_all(&(keys.len() as u64).to_le_bytes())
        .map_err(io)?;
    if taking.capture.lock().aborted {
        return Ok(None);
    }
    Ok(Some(out.finish()?))
}

/// A loaded agent, ready to be installed.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) agent: String,
    pub(crate) state: AgentState,
    pub(crate) index: VectorIndex,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("needs {n} bytes at offset {}, the file ends first", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn skip_pad(&mut self, len: usize) -> std::result::Result<(), String> {
        let pad = len.next_multiple_of(8) - len;
        let bytes = self.take(pad)?;
        if bytes.iter().any(|b| *b != 0) {
            return Err(format!("non-zero padding before offset {}", self.at));
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Decodes an agent snapshot. Every inconsistency is an error naming the offset; nothing
/// here trusts a length or a count before checking it against the bytes that are there.
pub(crate) fn load(
    bytes: &[u8],
    expected_agent: &str,
    expected_lsn: u64,
    index_config: mneme_index::IndexConfig,
) -> std::result::Result<Loaded, (u64, String)> {
    let mut c = Cursor { bytes, at: 0 };
    let at = |c: &Cursor<'_>, reason: String| (c.at as u64, reason);
    let header = c.take(HEADER_BYTES).map_err(|r| (0, r))?;
    if header[0..8] != MAGIC {
        return Err((0, "not an agent snapshot (bad magic)".into()));
    }
    if crc32fast::hash(&header[..60]) != u32_at(header, 60) {
        return Err((60, "header checksum mismatch".into()));
    }
    let version = u32_at(header, 8);
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err((
            8,
            format!(
                "snapshot format version {version}; this build reads {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION}"
            ),
        ));
    }
    let dim = u32_at(header, 12) as usize;
    let lsn = u64_at(header, 16);
    let next_key = u64_at(header, 24);
    let count = u64_at(header, 32);
    let meta_len = u32_at(header, 40) as usize;
    let blocks = u32_at(header, 44) as usize;
    if dim == 0 || dim > mneme_index::DIMENSIONS_MAX {
        return Err((12, format!("dimension {dim} is out of range")));
    }
    if lsn != expected_lsn {
        return Err((16, format!("LSN {lsn}, the manifest says {expected_lsn}")));
    }
    if count > crate::limits::MEMORIES_PER_AGENT_MAX as u64
        || blocks != (count as usize).div_ceil(BLOCK_MEMORIES)
        || count > next_key
    {
        return Err((
            32,
            format!("{count} memories in {blocks} blocks, next key {next_key}"),
        ));
    }
    let meta_bytes = c.take(meta_len).map_err(|r| at(&c, r))?;
    let layout = codec::Layout {
        scoring_lexical: version >= 3,
    };
    let decoded = if version == 1 {
        codec::decode_prefix_in::<MetaV1>(meta_bytes, layout).map(|(m, used)| {
            let meta = Meta {
                agent: m.agent,
                config: m.config,
                requests: Vec::new(),
            };
            (meta, used)
        })
    } else {
        codec::decode_prefix_in::<Meta>(meta_bytes, layout)
    };
    let meta: Meta = match decoded {
        Ok((meta, used)) if used == meta_len => meta,
        Ok(_) => return Err((HEADER_BYTES as u64, "trailing bytes after the meta".into())),
        Err(e) => return Err((HEADER_BYTES as u64, format!("meta: {e}"))),
    };
    c.skip_pad(meta_len).map_err(|r| at(&c, r))?;
    if meta.agent != expected_agent {
        return Err((HEADER_BYTES as u64, "snapshot of another agent".into()));
    }
    if meta.config.dim as usize != dim {
        return Err((
            HEADER_BYTES as u64,
            "configuration dimension differs".into(),
        ));
    }
    let config = AgentConfig::from_record(&meta.config);
    let mut memories: Vec<(u64, MemoryState)> = Vec::with_capacity(count as usize);
    let mut vector_blocks: Vec<(u64, &[u8])> = Vec::with_capacity(blocks);
    let mut remaining = count as usize;
    for _ in 0..blocks {
        let block_at = c.at as u64;
        let bh = c.take(BLOCK_HEADER_BYTES).map_err(|r| at(&c, r))?;
        let n = u32_at(bh, 0) as usize;
        let records_len = u32_at(bh, 4) as usize;
        let crc = u32_at(bh, 8);
        if n == 0 || n > BLOCK_MEMORIES || n > remaining {
            return Err((block_at, format!("block of {n} memories")));
        }
        remaining -= n;
        let vectors_len = n * dim * 4;
        let body_len = records_len
            .next_multiple_of(8)
            .checked_add(vectors_len)
            .ok_or((block_at, "block length overflows".to_owned()))?;
        let body = c.take(body_len).map_err(|r| at(&c, r))?;
        if crc32fast::hash(body) != crc {
            return Err((block_at, "block checksum mismatch".into()));
        }
        let (records, rest) = body.split_at(records_len);
        vector_blocks.push((
            block_at,
            &rest[records_len.next_multiple_of(8) - records_len..],
        ));
        let mut used = 0;
        for i in 0..n {
            let (m, len) = codec::decode_prefix::<StoredMemory>(&records[used..])
                .map_err(|e| (block_at, format!("record {i}: {e}")))?;
            used += len;
            let memory_type = type_from_wire(m.record.memory_type).ok_or_else(|| {
                (
                    block_at,
                    format!("record {i}: memory type {}", m.record.memory_type),
                )
            })?;
            if m.key >= next_key {
                return Err((
                    block_at,
                    format!("record {i}: key {} is not below the next key", m.key),
                ));
            }
            memories.push((
                m.key,
                MemoryState {
                    id: m.id,
                    memory_type,
                    record: m.record,
                    access: m.access,
                },
            ));
        }
        if used != records_len {
            return Err((block_at, "records do not fill their section".into()));
        }
    }
    let keys: Vec<u64> = memories.iter().map(|(k, _)| *k).collect();
    // The maps and the vector store are independent: build them on two cores.
    let (state, index) = std::thread::scope(|scope| {
        let vectors = scope.spawn(|| {
            let mut data = Vec::with_capacity(count as usize * dim);
            for (block_at, bytes) in &vector_blocks {
                let start = data.len();
                match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                    // Little-endian and aligned (the layout puts vectors on 8-byte
                    // boundaries of a page-aligned map): one copy.
                    Ok(floats) if cfg!(target_endian = "little") => data.extend_from_slice(floats),
                    _ => data.extend(
                        bytes
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    ),
                }
                if data[start..].iter().any(|x| !x.is_finite()) {
                    return Err((*block_at, "a vector component is not finite".to_owned()));
                }
            }
            VectorIndex::from_unit_vectors(dim, index_config, keys, data)
                .map_err(|e| (HEADER_BYTES as u64, e.to_string()))
        });
        let state = AgentState::from_memories(config, memories, next_key)
            .map_err(|reason| (HEADER_BYTES as u64, reason));
        let index = vectors
            .join()
            .unwrap_or_else(|_| Err((0, "vector loading panicked".to_owned())));
        (state, index)
    });
    let mut state = state?;
    let index = index?;
    let trailer = c.take(16).map_err(|r| at(&c, r))?;
    if trailer[0..8] != TRAILER_MAGIC || u64_at(trailer, 8) != count {
        return Err((c.at as u64 - 16, "bad trailer".into()));
    }
    if c.at != bytes.len() {
        return Err((c.at as u64, "trailing bytes after the trailer".into()));
    }
    state.applied_lsn = lsn;
    if meta.requests.len() > crate::limits::REQUEST_IDS_PER_AGENT_MAX {
        return Err((HEADER_BYTES as u64, "too many request ids".into()));
    }
    for (request_id, ids) in meta.requests {
        state.requests.insert(request_id, ids);
    }
    Ok(Loaded {
        agent: meta.agent,
        state,
        index,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::mutation::{Entry, Mutation, NewMemory, Remember, Space, Update};
    use crate::{Engine, EngineConfig, ManualClock, MemoryRecord};

    fn remember(n: usize, at: i64) -> Entry {
        let config = crate::engine::Inner::client_config_record(4);
        Entry {
            agent: "bot".into(),
            mutation: Mutation::Remember(Remember {
                at_ms: at,
                create: config,
                space: Space {
                    embedder: "client".into(),
                    dim: 4,
                },
                dedup_cosine_min: 0.97,
                items: (0..n)
                    .map(|i| NewMemory {
                        id: crate::ids::new_memory_id(at),
                        record: MemoryRecord {
                            session_id: String::new(),
                            memory_type: 2,
                            content: format!("memory {i}"),
                            metadata: BTreeMap::new(),
                            pinned: false,
                            importance: 0.5,
                            created_at_ms: at,
                            updated_at_ms: at,
                            expires_at_ms: 0,
                        },
                        importance_set: false,
                        vector: {
                            let mut v = [0.1f32; 4];
                            v[i % 4] = 1.0;
                            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                            v.iter().map(|x| x / n).collect()
                        },
                    })
                    .collect(),
            }),
        }
    }

    /// Changes made while a snapshot is being written (touches, updates, forgets, new
    /// memories) never leak into it: the snapshot is the agent as of its LSN exactly, and
    /// recovery (snapshot + the log after it) gives the live state back.
    #[test]
    fn writes_during_a_capture_keep_the_snapshot_exact() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let config = EngineConfig {
            clock: clock.clone(),
            background: false,
            ..EngineConfig::default()
        };
        let engine = Engine::open(dir.path(), config.clone()).unwrap();
        engine.submit(remember(5_000, 1_800_000_000_000)).unwrap();
        let agent = engine.inner.agent("bot").unwrap();
        let ids: Vec<String> = engine.dump()[0]
            .memories
            .iter()
            .map(|m| m.id.clone())
            .collect();
        let taking = super::begin(&agent).unwrap();
        // While captured: change a tenth of the memories in every way, and add some.
        for (i, id) in ids.iter().enumerate().step_by(10) {
            let mutation = match i % 30 {
                0 => Mutation::Touch {
                    at_ms: 1_800_000_000_500,
                    hits: vec![(id.clone(), 3)],
                },
                10 => Mutation::Update(Update {
                    at_ms: 1_800_000_000_600,
                    id: id.clone(),
                    content: None,
                    metadata: None,
                    expires_at_ms: None,
                    pinned: Some(true),
                    importance: Some(0.9),
                }),
                _ => Mutation::Forget {
                    ids: vec![id.clone()],
                },
            };
            engine
                .submit(Entry {
                    agent: "bot".into(),
                    mutation,
                })
                .unwrap();
        }
        engine.submit(remember(10, 1_800_000_000_700)).unwrap();
        let snapshot = super::write(&engine.inner.store, &agent, &taking)
            .unwrap()
            .unwrap();
        engine
            .inner
            .store
            .install(vec![snapshot.clone()], 1)
            .unwrap();
        super::end(&agent, &taking, true);
        let live = engine.dump();
        // The snapshot alone is the agent before those changes.
        let bytes = engine.inner.store.read_snapshot(&snapshot).unwrap();
        let loaded = super::load(bytes.bytes(), "bot", snapshot.lsn, config.index).unwrap();
        assert_eq!(loaded.state.memories.len(), 5_000);
        assert!(
            loaded
                .state
                .memories
                .values()
                .all(|m| m.access.access_count == 0 && !m.record.pinned)
        );
        drop(bytes);
        drop(agent);
        drop(engine);
        // Snapshot + replay of the rest of the log = the live state.
        let engine = Engine::open(dir.path(), config).unwrap();
        assert_eq!(engine.dump(), live);
    }
}
