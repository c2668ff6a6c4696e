//! Opening a store whose MANIFEST is arbitrary bytes (raw, or with its checksum made valid
//! so the snapshot list behind it is parsed), next to a snapshot file it may name.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mneme_storage::sim::SimFs;
use mneme_storage::{Options, Store};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut manifest = rest.to_vec();
    if mode & 1 == 1 && manifest.len() >= 16 {
        manifest[0..8].copy_from_slice(b"MNMMANI\x02");
        let len = manifest.len();
        common::fix_crc(&mut manifest, 16..len, 12);
    }
    let fs = SimFs::new(u64::from(mode));
    common::put(&fs, "/d/MANIFEST", &manifest);
    common::put(&fs, "/d/snap-0000000000000003.snap", b"snapshot bytes");
    if let Ok(store) = Store::open_with(Arc::new(fs), Path::new("/d"), Options::default()) {
        for s in store.snapshots() {
            let _ = store.read_snapshot(&s);
        }
    }
});
