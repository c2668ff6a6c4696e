//! [`Store`]: open, group commit, reads, and the background workers.
//!
//! Group commit: a committer queues its batch; whoever finds no leader becomes leader, takes
//! every queued batch, writes them in one `append`, syncs once, applies them to the active
//! memtable in LSN order and only then wakes the committers. A failed write or sync poisons
//! the store: the failing group and everything after it get an error, never an ack.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::frame::encode_frame;
use crate::manifest::Manifest;
use crate::memtable::WriteBatch;
use crate::tables::{Tables, Value};
use crate::vfs::{RealFs, Vfs};
use crate::wal::WalWriter;

/// When a commit is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the fsync covering the commit returned (the default).
    EveryCommit,
    /// Acknowledge after the write; a background thread syncs every `interval_ms`.
    /// A power loss may lose up to `interval_ms` of acknowledged commits; a process crash
    /// loses nothing (the bytes are in the page cache).
    Periodic {
        /// Sync period in milliseconds.
        interval_ms: u64,
    },
}

/// Tunables of a store. `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Commit durability.
    pub durability: Durability,
    /// A WAL segment rolls over once it is this large.
    pub wal_segment_bytes_max: u64,
    /// An append-log segment written by compaction rolls over once it is this large.
    pub log_segment_bytes_max: u64,
    /// Checkpoint once the active memtable holds this many bytes of frames.
    pub checkpoint_bytes: usize,
    /// Compact once dead bytes exceed this share of the append log…
    pub compaction_dead_ratio: f64,
    /// …and the dead bytes exceed this many.
    pub compaction_min_dead_bytes: u64,
    /// Run checkpoints and compactions on a background thread when their thresholds pass.
    pub background_maintenance: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::EveryCommit,
            wal_segment_bytes_max: 64 * 1024 * 1024,
            log_segment_bytes_max: 256 * 1024 * 1024,
            checkpoint_bytes: 64 * 1024 * 1024,
            compaction_dead_ratio: 0.5,
            compaction_min_dead_bytes: 4 * 1024 * 1024,
            background_maintenance: true,
        }
    }
}

/// Sizes and positions, for stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// LSN of the last committed frame (0 when none).
    pub last_lsn: u64,
    /// LSN covered by the last checkpoint.
    pub checkpoint_lsn: u64,
    /// Bytes in WAL segments not yet retired.
    pub wal_bytes: u64,
    /// Bytes of append-log segments.
    pub log_bytes: u64,
    /// Bytes of append-log frames that are still live.
    pub log_live_bytes: u64,
    /// Number of append-log segments.
    pub log_segments: usize,
    /// Bytes of frames in the memtables.
    pub memtable_bytes: usize,
    /// WAL `fdatasync` calls since open.
    pub wal_syncs: u64,
    /// Microseconds spent in them.
    pub wal_sync_micros: u64,
}

type Slot = Arc<Mutex<Option<Result<u64, String>>>>;

#[derive(Debug, Default)]
struct CommitQueue {
    pending: Vec<(WriteBatch, Slot)>,
    leader_active: bool,
    poisoned: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    _lock: Box<dyn fmt::Debug + Send + Sync>,
    queue: Mutex<CommitQueue>,
    queue_cv: Condvar,
    pub(crate) wal: Mutex<WalWriter>,
    pub(crate) tables: RwLock<Tables>,
    /// Serialises checkpoints and compactions; holds the current manifest.
    pub(crate) maintenance: Mutex<Manifest>,
    pub(crate) next_file_id: AtomicU64,
    closed: AtomicBool,
    wake: Mutex<()>,
    wake_cv: Condvar,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A crash-safe, log-structured store of opaque key/value records.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("mneme-doc-{}", std::process::id()));
