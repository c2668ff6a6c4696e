//! Saving and restoring agents' vector graphs, so a restart serves from the graph at once
//! instead of rebuilding it (minutes for large agents).
//!
//! Snapshots live in `<data dir>/graphs/a-<agent id in base32hex>/` (never the agent id
//! itself: see `mneme_storage::names`) and are derived state: the WAL and the
//! snapshots stay the truth. Each point is labelled with its index key (keys are a
//! deterministic function of the log and never reused) and a CRC32 of its vector; on load a
//! label resolves only if that key still holds the same vector, so deletions and
//! re-embeddings since the snapshot become tombstones, and memories added since go to the
//! exact tail. A snapshot that fails validation is deleted and the graph is rebuilt in the
//! background.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mneme_index::{Graph, IndexConfig};

use crate::agent::Agent;
use crate::engine::Inner;

/// A graph is snapshotted at most this often while it changes, unless it doubled in size
/// since its last snapshot (so that a graph growing from empty is never far behind).
pub const GRAPH_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// A point's label: its key and the CRC32 of its vector's little-endian bytes, 12 bytes.
fn label(key: u64, vector: &[f32]) -> [u8; 12] {
    let mut crc = crc32fast::Hasher::new();
    if cfg!(target_endian = "little") {
        crc.update(bytemuck::cast_slice(vector));
    } else {
        for x in vector {
            crc.update(&x.to_le_bytes());
        }
    }
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&key.to_le_bytes());
    out[8..].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// Prefix of every agent's snapshot directory name.
const AGENT_DIR_PREFIX: &str = "a-";

/// The snapshot directory of `agent`: a child of `root` whose name encodes the id, so no
/// agent id can name another directory (`..`) or share one (`a.b`/`a.c`, `Bot`/`bot`).
fn agent_dir(root: &Path, agent: &str) -> Option<PathBuf> {
    mneme_storage::names::encode_name(AGENT_DIR_PREFIX, agent.as_bytes()).map(|n| root.join(n))
}

/// Removes what is in `root` but is no agent's snapshot directory: snapshots of the
/// earlier layout, which named directories after raw agent ids, and leftovers of
/// interrupted saves. Only direct children of `root` are touched.
pub(crate) fn remove_strays(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(|n| mneme_storage::names::decode_name(AGENT_DIR_PREFIX, n))
            .is_some();
        if !ours {
            let path = root.join(&name);
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(err) = removed {
                tracing::warn!(path = %path.display(), %err, "could not remove a stray graph snapshot");
            }
        }
    }
}

/// Loads the snapshot of `agent` if one exists; an invalid one is removed.
pub(crate) fn restore(root: &Path, agent: &Agent, config: &IndexConfig) {
    let Some(dir) = agent_dir(root, &agent.id) else {
        return;
    };
    if !Graph::snapshot_exists(&dir) {
        return;
    }
    let loaded = {
        let index = agent.index.read();
        let resolve = |l: &[u8]| -> Option<u64> {
            let key = u64::from_le_bytes(l.get(..8)?.try_into().ok()?);
            (l.len() == 12 && label(key, index.get(key)?) == *l).then_some(key)
        };
        Graph::load(&dir, config.graph, index.dim(), config.hnsw, &resolve)
    };
    match loaded {
        Ok(graph) => agent.index.write().install_graph(Arc::new(graph)),
        Err(err) => {
            tracing::warn!(agent = agent.id, %err, "graph snapshot unusable; rebuilding from storage");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Saves `agent`'s graph; removes its snapshot when it has no graph any more (cleared),
/// so that no copy of forgotten vectors stays behind.
pub(crate) fn save(root: &Path, agent: &Agent) -> Result<(), mneme_index::SnapshotError> {
    let dir = agent_dir(root, &agent.id).ok_or_else(|| mneme_index::SnapshotError::Invalid {
        path: root.to_path_buf(),
        reason: "agent id cannot name a snapshot".into(),
    })?;
    let Some(graph) = agent.index.read().graph() else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| mneme_index::SnapshotError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        return Ok(());
    };
    // Labels are read a block at a time, so that no lock is held long; a memory that
    // changes meanwhile gets a label that no longer resolves and is re-absorbed on load.
    let keys: Vec<u64> = agent.state.read().memories.keys().copied().collect();
    let mut labels = std::collections::HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(4_096) {
        let index = agent.index.read();
        for key in chunk {
            if let Some(v) = index.get(*key) {
                labels.insert(*key, label(*key, v));
            }
        }
    }
    std::fs::create_dir_all(root).map_err(|source| mneme_index::SnapshotError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    graph.save(&dir, &|key| labels.get(&key).map(|l| l.to_vec()))
}

impl Inner {
    /// Snapshots graphs that changed since their last snapshot (all of them when `force`).
    pub(crate) fn save_graphs(&self, force: bool) {
        let Some(root) = &self.graphs_dir else { return };
        for agent in self.agents_snapshot() {
            let len = agent.index.read().graph().map_or(0, |g| g.len());
            let doubled = len >= 2 * agent.graph_saved_len.load(Ordering::Relaxed).max(1_024);
            let due = agent.graph_dirty.load(Ordering::Relaxed)
                && (force
                    || doubled
                    || agent
                        .graph_saved_at
                        .lock()
                        .is_none_or(|t| t.elapsed() >= GRAPH_SNAPSHOT_INTERVAL));
            if !due {
                continue;
            }
            agent.graph_dirty.store(false, Ordering::Relaxed);
            match save(root, &agent) {
                Ok(()) => {
                    *agent.graph_saved_at.lock() = Some(Instant::now());
                    agent.graph_saved_len.store(len, Ordering::Relaxed);
                }
                Err(err) => {
                    agent.graph_dirty.store(true, Ordering::Relaxed);
                    tracing::warn!(agent = agent.id, %err, "graph snapshot failed");
                }
            }
        }
    }
}
