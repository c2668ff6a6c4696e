//! `mneme.cluster.v1.Cluster`: the admin service on the client port, and cluster metrics.

use std::fmt::Write as _;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::node::ClusterNode;
use crate::pb;
use crate::{NodeAddr, NodeId};

/// Authorizes an admin call; the returned guard (a permit) is held for the call's life.
pub type Gate =
    Arc<dyn Fn(&MetadataMap) -> Result<Box<dyn std::any::Any + Send>, Status> + Send + Sync>;

/// The admin service.
#[derive(Clone)]
pub struct ClusterApi {
    node: Arc<ClusterNode>,
    gate: Gate,
}

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi").finish_non_exhaustive()
    }
}

impl ClusterApi {
    /// The service over `node`, checking every call with `gate`.
    pub fn new(node: Arc<ClusterNode>, gate: Gate) -> Self {
        Self { node, gate }
    }

    /// The service, ready for a tonic router.
    pub fn into_service(self) -> pb::cluster_server::ClusterServer<Self> {
        pb::cluster_server::ClusterServer::new(self)
    }
}

/// Most nodes an `Init` names.
pub const NODES_MAX: usize = 1_000;

fn node_info(n: &pb::NodeInfo) -> Result<(NodeId, NodeAddr), Status> {
    if n.node_id == 0 {
        return Err(Status::invalid_argument("node_id: must be at least 1"));
    }
    for (field, v) in [("raft_addr", &n.raft_addr), ("api_addr", &n.api_addr)] {
        if v.is_empty()
            || v.len() > 256
            || v.parse::<std::net::SocketAddr>().is_err() && !v.contains(':')
        {
            return Err(Status::invalid_argument(format!(
                "{field}: must be host:port (got {})",
                mneme_engine::limits::echo(v)
            )));
        }
    }
    Ok((
        n.node_id,
        NodeAddr {
            raft: n.raft_addr.clone(),
            api: n.api_addr.clone(),
        },
    ))
}

fn failed(e: crate::ClusterError) -> Status {
    Status::failed_precondition(e.to_string())
}

/// The cluster as `node` sees it.
pub fn status(node: &ClusterNode) -> pb::ClusterStatus {
    let m = node.raft().metrics().borrow().clone();
    let voters: std::collections::BTreeSet<NodeId> = m.membership_config.voter_ids().collect();
    let matched = m.replication.clone().unwrap_or_default();
    let last = m.last_log_index.unwrap_or(0);
    let leader = m.current_leader.unwrap_or(0);
    let mut leader_api = String::new();
    let nodes = m
        .membership_config
        .nodes()
        .map(|(id, addr)| {
            if *id == leader {
                leader_api = addr.api.clone();
            }
            let matched_index = matched.get(id).copied().flatten().map_or(0, |l| l.index);
            pb::NodeStatus {
                node_id: *id,
                raft_addr: addr.raft.clone(),
                api_addr: addr.api.clone(),
                voter: voters.contains(id),
                matched_index,
                lag: if matched.contains_key(id) {
                    last.saturating_sub(matched_index)
                } else {
                    0
                },
            }
        })
        .collect();
    pb::ClusterStatus {
        node_id: node.id(),
        state: format!("{:?}", m.state),
        leader_id: leader,
        leader_api_addr: leader_api,
        term: m.current_term,
        last_log_index: last,
        commit_index: m
            .replication
            .as_ref()
            .and_then(|r| {
                // On the leader: the highest index a majority of voters hold.
                let mut held: Vec<u64> = voters
                    .iter()
                    .map(|v| r.get(v).copied().flatten().map_or(0, |l| l.index))
                    .collect();
                held.sort_unstable();
                held.get((held.len().saturating_sub(1)) / 2).copied()
            })
            .unwrap_or_else(|| m.last_applied.map_or(0, |l| l.index)),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        nodes,
        sharding: node.map().map(|map| sharding(node, &map)),
    }
}

