//! The metadata group of a sharded cluster: the shard map and its state machine.
//!
//! The map says which nodes the cluster has, which three (or fewer) hold each shard, and
//! which shard moves are under way. It changes only through [`MetaCommand`]s committed in
//! the metadata raft group, which every node belongs to (the first nodes as voters, later
//! ones as learners), so every node holds a copy to route by. Its state machine keeps the
//! map in memory and in `map.json` (rewritten, durably, after every applied batch); a
//! snapshot is that file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mneme_engine::Outcome;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::sm::{FileMeta, SnapshotFiles, Waiters, io_err};
use crate::{NodeAddr, NodeId, TypeConfig};

/// The name of the map's file in a snapshot.
pub const MAP_FILE: &str = "shardmap.json";

/// Replicas per shard (fewer while the cluster has fewer nodes).
pub const REPLICAS: usize = 3;

/// Most concurrent shard moves allowed.
pub const MOVES_MAX: u32 = 64;

/// A shard moving from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The node giving it up.
    pub from: NodeId,
    /// The node taking it.
    pub to: NodeId,
}

/// The shard map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Bumped by every change.
    pub version: u64,
    /// The number of shards (0: not initialized yet).
    pub shards: u32,
    /// The cluster's nodes.
    pub nodes: BTreeMap<NodeId, NodeAddr>,
    /// Nodes being removed (their shards move away first).
    pub leaving: BTreeSet<NodeId>,
    /// The voters of each shard's group.
    pub replicas: Vec<BTreeSet<NodeId>>,
    /// Moves under way, by shard.
    pub moves: BTreeMap<u32, Move>,
    /// Moves completed per shard (0: the shard's group is still the one `Init` created,
    /// which its first replica initializes).
    pub generation: Vec<u64>,
    /// At most this many moves at once.
    pub max_moves: u32,
    /// Moves completed since the cluster began.
    pub moves_done: u64,
    /// Per shard, the node that last reported leading its group, and the term it led in
    /// (a routing hint: requests go there first).
    #[serde(default)]
    pub leaders: Vec<(NodeId, u64)>,
}

