//! Integration tests of `mneme-storage`: model-based runs, simulated power loss at every
//! I/O operation, injected I/O errors, corruption, and SIGKILLed child processes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod corruption;
mod crash;
mod faults;
mod kill;
mod real;
mod workload;
