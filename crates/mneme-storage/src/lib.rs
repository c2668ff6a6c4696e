//! Crash-safe storage for Mneme: a log of opaque entries and the snapshots that retire it.
//!
//! A [`Store`] is a write-ahead log with group commit (one `write` + `fdatasync` for every
//! group of concurrent committers): an entry is acknowledged only once durable, and the
//! committer's apply step runs in LSN order before that, so the owner's state changes in
//! exactly the log's order and never before the log holds the change. The owner writes
//! snapshot files of its state ([`Store::begin_snapshot`]), tagged and stamped with the LSN
//! they reflect; [`Store::install`] names them in the manifest and retires the WAL segments
//! they make unnecessary. On open, recovery verifies every checksum, truncates a torn WAL
//! tail and reports real corruption as [`Error::Corruption`] with file and offset; the
//! owner then loads its snapshots ([`Store::read_snapshot`], read-only memory maps) and
//! replays the entries after them ([`Store::replay`]).
//!
//! This crate knows nothing of vectors or memories: entries and snapshots are uninterpreted
//! bytes. All file I/O goes through [`vfs::Vfs`], so tests can inject faults ([`sim::SimFs`]).

mod error;
mod frame;
mod manifest;
mod mmap;
pub mod names;
mod recovery;
pub mod sim;
mod store;
pub mod vfs;
mod wal;

pub use error::{Error, Result};
pub use frame::FRAME_BODY_BYTES_MAX;
pub use manifest::{MANIFEST_FILE_NAME, SnapshotRef, TAG_BYTES_MAX};
pub use recovery::{ENTRY_BYTES_MAX, EntryRef};
pub use store::{Durability, Options, SnapshotWriter, Store, StoreStats};
pub use vfs::MappedBytes;
pub use wal::{FileKind, parse_file_name, snapshot_file_name, wal_file_name};