impl ShardMap {
    /// Shards whose group `node` runs: those it is a voter of, and those moving to it.
    pub fn hosted_by(&self, node: NodeId) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = (0..self.shards)
            .filter(|s| self.replicas[*s as usize].contains(&node))
            .collect();
        out.extend(
            self.moves
                .iter()
                .filter(|(_, m)| m.to == node)
                .map(|(s, _)| *s),
        );
        out
    }

    /// The replicas of `shard` to send its requests to, the last known leader first.
    pub fn targets(&self, shard: u32) -> Vec<NodeId> {
        let Some(replicas) = self.replicas.get(shard as usize) else {
            return Vec::new();
        };
        let leader = self.leaders.get(shard as usize).map(|l| l.0);
        let mut out: Vec<NodeId> = replicas.iter().copied().collect();
        out.sort_by_key(|n| Some(*n) != leader);
        out
    }

    /// Replicas (voters) per node, for every node of the cluster.
    pub fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for r in &self.replicas {
            for n in r {
                *load.entry(*n).or_default() += 1;
            }
        }
        load
    }

    /// Applies `cmd`; `Err` names why it does not fit the map (nothing changed then).
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), String> {
        match cmd {
            MetaCommand::Init {
                shards,
                nodes,
                max_moves,
            } => {
                if self.shards != 0 {
                    return Err("the cluster is initialized already".into());
                }
                if *shards == 0 || *shards > crate::SHARDS_MAX {
                    return Err(format!("shards: must be 1..={}", crate::SHARDS_MAX));
                }
                if nodes.is_empty() {
                    return Err("nodes: at least one".into());
                }
                self.shards = *shards;
                self.nodes = nodes.clone();
                let ids: Vec<NodeId> = nodes.keys().copied().collect();
                let per = REPLICAS.min(ids.len());
                // Round-robin: shard s on nodes s, s+1, s+2 (mod n): even by construction.
                self.replicas = (0..*shards as usize)
                    .map(|s| (0..per).map(|k| ids[(s + k) % ids.len()]).collect())
                    .collect();
                self.generation = vec![0; *shards as usize];
                self.leaders = vec![(0, 0); *shards as usize];
                self.max_moves = (*max_moves).clamp(1, MOVES_MAX);
            }
            MetaCommand::AddNode { id, addr } => {
                self.initialized()?;
                if let Some(have) = self.nodes.get(id) {
                    if have == addr {
                        return Ok(());
                    }
                    return Err(format!("node {id} is a member already, at {have}"));
                }
                self.nodes.insert(*id, addr.clone());
            }
            MetaCommand::RemoveNode { id } => {
                self.initialized()?;
                if !self.nodes.contains_key(id) {
                    return Err(format!("node {id} is not a member"));
                }
                let staying =
                    self.nodes.len() - self.leaving.len() - usize::from(!self.leaving.contains(id));
                if staying == 0 {
                    return Err("cannot remove the last node".into());
                }
                self.leaving.insert(*id);
            }
            MetaCommand::StartMove { shard, from, to } => {
                self.initialized()?;
                let r = self.replicas.get(*shard as usize).ok_or("no such shard")?;
                if self.moves.contains_key(shard) {
                    return Err(format!("shard {shard} is moving already"));
                }
                if !r.contains(from) || r.contains(to) || !self.nodes.contains_key(to) {
                    return Err(format!("shard {shard}: cannot move from {from} to {to}"));
                }
                self.moves.insert(
                    *shard,
                    Move {
                        from: *from,
                        to: *to,
                    },
                );
            }
            MetaCommand::FinishMove { shard, from, to } => {
                self.initialized()?;
                if self.moves.get(shard)
                    != Some(&Move {
                        from: *from,
                        to: *to,
                    })
                {
                    return Err(format!("shard {shard}: no such move under way"));
                }
                self.moves.remove(shard);
                let r = &mut self.replicas[*shard as usize];
                r.remove(from);
                r.insert(*to);
                self.generation[*shard as usize] += 1;
                self.moves_done += 1;
            }
            MetaCommand::Leader { shard, node, term } => {
                self.initialized()?;
                let Some(slot) = self.leaders.get_mut(*shard as usize) else {
                    return Err(format!("shard {shard}: no such shard"));
                };
                if *term < slot.1 || (*term == slot.1 && slot.0 == *node) {
                    return Err(format!("shard {shard}: a newer or equal leader is known"));
                }
                *slot = (*node, *term);
            }
            MetaCommand::Forget { id } => {
                if !self.leaving.contains(id) {
                    return Err(format!("node {id} is not leaving"));
                }
                if self.replicas.iter().any(|r| r.contains(id))
                    || self.moves.values().any(|m| m.to == *id || m.from == *id)
                {
                    return Err(format!("node {id} still holds shards"));
                }
                self.leaving.remove(id);
                self.nodes.remove(id);
            }
        }
        self.version += 1;
        Ok(())
    }

    fn initialized(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("the cluster is not initialized (mneme cluster init)".into());
        }
        Ok(())
    }
}

/// A change of the shard map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates the map: `shards` shards placed round-robin over `nodes`.
    Init {
        /// Shard count (fixed for the cluster's life).
        shards: u32,
        /// The first nodes.
        nodes: BTreeMap<NodeId, NodeAddr>,
        /// Concurrent moves allowed.
        max_moves: u32,
    },
    /// A node joins (shards then move to it).
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        addr: NodeAddr,
    },
    /// A node is to leave: its shards move away, then it is forgotten.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
    /// A shard starts moving (the target runs the group as a learner).
    StartMove {
        /// The shard.
        shard: u32,
        /// From.
        from: NodeId,
        /// To.
        to: NodeId,
    },
    /// The shard's group made `to` a voter in place of `from`.
    FinishMove {
        /// The shard.
        shard: u32,
        /// From.
        from: NodeId,
        /// To.
        to: NodeId,
    },
    /// A node leads a shard's group (in `term`): a routing hint.
    Leader {
        /// The shard.
        shard: u32,
        /// The leader.
        node: NodeId,
        /// Its term (older reports never replace newer ones).
        term: u64,
    },
    /// A leaving node that holds nothing any more leaves the map.
    Forget {
        /// Its id.
        id: NodeId,
    },
}

