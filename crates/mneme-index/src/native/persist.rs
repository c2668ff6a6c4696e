//! The native graph's snapshot file: one file, `native.graph`, in Mneme's own format.
//!
//! ```text
//! header (HEADER_BYTES, little-endian):
//!   magic "MNMNATG\x01" · version u32 · dim u32 · m u32 · ef_construction u32 ·
//!   points u64 · upper blocks u64 · entry u64 ·
//!   8 × (offset u64, length u64, crc32 u32)  — one per section, in the order below ·
//!   crc32 of everything before it
//! sections, each starting on a 64-byte boundary:
//!   labels   (u64 count, then per point a u16 length, 0xFFFF for none, and the bytes)
//!   deleted  u8 × points       levels   u8 × points      scales  f32 × points
//!   codes    i8 × points·dim   layer0   u32 × points·(2m+1)
//!   upper_at u32 × points      upper    u32 × blocks·(m+1)
//! ```
//!
//! It is written into the snapshot's temporary directory and synced before the directory is
//! renamed into place (see [`crate::snapshot`]). Loading maps the file, checks the header,
//! every section's length and checksum, and then the structure itself (every link and level
//! in range), so a damaged or hostile file is a [`SnapshotError::Invalid`] naming the file
//! and what failed, never a panic or an out-of-range read later. The codes — the bulk of the
//! file — are then served from the mapping; the links are copied into the graph's mutable
//! arrays.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;

use super::sys::Mapped;
use super::{Codes, NATIVE_LEVELS_MAX, NATIVE_M_MAX, NONE, NativeGraph, Points};
use crate::hnsw::HnswParams;
use crate::snapshot::{SnapshotError, decode_labels, encode_labels, io_err};

/// The snapshot's file name inside its directory.
pub(crate) const SNAPSHOT_FILE: &str = "native.graph";
const MAGIC: &[u8; 8] = b"MNMNATG\x01";
const VERSION: u32 = 1;
const SECTIONS: usize = 8;
const HEADER_BYTES: usize = 256;
const FIXED_BYTES: usize = 8 + 4 * 4 + 3 * 8;
const ALIGN: u64 = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Section {
    offset: u64,
    len: u64,
    crc: u32,
}

/// Streams sections out, padding each to the alignment and checksumming it.
struct SectionWriter {
    out: BufWriter<File>,
    at: u64,
    sections: Vec<Section>,
}

impl SectionWriter {
    fn section(&mut self, bytes: impl Iterator<Item = u8>) -> std::io::Result<()> {
        let pad = self.at.next_multiple_of(ALIGN) - self.at;
        self.out.write_all(&vec![0u8; pad as usize])?;
        self.at += pad;
        let mut hasher = crc32fast::Hasher::new();
        let mut chunk = Vec::with_capacity(1 << 16);
        let mut len = 0u64;
        for b in bytes {
            chunk.push(b);
            if chunk.len() == chunk.capacity() {
                hasher.update(&chunk);
                self.out.write_all(&chunk)?;
                len += chunk.len() as u64;
                chunk.clear();
            }
        }
        hasher.update(&chunk);
        self.out.write_all(&chunk)?;
        len += chunk.len() as u64;
        self.sections.push(Section {
            offset: self.at,
            len,
            crc: hasher.finalize(),
        });
        self.at += len;
        Ok(())
    }
}

fn u32s(atoms: &[AtomicU32]) -> impl Iterator<Item = u8> + '_ {
    atoms
        .iter()
        .flat_map(|a| a.load(Ordering::Relaxed).to_le_bytes())
}

