//! The write-ahead log's active segment, its sealed predecessors, and file naming.
//!
//! A WAL segment is created, given its header, synced and made durable in the directory
//! before the first entry is appended to it, so a durable entry always sits in a file whose
//! name and header are durable too. An entry never straddles two segments.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frame::{SEGMENT_HEADER_BYTES, SegmentHeader, WAL_MAGIC, encode_segment_header};
use crate::vfs::{Vfs, VfsFile};

/// Name of WAL segment `id`.
pub fn wal_file_name(id: u64) -> String {
    format!("wal-{id:016x}.log")
}

/// Name of snapshot file `id`.
pub fn snapshot_file_name(id: u64) -> String {
    format!("snap-{id:016x}.snap")
}

/// What a file name in the data directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A WAL segment.
    Wal(u64),
    /// A snapshot file.
    Snapshot(u64),
    /// An append-log segment of the first data-directory format (no longer read).
    LegacyLog(u64),
}

/// Parses a data-directory file name.
pub fn parse_file_name(name: &str) -> Option<FileKind> {
    let (make, hex): (fn(u64) -> FileKind, &str) = if let Some(rest) = name.strip_prefix("wal-") {
        (FileKind::Wal, rest.strip_suffix(".log")?)
    } else if let Some(rest) = name.strip_prefix("snap-") {
        (FileKind::Snapshot, rest.strip_suffix(".snap")?)
    } else {
        (
            FileKind::LegacyLog,
            name.strip_prefix("log-")?.strip_suffix(".seg")?,
        )
    };
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(make)
}

/// A WAL segment that is no longer appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedSegment {
    /// File id.
    pub id: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// LSN of its last frame (0: it holds none).
    pub last_lsn: u64,
}

/// The WAL segment currently appended to, plus the older ones not yet retired.
#[derive(Debug)]
pub(crate) struct WalWriter {
    pub(crate) file: Box<dyn VfsFile>,
    pub(crate) file_id: u64,
    pub(crate) seed: u64,
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    /// LSN of the last frame in the active segment (0: none yet).
    pub(crate) last_lsn_here: u64,
    /// Older segments, oldest first.
    pub(crate) sealed: Vec<SealedSegment>,
    /// LSN the next frame gets.
    pub(crate) next_lsn: u64,
    /// True when bytes were appended since the last sync (periodic durability only).
    pub(crate) unsynced: bool,
    /// Syncs done and the time they took (across segments), for metrics.
    pub(crate) syncs: u64,
    pub(crate) sync_micros: u64,
}

impl WalWriter {
    /// Creates segment `file_id` durably and returns a writer positioned after its header.
    pub(crate) fn create(
        vfs: &dyn Vfs,
        dir: &Path,
        file_id: u64,
        sealed: Vec<SealedSegment>,
        next_lsn: u64,
    ) -> Result<Self> {
        let path = dir.join(wal_file_name(file_id));
        let seed = rand::random::<u64>();
        let header = encode_segment_header(WAL_MAGIC, SegmentHeader { seed, file_id });
        let mut file = vfs
            .create(&path)
            .map_err(|e| Error::io("create WAL segment", &path, e))?;
        file.append(&header)
            .map_err(|e| Error::io("write WAL header", &path, e))?;
        file.sync()
            .map_err(|e| Error::io("sync WAL header", &path, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("sync data directory", dir, e))?;
        Ok(Self {
            file,
            file_id,
            seed,
            path,
            bytes: header.len() as u64,
            last_lsn_here: 0,
            sealed,
            next_lsn,
            unsynced: false,
            syncs: 0,
            sync_micros: 0,
        })
    }

    /// Makes every appended byte durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            let start = std::time::Instant::now();
            self.file
                .sync()
                .map_err(|e| Error::io("sync WAL", &self.path, e))?;
            self.unsynced = false;
            self.syncs += 1;
            self.sync_micros += start.elapsed().as_micros() as u64;
        }
        Ok(())
    }

    /// True when no frame was appended to the active segment yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == SEGMENT_HEADER_BYTES as u64
    }

    /// Seals the active segment and continues in a new one with id `new_id`.
    pub(crate) fn roll(&mut self, vfs: &dyn Vfs, dir: &Path, new_id: u64) -> Result<()> {
        self.sync()?;
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.push(SealedSegment {
            id: self.file_id,
            bytes: self.bytes,
            last_lsn: self.last_lsn_here,
        });
        let (syncs, sync_micros) = (self.syncs, self.sync_micros);
        *self = Self::create(vfs, dir, new_id, sealed, self.next_lsn)?;
        self.syncs = syncs;
        self.sync_micros = sync_micros;
        Ok(())
    }

    /// Bytes of every segment, active included.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes + self.sealed.iter().map(|s| s.bytes).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(
            parse_file_name(&wal_file_name(0xabc)),
            Some(FileKind::Wal(0xabc))
        );
        assert_eq!(
            parse_file_name(&snapshot_file_name(7)),
            Some(FileKind::Snapshot(7))
        );
        assert_eq!(
            parse_file_name("log-0000000000000003.seg"),
            Some(FileKind::LegacyLog(3))
        );
        assert_eq!(parse_file_name("wal-12.log"), None);
        assert_eq!(parse_file_name("wal-+000000000000012.log"), None);
        assert_eq!(parse_file_name("MANIFEST"), None);
    }
}
