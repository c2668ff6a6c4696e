//! The manifest: which append-log segments are live and which WAL prefix they already hold.
//!
//! It is replaced atomically (write a temporary file, sync it, rename over `MANIFEST`, sync
//! the directory), so after a crash it is either the old or the new one, never a mixture.

use std::path::Path;

use crate::error::{Error, Result};
use crate::vfs::Vfs;

/// File name of the manifest inside the data directory.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
const MANIFEST_TMP_NAME: &str = "MANIFEST.tmp";
const MAGIC: [u8; 8] = *b"MNMMANI\x01";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 40;
/// Most segments a manifest may list (a sanity bound for reading untrusted bytes).
pub const MANIFEST_SEGMENTS_MAX: usize = 1 << 20;

/// Decoded manifest contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Every WAL record with an LSN at or below this is contained in the live segments.
    pub checkpoint_lsn: u64,
    /// Next file id to hand out (ids are shared by WAL and log segments).
    pub next_file_id: u64,
    /// Live append-log segments, oldest first.
    pub segments: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.checkpoint_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_file_id.to_le_bytes());
        out[32..36].copy_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for id in &self.segments {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(path: &Path, buf: &[u8]) -> Result<Self> {
        let bad = |offset: u64, reason: &str| Error::corruption(path, offset, reason);
        if buf.len() < HEADER_BYTES {
            return Err(bad(0, "manifest shorter than its header"));
        }
        if buf[0..8] != MAGIC {
            return Err(bad(0, "bad manifest magic"));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(8, &format!("unsupported manifest version {version}")));
        }
        if u32_at(12) != crc32fast::hash(&buf[16..]) {
            return Err(bad(12, "manifest checksum mismatch"));
        }
        let n = u32_at(32) as usize;
        if n > MANIFEST_SEGMENTS_MAX || buf.len() != HEADER_BYTES + n * 8 {
            return Err(bad(32, "manifest segment count does not match its length"));
        }
        Ok(Self {
            checkpoint_lsn: u64_at(16),
            next_file_id: u64_at(24),
            segments: (0..n).map(|i| u64_at(HEADER_BYTES + i * 8)).collect(),
        })
    }

    /// Reads the manifest of `dir`; `Ok(None)` for a directory that has none yet.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE_NAME);
        match vfs.read(&path) {
            Ok(buf) => Self::decode(&path, &buf).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io("read manifest", path, err)),
        }
    }

    /// Atomically replaces the manifest of `dir` with `self`.
    pub fn store(&self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP_NAME);
        match vfs.remove(&tmp) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io("remove stale manifest temp", tmp, err)),
        }
        let mut file = vfs
            .create(&tmp)
            .map_err(|e| Error::io("create manifest temp", &tmp, e))?;
        file.append(&self.encode())
            .map_err(|e| Error::io("write manifest temp", &tmp, e))?;
        file.sync()
            .map_err(|e| Error::io("sync manifest temp", &tmp, e))?;
        let path = dir.join(MANIFEST_FILE_NAME);
        vfs.rename(&tmp, &path)
            .map_err(|e| Error::io("rename manifest", &path, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("sync data directory", dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let m = Manifest {
            checkpoint_lsn: 17,
            next_file_id: 9,
            segments: vec![3, 8],
        };
        let bytes = m.encode();
        let path = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(path, &bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                Manifest::decode(path, &bad).is_err(),
                "flip at {i} unnoticed"
            );
        }
        assert!(Manifest::decode(path, &bytes[..bytes.len() - 1]).is_err());
    }
}
