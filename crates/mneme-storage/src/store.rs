//! [`Store`]: open, group commit with in-order apply, replay, snapshots, retirement.
//!
//! Group commit: a committer queues its entry with a closure to run once the entry is
//! durable; whoever finds no leader becomes leader, takes every queued entry, writes them in
//! one `append`, syncs once, runs their closures in LSN order and only then wakes the
//! committers. The closures are how the owner applies entries to its state in exactly the
//! log's order, never before they are durable. A failed write or sync poisons the store:
//! the failing group and everything after it get an error, never an acknowledgement, and
//! their closures never run.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::frame::{FRAME_BODY_BYTES_MAX, encode_frame, entry_bytes};
use crate::manifest::{Manifest, SnapshotRef, TAG_BYTES_MAX};
use crate::recovery::{ENTRY_BYTES_MAX, EntryRef, Torn, scan_segment};
use crate::vfs::{MappedBytes, RealFs, Vfs, VfsFile};
use crate::wal::{SealedSegment, WalWriter, snapshot_file_name, wal_file_name};

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
    /// Keep every WAL segment instead of retiring the ones snapshots cover: the complete
    /// history stays on disk (for audits and for tests that replay it). The log then grows
    /// without bound.
    pub keep_wal: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::EveryCommit,
            wal_segment_bytes_max: 64 * 1024 * 1024,
            keep_wal: false,
        }
    }
}

/// Sizes and positions, for stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// LSN of the last committed frame (0 when none).
    pub last_lsn: u64,
    /// Bytes in WAL segments not yet retired.
    pub wal_bytes: u64,
    /// WAL segments not yet retired (the active one included).
    pub wal_segments: usize,
    /// Bytes of live snapshot files.
    pub snapshot_bytes: u64,
    /// Live snapshot files.
    pub snapshots: usize,
    /// WAL `fdatasync` calls since open.
    pub wal_syncs: u64,
    /// Microseconds spent in them.
    pub wal_sync_micros: u64,
}

type Slot = Arc<Mutex<Option<Result<u64, String>>>>;
type Apply = Box<dyn FnOnce(u64) + Send>;

struct Pending {
    payload: Vec<u8>,
    apply: Apply,
    slot: Slot,
}

#[derive(Default)]
struct CommitQueue {
    pending: Vec<Pending>,
    leader_active: bool,
    poisoned: Option<String>,
    /// Set by the first commit: replay is only possible before it.
    committed: bool,
}

