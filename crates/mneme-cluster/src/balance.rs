//! Keeping a sharded cluster's placement even: the reconciler (every node: run the groups
//! the map places here) and the balancer (the metadata leader: plan and carry out shard
//! moves, keep the metadata group's membership in step with the map).
//!
//! A move of shard `s` from node `a` to node `b`: `StartMove` is committed (so `b` starts
//! the shard's group, empty); the shard's leader adds `b` as a learner, which catches up
//! by snapshot and log; the leader makes `b` a voter in place of `a`; `FinishMove` is
//! committed, and `a` stops its group and drops the shard's agents. Every step can be
//! repeated, so a new metadata leader simply carries on with the moves it finds.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::meta::{MetaCommand, ShardMap};
use crate::net::{ForwardReply, ReplicaChange};
use crate::node::{CATCH_UP_MAX, ClusterNode};
use crate::{META_GROUP, NodeAddr, NodeId};

/// How often the balancer looks at the map.
const TICK: Duration = Duration::from_millis(250);

/// The next move to start, if the map has room for one: first a replica of a leaving
/// node (to the least loaded staying node without one of the shard), else one from the
/// most to the least loaded node while they differ by more than one.
pub fn next_move(map: &ShardMap) -> Option<(u32, NodeId, NodeId)> {
    if map.shards == 0 || map.moves.len() >= map.max_moves as usize {
        return None;
    }
    let active: Vec<NodeId> = map
        .nodes
        .keys()
        .filter(|n| !map.leaving.contains(n))
        .copied()
        .collect();
    if active.is_empty() {
        return None;
    }
    // Load as it will be once the moves under way are done.
    let mut load = map.load();
    for m in map.moves.values() {
        *load.entry(m.to).or_default() += 1;
        if let Some(l) = load.get_mut(&m.from) {
            *l = l.saturating_sub(1);
        }
    }
    let free = |s: u32| !map.moves.contains_key(&s);
    for s in (0..map.shards).filter(|s| free(*s)) {
        let r = &map.replicas[s as usize];
        if let Some(from) = r.iter().find(|n| map.leaving.contains(n)) {
            let to = active
                .iter()
                .filter(|n| !r.contains(n))
                .min_by_key(|n| (load.get(n).copied().unwrap_or(0), **n));
            if let Some(to) = to {
                return Some((s, *from, *to));
            }
        }
    }
    let mut by_load: Vec<(usize, NodeId)> = active
        .iter()
        .map(|n| (load.get(n).copied().unwrap_or(0), *n))
        .collect();
    by_load.sort_unstable();
    for &(hi_load, hi) in by_load.iter().rev() {
        for &(lo_load, lo) in &by_load {
            if hi_load <= lo_load + 1 {
                break;
            }
            let shard = (0..map.shards).find(|s| {
                let r = &map.replicas[*s as usize];
                free(*s) && r.contains(&hi) && !r.contains(&lo)
            });
            if let Some(s) = shard {
                return Some((s, hi, lo));
            }
        }
    }
    None
}

/// How many moves the planner would still make from `map` (moves under way included) to
/// reach an even placement: the progress still ahead.
pub fn pending_moves(map: &ShardMap) -> usize {
    let mut sim = map.clone();
    sim.max_moves = u32::MAX;
    let mut n = sim.moves.len();
    let under_way: Vec<(u32, crate::meta::Move)> =
        sim.moves.iter().map(|(s, m)| (*s, m.clone())).collect();
    for (shard, m) in under_way {
        let _ = sim.apply(&MetaCommand::FinishMove {
            shard,
            from: m.from,
            to: m.to,
        });
    }
    while let Some((shard, from, to)) = next_move(&sim) {
        let started = sim.apply(&MetaCommand::StartMove { shard, from, to });
        let finished = sim.apply(&MetaCommand::FinishMove { shard, from, to });
        if started.is_err() || finished.is_err() || n > 100_000 {
            break;
        }
        n += 1;
    }
    n
}

/// Every node: runs the groups of the shards the map places here, whenever it changes
/// (and every few seconds, retrying what failed).
pub(crate) async fn reconciler(node: Weak<ClusterNode>) {
    let Some(mut changed) = node.upgrade().and_then(|n| n.map_cell().map(|c| c.watch())) else {
        return;
    };
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(2), changed.changed()).await;
        let Some(node) = node.upgrade() else { return };
        node.reconcile().await;
    }
}

