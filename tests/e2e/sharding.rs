//! Sharding, with real processes: `mneme serve --sharded` nodes on 127.0.0.1–6, 1,000
//! agents, writers and readers going to any node while a node joins, one is killed with
//! SIGKILL, and one is removed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mneme_cluster::pb as cpb;
use mneme_cluster::pb::cluster_client::ClusterClient;
use mneme_server::pb;
use mneme_server::pb::memory_service_client::MemoryServiceClient;
use std::sync::Mutex;
use tonic::transport::Channel;

const AGENTS: usize = 1_000;
const SHARDS: u32 = 64;

/// A client gives up on one operation (retries included) after this.
const OP_DEADLINE: Duration = Duration::from_secs(90);

fn ip(node: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, node as u8))
}

fn free_port(node: u64) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip(node), 0)).unwrap();
    l.local_addr().unwrap()
}

struct Node {
    dir: PathBuf,
    api: SocketAddr,
    raft: SocketAddr,
    child: Option<Child>,
}

struct Shards {
    nodes: BTreeMap<u64, Node>,
    secret: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shards {
    fn new(n: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "test-cluster-secret-0123456789\n").unwrap();
        let nodes = (1..=n)
            .map(|id| {
                (
                    id,
                    Node {
                        dir: dir.path().join(format!("node{id}")),
                        api: free_port(id),
                        raft: free_port(id),
                        child: None,
                    },
                )
            })
            .collect();
        Self {
            nodes,
            secret,
            _dir: dir,
        }
    }

    fn spec(&self, id: u64) -> cpb::NodeInfo {
        let n = &self.nodes[&id];
        cpb::NodeInfo {
            node_id: id,
            raft_addr: n.raft.to_string(),
            api_addr: n.api.to_string(),
        }
    }

    /// Starts node `id`: nodes 1–5 with flags, node 6 from a `--config` file (its
    /// `[cluster]` table).
    fn launch(&mut self, id: u64) {
        let secret = self.secret.clone();
        let node = self.nodes.get_mut(&id).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mneme"));
        command.arg("serve");
        if id == 6 {
            let config = node.dir.with_extension("toml");
            let toml = format!(
                "listen = \"{}\"\ndata_dir = {:?}\n[cluster]\nnode_id = {id}\n\
                 cluster_listen = \"{}\"\ncluster_secret_file = {:?}\nsharded = true\n",
                node.api, node.dir, node.raft, secret
            );
            std::fs::write(&config, toml).unwrap();
            command.arg("--config").arg(&config);
        } else {
            command
                .arg("--listen")
                .arg(node.api.to_string())
                .arg("--data-dir")
                .arg(&node.dir)
                .args(["--node-id", &id.to_string(), "--sharded"])
                .arg("--cluster-listen")
                .arg(node.raft.to_string())
                .arg("--cluster-secret-file")
                .arg(&secret);
        }
        node.child = Some(crate::harness::spawn_node(command));
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).unwrap().child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self, id: u64) -> Option<u32> {
        self.nodes[&id].child.as_ref().map(Child::id)
    }

    fn channel(&self, id: u64, timeout: Duration) -> Channel {
        Channel::from_shared(format!("http://{}", self.nodes[&id].api))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .connect_lazy()
    }

    fn admin(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id, Duration::from_secs(30)))
    }

    async fn sharding(&self, id: u64) -> Option<cpb::ShardingStatus> {
        ClusterClient::new(self.channel(id, Duration::from_secs(2)))
            .status(cpb::StatusRequest {})
            .await
            .ok()
            .and_then(|s| s.into_inner().sharding)
    }

    /// Waits until node `id`'s map has no move under way or to do, and `ok` holds of it.
    async fn settled(
        &self,
        id: u64,
        limit: Duration,
        ok: impl Fn(&cpb::ShardingStatus) -> bool,
    ) -> cpb::ShardingStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.sharding(id).await
                && s.moves.is_empty()
                && s.moves_pending == 0
                && ok(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "not settled in {limit:?}: {:?}",
                self.sharding(id).await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn agent(i: usize) -> String {
    format!("agent-{i:04}")
}

/// Errors a client of a changing cluster may see and retry.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Acknowledged writes: (agent, memory id).
    acked: Mutex<Vec<(String, String)>>,
    retried: AtomicU64,
    reads: AtomicU64,
    /// Anything not retryable.
    failures: Mutex<Vec<String>>,
}

