//! Crash-safe storage for Mneme: bytes in, bytes out.
//!
//! A [`Store`] holds opaque key/value records. Writes go to a write-ahead log with group
//! commit (one `write` + `fdatasync` for every batch of concurrent committers) and are
//! acknowledged only once durable; checkpoints move them into an append log of immutable
//! segments that are read through read-only memory maps; compaction rewrites the live records
//! so that deleted bytes leave the disk. Recovery verifies every checksum, truncates a torn
//! WAL tail and reports real corruption as [`Error::Corruption`] with file and offset.
//!
//! This crate knows nothing of vectors or memories: keys and values are uninterpreted bytes.
//! All file I/O goes through [`vfs::Vfs`], so tests can inject faults ([`sim::SimFs`]).

mod error;
mod frame;
mod maintenance;
mod manifest;
mod memtable;
mod mmap;
pub mod names;
mod recovery;
pub mod sim;
mod store;
mod tables;
pub mod vfs;
mod wal;

pub use error::{Error, Result};
pub use frame::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use memtable::{BATCH_BYTES_MAX, Op, WriteBatch};
pub use store::{Durability, Options, Store, StoreStats};
pub use tables::Value;