pub(crate) struct Inner {
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    _lock: Box<dyn fmt::Debug + Send + Sync>,
    queue: Mutex<CommitQueue>,
    queue_cv: Condvar,
    pub(crate) wal: Mutex<WalWriter>,
    /// The live manifest; held while snapshots are installed.
    manifest: Mutex<Manifest>,
    pub(crate) next_file_id: AtomicU64,
    /// WAL and snapshot bytes as last seen under their locks (see [`Store::bytes_on_disk`]).
    wal_bytes_seen: AtomicU64,
    snapshot_bytes_seen: AtomicU64,
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

/// A crash-safe log of opaque entries, plus the snapshot files that let its owner retire
/// old entries.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("mneme-doc-{}", std::process::id()));
/// use mneme_storage::{Options, Store};
/// let store = Store::open(&dir, Options::default())?;
/// let (lsn, applied) = store.commit(b"hello".to_vec(), |lsn| lsn)?; // durable when this returns
/// assert_eq!(lsn, applied);
/// drop(store);
/// let store = Store::open(&dir, Options::default())?;
/// let mut seen = Vec::new();
/// store.replay(&mut |e| {
///     seen.push(e.payload.to_vec());
///     Ok(())
/// })?;
/// assert_eq!(seen, vec![b"hello".to_vec()]);
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
            manifest: Mutex::new(recovered.manifest),
            next_file_id: AtomicU64::new(recovered.next_file_id + 1),
            wal_bytes_seen: AtomicU64::new(0),
            snapshot_bytes_seen: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
        });
        let workers = spawn_workers(&inner);
        Ok(Self { inner, workers })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends `payload` as one entry and, once it is durable (with
    /// [`Durability::EveryCommit`]; written, with `Periodic`), runs `apply(lsn)` — in LSN
    /// order with every other commit's — before returning the entry's LSN and what `apply`
    /// returned. On error the entry may or may not be in the log, and `apply` did not run.
    pub fn commit<R, F>(&self, payload: Vec<u8>, apply: F) -> Result<(u64, R)>
    where
        R: Send + 'static,
        F: FnOnce(u64) -> R + Send + 'static,
    {
        if payload.len() > ENTRY_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "entry",
                actual: payload.len(),
                limit: ENTRY_BYTES_MAX,
            });
        }
        let out: Arc<Mutex<Option<R>>> = Arc::new(Mutex::new(None));
        let out_in = Arc::clone(&out);
        let apply: Apply = Box::new(move |lsn| {
            let r = apply(lsn);
            *out_in.lock() = Some(r);
        });
        let lsn = self.inner.commit(payload, apply)?;
        let r = out.lock().take().ok_or_else(|| Error::Poisoned {
            cause: "the entry's apply step did not complete".into(),
        })?;
        Ok((lsn, r))
    }

    /// Hands every entry recovered at open to `f`, oldest first. Only before the first
    /// commit (afterwards it is an error). An `Err(reason)` from `f` stops the replay and
    /// becomes [`Error::Corruption`] naming the entry's file and offset.
    pub fn replay(&self, f: &mut dyn FnMut(EntryRef<'_>) -> Result<(), String>) -> Result<()> {
        if self.inner.queue.lock().committed {
            return Err(Error::Poisoned {
                cause: "replay after the first commit".into(),
            });
        }
        let segments = self.inner.wal.lock().sealed.clone();
        let mut last_lsn = 0;
        for seg in segments {
            let path = self.inner.dir.join(wal_file_name(seg.id));
            // Mapped, not read: recovery left every recovered segment sealed (appends go to
            // a new one) and truncated its tail already, so nothing changes these files
            // while they are mapped (docs/safety.md).
            let map = self
                .inner
                .vfs
                .map(&path)
                .map_err(|e| Error::io("map WAL segment", &path, e))?;
            let buf = map.bytes();
            let mut deliver = |e: EntryRef<'_>| {
                f(e).map_err(|reason| Error::corruption(e.path, e.offset, reason))
            };
            match scan_segment(&path, buf, seg.id, last_lsn, false, &mut deliver) {
                Ok(scanned) => last_lsn = scanned.last_lsn,
                Err(Torn::Error(err)) => return Err(err),
                Err(Torn::CreationTorn) => {
                    return Err(Error::corruption(&path, 0, "segment header vanished"));
                }
            }
        }
        Ok(())
    }

    /// The live snapshots, in tag order.
    pub fn snapshots(&self) -> Vec<SnapshotRef> {
        self.inner.manifest.lock().snapshots.clone()
    }

    /// The bytes of a live snapshot, after checking its length and checksum.
    pub fn read_snapshot(&self, snapshot: &SnapshotRef) -> Result<Arc<dyn MappedBytes>> {
        let path = self.inner.dir.join(snapshot_file_name(snapshot.file_id));
        let map = self
            .inner
            .vfs
            .map(&path)
            .map_err(|e| Error::io("map snapshot", &path, e))?;
        let bytes = map.bytes();
        if bytes.len() as u64 != snapshot.bytes {
            return Err(Error::corruption(
                &path,
                bytes.len().min(snapshot.bytes as usize) as u64,
                format!(
                    "snapshot is {} bytes, the manifest says {}",
                    bytes.len(),
                    snapshot.bytes
                ),
            ));
        }
        if crc32fast::hash(bytes) != snapshot.crc {
            return Err(Error::corruption(&path, 0, "snapshot checksum mismatch"));
        }
        Ok(map)
    }

    /// Starts a snapshot file for `tag` reflecting every entry up to `lsn`. Nothing refers
    /// to it until [`Store::install`] names it.
    pub fn begin_snapshot(&self, tag: &[u8], lsn: u64) -> Result<SnapshotWriter> {
        self.inner.check_poison()?;
        if tag.is_empty() || tag.len() > TAG_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "snapshot tag",
                actual: tag.len(),
                limit: TAG_BYTES_MAX,
            });
        }
        let file_id = self.inner.next_file_id.fetch_add(1, Ordering::SeqCst);
        let path = self.inner.dir.join(snapshot_file_name(file_id));
        let file = self
            .inner
            .vfs
            .create(&path)
            .map_err(|e| self.inner.poison(Error::io("create snapshot", &path, e)))?;
        Ok(SnapshotWriter {
            inner: Arc::clone(&self.inner),
            file,
            path,
            tag: tag.to_vec(),
            file_id,
            lsn,
            buf: Vec::with_capacity(SNAPSHOT_BUFFER_BYTES),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            failed: false,
            finished: false,
        })
    }

    /// Makes `snapshots` the live ones for their tags (replacing older ones), durably; then
    /// removes the files they replace and retires every WAL segment whose entries are all
    /// below `retain_from_lsn`. The caller promises that every entry below
    /// `retain_from_lsn` is reflected in a live snapshot.
    pub fn install(&self, snapshots: Vec<SnapshotRef>, retain_from_lsn: u64) -> Result<()> {
        let inner = &self.inner;
        inner.check_poison()?;
        let mut manifest = inner.manifest.lock();
        let mut next = manifest.clone();
        let mut replaced = Vec::new();
        for s in snapshots {
            match next.snapshots.binary_search_by(|x| x.tag.cmp(&s.tag)) {
                Ok(i) => replaced.push(std::mem::replace(&mut next.snapshots[i], s).file_id),
                Err(i) => next.snapshots.insert(i, s),
            }
        }
        next.next_file_id = inner.next_file_id.load(Ordering::SeqCst);
        if next != *manifest {
            next.store(inner.vfs.as_ref(), &inner.dir)
                .map_err(|e| inner.poison(e))?;
            *manifest = next;
        }
        drop(manifest);
        for id in &replaced {
            inner.remove_file(&snapshot_file_name(*id))?;
        }
        inner.retire(retain_from_lsn)?;
        if !replaced.is_empty() {
            inner
                .vfs
                .sync_dir(&inner.dir)
                .map_err(|e| inner.poison(Error::io("sync data directory", &inner.dir, e)))?;
        }
        Ok(())
    }

    /// Like [`Store::install`], but `snapshots` become the *only* live ones: every other
    /// snapshot is dropped (a replica adopting another's state wholesale).
    pub fn install_replacing_all(
        &self,
        snapshots: Vec<SnapshotRef>,
        retain_from_lsn: u64,
    ) -> Result<()> {
        self.install_replacing(snapshots, &|_| true, retain_from_lsn)
    }

    /// Like [`Store::install`], but every live snapshot whose tag `covers` is dropped unless
    /// `snapshots` has one for its tag (a replica adopting another's state for a part of
    /// its data: one shard's agents).
    pub fn install_replacing(
        &self,
        snapshots: Vec<SnapshotRef>,
        covers: &dyn Fn(&[u8]) -> bool,
        retain_from_lsn: u64,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.check_poison()?;
        let mut manifest = inner.manifest.lock();
        let mut next = manifest.clone();
        let (replaced, kept): (Vec<SnapshotRef>, Vec<SnapshotRef>) =
            std::mem::take(&mut next.snapshots)
                .into_iter()
                .partition(|s| covers(&s.tag) || snapshots.iter().any(|n| n.tag == s.tag));
        let replaced: Vec<u64> = replaced.iter().map(|s| s.file_id).collect();
        next.snapshots = kept;
        next.snapshots.extend(snapshots);
        next.snapshots.sort_by(|a, b| a.tag.cmp(&b.tag));
        next.snapshots.dedup_by(|a, b| a.tag == b.tag);
        next.next_file_id = inner.next_file_id.load(Ordering::SeqCst);
        next.store(inner.vfs.as_ref(), &inner.dir)
            .map_err(|e| inner.poison(e))?;
        *manifest = next;
        drop(manifest);
        for id in &replaced {
            inner.remove_file(&snapshot_file_name(*id))?;
        }
        inner.retire(retain_from_lsn)?;
        inner
            .vfs
            .sync_dir(&inner.dir)
            .map_err(|e| inner.poison(Error::io("sync data directory", &inner.dir, e)))?;
        Ok(())
    }

    /// Makes every acknowledged commit durable now (meaningful with periodic durability).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_poison()?;
        let result = self.inner.wal.lock().sync();
        result.map_err(|e| self.inner.poison(e))
    }

    /// Sizes and positions.
    pub fn stats(&self) -> StoreStats {
        let (snapshot_bytes, snapshots) = {
            let m = self.inner.manifest.lock();
            (m.snapshots.iter().map(|s| s.bytes).sum(), m.snapshots.len())
        };
        self.inner
            .snapshot_bytes_seen
            .store(snapshot_bytes, Ordering::Relaxed);
        let wal = self.inner.wal.lock();
        self.inner
            .wal_bytes_seen
            .store(wal.total_bytes(), Ordering::Relaxed);
        StoreStats {
            last_lsn: wal.next_lsn - 1,
            wal_bytes: wal.total_bytes(),
            wal_segments: wal.sealed.len() + 1,
            snapshot_bytes,
            snapshots,
            wal_syncs: wal.syncs,
            wal_sync_micros: wal.sync_micros,
        }
    }

    /// Bytes of the WAL and the snapshots, without waiting: where a commit (through its
    /// fsync) or a snapshot install holds a lock, the size as last seen under it. For
    /// callers that must not block, like a stats read served inline.
    pub fn bytes_on_disk(&self) -> u64 {
        let inner = &self.inner;
        let wal = match inner.wal.try_lock() {
            Some(wal) => {
                let bytes = wal.total_bytes();
                inner.wal_bytes_seen.store(bytes, Ordering::Relaxed);
                bytes
            }
            None => inner.wal_bytes_seen.load(Ordering::Relaxed),
        };
        let snapshots = match inner.manifest.try_lock() {
            Some(m) => {
                let bytes = m.snapshots.iter().map(|s| s.bytes).sum();
                inner.snapshot_bytes_seen.store(bytes, Ordering::Relaxed);
                bytes
            }
            None => inner.snapshot_bytes_seen.load(Ordering::Relaxed),
        };
        wal + snapshots
    }

    /// The error that poisoned the store, if any.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.queue.lock().poisoned.clone()
    }

    /// Marks the store poisoned: every later commit fails with `cause` until reopened. For
    /// owners whose own state can no longer be trusted to match the log.
    pub fn poison(&self, cause: &str) {
        self.inner.poison(Error::Poisoned {
            cause: cause.to_owned(),
        });
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

const SNAPSHOT_BUFFER_BYTES: usize = 1 << 20;

/// A snapshot file being written: an [`io::Write`] that buffers, checksums and counts.
/// Finish it with [`SnapshotWriter::finish`]; dropping it unfinished removes the file.
pub struct SnapshotWriter {
    inner: Arc<Inner>,
    file: Box<dyn VfsFile>,
    path: PathBuf,
    tag: Vec<u8>,
    file_id: u64,
    lsn: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    bytes: u64,
    failed: bool,
    finished: bool,
}

impl fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl SnapshotWriter {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier snapshot write failed"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.append(&self.buf) {
            self.failed = true;
            let kind = e.kind();
            let err = self
                .inner
                .poison(Error::io("write snapshot", &self.path, e));
            return Err(io::Error::new(kind, err.to_string()));
        }
        self.buf.clear();
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and syncs the file; returns the reference to [`Store::install`].
    pub fn finish(mut self) -> Result<SnapshotRef> {
        self.flush_buf()
            .map_err(|e| Error::io("write snapshot", &self.path, e))?;
        if let Err(e) = self.file.sync() {
            self.failed = true;
            return Err(self.inner.poison(Error::io("sync snapshot", &self.path, e)));
        }
        self.finished = true;
        Ok(SnapshotRef {
            tag: std::mem::take(&mut self.tag),
            file_id: self.file_id,
            lsn: self.lsn,
            bytes: self.bytes,
            crc: self.crc.clone().finalize(),
        })
    }
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier snapshot write failed"));
        }
        self.crc.update(data);
        self.bytes += data.len() as u64;
        if self.buf.len() + data.len() > SNAPSHOT_BUFFER_BYTES {
            self.flush_buf()?;
        }
        if data.len() >= SNAPSHOT_BUFFER_BYTES {
            self.buf.extend_from_slice(data);
            return self.flush_buf();
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Abandoned: no manifest names the file (recovery would remove it too).
            let _ = self.inner.vfs.remove(&self.path);
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

    fn remove_file(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        self.vfs
            .remove(&path)
            .map_err(|e| self.poison(Error::io("remove retired file", &path, e)))
    }

    /// Removes WAL segments whose entries are all below `lsn` (sealing the active segment
    /// first when that applies to it, so that old bytes can leave the disk).
    fn retire(&self, lsn: u64) -> Result<()> {
        if self.opts.keep_wal {
            return Ok(());
        }
        let retired: Vec<SealedSegment> = {
            let mut wal = self.wal.lock();
            if !wal.is_empty() && wal.last_lsn_here < lsn {
                let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
                wal.roll(self.vfs.as_ref(), &self.dir, id)
                    .map_err(|e| self.poison(e))?;
            }
            let (gone, kept): (Vec<_>, Vec<_>) = wal.sealed.iter().partition(|s| s.last_lsn < lsn);
            wal.sealed = kept;
            gone
        };
        for seg in &retired {
            self.remove_file(&wal_file_name(seg.id))?;
        }
        if !retired.is_empty() {
            self.vfs
                .sync_dir(&self.dir)
                .map_err(|e| self.poison(Error::io("sync data directory", &self.dir, e)))?;
        }
        Ok(())
    }

    fn commit(&self, payload: Vec<u8>, apply: Apply) -> Result<u64> {
        let slot: Slot = Arc::new(Mutex::new(None));
        let mut queue = self.queue.lock();
        if let Some(cause) = &queue.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        queue.committed = true;
        queue.pending.push(Pending {
            payload,
            apply,
            slot: Arc::clone(&slot),
        });
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
            let slots: Vec<Slot> = group.iter().map(|p| Arc::clone(&p.slot)).collect();
            let result = self.write_group(group);
            queue = self.queue.lock();
            queue.leader_active = false;
            match result {
                Ok(lsns) => {
                    for (s, lsn) in slots.iter().zip(lsns) {
                        *s.lock() = Some(Ok(lsn));
                    }
                }
                Err(err) => {
                    let cause = err.to_string();
                    if queue.poisoned.is_none() {
                        queue.poisoned = Some(cause.clone());
                    }
                    for s in &slots {
                        *s.lock() = Some(Err(cause.clone()));
                    }
                }
            }
            self.queue_cv.notify_all();
        }
    }

    /// Writes and syncs one commit group, then runs its apply steps in LSN order. Returns
    /// each entry's LSN.
    fn write_group(&self, group: Vec<Pending>) -> Result<Vec<u64>> {
        let mut wal = self.wal.lock();
        let group_bytes: usize = group.iter().map(|p| entry_bytes(p.payload.len())).sum();
        if !wal.is_empty() && wal.bytes + group_bytes as u64 > self.opts.wal_segment_bytes_max {
            let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
            wal.roll(self.vfs.as_ref(), &self.dir, id)?;
        }
        let mut buf = Vec::with_capacity(group_bytes);
        let mut lsn = wal.next_lsn;
        let mut lsns = Vec::with_capacity(group.len());
        for p in &group {
            let mut chunks = p.payload.chunks(FRAME_BODY_BYTES_MAX).peekable();
            if chunks.peek().is_none() {
                encode_frame(&mut buf, wal.seed, lsn, false, &[]);
                lsn += 1;
            }
            while let Some(chunk) = chunks.next() {
                encode_frame(&mut buf, wal.seed, lsn, chunks.peek().is_some(), chunk);
                lsn += 1;
            }
            lsns.push(lsn - 1);
        }
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
        wal.last_lsn_here = lsn - 1;
        self.wal_bytes_seen
            .store(wal.total_bytes(), Ordering::Relaxed);
        drop(buf);
        // Durable: apply in LSN order, before any committer of this group is answered. A
        // panic here means the owner's state may no longer match the log: poison the store
        // (release builds abort on panic instead; see ARCHITECTURE.md).
        for (p, lsn) in group.into_iter().zip(&lsns) {
            let apply = p.apply;
            let lsn = *lsn;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || apply(lsn))).is_err() {
                return Err(Error::Poisoned {
                    cause: format!(
                        "applying entry {lsn} panicked; memory may not match the log, reopen to recover"
                    ),
                });
            }
        }
        drop(wal);
        Ok(lsns)
    }
}

fn spawn_workers(inner: &Arc<Inner>) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
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
