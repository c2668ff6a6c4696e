//! The read side: memtables over the key directory of the append log, and [`Value`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::frame::frame_bytes;
use crate::memtable::{Lookup, Memtable, keys_with_prefix};
use crate::vfs::MappedBytes;

/// Where a live value sits in the append log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u64,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// One sealed, mapped append-log segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) map: Arc<dyn MappedBytes>,
    /// Bytes of frames still referenced by the key directory.
    pub(crate) live_bytes: u64,
}

/// Everything a read consults, newest first: active memtable, frozen memtable (being
/// checkpointed), then the key directory of the append log.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) active: Memtable,
    pub(crate) frozen: Option<Arc<Memtable>>,
    pub(crate) keydir: BTreeMap<Vec<u8>, Loc>,
    pub(crate) segments: BTreeMap<u64, Segment>,
}

/// A value read from the store: shared memory or a slice of a mapped segment, without a copy.
#[derive(Clone)]
pub struct Value(Repr);

#[derive(Clone)]
enum Repr {
    Mem(Arc<[u8]>),
    Mapped {
        map: Arc<dyn MappedBytes>,
        offset: usize,
        len: usize,
    },
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Mem(bytes) => bytes,
            Repr::Mapped { map, offset, len } => &map.bytes()[*offset..*offset + *len],
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({} bytes)", self.len())
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Tables {
    pub(crate) fn get(&self, key: &[u8]) -> Option<Value> {
        let memtables = [Some(&self.active), self.frozen.as_deref()];
        for table in memtables.into_iter().flatten() {
            match table.lookup(key) {
                Lookup::Found(bytes) => return Some(Value(Repr::Mem(bytes))),
                Lookup::Deleted => return None,
                Lookup::Unknown => {}
            }
        }
        self.keydir.get(key).map(|loc| self.mapped(*loc))
    }

    fn mapped(&self, loc: Loc) -> Value {
        // The key directory only ever points into published segments (invariant of
        // `publish_segment` and recovery), so the lookup cannot miss.
        let segment = &self.segments[&loc.segment];
        Value(Repr::Mapped {
            map: Arc::clone(&segment.map),
            offset: loc.offset,
            len: loc.len,
        })
    }

    pub(crate) fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Value)> {
        let mut out: BTreeMap<Vec<u8>, Value> = keys_with_prefix(&self.keydir, prefix)
            .map(|k| (k.clone(), self.mapped(self.keydir[k])))
            .collect();
        for table in [self.frozen.as_deref(), Some(&self.active)]
            .into_iter()
            .flatten()
        {
            for tomb in &table.prefix_tombstones {
                if tomb.starts_with(prefix) || prefix.starts_with(tomb) {
                    let longer = if tomb.len() > prefix.len() {
                        tomb
                    } else {
                        prefix
                    };
                    let doomed: Vec<Vec<u8>> = keys_with_prefix(&out, longer).cloned().collect();
                    for k in doomed {
                        out.remove(&k);
                    }
                }
            }
            for key in keys_with_prefix(&table.entries, prefix) {
                match &table.entries[key] {
                    Some(bytes) => {
                        out.insert(key.clone(), Value(Repr::Mem(Arc::clone(bytes))));
                    }
                    None => {
                        out.remove(key);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// Points `key` at `loc`, counting whatever it replaces as dead.
    pub(crate) fn keydir_put(&mut self, key: &[u8], loc: Loc) {
        let old = self.keydir.insert(key.to_vec(), loc);
        self.count_dead(key.len(), old);
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.live_bytes += frame_bytes(key.len(), loc.len) as u64;
        }
    }

    pub(crate) fn keydir_delete(&mut self, key: &[u8]) {
        let old = self.keydir.remove(key);
        self.count_dead(key.len(), old);
    }

    pub(crate) fn keydir_delete_prefix(&mut self, prefix: &[u8]) {
        let doomed: Vec<Vec<u8>> = keys_with_prefix(&self.keydir, prefix).cloned().collect();
        for key in doomed {
            self.keydir_delete(&key);
        }
    }

    fn count_dead(&mut self, key_len: usize, old: Option<Loc>) {
        if let Some(seg) = old.and_then(|old| {
            let bytes = frame_bytes(key_len, old.len) as u64;
            self.segments.get_mut(&old.segment).map(|seg| (seg, bytes))
        }) {
            seg.0.live_bytes = seg.0.live_bytes.saturating_sub(seg.1);
        }
    }

    pub(crate) fn log_bytes(&self) -> (u64, u64) {
        self.segments.values().fold((0, 0), |(total, live), s| {
            (total + s.map.bytes().len() as u64, live + s.live_bytes)
        })
    }
}
