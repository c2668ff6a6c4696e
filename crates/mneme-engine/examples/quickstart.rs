//! Embedding Mneme in a Rust program: remember a few things, recall by meaning, render a
//! context block for a prompt.
//!
//! `cargo run -p mneme-engine --example quickstart [data-dir]`

#![allow(clippy::print_stdout, reason = "an example program prints")]

use mneme_engine::{Engine, EngineConfig, MemoryType, RecallQuery, RememberInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./mneme-example-data".into());
    let engine = Engine::open(&dir, EngineConfig::default())?;
    let agent = "support-bot";
    for (content, memory_type) in [
        ("User prefers formal tone", MemoryType::Semantic),
        ("User is on the Pro plan", MemoryType::Semantic),
        (
            "To reset a password, open Settings → Security",
            MemoryType::Procedural,
        ),
        ("Last deployment was on March 10", MemoryType::Episodic),
    ] {
        let out = engine.remember(
            agent,
            RememberInput {
                content: content.into(),
                memory_type: Some(memory_type),
                ..Default::default()
            },
        )?;
        println!(
            "remembered {} (deduplicated: {})",
            out.memory.id, out.deduplicated
        );
    }
    let query = RecallQuery {
        query: "how should I write my responses?".into(),
        top_k: 3,
        ..Default::default()
    };
    for hit in engine.recall(agent, &query)? {
        println!(
            "{:.2}  {}  (similarity {:.3}, recency {:.2}, type weight {:.2})",
            hit.confidence,
            hit.memory.content,
            hit.similarity,
            hit.scores.recency,
            hit.scores.type_weight
        );
    }
    let context = engine.inject_context(agent, &query, 200)?;
    println!("\n{}", context.context);
    engine.close()?;
    Ok(())
}
