//! The log proof with real crashes: a child process (this test binary, re-run with
//! `MNEME_ENGINE_KILL_DIR` set) runs three writers and a checkpointer against an engine on
//! the real file system and prints every entry before submitting it and again once it is
//! acknowledged; it is killed with SIGKILL at a random moment, again and again. Afterwards
//! the checks of `log_model` hold: acknowledged entries are in the log in order, nothing is
//! invented, recovered == replayed == model, recall answers agree.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use mneme_engine::{Clock, Engine, ManualClock};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::log_model::{Gen, T0, Writes, check, config, read_log};

const CHILD_ENV: &str = "MNEME_ENGINE_KILL_DIR";
const CYCLE_ENV: &str = "MNEME_ENGINE_KILL_CYCLE";
const WRITERS: usize = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `None` for a line the kill cut short.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let mut c = config(clock);
    c.checkpoint_wal_bytes = 64 * 1024;
    Engine::open(dir, c).unwrap()
}

/// Not a test on its own: the body of the child process (returns at once otherwise).
#[test]
fn engine_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + cycle as i64 * 1_000_000));
    let engine = Arc::new(open(dir.as_ref(), &clock));
    let known = Arc::new(Mutex::new(
        engine
            .dump()
            .iter()
            .flat_map(|a| a.memories.iter().map(|m| (a.agent.clone(), m.id.clone())))
            .collect::<Vec<_>>(),
    ));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    {
        let engine = Arc::clone(&engine);
        let clock = clock.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(3));
                clock.advance_ms(500);
                engine.checkpoint().unwrap();
            }
        });
    }
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let clock = clock.clone();
            let out = Arc::clone(&out);
            let known = Arc::clone(&known);
            std::thread::spawn(move || {
                let mut g = Gen {
                    rng: StdRng::seed_from_u64(cycle * 100 + t as u64),
                    thread: t,
                    n: cycle * 1_000_000,
                    known_ids: known,
                };
                // Until the parent kills the process.
                for _ in 0u64.. {
                    let e = g.entry(clock.now_ms());
                    let bytes = hex(&mneme_engine::mutation::encode(&e));
                    {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "TRY {t} {bytes}").unwrap();
                        o.flush().unwrap();
                    }
                    let outcome = engine.submit(e.clone()).unwrap();
                    if let mneme_engine::Outcome::Remembered(r) = &outcome {
                        let mut k = g.known_ids.lock();
                        for m in r {
                            k.push((e.agent.clone(), m.memory.id.clone()));
                        }
                    }
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {t} {bytes}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_keeps_state_a_function_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(2026);
    let mut writes: Vec<Writes> = (0..WRITERS).map(|_| Writes::default()).collect();
    let cycles: u64 = std::env::var("MNEME_ENGINE_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill::engine_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(CYCLE_ENV, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<(bool, usize, String)>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, ' ');
                let (Some(kind), Some(t), Some(bytes)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(t) = t.parse() else { continue };
                if tx.send((kind == "ACK", t, bytes.to_owned())).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement (a slow start must not make an empty cycle),
        // then let it run for a random while before the kill.
        let mut early = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("cycle {cycle}: the child acknowledged nothing"));
            let acked = line.0;
            early.push(line);
            if acked {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(20..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut acks = 0;
        for (acked, t, bytes) in early.into_iter().chain(rx.try_iter()) {
            // Only the last line can be cut short by the kill; it is then no entry.
            let Some(e) = unhex(&bytes).and_then(|b| mneme_engine::mutation::decode(&b).ok())
            else {
                continue;
            };
            let w = &mut writes[t];
            if acked {
                acks += 1;
                if let Some(i) = w.unacked.iter().position(|x| *x == e) {
                    w.unacked.remove(i);
                }
                w.acked.push(e);
            } else {
                w.unacked.push(e);
            }
        }
        assert!(acks > 0, "cycle {cycle}: nothing was acknowledged");
    }
    let clock = Arc::new(ManualClock::new(T0 + cycles as i64 * 1_000_000));
    let recovered = open(dir.path(), &clock);
    let dump = recovered.dump();
    drop(recovered);
    let log = read_log(Arc::new(mneme_storage::vfs::RealFs), dir.path());
    check(
        &log,
        &writes,
        &dump,
        &|| open(dir.path(), &clock),
        &clock,
        "SIGKILL cycles",
    );
}
