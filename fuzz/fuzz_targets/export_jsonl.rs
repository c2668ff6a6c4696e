//! Importing arbitrary bytes as a JSON Lines export into a live engine: raw, or after a
//! valid header line (client vectors of 4 or the hash embedder's dimensions) so the memory
//! lines themselves are parsed and checked.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let engine = common::engine();
    let header: &[u8] = match mode % 3 {
        0 => b"",
        1 => b"{\"format\":\"mneme-export\",\"version\":1,\"agent_id\":\"x\",\"embedder\":\"client\",\"dim\":4,\"count\":1}\n",
        _ => b"{\"format\":\"mneme-export\",\"version\":1,\"agent_id\":\"x\",\"embedder\":\"hash-v1\",\"dim\":256,\"count\":1}\n",
    };
    let bytes = [header, rest].concat();
    let mut input = bytes.as_slice();
    let agent = format!("import-{}", mode % 7);
    let _ = engine.import(&agent, &mut input, &|_| {});
});
