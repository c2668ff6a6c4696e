//! Recovery on open: rebuild the key directory from the manifest's segments, replay the WAL
//! past the checkpoint into the memtable, truncate a torn tail, and remove leftovers.
//!
//! What counts as a torn tail and what as corruption:
//! - append-log segments are synced before any manifest names them, so every bad byte in a
//!   listed segment is corruption;
//! - a sealed (non-last) WAL segment was synced before its successor was created, so a bad
//!   frame there is corruption;
//! - in the last WAL segment, the first frame that does not validate ends the log: bytes from
//!   there on (and any batch it leaves incomplete) were never acknowledged under
//!   `EveryCommit` durability, and are truncated.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::frame::{
    Decoded, Frame, LOG_MAGIC, OpKind, SEGMENT_HEADER_BYTES, WAL_MAGIC, decode_frame,
    decode_segment_header,
};
use crate::manifest::Manifest;
use crate::memtable::{Memtable, Op};
use crate::tables::{Loc, Segment, Tables};
use crate::vfs::Vfs;
use crate::wal::{log_file_name, parse_file_name, wal_file_name};

/// The state recovered from disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) manifest: Manifest,
    pub(crate) tables: Tables,
    /// WAL segments still needed (id, bytes), oldest first.
    pub(crate) wal_segments: Vec<(u64, u64)>,
    pub(crate) next_lsn: u64,
    pub(crate) next_file_id: u64,
}

pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path) -> Result<Recovered> {
    let manifest = Manifest::load(vfs, dir)?.unwrap_or(Manifest {
        checkpoint_lsn: 0,
        next_file_id: 1,
        segments: Vec::new(),
    });
    let names = vfs
        .list(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?;
    let mut wal_ids = Vec::new();
    let mut log_ids = Vec::new();
    for (is_wal, id) in names.iter().filter_map(|n| parse_file_name(n)) {
        if is_wal {
            wal_ids.push(id);
        } else {
            log_ids.push(id);
        }
    }
    let max_seen = wal_ids.iter().chain(&log_ids).copied().max().unwrap_or(0);

    let mut tables = Tables::default();
    for id in &manifest.segments {
        load_segment(vfs, dir, *id, &mut tables)?;
    }
    let listed: HashSet<u64> = manifest.segments.iter().copied().collect();
    let mut removed = false;
    for id in log_ids.into_iter().filter(|id| !listed.contains(id)) {
        remove(vfs, &dir.join(log_file_name(id)))?;
        removed = true;
    }

    wal_ids.sort_unstable();
    let mut replay = Replay {
        checkpoint_lsn: manifest.checkpoint_lsn,
        last_lsn: 0,
        memtable: Memtable::default(),
    };
    let mut wal_segments = Vec::new();
    for (i, id) in wal_ids.iter().enumerate() {
        let is_last = i + 1 == wal_ids.len();
        match replay.segment(vfs, dir, *id, is_last)? {
            Some(bytes) => wal_segments.push((*id, bytes)),
            None => removed = true,
        }
    }
    if removed {
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("sync data directory", dir, e))?;
    }
    tables.active = replay.memtable;
    Ok(Recovered {
        next_lsn: manifest.checkpoint_lsn.max(replay.last_lsn) + 1,
        next_file_id: manifest.next_file_id.max(max_seen + 1),
        manifest,
        tables,
        wal_segments,
    })
}

fn remove(vfs: &dyn Vfs, path: &Path) -> Result<()> {
    vfs.remove(path)
        .map_err(|e| Error::io("remove leftover file", path, e))
}

