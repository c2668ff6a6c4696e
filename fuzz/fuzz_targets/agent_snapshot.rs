//! The agent snapshot decoder on arbitrary bytes; with the mode bit set, the harness makes
//! the header and block checksums valid so the records and vectors behind them are read.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn fix_up(b: &mut [u8]) {
    common::fix_crc(b, 0..60, 60);
    let Some(meta_len) = common::u32_at(b, 40) else {
        return;
    };
    let Some(blocks) = common::u32_at(b, 44) else {
        return;
    };
    let Some(dim) = common::u32_at(b, 12) else {
        return;
    };
    let Some(mut at) = (meta_len as usize)
        .checked_next_multiple_of(8)
        .map(|m| m + 64)
    else {
        return;
    };
    for _ in 0..blocks.min(64) {
        let (Some(n), Some(rec)) = (common::u32_at(b, at), common::u32_at(b, at + 4)) else {
            return;
        };
        let vectors = (n as usize).saturating_mul(dim as usize).saturating_mul(4);
        let Some(body) = (rec as usize)
            .checked_next_multiple_of(8)
            .and_then(|r| r.checked_add(vectors))
        else {
            return;
        };
        let start = at + 16;
        if start.saturating_add(body) > b.len() {
            return;
        }
        common::fix_crc(b, start..start + body, at + 8);
        at = start + body;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_up(&mut bytes);
    }
    let lsn = common::u64_at(&bytes, 16).unwrap_or(0);
    let _ = mneme_engine::inspect::read_agent_snapshot(&bytes, "bot", lsn);
});
