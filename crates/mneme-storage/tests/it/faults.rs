//! Injected I/O errors: the failing operation is never acknowledged, the store is poisoned,
//! and reopening recovers everything acknowledged before the fault.

use mneme_storage::sim::{Fault, OpType, SimFs};
use mneme_storage::{Error, WriteBatch};

use crate::workload::{Reference, dump, generate, open_sim, run};

fn fail_once(op: OpType, skip: u64) {
    let steps = generate(42, 60);
    let fs = SimFs::new(skip);
    fs.inject(Fault {
        op: Some(op),
        skip,
        crash: false,
    });
    let mut reference = Reference::default();
    let completed = run(&fs, &steps, &mut reference);
    if completed {
        // The workload has fewer than `skip` such operations; nothing to check.
        return;
    }
    // The process is still alive: reopen (page cache intact) and check nothing acked was lost.
    let store = open_sim(&fs).unwrap_or_else(|e| panic!("{op:?} #{skip}: reopen failed: {e}"));
    reference.check_recovered(dump(&store), &format!("{op:?} fault #{skip}"));
}

#[test]
fn failed_fsync_write_rename_or_create_never_loses_acknowledged_commits() {
    for op in [
        OpType::Sync,
        OpType::Append,
        OpType::Rename,
        OpType::Create,
        OpType::SyncDir,
        OpType::Remove,
    ] {
        for skip in 0..40 {
            fail_once(op, skip);
        }
    }
}

#[test]
fn a_failed_fsync_poisons_the_store_until_reopen() {
    let fs = SimFs::new(3);
    let store = open_sim(&fs).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"k1".to_vec(), b"v1".to_vec()).unwrap();
    store.commit(batch.clone()).unwrap();
    fs.inject(Fault {
        op: Some(OpType::Sync),
        skip: 0,
        crash: false,
    });
    assert!(
        store.commit(batch.clone()).is_err(),
        "commit acked despite failed fsync"
    );
    // The next fsync would succeed, but the store must not retry-then-acknowledge.
    let err = store.commit(batch.clone()).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "got {err:?}");
    assert!(store.poisoned().is_some());
    assert!(matches!(store.checkpoint(), Err(Error::Poisoned { .. })));
    drop(store);
    let store = open_sim(&fs).unwrap();
    assert_eq!(&*store.get(b"k1").unwrap(), b"v1");
    store.commit(batch).unwrap();
}