impl NativeGraph {
    /// Writes the snapshot file into `dir` (a fresh temporary directory) and syncs it,
    /// labelling each live point with `label(key)` (`None`: saved as a tombstone).
    pub(crate) fn write_snapshot(
        &self,
        dir: &Path,
        label: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let p = self.points.read();
        let n = p.len();
        let labels: Vec<Option<Vec<u8>>> = (0..n)
            .map(|i| {
                if p.deleted[i].load(Ordering::Relaxed) {
                    None
                } else {
                    label(p.keys[i])
                }
            })
            .collect();
        let labels = encode_labels(&labels);
        let write = || -> std::io::Result<[Section; SECTIONS]> {
            let file = File::create(&path)?;
            let mut w = SectionWriter {
                out: BufWriter::with_capacity(1 << 20, file),
                at: HEADER_BYTES as u64,
                sections: Vec::new(),
            };
            w.out.write_all(&[0u8; HEADER_BYTES])?;
            w.section(labels.iter().copied())?;
            w.section(
                p.deleted
                    .iter()
                    .map(|d| u8::from(d.load(Ordering::Relaxed))),
            )?;
            w.section(p.levels.iter().copied())?;
            w.section(p.scales.iter().flat_map(|s| s.to_le_bytes()))?;
            w.section((0..n as u32).flat_map(|i| p.codes.get(i).iter().map(|c| *c as u8)))?;
            w.section(u32s(&p.layer0))?;
            w.section(p.upper_at.iter().flat_map(|u| u.to_le_bytes()))?;
            w.section(u32s(&p.upper))?;
            let mut file = w.out.into_inner().map_err(|e| e.into_error())?;
            let sections: [Section; SECTIONS] = w
                .sections
                .try_into()
                .map_err(|_| std::io::Error::other("section count"))?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&self.header(n, p.upper.len() / (self.m + 1), &sections))?;
            file.sync_all()?;
            Ok(sections)
        };
        write().map_err(io_err(&path))?;
        Ok(())
    }

    fn header(&self, points: usize, blocks: usize, sections: &[Section]) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_BYTES);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(self.dim as u32).to_le_bytes());
        h.extend_from_slice(&(self.m as u32).to_le_bytes());
        h.extend_from_slice(&(self.params.ef_construction as u32).to_le_bytes());
        h.extend_from_slice(&(points as u64).to_le_bytes());
        h.extend_from_slice(&(blocks as u64).to_le_bytes());
        h.extend_from_slice(&self.entry.load(Ordering::Acquire).to_le_bytes());
        for s in sections {
            h.extend_from_slice(&s.offset.to_le_bytes());
            h.extend_from_slice(&s.len.to_le_bytes());
            h.extend_from_slice(&s.crc.to_le_bytes());
        }
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.resize(HEADER_BYTES, 0);
        h
    }

    /// Loads the snapshot in `dir`, mapping each label to a current key with `resolve`
    /// (`None`: the point loads as a tombstone). `dim` is the collection's dimension;
    /// `params.ef_search` applies, the other parameters are the snapshot's own.
    pub(crate) fn read_snapshot(
        dir: &Path,
        dim: usize,
        params: HnswParams,
        resolve: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> Result<Self, SnapshotError> {
        let path = dir.join(SNAPSHOT_FILE);
        let map = Arc::new(Mapped::open(&path).map_err(io_err(&path))?);
        let invalid = |reason: String| SnapshotError::Invalid {
            path: path.clone(),
            reason,
        };
        let bytes = map.bytes();
        let header = Header::parse(bytes).map_err(&invalid)?;
        if header.dim != dim {
            return Err(invalid(format!(
                "dimension {} but the collection has {dim}",
                header.dim
            )));
        }
        let n = header.points;
        let (m, m0) = (header.m, 2 * header.m);
        let expected = [
            None,
            Some(n),
            Some(n),
            Some(4 * n),
            Some(n * dim),
            Some(4 * n * (m0 + 1)),
            Some(4 * n),
            Some(4 * header.blocks * (m + 1)),
        ];
        const NAMES: [&str; SECTIONS] = [
            "labels", "deleted", "levels", "scales", "codes", "layer0", "upper_at", "upper",
        ];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(SECTIONS);
        for (i, s) in header.sections.iter().enumerate() {
            let name = NAMES[i];
            let end = s
                .offset
                .checked_add(s.len)
                .filter(|e| *e <= bytes.len() as u64);
            let Some(end) = end else {
                return Err(invalid(format!(
                    "section {name} at offset {} runs past the end of the file",
                    s.offset
                )));
            };
            if expected[i].is_some_and(|e| e as u64 != s.len) {
                return Err(invalid(format!(
                    "section {name} at offset {} has {} bytes, expected {:?}",
                    s.offset, s.len, expected[i]
                )));
            }
            let part = &bytes[s.offset as usize..end as usize];
            if crc32fast::hash(part) != s.crc {
                return Err(invalid(format!(
                    "section {name} at offset {} fails its checksum",
                    s.offset
                )));
            }
            parts.push(part);
        }
        let labels = decode_labels(parts[0])
            .filter(|l| l.len() == n)
            .ok_or_else(|| invalid("malformed labels section".to_owned()))?;
        let levels = parts[2].to_vec();
        if let Some(bad) = levels.iter().position(|l| *l > NATIVE_LEVELS_MAX) {
            return Err(invalid(format!("point {bad} has level {}", levels[bad])));
        }
        let le_u32 = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let upper_at = le_u32(parts[6]);
        for (id, (&at, &level)) in upper_at.iter().zip(&levels).enumerate() {
            let fits = if level == 0 {
                at == NONE
            } else {
                (at as usize).checked_add(usize::from(level)) <= Some(header.blocks)
            };
            if !fits {
                return Err(invalid(format!(
                    "point {id} (level {level}) has upper block {at} of {}",
                    header.blocks
                )));
            }
        }
        let links =
            |raw: &[u8], stride: usize, layer: &str| -> Result<Vec<AtomicU32>, SnapshotError> {
                let words = le_u32(raw);
                for (block, chunk) in words.chunks_exact(stride).enumerate() {
                    let count = chunk[0] as usize;
                    if count >= stride || chunk[1..=count].iter().any(|id| *id as usize >= n) {
                        return Err(invalid(format!("{layer} block {block} has invalid links")));
                    }
                }
                Ok(words.into_iter().map(AtomicU32::new).collect())
            };
        let layer0 = links(parts[5], m0 + 1, "layer-0")?;
        let upper = links(parts[7], m + 1, "upper-layer")?;
        let entry = header.entry;
        if entry != u64::MAX {
            let (id, level) = (entry as u32 as usize, (entry >> 32) as u8);
            if id >= n || levels[id] != level {
                return Err(invalid(format!("entry point {entry:#x} is not a point")));
            }
        }
        let scales: Vec<f32> = parts[3]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(bad) = scales.iter().position(|s| !s.is_finite()) {
            return Err(invalid(format!("point {bad} has a non-finite scale")));
        }
        let mut keys = Vec::with_capacity(n);
        let mut deleted = Vec::with_capacity(n);
        for (label, &gone) in labels.iter().zip(parts[1]) {
            let key = if gone == 0 {
                label.as_deref().and_then(resolve)
            } else {
                None
            };
            keys.push(key.unwrap_or(u64::MAX));
            deleted.push(AtomicBool::new(key.is_none()));
        }
        let codes_offset = header.sections[4].offset as usize;
        let points = Points {
            keys,
            deleted,
            levels,
            scales,
            codes: Codes {
                dim,
                mapped: Some((Arc::clone(&map), codes_offset)),
                mapped_points: n,
                owned: Vec::new(),
            },
            layer0,
            upper_at,
            upper,
            locks: std::iter::repeat_with(|| Mutex::new(())).take(n).collect(),
        };
        let params = HnswParams {
            m,
            ef_construction: header.ef_construction,
            ef_search: params.ef_search,
        };
        Ok(Self::from_parts(dim, params, points, entry))
    }
}

