//! The raft log: vote, entries and committed index, durable in a `mneme-storage` store
//! (framed, checksummed WAL with group commit; torn tails truncated on recovery).
//!
//! Every change is a `Record` appended by one writer thread, in the order openraft made
//! it; the thread batches whatever is queued into one commit (one fsync) and only then
//! reports entries flushed or a vote saved. The state lives in memory (a map of the entries
//! not yet purged) and is rebuilt at open from the store's last compaction snapshot plus
//! the records after it. Once the WAL passes [`COMPACT_WAL_BYTES`] the writer writes that
//! snapshot (its own mirror of the persisted state) and retires the WAL before it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{NodeId, TypeConfig};

/// The WAL is compacted into a snapshot of the log once it holds this many bytes.
pub const COMPACT_WAL_BYTES: u64 = 64 * 1024 * 1024;

const SNAPSHOT_TAG: &[u8] = b"raft-log";

/// The log's state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl State {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Append(entries) => {
                for e in entries {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Record::Purge(upto) => {
                let keep = self.entries.split_off(&(upto.index + 1));
                self.entries = keep;
                self.purged = Some(upto);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
        }
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(self.purged)
    }
}

/// One logged change.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Record {
    Append(Vec<Entry<TypeConfig>>),
    /// Remove entries at and after this index.
    Truncate(u64),
    /// Remove entries up to and including this one.
    Purge(LogId<NodeId>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

enum Done {
    None,
    Flushed(LogFlushed<TypeConfig>),
    Reply(tokio::sync::oneshot::Sender<Result<(), String>>),
}

struct Job {
    record: Record,
    done: Done,
}

/// The raft log store (cheap to clone: readers share its state).
#[derive(Clone)]
pub struct LogStore {
    state: Arc<Mutex<State>>,
    tx: mpsc::Sender<Job>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (creating) the log in `dir`, recovering it.
    pub fn open(dir: &Path) -> Result<Self, crate::ClusterError> {
        let store = mneme_storage::Store::open(dir, mneme_storage::Options::default())?;
        let mut state = State::default();
        if let Some(s) = store
            .snapshots()
            .into_iter()
            .find(|s| s.tag == SNAPSHOT_TAG)
        {
            let bytes = store.read_snapshot(&s)?;
            state = crate::decode(bytes.bytes()).map_err(|reason| {
                mneme_storage::Error::Corruption {
                    path: dir.join(mneme_storage::snapshot_file_name(s.file_id)),
                    offset: 0,
                    reason: format!("raft log snapshot: {reason}"),
                }
            })?;
        }
        store.replay(&mut |e| {
            for r in decode_records(e.payload)? {
                state.apply(r);
            }
            Ok(())
        })?;
        let shared = Arc::new(Mutex::new(state.clone()));
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mneme-raft-log".into())
            .spawn(move || writer(store, state, rx))
            .map_err(|source| crate::ClusterError::Io {
                what: "starting the raft log writer".into(),
                source,
            })?;
        Ok(Self { state: shared, tx })
    }

    fn send(&self, record: Record, done: Done) -> Result<(), StorageError<NodeId>> {
        self.tx.send(Job { record, done }).map_err(|_| {
            StorageIOError::write_logs(openraft::AnyError::error("log writer stopped")).into()
        })
    }

    async fn send_and_wait(&self, record: Record) -> Result<(), StorageError<NodeId>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(record, Done::Reply(tx))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_logs(openraft::AnyError::error(e)).into()),
            Err(_) => Err(StorageIOError::write_logs(openraft::AnyError::error(
                "log writer stopped",
            ))
            .into()),
        }
    }

    /// Entries held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The writer thread: commits queued records in order, a batch per fsync.
fn writer(store: mneme_storage::Store, mut mirror: State, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
            if jobs.len() >= 4_096 {
                break;
            }
        }
        // One commit per ~64 MiB of records, in order; the first failure fails the rest.
        let mut result: Result<(), String> = Ok(());
        let mut payload = Vec::new();
        let mut pending = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            payload.extend_from_slice(&crate::encode(&job.record));
            pending.push(job.record.clone());
            let last = i + 1 == jobs.len();
            if (payload.len() >= PAYLOAD_BYTES || last) && result.is_ok() {
                result = store
                    .commit(std::mem::take(&mut payload), |_| ())
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    for r in pending.drain(..) {
                        mirror.apply(r);
                    }
                }
            }
        }
        for job in jobs {
            match job.done {
                Done::None => {}
                Done::Flushed(cb) => {
                    cb.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                Done::Reply(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
        if result.is_ok()
            && store.stats().wal_bytes >= COMPACT_WAL_BYTES
            && let Err(err) = compact(&store, &mirror)
        {
            tracing::error!(%err, "raft log compaction failed");
        }
    }
}

/// Records are committed in payloads of about this many bytes.
const PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The records of one committed payload (concatenated encodings).
fn decode_records(mut bytes: &[u8]) -> Result<Vec<Record>, String> {
    let config = bincode::config::standard().with_limit::<{ crate::MESSAGE_BYTES_MAX }>();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (record, used): (Record, usize) =
            bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
        out.push(record);
        bytes = &bytes[used..];
    }
    Ok(out)
}

fn compact(store: &mneme_storage::Store, mirror: &State) -> Result<(), mneme_storage::Error> {
    let lsn = store.stats().last_lsn;
    let mut out = store.begin_snapshot(SNAPSHOT_TAG, lsn)?;
    let bytes = crate::encode(mirror);
    out.write_all(&bytes)
        .map_err(|source| mneme_storage::Error::Io {
            op: "write raft log snapshot",
            path: store.dir().to_path_buf(),
            source,
        })?;
    let snapshot = out.finish()?;
    store.install(vec![snapshot], lsn + 1)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let state = self.state.lock();
        Ok(state.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let state = self.state.lock();
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.state.lock().vote = Some(*vote);
        self.send_and_wait(Record::Vote(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.state.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not waited for: a committed index lost in a crash is learnt again from the leader.
        self.state.lock().committed = committed;
        self.send(Record::Committed(committed), Done::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.state.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        {
            let mut state = self.state.lock();
            for e in &entries {
                state.entries.insert(e.log_id.index, e.clone());
            }
        }
        self.send(Record::Append(entries), Done::Flushed(callback))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.state.lock().entries.split_off(&log_id.index);
        self.send_and_wait(Record::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut state = self.state.lock();
            let keep = state.entries.split_off(&(log_id.index + 1));
            state.entries = keep;
            state.purged = Some(log_id);
        }
        self.send(Record::Purge(log_id), Done::None)
    }
}
