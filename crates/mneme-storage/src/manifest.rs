//! The manifest: the live snapshot files, each with the tag its owner gave it and the LSN
//! it reflects, and the next file id.
//!
//! It is replaced atomically (write a temporary file, sync it, rename over `MANIFEST`, sync
//! the directory), so after a crash it is either the old or the new one, never a mixture.
//! A snapshot file becomes reachable only by being named here, after it was synced; it is
//! deleted only after a manifest that no longer names it is durable.

use std::path::Path;

use crate::error::{Error, Result};
use crate::vfs::Vfs;

/// File name of the manifest inside the data directory.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
const MANIFEST_TMP_NAME: &str = "MANIFEST.tmp";
const MAGIC: [u8; 8] = *b"MNMMANI\x02";
/// The first data-directory format's manifest (an append-log key/value store).
const LEGACY_MAGIC: [u8; 8] = *b"MNMMANI\x01";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 32;
/// Most snapshots a manifest may list (a sanity bound for reading untrusted bytes).
pub const MANIFEST_SNAPSHOTS_MAX: usize = 1 << 24;
/// Longest snapshot tag.
pub const TAG_BYTES_MAX: usize = 1024;
/// Largest file id or LSN a reader believes (2^62: a billion a second for 146 years);
/// anything above it is damage, and refusing it keeps every `+ 1` far from overflow.
pub const POSITION_MAX: u64 = 1 << 62;

/// A snapshot file named by the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotRef {
    /// The owner's name for it (unique among live snapshots; never a path).
    pub tag: Vec<u8>,
    /// File id (`snap-<id>.snap`).
    pub file_id: u64,
    /// The LSN the snapshot reflects: every entry at or below it is contained in it.
    pub lsn: u64,
    /// Length of the file.
    pub bytes: u64,
    /// CRC32 of the whole file.
    pub crc: u32,
}

/// Decoded manifest contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Next file id to hand out (ids are shared by WAL segments and snapshots).
    pub next_file_id: u64,
    /// Live snapshots, in tag order.
    pub snapshots: Vec<SnapshotRef>,
}

impl Manifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.next_file_id.to_le_bytes());
        out[24..28].copy_from_slice(&(self.snapshots.len() as u32).to_le_bytes());
        for s in &self.snapshots {
            out.extend_from_slice(&(s.tag.len() as u16).to_le_bytes());
            out.extend_from_slice(&s.tag);
            out.extend_from_slice(&s.file_id.to_le_bytes());
            out.extend_from_slice(&s.lsn.to_le_bytes());
            out.extend_from_slice(&s.bytes.to_le_bytes());
            out.extend_from_slice(&s.crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes manifest bytes read from `path`; every malformation is a typed error.
    pub fn decode(path: &Path, buf: &[u8]) -> Result<Self> {
        let bad = |offset: usize, reason: &str| Error::corruption(path, offset as u64, reason);
        if buf.get(0..8) == Some(&LEGACY_MAGIC[..]) {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                reason: "the data directory was written by Mneme 0.1 (format 1); export it with \
                         that version (`mneme export`) and import it into a new directory"
                    .into(),
            });
        }
        if buf.len() < HEADER_BYTES {
            return Err(bad(0, "manifest shorter than its header"));
        }
        if buf[0..8] != MAGIC {
            return Err(bad(0, "bad manifest magic"));
        }
        let mut r = Reader { buf, at: 8 };
        let version = r.u32().unwrap_or_default();
        if version != VERSION {
            return Err(bad(8, &format!("unsupported manifest version {version}")));
        }
        let crc = r.u32().unwrap_or_default();
        if crc != crc32fast::hash(&buf[16..]) {
            return Err(bad(12, "manifest checksum mismatch"));
        }
        let next_file_id = r.u64().unwrap_or_default();
        if next_file_id > POSITION_MAX {
            return Err(bad(16, "next file id out of range"));
        }
        let n = r.u32().unwrap_or_default() as usize;
        if n > MANIFEST_SNAPSHOTS_MAX {
            return Err(bad(24, "manifest lists too many snapshots"));
        }
        r.at = HEADER_BYTES;
        let mut snapshots = Vec::with_capacity(n.min(buf.len() / 30));
        for i in 0..n {
            let at = r.at;
            let entry = (|| {
                let tag_len = r.u16()? as usize;
                if tag_len == 0 || tag_len > TAG_BYTES_MAX {
                    return None;
                }
                let tag = r.bytes(tag_len)?.to_vec();
                Some(SnapshotRef {
                    tag,
                    file_id: r.u64()?,
                    lsn: r.u64()?,
                    bytes: r.u64()?,
                    crc: r.u32()?,
                })
            })();
            let Some(entry) = entry.filter(|e| e.file_id <= POSITION_MAX && e.lsn <= POSITION_MAX)
            else {
                return Err(bad(at, &format!("snapshot entry {i} is malformed")));
            };
            if snapshots
                .last()
                .is_some_and(|prev: &SnapshotRef| prev.tag >= entry.tag)
            {
                return Err(bad(at, &format!("snapshot entry {i} is out of tag order")));
            }
            snapshots.push(entry);
        }
        if r.at != buf.len() {
            return Err(bad(r.at, "trailing bytes after the last snapshot entry"));
        }
        Ok(Self {
            next_file_id,
            snapshots,
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

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            next_file_id: 9,
            snapshots: vec![
                SnapshotRef {
                    tag: b"a".to_vec(),
                    file_id: 3,
                    lsn: 17,
                    bytes: 100,
                    crc: 7,
                },
                SnapshotRef {
                    tag: b"b\0x".to_vec(),
                    file_id: 8,
                    lsn: 5,
                    bytes: 64,
                    crc: 1,
                },
            ],
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let m = sample();
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
        for len in 0..bytes.len() {
            assert!(Manifest::decode(path, &bytes[..len]).is_err());
        }
    }

    #[test]
    fn positions_near_the_top_of_u64_are_damage_not_arithmetic() {
        // Found by fuzzing: a manifest naming next file id u64::MAX overflowed `+ 1`.
        for m in [
            Manifest {
                next_file_id: u64::MAX,
                snapshots: Vec::new(),
            },
            Manifest {
                next_file_id: 1,
                snapshots: vec![SnapshotRef {
                    tag: b"a".to_vec(),
                    file_id: 1,
                    lsn: u64::MAX,
                    bytes: 0,
                    crc: 0,
                }],
            },
        ] {
            let err = Manifest::decode(Path::new("MANIFEST"), &m.encode()).unwrap_err();
            assert!(matches!(err, Error::Corruption { .. }), "{err}");
        }
    }

    #[test]
    fn the_first_format_is_refused_by_name() {
        let mut legacy = b"MNMMANI\x01".to_vec();
        legacy.extend_from_slice(&[0; 40]);
        let err = Manifest::decode(Path::new("MANIFEST"), &legacy).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("export"));
    }
}
