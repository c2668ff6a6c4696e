//! The store on the real file system: locking, concurrency and apply order, retirement
//! erasing bytes, large entries, limits, formats it refuses.

use std::sync::Arc;

use mneme_storage::{Durability, ENTRY_BYTES_MAX, Error, Options, Store};

use crate::workload::{Op, Owner};

fn open(dir: &std::path::Path) -> Owner {
    Owner::open_with(
        Arc::new(mneme_storage::vfs::RealFs),
        dir,
        Options::default(),
    )
    .unwrap()
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    match Store::open(dir.path(), Options::default()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    Store::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn concurrent_committers_are_all_durable_and_applied_in_lsn_order() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let owner = Arc::clone(&owner);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    owner
                        .commit(&Op::Put {
                            part: t % 3,
                            key: format!("{t}/{i}").into_bytes(),
                            value: vec![t; 1024],
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let order = owner.applied_order.lock().clone();
    assert_eq!(order.len(), 1600);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "applied out of LSN order"
    );
    assert_eq!(owner.store.stats().last_lsn, 1600);
    let before = owner.state();
    drop(owner);
    let owner = open(dir.path());
    assert_eq!(owner.state(), before);
    assert_eq!(owner.state().len(), 1600);
}

#[test]
fn snapshots_retire_the_wal_and_forgotten_bytes_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let secret = b"SECRET-MEMORY-CONTENT-0123456789".to_vec();
    owner
        .commit(&Op::Put {
            part: 0,
            key: b"a1".to_vec(),
            value: secret.clone(),
        })
        .unwrap();
    owner
        .commit(&Op::Put {
            part: 1,
            key: b"b1".to_vec(),
            value: b"keep".to_vec(),
        })
        .unwrap();
    owner.checkpoint(0b111).unwrap();
    owner.commit(&Op::Clear { part: 0 }).unwrap();
    owner.checkpoint(0b111).unwrap();
    let contains_secret = std::fs::read_dir(dir.path()).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret.as_slice())
    });
    assert!(!contains_secret, "forgotten bytes survived the checkpoint");
    let stats = owner.store.stats();
    assert_eq!(stats.wal_segments, 1, "{stats:?}");
    drop(owner);
    let owner = open(dir.path());
    let state = owner.state();
    assert_eq!(state.len(), 1);
    assert_eq!(state[&(1, b"b1".to_vec())], b"keep");
}

#[test]
fn entries_larger_than_a_frame_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let big: Vec<u8> = (0..(mneme_storage::FRAME_BODY_BYTES_MAX * 2 + 77))
        .map(|i| (i % 251) as u8)
        .collect();
    let op = Op::Put {
        part: 2,
        key: b"big".to_vec(),
        value: big.clone(),
    };
    owner.commit(&op).unwrap();
    owner
        .commit(&Op::Put {
            part: 2,
            key: b"after".to_vec(),
            value: b"x".to_vec(),
        })
        .unwrap();
    drop(owner);
    let owner = open(dir.path());
    assert_eq!(owner.state()[&(2, b"big".to_vec())], big);
    assert_eq!(owner.state()[&(2, b"after".to_vec())], b"x");
}

#[test]
fn periodic_durability_acknowledges_and_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Periodic { interval_ms: 5 },
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    store.commit(b"entry".to_vec(), |_| ()).unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    let mut seen = Vec::new();
    store
        .replay(&mut |e| {
            seen.push(e.payload.to_vec());
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, vec![b"entry".to_vec()]);
}

#[test]
fn oversized_entries_and_tags_get_a_clear_error_and_replay_only_before_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let err = store
        .commit(vec![0u8; ENTRY_BYTES_MAX + 1], |_| ())
        .unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { what: "entry", .. }),
        "{err}"
    );
    assert!(store.begin_snapshot(&[], 1).is_err());
    assert!(store.begin_snapshot(&[1; 1025], 1).is_err());
    store.commit(b"x".to_vec(), |_| ()).unwrap();
    assert!(store.replay(&mut |_| Ok(())).is_err());
}

#[test]
fn a_data_directory_of_the_first_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log-0000000000000001.seg"), b"old").unwrap();
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("mneme export"), "{err}");
    // Nothing of it was touched.
    assert_eq!(
        std::fs::read(dir.path().join("log-0000000000000001.seg")).unwrap(),
        b"old"
    );
}

#[test]
fn installing_one_part_replaces_only_that_part_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let snap = |store: &Store, tag: &[u8], body: &[u8]| {
        let mut w = store.begin_snapshot(tag, 1).unwrap();
        std::io::Write::write_all(&mut w, body).unwrap();
        w.finish().unwrap()
    };
    {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let a1 = snap(&store, b"a/1", b"one");
        let b1 = snap(&store, b"b/1", b"other part");
        let a2 = snap(&store, b"a/2", b"two");
        store.install(vec![a1, b1, a2], 1).unwrap();
        // Part "a/": a/1 is replaced, a/2 is dropped (not in the new set), b/1 stays.
        let a1_new = snap(&store, b"a/1", b"one, newer");
        let covers = |tag: &[u8]| tag.starts_with(b"a/");
        store.install_replacing(vec![a1_new], &covers, 1).unwrap();
        let tags: Vec<Vec<u8>> = store.snapshots().iter().map(|s| s.tag.clone()).collect();
        assert_eq!(tags, vec![b"a/1".to_vec(), b"b/1".to_vec()]);
        // An empty set drops the part.
        store.install_replacing(Vec::new(), &covers, 1).unwrap();
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let live = store.snapshots();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].tag, b"b/1".to_vec());
    assert_eq!(
        store.read_snapshot(&live[0]).unwrap().bytes(),
        b"other part"
    );
}
