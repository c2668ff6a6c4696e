//! A cluster node: its raft, the [`Replicator`] it gives the engine, its cluster port, and
//! the admin operations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mneme_engine::{Engine, Error as EngineError, Outcome, ReadConsistency, Replicator};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ServerState, SnapshotPolicy};

use crate::log::LogStore;
use crate::meta::{MapCell, MetaSm};
use crate::net::{ForwardReply, Network, PeerClient, RaftService, SecretCheck};
use crate::sm::{StateMachine, Waiters};
use crate::{ClusterError, GroupId, NodeAddr, NodeId, Proposal, Raft};

/// A write waits at most this long for a leader and a majority.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A shard's new replica must catch up (snapshot and log) within this.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(600);

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
    /// A node of a sharded cluster (a metadata group and one group per shard it holds)
    /// rather than of a replicated one (one group holding everything).
    pub sharded: bool,
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
            sharded: false,
        }
    }
}

/// One raft group this node runs: its raft, the outcomes its proposers await, and where
/// it stands.
pub struct Group {
    pub(crate) id: GroupId,
    pub(crate) raft: Raft,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) applied_index: Arc<AtomicU64>,
    /// Milliseconds (since the node's epoch) of the last append-entries from a leader.
    pub(crate) last_contact_ms: Arc<AtomicU64>,
    reads: parking_lot::Mutex<ReadRounds>,
    /// Where partial snapshots of this group are kept.
    pub(crate) incoming: PathBuf,
    /// Its files.
    dir: PathBuf,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// The raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// True while `node` leads this group.
    pub fn is_leader(&self, node: NodeId) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(node)
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::SeqCst)
    }
}

