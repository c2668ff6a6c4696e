//! The native graph's two `unsafe` operations, kept here so the rest of the graph is safe
//! code: mapping a snapshot file read-only, and prefetching a vector's cache lines.

use std::fs::File;
use std::io;
use std::path::Path;

/// Asks the CPU to start loading the cache lines of `bytes` (up to `lines` of 64 bytes).
/// A hint only: it never faults, changes no memory and has no effect on results.
#[inline(always)]
pub(crate) fn prefetch(bytes: &[i8], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let lines = lines.min(bytes.len().div_ceil(64));
        for line in 0..lines {
            let p = bytes[line * 64..].as_ptr();
            #[expect(
                unsafe_code,
                reason = "the intrinsic is `unsafe` only for its target feature"
            )]
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the
            // x86_64 baseline this crate is compiled for). A prefetch is a hint: it does not
            // dereference the pointer architecturally, cannot fault, and `p` points into a
            // live slice anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bytes, lines);
    }
}

/// A read-only mapping of a whole snapshot file.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
}

impl Mapped {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        #[expect(
            unsafe_code,
            reason = "memmap2 cannot prove the file is not changed by others"
        )]
        // SAFETY: graph snapshots are written to a temporary directory, synced and renamed
        // into place, and never modified afterwards; a newer snapshot replaces the directory
        // instead of writing into the file. The mapping lives only while the snapshot is
        // validated and copied into the graph (`persist::load`), and the data directory is
        // held under the engine's exclusive lock, so no other Mneme process writes it. A
        // foreign process modifying the file is outside the contract in docs/safety.md.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self { map })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}
