//! Damaged files: recovery either truncates a torn WAL tail or returns a typed corruption
//! error naming the file and offset. It never panics, never silently skips, and whatever it
//! recovers is a state the owner really was in.

use std::path::{Path, PathBuf};

use mneme_storage::Error;
use mneme_storage::sim::SimFs;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::workload::{DIR, Op, Reference, State, generate, open_sim, run};

fn files(fs: &SimFs) -> Vec<PathBuf> {
    use mneme_storage::vfs::Vfs;
    let mut names = fs.list(Path::new(DIR)).unwrap();
    names.sort();
    names
        .into_iter()
        .filter(|n| n != "LOCK")
        .map(|n| Path::new(DIR).join(n))
        .collect()
}

/// A store with snapshots and a WAL tail, and every state it went through (the states a
/// damaged store may legitimately recover to are prefixes of this history).
fn populated(seed: u64) -> (SimFs, Vec<State>) {
    let fs = SimFs::new(seed);
    let mut reference = Reference::default();
    assert!(run(&fs, &generate(seed, 80), &mut reference));
    let owner = open_sim(&fs).unwrap();
    owner.checkpoint(0b011).unwrap();
    let mut history = vec![owner.state()];
    for i in 0..10u8 {
        let op = Op::Put {
            part: i % 3,
            key: format!("tail{i}").into_bytes(),
            value: vec![i; 100],
        };
        owner.commit(&op).unwrap();
        history.push(owner.state());
    }
    drop(owner);
    (fs, history)
}

#[test]
fn random_bit_flips_and_truncations_never_panic_and_never_invent_state() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut outcomes = [0usize; 2];
    for round in 0..300u64 {
        let (fs, history) = populated(round % 7);
        let all = files(&fs);
        let path = &all[rng.random_range(0..all.len())];
        let len = fs.file_len(path).unwrap();
        if rng.random_bool(0.5) && len > 0 {
            fs.flip_bit(path, rng.random_range(0..len as u64 * 8))
                .unwrap();
        } else {
            fs.chop(path, rng.random_range(0..=len)).unwrap();
        }
        match open_sim(&fs) {
            Ok(owner) => {
                // A torn tail may lose the newest entries, never anything in the middle and
                // never produce a state that never existed.
                let state = owner.state();
                assert!(
                    history.contains(&state),
                    "round {round}: damage to {path:?} recovered a state that never existed"
                );
                outcomes[0] += 1;
            }
            Err(Error::Corruption { path: p, .. }) => {
                assert!(p.starts_with(DIR), "round {round}: corruption names {p:?}");
                outcomes[1] += 1;
            }
            Err(other) => panic!("round {round}: damage to {path:?} gave {other:?}"),
        }
    }
    assert!(outcomes[0] > 10 && outcomes[1] > 10, "{outcomes:?}");
}

#[test]
fn a_flipped_bit_in_a_snapshot_is_reported_with_its_file() {
    let (fs, _) = populated(3);
    let snap = files(&fs)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".snap"))
        .expect("a snapshot exists");
    fs.flip_bit(&snap, 8 * 3).unwrap();
    match open_sim(&fs) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, snap),
        other => panic!("expected corruption, got {:?}", other.map(|o| o.state())),
    }
}

#[test]
fn a_missing_snapshot_is_corruption_not_an_empty_partition() {
    let (fs, _) = populated(4);
    let snap = files(&fs)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".snap"))
        .expect("a snapshot exists");
    mneme_storage::vfs::Vfs::remove(&fs, &snap).unwrap();
    match open_sim(&fs) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, snap),
        other => panic!("expected corruption, got {:?}", other.map(|o| o.state())),
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_wal_segment_is_corruption_not_a_torn_tail() {
    let fs = SimFs::new(5);
    let owner = open_sim(&fs).unwrap();
    for i in 0..40u32 {
        owner
            .commit(&Op::Put {
                part: 0,
                key: i.to_le_bytes().to_vec(),
                value: vec![1u8; 200],
            })
            .unwrap();
    }
    drop(owner);
    let wals: Vec<_> = files(&fs)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(wals.len() >= 3, "expected WAL roll-over, got {wals:?}");
    fs.flip_bit(&wals[0], 8 * 100).unwrap();
    match open_sim(&fs) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!(path, wals[0]);
            assert_eq!(offset, 32, "the first frame starts right after the header");
        }
        other => panic!("expected corruption, got {:?}", other.map(|o| o.state())),
    }
}

#[test]
fn an_entry_the_owner_cannot_decode_is_corruption_with_file_and_offset() {
    let fs = SimFs::new(6);
    let owner = open_sim(&fs).unwrap();
    owner
        .commit(&Op::Put {
            part: 0,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        })
        .unwrap();
    owner.store.commit(vec![9, 9], |_| ()).unwrap();
    drop(owner);
    match open_sim(&fs) {
        Err(Error::Corruption {
            path,
            offset,
            reason,
        }) => {
            assert!(path.to_string_lossy().ends_with(".log"));
            assert!(offset > 32, "{offset}");
            assert!(reason.contains("undecodable"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|o| o.state())),
    }
}
