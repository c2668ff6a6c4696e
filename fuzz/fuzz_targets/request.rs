//! The request path without the network: a request's protobuf bytes — arbitrary, or an
//! encoding of a structurally valid request built from the fuzzer's bytes — decoded the
//! way the server decodes them, converted, and run against a live engine. Every request
//! must end in a value or an error status, never a panic.

#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mneme_server::convert::{self, RecallFields};
use mneme_server::pb;
use prost::Message;

#[path = "common.rs"]
mod common;

const AGENTS: [&str; 4] = ["a", "b", "..", "client"];

#[derive(Debug, Arbitrary)]
struct Remember {
    agent: u8,
    content: String,
    memory_type: i32,
    session: String,
    ttl_seconds: u64,
    vector: Option<Vec<f32>>,
    metadata: Vec<(String, String)>,
    pinned: bool,
    importance: f32,
    request_id: String,
}

#[derive(Debug, Arbitrary)]
struct Recall {
    agent: u8,
    query: String,
    vector: Vec<f32>,
    top_k: u32,
    session: String,
    session_only: bool,
    memory_types: Vec<i32>,
    min_confidence: f32,
    metadata: Vec<(String, String)>,
    max_tokens: u32,
    mark_used: bool,
}

#[derive(Debug, Arbitrary)]
enum Request {
    Remember(Remember),
    Batch(u8, Vec<Remember>),
    Recall(Recall),
    Inject(Recall),
    Get(u8, String),
    List(u8, u32, String, String),
    Update(u8, String, Option<String>, Option<f32>, Option<u64>, bool),
    Forget(u8, Vec<String>),
    MarkUsed(u8, Vec<String>),
    ForgetSession(u8, String),
    ClearAll(u8),
    Stats(u8),
}

fn agent(n: u8) -> String {
    AGENTS[usize::from(n) % AGENTS.len()].to_owned()
}

fn remember(r: Remember) -> pb::RememberRequest {
    pb::RememberRequest {
        agent_id: agent(r.agent),
        content: r.content,
        memory_type: r.memory_type,
        session_id: r.session,
        ttl_seconds: r.ttl_seconds,
        vector: r.vector.unwrap_or_default(),
        metadata: r.metadata.into_iter().collect::<HashMap<_, _>>(),
        pinned: r.pinned,
        importance: r.importance,
        request_id: r.request_id,
    }
}

fn fields(r: Recall) -> RecallFields {
    RecallFields {
        query: r.query,
        vector: r.vector,
        top_k: r.top_k,
        session_id: r.session,
        session_only: r.session_only,
        memory_types: r.memory_types,
        min_confidence: r.min_confidence,
        metadata: r.metadata.into_iter().collect(),
        include_vectors: false,
        mark_used: r.mark_used,
    }
}

/// Encodes the request, decodes it back as the server would, and runs it.
fn run(request: Request) {
    let e = common::engine();
    match request {
        Request::Remember(r) => {
            let wire = remember(r).encode_to_vec();
            if let Ok(r) = pb::RememberRequest::decode(wire.as_slice()) {
                let agent = r.agent_id.clone();
                if let Ok(input) = convert::remember_input(r) {
                    let _ = e.remember(&agent, input);
                }
            }
        }
        Request::Batch(a, items) => {
            let inputs: Result<Vec<_>, _> = items
                .into_iter()
                .take(50)
                .map(|r| convert::remember_input(remember(r)))
                .collect();
            if let Ok(inputs) = inputs {
                let _ = e.remember_batch(&agent(a), inputs);
            }
        }
        Request::Recall(r) => {
            let a = agent(r.agent);
            if let Ok(q) = convert::recall_query(fields(r)) {
                let _ = e.recall(&a, &q);
            }
        }
        Request::Inject(r) => {
            let (a, max) = (agent(r.agent), r.max_tokens);
            if let Ok(q) = convert::recall_query(fields(r)) {
                let _ = e.inject_context(&a, &q, u64::from(max));
            }
        }
        Request::Get(a, id) => {
            let _ = e.get(&agent(a), &id, true);
        }
        Request::List(a, size, token, session) => {
            let r = pb::ListRequest {
                agent_id: agent(a),
                page_size: size,
                page_token: token,
                session_id: session,
                ..Default::default()
            };
            let a = r.agent_id.clone();
            if let Ok(q) = convert::list_query(r) {
                let _ = e.list(&a, &q);
            }
        }
        Request::Update(a, id, content, importance, ttl, pinned) => {
            let r = pb::UpdateRequest {
                agent_id: agent(a),
                id,
                content,
                importance,
                ttl_seconds: ttl,
                pinned: Some(pinned),
                ..Default::default()
            };
            let (a, id) = (r.agent_id.clone(), r.id.clone());
            let _ = e.update(&a, &id, convert::update_input(r));
        }
        Request::Forget(a, ids) => {
            let _ = e.forget(&agent(a), &ids);
        }
        Request::MarkUsed(a, ids) => {
            let _ = e.mark_used(&agent(a), &ids);
        }
        Request::ForgetSession(a, s) => {
            let _ = e.forget_session(&agent(a), &s);
        }
        Request::ClearAll(a) => {
            let _ = e.clear_all(&agent(a));
        }
        Request::Stats(a) => {
            let _ = e.stats(&agent(a));
        }
    }
}

/// Raw protobuf bytes as each request type (what a hostile client sends).
fn raw(kind: u8, bytes: &[u8]) {
    let e = common::engine();
    match kind % 4 {
        0 => {
            if let Ok(r) = pb::RememberRequest::decode(bytes) {
                let a = r.agent_id.clone();
                if let Ok(input) = convert::remember_input(r) {
                    let _ = e.remember(&a, input);
                }
            }
        }
        1 => {
            if let Ok(r) = pb::RecallRequest::decode(bytes) {
                let f = RecallFields {
                    query: r.query,
                    vector: r.vector,
                    top_k: r.top_k,
                    session_id: r.session_id,
                    session_only: r.session_only,
                    memory_types: r.memory_types,
                    min_confidence: r.min_confidence,
                    metadata: r.metadata,
                    include_vectors: r.include_vectors,
                    mark_used: r.mark_used,
                };
                if let Ok(q) = convert::recall_query(f) {
                    let _ = e.recall(&r.agent_id, &q);
                }
            }
        }
        2 => {
            if let Ok(r) = pb::UpdateRequest::decode(bytes) {
                let (a, id) = (r.agent_id.clone(), r.id.clone());
                let _ = e.update(&a, &id, convert::update_input(r));
            }
        }
        _ => {
            if let Ok(r) = pb::ListRequest::decode(bytes) {
                let a = r.agent_id.clone();
                if let Ok(q) = convert::list_query(r) {
                    let _ = e.list(&a, &q);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(mode >> 1, rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    if let Ok(request) = Request::arbitrary(&mut u) {
        run(request);
    }
});
