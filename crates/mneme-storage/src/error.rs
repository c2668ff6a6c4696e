//! The storage crate's one error type: each variant says what a caller can do about it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `mneme-storage`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed. If it was a write or a sync, the store is now poisoned.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Bytes that were durable are not what was written. Nothing was skipped or repaired.
    #[error("corruption in {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first bad frame or field.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An earlier write or sync failed; nothing is accepted until the store is reopened.
    #[error("store is poisoned by an earlier I/O failure ({cause}); reopen to recover")]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },
    /// Another process (or another `Store` in this one) holds the data directory.
    #[error("data directory {} is locked by another process", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The files are of a format this build does not read.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The file that told.
        path: PathBuf,
        /// What it is and what to do.
        reason: String,
    },
    /// An entry or snapshot tag exceeds its limit.
    #[error("{what} is {actual} bytes, above the limit of {limit} bytes")]
    TooLarge {
        /// `entry` or `tag`.
        what: &'static str,
        /// Size given.
        actual: usize,
        /// The limit.
        limit: usize,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
