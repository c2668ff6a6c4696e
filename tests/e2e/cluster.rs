//! Replication, with real processes: three `mneme serve --node-id …` on 127.0.0.1–3, each
//! node's cluster port behind a fault-injecting TCP proxy in this test (it drops the
//! connections of blocked links; nodes connect out from their own 127.0.0.x, so the proxy
//! knows who is calling). Leaders are killed with SIGKILL; partitions are proxy rules.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mneme_cluster::pb as cpb;
use mneme_cluster::pb::cluster_client::ClusterClient;
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Cluster tests run one at a time: three nodes each already fill this machine's cores.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ip(node: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, node as u8))
}

fn free_port(node: u64) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip(node), 0)).unwrap();
    l.local_addr().unwrap()
}

/// Blocked links (from node, to node), and a watch that fires when they change.
struct Proxy {
    blocked: std::sync::Mutex<HashSet<(u64, u64)>>,
    changed: watch::Sender<u64>,
}

impl Proxy {
    fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.blocked.lock().unwrap().contains(&(from, to))
    }

    fn set(&self, links: HashSet<(u64, u64)>) {
        *self.blocked.lock().unwrap() = links;
        self.changed.send_modify(|g| *g += 1);
    }
}

/// Forwards `listen` to `target`, refusing and cutting connections of blocked links.
async fn run_proxy(
    proxy: Arc<Proxy>,
    to: u64,
    listen: tokio::net::TcpListener,
    target: SocketAddr,
) {
    loop {
        let Ok((inbound, peer)) = listen.accept().await else {
            return;
        };
        let from = match peer.ip() {
            IpAddr::V4(v4) => u64::from(v4.octets()[3]),
            IpAddr::V6(_) => 0,
        };
        if proxy.is_blocked(from, to) {
            drop(inbound);
            continue;
        }
        let p = Arc::clone(&proxy);
        tokio::spawn(async move {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let mut changed = p.changed.subscribe();
            let (mut a, mut b) = (inbound, outbound);
            let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
            tokio::pin!(copy);
            loop {
                tokio::select! {
                    _ = &mut copy => return,
                    r = changed.changed() => {
                        if r.is_err() || p.is_blocked(from, to) {
                            return;
                        }
                    }
                }
            }
        });
    }
}

struct Node {
    id: u64,
    dir: PathBuf,
    api: SocketAddr,
    raft_real: SocketAddr,
    child: Option<Child>,
}