/// The map as this node knows it, and a signal of its changes.
#[derive(Debug)]
pub struct MapCell {
    map: RwLock<Arc<ShardMap>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl MapCell {
    fn new(map: ShardMap) -> Self {
        let (changed, _) = tokio::sync::watch::channel(map.version);
        Self {
            map: RwLock::new(Arc::new(map)),
            changed,
        }
    }

    /// The current map.
    pub fn get(&self) -> Arc<ShardMap> {
        Arc::clone(&self.map.read())
    }

    /// Waits for changes (the version).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn set(&self, map: ShardMap) {
        let version = map.version;
        *self.map.write() = Arc::new(map);
        self.changed.send_replace(version);
    }
}

/// What `map.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Persisted {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeAddr>,
    map: ShardMap,
}

/// The metadata group's state machine.
#[derive(Debug)]
pub struct MetaSm {
    root: PathBuf,
    state: Persisted,
    cell: Arc<MapCell>,
    node: NodeId,
    run: u64,
    waiters: Arc<Waiters>,
}

impl MetaSm {
    /// Opens the state machine under `root` (`raft/meta`); the map it holds is in the
    /// returned cell at once.
    pub fn open(
        root: &Path,
        node: NodeId,
        run: u64,
        waiters: Arc<Waiters>,
    ) -> Result<(Self, Arc<MapCell>), crate::ClusterError> {
        std::fs::create_dir_all(root.join("snapshots")).map_err(|source| {
            crate::ClusterError::Io {
                what: format!("creating {}", root.display()),
                source,
            }
        })?;
        let path = root.join("map.json");
        let state: Persisted = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| crate::ClusterError::Config(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(source) => {
                return Err(crate::ClusterError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                });
            }
        };
        let cell = Arc::new(MapCell::new(state.map.clone()));
        Ok((
            Self {
                root: root.to_path_buf(),
                state,
                cell: Arc::clone(&cell),
                node,
                run,
                waiters,
            },
            cell,
        ))
    }

    fn save(&self) -> Result<(), StorageError<NodeId>> {
        let path = self.root.join("map.json");
        let bytes = serde_json::to_vec(&self.state).unwrap_or_default();
        crate::sm::write_atomic(&path, &bytes).map_err(|e| io_err("writing", &path, e))
    }
}

/// Builds a snapshot of the map.
#[derive(Debug)]
pub struct MetaBuilder {
    root: PathBuf,
    state: Persisted,
}

fn snapshot_of(
    root: &Path,
    state: &Persisted,
) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
    let (term, index) = state
        .last_applied
        .map_or((0, 0), |l| (l.leader_id.term, l.index));
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let id = format!("{term}-{index}-{millis}");
    let dir = root.join("snapshots").join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;
    let bytes = serde_json::to_vec(&state.map).unwrap_or_default();
    let path = dir.join(MAP_FILE);
    crate::sm::write_atomic(&path, &bytes).map_err(|e| io_err("writing", &path, e))?;
    // Older snapshots of the map are of no use.
    if let Ok(entries) = std::fs::read_dir(root.join("snapshots")) {
        for e in entries.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: id,
        },
        snapshot: Box::new(SnapshotFiles {
            dir,
            files: vec![FileMeta {
                name: MAP_FILE.into(),
                agent: String::new(),
                index,
                bytes: bytes.len() as u64,
                crc: crc32fast::hash(&bytes),
            }],
        }),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for MetaBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        snapshot_of(&self.root, &self.state)
    }
}

