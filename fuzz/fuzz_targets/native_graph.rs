//! Loading the native graph's snapshot file from arbitrary bytes; with the mode bit set,
//! the section and header checksums are made valid so the structural checks (links, levels,
//! entry point) are reached. Whatever loads must answer searches without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mneme_index::{Graph, GraphKind, HnswParams};

#[path = "common.rs"]
mod common;

fn fix_up(b: &mut [u8]) {
    const FIXED: usize = 8 + 4 * 4 + 3 * 8;
    for i in 0..8 {
        let at = FIXED + i * 20;
        let (Some(offset), Some(len)) = (common::u64_at(b, at), common::u64_at(b, at + 8)) else {
            return;
        };
        let (Ok(offset), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
            continue;
        };
        if let Some(end) = offset.checked_add(len) {
            common::fix_crc(b, offset..end, at + 16);
        }
    }
    common::fix_crc(b, 0..FIXED + 8 * 20, FIXED + 8 * 20);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if bytes.len() >= 8 {
        bytes[0..8].copy_from_slice(b"MNMNATG\x01");
    }
    if mode & 1 == 1 {
        fix_up(&mut bytes);
    }
    let dim = common::u32_at(&bytes, 12).unwrap_or(4).clamp(1, 64) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("native.graph"), &bytes).expect("write");
    let resolve = |label: &[u8]| Some(label.len() as u64);
    if let Ok(graph) = Graph::load(
        dir.path(),
        GraphKind::Native,
        dim,
        HnswParams::default(),
        &resolve,
    ) {
        let q = vec![0.5f32; dim];
        let _ = graph.search(&q, 5, 32, None);
        let _ = graph.repair();
    }
});
