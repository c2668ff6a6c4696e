//! Decoding arbitrary bytes as a logged entry; whatever decodes is applied to a live
//! engine, which must take it without panicking and stay readable.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = mneme_engine::mutation::decode(data) else {
        return;
    };
    let engine = common::engine();
    let agent = entry.agent.clone();
    let _ = engine.submit(entry);
    let _ = engine.stats(&agent);
    let _ = engine.list(&agent, &mneme_engine::ListQuery::default());
});
