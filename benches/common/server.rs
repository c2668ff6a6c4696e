//! Starting the real `mneme` binary for the end-to-end benchmarks.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `mneme serve` on a free loopback port with `dir` as its data directory and the
/// `extra` flags; returns the process, its URL and how long it took to start serving.
pub fn spawn(dir: &Path, extra: &[String]) -> (Child, String, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mneme"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the mneme binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server reports its address")
            .expect("stdout is readable");
        if let Some(addr) = line.strip_prefix("mneme listening on ") {
            break addr.to_owned();
        }
    };
    (child, format!("http://{addr}"), t0.elapsed())
}
