//! Graph snapshots: an HNSW graph saved to a directory and loaded back without rebuilding.
//!
//! hnsw_rs's own dump is neither atomic nor synced, and a damaged dump makes its loader
//! panic or exit the process. So a snapshot is written into a temporary directory, every
//! file is synced, a manifest records each file's length and CRC32, the directory is synced
//! and renamed into place, and the parent synced. Loading verifies the manifest and every
//! checksum *before* hnsw_rs reads a byte; anything wrong is a [`SnapshotError`], never a
//! panic, and the owner rebuilds from its stored vectors.
//!
//! Points are saved with caller-supplied labels (Mneme uses the memory id plus a checksum
//! of its vector), because the caller's in-memory keys need not survive a restart. On load,
//! the caller resolves each label to its current key, or to nothing when the memory was
//! deleted or changed since — such points load as tombstones.
//!
//! hnsw_rs's reloaded graph borrows its loader; the loader (paths and options, no vector
//! data when not memory-mapped) is leaked — a few hundred bytes per load — so the graph can
//! be owned like any other.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hnsw_rs::anndists::dist::DistL2;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;

use crate::hnsw::{HnswGraph, HnswParams};

/// The hnsw_rs snapshot's manifest file name.
pub(crate) const MANIFEST: &str = "MANIFEST";
const LABELS: &str = "labels.bin";
const BASENAME: &str = "graph";
const MAGIC: &[u8; 8] = b"MNMGRPH\x01";
const VERSION: u32 = 1;
/// Longest label accepted.
pub const LABEL_BYTES_MAX: usize = 1024;

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// File system failure.
    #[error("graph snapshot I/O on {}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The snapshot is damaged or from another version.
    #[error("graph snapshot {} is invalid: {reason}", path.display())]
    Invalid {
        /// File.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// hnsw_rs failed to dump or reload.
    #[error("hnsw_rs: {0}")]
    Hnsw(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_file(path: &Path) -> Result<(), SnapshotError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn sync_dir(path: &Path) -> Result<(), SnapshotError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn files() -> [String; 3] {
    [
        format!("{BASENAME}.hnsw.graph"),
        format!("{BASENAME}.hnsw.data"),
        LABELS.to_owned(),
    ]
}

impl HnswGraph {
    /// Saves the graph to `dir` atomically, labelling every live point with `label(key)`
    /// (`None`: saved as a tombstone).
    pub fn save(
        &self,
        dir: &Path,
        label: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        write_atomically(dir, |tmp| self.write_snapshot(tmp, label))
    }

    fn write_snapshot(
        &self,
        tmp: &Path,
        label: &dyn Fn(u64) -> Option<Vec<u8>>,
    ) -> Result<(), SnapshotError> {
        let written = self
            .hnsw_ref()
            .file_dump(tmp, BASENAME)
            .map_err(|e| SnapshotError::Hnsw(e.to_string()))?;
        if written != BASENAME {
            return Err(SnapshotError::Hnsw(format!(
                "dump used basename {written:?}"
            )));
        }
        let labels = self.encode_labels(label);
        let labels_path = tmp.join(LABELS);
        fs::write(&labels_path, &labels).map_err(io_err(&labels_path))?;
        let mut manifest = Vec::new();
        manifest.extend_from_slice(MAGIC);
        manifest.extend_from_slice(&VERSION.to_le_bytes());
        for name in files() {
            let path = tmp.join(&name);
            sync_file(&path)?;
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            manifest.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            manifest.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        }
        let crc = crc32fast::hash(&manifest);
        manifest.extend_from_slice(&crc.to_le_bytes());
        let manifest_path = tmp.join(MANIFEST);
        let mut f = File::create(&manifest_path).map_err(io_err(&manifest_path))?;
        f.write_all(&manifest)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&manifest_path))
    }

    /// Loads a snapshot saved by [`HnswGraph::save`], mapping each label to a current key
    /// with `resolve` (`None`: the point becomes a tombstone).
    pub fn load(
        dir: &Path,
        params: HnswParams,
        resolve: &dyn Fn(&[u8]) -> Option<u64>,
    ) -> Result<Self, SnapshotError> {
        let manifest_path = dir.join(MANIFEST);
        let manifest = fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
        let invalid = |path: &Path, reason: &str| SnapshotError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let expected_len = 8 + 4 + 3 * 12 + 4;
        if manifest.len() != expected_len || &manifest[..8] != MAGIC {
            return Err(invalid(&manifest_path, "bad manifest length or magic"));
        }
        let body = &manifest[..expected_len - 4];
        let stored_crc =
            u32::from_le_bytes(manifest[expected_len - 4..].try_into().unwrap_or_default());
        if crc32fast::hash(body) != stored_crc {
            return Err(invalid(&manifest_path, "manifest checksum mismatch"));
        }
        if u32::from_le_bytes(manifest[8..12].try_into().unwrap_or_default()) != VERSION {
            return Err(invalid(&manifest_path, "unsupported snapshot version"));
        }
        let mut labels = Vec::new();
        for (i, name) in files().iter().enumerate() {
            let at = 12 + i * 12;
            let len = u64::from_le_bytes(manifest[at..at + 8].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(manifest[at + 8..at + 12].try_into().unwrap_or_default());
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            if bytes.len() as u64 != len || crc32fast::hash(&bytes) != crc {
                return Err(invalid(
                    &path,
                    "length or checksum does not match the manifest",
                ));
            }
            if name == LABELS {
                labels = bytes;
            }
        }
        let labels =
            decode_labels(&labels).ok_or_else(|| invalid(&dir.join(LABELS), "malformed labels"))?;
        // The loader must outlive the graph that borrows it: leak it (see the module doc).
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, BASENAME)));
        // hnsw_rs's loader panics on some malformed dumps (found by fuzzing): a dump only
        // reaches it with the checksums we wrote, but a damaged or forged one must still be
        // an error, not a crash.
        let hnsw = catching_panics(|| loader.load_hnsw::<f32, DistL2>())
            .map_err(|reason| invalid(dir, &format!("hnsw_rs could not load it: {reason}")))?
            .map_err(|e| SnapshotError::Hnsw(e.to_string()))?;
        let keys: Vec<Option<u64>> = labels
            .iter()
            .map(|l| l.as_deref().and_then(resolve))
            .collect();
        Self::from_loaded(hnsw, params, keys).map_err(|reason| invalid(&dir.join(LABELS), &reason))
    }
}

