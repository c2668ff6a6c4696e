//! A seeded workload generator, a small owner of the store (a partitioned key/value state
//! machine that snapshots its partitions like the engine snapshots agents), and the
//! reference model every test checks against.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mneme_storage::sim::SimFs;
use mneme_storage::{Durability, Options, Store};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The owner's whole state: (partition, key) → value.
pub type State = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

pub const DIR: &str = "/data";
pub const PARTITIONS: u8 = 3;

/// One logged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        part: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        part: u8,
        key: Vec<u8>,
    },
    Clear {
        part: u8,
    },
}

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, part, key, value): (u8, u8, &[u8], &[u8]) = match self {
            Op::Put { part, key, value } => (1, *part, key, value),
            Op::Delete { part, key } => (2, *part, key, &[]),
            Op::Clear { part } => (3, *part, &[], &[]),
        };
        let mut out = vec![tag, part];
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Op, String> {
        let bad = || format!("undecodable entry of {} bytes", bytes.len());
        let (&tag, rest) = bytes.split_first().ok_or_else(bad)?;
        let (&part, rest) = rest.split_first().ok_or_else(bad)?;
        let len = u32::from_le_bytes(rest.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let key = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
        let value = rest[4 + len..].to_vec();
        match tag {
            1 => Ok(Op::Put { part, key, value }),
            2 => Ok(Op::Delete { part, key }),
            3 => Ok(Op::Clear { part }),
            _ => Err(bad()),
        }
    }

    fn part(&self) -> u8 {
        match self {
            Op::Put { part, .. } | Op::Delete { part, .. } | Op::Clear { part } => *part,
        }
    }

    pub fn apply_to(&self, state: &mut State) {
        match self {
            Op::Put { part, key, value } => {
                state.insert((*part, key.clone()), value.clone());
            }
            Op::Delete { part, key } => {
                state.remove(&(*part, key.clone()));
            }
            Op::Clear { part } => state.retain(|(p, _), _| p != part),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Partition {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    pub applied_lsn: u64,
    /// First LSN applied since this partition's last snapshot.
    pub dirty_since: Option<u64>,
}

/// The store and the state derived from it.
pub struct Owner {
    pub store: Store,
    pub parts: Arc<Mutex<Vec<Partition>>>,
    /// LSNs in the order the apply steps ran.
    pub applied_order: Arc<Mutex<Vec<u64>>>,
}

fn tag(part: u8) -> Vec<u8> {
    vec![b'p', part]
}

fn encode_partition(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in &p.map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

fn decode_partition(bytes: &[u8]) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut map = BTreeMap::new();
    let mut at = 0;
    while at < bytes.len() {
        let kl = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let vl = u32::from_le_bytes(bytes.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        at += 8;
        let k = bytes.get(at..at + kl)?.to_vec();
        let v = bytes.get(at + kl..at + kl + vl)?.to_vec();
        at += kl + vl;
        map.insert(k, v);
    }
    Some(map)
}

fn apply(parts: &Mutex<Vec<Partition>>, op: &Op, lsn: u64) {
    let mut parts = parts.lock();
    let p = &mut parts[op.part() as usize];
    if lsn <= p.applied_lsn {
        return;
    }
    let mut whole = State::new();
    for (k, v) in &p.map {
        whole.insert((op.part(), k.clone()), v.clone());
    }
    op.apply_to(&mut whole);
    p.map = whole.into_iter().map(|((_, k), v)| (k, v)).collect();
    p.applied_lsn = lsn;
    p.dirty_since.get_or_insert(lsn);
}

impl Owner {
    /// Opens the store, loads every snapshot and replays the log after them.
    pub fn open_with(
        vfs: Arc<dyn mneme_storage::vfs::Vfs>,
        dir: &Path,
        opts: Options,
    ) -> mneme_storage::Result<Owner> {
        let store = Store::open_with(vfs, dir, opts)?;
        let parts = Arc::new(Mutex::new(vec![Partition::default(); PARTITIONS as usize]));
        for s in store.snapshots() {
            let bytes = store.read_snapshot(&s)?;
            let map = decode_partition(bytes.bytes()).expect("a snapshot this owner wrote");
            let part = s.tag[1] as usize;
            parts.lock()[part] = Partition {
                map,
                applied_lsn: s.lsn,
                dirty_since: None,
            };
        }
        store.replay(&mut |e| {
            let op = Op::decode(e.payload)?;
            apply(&parts, &op, e.lsn);
            Ok(())
        })?;
        Ok(Owner {
            store,
            parts,
            applied_order: Arc::new(Mutex::new(Vec::new())),
        })
    }

    pub fn commit(&self, op: &Op) -> mneme_storage::Result<u64> {
        let parts = Arc::clone(&self.parts);
        let order = Arc::clone(&self.applied_order);
        let op2 = op.clone();
        let (lsn, applied) = self.store.commit(op.encode(), move |lsn| {
            apply(&parts, &op2, lsn);
            order.lock().push(lsn);
            lsn
        })?;
        assert_eq!(lsn, applied);
        Ok(lsn)
    }

    /// Snapshots the partitions in `mask` that changed, installs them and retires the WAL
    /// that no partition needs any more.
    pub fn checkpoint(&self, mask: u8) -> mneme_storage::Result<()> {
        let mut written = Vec::new();
        let captured: Vec<(u8, Partition)> = {
            let mut parts = self.parts.lock();
            let mut out = Vec::new();
            for i in 0..PARTITIONS {
                let p = &mut parts[i as usize];
                if mask & (1 << i) != 0 && p.dirty_since.is_some() {
                    out.push((i, p.clone()));
                    p.dirty_since = None;
                }
            }
            out
        };
        for (i, p) in &captured {
            let mut w = self.store.begin_snapshot(&tag(*i), p.applied_lsn)?;
            std::io::Write::write_all(&mut w, &encode_partition(p)).map_err(|e| {
                mneme_storage::Error::Poisoned {
                    cause: e.to_string(),
                }
            })?;
            written.push(w.finish()?);
        }
        let retain_from = {
            let parts = self.parts.lock();
            let applied = parts.iter().map(|p| p.applied_lsn).max().unwrap_or(0);
            parts
                .iter()
                .filter_map(|p| p.dirty_since)
                .min()
                .unwrap_or(applied + 1)
                .min(applied + 1)
        };
        // On failure the run stops (the store is poisoned), so the partitions' dirty marks
        // need no restoring here; the engine restores them.
        self.store.install(written, retain_from)
    }

    pub fn state(&self) -> State {
        let mut out = State::new();
        for (i, p) in self.parts.lock().iter().enumerate() {
            for (k, v) in &p.map {
                out.insert((i as u8, k.clone()), v.clone());
            }
        }
        out
    }
}

/// Options that make every mechanism fire on a small workload: tiny WAL segments, no
/// background threads (so the sequence of I/O operations is deterministic).
pub fn small_options() -> Options {
    Options {
        durability: Durability::EveryCommit,
        wal_segment_bytes_max: 2 * 1024,
        keep_wal: false,
    }
}

pub fn open_sim(fs: &SimFs) -> mneme_storage::Result<Owner> {
    Owner::open_with(Arc::new(fs.clone()), Path::new(DIR), small_options())
}

/// What the owner must hold after recovery: the acknowledged state, or that state plus
/// some commits that were attempted but not acknowledged (in order).
#[derive(Debug, Default)]
pub struct Reference {
    pub acked: State,
    pub maybe: Vec<State>,
}

impl Reference {
    pub fn attempted(&mut self, op: &Op, acked: bool) {
        let mut next = self.maybe.last().unwrap_or(&self.acked).clone();
        op.apply_to(&mut next);
        if acked {
            assert!(
                self.maybe.is_empty(),
                "a commit was acknowledged after one failed"
            );
            self.acked = next;
        } else {
            self.maybe.push(next);
        }
    }

    /// Checks `acked ⊆ recovered ⊆ attempted` and adopts the recovered state.
    pub fn check_recovered(&mut self, recovered: State, context: &str) {
        let ok = recovered == self.acked || self.maybe.contains(&recovered);
        if !ok {
            let lost: Vec<_> = self
                .acked
                .iter()
                .filter(|(k, v)| recovered.get(*k) != Some(*v))
                .map(|((p, k), _)| format!("{p}/{}", String::from_utf8_lossy(k)))
                .collect();
            let extra: Vec<_> = recovered
                .keys()
                .filter(|k| !self.acked.contains_key(*k))
                .map(|(p, k)| format!("{p}/{}", String::from_utf8_lossy(k)))
                .collect();
            panic!(
                "{context}: recovered state is neither the acknowledged state nor a state with \
                 some attempted commits; differing acked keys {lost:?}, unexpected keys {extra:?}"
            );
        }
        self.acked = recovered;
        self.maybe.clear();
    }
}

/// One step of a workload.
#[derive(Debug, Clone)]
pub enum Step {
    Commit(Op),
    /// Snapshot the partitions in the mask.
    Checkpoint(u8),
    Reopen,
}

/// A deterministic workload of `len` steps for `seed`.
pub fn generate(seed: u64, len: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| match rng.random_range(0..100) {
            0..75 => {
                let part = rng.random_range(0..PARTITIONS);
                let key = format!("{}", rng.random_range(0..30)).into_bytes();
                let kind = rng.random_range(0..100);
                Step::Commit(if kind < 75 {
                    let len = rng.random_range(0..400);
                    let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    Op::Put { part, key, value }
                } else if kind < 96 {
                    Op::Delete { part, key }
                } else {
                    Op::Clear { part }
                })
            }
            75..90 => Step::Checkpoint(rng.random_range(1..8)),
            _ => Step::Reopen,
        })
        .collect()
}

/// Runs `steps` against the store on `fs`, recording into `reference`. Stops at the first
/// error (an injected fault) and returns whether the run completed.
pub fn run(fs: &SimFs, steps: &[Step], reference: &mut Reference) -> bool {
    let Ok(mut owner) = open_sim(fs) else {
        return false;
    };
    for step in steps {
        match step {
            Step::Commit(op) => {
                let acked = owner.commit(op).is_ok();
                reference.attempted(op, acked);
                if !acked {
                    return false;
                }
            }
            Step::Checkpoint(mask) => {
                if owner.checkpoint(*mask).is_err() {
                    return false;
                }
            }
            Step::Reopen => {
                drop(owner);
                match open_sim(fs) {
                    Ok(o) => owner = o,
                    Err(_) => return false,
                }
                reference.check_recovered(owner.state(), "clean reopen");
            }
        }
        assert_eq!(
            owner.state(),
            reference.acked,
            "live state diverges from the model"
        );
    }
    true
}