struct Header {
    dim: usize,
    m: usize,
    ef_construction: usize,
    points: usize,
    blocks: usize,
    entry: u64,
    sections: [Section; SECTIONS],
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let body_len = FIXED_BYTES + SECTIONS * 20;
        if bytes.len() < HEADER_BYTES {
            return Err(format!("{} bytes is shorter than the header", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err("bad magic at offset 0".to_owned());
        }
        let stored = u32::from_le_bytes(read::<4>(bytes, body_len));
        if crc32fast::hash(&bytes[..body_len]) != stored {
            return Err("header checksum mismatch".to_owned());
        }
        let u32_at = |at: usize| u32::from_le_bytes(read::<4>(bytes, at)) as usize;
        let u64_at = |at: usize| u64::from_le_bytes(read::<8>(bytes, at));
        let version = u32_at(8);
        if version != VERSION as usize {
            return Err(format!("unsupported version {version}"));
        }
        let header = Self {
            dim: u32_at(12),
            m: u32_at(16),
            ef_construction: u32_at(20),
            points: usize::try_from(u64_at(24)).map_err(|_| "point count overflows")?,
            blocks: usize::try_from(u64_at(32)).map_err(|_| "block count overflows")?,
            entry: u64_at(40),
            sections: std::array::from_fn(|i| {
                let at = FIXED_BYTES + i * 20;
                Section {
                    offset: u64_at(at),
                    len: u64_at(at + 8),
                    crc: u32::from_le_bytes(read::<4>(bytes, at + 16)),
                }
            }),
        };
        if header.dim == 0 || header.dim > crate::DIMENSIONS_MAX {
            return Err(format!("dimension {} out of range", header.dim));
        }
        if !(2..=NATIVE_M_MAX).contains(&header.m) {
            return Err(format!("m = {} out of range", header.m));
        }
        if header.points > super::NATIVE_POINTS_MAX || header.blocks > u32::MAX as usize {
            return Err(format!(
                "{} points / {} blocks out of range",
                header.points, header.blocks
            ));
        }
        Ok(header)
    }
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}