struct Cluster {
    nodes: Vec<Node>,
    secret: PathBuf,
    /// Nodes 1..=initial start with `--peer`; later ones join through `add-node`.
    initial: u64,
    /// `id=cluster/api` of every node.
    addrs: Vec<String>,
    peers: String,
    extra: Vec<String>,
    proxy: Arc<Proxy>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: u64, extra: &[&str]) -> Cluster {
        Self::start_with_spares(n, 0, extra).await
    }

    /// `n` initial voters, launched, and `spares` more nodes (ids after them) that are
    /// configured but neither launched nor members.
    async fn start_with_spares(n: u64, spares: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "test-cluster-secret-0123456789\n").unwrap();
        let (changed, _) = watch::channel(0);
        let proxy = Arc::new(Proxy {
            blocked: std::sync::Mutex::new(HashSet::new()),
            changed,
        });
        let mut nodes = Vec::new();
        let mut peers = Vec::new();
        for id in 1..=n + spares {
            let api = free_port(id);
            let raft_real = free_port(id);
            let listener = tokio::net::TcpListener::bind((ip(id), 0)).await.unwrap();
            let advertised = listener.local_addr().unwrap();
            // The advertised cluster address is the proxy's.
            tokio::spawn(run_proxy(Arc::clone(&proxy), id, listener, raft_real));
            peers.push(format!("{id}={advertised}/{api}"));
            nodes.push(Node {
                id,
                dir: dir.path().join(format!("node{id}")),
                api,
                raft_real,
                child: None,
            });
        }
        let mut c = Cluster {
            nodes,
            secret,
            initial: n,
            addrs: peers.clone(),
            peers: peers[..n as usize].join(","),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            proxy,
            _dir: dir,
        };
        for id in 1..=n {
            c.launch(id);
        }
        c
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn advertised(&self, id: u64) -> String {
        self.addrs
            .iter()
            .find_map(|p| p.strip_prefix(&format!("{id}=")))
            .and_then(|a| a.split('/').next())
            .unwrap()
            .to_owned()
    }

    /// Starts node `id` and waits until it serves.
    fn launch(&mut self, id: u64) {
        let advertised = self.advertised(id);
        let (secret, extra) = (self.secret.clone(), self.extra.clone());
        let peers: Vec<String> = if id <= self.initial {
            vec!["--peer".into(), self.peers.clone()]
        } else {
            Vec::new()
        };
        let node = self.node(id);
        let mut command = Command::new(env!("CARGO_BIN_EXE_mneme"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(node.api.to_string())
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--node-id", &id.to_string()])
            .arg("--cluster-listen")
            .arg(node.raft_real.to_string())
            .args(["--cluster-advertise", &advertised])
            .arg("--cluster-secret-file")
            .arg(&secret)
            .args(&peers)
            .args(&extra);
        node.child = Some(crate::harness::spawn_node(command));
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn alive(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn url(&self, id: u64) -> String {
        format!("http://{}", self.nodes[(id - 1) as usize].api)
    }

    async fn client(&self, id: u64) -> MemoryServiceClient<Channel> {
        let channel = Channel::from_shared(self.url(id))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        MemoryServiceClient::new(channel)
    }

    async fn status(&self, id: u64) -> Option<cpb::ClusterStatus> {
        let channel = Channel::from_shared(self.url(id))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect_lazy();
        ClusterClient::new(channel)
            .status(cpb::StatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// The leader that a live node reports being (waits up to `limit`).
    async fn leader(&self, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            for id in self.alive() {
                if let Some(s) = self.status(id).await
                    && s.leader_id == id
                    && s.state == "Leader"
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live node applied the same index as the leader's log end.
    async fn converged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let mut applied = BTreeSet::new();
            let mut complete = true;
            for id in self.alive() {
                match self.status(id).await {
                    Some(s) if s.leader_id != 0 => {
                        applied.insert(s.applied_index);
                    }
                    _ => complete = false,
                }
            }
            if complete && applied.len() == 1 {
                return;
            }
            assert!(Instant::now() < deadline, "no convergence: {applied:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every live node holds the same memories of `agent` (access counts from
    /// recalls travel through the log a moment later); returns them.
    async fn identical(&self, agent: &str, limit: Duration) -> BTreeMap<String, pb::Memory> {
        let deadline = Instant::now() + limit;
        loop {
            let alive = self.alive();
            let reference = self.memories(alive[0], agent).await;
            let mut same = true;
            for id in &alive[1..] {
                same &= self.memories(*id, agent).await == reference;
            }
            if same {
                return reference;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes' copies of {agent} differ"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every memory of `agent` on node `id`, by id (a stale read: a node's own state).
    async fn memories(&self, id: u64, agent: &str) -> BTreeMap<String, pb::Memory> {
        let mut c = self.client(id).await;
        let mut out = BTreeMap::new();
        let mut token = String::new();
        loop {
            let mut request = tonic::Request::new(pb::ListRequest {
                agent_id: agent.into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("x-mneme-consistency", "stale".parse().unwrap());
            let page = c.list(request).await.unwrap().into_inner();
            for m in page.memories {
                out.insert(m.id.clone(), m);
            }
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn remember_with_id(agent: &str, content: &str, request_id: &str) -> pb::RememberRequest {
    pb::RememberRequest {
        agent_id: agent.into(),
        content: content.into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Remembers `content` under `request_id`, trying the nodes in turn (the way a client
/// retries after UNAVAILABLE) until one acknowledges; the memory's id.
async fn remember_until_acked(
    cluster_urls: &[(u64, String)],
    agent: &str,
    content: &str,
    request_id: &str,
    start: usize,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = start;
    loop {
        let (_, url) = &cluster_urls[i % cluster_urls.len()];
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        let mut c = MemoryServiceClient::new(channel);
        match c
            .remember(remember_with_id(agent, content, request_id))
            .await
        {
            Ok(r) => return r.into_inner().memory.unwrap().id,
            Err(s) => {
                assert!(
                    matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                    ),
                    "only retryable errors while nodes fail: {s:?}"
                );
            }
        }
        assert!(Instant::now() < deadline, "{request_id} never acknowledged");
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_forward_writes_and_read_linearizably() {
    let _one = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != follower).unwrap();
    // Writes on a follower are forwarded; each is readable at once on every node.
    let mut f = cluster.client(follower).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = f
            .remember(remember_with_id(
                "bot",
                &format!("fact number {i}"),
                &format!("r{i}"),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.deduplicated);
        let id = r.memory.unwrap().id;
        for node in 1..=3 {
            let got = cluster
                .client(node)
                .await
                .get(pb::GetRequest {
                    agent_id: "bot".into(),
                    id: id.clone(),
                    include_vector: false,
                })
                .await;
            assert!(
                got.is_ok(),
                "node {node} does not see {id} right after it was acknowledged"
            );
        }
        ids.push(id);
    }
    // A retry with the same request id on another node returns the first write.
    let again = cluster
        .client(other)
        .await
        .remember(remember_with_id("bot", "fact number 0", "r0"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(again.memory.unwrap().id, ids[0]);
    for node in 1..=3 {
        let stats = cluster
            .client(node)
            .await
            .stats(pb::StatsRequest {
                agent_id: "bot".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.total_memories, 30, "node {node}");
        let hits = cluster
            .client(node)
            .await
            .recall(pb::RecallRequest {
                agent_id: "bot".into(),
                query: "fact number 7".into(),
                top_k: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            hits.memories[0].memory.as_ref().unwrap().content,
            "fact number 7"
        );
    }
    // Every node's copy is identical.
    cluster.converged(Duration::from_secs(10)).await;
    cluster.identical("bot", Duration::from_secs(10)).await;
    // Status from any node names the same leader and three voters; the CLI prints it.
    let s = cluster.status(other).await.unwrap();
    assert_eq!(s.leader_id, leader);
    assert_eq!(s.nodes.iter().filter(|n| n.voter).count(), 3);
    let out = Command::new(env!("CARGO_BIN_EXE_mneme"))
        .args(["cluster", "status", "--server", &cluster.url(leader)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("(Leader)"), "{text}");
    // A bad consistency header is refused, naming it.
    let mut bad = tonic::Request::new(pb::StatsRequest {
        agent_id: "bot".into(),
    });
    bad.metadata_mut()
        .insert("x-mneme-consistency", "sometimes".parse().unwrap());
    let err = cluster.client(other).await.stats(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("x-mneme-consistency"), "{err:?}");
    // The cluster port refuses calls without the secret.
    let raft = Channel::from_shared(format!("http://{}", cluster.nodes[0].raft_real))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = mneme_cluster::pb::raft_client::RaftClient::new(raft)
        .vote(cpb::RaftMessage { payload: vec![] })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_twenty_times_loses_and_duplicates_nothing() {
    let _one = SERIAL.lock().await;
    let cycles: usize = std::env::var("MNEME_FAILOVER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut cluster = Cluster::start(3, &[]).await;
    cluster.leader(Duration::from_secs(30)).await;
    let urls: Vec<(u64, String)> = (1..=3).map(|id| (id, cluster.url(id))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3usize {
        let (urls, stop) = (urls.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let content = format!("writer {w} write {n}");
                let request_id = format!("w{w}-{n}");
                let id = remember_until_acked(&urls, "bot", &content, &request_id, w + n).await;
                acked.push((content, id));
                n += 1;
            }
            acked
        }));
    }
    let mut failovers = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let leader = cluster.leader(Duration::from_secs(30)).await;
        cluster.kill(leader);
        let killed_at = Instant::now();
        let survivors: Vec<(u64, String)> = urls
            .iter()
            .filter(|(id, _)| *id != leader)
            .cloned()
            .collect();
        remember_until_acked(
            &survivors,
            "probe",
            &format!("probe {cycle}"),
            &format!("p{cycle}"),
            0,
        )
        .await;
        failovers.push(killed_at.elapsed());
        eprintln!(
            "cycle {cycle}: killed leader {leader}, writes served again after {:.2} s",
            killed_at.elapsed().as_secs_f64()
        );
        cluster.launch(leader);
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    cluster.converged(Duration::from_secs(60)).await;
    let reference = cluster.identical("bot", Duration::from_secs(30)).await;
    // Nothing acknowledged is lost; nothing is stored twice.
    let mut by_content: BTreeMap<&str, usize> = BTreeMap::new();
    for m in reference.values() {
        *by_content.entry(m.content.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = by_content.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
    for (content, id) in &acked {
        let m = reference
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged {content:?} ({id}) is lost"));
        assert_eq!(&m.content, content);
    }
    assert_eq!(reference.len(), acked.len(), "memories nobody acknowledged");
    let max = failovers.iter().max().unwrap();
    let mean = failovers.iter().sum::<Duration>() / failovers.len() as u32;
    eprintln!(
        "failover over {} kills: {} acknowledged writes, new leader serving writes after mean {:.2} s, max {:.2} s",
        failovers.len(),
        acked.len(),
        mean.as_secs_f64(),
        max.as_secs_f64()
    );
    assert!(acked.len() > cycles, "the writers made no progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_stops_acknowledging_and_all_converge_after_healing() {
    let _one = SERIAL.lock().await;
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let mut c = cluster.client(leader).await;
    for i in 0..20 {
        c.remember(remember_with_id(
            "bot",
            &format!("before {i}"),
            &format!("b{i}"),
        ))
        .await
        .unwrap();
    }
    // Cut the leader off from both others, both ways.
    let links: HashSet<(u64, u64)> = (1..=3)
        .filter(|id| *id != leader)
        .flat_map(|id| [(id, leader), (leader, id)])
        .collect();
    cluster.proxy.set(links);
    let isolated = tokio::spawn({
        let mut c = cluster.client(leader).await;
        async move {
            c.remember(remember_with_id(
                "bot",
                "written to the cut-off leader",
                "iso",
            ))
            .await
        }
    });
    // The majority elects a leader and serves.
    let majority: Vec<(u64, String)> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| (id, cluster.url(id)))
        .collect();
    let started = Instant::now();
    remember_until_acked(&majority, "bot", "written to the majority", "maj", 0).await;
    eprintln!(
        "majority serving writes {:.2} s after the partition",
        started.elapsed().as_secs_f64()
    );
    let cut_off = isolated.await.unwrap();
    let status = cut_off.expect_err("a leader without a majority acknowledged a write");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Heal: every node ends with the same memories (the cut-off write is nowhere, or
    // everywhere — raft decides, but all agree).
    cluster.proxy.set(HashSet::new());
    cluster.converged(Duration::from_secs(30)).await;
    let reference = cluster.identical("bot", Duration::from_secs(30)).await;
    assert!(
        reference
            .values()
            .any(|m| m.content == "written to the majority")
    );
    assert_eq!(
        reference
            .values()
            .filter(|m| m.content.starts_with("before"))
            .count(),
        20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_many_writes_catches_up_from_a_snapshot() {
    const BATCH: usize = 20;
    let _one = SERIAL.lock().await;
    let writes: usize = std::env::var("MNEME_CATCHUP_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // Small snapshots and batches: the log runs far past the last snapshot and its purge.
    let mut cluster = Cluster::start(3, &["--snapshot-every", "200"]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(lagging);
    let mut c = cluster.client(leader).await;
    let started = Instant::now();
    for batch in 0..writes.div_ceil(BATCH) {
        let items = (0..BATCH)
            .map(|i| {
                let n = batch * BATCH + i;
                pb::RememberRequest {
                    content: format!("memory {n}"),
                    vector: (0..16)
                        .map(|d| ((n * 31 + d * 7) % 97) as f32 + 1.0)
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        c.remember_batch(pb::RememberBatchRequest {
            agent_id: "bulk".into(),
            items,
            request_id: format!("batch-{batch}"),
        })
        .await
        .unwrap();
    }
    eprintln!(
        "{writes} writes with one node down: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let target = cluster.status(leader).await.unwrap().last_log_index;
    let restarted = Instant::now();
    cluster.launch(lagging);
    loop {
        if let Some(s) = cluster.status(lagging).await
            && s.applied_index >= target
        {
            assert!(s.snapshot_index > 0, "caught up without a snapshot: {s:?}");
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(300),
            "no catch-up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "node {lagging} caught up on {writes} missed writes in {:.2} s (from a snapshot)",
        restarted.elapsed().as_secs_f64()
    );
    let stats = cluster
        .client(lagging)
        .await
        .stats(pb::StatsRequest {
            agent_id: "bulk".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stats.total_memories as usize,
        writes.div_ceil(BATCH) * BATCH
    );
    cluster.identical("bulk", Duration::from_secs(30)).await;
}

/// A register (one memory's content) written and read through all three nodes while the
/// leader is killed and restarted; the recorded history is checked by stateright's
/// linearizability tester. Each call is recorded with its start and end; failed reads are
/// left out (they changed nothing), and a failed write stays in flight (it may or may not
/// have taken effect) unless no read ever saw its value — then it is left out too, which
/// keeps the check's search small without changing its answer (values are unique).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_register_history_across_a_leader_kill_is_linearizable() {
    use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
    let _one = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let id = cluster
        .client(leader)
        .await
        .remember(remember_with_id("lin", "0", "init"))
        .await
        .unwrap()
        .into_inner()
        .memory
        .unwrap()
        .id;
    /// (client, started, ended if it returned, write value or None for a read, read value)
    type Call = (u64, Instant, Option<Instant>, Option<u64>, Option<u64>);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..3u64 {
        let url = cluster.url(client + 1);
        let (stop, id) = (Arc::clone(&stop), id.clone());
        clients.push(tokio::spawn(async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(15))
                .connect_lazy();
            let mut c = MemoryServiceClient::new(channel);
            let mut calls: Vec<Call> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let started = Instant::now();
                if !n.is_multiple_of(3) {
                    let value = (client + 1) * 100_000 + n;
                    let r = c
                        .update(pb::UpdateRequest {
                            agent_id: "lin".into(),
                            id: id.clone(),
                            content: Some(value.to_string()),
                            ..Default::default()
                        })
                        .await;
                    let ended = r.is_ok().then(Instant::now);
                    calls.push((client, started, ended, Some(value), None));
                } else {
                    let r = c
                        .get(pb::GetRequest {
                            agent_id: "lin".into(),
                            id: id.clone(),
                            include_vector: false,
                        })
                        .await;
                    if let Ok(m) = r {
                        let value: u64 = m.into_inner().content.parse().unwrap();
                        calls.push((client, started, Some(Instant::now()), None, Some(value)));
                    }
                }
                if calls.last().is_some_and(|c| c.2.is_none()) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.launch(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls: Vec<Call> = Vec::new();
    for c in clients {
        calls.extend(c.await.unwrap());
    }
    let observed: HashSet<u64> = calls.iter().filter_map(|c| c.4).collect();
    let unknown = calls.iter().filter(|c| c.2.is_none()).count();
    calls.retain(|c| c.2.is_some() || c.3.is_some_and(|v| observed.contains(&v)));
    // Events in real-time order; a call left in flight retires its client's thread id.
    enum Event {
        Invoke(usize),
        Return(usize),
    }
    let mut events: Vec<(Instant, u8, Event)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        events.push((c.1, 1, Event::Invoke(i)));
        if let Some(end) = c.2 {
            events.push((end, 0, Event::Return(i)));
        }
    }
    events.sort_by_key(|(t, order, _)| (*t, *order));
    // The history as recorded, and (to show the check can fail) with one read's value
    // replaced by one nobody wrote.
    let history = |corrupt: bool| {
        let mut corrupted = !corrupt;
        let mut thread_of = vec![0u64; calls.len()];
        let mut next_thread: BTreeMap<u64, u64> = BTreeMap::new();
        let mut tester = LinearizabilityTester::<u64, Register<u64>>::new(Register(0));
        for (_, _, e) in &events {
            match *e {
                Event::Invoke(i) => {
                    let (client, _, ended, write, _) = calls[i];
                    let t = next_thread.entry(client).or_insert(client * 1_000_000);
                    thread_of[i] = *t;
                    if ended.is_none() {
                        *t += 1;
                    }
                    let op = match write {
                        Some(v) => RegisterOp::Write(v),
                        None => RegisterOp::Read,
                    };
                    tester.on_invoke(thread_of[i], op).unwrap();
                }
                Event::Return(i) => {
                    let ret = match calls[i].4 {
                        Some(_) if !corrupted => {
                            corrupted = true;
                            RegisterRet::ReadOk(7)
                        }
                        Some(v) => RegisterRet::ReadOk(v),
                        None => RegisterRet::WriteOk,
                    };
                    tester.on_return(thread_of[i], ret).unwrap();
                }
            }
        }
        tester
    };
    let tester = history(false);
    eprintln!(
        "register history: {} calls over {:.1} s, {unknown} with unknown outcome ({} of them seen by a read)",
        calls.len(),
        epoch.elapsed().as_secs_f64(),
        calls.iter().filter(|c| c.2.is_none()).count()
    );
    assert!(calls.len() > 50, "too little history to check");
    assert!(
        tester.is_consistent(),
        "not linearizable: {:?}",
        tester.serialized_history()
    );
    assert!(
        !history(true).is_consistent(),
        "the checker accepted a read of a value nobody wrote"
    );
}

/// `mneme cluster add-node` brings a fourth node in (it catches up, then votes);
/// `remove-node` takes it out again; writes go on throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_leave_through_the_admin_commands() {
    let _one = SERIAL.lock().await;
    let mut cluster = Cluster::start_with_spares(3, 1, &[]).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let mut c = cluster.client(leader).await;
    for i in 0..200 {
        c.remember(remember_with_id(
            "bot",
            &format!("early fact {i}"),
            &format!("e{i}"),
        ))
        .await
        .unwrap();
    }
    cluster.launch(4);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mneme"))
            .arg("cluster")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mneme cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let node4 = cluster.addrs[3].clone();
    let added = cli(&[
        "add-node",
        "--server",
        &cluster.url(leader),
        "--node",
        &node4,
    ]);
    assert_eq!(added.matches(" voter ").count(), 4, "{added}");
    c.remember(remember_with_id("bot", "after the join", "j"))
        .await
        .unwrap();
    cluster.converged(Duration::from_secs(30)).await;
    let all = cluster.identical("bot", Duration::from_secs(30)).await;
    assert_eq!(all.len(), 201);
    let s = cluster.status(4).await.unwrap();
    assert_eq!(s.leader_id, leader, "{s:?}");
    // Out again.
    let removed = cli(&["remove-node", "--server", &cluster.url(leader), "--id", "4"]);
    assert_eq!(removed.matches(" voter ").count(), 3, "{removed}");
    cluster.kill(4);
    c.remember(remember_with_id("bot", "after the removal", "r"))
        .await
        .unwrap();
    // Bad input is refused, naming the field.
    let out = Command::new(env!("CARGO_BIN_EXE_mneme"))
        .args([
            "cluster",
            "add-node",
            "--server",
            &cluster.url(leader),
            "--node",
            "0=x/y",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
