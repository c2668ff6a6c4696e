//! The only module that maps files into memory, and so the only one allowed `unsafe`.
//!
//! The contract (see `docs/safety.md`): a file is mapped only after every byte of it was
//! written and `fdatasync`ed, and from then on nothing in this process writes to it,
//! truncates it or reopens it for writing. Installed snapshot files, and WAL segments that
//! recovery has sealed (replay), are the only files mapped. Removing a mapped file (a replaced snapshot) is fine on POSIX: the mapping
//! keeps the inode alive until the last `Arc` to it drops.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::vfs::MappedBytes;

/// A read-only memory map of a whole, immutable file.
#[derive(Debug)]
pub(crate) struct ReadOnlyMap {
    map: memmap2::Mmap,
}

impl ReadOnlyMap {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        #[expect(
            unsafe_code,
            reason = "memmap2 cannot prove the file is not changed by others"
        )]
        // SAFETY: only installed snapshots are mapped: they were fully written and synced
        // before being published in the manifest, and this process never writes to,
        // truncates or reopens them for writing afterwards. The data directory is held under
        // an exclusive lock, so no other Mneme process writes them either. A foreign process
        // modifying the files behind our back is outside the contract (docs/safety.md).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self { map })
    }
}

impl MappedBytes for ReadOnlyMap {
    fn bytes(&self) -> &[u8] {
        &self.map
    }
}
