//! WAL recovery and replay on arbitrary segment bytes: raw, or as frames whose CRCs the
//! harness makes valid (so LSN order, continuation chains, torn tails and entry decoding
//! behind the checksums are reached). Every outcome must be a value, never a panic.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mneme_storage::sim::SimFs;
use mneme_storage::{Options, Store};

#[path = "common.rs"]
mod common;

const SEED: u64 = 0x5eed;

fn header(id: u64) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[0..8].copy_from_slice(b"MNMWAL\0\x01");
    h[8..12].copy_from_slice(&2u32.to_le_bytes());
    h[16..24].copy_from_slice(&SEED.to_le_bytes());
    h[24..32].copy_from_slice(&id.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&h[0..12]);
    c.update(&h[16..32]);
    let crc = c.finalize();
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Frames from the fuzzer's bytes: [flags, lsn step, len, body…] repeated, CRCs valid.
fn frames(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lsn = 0u64;
    while data.len() >= 3 {
        let (flags, step, len) = (data[0], u64::from(data[1]), usize::from(data[2]));
        data = &data[3..];
        let body = &data[..len.min(data.len())];
        data = &data[body.len()..];
        lsn = lsn.wrapping_add(step);
        let start = out.len();
        let mut h = [0u8; 24];
        h[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&lsn.to_le_bytes());
        h[16] = flags & 0x81;
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        let mut c = crc32fast::Hasher::new();
        c.update(&SEED.to_le_bytes());
        c.update(&out[start + 4..start + 24]);
        c.update(body);
        let crc = c.finalize();
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fs = SimFs::new(u64::from(mode));
    let segment = match mode % 3 {
        0 => rest.to_vec(),
        1 => [header(1), rest.to_vec()].concat(),
        _ => [header(1), frames(rest)].concat(),
    };
    common::put(&fs, "/d/wal-0000000000000001.log", &segment);
    if mode & 0x80 != 0 {
        // A sealed segment before it: damage there is corruption, not a torn tail.
        let sealed = [header(0), frames(rest)].concat();
        common::put(&fs, "/d/wal-0000000000000000.log", &sealed);
    }
    if let Ok(store) = Store::open_with(Arc::new(fs), Path::new("/d"), Options::default()) {
        let _ = store.replay(&mut |e| {
            let _ = mneme_engine::mutation::decode(e.payload);
            Ok(())
        });
    }
});
