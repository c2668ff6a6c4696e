//! The store on the real file system: locking, concurrency, compaction erasing bytes.

use std::sync::Arc;

use mneme_storage::{Durability, Error, Options, Store, WriteBatch};

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
fn concurrent_committers_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..200u32 {
                    let mut batch = WriteBatch::new();
                    batch
                        .put(format!("{t}/{i}").into_bytes(), vec![t as u8; 1024])
                        .unwrap();
                    store.commit(batch).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.stats().last_lsn, 1600);
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.scan_prefix(b"").len(), 1600);
    assert_eq!(&*store.get(b"7/199").unwrap(), vec![7u8; 1024].as_slice());
}

#[test]
fn compaction_erases_deleted_bytes_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let secret = b"SECRET-MEMORY-CONTENT-0123456789".to_vec();
    let mut batch = WriteBatch::new();
    batch.put(b"agent/a/1".to_vec(), secret.clone()).unwrap();
    batch.put(b"agent/b/1".to_vec(), b"keep".to_vec()).unwrap();
    store.commit(batch).unwrap();
    store.checkpoint().unwrap();
    let mut batch = WriteBatch::new();
    batch.delete_prefix(b"agent/a/".to_vec()).unwrap();
    store.commit(batch).unwrap();
    assert!(store.get(b"agent/a/1").is_none());
    store.compact().unwrap();
    let contains_secret = std::fs::read_dir(dir.path()).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret.as_slice())
    });
    assert!(!contains_secret, "deleted bytes survived compaction");
    assert_eq!(&*store.get(b"agent/b/1").unwrap(), b"keep");
    drop(store);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert!(store.get(b"agent/a/1").is_none());
    assert_eq!(&*store.get(b"agent/b/1").unwrap(), b"keep");
}

#[test]
fn periodic_durability_acknowledges_and_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Periodic { interval_ms: 5 },
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"k".to_vec(), b"v".to_vec()).unwrap();
    store.commit(batch).unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(&*store.get(b"k").unwrap(), b"v");
}

#[test]
fn oversized_keys_and_values_get_a_clear_error() {
    let mut batch = WriteBatch::new();
    let err = batch
        .put(vec![0u8; mneme_storage::KEY_BYTES_MAX + 1], b"v".to_vec())
        .unwrap_err();
    assert!(err.to_string().contains("key is 4097 bytes"), "{err}");
    let err = batch
        .put(b"k".to_vec(), vec![0u8; mneme_storage::VALUE_BYTES_MAX + 1])
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { what: "value", .. }));
    assert!(batch.is_empty());
}
