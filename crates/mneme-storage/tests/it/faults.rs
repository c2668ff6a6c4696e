//! Injected I/O errors: the failing operation is never acknowledged, the store is poisoned,
//! and reopening recovers everything acknowledged before the fault.

use mneme_storage::Error;
use mneme_storage::sim::{Fault, OpType, SimFs};

use crate::workload::{Op, Reference, generate, open_sim, run};

/// Runs the workload with the `skip`-th operation of type `op` failing once. Returns whether
/// the fault fired (the workload may have fewer such operations).
fn fail_once(op: OpType, skip: u64) -> bool {
    let steps = generate(42, 60);
    let fs = SimFs::new(skip);
    fs.inject(Fault {
        op: Some(op),
        skip,
        crash: false,
    });
    let mut reference = Reference::default();
    if run(&fs, &steps, &mut reference) {
        // Completed: only possible when the fault never fired.
        assert!(
            fs.fault_pending(),
            "{op:?} #{skip}: fault fired but the run went on"
        );
        return false;
    }
    assert!(
        !fs.fault_pending(),
        "{op:?} #{skip}: the run stopped without the fault"
    );
    // The process is still alive: reopen (page cache intact) and check nothing acked was lost.
    let owner = open_sim(&fs).unwrap_or_else(|e| panic!("{op:?} #{skip}: reopen failed: {e}"));
    reference.check_recovered(owner.state(), &format!("{op:?} fault #{skip}"));
    true
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
        let fired = (0..40).filter(|skip| fail_once(op, *skip)).count();
        assert!(
            fired >= 3,
            "only {fired} faults of {op:?} fired; the workload is too small"
        );
    }
}

#[test]
fn a_failed_fsync_poisons_the_store_until_reopen() {
    let fs = SimFs::new(3);
    let owner = open_sim(&fs).unwrap();
    let op = Op::Put {
        part: 1,
        key: b"k1".to_vec(),
        value: b"v1".to_vec(),
    };
    owner.commit(&op).unwrap();
    fs.inject(Fault {
        op: Some(OpType::Sync),
        skip: 0,
        crash: false,
    });
    assert!(
        owner.commit(&op).is_err(),
        "commit acked despite failed fsync"
    );
    // The next fsync would succeed, but the store must not retry-then-acknowledge.
    let err = owner.commit(&op).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "got {err:?}");
    assert!(owner.store.poisoned().is_some());
    assert!(matches!(
        owner.checkpoint(0b111),
        Err(Error::Poisoned { .. })
    ));
    drop(owner);
    let owner = open_sim(&fs).unwrap();
    assert_eq!(owner.state().get(&(1, b"k1".to_vec())).unwrap(), b"v1");
    owner.commit(&op).unwrap();
}

#[test]
fn an_apply_step_that_panics_poisons_the_store_and_answers_no_one() {
    let fs = SimFs::new(4);
    let owner = open_sim(&fs).unwrap();
    let result = owner
        .store
        .commit(b"x".to_vec(), |_| -> u8 { panic!("apply bug") });
    assert!(matches!(result, Err(Error::Poisoned { .. })), "{result:?}");
    assert!(owner.store.commit(b"y".to_vec(), |lsn| lsn).is_err());
    assert!(owner.store.poisoned().unwrap().contains("panicked"));
}
