//! A real child process appends with acknowledgements and is killed with SIGKILL at random
//! moments, in a loop; every acknowledged record must be there after each reopen.
//!
//! The child is this same test binary, re-run with `MNEME_KILL_CHILD_DIR` set, executing
//! only [`child_writer`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use mneme_storage::Options;
use mneme_storage::vfs::RealFs;
use rand::{Rng, SeedableRng};

use crate::workload::{Op, Owner};

const CHILD_ENV: &str = "MNEME_KILL_CHILD_DIR";
const CYCLE_ENV: &str = "MNEME_KILL_CHILD_CYCLE";
const WRITERS: usize = 4;

fn value_for(key: &str) -> Vec<u8> {
    key.as_bytes().repeat(20)
}

/// Not a test on its own: the body of the child process (returns at once otherwise).
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cycle: u32 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let opts = Options {
        wal_segment_bytes_max: 64 * 1024,
        ..Options::default()
    };
    let owner = Arc::new(Owner::open_with(Arc::new(RealFs), dir.as_ref(), opts).unwrap());
    // Snapshots and WAL retirement run meanwhile, like the engine's checkpoints.
    {
        let owner = Arc::clone(&owner);
        std::thread::spawn(move || {
            for i in 0u64.. {
                std::thread::sleep(Duration::from_millis(15));
                owner.checkpoint(1 << (i % 3)).unwrap();
            }
        });
    }
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let owner = Arc::clone(&owner);
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for seq in 0.. {
                    let key = format!("c{cycle}-t{t}-{seq}");
                    let part = (t % 3) as u8;
                    if seq % 10 == 9 {
                        // Deletes are acknowledged too: delete the previous key first.
                        owner
                            .commit(&Op::Delete {
                                part,
                                key: format!("c{cycle}-t{t}-{}", seq - 1).into_bytes(),
                            })
                            .unwrap();
                    }
                    owner
                        .commit(&Op::Put {
                            part,
                            key: key.clone().into_bytes(),
                            value: value_for(&key),
                        })
                        .unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {key}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    // key -> Some(present) when known; None when its delete was attempted but not acked.
    let mut expected: BTreeMap<String, Option<bool>> = BTreeMap::new();
    for cycle in 0..20u32 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(key) = line.strip_prefix("ACK ")
                    && tx.send(key.to_owned()).is_err()
                {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement (a slow start must not make an empty cycle),
        // then let it run for a random while before the kill.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("cycle {cycle}: child acknowledged nothing"));
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked: Vec<String> = std::iter::once(first).chain(rx.try_iter()).collect();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: child acknowledged nothing"
        );
        for key in &acked {
            let (prefix, seq) = key.rsplit_once('-').unwrap();
            let seq: u64 = seq.parse().unwrap();
            match seq % 10 {
                // Its delete comes with the next commit, which may be durable but unacked.
                8 => expected.entry(key.clone()).or_insert(None),
                9 => {
                    expected.insert(format!("{prefix}-{}", seq - 1), Some(false));
                    expected.entry(key.clone()).or_insert(Some(true))
                }
                _ => expected.entry(key.clone()).or_insert(Some(true)),
            };
        }
        let owner = Owner::open_with(Arc::new(RealFs), dir.path(), Options::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        let state = owner.state();
        let t_of = |key: &str| -> u8 {
            let t: u8 = key.split('-').nth(1).unwrap()[1..].parse().unwrap();
            t % 3
        };
        for (key, present) in &expected {
            let got = state.get(&(t_of(key), key.as_bytes().to_vec()));
            let Some(present) = present else { continue };
            if *present {
                let got = got.unwrap_or_else(|| panic!("cycle {cycle}: acknowledged {key} lost"));
                assert_eq!(
                    got.as_slice(),
                    value_for(key).as_slice(),
                    "cycle {cycle}: {key} damaged"
                );
            } else {
                assert!(got.is_none(), "cycle {cycle}: deleted {key} came back");
            }
        }
    }
}
