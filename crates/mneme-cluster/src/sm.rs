//! The state machine: the engine, applying committed proposals at their log index, and
//! its snapshots.
//!
//! A snapshot is the engine's agent snapshot files after a checkpoint, hard-linked into
//! `snapshots/<id>/` with a `snapshot.json` naming them (with lengths and CRCs) and the raft
//! metadata. The engine's durable state is those files; `applied.json` records the log id
//! they reflect at least, so that after a restart openraft re-applies from there (entries
//! an agent already holds are skipped by the engine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mneme_engine::{AgentFile, Engine, Outcome};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{NodeAddr, NodeId, TypeConfig};

/// A snapshot's files (the `SnapshotData` of [`TypeConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFiles {
    /// The directory holding them.
    pub dir: PathBuf,
    /// The files, one per agent.
    pub files: Vec<FileMeta>,
}

/// One agent's file in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// File name inside the snapshot directory.
    pub name: String,
    /// The agent.
    pub agent: String,
    /// The log index the agent reflects.
    pub index: u64,
    /// Length.
    pub bytes: u64,
    /// CRC-32.
    pub crc: u32,
}

/// What `snapshot.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    meta: SnapshotMeta<NodeId, NodeAddr>,
    files: Vec<FileMeta>,
}

/// What `applied.json` holds: the engine's durable state reflects at least this.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
}

/// Outcomes awaited by requests this node proposed, by proposal sequence number.
#[derive(Debug, Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Outcome>>>,
}

impl Waiters {
    /// Registers interest in proposal `seq`.
    pub fn register(&self, seq: u64) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.lock().insert(seq, tx);
        rx
    }

    /// Gives up on proposal `seq`.
    pub fn forget(&self, seq: u64) {
        self.waiting.lock().remove(&seq);
    }

    pub(crate) fn deliver(&self, seq: u64, outcome: Outcome) {
        if let Some(tx) = self.waiting.lock().remove(&seq) {
            let _ = tx.send(outcome);
        }
    }
}

/// Which agents a group's state machine holds (all of them, or one shard's).
pub type Part = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The newest snapshot, shared by the state machine and its builders.
type Current = Arc<Mutex<Option<(SnapshotMeta<NodeId, NodeAddr>, SnapshotFiles)>>>;