/// use mneme_storage::{Options, Store, WriteBatch};
/// let store = Store::open(&dir, Options::default())?;
/// let mut batch = WriteBatch::new();
/// batch.put(b"agent/1".to_vec(), b"hello".to_vec())?;
/// store.commit(batch)?; // durable when this returns
/// assert_eq!(&*store.get(b"agent/1").unwrap(), b"hello");
/// # drop(store); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), mneme_storage::Error>(())
/// ```
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` on the real file system, recovering it.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Self> {
        Self::open_with(Arc::new(RealFs), dir, opts)
    }

    /// Opens the store through any [`Vfs`] (tests pass a fault-injecting one).
    pub fn open_with(vfs: Arc<dyn Vfs>, dir: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        vfs.create_dir_all(&dir)
            .map_err(|e| Error::io("create data directory", &dir, e))?;
        let lock = vfs.lock_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked { path: dir.clone() },
            _ => Error::io("lock data directory", &dir, e),
        })?;
        let recovered = crate::recovery::recover(vfs.as_ref(), &dir)?;
        let wal = WalWriter::create(
            vfs.as_ref(),
            &dir,
            recovered.next_file_id,
            recovered.wal_segments,
            recovered.next_lsn,
        )?;
        let inner = Arc::new(Inner {
            vfs,
            dir,
            opts,
            _lock: lock,
            queue: Mutex::new(CommitQueue::default()),
            queue_cv: Condvar::new(),
            wal: Mutex::new(wal),
            tables: RwLock::new(recovered.tables),
            maintenance: Mutex::new(recovered.manifest),
            next_file_id: AtomicU64::new(recovered.next_file_id + 1),
            closed: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
        });
        let workers = spawn_workers(&inner);
        Ok(Self { inner, workers })
    }

    /// Commits `batch` atomically and returns the LSN of its last frame. With
    /// [`Durability::EveryCommit`] the batch is on stable storage when this returns.
    pub fn commit(&self, batch: WriteBatch) -> Result<u64> {
        self.inner.commit(batch)
    }

    /// The current value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Value> {
        self.inner.tables.read().get(key)
    }

    /// Every live key starting with `prefix`, in key order, with its value.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Value)> {
        self.inner.tables.read().scan_prefix(prefix)
    }

    /// Moves everything in the WAL into the append log and retires the WAL segments.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Checkpoints, then rewrites every live record into fresh segments and deletes the old
    /// ones, so deleted bytes leave the disk.
    pub fn compact(&self) -> Result<()> {
        self.inner.compact()
    }

    /// Makes every acknowledged commit durable now (meaningful with periodic durability).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_poison()?;
        let result = self.inner.wal.lock().sync();
        result.map_err(|e| self.inner.poison(e))
    }

    /// Sizes and positions.
    pub fn stats(&self) -> StoreStats {
        let manifest = self.inner.maintenance.lock().clone();
        let (last_lsn, wal_bytes, wal_syncs, wal_sync_micros) = {
            let wal = self.inner.wal.lock();
            let sealed: u64 = wal.sealed.iter().map(|(_, bytes)| bytes).sum();
            (
                wal.next_lsn - 1,
                wal.bytes + sealed,
                wal.syncs,
                wal.sync_micros,
            )
        };
        let tables = self.inner.tables.read();
        let (log_bytes, log_live_bytes) = tables.log_bytes();
        StoreStats {
            last_lsn,
            checkpoint_lsn: manifest.checkpoint_lsn,
            wal_bytes,
            log_bytes,
            log_live_bytes,
            log_segments: tables.segments.len(),
            memtable_bytes: tables.active.bytes + tables.frozen.as_ref().map_or(0, |f| f.bytes),
            wal_syncs,
            wal_sync_micros,
        }
    }

    /// The error that poisoned the store, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.queue.lock().poisoned.clone()
    }

    /// Stops the workers and makes everything acknowledged durable.
    pub fn close(mut self) -> Result<()> {
        self.stop_workers();
        self.sync()
    }

    fn stop_workers(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        {
            let _guard = self.inner.wake.lock();
            self.inner.wake_cv.notify_all();
        }
        for worker in self.workers.drain(..) {
            // A worker that panicked has nothing left to clean up; the store is still usable.
            let _ = worker.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_workers();
        if self.inner.poisoned_now().is_none() {
            // Best effort: periodic-durability commits become durable on a clean drop. Errors
            // here poison the (closing) store; callers who need to see them use `close`.
            let _ = self.sync();
        }
    }
}

impl Inner {
    pub(crate) fn poisoned_now(&self) -> Option<String> {
        self.queue.lock().poisoned.clone()
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match self.poisoned_now() {
            Some(cause) => Err(Error::Poisoned { cause }),
            None => Ok(()),
        }
    }

    /// Records `err` as the poison cause (first one wins) and returns it.
    pub(crate) fn poison(&self, err: Error) -> Error {
        let mut queue = self.queue.lock();
        if queue.poisoned.is_none() {
            queue.poisoned = Some(err.to_string());
        }
        self.queue_cv.notify_all();
        err
    }

    fn commit(&self, batch: WriteBatch) -> Result<u64> {
        let slot: Slot = Arc::new(Mutex::new(None));
        let mut queue = self.queue.lock();
        if let Some(cause) = &queue.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        queue.pending.push((batch, Arc::clone(&slot)));
        loop {
            if let Some(result) = slot.lock().take() {
                return result.map_err(|cause| Error::Poisoned { cause });
            }
            if let Some(cause) = &queue.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            if queue.leader_active {
                self.queue_cv.wait(&mut queue);
                continue;
            }
            queue.leader_active = true;
            // Let committers that were just woken by the previous group enqueue, so that
            // groups stay large under concurrency (one sync serves them all).
            parking_lot::MutexGuard::unlocked(&mut queue, std::thread::yield_now);
            let group = std::mem::take(&mut queue.pending);
            drop(queue);
            let result = self.write_group(&group);
            queue = self.queue.lock();
            queue.leader_active = false;
            match result {
                Ok(lsns) => {
                    for ((_, s), lsn) in group.iter().zip(lsns) {
                        *s.lock() = Some(Ok(lsn));
                    }
                }
                Err(err) => {
                    let cause = err.to_string();
                    if queue.poisoned.is_none() {
                        queue.poisoned = Some(cause.clone());
                    }
                    for (_, s) in &group {
                        *s.lock() = Some(Err(cause.clone()));
                    }
                }
            }
            self.queue_cv.notify_all();
        }
    }

    /// Writes, syncs and applies one commit group. Returns each batch's last LSN.
    fn write_group(&self, group: &[(WriteBatch, Slot)]) -> Result<Vec<u64>> {
        let mut wal = self.wal.lock();
        if wal.bytes >= self.opts.wal_segment_bytes_max {
            let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
            wal.roll(self.vfs.as_ref(), &self.dir, id)?;
        }
        let mut buf = Vec::with_capacity(group.iter().map(|(b, _)| b.bytes).sum());
        let mut lsn = wal.next_lsn;
        let mut last_lsns = Vec::with_capacity(group.len());
        for (batch, _) in group {
            for (i, op) in batch.ops.iter().enumerate() {
                let continues = i + 1 < batch.ops.len();
                encode_frame(
                    &mut buf,
                    wal.seed,
                    lsn,
                    op.kind(),
                    continues,
                    op.key(),
                    op.value(),
                );
                lsn += 1;
            }
            last_lsns.push(lsn - 1);
        }
        if !buf.is_empty() {
            let path = wal.path.clone();
            wal.file
                .append(&buf)
                .map_err(|e| Error::io("append to WAL", &path, e))?;
            wal.bytes += buf.len() as u64;
            wal.unsynced = true;
            if self.opts.durability == Durability::EveryCommit {
                wal.sync()?;
            }
            wal.next_lsn = lsn;
        }
        let memtable_bytes = {
            let mut tables = self.tables.write();
            for (batch, _) in group {
                for op in &batch.ops {
                    tables.active.apply(op);
                }
            }
            tables.active.bytes
        };
        drop(wal);
        if memtable_bytes >= self.opts.checkpoint_bytes {
            self.wake_cv.notify_all();
        }
        Ok(last_lsns)
    }

    fn needs_compaction(&self) -> bool {
        let (total, live) = self.tables.read().log_bytes();
        let dead = total.saturating_sub(live);
        dead >= self.opts.compaction_min_dead_bytes
            && dead as f64 >= self.opts.compaction_dead_ratio * total as f64
    }

    fn maintenance_tick(&self) {
        if self.poisoned_now().is_some() {
            return;
        }
        let memtable_bytes = self.tables.read().active.bytes;
        // Errors poison the store and surface on the next commit; nothing more to do here.
        if memtable_bytes >= self.opts.checkpoint_bytes {
            let _ = self.checkpoint();
        }
        if self.needs_compaction() {
            let _ = self.compact();
        }
    }
}

fn spawn_workers(inner: &Arc<Inner>) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    if inner.opts.background_maintenance {
        let inner = Arc::clone(inner);
        workers.push(std::thread::spawn(move || {
            worker_loop(&inner, Duration::from_secs(1), Inner::maintenance_tick)
        }));
    }
    if let Durability::Periodic { interval_ms } = inner.opts.durability {
        let inner = Arc::clone(inner);
        workers.push(std::thread::spawn(move || {
            worker_loop(&inner, Duration::from_millis(interval_ms.max(1)), |inner| {
                if inner.poisoned_now().is_none() {
                    let result = inner.wal.lock().sync();
                    if let Err(err) = result {
                        inner.poison(err);
                    }
                }
            })
        }));
    }
    workers
}

fn worker_loop(inner: &Arc<Inner>, period: Duration, tick: impl Fn(&Inner)) {
    let mut deadline = Instant::now() + period;
    loop {
        {
            let mut guard = inner.wake.lock();
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            inner.wake_cv.wait_until(&mut guard, deadline);
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
        }
        if Instant::now() >= deadline {
            deadline = Instant::now() + period;
        }
        tick(inner);
    }
}
