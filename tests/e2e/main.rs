//! End-to-end tests: each starts the real `mneme` binary on 127.0.0.1 (a free port) and
//! talks real gRPC to it.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod auth;
mod bad_input;
mod cluster;
mod crash;
mod hardening;
mod harness;
mod isolation;
#[cfg(feature = "minilm")]
mod minilm;
mod python;
mod rpc;
mod sharding;
mod tls;
