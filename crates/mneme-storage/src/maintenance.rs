//! Checkpoints (WAL → append log) and compaction (rewrite live records, drop dead bytes).
//!
//! Both follow the same crash-safe order: write new segment files and sync them, sync the
//! directory, atomically replace the manifest, and only then delete what the new manifest
//! no longer needs. Recovery deletes segments that no manifest names, so a crash at any step
//! leaves either the old or the new state, both complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::frame::{LOG_MAGIC, OpKind, SegmentHeader, encode_frame, encode_segment_header};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::store::Inner;
use crate::tables::{Loc, Segment};
use crate::vfs::{Vfs, VfsFile};
use crate::wal::{log_file_name, wal_file_name};

/// Buffered writer of one new append-log segment.
struct SegmentWriter {
    id: u64,
    path: PathBuf,
    file: Box<dyn VfsFile>,
    seed: u64,
    buf: Vec<u8>,
    /// Bytes already handed to the file.
    flushed: usize,
}

const SEGMENT_WRITE_CHUNK_BYTES: usize = 8 * 1024 * 1024;

impl SegmentWriter {
    fn create(vfs: &dyn Vfs, dir: &Path, id: u64) -> Result<Self> {
        let path = dir.join(log_file_name(id));
        let file = vfs
            .create(&path)
            .map_err(|e| Error::io("create log segment", &path, e))?;
        let seed = rand::random::<u64>();
        let header = encode_segment_header(LOG_MAGIC, SegmentHeader { seed, file_id: id });
        Ok(Self {
            id,
            path,
            file,
            seed,
            buf: header.to_vec(),
            flushed: 0,
        })
    }

    fn len(&self) -> usize {
        self.flushed + self.buf.len()
    }

    /// Appends a frame and returns where its value starts in the file.
    fn add(&mut self, lsn: u64, kind: OpKind, key: &[u8], value: &[u8]) -> Result<usize> {
        let value_offset = self.len() + crate::frame::FRAME_HEADER_BYTES + key.len();
        encode_frame(&mut self.buf, self.seed, lsn, kind, false, key, value);
        if self.buf.len() >= SEGMENT_WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(value_offset)
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .append(&self.buf)
            .map_err(|e| Error::io("write log segment", &self.path, e))?;
        self.flushed += self.buf.len();
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        self.flush()?;
        self.file
            .sync()
            .map_err(|e| Error::io("sync log segment", &self.path, e))?;
        Ok(self.id)
    }
}

