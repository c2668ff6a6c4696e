//! Killing the server: SIGKILL during concurrent remembers and forgets never loses an
//! acknowledged memory nor brings back a forgotten one; SIGTERM under load exits 0 and
//! loses nothing acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mneme_server::pb;
use rand::{Rng, SeedableRng};

use crate::harness::Server;

#[derive(Debug, Default, Clone)]
struct Acked {
    /// id → content of every acknowledged remember.
    remembered: BTreeMap<String, String>,
    /// Ids whose forget was acknowledged.
    forgotten: BTreeSet<String>,
    /// Ids whose forget was sent but not acknowledged: either outcome is correct.
    maybe_forgotten: BTreeSet<String>,
}

/// Writers remember (and forget some of their own earlier memories) until the channel
/// breaks; everything acknowledged is recorded.
async fn load(server: &Server, acked: Arc<Mutex<Acked>>, writers: usize, tag: String) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut c = server.client().await;
        let acked = Arc::clone(&acked);
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<String> = Vec::new();
            for i in 0u64.. {
                let content = format!("{tag} writer {w} fact {i}");
                let request = pb::RememberRequest {
                    agent_id: "crash".into(),
                    content: content.clone(),
                    session_id: format!("w{w}"),
                    ..Default::default()
                };
                let Ok(out) = c.remember(request).await else {
                    return;
                };
                let id = out.into_inner().memory.unwrap().id;
                acked.lock().unwrap().remembered.insert(id.clone(), content);
                mine.push(id);
                if i % 4 == 3 {
                    let victim = mine.remove(0);
                    acked.lock().unwrap().maybe_forgotten.insert(victim.clone());
                    let request = pb::ForgetRequest {
                        agent_id: "crash".into(),
                        ids: vec![victim.clone()],
                    };
                    let Ok(_) = c.forget(request).await else {
                        return;
                    };
                    let mut acked = acked.lock().unwrap();
                    acked.maybe_forgotten.remove(&victim);
                    acked.forgotten.insert(victim);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn verify(server: &Server, acked: &Acked, cycle: usize) {
    let mut c = server.client().await;
    let mut present = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .list(pb::ListRequest {
                agent_id: "crash".into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        present.extend(page.memories.into_iter().map(|m| (m.id, m.content)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let ids: BTreeSet<&String> = present.iter().map(|(id, _)| id).collect();
    for (id, content) in &acked.remembered {
        if acked.forgotten.contains(id) {
            assert!(!ids.contains(id), "cycle {cycle}: forgotten {id} came back");
        } else if !acked.maybe_forgotten.contains(id) {
            assert!(
                present.contains(&(id.clone(), content.clone())),
                "cycle {cycle}: acknowledged {id} ({content}) lost"
            );
        }
    }
}

fn cycles() -> usize {
    std::env::var("MNEME_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_concurrent_remembers_and_forgets_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for cycle in 0..cycles() {
        let mut server = Server::start(dir.path(), &[]);
        let snapshot = acked.lock().unwrap().clone();
        verify(&server, &snapshot, cycle).await;
        let loader = load(&server, Arc::clone(&acked), 4, format!("c{cycle}"));
        let kill_after = Duration::from_millis(rng.random_range(20..250));
        tokio::select! {
            _ = loader => panic!("writers stopped before the kill"),
            _ = tokio::time::sleep(kill_after) => {}
        }
        server.kill();
    }
    let server = Server::start(dir.path(), &[]);
    let acked = acked.lock().unwrap().clone();
    verify(&server, &acked, cycles()).await;
    assert!(
        acked.remembered.len() > 100,
        "too little load to mean anything: {}",
        acked.remembered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_zero_and_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut server = Server::start(dir.path(), &[]);
    let loader = load(&server, Arc::clone(&acked), 8, "term".into());
    tokio::select! {
        _ = loader => panic!("writers stopped before the signal"),
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        drop(server);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let server = Server::start(dir.path(), &[]);
    let snapshot = acked.lock().unwrap().clone();
    verify(&server, &snapshot, 0).await;
}