impl RaftStateMachine<TypeConfig> for MetaSm {
    type SnapshotBuilder = MetaBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeAddr>), StorageError<NodeId>>
    {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut n = 0;
        let mut delivered = Vec::new();
        for e in entries {
            n += 1;
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => {
                    let outcome = match crate::decode::<MetaCommand>(&p.entry) {
                        Ok(cmd) => match self.state.map.apply(&cmd) {
                            Ok(()) => Outcome::Done,
                            Err(why) => Outcome::Rejected(why),
                        },
                        Err(e) => Outcome::Rejected(format!("undecodable command: {e}")),
                    };
                    if p.origin == self.node && p.run == self.run {
                        delivered.push((p.seq, outcome));
                    }
                }
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            self.state.last_applied = Some(e.log_id);
        }
        if n > 0 {
            self.save()?;
            self.cell.set(self.state.map.clone());
        }
        for (seq, outcome) in delivered {
            self.waiters.deliver(seq, outcome);
        }
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetaBuilder {
            root: self.root.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFiles>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotFiles {
            dir: self.root.join("incoming"),
            files: Vec::new(),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeAddr>,
        snapshot: Box<SnapshotFiles>,
    ) -> Result<(), StorageError<NodeId>> {
        let path = snapshot.dir.join(MAP_FILE);
        let bytes = std::fs::read(&path).map_err(|e| io_err("reading", &path, e))?;
        let map: ShardMap = serde_json::from_slice(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(
                None,
                openraft::AnyError::error(format!("{}: {e}", path.display())),
            )
        })?;
        self.state = Persisted {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            map,
        };
        self.save()?;
        self.cell.set(self.state.map.clone());
        snapshot_of(&self.root, &self.state)?;
        let _ = std::fs::remove_dir_all(&snapshot.dir);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        if self.state.last_applied.is_none() {
            return Ok(None);
        }
        snapshot_of(&self.root, &self.state).map(Some)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node's addresses on 127.0.0.`n`.
    pub(crate) fn addr(n: u64) -> NodeAddr {
        NodeAddr {
            raft: format!("127.0.0.{n}:7000"),
            api: format!("127.0.0.{n}:6000"),
        }
    }

    fn init(nodes: u64, shards: u32) -> ShardMap {
        let mut m = ShardMap::default();
        m.apply(&MetaCommand::Init {
            shards,
            nodes: (1..=nodes).map(|n| (n, addr(n))).collect(),
            max_moves: 2,
        })
        .unwrap();
        m
    }

    #[test]
    fn init_places_three_replicas_per_shard_evenly() {
        let m = init(5, 16);
        assert!(m.replicas.iter().all(|r| r.len() == 3));
        let load = m.load();
        let (lo, hi) = (load.values().min().unwrap(), load.values().max().unwrap());
        assert!(hi - lo <= 1, "{load:?}");
        // Fewer nodes than replicas: every node holds every shard.
        let m = init(2, 4);
        assert!(m.replicas.iter().all(|r| r.len() == 2));
    }

    #[test]
    fn moves_replace_a_replica_and_reject_what_does_not_fit() {
        let mut m = init(3, 2);
        m.apply(&MetaCommand::AddNode {
            id: 4,
            addr: addr(4),
        })
        .unwrap();
        let bad = m.apply(&MetaCommand::StartMove {
            shard: 0,
            from: 4,
            to: 1,
        });
        assert!(bad.is_err());
        m.apply(&MetaCommand::StartMove {
            shard: 0,
            from: 1,
            to: 4,
        })
        .unwrap();
        assert!(m.hosted_by(4).contains(&0));
        assert!(
            m.apply(&MetaCommand::StartMove {
                shard: 0,
                from: 2,
                to: 4
            })
            .is_err()
        );
        m.apply(&MetaCommand::FinishMove {
            shard: 0,
            from: 1,
            to: 4,
        })
        .unwrap();
        assert!(m.replicas[0].contains(&4) && !m.replicas[0].contains(&1));
        assert_eq!(m.generation[0], 1);
        assert!(
            m.apply(&MetaCommand::Forget { id: 1 }).is_err(),
            "not leaving"
        );
        m.apply(&MetaCommand::RemoveNode { id: 1 }).unwrap();
        assert!(
            m.apply(&MetaCommand::Forget { id: 1 }).is_err(),
            "still holds shard 1"
        );
    }

    #[test]
    fn leader_reports_never_go_back_in_term_and_lead_the_targets() {
        let mut m = init(3, 2);
        assert_eq!(m.targets(0).len(), 3);
        m.apply(&MetaCommand::Leader {
            shard: 0,
            node: 2,
            term: 5,
        })
        .unwrap();
        assert_eq!(m.targets(0)[0], 2);
        assert!(
            m.apply(&MetaCommand::Leader {
                shard: 0,
                node: 3,
                term: 4
            })
            .is_err()
        );
        assert!(
            m.apply(&MetaCommand::Leader {
                shard: 0,
                node: 2,
                term: 5
            })
            .is_err()
        );
        m.apply(&MetaCommand::Leader {
            shard: 0,
            node: 3,
            term: 6,
        })
        .unwrap();
        assert_eq!(m.targets(0)[0], 3);
        assert!(
            m.apply(&MetaCommand::Leader {
                shard: 9,
                node: 3,
                term: 6
            })
            .is_err()
        );
    }

    #[test]
    fn the_last_node_cannot_leave() {
        let mut m = init(1, 1);
        assert!(m.apply(&MetaCommand::RemoveNode { id: 1 }).is_err());
    }
}
