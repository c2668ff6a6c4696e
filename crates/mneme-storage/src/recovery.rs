//! Recovery on open: read the manifest, check that every snapshot it names exists and
//! remove the ones it does not name, then validate the WAL, truncating a torn tail. The
//! entries themselves are handed to the owner afterwards by [`crate::Store::replay`].
//!
//! What counts as a torn tail and what as corruption:
//! - a sealed (non-last) WAL segment was synced before its successor was created, so a bad
//!   frame there is corruption;
//! - in the last WAL segment, the first frame that does not validate ends the log: bytes from
//!   there on (and any entry it leaves incomplete) were never acknowledged under
//!   `EveryCommit` durability, and are truncated.
//!
//! Known limit: damage inside the last segment looks exactly like a torn tail, so it is
//! truncated rather than reported (the same point-in-time recovery choice as RocksDB's
//! default).

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::frame::decode_segment_header;
use crate::frame::{Decoded, HeaderError, SEGMENT_HEADER_BYTES, WAL_MAGIC, decode_frame};
use crate::manifest::Manifest;
use crate::vfs::Vfs;
use crate::wal::{FileKind, SealedSegment, parse_file_name, snapshot_file_name, wal_file_name};

/// Largest entry a reader will assemble (and a writer accept).
pub const ENTRY_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The state recovered from disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) manifest: Manifest,
    /// WAL segments holding entries, oldest first (all sealed: appends go to a new one).
    pub(crate) wal_segments: Vec<SealedSegment>,
    pub(crate) next_lsn: u64,
    pub(crate) next_file_id: u64,
}

pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path) -> Result<Recovered> {
    let manifest = Manifest::load(vfs, dir)?.unwrap_or(Manifest {
        next_file_id: 1,
        snapshots: Vec::new(),
    });
    let names = vfs
        .list(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?;
    let mut wal_ids = Vec::new();
    let mut snapshot_ids = HashSet::new();
    for (name, kind) in names.iter().filter_map(|n| Some((n, parse_file_name(n)?))) {
        let (FileKind::Wal(id) | FileKind::Snapshot(id) | FileKind::LegacyLog(id)) = kind;
        if id > crate::manifest::POSITION_MAX {
            return Err(Error::corruption(dir.join(name), 0, "file id out of range"));
        }
        match kind {
            FileKind::Wal(id) => wal_ids.push(id),
            FileKind::Snapshot(id) => {
                snapshot_ids.insert(id);
            }
            FileKind::LegacyLog(_) => {
                return Err(Error::Unsupported {
                    path: dir.join(name),
                    reason: "the data directory was written by Mneme 0.1 (format 1); export it \
                             with that version (`mneme export`) and import it into a new \
                             directory"
                        .into(),
                });
            }
        }
    }
    let max_seen = wal_ids
        .iter()
        .chain(&snapshot_ids)
        .copied()
        .max()
        .unwrap_or(0);

    let mut removed = false;
    let listed: HashSet<u64> = manifest.snapshots.iter().map(|s| s.file_id).collect();
    for s in &manifest.snapshots {
        if !snapshot_ids.contains(&s.file_id) {
            return Err(Error::corruption(
                dir.join(snapshot_file_name(s.file_id)),
                0,
                "snapshot named by the manifest is missing",
            ));
        }
    }
    for id in snapshot_ids.iter().filter(|id| !listed.contains(id)) {
        remove(vfs, &dir.join(snapshot_file_name(*id)))?;
        removed = true;
    }

    wal_ids.sort_unstable();
    let mut last_lsn = 0;
    let mut wal_segments = Vec::new();
    for (i, id) in wal_ids.iter().enumerate() {
        let is_last = i + 1 == wal_ids.len();
        let path = dir.join(wal_file_name(*id));
        let buf = vfs
            .read(&path)
            .map_err(|e| Error::io("read WAL segment", &path, e))?;
        let scanned = match scan_segment(&path, &buf, *id, last_lsn, is_last, &mut |_| Ok(())) {
            Ok(scanned) => scanned,
            Err(Torn::CreationTorn) => {
                // Its header never became durable, so nothing in it was ever acknowledged.
                remove(vfs, &path)?;
                removed = true;
                continue;
            }
            Err(Torn::Error(err)) => return Err(err),
        };
        if scanned.valid_len != buf.len() as u64 {
            vfs.truncate(&path, scanned.valid_len)
                .map_err(|e| Error::io("truncate torn WAL tail", &path, e))?;
        }
        if scanned.entries == 0 {
            // No entry in it: nothing to replay, and it must not be mistaken for a gap.
            remove(vfs, &path)?;
            removed = true;
            continue;
        }
        last_lsn = scanned.last_lsn;
        wal_segments.push(SealedSegment {
            id: *id,
            bytes: scanned.valid_len,
            last_lsn: scanned.last_lsn,
        });
    }
    if removed {
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("sync data directory", dir, e))?;
    }
    let snapshot_lsn = manifest.snapshots.iter().map(|s| s.lsn).max().unwrap_or(0);
    Ok(Recovered {
        next_lsn: last_lsn.max(snapshot_lsn) + 1,
        next_file_id: manifest.next_file_id.max(max_seen + 1),
        manifest,
        wal_segments,
    })
}

