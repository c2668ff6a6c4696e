//! `mneme serve --node-id …` (a cluster node) and `mneme cluster …` (its admin calls).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mneme_cluster::pb::cluster_client::ClusterClient;
use mneme_cluster::{ClusterConfig, ClusterNode, NodeAddr, NodeId, pb};

use crate::{Connection, channel, with_key};

/// Cluster flags of `mneme serve` (all off: a single node).
#[derive(Debug, Args, Default)]
pub struct ClusterArgs {
    /// This node's id in a cluster (1, 2, …); enables replication.
    #[arg(long, env = "MNEME_NODE_ID")]
    pub node_id: Option<NodeId>,
    /// The cluster (node-to-node) port [required with --node-id].
    #[arg(long, env = "MNEME_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// The cluster port's address as other nodes reach it [default: --cluster-listen].
    #[arg(long, env = "MNEME_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// The client port's address as clients reach it [default: --listen].
    #[arg(long, env = "MNEME_API_ADVERTISE")]
    pub api_advertise: Option<String>,
    /// File holding the shared cluster secret (≥ 16 printable bytes; the same on every node).
    #[arg(long, env = "MNEME_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// An initial voter, `ID=CLUSTER_ADDR/API_ADDR` (repeat for each, this node included):
    /// the lowest id initializes the cluster on its first start. Without peers, run
    /// `mneme cluster init`.
    #[arg(long = "peer", env = "MNEME_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Take a raft snapshot after this many applied entries [default: 50000].
    #[arg(long, env = "MNEME_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// A node of a sharded cluster: agents are spread over shards, each a raft group of
    /// three nodes, placed by a metadata group every node belongs to. Initialize with
    /// `mneme cluster init --shards N`. A data directory is sharded or not for its life.
    #[arg(long, env = "MNEME_SHARDED")]
    pub sharded: bool,
}

/// The `[cluster]` table of `mneme serve --config` (the same settings as the flags, which
/// win when both are given).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    node_id: Option<NodeId>,
    cluster_listen: Option<SocketAddr>,
    cluster_advertise: Option<String>,
    api_advertise: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    peers: Option<Vec<String>>,
    snapshot_every: Option<u64>,
    sharded: Option<bool>,
}

impl ClusterArgs {
    /// Takes from `file` every setting no flag (or environment variable) gave.
    pub fn fill_from(&mut self, file: FileCluster) {
        self.node_id = self.node_id.or(file.node_id);
        self.cluster_listen = self.cluster_listen.or(file.cluster_listen);
        self.cluster_advertise = self.cluster_advertise.take().or(file.cluster_advertise);
        self.api_advertise = self.api_advertise.take().or(file.api_advertise);
        self.cluster_secret_file = self.cluster_secret_file.take().or(file.cluster_secret_file);
        if self.peers.is_empty() {
            self.peers = file.peers.unwrap_or_default();
        }
        self.snapshot_every = self.snapshot_every.or(file.snapshot_every);
        self.sharded = self.sharded || file.sharded.unwrap_or(false);
    }
}

/// `ID=CLUSTER_ADDR/API_ADDR`.
pub fn parse_node(s: &str) -> Result<(NodeId, NodeAddr)> {
    let (id, addrs) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: expected ID=CLUSTER_ADDR/API_ADDR"))?;
    let (raft, api) = addrs
        .split_once('/')
        .with_context(|| format!("{s:?}: expected ID=CLUSTER_ADDR/API_ADDR"))?;
    let id: NodeId = id.parse().with_context(|| format!("{s:?}: bad node id"))?;
    if id == 0 {
        bail!("{s:?}: node ids start at 1");
    }
    Ok((
        id,
        NodeAddr {
            raft: raft.to_owned(),
            api: api.to_owned(),
        },
    ))
}

