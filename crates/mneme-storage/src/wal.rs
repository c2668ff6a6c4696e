//! The write-ahead log: the active segment being appended to, and file naming.
//!
//! A WAL segment is created, given its header, synced and made durable in the directory
//! before the first record is appended to it, so a durable record always sits in a file
//! whose name and header are durable too.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frame::{SegmentHeader, WAL_MAGIC, encode_segment_header};
use crate::vfs::{Vfs, VfsFile};

/// Name of WAL segment `id`.
pub fn wal_file_name(id: u64) -> String {
    format!("wal-{id:016x}.log")
}

/// Name of append-log segment `id`.
pub fn log_file_name(id: u64) -> String {
    format!("log-{id:016x}.seg")
}

/// Parses a segment file name into (is_wal, id).
pub fn parse_file_name(name: &str) -> Option<(bool, u64)> {
    let (is_wal, hex) = if let Some(rest) = name.strip_prefix("wal-") {
        (true, rest.strip_suffix(".log")?)
    } else {
        (false, name.strip_prefix("log-")?.strip_suffix(".seg")?)
    };
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|id| (is_wal, id))
}

/// The WAL segment currently appended to, plus the older ones not yet retired.
#[derive(Debug)]
pub(crate) struct WalWriter {
    pub(crate) file: Box<dyn VfsFile>,
    pub(crate) file_id: u64,
    pub(crate) seed: u64,
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    /// Older segments (id, bytes) whose records are all at or below the next checkpoint's LSN.
    pub(crate) sealed: Vec<(u64, u64)>,
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
        sealed: Vec<(u64, u64)>,
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

    /// True when no frame was appended to the current segment yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == crate::frame::SEGMENT_HEADER_BYTES as u64
    }

    /// Seals the current segment and continues in a new one with id `new_id`.
    pub(crate) fn roll(&mut self, vfs: &dyn Vfs, dir: &Path, new_id: u64) -> Result<()> {
        self.sync()?;
        let mut sealed = std::mem::take(&mut self.sealed);
        sealed.push((self.file_id, self.bytes));
        let (syncs, sync_micros) = (self.syncs, self.sync_micros);
        *self = Self::create(vfs, dir, new_id, sealed, self.next_lsn)?;
        self.syncs = syncs;
        self.sync_micros = sync_micros;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name(&wal_file_name(0xabc)), Some((true, 0xabc)));
        assert_eq!(parse_file_name(&log_file_name(7)), Some((false, 7)));
        assert_eq!(parse_file_name("wal-12.log"), None);
        assert_eq!(parse_file_name("MANIFEST"), None);
    }
}