/// Maps a listed append-log segment, verifies every frame and applies it to the key directory.
fn load_segment(vfs: &dyn Vfs, dir: &Path, id: u64, tables: &mut Tables) -> Result<()> {
    let path = dir.join(log_file_name(id));
    let map = vfs.map(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::corruption(&path, 0, "segment named by the manifest is missing")
        }
        _ => Error::io("map log segment", &path, e),
    })?;
    let bytes = map.bytes();
    let header =
        decode_segment_header(LOG_MAGIC, bytes).map_err(|r| Error::corruption(&path, 0, r))?;
    if header.file_id != id {
        return Err(Error::corruption(
            &path,
            24,
            "segment id does not match its name",
        ));
    }
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut frames = Vec::new();
    loop {
        match decode_frame(bytes, offset, header.seed) {
            Decoded::Frame(frame, next) => {
                frames.push((
                    frame.kind,
                    frame.key.to_vec(),
                    frame.value_offset,
                    frame.value.len(),
                ));
                offset = next;
            }
            Decoded::End => break,
            Decoded::Invalid(reason) => {
                return Err(Error::corruption(&path, offset as u64, reason));
            }
        }
    }
    tables.segments.insert(
        id,
        Segment {
            map: std::sync::Arc::clone(&map),
            live_bytes: 0,
        },
    );
    for (kind, key, value_offset, len) in frames {
        match kind {
            OpKind::Put => tables.keydir_put(
                &key,
                Loc {
                    segment: id,
                    offset: value_offset,
                    len,
                },
            ),
            OpKind::Delete => tables.keydir_delete(&key),
            OpKind::DeletePrefix => tables.keydir_delete_prefix(&key),
        }
    }
    Ok(())
}

struct Replay {
    checkpoint_lsn: u64,
    last_lsn: u64,
    memtable: Memtable,
}

impl Replay {
    /// Replays one WAL segment. Returns its valid length, or `None` when it was a segment
    /// whose creation was torn (no complete header, so nothing in it was ever durable) and
    /// has been removed.
    fn segment(
        &mut self,
        vfs: &dyn Vfs,
        dir: &Path,
        id: u64,
        is_last: bool,
    ) -> Result<Option<u64>> {
        let path = dir.join(wal_file_name(id));
        let buf = vfs
            .read(&path)
            .map_err(|e| Error::io("read WAL segment", &path, e))?;
        let header = match decode_segment_header(WAL_MAGIC, &buf) {
            Ok(header) => header,
            Err(_) if is_last && buf.len() <= SEGMENT_HEADER_BYTES => {
                remove(vfs, &path)?;
                return Ok(None);
            }
            Err(reason) => return Err(Error::corruption(&path, 0, reason)),
        };
        if header.file_id != id {
            return Err(Error::corruption(
                &path,
                24,
                "segment id does not match its name",
            ));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut batch_start = offset;
        let mut batch: Vec<Frame<'_>> = Vec::new();
        loop {
            match decode_frame(&buf, offset, header.seed) {
                Decoded::Frame(frame, next) => {
                    let prev = batch.last().map_or(self.last_lsn, |f| f.lsn);
                    if frame.lsn <= prev {
                        return Err(Error::corruption(
                            &path,
                            offset as u64,
                            format!("LSN {} does not follow {prev}", frame.lsn),
                        ));
                    }
                    batch.push(frame);
                    offset = next;
                    if !frame.continues {
                        self.apply(&batch);
                        batch.clear();
                        batch_start = offset;
                    }
                }
                Decoded::End => break,
                Decoded::Invalid(_) if is_last => break,
                Decoded::Invalid(reason) => {
                    return Err(Error::corruption(&path, offset as u64, reason));
                }
            }
        }
        if batch_start != buf.len() {
            if !is_last {
                return Err(Error::corruption(
                    &path,
                    batch_start as u64,
                    "sealed WAL segment ends inside a batch",
                ));
            }
            vfs.truncate(&path, batch_start as u64)
                .map_err(|e| Error::io("truncate torn WAL tail", &path, e))?;
        }
        Ok(Some(batch_start as u64))
    }

    fn apply(&mut self, batch: &[Frame<'_>]) {
        for frame in batch {
            self.last_lsn = frame.lsn;
            if frame.lsn <= self.checkpoint_lsn {
                continue;
            }
            let op = match frame.kind {
                OpKind::Put => Op::Put {
                    key: frame.key.to_vec(),
                    value: frame.value.to_vec(),
                },
                OpKind::Delete => Op::Delete {
                    key: frame.key.to_vec(),
                },
                OpKind::DeletePrefix => Op::DeletePrefix {
                    prefix: frame.key.to_vec(),
                },
            };
            self.memtable.apply(&op);
        }
    }
}