fn remove(vfs: &dyn Vfs, path: &Path) -> Result<()> {
    vfs.remove(path)
        .map_err(|e| Error::io("remove leftover file", path, e))
}

/// One logged entry as recovery or replay sees it.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// Its LSN (the LSN of its last frame).
    pub lsn: u64,
    /// Its bytes.
    pub payload: &'a [u8],
    /// The segment it is in.
    pub path: &'a Path,
    /// Offset of its first frame in that segment.
    pub offset: u64,
}

pub(crate) struct Scanned {
    pub(crate) entries: u64,
    pub(crate) valid_len: u64,
    pub(crate) last_lsn: u64,
}

pub(crate) enum Torn {
    /// The last segment's header is incomplete: it was being created at the crash.
    CreationTorn,
    Error(Error),
}

impl From<Error> for Torn {
    fn from(err: Error) -> Self {
        Self::Error(err)
    }
}

/// Walks the entries of one segment, calling `on_entry` for each complete one. In the last
/// segment an invalid frame (or an entry left incomplete) ends the log; elsewhere it is
/// corruption.
pub(crate) fn scan_segment(
    path: &Path,
    buf: &[u8],
    id: u64,
    mut last_lsn: u64,
    is_last: bool,
    on_entry: &mut dyn FnMut(EntryRef<'_>) -> Result<()>,
) -> Result<Scanned, Torn> {
    let header = match decode_segment_header(WAL_MAGIC, buf) {
        Ok(header) => header,
        Err(HeaderError::Version(v)) => {
            return Err(Torn::Error(Error::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "WAL segment of format version {v}; this build reads version {} — export \
                     with the Mneme version that wrote it and import into a new directory",
                    crate::frame::FORMAT_VERSION
                ),
            }));
        }
        Err(_) if is_last && buf.len() <= SEGMENT_HEADER_BYTES => return Err(Torn::CreationTorn),
        Err(HeaderError::Invalid(reason)) => {
            return Err(Torn::Error(Error::corruption(path, 0, reason)));
        }
    };
    if header.file_id != id {
        return Err(Torn::Error(Error::corruption(
            path,
            24,
            "segment id does not match its name",
        )));
    }
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut entry_start = offset;
    let mut complete_lsn = last_lsn;
    let mut entries = 0;
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut assembled = 0usize;
    loop {
        match decode_frame(buf, offset, header.seed) {
            Decoded::Frame(frame, next) => {
                if frame.lsn > crate::manifest::POSITION_MAX {
                    return Err(Torn::Error(Error::corruption(
                        path,
                        offset as u64,
                        format!("LSN {} out of range", frame.lsn),
                    )));
                }
                if frame.lsn <= last_lsn {
                    // The frame is this file's (its CRC covers the file's seed), so this is
                    // not a torn write: it is damage, or a writer bug. Never skip it.
                    return Err(Torn::Error(Error::corruption(
                        path,
                        offset as u64,
                        format!("LSN {} does not follow {last_lsn}", frame.lsn),
                    )));
                }
                last_lsn = frame.lsn;
                assembled += frame.body.len();
                if assembled > ENTRY_BYTES_MAX {
                    return Err(Torn::Error(Error::corruption(
                        path,
                        entry_start as u64,
                        format!("entry longer than {ENTRY_BYTES_MAX} bytes"),
                    )));
                }
                parts.push(frame.body);
                offset = next;
                if !frame.continues {
                    let joined;
                    let payload = if parts.len() == 1 {
                        parts[0]
                    } else {
                        joined = parts.concat();
                        &joined[..]
                    };
                    on_entry(EntryRef {
                        lsn: frame.lsn,
                        payload,
                        path,
                        offset: entry_start as u64,
                    })?;
                    parts.clear();
                    assembled = 0;
                    entry_start = offset;
                    complete_lsn = frame.lsn;
                    entries += 1;
                }
            }
            Decoded::End => break,
            Decoded::Invalid(_) if is_last => break,
            Decoded::Invalid(reason) => {
                return Err(Torn::Error(Error::corruption(path, offset as u64, reason)));
            }
        }
    }
    if entry_start != buf.len() && !is_last {
        return Err(Torn::Error(Error::corruption(
            path,
            entry_start as u64,
            "sealed WAL segment ends inside an entry",
        )));
    }
    Ok(Scanned {
        entries,
        valid_len: entry_start as u64,
        last_lsn: complete_lsn,
    })
}
