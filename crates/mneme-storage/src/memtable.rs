//! Write batches, and the in-memory table of writes not yet checkpointed into the append log.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::frame::{KEY_BYTES_MAX, VALUE_BYTES_MAX, frame_bytes};

/// Largest encoded batch accepted by one commit.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One logical operation on the key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` (a no-op when absent).
    Delete {
        /// Key.
        key: Vec<u8>,
    },
    /// Remove every key starting with `prefix`.
    DeletePrefix {
        /// Prefix.
        prefix: Vec<u8>,
    },
}

impl Op {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
            Op::DeletePrefix { prefix } => prefix,
        }
    }

    pub(crate) fn value(&self) -> &[u8] {
        match self {
            Op::Put { value, .. } => value,
            Op::Delete { .. } | Op::DeletePrefix { .. } => &[],
        }
    }

    pub(crate) fn kind(&self) -> crate::frame::OpKind {
        use crate::frame::OpKind;
        match self {
            Op::Put { .. } => OpKind::Put,
            Op::Delete { .. } => OpKind::Delete,
            Op::DeletePrefix { .. } => OpKind::DeletePrefix,
        }
    }

    pub(crate) fn encoded_bytes(&self) -> usize {
        frame_bytes(self.key().len(), self.value().len())
    }
}

/// Operations committed together: one WAL write, one fsync, all or nothing after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    pub(crate) bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        self.push(Op::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<()> {
        self.push(Op::Delete { key: key.into() })
    }

    /// Adds a delete of every key with this prefix.
    pub fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> Result<()> {
        self.push(Op::DeletePrefix {
            prefix: prefix.into(),
        })
    }

    /// Adds an operation after checking its limits.
    pub fn push(&mut self, op: Op) -> Result<()> {
        let too_large = |what, actual, limit| Error::TooLarge {
            what,
            actual,
            limit,
        };
        if op.key().len() > KEY_BYTES_MAX {
            return Err(too_large("key", op.key().len(), KEY_BYTES_MAX));
        }
        if op.value().len() > VALUE_BYTES_MAX {
            return Err(too_large("value", op.value().len(), VALUE_BYTES_MAX));
        }
        let bytes = self.bytes + op.encoded_bytes();
        if bytes > BATCH_BYTES_MAX {
            return Err(too_large("batch", bytes, BATCH_BYTES_MAX));
        }
        self.bytes = bytes;
        self.ops.push(op);
        Ok(())
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

/// What a table knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(Arc<[u8]>),
    Deleted,
    Unknown,
}

/// Writes since the last checkpoint. Entries hold the latest state of each key; prefix
/// tombstones hide older tables' keys. An entry written after a prefix tombstone survives it
/// (the tombstone removed the entries it covered when it was applied).
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    pub(crate) entries: BTreeMap<Vec<u8>, Option<Arc<[u8]>>>,
    pub(crate) prefix_tombstones: Vec<Vec<u8>>,
    pub(crate) bytes: usize,
}

impl Memtable {
    pub(crate) fn apply(&mut self, op: &Op) {
        self.bytes += op.encoded_bytes();
        match op {
            Op::Put { key, value } => {
                self.entries
                    .insert(key.clone(), Some(Arc::from(value.as_slice())));
            }
            Op::Delete { key } => {
                self.entries.insert(key.clone(), None);
            }
            Op::DeletePrefix { prefix } => {
                let doomed: Vec<Vec<u8>> =
                    keys_with_prefix(&self.entries, prefix).cloned().collect();
                for key in doomed {
                    self.entries.remove(&key);
                }
                self.prefix_tombstones.push(prefix.clone());
            }
        }
    }

    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup {
        match self.entries.get(key) {
            Some(Some(value)) => Lookup::Found(Arc::clone(value)),
            Some(None) => Lookup::Deleted,
            None if self.prefix_tombstones.iter().any(|p| key.starts_with(p)) => Lookup::Deleted,
            None => Lookup::Unknown,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.prefix_tombstones.is_empty()
    }
}

/// Keys of `map` that start with `prefix`, in order.
pub(crate) fn keys_with_prefix<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    prefix: &'a [u8],
) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
    map.range::<[u8], _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .map(|(k, _)| k)
    .take_while(move |k| k.starts_with(prefix))
}