impl ClusterArgs {
    /// The node's configuration, if clustered.
    pub fn config(
        &self,
        data_dir: &std::path::Path,
        listen: SocketAddr,
    ) -> Result<Option<ClusterConfig>> {
        let Some(node_id) = self.node_id else {
            if self.cluster_listen.is_some() || !self.peers.is_empty() {
                bail!("--cluster-listen and --peer need --node-id");
            }
            if data_dir.join("raft").exists() {
                bail!(
                    "{} belongs to a cluster node: start it with its --node-id and cluster flags",
                    data_dir.display()
                );
            }
            return Ok(None);
        };
        let cluster_listen = self
            .cluster_listen
            .context("--node-id needs --cluster-listen")?;
        let secret_file = self
            .cluster_secret_file
            .as_ref()
            .context("--node-id needs --cluster-secret-file")?;
        let secret = std::fs::read_to_string(secret_file)
            .with_context(|| format!("reading {}", secret_file.display()))?
            .trim()
            .to_owned();
        let mut config = ClusterConfig::new(node_id, cluster_listen, data_dir.join("raft"), secret);
        config.advertise = self
            .cluster_advertise
            .clone()
            .unwrap_or_else(|| cluster_listen.to_string());
        config.api_advertise = self
            .api_advertise
            .clone()
            .unwrap_or_else(|| listen.to_string());
        config.peers = self
            .peers
            .iter()
            .map(|p| parse_node(p))
            .collect::<Result<Vec<_>>>()?;
        if !config.peers.is_empty() && !config.peers.iter().any(|(id, _)| *id == node_id) {
            bail!("--peer must list this node ({node_id}) too");
        }
        config.sharded = self.sharded;
        if self.sharded && !config.peers.is_empty() {
            bail!("--sharded nodes take no --peer: run `mneme cluster init --shards N --node …`");
        }
        if let Some(n) = self.snapshot_every {
            config.snapshot_every = n.max(100);
        }
        // Outgoing node-to-node connections leave from the cluster port's address, so that
        // a node's traffic is recognisable by its source (firewalls, partition tests).
        if !cluster_listen.ip().is_unspecified() {
            config.local_ip = Some(cluster_listen.ip());
        }
        Ok(Some(config))
    }
}

/// Starts the cluster node over `engine`; returns what the server adds.
pub async fn start(
    config: ClusterConfig,
    engine: Arc<mneme_engine::Engine>,
) -> Result<(Arc<ClusterNode>, mneme_server::Extras)> {
    let node = ClusterNode::start(config, engine)
        .await
        .context("starting the cluster node")?;
    let for_routes = Arc::clone(&node);
    let for_metrics = Arc::clone(&node);
    let router = node
        .is_sharded()
        .then(|| Arc::new(ShardRouter(Arc::clone(&node))) as Arc<dyn mneme_server::route::Router>);
    let extras = mneme_server::Extras {
        routes: Some(Box::new(move |gate: mneme_server::AdminGate| {
            let gate: mneme_cluster::admin::Gate = Arc::new(move |metadata| {
                gate.admit(metadata)
                    .map(|permit| Box::new(permit) as Box<dyn std::any::Any + Send>)
            });
            tonic::service::Routes::new(
                mneme_cluster::admin::ClusterApi::new(for_routes, gate).into_service(),
            )
        })),
        metrics: Some(mneme_server::ExtraMetrics(Arc::new(move || {
            mneme_cluster::admin::metrics(&for_metrics)
        }))),
        router,
    };
    Ok((node, extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_table_fills_what_flags_left_out() {
        let file: FileCluster = toml::from_str(
            r#"
            node_id = 2
            cluster_listen = "127.0.0.2:50061"
            cluster_secret_file = "/etc/mneme/secret"
            peers = ["1=127.0.0.1:50061/127.0.0.1:50051", "2=127.0.0.2:50061/127.0.0.2:50051"]
            sharded = false
            "#,
        )
        .unwrap();
        let mut args = ClusterArgs {
            node_id: Some(7),
            ..Default::default()
        };
        args.fill_from(file);
        assert_eq!(args.node_id, Some(7), "a flag wins");
        assert_eq!(
            args.cluster_listen,
            Some("127.0.0.2:50061".parse().unwrap())
        );
        assert_eq!(args.peers.len(), 2);
        assert!(!args.sharded);
        let bad = toml::from_str::<FileCluster>("node = 1");
        assert!(bad.is_err(), "unknown keys are refused");
    }
}

/// Routes by the node's shard map.
#[derive(Debug)]
struct ShardRouter(Arc<ClusterNode>);

impl mneme_server::route::Router for ShardRouter {
    fn route(&self, agent: &str) -> Option<Vec<String>> {
        self.0.route(agent)
    }

    fn nodes(&self) -> Vec<mneme_server::route::NodeShards> {
        let Some(map) = self.0.map() else {
            return Vec::new();
        };
        map.nodes
            .iter()
            .map(|(id, addr)| mneme_server::route::NodeShards {
                api: addr.api.clone(),
                shards: (0..map.shards)
                    .filter(|s| map.replicas[*s as usize].contains(id))
                    .collect(),
                local: *id == self.0.id(),
            })
            .collect()
    }
}

/// `mneme cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make the given nodes the initial voters of a new cluster (run once, against one of them).
    Init {
        #[command(flatten)]
        conn: Connection,
        /// A node, `ID=CLUSTER_ADDR/API_ADDR` (repeat).
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
        /// A sharded cluster (nodes started with --sharded): its shard count, fixed for
        /// its life (e.g. 64; at most 4096).
        #[arg(long)]
        shards: Option<u32>,
        /// Sharded: at most this many shards move at once [default: 2].
        #[arg(long)]
        max_moves: Option<u32>,
    },
    /// Leader, term, and commit/applied index and lag per node; the shard map and the
    /// progress of rebalancing in a sharded cluster.
    Status {
        #[command(flatten)]
        conn: Connection,
        /// Sharded: keep printing progress until no shard is left to move.
        #[arg(long)]
        wait: bool,
    },
    /// Add a node (it catches up as a learner, then votes).
    AddNode {
        #[command(flatten)]
        conn: Connection,
        /// The node, `ID=CLUSTER_ADDR/API_ADDR`.
        #[arg(long)]
        node: String,
    },
    /// Remove a node.
    RemoveNode {
        #[command(flatten)]
        conn: Connection,
        /// Its id.
        #[arg(long)]
        id: NodeId,
    },
}

fn info((id, addr): (NodeId, NodeAddr)) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: id,
        raft_addr: addr.raft,
        api_addr: addr.api,
    }
}

