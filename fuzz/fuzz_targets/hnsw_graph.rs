//! Loading an hnsw_rs graph snapshot whose three files are arbitrary bytes, under a
//! manifest the harness makes valid for them, so that the label decoder and hnsw_rs's own
//! loader both see hostile input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mneme_index::{Graph, GraphKind, HnswParams};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // hnsw_rs panics on malformed dumps; Mneme catches those (and only those) and reports
    // an invalid snapshot. Let them unwind past libFuzzer's abort-on-panic hook too.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let fuzzer = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !mneme_index::panic_is_caught_here() {
                fuzzer(info);
            }
        }));
    });
    if data.len() < 4 {
        return;
    }
    let a = usize::from(u16::from_le_bytes([data[0], data[1]])) % (data.len() - 3);
    let b = usize::from(u16::from_le_bytes([data[2], data[3]])) % (data.len() - 3 - a + 1);
    let rest = &data[4..];
    let (graph, rest) = rest.split_at(a.min(rest.len()));
    let (points, labels) = rest.split_at(b.min(rest.len()));
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("graph.hnsw.graph", graph),
        ("graph.hnsw.data", points),
        ("labels.bin", labels),
    ];
    let mut manifest = b"MNMGRPH\x01".to_vec();
    manifest.extend_from_slice(&1u32.to_le_bytes());
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
        manifest.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        manifest.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    }
    let crc = crc32fast::hash(&manifest);
    manifest.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("MANIFEST"), manifest).expect("write");
    let resolve = |label: &[u8]| Some(label.len() as u64);
    if let Ok(graph) = Graph::load(
        dir.path(),
        GraphKind::HnswRs,
        4,
        HnswParams::default(),
        &resolve,
    ) {
        let _ = graph.search(&[0.5; 4], 5, 32, None);
    }
});
