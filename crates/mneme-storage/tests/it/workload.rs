//! A seeded workload generator and the reference model every test checks against.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mneme_storage::sim::SimFs;
use mneme_storage::{Durability, Op, Options, Store, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type State = BTreeMap<Vec<u8>, Vec<u8>>;

pub const DIR: &str = "/data";

/// Options that make every mechanism fire on a small workload: tiny WAL and log segments,
/// no background threads (so the sequence of I/O operations is deterministic).
pub fn small_options() -> Options {
    Options {
        durability: Durability::EveryCommit,
        wal_segment_bytes_max: 2 * 1024,
        log_segment_bytes_max: 3 * 1024,
        checkpoint_bytes: usize::MAX,
        compaction_dead_ratio: 0.3,
        compaction_min_dead_bytes: 0,
        background_maintenance: false,
    }
}

pub fn open_sim(fs: &SimFs) -> mneme_storage::Result<Store> {
    Store::open_with(Arc::new(fs.clone()), Path::new(DIR), small_options())
}

pub fn dump(store: &Store) -> State {
    store
        .scan_prefix(b"")
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect()
}

pub fn apply(state: &mut State, op: &Op) {
    match op {
        Op::Put { key, value } => {
            state.insert(key.clone(), value.clone());
        }
        Op::Delete { key } => {
            state.remove(key);
        }
        Op::DeletePrefix { prefix } => state.retain(|k, _| !k.starts_with(prefix)),
    }
}

/// What the store must contain: the acknowledged state, or that state plus some commits
/// that were attempted but not acknowledged (in order).
#[derive(Debug, Default)]
pub struct Reference {
    pub acked: State,
    pub maybe: Vec<State>,
}

impl Reference {
    pub fn attempted(&mut self, batch: &WriteBatch, acked: bool) {
        let mut next = self.maybe.last().unwrap_or(&self.acked).clone();
        for op in batch.ops() {
            apply(&mut next, op);
        }
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
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            let extra: Vec<_> = recovered
                .keys()
                .filter(|k| !self.acked.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
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
    Commit(WriteBatch),
    Checkpoint,
    Compact,
    Reopen,
}

/// A deterministic workload of `len` steps for `seed`.
pub fn generate(seed: u64, len: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let prefixes: [&[u8]; 3] = [b"a/", b"b/", b"c/"];
    (0..len)
        .map(|_| {
            let roll = rng.random_range(0..100);
            match roll {
                0..70 => {
                    let mut batch = WriteBatch::new();
                    for _ in 0..rng.random_range(1..=4) {
                        let prefix = prefixes[rng.random_range(0..prefixes.len())];
                        let mut key = prefix.to_vec();
                        key.extend_from_slice(format!("{}", rng.random_range(0..30)).as_bytes());
                        let kind = rng.random_range(0..100);
                        let op = if kind < 75 {
                            let len = rng.random_range(0..400);
                            let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                            Op::Put { key, value }
                        } else if kind < 96 {
                            Op::Delete { key }
                        } else {
                            Op::DeletePrefix {
                                prefix: prefix.to_vec(),
                            }
                        };
                        batch.push(op).expect("within limits");
                    }
                    Step::Commit(batch)
                }
                70..82 => Step::Checkpoint,
                82..90 => Step::Compact,
                _ => Step::Reopen,
            }
        })
        .collect()
}

/// Runs `steps` against the store on `fs`, recording into `reference`. Stops at the first
/// error (an injected fault) and returns whether the run completed.
pub fn run(fs: &SimFs, steps: &[Step], reference: &mut Reference) -> bool {
    let Ok(mut store) = open_sim(fs) else {
        return false;
    };
    for step in steps {
        match step {
            Step::Commit(batch) => {
                let acked = store.commit(batch.clone()).is_ok();
                reference.attempted(batch, acked);
                if !acked {
                    return false;
                }
            }
            Step::Checkpoint => {
                if store.checkpoint().is_err() {
                    return false;
                }
            }
            Step::Compact => {
                if store.compact().is_err() {
                    return false;
                }
            }
            Step::Reopen => {
                drop(store);
                match open_sim(fs) {
                    Ok(s) => store = s,
                    Err(_) => return false,
                }
                reference.check_recovered(dump(&store), "clean reopen");
            }
        }
        assert_eq!(
            dump(&store),
            reference.acked,
            "live reads diverge from the model"
        );
    }
    true
}
