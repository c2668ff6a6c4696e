//! Damaged files: recovery either truncates a torn WAL tail or returns a typed corruption
//! error naming the file and offset. It never panics and never silently skips.

use std::path::{Path, PathBuf};

use mneme_storage::sim::SimFs;
use mneme_storage::{Error, Store, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::workload::{DIR, Reference, generate, open_sim, run};

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

fn populated(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    let mut reference = Reference::default();
    assert!(run(&fs, &generate(seed, 80), &mut reference));
    // Leave some records in the WAL and some in the log.
    let store = open_sim(&fs).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"tail".to_vec(), vec![7u8; 100]).unwrap();
    store.commit(batch).unwrap();
    drop(store);
    fs
}

fn open_outcome(fs: &SimFs) -> Result<Store, Error> {
    open_sim(fs)
}

#[test]
fn random_bit_flips_and_truncations_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..300u64 {
        let fs = populated(round % 7);
        let all = files(&fs);
        let path = &all[rng.random_range(0..all.len())];
        let len = fs.file_len(path).unwrap();
        if rng.random_bool(0.5) && len > 0 {
            fs.flip_bit(path, rng.random_range(0..len as u64 * 8))
                .unwrap();
        } else {
            fs.chop(path, rng.random_range(0..=len)).unwrap();
        }
        match open_outcome(&fs) {
            Ok(store) => {
                // Whatever was recovered must be readable.
                let _ = crate::workload::dump(&store);
            }
            Err(Error::Corruption { path: p, .. }) => {
                assert!(p.starts_with(DIR), "round {round}: corruption names {p:?}");
            }
            Err(other) => panic!("round {round}: damage to {path:?} gave {other:?}"),
        }
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_log_segment_is_reported_with_file_and_offset() {
    let fs = populated(3);
    let store = open_sim(&fs).unwrap();
    store.checkpoint().unwrap();
    drop(store);
    let seg = files(&fs)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".seg"))
        .expect("a log segment exists");
    fs.flip_bit(&seg, 8 * 40).unwrap();
    match open_outcome(&fs) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, 32, "the first frame starts right after the header");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_wal_segment_is_corruption_not_a_torn_tail() {
    let fs = SimFs::new(5);
    let store = open_sim(&fs).unwrap();
    for i in 0..40u32 {
        let mut batch = WriteBatch::new();
        batch.put(i.to_le_bytes().to_vec(), vec![1u8; 200]).unwrap();
        store.commit(batch).unwrap();
    }
    drop(store);
    let wals: Vec<_> = files(&fs)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(wals.len() >= 3, "expected WAL roll-over, got {wals:?}");
    fs.flip_bit(&wals[0], 8 * 100).unwrap();
    match open_outcome(&fs) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, wals[0]),
        other => panic!("expected corruption, got {other:?}"),
    }
}
