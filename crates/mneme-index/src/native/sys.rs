//! The index's `unsafe` operations, kept here so the rest is safe code: mapping a snapshot
//! file read-only, prefetching a vector's cache lines, asking for huge pages, and the int8
//! dot product in AVX-512 intrinsics.

use std::fs::File;
use std::io;
use std::path::Path;

/// Asks the CPU to start loading the cache lines of `bytes` (up to `lines` of 64 bytes).
/// A hint only: it never faults, changes no memory and has no effect on results.
#[inline(always)]
pub(crate) fn prefetch<T>(bytes: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let per_line = (64 / std::mem::size_of::<T>().max(1)).max(1);
        let lines = lines.min(bytes.len().div_ceil(per_line));
        for line in 0..lines {
            let p = bytes[line * per_line..].as_ptr();
            #[expect(
                unsafe_code,
                reason = "the intrinsic is `unsafe` only for its target feature"
            )]
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the
            // x86_64 baseline this crate is compiled for). A prefetch is a hint: it does not
            // dereference the pointer architecturally, cannot fault, and `p` points into a
            // live slice anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bytes, lines);
    }
}

/// Asks the kernel to back the whole pages of `buf`'s allocation (its full capacity) with
/// transparent huge pages. Graph searches touch a few thousand random points of buffers
/// that reach gigabytes; with 4 KiB pages nearly every touch is also a TLB miss. A hint
/// only: failure (or a kernel without THP) changes nothing.
pub(crate) fn advise_huge_pages<T>(buf: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = buf.as_ptr() as usize;
        let end = start + buf.capacity() * std::mem::size_of::<T>();
        let (first, last) = (start.next_multiple_of(PAGE), end / PAGE * PAGE);
        if last <= first || last - first < 2 << 20 {
            return;
        }
        #[expect(unsafe_code, reason = "a system call on an address range")]
        // SAFETY: `first..last` lies inside the allocation `buf` owns (page-aligned inward),
        // and MADV_HUGEPAGE changes neither the contents nor the validity of any mapping:
        // it only lets the kernel use 2 MiB pages for it. The result is ignored (a hint).
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = buf;
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

/// `Σ a[i]·b[i]` over the common length of two i8 slices in AVX-512 (BW and VNNI), or
/// `None` when this CPU lacks either (the caller's portable kernel then runs). About twice
/// the speed of the portable kernel at 384 dimensions (BENCHMARKS.md); compiling that one
/// for AVX-512 as well left its loop in 256-bit registers (checked in the generated code).
#[inline]
pub(crate) fn dot_i8_avx512(a: &[i8], b: &[i8]) -> Option<i32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        #[expect(unsafe_code, reason = "calling a target-feature function")]
        // SAFETY: the CPU has AVX-512BW and AVX-512 VNNI (detected just above), the only
        // requirement of `dot_i8_vnni` beyond its safe signature.
        return Some(unsafe { dot_i8_vnni(a, b) });
    }
    let _ = (a, b);
    None
}

/// 32 codes widened to i16 per register, pairs of products summed into 16 i32 lanes by
/// `vpdpwssd` (exact: a pair is at most 2 · 128², far from overflowing), four
/// accumulators so consecutive multiply-adds do not wait on each other.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,avx512vnni")]
fn dot_i8_vnni(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::{
        __m256i, __m512i, _mm256_loadu_si256, _mm512_add_epi32, _mm512_cvtepi8_epi16,
        _mm512_dpwssd_epi32, _mm512_reduce_add_epi32, _mm512_setzero_si512,
    };
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn widen(codes: &[i8; 32]) -> __m512i {
        #[expect(unsafe_code, reason = "an unaligned 32-byte load")]
        // SAFETY: `codes` is exactly the 32 bytes read; the load is unaligned.
        let bytes = unsafe { _mm256_loadu_si256(codes.as_ptr().cast::<__m256i>()) };
        _mm512_cvtepi8_epi16(bytes)
    }
    let n = a.len().min(b.len());
    let (a, b) = (a[..n].as_chunks::<32>(), b[..n].as_chunks::<32>());
    let mut acc = [_mm512_setzero_si512(); 4];
    let (quads, rest) = a.0.as_chunks::<4>();
    let (quads_b, rest_b) = b.0.as_chunks::<4>();
    for (x, y) in quads.iter().zip(quads_b) {
        for i in 0..4 {
            acc[i] = _mm512_dpwssd_epi32(acc[i], widen(&x[i]), widen(&y[i]));
        }
    }
    for (i, (x, y)) in rest.iter().zip(rest_b).enumerate() {
        acc[i] = _mm512_dpwssd_epi32(acc[i], widen(x), widen(y));
    }
    let sum = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    let tail: i32 =
        a.1.iter()
            .zip(b.1)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum();
    _mm512_reduce_add_epi32(sum) + tail
}