impl Inner {
    fn new_file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::SeqCst)
    }

    fn sync_dir(&self) -> Result<()> {
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync data directory", &self.dir, e))
    }

    fn store_manifest(&self, manifest: &mut Manifest) -> Result<()> {
        manifest.next_file_id = self.next_file_id.load(Ordering::SeqCst);
        manifest.store(self.vfs.as_ref(), &self.dir)
    }

    fn map_segment(&self, id: u64) -> Result<Segment> {
        let path = self.dir.join(log_file_name(id));
        let map = self
            .vfs
            .map(&path)
            .map_err(|e| Error::io("map log segment", &path, e))?;
        Ok(Segment { map, live_bytes: 0 })
    }

    fn remove_files(&self, names: impl IntoIterator<Item = String>) -> Result<()> {
        for name in names {
            let path = self.dir.join(name);
            self.vfs
                .remove(&path)
                .map_err(|e| Error::io("remove retired file", &path, e))?;
        }
        self.sync_dir()
    }

    /// See [`crate::Store::checkpoint`]. Any failure poisons the store.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut manifest = self.maintenance.lock();
        self.check_poison()?;
        let result = self.checkpoint_locked(&mut manifest);
        result.map_err(|e| self.poison(e))
    }

    fn checkpoint_locked(&self, manifest: &mut Manifest) -> Result<()> {
        // Freeze: seal the WAL so every frame at or below `lsn` is in a retired segment, and
        // move the active memtable aside (still readable) in the same critical section.
        let (frozen, lsn, retired) = {
            let mut wal = self.wal.lock();
            if !wal.is_empty() {
                wal.roll(self.vfs.as_ref(), &self.dir, self.new_file_id())?;
            }
            if wal.sealed.is_empty() {
                return Ok(());
            }
            let retired = std::mem::take(&mut wal.sealed);
            let mut tables = self.tables.write();
            let frozen = Arc::new(std::mem::take(&mut tables.active));
            tables.frozen = Some(Arc::clone(&frozen));
            (frozen, wal.next_lsn - 1, retired)
        };
        let written = self.write_memtable(&frozen, lsn)?;
        manifest.checkpoint_lsn = lsn;
        if let Some((id, _)) = &written {
            manifest.segments.push(*id);
        }
        self.store_manifest(manifest)?;
        self.publish_checkpoint(&frozen, written)?;
        self.remove_files(retired.into_iter().map(|(id, _)| wal_file_name(id)))
    }

    /// Writes a frozen memtable as one segment: prefix tombstones first (they predate every
    /// entry that survived them), then entries in key order.
    fn write_memtable(&self, table: &Memtable, lsn: u64) -> Result<Option<(u64, Vec<usize>)>> {
        if table.is_empty() {
            return Ok(None);
        }
        let mut writer = SegmentWriter::create(self.vfs.as_ref(), &self.dir, self.new_file_id())?;
        for prefix in &table.prefix_tombstones {
            writer.add(lsn, OpKind::DeletePrefix, prefix, &[])?;
        }
        let mut offsets = Vec::with_capacity(table.entries.len());
        for (key, value) in &table.entries {
            let offset = match value {
                Some(v) => writer.add(lsn, OpKind::Put, key, v)?,
                None => writer.add(lsn, OpKind::Delete, key, &[])?,
            };
            offsets.push(offset);
        }
        let id = writer.finish()?;
        self.sync_dir()?;
        Ok(Some((id, offsets)))
    }

    fn publish_checkpoint(
        &self,
        frozen: &Memtable,
        written: Option<(u64, Vec<usize>)>,
    ) -> Result<()> {
        let segment = match &written {
            Some((id, _)) => Some((*id, self.map_segment(*id)?)),
            None => None,
        };
        let mut tables = self.tables.write();
        if let Some((id, seg)) = segment {
            tables.segments.insert(id, seg);
        }
        for prefix in &frozen.prefix_tombstones {
            tables.keydir_delete_prefix(prefix);
        }
        if let Some((id, offsets)) = written {
            for ((key, value), offset) in frozen.entries.iter().zip(offsets) {
                match value {
                    Some(v) => tables.keydir_put(
                        key,
                        Loc {
                            segment: id,
                            offset,
                            len: v.len(),
                        },
                    ),
                    None => tables.keydir_delete(key),
                }
            }
        }
        tables.frozen = None;
        Ok(())
    }

    /// See [`crate::Store::compact`]. Any failure poisons the store.
    pub(crate) fn compact(&self) -> Result<()> {
        self.checkpoint()?;
        let mut manifest = self.maintenance.lock();
        self.check_poison()?;
        let result = self.compact_locked(&mut manifest);
        result.map_err(|e| self.poison(e))
    }

    fn compact_locked(&self, manifest: &mut Manifest) -> Result<()> {
        // The key directory only changes under the maintenance lock, which we hold, so this
        // snapshot stays exact until we publish.
        let (entries, maps) = {
            let tables = self.tables.read();
            let entries: Vec<(Vec<u8>, Loc)> =
                tables.keydir.iter().map(|(k, l)| (k.clone(), *l)).collect();
            let maps: Vec<(u64, Arc<dyn crate::vfs::MappedBytes>)> = tables
                .segments
                .iter()
                .map(|(id, s)| (*id, Arc::clone(&s.map)))
                .collect();
            (entries, maps)
        };
        let maps: std::collections::BTreeMap<u64, _> = maps.into_iter().collect();
        let mut new_ids = Vec::new();
        let mut new_locs = Vec::with_capacity(entries.len());
        let mut writer: Option<SegmentWriter> = None;
        for (key, loc) in &entries {
            let w = match writer.take() {
                Some(w) if (w.len() as u64) < self.opts.log_segment_bytes_max => writer.insert(w),
                full => {
                    if let Some(full) = full {
                        full.finish()?;
                    }
                    let w =
                        SegmentWriter::create(self.vfs.as_ref(), &self.dir, self.new_file_id())?;
                    new_ids.push(w.id);
                    writer.insert(w)
                }
            };
            let map = maps.get(&loc.segment).ok_or_else(|| {
                Error::corruption(
                    self.dir.join(log_file_name(loc.segment)),
                    loc.offset as u64,
                    "key directory points at a segment that is not published",
                )
            })?;
            let value = &map.bytes()[loc.offset..loc.offset + loc.len];
            let offset = w.add(manifest.checkpoint_lsn, OpKind::Put, key, value)?;
            new_locs.push(Loc {
                segment: w.id,
                offset,
                len: loc.len,
            });
        }
        if let Some(w) = writer.take() {
            w.finish()?;
        }
        self.sync_dir()?;
        let old_ids = std::mem::replace(&mut manifest.segments, new_ids.clone());
        self.store_manifest(manifest)?;
        let mut mapped = Vec::with_capacity(new_ids.len());
        for id in &new_ids {
            mapped.push((*id, self.map_segment(*id)?));
        }
        {
            let mut tables = self.tables.write();
            tables.segments = mapped.into_iter().collect();
            tables.keydir.clear();
            for ((key, _), loc) in entries.into_iter().zip(new_locs) {
                tables.keydir_put(&key, loc);
            }
        }
        self.remove_files(old_ids.into_iter().map(log_file_name))
    }
}