/// The shard map as `node` knows it, with the leaders it knows of.
fn sharding(node: &ClusterNode, map: &crate::meta::ShardMap) -> pb::ShardingStatus {
    let mut leaders: std::collections::BTreeMap<NodeId, u32> = Default::default();
    let shard_info: Vec<pb::ShardInfo> = (0..map.shards)
        .map(|s| {
            // What this node's own replica knows, else the map's hint.
            let leader_id = node
                .group(crate::shard_group(s))
                .and_then(|g| g.raft().metrics().borrow().current_leader)
                .or_else(|| map.leaders.get(s as usize).map(|l| l.0))
                .unwrap_or(0);
            if leader_id != 0 {
                *leaders.entry(leader_id).or_default() += 1;
            }
            pb::ShardInfo {
                shard: s,
                replicas: map.replicas[s as usize].iter().copied().collect(),
                leader_id,
            }
        })
        .collect();
    pb::ShardingStatus {
        shards: map.shards,
        map_version: map.version,
        max_moves: map.max_moves,
        moves_done: map.moves_done,
        moves: map
            .moves
            .iter()
            .map(|(s, m)| pb::ShardMove {
                shard: *s,
                from_node: m.from,
                to_node: m.to,
            })
            .collect(),
        moves_pending: crate::balance::pending_moves(map) as u32,
        load: map
            .load()
            .into_iter()
            .map(|(n, replicas)| pb::NodeLoad {
                node_id: n,
                replicas: replicas as u32,
                leaders: leaders.get(&n).copied().unwrap_or(0),
                leaving: map.leaving.contains(&n),
                api_addr: map.nodes.get(&n).map(|a| a.api.clone()).unwrap_or_default(),
            })
            .collect(),
        shard_info,
    }
}

/// Prometheus series of the cluster as `node` sees it.
pub fn metrics(node: &ClusterNode) -> String {
    let s = status(node);
    let mut out = String::new();
    let gauges: [(&str, &str, u64); 7] = [
        (
            "is_leader",
            "1 on the leader.",
            u64::from(s.leader_id == s.node_id),
        ),
        (
            "leader_id",
            "The leader's node id (0: unknown).",
            s.leader_id,
        ),
        ("term", "The current raft term.", s.term),
        (
            "last_log_index",
            "Last index in this node's log.",
            s.last_log_index,
        ),
        (
            "commit_index",
            "Committed index (leader: majority match).",
            s.commit_index,
        ),
        (
            "applied_index",
            "Last index applied to the engine.",
            s.applied_index,
        ),
        (
            "snapshot_index",
            "Index of the last snapshot.",
            s.snapshot_index,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP mneme_cluster_{name} {help}\n# TYPE mneme_cluster_{name} gauge\nmneme_cluster_{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP mneme_cluster_replication_lag Entries a node is behind the leader (leader only).\n# TYPE mneme_cluster_replication_lag gauge"
    );
    for n in &s.nodes {
        let _ = writeln!(
            out,
            "mneme_cluster_replication_lag{{node=\"{}\"}} {}",
            n.node_id, n.lag
        );
    }
    out
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let _permit = (self.gate)(request.metadata())?;
        let r = request.into_inner();
        let nodes = r
            .nodes
            .iter()
            .map(node_info)
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(Status::invalid_argument("nodes: must not be empty"));
        }
        if nodes.len() > NODES_MAX {
            return Err(Status::invalid_argument(format!(
                "nodes: at most {NODES_MAX} (got {})",
                nodes.len()
            )));
        }
        match (self.node.is_sharded(), r.shards) {
            (false, 0) => self.node.init(nodes).await.map_err(failed)?,
            (false, _) => {
                return Err(Status::failed_precondition(
                    "shards: this node is not sharded (start every node with --sharded)",
                ));
            }
            (true, 0) => {
                return Err(Status::invalid_argument(
                    "shards: required for a sharded cluster (1..=4096)",
                ));
            }
            (true, s) if s > crate::SHARDS_MAX => {
                return Err(Status::invalid_argument(format!(
                    "shards: at most {} (got {s})",
                    crate::SHARDS_MAX
                )));
            }
            (true, s) => {
                let moves = if r.max_moves == 0 { 2 } else { r.max_moves };
                if moves > crate::meta::MOVES_MAX {
                    return Err(Status::invalid_argument(format!(
                        "max_moves: at most {} (got {moves})",
                        crate::meta::MOVES_MAX
                    )));
                }
                self.node
                    .init_sharded(nodes, s, moves)
                    .await
                    .map_err(failed)?;
            }
        }
        Ok(Response::new(status(&self.node)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let _permit = (self.gate)(request.metadata())?;
        Ok(Response::new(status(&self.node)))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let _permit = (self.gate)(request.metadata())?;
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("node: required"))?;
        let (id, addr) = node_info(&node)?;
        self.node.add_node(id, addr).await.map_err(failed)?;
        Ok(Response::new(status(&self.node)))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let _permit = (self.gate)(request.metadata())?;
        let id = request.into_inner().node_id;
        self.node.remove_node(id).await.map_err(failed)?;
        Ok(Response::new(status(&self.node)))
    }
}
