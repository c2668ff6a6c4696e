//! The engine's one error type. Every variant maps to exactly one wire status.

/// Everything that can go wrong in `mneme-engine`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something outside a limit or malformed; the message names the
    /// field, the limit and the value.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field, as named on the wire (`content`, `vector`, `top_k`, ...).
        field: String,
        /// What is wrong, with the limit.
        reason: String,
    },
    /// The operation conflicts with the agent's configuration (for example a text query
    /// against an agent that stores client-supplied vectors).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The store can no longer write safely (an fsync failed) or could not be read.
    #[error("storage: {0}")]
    Storage(#[from] mneme_storage::Error),
    /// The embedder failed.
    #[error("embedder {embedder}: {reason}")]
    Embedder {
        /// Embedder id.
        embedder: String,
        /// What failed.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record {key}: {reason}")]
    CorruptRecord {
        /// The storage key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The service cannot take the call now (a cluster without a leader, a node catching
    /// up); retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Reading or writing an export stream failed.
    #[error("export/import I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
