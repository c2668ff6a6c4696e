//! A cluster node: its raft, the [`Replicator`] it gives the engine, its cluster port, and
//! the admin operations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mneme_engine::{Engine, Error as EngineError, Outcome, ReadConsistency, Replicator};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};

use crate::log::LogStore;
use crate::net::{ForwardReply, Network, PeerClient, RaftService, SecretCheck};
use crate::sm::{StateMachine, Waiters};
use crate::{ClusterError, NodeAddr, NodeId, Proposal, Raft};

/// A write waits at most this long for a leader and a majority.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (non-zero, unique in the cluster).
    pub node_id: NodeId,
    /// Where the cluster port listens.
    pub listen: SocketAddr,
    /// The cluster port's address other nodes use.
    pub advertise: String,
    /// The client port's address (for leader hints and status).
    pub api_advertise: String,
    /// The shared secret every node-to-node call carries.
    pub secret: String,
    /// The initial voters (with this node among them): the node with the lowest id
    /// initializes the cluster on its first start. Empty: wait for `mneme cluster init`.
    pub peers: Vec<(NodeId, NodeAddr)>,
    /// Raft's files (`<data>/raft`).
    pub dir: PathBuf,
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// A follower without a heartbeat for a random time in this range calls an election.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is taken once this many entries were applied since the last one.
    pub snapshot_every: u64,
    /// A stale (follower) read is served only if the leader was heard from this recently.
    pub stale_read_max: Duration,
    /// Source address of outgoing node-to-node connections.
    pub local_ip: Option<IpAddr>,
}

impl ClusterConfig {
    /// Defaults for everything but identity and addresses.
    pub fn new(node_id: NodeId, listen: SocketAddr, dir: PathBuf, secret: String) -> Self {
        Self {
            node_id,
            listen,
            advertise: listen.to_string(),
            api_advertise: String::new(),
            secret,
            peers: Vec::new(),
            dir,
            // A follower elects once the leader's lease (the maximum election timeout) and
            // then its own random timeout passed without a heartbeat: 1.0–1.5 s, plus
            // the vote round trip.
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_every: 50_000,
            stale_read_max: Duration::from_secs(2),
            local_ip: None,
        }
    }
}

/// A running node.
pub struct ClusterNode {
    raft: Raft,
    id: NodeId,
    run: u64,
    seq: AtomicU64,
    waiters: Arc<Waiters>,
    applied_index: Arc<AtomicU64>,
    last_contact_ms: Arc<AtomicU64>,
    epoch: Instant,
    secret: Arc<str>,
    local_ip: Option<IpAddr>,
    stale_read_max: Duration,
    handle: tokio::runtime::Handle,
    addr: NodeAddr,
    peers: Vec<(NodeId, NodeAddr)>,
    peer_clients: parking_lot::Mutex<std::collections::HashMap<String, PeerClient>>,
    reads: parking_lot::Mutex<ReadRounds>,
    /// Itself, for the tasks it spawns.
    me: std::sync::OnceLock<std::sync::Weak<ClusterNode>>,
}