/// Remembers one memory of `agent` through node `via` (retrying with the same request id
/// until acknowledged, through other nodes if need be).
async fn write(c: &Shards, seen: &Seen, via: &[u64], agent: &str, n: u64) -> bool {
    let request_id = format!("{agent}-{n}");
    let deadline = Instant::now() + OP_DEADLINE;
    for attempt in 0..60 {
        // One failure fails the test: stop at once instead of grinding through the rest.
        if Instant::now() > deadline || !seen.failures.lock().unwrap().is_empty() {
            break;
        }
        let node = via[(n as usize + attempt) % via.len()];
        let mut client = MemoryServiceClient::new(c.channel(node, Duration::from_secs(20)));
        let r = pb::RememberRequest {
            agent_id: agent.into(),
            content: format!("memory {n} of {agent}"),
            request_id: request_id.clone(),
            ..Default::default()
        };
        match client.remember(r).await {
            Ok(resp) => {
                let id = resp.into_inner().memory.unwrap().id;
                seen.acked.lock().unwrap().push((agent.to_owned(), id));
                return true;
            }
            Err(s) if retryable(&s) => {
                seen.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => {
                seen.failures
                    .lock()
                    .unwrap()
                    .push(format!("remember {agent} via {node}: {s}"));
                return false;
            }
        }
    }
    seen.failures.lock().unwrap().push(format!(
        "remember {agent}: not acknowledged within {OP_DEADLINE:?} (60 tries at most)"
    ));
    false
}

/// Gets `id` of `agent` through the nodes `via` (linearizable); `Err` if it is missing.
async fn read(c: &Shards, seen: &Seen, via: &[u64], agent: &str, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + OP_DEADLINE;
    for attempt in 0..60 {
        if Instant::now() > deadline || !seen.failures.lock().unwrap().is_empty() {
            break;
        }
        let node = via[attempt % via.len()];
        let mut client = MemoryServiceClient::new(c.channel(node, Duration::from_secs(20)));
        let r = pb::GetRequest {
            agent_id: agent.into(),
            id: id.into(),
            ..Default::default()
        };
        match client.get(r).await {
            Ok(_) => {
                seen.reads.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(s) if retryable(&s) => {
                seen.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(format!("get {agent}/{id} via {node}: {s}")),
        }
    }
    Err(format!(
        "get {agent}/{id}: no answer within {OP_DEADLINE:?} (60 tries at most)"
    ))
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Writers and readers on every live node until `stop`.
fn load(
    c: &Arc<Shards>,
    seen: &Arc<Seen>,
    via: Vec<u64>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (c, seen, stop, via) = (
            Arc::clone(c),
            Arc::clone(seen),
            Arc::clone(stop),
            via.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 1_000_000 * (w + 1);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let a = agent((n as usize * 7919) % AGENTS);
                write(&c, &seen, &via, &a, n).await;
            }
        }));
    }
    for r in 0..2usize {
        let (c, seen, stop, via) = (
            Arc::clone(c),
            Arc::clone(seen),
            Arc::clone(stop),
            via.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let pick = {
                    let acked = seen.acked.lock().unwrap();
                    acked.get((i * 104_729) % acked.len().max(1)).cloned()
                };
                if let Some((a, id)) = pick
                    && let Err(e) = read(&c, &seen, &via, &a, &id).await
                {
                    seen.failures.lock().unwrap().push(e);
                }
            }
        }));
    }
    tasks
}

/// Runs `work(w, cluster, record)` for w in 0..8 as concurrent tasks and waits for all.
async fn eight<F, Fut>(c: &Arc<Shards>, seen: &Arc<Seen>, work: F)
where
    F: Fn(usize, Arc<Shards>, Arc<Seen>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..8)
        .map(|w| tokio::spawn(work(w, Arc::clone(c), Arc::clone(seen))))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn stop_load(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(false, Ordering::Relaxed);
}

