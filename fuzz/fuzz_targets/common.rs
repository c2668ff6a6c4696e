//! What the fuzz targets share: an in-memory engine (simulated disk, lexical hash
//! embedder, no background worker) and CRC fix-ups that let mutated bytes past the
//! checksums, so the decoding logic behind them is exercised too.

#![allow(dead_code, reason = "each target uses part of this")]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use mneme_engine::embed::{Embedders, HashEmbedder};
use mneme_engine::{Engine, EngineConfig};
use mneme_storage::sim::SimFs;
use mneme_storage::vfs::Vfs;

/// One engine per process, on a simulated disk.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let fs = SimFs::new(1);
        let store = mneme_storage::Store::open_with(
            Arc::new(fs),
            Path::new("/engine"),
            mneme_storage::Options::default(),
        )
        .expect("a fresh simulated store opens");
        let config = EngineConfig {
            background: false,
            embedders: Embedders::new(Arc::new(HashEmbedder::new())),
            ..EngineConfig::default()
        };
        Engine::with_store(store, config).expect("a fresh engine opens")
    })
}

/// Writes `bytes` as the file `path` on `fs`, durably.
pub fn put(fs: &SimFs, path: &str, bytes: &[u8]) {
    let mut f = fs.create(Path::new(path)).expect("create");
    f.append(bytes).expect("append");
    f.sync().expect("sync");
    fs.sync_dir(Path::new(path).parent().expect("parent"))
        .expect("sync dir");
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Overwrites the u32 at `at` with the CRC32 of `range` (when both fit).
pub fn fix_crc(b: &mut [u8], range: std::ops::Range<usize>, at: usize) {
    if range.end <= b.len() && at + 4 <= b.len() {
        let crc = crc32fast::hash(&b[range]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}