/// Read-index requests waiting for the next confirmation round.
#[derive(Default)]
struct ReadRounds {
    running: bool,
    next: Vec<tokio::sync::oneshot::Sender<Result<Option<u64>, String>>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn unavailable(msg: impl Into<String>) -> EngineError {
    EngineError::Unavailable(msg.into())
}

impl ClusterNode {
    /// Starts the node over `engine` (opened with `replicated`): raft, the cluster port,
    /// and the engine's replicator. Call from within the tokio runtime.
    pub async fn start(
        config: ClusterConfig,
        engine: Arc<Engine>,
    ) -> Result<Arc<Self>, ClusterError> {
        if config.node_id == 0 {
            return Err(ClusterError::Config("--node-id must be at least 1".into()));
        }
        if config.secret.len() < crate::net::SECRET_BYTES_MIN {
            return Err(ClusterError::Config(format!(
                "the cluster secret must be at least {} bytes",
                crate::net::SECRET_BYTES_MIN
            )));
        }
        if config.secret.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(ClusterError::Config(
                "the cluster secret must be printable ASCII without spaces".into(),
            ));
        }
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let waiters = Arc::new(Waiters::default());
        let applied_index = Arc::new(AtomicU64::new(0));
        let log = LogStore::open(&config.dir.join("log"))?;
        let sm = StateMachine::open(
            Arc::clone(&engine),
            config.node_id,
            run,
            Arc::clone(&waiters),
            &config.dir,
            Arc::clone(&applied_index),
        )?;
        let secret: Arc<str> = Arc::from(config.secret.as_str());
        let network = Network {
            secret: Arc::clone(&secret),
            local_ip: config.local_ip,
        };
        let raft_config = openraft::Config {
            cluster_name: "mneme".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Entries kept behind a snapshot for followers that are only a little behind
            // (further behind, they get the snapshot).
            max_in_snapshot_log_to_keep: (config.snapshot_every / 2).min(1_000),
            install_snapshot_timeout: 600_000,
            max_payload_entries: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let epoch = Instant::now();
        let last_contact_ms = Arc::new(AtomicU64::new(u64::MAX));
        let service_node = Arc::new(std::sync::OnceLock::new());
        let service = RaftService {
            node: Arc::clone(&service_node),
            raft: raft.clone(),
            incoming: config.dir.join("incoming"),
            last_contact_ms: Arc::clone(&last_contact_ms),
            epoch,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ClusterError::Io {
                what: format!("binding the cluster port {}", config.listen),
                source,
            })?;
        let server = tonic::service::interceptor::InterceptedService::new(
            crate::pb::raft_server::RaftServer::new(service)
                .max_decoding_message_size(crate::MESSAGE_BYTES_MAX)
                .max_encoding_message_size(crate::MESSAGE_BYTES_MAX),
            SecretCheck(Arc::clone(&secret)),
        );
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            // Small raft messages must not wait for Nagle (40 ms per round trip otherwise).
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
                if let Ok(stream) = &conn {
                    let _ = stream.set_nodelay(true);
                }
                conn
            });
            let served = tonic::transport::Server::builder()
                .concurrency_limit_per_connection(64)
                .tcp_nodelay(true)
                .add_service(server)
                .serve_with_incoming(incoming)
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "cluster port failed");
            }
        });
        let node = Arc::new(Self {
            raft,
            id: config.node_id,
            run,
            seq: AtomicU64::new(0),
            waiters,
            applied_index,
            last_contact_ms,
            epoch,
            secret,
            local_ip: config.local_ip,
            stale_read_max: config.stale_read_max,
            handle: tokio::runtime::Handle::current(),
            addr: NodeAddr {
                raft: config.advertise.clone(),
                api: config.api_advertise.clone(),
            },
            peers: config.peers.clone(),
            peer_clients: parking_lot::Mutex::new(std::collections::HashMap::new()),
            reads: parking_lot::Mutex::new(ReadRounds::default()),
            me: std::sync::OnceLock::new(),
        });
        let _ = node.me.set(Arc::downgrade(&node));
        let _ = service_node.set(Arc::downgrade(&node));
        engine.set_replicator(Arc::clone(&node) as Arc<dyn Replicator>)?;
        let lowest = config.peers.iter().map(|(id, _)| *id).min();
        if lowest == Some(config.node_id) {
            let initialized = node
                .raft
                .is_initialized()
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
            if !initialized {
                node.init(config.peers.clone()).await?;
            }
        }
        Ok(node)
    }

    /// The raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's addresses.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Makes `nodes` the initial voters.
    pub async fn init(&self, nodes: Vec<(NodeId, NodeAddr)>) -> Result<(), ClusterError> {
        let members: BTreeMap<NodeId, NodeAddr> = nodes.into_iter().collect();
        if !members.contains_key(&self.id) {
            return Err(ClusterError::Config(format!(
                "the initial nodes must include this node ({})",
                self.id
            )));
        }
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Adds a node: as a learner until it caught up, then as a voter.
    pub async fn add_node(&self, id: NodeId, addr: NodeAddr) -> Result<(), ClusterError> {
        let raft_err = |e: String| ClusterError::Raft(e);
        self.raft
            .add_learner(id, addr, true)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let mut voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        Ok(())
    }

    /// Removes a node from the cluster.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        let mut voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        if !voters.remove(&id) {
            return Err(ClusterError::Config(format!("node {id} is not a voter")));
        }
        if voters.is_empty() {
            return Err(ClusterError::Config("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The leader's id and addresses, if known.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, a)| a.clone())
            .or_else(|| {
                self.peers
                    .iter()
                    .find(|(n, _)| *n == id)
                    .map(|(_, a)| a.clone())
            })?;
        Some((id, addr))
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::SeqCst)
    }

    /// A client of a peer's cluster port (one connection per peer, reused).
    fn peer(&self, addr: &NodeAddr) -> Result<PeerClient, EngineError> {
        let mut peers = self.peer_clients.lock();
        if let Some(c) = peers.get(&addr.raft) {
            return Ok(c.clone());
        }
        let c = PeerClient::new(&addr.raft, Arc::clone(&self.secret), self.local_ip)
            .map_err(unavailable)?;
        peers.insert(addr.raft.clone(), c.clone());
        Ok(c)
    }

    async fn propose_async(&self, p: Proposal) -> Result<(), EngineError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A leader cut off from its majority never commits (nor, in openraft, gives up).
            let Ok(written) = tokio::time::timeout(left, self.raft.client_write(p.clone())).await
            else {
                return Err(unavailable(
                    "the write was not committed in time (no majority reachable); it may or may not be stored — retry with the same request_id",
                ));
            };
            match written {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if let Some(node) = f.leader_node {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match self.peer(&node)?.forward(&p, left).await {
                            Ok(ForwardReply::Index(_)) => return Ok(()),
                            // Leadership moved before it reached the log: try again.
                            Ok(ForwardReply::NotLeader(_)) => {}
                            Ok(ForwardReply::Failed(e)) => return Err(unavailable(e)),
                            // Never reached it (the old leader is gone): wait for the
                            // election and try again.
                            Err(s) if s.message().contains("connect") => {}
                            // Sent, maybe appended: only the client (with a request id)
                            // can retry safely.
                            Err(s) => {
                                return Err(unavailable(format!(
                                    "forwarding to the leader failed ({}); the write may or may not have been stored — retry with the same request_id",
                                    s.message()
                                )));
                            }
                        }
                    }
                }
                Err(e) => return Err(unavailable(e.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(unavailable("no leader elected; retry"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The read index, with concurrent requests sharing one confirmation round: a request
    /// joins the next round that *starts* after it arrived (never one already under way),
    /// so every read still sees every write acknowledged before it began.
    pub async fn read_index_batched(&self) -> Result<Option<u64>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut reads = self.reads.lock();
            reads.next.push(tx);
            !std::mem::replace(&mut reads.running, true)
        };
        if start && let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut reads = me.reads.lock();
                        if reads.next.is_empty() {
                            reads.running = false;
                            break;
                        }
                        std::mem::take(&mut reads.next)
                    };
                    let r = me.read_index_once(PROPOSE_TIMEOUT).await;
                    for tx in batch {
                        let _ = tx.send(r.clone());
                    }
                }
            });
        }
        rx.await
            .map_err(|_| "the read round was dropped".to_owned())?
    }

    /// One read-index round: `Ok(None)` when there is no leader to ask yet.
    async fn read_index_once(&self, limit: Duration) -> Result<Option<u64>, String> {
        let Ok(checked) = tokio::time::timeout(limit, self.raft.get_read_log_id()).await else {
            return Ok(None);
        };
        Ok(match checked {
            Ok((read, _)) => Some(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(node) => match self
                        .peer(&node)
                        .map_err(|e| e.to_string())?
                        .read_index(limit)
                        .await
                    {
                        Ok(ForwardReply::Index(i)) => Some(i),
                        Ok(_) | Err(_) => None,
                    },
                    None => None,
                }
            }
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                None
            }
            Err(e) => return Err(e.to_string()),
        })
    }

    async fn linearizable(&self) -> Result<(), EngineError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(round) = tokio::time::timeout(left, self.read_index_batched()).await else {
                return Err(unavailable(
                    "no majority confirmed the leader in time; retry",
                ));
            };
            let read_index = round.map_err(unavailable)?;
            if let Some(index) = read_index {
                let left = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map(|_| ())
                    .map_err(|e| unavailable(format!("this node has not caught up: {e}")));
            }
            if Instant::now() >= deadline {
                return Err(unavailable(
                    "no leader to confirm a linearizable read; retry",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True while this node is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }
}

impl Replicator for ClusterNode {
    fn propose(&self, entry: Vec<u8>) -> mneme_engine::Result<Outcome> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let rx = self.waiters.register(seq);
        let p = Proposal {
            origin: self.id,
            seq,
            run: self.run,
            entry,
        };
        let out = self.handle.block_on(async {
            self.propose_async(p).await?;
            // Committed: this node applies it (now, if it leads; once it hears of the commit
            // otherwise) and the outcome comes back through the waiter.
            match tokio::time::timeout(PROPOSE_TIMEOUT, rx).await {
                Ok(Ok(outcome)) => Ok(outcome),
                _ => Err(unavailable(
                    "the write was committed but this node has not applied it yet; read it back or retry with the same request_id",
                )),
            }
        });
        if out.is_err() {
            self.waiters.forget(seq);
        }
        out
    }

    fn read_barrier(&self, consistency: ReadConsistency) -> mneme_engine::Result<()> {
        if consistency == ReadConsistency::Stale {
            if self.is_leader() {
                return Ok(());
            }
            let last = self.last_contact_ms.load(Ordering::SeqCst);
            let now = self.epoch.elapsed().as_millis() as u64;
            if last != u64::MAX
                && now.saturating_sub(last) <= self.stale_read_max.as_millis() as u64
            {
                return Ok(());
            }
        }
        self.handle.block_on(self.linearizable())
    }

    fn leads(&self) -> bool {
        self.is_leader()
    }
}