thread_local! {
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread runs third-party decoding that may panic on hostile bytes and
/// whose panic is caught and turned into an error. A process-wide panic hook that aborts
/// (as `mneme serve`'s does) must let these unwind.
pub fn panic_is_caught_here() -> bool {
    CATCHING.with(std::cell::Cell::get)
}

/// Runs `f`, turning a panic into an error message.
fn catching_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    out.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned())
    })
}

pub(crate) fn decode_labels(bytes: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(n.min(bytes.len()));
    let mut at = 8;
    for _ in 0..n {
        let len = u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2;
        if len == u16::MAX as usize {
            out.push(None);
            continue;
        }
        out.push(Some(bytes.get(at..at + len)?.to_vec()));
        at += len;
    }
    (at == bytes.len()).then_some(out)
}

/// Labels file: u64 count, then per internal id a u16 length (0xFFFF: tombstone) and bytes.
pub(crate) fn encode_labels(labels: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(labels.len() as u64).to_le_bytes());
    for label in labels {
        match label {
            Some(l) if l.len() < LABEL_BYTES_MAX => {
                out.extend_from_slice(&(l.len() as u16).to_le_bytes());
                out.extend_from_slice(l);
            }
            _ => out.extend_from_slice(&u16::MAX.to_le_bytes()),
        }
    }
    out
}

/// Replaces the snapshot directory `dir` atomically with one written by `write`: it fills a
/// fresh temporary directory (syncing its files), which is synced and renamed into place,
/// and the parent synced. A crash at any point leaves either the old snapshot or the new
/// one (or, between the two renames, none: the owner then rebuilds).
pub(crate) fn write_atomically(
    dir: &Path,
    write: impl FnOnce(&Path) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    // Siblings named by appending to the whole name (never `with_extension`, which would
    // give `a.b` and `a.c` the same `a.tmp`).
    let sibling = |suffix: &str| {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        dir.with_file_name(name)
    };
    let tmp = sibling(".tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    write(&tmp)?;
    sync_dir(&tmp)?;
    let old = sibling(".old");
    if dir.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    fs::rename(&tmp, dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}