/// Every node, per shard group it runs: when it becomes the group's leader, it records
/// that in the map (the hint routing uses), until the group stops.
pub(crate) async fn report_leadership(
    node: Weak<ClusterNode>,
    shard: u32,
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, NodeAddr>>,
) {
    let mut reported = 0;
    loop {
        let (leads, term) = {
            let m = metrics.borrow_and_update();
            (m.state == openraft::ServerState::Leader, m.current_term)
        };
        if leads && term > reported {
            let Some(n) = node.upgrade() else { return };
            let known = n
                .map()
                .and_then(|map| map.leaders.get(shard as usize).copied())
                .unwrap_or_default();
            if known == (n.id(), term) || known.1 > term {
                reported = term;
            } else {
                let cmd = MetaCommand::Leader {
                    shard,
                    node: n.id(),
                    term,
                };
                match n.propose_meta(&cmd).await {
                    Ok(()) => reported = term,
                    Err(err) => {
                        tracing::debug!(shard, %err, "reporting leadership (will retry)");
                        drop(n);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        }
        // The group's metrics end with the group.
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Every node; acts while it leads the metadata group.
pub(crate) async fn balancer(node: Weak<ClusterNode>) {
    let running: Arc<parking_lot::Mutex<HashSet<u32>>> = Arc::default();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(node) = node.upgrade() else { return };
        let Some(meta) = node.group(META_GROUP) else {
            return;
        };
        if !meta.is_leader(node.id()) {
            continue;
        }
        let Some(map) = node.map() else { return };
        if map.shards == 0 {
            continue;
        }
        sync_meta_membership(&node, &map).await;
        // Carry out the moves under way (each once at a time).
        for (&shard, m) in &map.moves {
            if !running.lock().insert(shard) {
                continue;
            }
            let (node, map, m, running) = (
                Arc::clone(&node),
                Arc::clone(&map),
                m.clone(),
                Arc::clone(&running),
            );
            tokio::spawn(async move {
                match carry_out(&node, &map, shard, m.from, m.to).await {
                    Ok(()) => {
                        let done = MetaCommand::FinishMove {
                            shard,
                            from: m.from,
                            to: m.to,
                        };
                        if let Err(err) = node.propose_meta(&done).await {
                            tracing::warn!(shard, %err, "recording a finished move");
                        } else {
                            tracing::info!(shard, from = m.from, to = m.to, "shard moved");
                        }
                    }
                    Err(err) => tracing::warn!(shard, %err, "moving a shard (will retry)"),
                }
                running.lock().remove(&shard);
            });
        }
        if let Some((shard, from, to)) = next_move(&map) {
            let start = MetaCommand::StartMove { shard, from, to };
            if let Err(err) = node.propose_meta(&start).await {
                tracing::warn!(shard, %err, "starting a move");
            }
        }
        // Leaving nodes that hold nothing any more are forgotten.
        for &id in &map.leaving {
            let holds = map.replicas.iter().any(|r| r.contains(&id))
                || map.moves.values().any(|m| m.from == id || m.to == id);
            if !holds && let Err(err) = node.propose_meta(&MetaCommand::Forget { id }).await {
                tracing::warn!(node = id, %err, "forgetting a drained node");
            }
        }
    }
}

/// The shard's leader replaces `from` by `to` (asked through any replica, following
/// leader hints).
async fn carry_out(
    node: &ClusterNode,
    map: &ShardMap,
    shard: u32,
    from: NodeId,
    to: NodeId,
) -> Result<(), String> {
    let group = crate::shard_group(shard);
    let to_addr = map
        .nodes
        .get(&to)
        .ok_or_else(|| format!("node {to} is not in the map"))?
        .clone();
    let mut voters = map.replicas[shard as usize].clone();
    voters.remove(&from);
    voters.insert(to);
    let change = ReplicaChange {
        add: (to, to_addr),
        voters,
    };
    let mut ask: Vec<NodeAddr> = map.replicas[shard as usize]
        .iter()
        .filter_map(|n| map.nodes.get(n).cloned())
        .collect();
    let mut last = String::from("no replica answered");
    for _ in 0..3 {
        let mut hinted = None;
        for addr in &ask {
            let client = node.peer(addr, group).map_err(|e| e.to_string())?;
            match client.change_replicas(&change, CATCH_UP_MAX).await {
                Ok(ForwardReply::Index(_)) => return Ok(()),
                Ok(ForwardReply::NotLeader(Some((_, leader)))) => {
                    hinted = Some(leader);
                    break;
                }
                Ok(ForwardReply::NotLeader(None)) => last = "no leader yet".into(),
                Ok(ForwardReply::Failed(e)) => last = e,
                Err(s) => last = s.message().to_owned(),
            }
        }
        if let Some(leader) = hinted {
            ask = vec![leader];
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Err(last)
}

/// The metadata group's members follow the map: new nodes join as learners; forgotten
/// ones leave (a forgotten voter's place goes to a learner, if there is one).
async fn sync_meta_membership(node: &ClusterNode, map: &ShardMap) {
    let Some(meta) = node.group(META_GROUP) else {
        return;
    };
    let membership = meta.raft().metrics().borrow().membership_config.clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: BTreeSet<NodeId> = membership.nodes().map(|(n, _)| *n).collect();
    for (id, addr) in &map.nodes {
        if !members.contains(id)
            && let Err(err) = meta.raft().add_learner(*id, addr.clone(), false).await
        {
            tracing::warn!(node = id, %err, "adding a node to the metadata group");
        }
    }
    let gone: BTreeSet<NodeId> = members
        .iter()
        .filter(|n| !map.nodes.contains_key(n))
        .copied()
        .collect();
    if gone.is_empty() {
        return;
    }
    let mut next: BTreeSet<NodeId> = voters.difference(&gone).copied().collect();
    let learners = members
        .iter()
        .filter(|n| !voters.contains(n) && !gone.contains(n) && !map.leaving.contains(n));
    for l in learners {
        if next.len() >= voters.len() {
            break;
        }
        next.insert(*l);
    }
    if next.is_empty() {
        return;
    }
    if let Err(err) = meta.raft().change_membership(next, false).await {
        tracing::warn!(%err, "changing the metadata group's voters");
    }
    let _ = meta
        .raft()
        .change_membership(openraft::ChangeMembers::RemoveNodes(gone), false)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaCommand;
    use crate::meta::tests::addr;

    /// Applies the planner's moves (finishing each at once) until it has none.
    fn settle(map: &mut ShardMap) -> usize {
        let mut moves = 0;
        while let Some((shard, from, to)) = next_move(map) {
            map.apply(&MetaCommand::StartMove { shard, from, to })
                .unwrap();
            map.apply(&MetaCommand::FinishMove { shard, from, to })
                .unwrap();
            moves += 1;
            assert!(moves < 1_000, "the planner does not converge");
        }
        moves
    }

    fn spread(map: &ShardMap) -> usize {
        let load = map.load();
        let active = load.iter().filter(|(n, _)| !map.leaving.contains(n));
        let (lo, hi) = active.fold((usize::MAX, 0), |(lo, hi), (_, l)| (lo.min(*l), hi.max(*l)));
        hi - lo
    }

    #[test]
    fn a_new_node_gets_its_share_and_a_leaving_one_is_drained_first() {
        let mut map = ShardMap::default();
        map.apply(&MetaCommand::Init {
            shards: 64,
            nodes: (1..=5).map(|n| (n, addr(n))).collect(),
            max_moves: 2,
        })
        .unwrap();
        assert!(spread(&map) <= 1);
        map.apply(&MetaCommand::AddNode {
            id: 6,
            addr: addr(6),
        })
        .unwrap();
        assert_eq!(pending_moves(&map), 32);
        let moved = settle(&mut map);
        assert_eq!(pending_moves(&map), 0);
        assert!(spread(&map) <= 1, "{:?}", map.load());
        // 192 replicas over 6 nodes: 32 each; node 6 took 32.
        assert_eq!(moved, 32);
        assert!(map.replicas.iter().all(|r| r.len() == 3));
        map.apply(&MetaCommand::RemoveNode { id: 2 }).unwrap();
        let (shard, from, _) = next_move(&map).unwrap();
        assert_eq!(from, 2, "the leaving node's shards move first");
        assert!(map.replicas[shard as usize].contains(&2));
        settle(&mut map);
        assert!(map.replicas.iter().all(|r| !r.contains(&2) && r.len() == 3));
        assert!(spread(&map) <= 1, "{:?}", map.load());
        map.apply(&MetaCommand::Forget { id: 2 }).unwrap();
        assert!(!map.nodes.contains_key(&2));
    }

    #[test]
    fn moves_under_way_count_against_the_limit() {
        let mut map = ShardMap::default();
        map.apply(&MetaCommand::Init {
            shards: 8,
            nodes: (1..=3).map(|n| (n, addr(n))).collect(),
            max_moves: 1,
        })
        .unwrap();
        map.apply(&MetaCommand::AddNode {
            id: 4,
            addr: addr(4),
        })
        .unwrap();
        let (shard, from, to) = next_move(&map).unwrap();
        map.apply(&MetaCommand::StartMove { shard, from, to })
            .unwrap();
        assert_eq!(next_move(&map), None);
    }
}