/// A running node.
pub struct ClusterNode {
    id: NodeId,
    run: u64,
    seq: AtomicU64,
    epoch: Instant,
    secret: Arc<str>,
    local_ip: Option<IpAddr>,
    stale_read_max: Duration,
    handle: tokio::runtime::Handle,
    addr: NodeAddr,
    peers: Vec<(NodeId, NodeAddr)>,
    peer_clients: parking_lot::Mutex<HashMap<String, PeerClient>>,
    /// The groups it runs, by id.
    groups: parking_lot::RwLock<HashMap<GroupId, Arc<Group>>>,
    /// The engine (weakly: the engine holds this node as its replicator).
    engine: std::sync::Weak<Engine>,
    config: ClusterConfig,
    /// The shard map (sharded clusters).
    map: Option<Arc<MapCell>>,
    /// Group 0's raft (kept after a shutdown, for status).
    raft0: std::sync::OnceLock<Raft>,
    /// Serializes starting and stopping shard groups.
    reconciling: tokio::sync::Mutex<()>,
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
    /// Starts the node over `engine` (opened with `replicated`): its groups, the cluster
    /// port, and the engine's replicator. Call from within the tokio runtime.
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
        // A data directory is one kind of node for its life.
        let was_sharded = config.dir.join("meta").exists();
        let was_replicated = config.dir.join("log").exists();
        if config.sharded && was_replicated {
            return Err(ClusterError::Config(format!(
                "{} belongs to a replicated (unsharded) cluster node: start it without --sharded",
                config.dir.display()
            )));
        }
        if !config.sharded && was_sharded {
            return Err(ClusterError::Config(format!(
                "{} belongs to a sharded cluster node: start it with --sharded",
                config.dir.display()
            )));
        }
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let secret: Arc<str> = Arc::from(config.secret.as_str());
        let epoch = Instant::now();
        let service_node = Arc::new(std::sync::OnceLock::new());
        let service = RaftService {
            node: Arc::clone(&service_node),
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
                .concurrency_limit_per_connection(256)
                .tcp_nodelay(true)
                .add_service(server)
                .serve_with_incoming(incoming)
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "cluster port failed");
            }
        });
        let mut node = Self {
            id: config.node_id,
            run,
            seq: AtomicU64::new(0),
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
            peer_clients: parking_lot::Mutex::new(HashMap::new()),
            groups: parking_lot::RwLock::new(HashMap::new()),
            engine: Arc::downgrade(&engine),
            map: None,
            reconciling: tokio::sync::Mutex::new(()),
            raft0: std::sync::OnceLock::new(),
            config: config.clone(),
            me: std::sync::OnceLock::new(),
        };
        if config.sharded {
            // The map first (from its file), so that the node routes and reconciles from
            // what it knew before the restart.
            let dir = config.dir.join("meta");
            let waiters = Arc::new(Waiters::default());
            let (sm, cell) = MetaSm::open(&dir, node.id, node.run, Arc::clone(&waiters))?;
            let group = node
                .start_raft(
                    crate::META_GROUP,
                    dir,
                    waiters,
                    Arc::new(AtomicU64::new(0)),
                    sm,
                )
                .await?;
            node.map = Some(cell);
            let _ = node.raft0.set(group.raft.clone());
            node.groups.write().insert(crate::META_GROUP, group);
        } else {
            let all: crate::sm::Part = Arc::new(|_| true);
            let group = node
                .start_group(crate::DATA_GROUP, config.dir.clone(), all)
                .await?;
            let _ = node.raft0.set(group.raft.clone());
            node.groups.write().insert(crate::DATA_GROUP, group);
        }
        let node = Arc::new(node);
        let _ = node.me.set(Arc::downgrade(&node));
        let _ = service_node.set(Arc::downgrade(&node));
        engine.set_replicator(Arc::clone(&node) as Arc<dyn Replicator>)?;
        if node.map.is_some() {
            node.reconcile().await;
            tokio::spawn(crate::balance::reconciler(Arc::downgrade(&node)));
            tokio::spawn(crate::balance::balancer(Arc::downgrade(&node)));
        } else {
            let lowest = config.peers.iter().map(|(id, _)| *id).min();
            if lowest == Some(config.node_id) {
                let initialized = node
                    .raft()
                    .is_initialized()
                    .await
                    .map_err(|e| ClusterError::Raft(e.to_string()))?;
                if !initialized {
                    node.init(config.peers.clone()).await?;
                }
            }
        }
        Ok(node)
    }

    /// Creates (or reopens) a group whose state machine is the engine (for the agents
    /// `part` selects), under `dir`.
    async fn start_group(
        &self,
        id: GroupId,
        dir: PathBuf,
        part: crate::sm::Part,
    ) -> Result<Arc<Group>, ClusterError> {
        let waiters = Arc::new(Waiters::default());
        let applied_index = Arc::new(AtomicU64::new(0));
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| ClusterError::Config("the engine is closed".into()))?;
        let sm = StateMachine::open(
            engine,
            self.id,
            self.run,
            Arc::clone(&waiters),
            &dir,
            Arc::clone(&applied_index),
            part,
        )?;
        self.start_raft(id, dir, waiters, applied_index, sm).await
    }

    async fn start_raft<SM>(
        &self,
        id: GroupId,
        dir: PathBuf,
        waiters: Arc<Waiters>,
        applied_index: Arc<AtomicU64>,
        sm: SM,
    ) -> Result<Arc<Group>, ClusterError>
    where
        SM: openraft::storage::RaftStateMachine<crate::TypeConfig>,
    {
        let config = &self.config;
        let log = LogStore::open(&dir.join("log"))?;
        let network = Network {
            secret: Arc::clone(&self.secret),
            local_ip: config.local_ip,
            group: id,
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
        let raft = Raft::new(self.id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(Arc::new(Group {
            id,
            raft,
            waiters,
            applied_index,
            last_contact_ms: Arc::new(AtomicU64::new(u64::MAX)),
            reads: parking_lot::Mutex::new(ReadRounds::default()),
            incoming: dir.join("incoming"),
            dir,
        }))
    }

    /// The group `id`, if this node runs it.
    pub fn group(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups.read().get(&id).cloned()
    }

    /// Every group this node runs.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut g: Vec<Arc<Group>> = self.groups.read().values().cloned().collect();
        g.sort_by_key(|g| g.id);
        g
    }

    /// The shard map, on a sharded node.
    pub fn map(&self) -> Option<Arc<crate::meta::ShardMap>> {
        self.map.as_ref().map(|c| c.get())
    }

    pub(crate) fn map_cell(&self) -> Option<&Arc<MapCell>> {
        self.map.as_ref()
    }

    /// The group holding `agent` here: the data group, or on a sharded node its shard's
    /// group if this node runs it.
    fn group_of(&self, agent: &str) -> Result<Arc<Group>, EngineError> {
        let id = match &self.map {
            None => crate::DATA_GROUP,
            Some(cell) => {
                let map = cell.get();
                if map.shards == 0 {
                    return Err(unavailable(
                        "the cluster is not initialized yet (mneme cluster init)",
                    ));
                }
                crate::shard_group(crate::shard_of(agent, map.shards))
            }
        };
        self.group(id).ok_or_else(|| {
            unavailable(format!(
                "this node does not hold shard {} (the shard map is changing); retry",
                id.saturating_sub(1)
            ))
        })
    }

    /// Where requests for `agent` go: `None` here; else the client ports of the nodes
    /// holding its shard (a sharded node that holds no replica of it).
    pub fn route(&self, agent: &str) -> Option<Vec<String>> {
        let map = self.map.as_ref()?.get();
        if map.shards == 0 {
            return None;
        }
        let shard = crate::shard_of(agent, map.shards);
        let replicas = &map.replicas[shard as usize];
        if replicas.contains(&self.id) && self.group(crate::shard_group(shard)).is_some() {
            return None;
        }
        Some(
            map.targets(shard)
                .iter()
                .filter_map(|n| map.nodes.get(n).map(|a| a.api.clone()))
                .collect(),
        )
    }

    /// Starts the groups of the shards the map places here and stops those it moved away
    /// (dropping their agents).
    pub(crate) async fn reconcile(&self) {
        let Some(cell) = &self.map else { return };
        let _one = self.reconciling.lock().await;
        let map = cell.get();
        if map.shards == 0 {
            return;
        }
        let hosted = map.hosted_by(self.id);
        let running: BTreeSet<u32> = self
            .groups
            .read()
            .keys()
            .filter(|g| **g != crate::META_GROUP)
            .map(|g| g - 1)
            .collect();
        for &shard in hosted.difference(&running) {
            let shards = map.shards;
            let part: crate::sm::Part =
                Arc::new(move |a: &str| crate::shard_of(a, shards) == shard);
            let gid = crate::shard_group(shard);
            let dir = self.config.dir.join(format!("shard-{shard:05}"));
            match self.start_group(gid, dir, part).await {
                Ok(group) => {
                    // A shard's first group is initialized by its first replica; a group
                    // created by a move joins an existing one (never initializes).
                    let first = map.replicas[shard as usize].first() == Some(&self.id);
                    if map.generation[shard as usize] == 0
                        && first
                        && !group.raft.is_initialized().await.unwrap_or(true)
                    {
                        let members: BTreeMap<NodeId, NodeAddr> = map.replicas[shard as usize]
                            .iter()
                            .filter_map(|n| map.nodes.get(n).map(|a| (*n, a.clone())))
                            .collect();
                        if let Err(err) = group.raft.initialize(members).await {
                            tracing::warn!(shard, %err, "initializing the shard group");
                        }
                    }
                    tokio::spawn(crate::balance::report_leadership(
                        self.me.get().cloned().unwrap_or_default(),
                        shard,
                        group.raft.metrics(),
                    ));
                    self.groups.write().insert(gid, group);
                }
                Err(err) => tracing::error!(shard, %err, "starting the shard group"),
            }
        }
        for &shard in running.difference(&hosted) {
            let gid = crate::shard_group(shard);
            let Some(group) = self.groups.write().remove(&gid) else {
                continue;
            };
            if let Err(err) = group.raft.shutdown().await {
                tracing::warn!(shard, %err, "stopping the shard group");
            }
            let shards = map.shards;
            let Some(engine) = self.engine.upgrade() else {
                return;
            };
            let dropped = tokio::task::spawn_blocking(move || {
                engine.install_agents_of(&[], 0, &|a| crate::shard_of(a, shards) == shard)
            })
            .await;
            match dropped {
                Ok(Ok(())) => {
                    let _ = std::fs::remove_dir_all(&group.dir);
                    tracing::info!(shard, "the shard moved away; its agents were dropped here");
                }
                Ok(Err(err)) => tracing::error!(shard, %err, "dropping a moved shard's agents"),
                Err(err) => tracing::error!(shard, %err, "dropping a moved shard's agents"),
            }
        }
    }

    /// Proposes a shard-map change through the metadata group; `Err` says why it was
    /// refused or could not be committed.
    pub async fn propose_meta(&self, cmd: &crate::meta::MetaCommand) -> Result<(), ClusterError> {
        let group = self
            .group(crate::META_GROUP)
            .filter(|_| self.is_sharded())
            .ok_or_else(|| ClusterError::Config("this node is not sharded".into()))?;
        match self.propose_in(&group, crate::encode(cmd)).await {
            Ok(Outcome::Rejected(why)) => Err(ClusterError::Config(why)),
            Ok(_) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// On the leader of group `g`: adds `change.add` as a learner, waits until it caught
    /// up, then makes `change.voters` the voters (idempotent: a repeated change that is
    /// done already succeeds at once).
    pub(crate) async fn change_replicas(
        &self,
        g: &Group,
        change: crate::net::ReplicaChange,
    ) -> Result<(), ClusterError> {
        let voters: BTreeSet<NodeId> = g
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        if voters == change.voters {
            return Ok(());
        }
        let (id, addr) = change.add;
        if !voters.contains(&id) {
            match tokio::time::timeout(CATCH_UP_MAX, g.raft.add_learner(id, addr, true)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ClusterError::Raft(e.to_string())),
                Err(_) => {
                    return Err(ClusterError::Raft(format!(
                        "node {id} did not catch up within {CATCH_UP_MAX:?}"
                    )));
                }
            }
        }
        g.raft
            .change_membership(change.voters, false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The raft of the node's first group (the data group of a replicated cluster, the
    /// metadata group of a sharded one).
    pub fn raft(&self) -> Raft {
        // `start` sets it before it returns the node.
        self.raft0
            .get()
            .cloned()
            .expect("a started node has group 0")
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's addresses.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Stops every group (they hold the engine).
    pub async fn shutdown(&self) {
        let groups: Vec<Arc<Group>> = self.groups.write().drain().map(|(_, g)| g).collect();
        for g in groups {
            if let Err(err) = g.raft.shutdown().await {
                tracing::warn!(group = g.id, %err, "stopping raft");
            }
        }
    }

    /// True on a node of a sharded cluster.
    pub fn is_sharded(&self) -> bool {
        self.map.is_some()
    }

    /// Makes `nodes` the initial voters of group 0 (of a sharded cluster: of its metadata
    /// group, and then creates the shard map with `shards` shards).
    pub async fn init(&self, nodes: Vec<(NodeId, NodeAddr)>) -> Result<(), ClusterError> {
        let members: BTreeMap<NodeId, NodeAddr> = nodes.into_iter().collect();
        if !members.contains_key(&self.id) {
            return Err(ClusterError::Config(format!(
                "the initial nodes must include this node ({})",
                self.id
            )));
        }
        self.raft()
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Initializes a sharded cluster: the metadata group's voters, then the map.
    pub async fn init_sharded(
        &self,
        nodes: Vec<(NodeId, NodeAddr)>,
        shards: u32,
        max_moves: u32,
    ) -> Result<(), ClusterError> {
        if !self.is_sharded() {
            return Err(ClusterError::Config(
                "this node is not sharded (start every node with --sharded)".into(),
            ));
        }
        let members: BTreeMap<NodeId, NodeAddr> = nodes.iter().cloned().collect();
        let initialized = self
            .raft()
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        if !initialized {
            self.init(nodes).await?;
        }
        self.propose_meta(&crate::meta::MetaCommand::Init {
            shards,
            nodes: members,
            max_moves,
        })
        .await
    }

    /// Adds a node: as a learner until it caught up, then as a voter.
    pub async fn add_node(&self, id: NodeId, addr: NodeAddr) -> Result<(), ClusterError> {
        if self.is_sharded() {
            return self
                .propose_meta(&crate::meta::MetaCommand::AddNode { id, addr })
                .await;
        }
        let raft = self.raft();
        let raft_err = |e: String| ClusterError::Raft(e);
        raft.add_learner(id, addr, true)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        let mut voters: BTreeSet<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        voters.insert(id);
        raft.change_membership(voters, false)
            .await
            .map_err(|e| raft_err(e.to_string()))?;
        Ok(())
    }

    /// Removes a node from the cluster (of a sharded one: once its shards moved away).
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        if self.is_sharded() {
            return self
                .propose_meta(&crate::meta::MetaCommand::RemoveNode { id })
                .await;
        }
        let raft = self.raft();
        let mut voters: BTreeSet<NodeId> = raft
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
        raft.change_membership(voters, false)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The leader of group `g`, its id and addresses, if known.
    pub fn leader_of(&self, g: &Group) -> Option<(NodeId, NodeAddr)> {
        let m = g.raft.metrics().borrow().clone();
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

    /// The leader of group 0, if known.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        self.group(0).and_then(|g| self.leader_of(&g))
    }

    /// The last applied log index of group 0.
    pub fn applied_index(&self) -> u64 {
        self.group(0).map_or(0, |g| g.applied_index())
    }

    /// A client of a peer's cluster port for group `group` (one connection per peer,
    /// reused).
    pub(crate) fn peer(&self, addr: &NodeAddr, group: GroupId) -> Result<PeerClient, EngineError> {
        let mut peers = self.peer_clients.lock();
        if let Some(c) = peers.get(&addr.raft) {
            return Ok(c.for_group(group));
        }
        let c = PeerClient::new(&addr.raft, Arc::clone(&self.secret), self.local_ip)
            .map_err(unavailable)?;
        peers.insert(addr.raft.clone(), c.clone());
        Ok(c.for_group(group))
    }

    /// Proposes `entry` in group `g` and waits for this node's outcome of applying it.
    pub(crate) async fn propose_in(
        &self,
        g: &Group,
        entry: Vec<u8>,
    ) -> Result<Outcome, EngineError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let rx = g.waiters.register(seq);
        let p = Proposal {
            origin: self.id,
            seq,
            run: self.run,
            entry,
        };
        let out = async {
            self.propose_async(g, p).await?;
            // Committed: this node applies it (now, if it leads; once it hears of the commit
            // otherwise) and the outcome comes back through the waiter.
            match tokio::time::timeout(PROPOSE_TIMEOUT, rx).await {
                Ok(Ok(outcome)) => Ok(outcome),
                _ => Err(unavailable(
                    "the write was committed but this node has not applied it yet; read it back or retry with the same request_id",
                )),
            }
        }
        .await;
        if out.is_err() {
            g.waiters.forget(seq);
        }
        out
    }

    async fn propose_async(&self, g: &Group, p: Proposal) -> Result<(), EngineError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A leader cut off from its majority never commits (nor, in openraft, gives up).
            let Ok(written) = tokio::time::timeout(left, g.raft.client_write(p.clone())).await
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
                        match self.peer(&node, g.id)?.forward(&p, left).await {
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

    /// The read index of group `g`, with concurrent requests sharing one confirmation
    /// round: a request joins the next round that *starts* after it arrived (never one
    /// already under way), so every read still sees every write acknowledged before it
    /// began.
    pub async fn read_index_batched(&self, g: &Arc<Group>) -> Result<Option<u64>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut reads = g.reads.lock();
            reads.next.push(tx);
            !std::mem::replace(&mut reads.running, true)
        };
        if start && let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
            let g = Arc::clone(g);
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut reads = g.reads.lock();
                        if reads.next.is_empty() {
                            reads.running = false;
                            break;
                        }
                        std::mem::take(&mut reads.next)
                    };
                    let r = me.read_index_once(&g, PROPOSE_TIMEOUT).await;
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
    async fn read_index_once(&self, g: &Group, limit: Duration) -> Result<Option<u64>, String> {
        let Ok(checked) = tokio::time::timeout(limit, g.raft.get_read_log_id()).await else {
            return Ok(None);
        };
        Ok(match checked {
            Ok((read, _)) => Some(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                match f.leader_node {
                    Some(node) => match self
                        .peer(&node, g.id)
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

    async fn linearizable(&self, g: &Arc<Group>) -> Result<(), EngineError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(round) = tokio::time::timeout(left, self.read_index_batched(g)).await else {
                return Err(unavailable(
                    "no majority confirmed the leader in time; retry",
                ));
            };
            let read_index = round.map_err(unavailable)?;
            if let Some(index) = read_index {
                let left = deadline.saturating_duration_since(Instant::now());
                return g
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

    /// True while this node leads group 0.
    pub fn is_leader(&self) -> bool {
        self.group(0).is_some_and(|g| g.is_leader(self.id))
    }

    /// Milliseconds since the node started (the clock of `last_contact_ms`).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Replicator for ClusterNode {
    fn propose(&self, agent: &str, entry: Vec<u8>) -> mneme_engine::Result<Outcome> {
        let g = self.group_of(agent)?;
        self.handle.block_on(self.propose_in(&g, entry))
    }

    fn read_barrier(&self, agent: &str, consistency: ReadConsistency) -> mneme_engine::Result<()> {
        let g = self.group_of(agent)?;
        if consistency == ReadConsistency::Stale {
            if g.is_leader(self.id) {
                return Ok(());
            }
            let last = g.last_contact_ms.load(Ordering::SeqCst);
            let now = self.now_ms();
            if last != u64::MAX
                && now.saturating_sub(last) <= self.stale_read_max.as_millis() as u64
            {
                return Ok(());
            }
        }
        self.handle.block_on(self.linearizable(&g))
    }

    fn leads(&self, agent: &str) -> bool {
        self.group_of(agent).is_ok_and(|g| g.is_leader(self.id))
    }

    fn holds(&self, agent: &str) -> bool {
        self.group_of(agent).is_ok()
    }
}
