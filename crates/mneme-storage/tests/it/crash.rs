//! Model-based runs and simulated power loss at every mutating I/O operation.

use mneme_storage::sim::{Fault, SimFs, TEAR_MODES};
use proptest::prelude::*;

use crate::workload::{Reference, Step, dump, generate, open_sim, run};

fn recover_and_check(fs: &SimFs, reference: &mut Reference, context: &str) {
    let store = match open_sim(fs) {
        Ok(store) => store,
        Err(err) => panic!("{context}: recovery failed: {err}"),
    };
    reference.check_recovered(dump(&store), context);
    // The recovered store must accept writes and keep them across another reopen.
    let mut batch = mneme_storage::WriteBatch::new();
    batch.put(b"after-crash".to_vec(), b"ok".to_vec()).unwrap();
    store.commit(batch.clone()).unwrap();
    reference.attempted(&batch, true);
    drop(store);
    let store = open_sim(fs).unwrap();
    reference.check_recovered(dump(&store), &format!("{context}, second reopen"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random operation sequences, clean reopens included, against the reference model.
    #[test]
    fn random_operations_match_the_model(seed in any::<u64>(), len in 1usize..120) {
        let fs = SimFs::new(seed);
        let mut reference = Reference::default();
        let steps = generate(seed, len);
        prop_assert!(run(&fs, &steps, &mut reference));
        recover_and_check(&fs, &mut reference, &format!("seed {seed}"));
    }
}

/// The fixed workload used for exhaustive crash points. It rolls WAL segments, checkpoints,
/// compacts and reopens several times.
fn crash_workload() -> Vec<Step> {
    generate(0x5eed_cafe, 70)
}

#[test]
fn power_loss_at_every_io_operation_under_every_tear_mode() {
    let steps = crash_workload();
    let fs = SimFs::new(1);
    let mut reference = Reference::default();
    assert!(run(&fs, &steps, &mut reference), "fault-free run failed");
    let total_ops = fs.mutating_ops();
    assert!(
        total_ops > 200,
        "workload too small to be interesting: {total_ops} ops"
    );

    for k in 0..total_ops {
        for (m, mode) in TEAR_MODES.iter().enumerate() {
            for keep_dir_ops in [false, true] {
                let seed = k * 64 + m as u64 * 2 + u64::from(keep_dir_ops);
                let fs = SimFs::new(seed);
                fs.inject(Fault {
                    op: None,
                    skip: k,
                    crash: true,
                });
                let mut reference = Reference::default();
                let completed = run(&fs, &steps, &mut reference);
                assert!(!completed, "crash at op {k} never fired");
                fs.reboot(*mode, keep_dir_ops);
                let context = format!(
                    "crash at op {k}/{total_ops}, {mode:?}, keep_dir_ops {keep_dir_ops}, seed {seed}"
                );
                recover_and_check(&fs, &mut reference, &context);
            }
        }
    }
}

#[test]
fn power_loss_during_recovery_itself_is_recoverable() {
    let steps = crash_workload();
    let fs = SimFs::new(7);
    let mut reference = Reference::default();
    // Crash in the middle of the workload, then crash again at each step of recovery.
    fs.inject(Fault {
        op: None,
        skip: 150,
        crash: true,
    });
    assert!(!run(&fs, &steps, &mut reference));
    // One disk, crashed again and again: each time at the k-th I/O operation of recovery.
    for mode in TEAR_MODES {
        for k in 0..6 {
            fs.reboot(mode, false);
            fs.inject(Fault {
                op: None,
                skip: k,
                crash: true,
            });
            let _ = open_sim(&fs);
            fs.reboot(mode, false);
            recover_and_check(
                &fs,
                &mut reference,
                &format!("{mode:?}, recovery crash {k}"),
            );
        }
    }
}