/// The state machine.
pub struct StateMachine {
    engine: Arc<Engine>,
    node: NodeId,
    run: u64,
    waiters: Arc<Waiters>,
    root: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    current: Current,
    /// The last applied index, for readers outside openraft.
    applied_index: Arc<AtomicU64>,
    /// The agents it holds.
    part: Part,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

pub(crate) fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(openraft::AnyError::error(format!(
        "{what} {}: {e}",
        path.display()
    )))
    .into()
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Records durably that the engine's files reflect the log up to `last_applied`.
fn save_applied(
    root: &Path,
    last_applied: Option<LogId<NodeId>>,
    membership: &StoredMembership<NodeId, NodeAddr>,
) -> Result<(), StorageError<NodeId>> {
    let path = root.join("applied.json");
    let applied = Applied {
        last_applied,
        membership: membership.clone(),
    };
    let bytes = serde_json::to_vec(&applied).unwrap_or_default();
    write_atomic(&path, &bytes).map_err(|e| io_err("writing", &path, e))
}

/// Writes a snapshot directory's `snapshot.json`.
fn save_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StorageError<NodeId>> {
    let path = dir.join("snapshot.json");
    write_atomic(&path, &serde_json::to_vec(manifest).unwrap_or_default())
        .map_err(|e| io_err("writing", &path, e))
}

impl StateMachine {
    /// Opens the state machine over `engine`, with its files under `root` (`raft/`).
    pub fn open(
        engine: Arc<Engine>,
        node: NodeId,
        run: u64,
        waiters: Arc<Waiters>,
        root: &Path,
        applied_index: Arc<AtomicU64>,
        part: Part,
    ) -> Result<Self, crate::ClusterError> {
        let io = |what: &str, source| crate::ClusterError::Io {
            what: format!("{what} {}", root.display()),
            source,
        };
        std::fs::create_dir_all(root.join("snapshots")).map_err(|e| io("creating", e))?;
        let applied: Applied = match std::fs::read(root.join("applied.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                crate::ClusterError::Config(format!("{}: {e}", root.join("applied.json").display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(io("reading applied.json in", e)),
        };
        let current = latest_snapshot(&root.join("snapshots"));
        let sm = Self {
            engine,
            node,
            run,
            waiters,
            root: root.to_path_buf(),
            last_applied: applied.last_applied,
            membership: applied.membership,
            current: Arc::new(Mutex::new(current)),
            applied_index,
            part,
        };
        sm.applied_index
            .store(sm.last_applied.map_or(0, |l| l.index), Ordering::SeqCst);
        Ok(sm)
    }
}

/// The newest complete snapshot under `dir` (a directory with a readable `snapshot.json`);
/// removes incomplete ones.
fn latest_snapshot(dir: &Path) -> Option<(SnapshotMeta<NodeId, NodeAddr>, SnapshotFiles)> {
    let mut best: Option<(SnapshotMeta<NodeId, NodeAddr>, SnapshotFiles)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let manifest = std::fs::read(path.join("snapshot.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
        let Some(m) = manifest else {
            let _ = std::fs::remove_dir_all(&path);
            continue;
        };
        let newer = best
            .as_ref()
            .is_none_or(|(b, _)| m.meta.last_log_id > b.last_log_id);
        if newer {
            best = Some((
                m.meta,
                SnapshotFiles {
                    dir: path,
                    files: m.files,
                },
            ));
        }
    }
    best
}

/// Keeps only the snapshot in `keep` under `dir`.
fn remove_other_snapshots(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && !path.starts_with(keep) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Builds a snapshot of the engine as of (at least) `last_applied`.
pub struct Builder {
    engine: Arc<Engine>,
    root: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    current: Current,
    part: Part,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("last_applied", &self.last_applied)
            .finish_non_exhaustive()
    }
}

fn build(b: &Builder) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
    let snap_err = |e: String| -> StorageError<NodeId> {
        StorageIOError::write_snapshot(None, openraft::AnyError::error(e)).into()
    };
    // The engine's agent files then reflect every entry applied before now, which
    // includes everything up to `last_applied`.
    b.engine.checkpoint().map_err(|e| snap_err(e.to_string()))?;
    let files: Vec<AgentFile> = b.engine.snapshot_files_of(&*b.part);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (term, index) = b
        .last_applied
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    let id = format!("{term}-{index}-{millis}");
    let dir = b.root.join("snapshots").join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
    let mut metas = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let name = format!("{i:06}.agent");
        let to = dir.join(&name);
        // A hard link: the engine may replace its file later; this one stays.
        std::fs::hard_link(&f.path, &to)
            .or_else(|_| std::fs::copy(&f.path, &to).map(|_| ()))
            .map_err(|e| io_err("linking", &to, e))?;
        metas.push(FileMeta {
            name,
            agent: f.agent.clone(),
            index: f.index,
            bytes: f.bytes,
            crc: f.crc,
        });
    }
    let meta = SnapshotMeta {
        last_log_id: b.last_applied,
        last_membership: b.membership.clone(),
        snapshot_id: id,
    };
    save_manifest(
        &dir,
        &Manifest {
            meta: meta.clone(),
            files: metas.clone(),
        },
    )?;
    // The engine's files are durable (the checkpoint synced them): restart from here,
    // unless a newer snapshot was installed meanwhile (the restart point never moves back).
    let data = SnapshotFiles {
        dir: dir.clone(),
        files: metas,
    };
    let mut current = b.current.lock();
    let newest = current
        .as_ref()
        .is_none_or(|(m, _)| meta.last_log_id >= m.last_log_id);
    if newest {
        save_applied(&b.root, b.last_applied, &b.membership)?;
        *current = Some((meta.clone(), data.clone()));
        remove_other_snapshots(&b.root.join("snapshots"), &dir);
    }
    drop(current);
    Ok(Snapshot {
        meta,
        snapshot: Box::new(data),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let b = Builder {
            engine: Arc::clone(&self.engine),
            root: self.root.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: Arc::clone(&self.current),
            part: Arc::clone(&self.part),
        };
        tokio::task::spawn_blocking(move || build(&b))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string()))
            })?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeAddr>), StorageError<NodeId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<openraft::Entry<TypeConfig>> = entries.into_iter().collect();
        let n = entries.len();
        let engine = Arc::clone(&self.engine);
        let waiters = Arc::clone(&self.waiters);
        let (node, run) = (self.node, self.run);
        // Applying is CPU work (and may wait on agent locks): off the reactor.
        let (last, membership) = tokio::task::spawn_blocking(move || {
            let mut last = None;
            let mut membership = None;
            for e in entries {
                let index = e.log_id.index;
                match e.payload {
                    EntryPayload::Blank => engine.note_applied(index),
                    EntryPayload::Normal(p) => {
                        let outcome = engine.apply_replicated(index, &p.entry);
                        if p.origin == node && p.run == run {
                            waiters.deliver(p.seq, outcome);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        engine.note_applied(index);
                        membership = Some(StoredMembership::new(Some(e.log_id), m));
                    }
                }
                last = Some(e.log_id);
            }
            (last, membership)
        })
        .await
        .map_err(|e| {
            StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string()))
        })?;
        if let Some(last) = last {
            self.last_applied = Some(last);
            self.applied_index.store(last.index, Ordering::SeqCst);
        }
        if let Some(m) = membership {
            self.membership = m;
        }
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            engine: Arc::clone(&self.engine),
            root: self.root.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            current: Arc::clone(&self.current),
            part: Arc::clone(&self.part),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFiles>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotFiles {
            dir: self.root.join("incoming"),
            files: Vec::new(),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<SnapshotFiles>,
    ) -> Result<(), StorageError<NodeId>> {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let files: Vec<AgentFile> = snapshot
            .files
            .iter()
            .map(|f| AgentFile {
                agent: f.agent.clone(),
                index: f.index,
                path: snapshot.dir.join(&f.name),
                bytes: f.bytes,
                crc: f.crc,
            })
            .collect();
        let engine = Arc::clone(&self.engine);
        let part = Arc::clone(&self.part);
        tokio::task::spawn_blocking(move || engine.install_agents_of(&files, index, &*part))
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string()))
            })?
            .map_err(|e| {
                StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string()))
            })?;
        // Keep it as this node's current snapshot (it can send it on).
        let dir = self.root.join("snapshots").join(&meta.snapshot_id);
        if snapshot.dir != dir {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&snapshot.dir, &dir).map_err(|e| io_err("moving", &snapshot.dir, e))?;
        }
        save_manifest(
            &dir,
            &Manifest {
                meta: meta.clone(),
                files: snapshot.files.clone(),
            },
        )?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applied_index.store(index, Ordering::SeqCst);
        let current = Arc::clone(&self.current);
        let mut current = current.lock();
        save_applied(&self.root, self.last_applied, &self.membership)?;
        *current = Some((
            meta.clone(),
            SnapshotFiles {
                dir: dir.clone(),
                files: snapshot.files.clone(),
            },
        ));
        remove_other_snapshots(&self.root.join("snapshots"), &dir);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.current.lock().clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}
