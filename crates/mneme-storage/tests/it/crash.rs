//! Model-based runs and simulated power loss at every mutating I/O operation.

use mneme_storage::sim::{Fault, SimFs, TEAR_MODES};
use proptest::prelude::*;

use crate::workload::{Op, Reference, Step, generate, open_sim, run};

fn recover_and_check(fs: &SimFs, reference: &mut Reference, context: &str) {
    let owner = match open_sim(fs) {
        Ok(owner) => owner,
        Err(err) => panic!("{context}: recovery failed: {err}"),
    };
    reference.check_recovered(owner.state(), context);
    // The recovered store must accept writes and keep them across another reopen.
    let op = Op::Put {
        part: 0,
        key: b"after-crash".to_vec(),
        value: b"ok".to_vec(),
    };
    owner.commit(&op).unwrap();
    reference.attempted(&op, true);
    owner.checkpoint(0b001).unwrap();
    drop(owner);
    let owner = open_sim(fs).unwrap();
    reference.check_recovered(owner.state(), &format!("{context}, second reopen"));
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

/// The fixed workload used for exhaustive crash points. It rolls WAL segments, snapshots
/// partitions (installing and retiring) and reopens several times.
fn crash_workload() -> Vec<Step> {
    generate(0x5eed_cafe, 70)
}

#[test]
fn the_crash_workload_exercises_every_mechanism() {
    let steps = crash_workload();
    let checkpoints = steps
        .iter()
        .filter(|s| matches!(s, Step::Checkpoint(_)))
        .count();
    let reopens = steps.iter().filter(|s| matches!(s, Step::Reopen)).count();
    assert!(
        checkpoints >= 5 && reopens >= 3,
        "{checkpoints} checkpoints, {reopens} reopens"
    );
}

#[test]
fn power_loss_at_every_io_operation_under_every_tear_mode() {
    let steps = crash_workload();
    let fs = SimFs::new(1);
    let mut reference = Reference::default();
    assert!(run(&fs, &steps, &mut reference), "fault-free run failed");
    let total_ops = fs.mutating_ops();
    assert!(
        total_ops > 150,
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
                assert!(
                    fs.crashed(),
                    "crash at op {k}: the run stopped without the fault"
                );
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
        skip: 120,
        crash: true,
    });
    assert!(!run(&fs, &steps, &mut reference));
    assert!(fs.crashed());
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