fn spread(s: &cpb::ShardingStatus) -> (u32, u32) {
    let active = s.load.iter().filter(|l| !l.leaving);
    active.fold((u32::MAX, 0), |(lo, hi), l| {
        (lo.min(l.replicas), hi.max(l.replicas))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_rebalance_under_load_and_survive_a_killed_and_a_removed_node() {
    let _one = crate::cluster::SERIAL.lock().await;
    let mut c = Shards::new(6);
    for id in 1..=5 {
        c.launch(id);
    }
    let init = cpb::InitRequest {
        nodes: (1..=5).map(|id| c.spec(id)).collect(),
        shards: SHARDS,
        max_moves: 2,
    };
    // Node ids are taken; a sharded init without shards is refused.
    let refused = c
        .admin(1)
        .init(cpb::InitRequest {
            shards: 0,
            ..init.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    c.admin(1).init(init).await.unwrap();
    // Every shard's leader is in the map (routing sends requests there first).
    let s = c
        .settled(3, Duration::from_secs(60), |s| {
            s.shards == SHARDS
                && s.shard_info
                    .iter()
                    .all(|i| i.leader_id != 0 && i.replicas.contains(&i.leader_id))
        })
        .await;
    assert!(spread(&s).1 - spread(&s).0 <= 1, "{s:?}");
    assert_eq!(
        s.shard_info.iter().map(|i| i.replicas.len()).sum::<usize>(),
        SHARDS as usize * 3
    );

    // What the groups cost when nothing happens (heartbeats of 16 shard groups and the
    // metadata group).
    let idle: Vec<f64> = (1..=5).map(|id| cpu_seconds(c.pid(id).unwrap())).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in 1..=5u64 {
        let used = cpu_seconds(c.pid(id).unwrap()) - idle[id as usize - 1];
        eprintln!("node {id} idle: {:.1} % of a core", used * 100.0 / 3.0);
    }

    // Every agent gets a memory, through every node (most requests are routed).
    let c = Arc::new(c);
    let seen = Arc::new(Seen::default());
    let all: Vec<u64> = (1..=5).collect();
    eight(&c, &seen, |w, c, seen| {
        let all = all.clone();
        async move {
            for i in (w..AGENTS).step_by(8) {
                write(&c, &seen, &all, &agent(i), i as u64).await;
            }
        }
    })
    .await;
    assert!(
        seen.failures.lock().unwrap().is_empty(),
        "{:?}",
        seen.failures.lock().unwrap()
    );
    assert_eq!(seen.acked.lock().unwrap().len(), AGENTS);

    // CPU per operation, per node: 2,000 writes then 2,000 reads, spread over the nodes.
    let before: Vec<f64> = all
        .iter()
        .map(|id| cpu_seconds(c.pid(*id).unwrap()))
        .collect();
    let started = Instant::now();
    eight(&c, &seen, |w, c, seen| {
        let all = all.clone();
        async move {
            for k in 0..250u64 {
                let n = 500_000 + w as u64 * 1_000 + k;
                write(&c, &seen, &all, &agent((n as usize * 31) % AGENTS), n).await;
            }
        }
    })
    .await;
    let write_secs = started.elapsed().as_secs_f64();
    let mid: Vec<f64> = all
        .iter()
        .map(|id| cpu_seconds(c.pid(*id).unwrap()))
        .collect();
    let started = Instant::now();
    let acked: Vec<(String, String)> = seen.acked.lock().unwrap().clone();
    eight(&c, &seen, |w, c, seen| {
        let (all, acked) = (all.clone(), acked.clone());
        async move {
            for k in 0..250usize {
                let (a, id) = &acked[(w * 250 + k) % acked.len()];
                let via = [all[(w + k) % all.len()]];
                read(&c, &seen, &via, a, id).await.unwrap();
            }
        }
    })
    .await;
    let read_secs = started.elapsed().as_secs_f64();
    let after: Vec<f64> = all
        .iter()
        .map(|id| cpu_seconds(c.pid(*id).unwrap()))
        .collect();
    for (k, id) in all.iter().enumerate() {
        eprintln!(
            "node {id}: {:.0} µs CPU per write, {:.0} µs CPU per read (of 2,000 each, cluster-wide)",
            (mid[k] - before[k]) * 1e6 / 2_000.0,
            (after[k] - mid[k]) * 1e6 / 2_000.0
        );
    }
    eprintln!(
        "2,000 writes in {write_secs:.2} s ({:.0}/s), 2,000 reads in {read_secs:.2} s ({:.0}/s), 8 clients",
        2_000.0 / write_secs,
        2_000.0 / read_secs
    );
    let mut c = Arc::try_unwrap(c).ok().unwrap();

    // A sixth node joins under load: shards move to it until the spread is at most one.
    c.launch(6);
    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&c, &seen, all.clone(), &stop);
    // Through the CLI: add the node, then follow the rebalancing to its end.
    let joined = Instant::now();
    let server = format!("http://{}", c.nodes[&1].api);
    let six = c.spec(6);
    let six = format!("6={}/{}", six.raft_addr, six.api_addr);
    let (added, watched) = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            // The CLI, killed (failing the test with what it printed) after 180 s.
            let cli = |args: &[&str]| {
                let mut child = Command::new(env!("CARGO_BIN_EXE_mneme"))
                    .arg("cluster")
                    .args(args)
                    .args(["--server", &server])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(180);
                while child.try_wait().unwrap().is_none() {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let out = child.wait_with_output().unwrap();
                        panic!(
                            "mneme cluster {args:?} did not finish in 180 s: {}\n{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                child.wait_with_output().unwrap()
            };
            (
                cli(&["add-node", "--node", &six]),
                cli(&["status", "--wait"]),
            )
        })
        .await
        .unwrap()
    };
    assert!(added.status.success(), "{added:?}");
    assert!(watched.status.success(), "{watched:?}");
    let out = String::from_utf8_lossy(&watched.stdout);
    let bar = String::from_utf8_lossy(&watched.stderr);
    assert!(out.contains(&format!("shards {SHARDS} ")), "{out}");
    assert!(out.contains("still to do 0"), "{out}");
    assert!(out.contains("node 6 holds"), "{out}");
    assert!(
        bar.trim_end().ends_with(" moves") && bar.contains("] "),
        "{bar}"
    );
    let s = c
        .settled(1, Duration::from_secs(180), |s| {
            s.load.iter().any(|l| l.node_id == 6 && l.replicas > 0)
        })
        .await;
    eprintln!(
        "join: {} moves done in {:.1} s under load",
        s.moves_done,
        joined.elapsed().as_secs_f64()
    );
    let (lo, hi) = spread(&s);
    assert!(hi - lo <= 1, "uneven after the join: {:?}", s.load);
    assert_eq!(s.load.len(), 6);
    stop_load(&stop, tasks).await;
    assert!(
        seen.failures.lock().unwrap().is_empty(),
        "{:?}",
        seen.failures.lock().unwrap()
    );
    let mut c = Arc::try_unwrap(c).ok().unwrap();

    // SIGKILL one node: every agent stays readable and writable through the others.
    c.kill(3);
    let c = Arc::new(c);
    let alive: Vec<u64> = vec![1, 2, 4, 5, 6];
    let acked: Vec<(String, String)> = seen.acked.lock().unwrap().clone();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (a, id) in &acked {
        last.insert(a.clone(), id.clone());
    }
    let last: Vec<(String, String)> = last.into_iter().collect();
    assert_eq!(last.len(), AGENTS);
    eight(&c, &seen, |w, c, seen| {
        let (alive, last) = (alive.clone(), last.clone());
        async move {
            for (a, id) in last.iter().skip(w).step_by(8) {
                if let Err(e) = read(&c, &seen, &alive, a, id).await {
                    seen.failures.lock().unwrap().push(e);
                }
                write(&c, &seen, &alive, a, 900_000 + w as u64).await;
            }
        }
    })
    .await;
    assert!(
        seen.failures.lock().unwrap().is_empty(),
        "{:?}",
        seen.failures.lock().unwrap()
    );
    // A call over every shard (Compact) fans out and says who answered: not node 3.
    let compact =
        pb::admin_service_client::AdminServiceClient::new(c.channel(1, Duration::from_secs(60)))
            .compact(pb::CompactRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(compact.parts.len(), 6, "{compact:?}");
    for part in &compact.parts {
        let is_3 = part.node == c.nodes[&3].api.to_string();
        assert_eq!(part.answered, !is_3, "{part:?}");
        assert_eq!(part.error.is_empty(), !is_3, "{part:?}");
        assert!(!part.shards.is_empty(), "{part:?}");
    }
    let mut c = Arc::try_unwrap(c).ok().unwrap();
    c.launch(3);

    // Remove node 2 under load: its shards move away first, then it leaves the map.
    let c = Arc::new(c);
    let all6: Vec<u64> = (1..=6).filter(|n| *n != 2).collect();
    let tasks = load(&c, &seen, all6.clone(), &stop);
    let removing = Instant::now();
    let moves_before = c.sharding(1).await.unwrap().moves_done;
    c.admin(1)
        .remove_node(cpb::RemoveNodeRequest { node_id: 2 })
        .await
        .unwrap();
    let s = c
        .settled(1, Duration::from_secs(180), |s| {
            s.load.iter().all(|l| l.node_id != 2)
        })
        .await;
    assert!(
        s.shard_info
            .iter()
            .all(|i| !i.replicas.contains(&2) && i.replicas.len() == 3)
    );
    eprintln!(
        "removal: {} moves done in {:.1} s under load",
        s.moves_done - moves_before,
        removing.elapsed().as_secs_f64()
    );
    let (lo, hi) = spread(&s);
    assert!(hi - lo <= 1, "uneven after the removal: {:?}", s.load);
    stop_load(&stop, tasks).await;
    assert!(
        seen.failures.lock().unwrap().is_empty(),
        "{:?}",
        seen.failures.lock().unwrap()
    );

    // Nothing acknowledged was lost.
    let acked: Vec<(String, String)> = seen.acked.lock().unwrap().clone();
    eight(&c, &seen, |w, c, seen| {
        let (via, acked) = (all6.clone(), acked.clone());
        async move {
            for (a, id) in acked.iter().skip(w).step_by(8) {
                if let Err(e) = read(&c, &seen, &via, a, id).await {
                    seen.failures.lock().unwrap().push(e);
                }
            }
        }
    })
    .await;
    assert!(
        seen.failures.lock().unwrap().is_empty(),
        "lost: {:?}",
        seen.failures.lock().unwrap()
    );
    eprintln!(
        "{} acknowledged writes all readable; {} reads; {} retryable errors seen",
        acked.len(),
        seen.reads.load(Ordering::Relaxed),
        seen.retried.load(Ordering::Relaxed)
    );
    // Streams are routed too: export an agent through a node that does not hold it (the
    // same bytes as through one that does), and import it as a new agent through another
    // such node.
    let map = c.sharding(1).await.unwrap();
    let holders = |a: &str| -> Vec<u64> {
        map.shard_info[mneme_cluster::shard_of(a, SHARDS) as usize]
            .replicas
            .clone()
    };
    let source = agent(7);
    let holds = holders(&source);
    let (inside, outside) = (holds[0], *all6.iter().find(|n| !holds.contains(n)).unwrap());
    let exported = |node: u64| {
        let c = Arc::clone(&c);
        let source = source.clone();
        async move {
            let mut admin = pb::admin_service_client::AdminServiceClient::new(
                c.channel(node, Duration::from_secs(60)),
            );
            let mut stream = admin
                .export(pb::ExportRequest { agent_id: source })
                .await
                .unwrap()
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.message().await.unwrap() {
                bytes.extend_from_slice(&chunk.data);
            }
            bytes
        }
    };
    let direct = exported(inside).await;
    let routed = exported(outside).await;
    assert!(!direct.is_empty());
    assert_eq!(direct, routed, "a routed export differs");
    let copy = (0..)
        .map(|i| format!("copy-{i}"))
        .find(|a| !holders(a).contains(&outside))
        .unwrap();
    let lines = direct.iter().filter(|b| **b == b'\n').count() as u64;
    let chunks = vec![pb::ImportChunk {
        agent_id: copy.clone(),
        data: direct.clone(),
    }];
    let imported = pb::admin_service_client::AdminServiceClient::new(
        c.channel(outside, Duration::from_secs(60)),
    )
    .import(tokio_stream::iter(chunks))
    .await
    .unwrap()
    .into_inner()
    .imported;
    assert!(
        imported > 0 && imported <= lines,
        "{imported} of {lines} lines"
    );
    let stats = MemoryServiceClient::new(c.channel(outside, Duration::from_secs(20)))
        .stats(pb::StatsRequest {
            agent_id: copy.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.total_memories, imported);

    let mut c = Arc::try_unwrap(c).ok().unwrap();
    for id in 1..=6 {
        c.kill(id);
    }
}