fn print_status(s: &pb::ClusterStatus) {
    println!(
        "node {} ({}) term {} leader {}{}",
        s.node_id,
        s.state,
        s.term,
        s.leader_id,
        if s.leader_api_addr.is_empty() {
            String::new()
        } else {
            format!(" at {}", s.leader_api_addr)
        }
    );
    println!(
        "log {} committed {} applied {} snapshot {}",
        s.last_log_index, s.commit_index, s.applied_index, s.snapshot_index
    );
    for n in &s.nodes {
        println!(
            "  node {} {} cluster {} api {} matched {} lag {}",
            n.node_id,
            if n.voter { "voter" } else { "learner" },
            n.raft_addr,
            n.api_addr,
            n.matched_index,
            n.lag
        );
    }
    if let Some(sh) = s.sharding.as_ref().filter(|sh| sh.shards > 0) {
        println!(
            "shards {} (map version {}), moves done {}, under way {}, still to do {}",
            sh.shards,
            sh.map_version,
            sh.moves_done,
            sh.moves.len(),
            sh.moves_pending
        );
        for l in &sh.load {
            println!(
                "  node {} holds {} shard replicas{}{}",
                l.node_id,
                l.replicas,
                if l.leaders > 0 {
                    format!(", leads {}", l.leaders)
                } else {
                    String::new()
                },
                if l.leaving { " (leaving)" } else { "" }
            );
        }
        for m in &sh.moves {
            println!(
                "  moving shard {} from node {} to node {}",
                m.shard, m.from_node, m.to_node
            );
        }
    }
}

/// `[#####.....] 12/40 moves`
fn progress_bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    format!(
        "[{}{}] {done}/{total} moves",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize)
    )
}

/// Runs a `mneme cluster` command.
pub async fn run(command: ClusterCommand) -> Result<()> {
    let status = match command {
        ClusterCommand::Init {
            conn,
            nodes,
            shards,
            max_moves,
        } => {
            let nodes = nodes
                .iter()
                .map(|n| parse_node(n).map(info))
                .collect::<Result<Vec<_>>>()?;
            let mut c = ClusterClient::new(channel(&conn).await?);
            let request = pb::InitRequest {
                nodes,
                shards: shards.unwrap_or(0),
                max_moves: max_moves.unwrap_or(0),
            };
            c.init(with_key(&conn, request)?).await?
        }
        ClusterCommand::Status { conn, wait } => {
            let mut c = ClusterClient::new(channel(&conn).await?);
            let mut status = c.status(with_key(&conn, pb::StatusRequest {})?).await?;
            if wait {
                // The moves still to do when we started are the whole bar.
                let start_done = status
                    .get_ref()
                    .sharding
                    .as_ref()
                    .map_or(0, |s| s.moves_done);
                while let Some(sh) = status.get_ref().sharding.clone() {
                    let done = sh.moves_done - start_done.min(sh.moves_done);
                    let total = done + u64::from(sh.moves_pending);
                    eprint!("\r{}", progress_bar(done, total));
                    if sh.moves_pending == 0 {
                        eprintln!();
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    status = c.status(with_key(&conn, pb::StatusRequest {})?).await?;
                }
            }
            status
        }
        ClusterCommand::AddNode { conn, node } => {
            let node = info(parse_node(&node)?);
            let mut c = ClusterClient::new(channel(&conn).await?);
            c.add_node(with_key(&conn, pb::AddNodeRequest { node: Some(node) })?)
                .await?
        }
        ClusterCommand::RemoveNode { conn, id } => {
            let mut c = ClusterClient::new(channel(&conn).await?);
            c.remove_node(with_key(&conn, pb::RemoveNodeRequest { node_id: id })?)
                .await?
        }
    };
    print_status(status.get_ref());
    Ok(())
}
