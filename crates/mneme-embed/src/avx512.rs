//! The MiniLM dense kernel in AVX-512F intrinsics, and the only `unsafe` of this crate:
//! an unaligned load, an unaligned store, and the call of a `#[target_feature]` function
//! after the feature was detected at run time. Built with the `minilm` feature on x86_64.

use crate::minilm::{COLS, TOKENS};

/// Runs [`dense_panels_avx512`] and returns true when the CPU has AVX-512F; returns false
/// (nothing written) otherwise, for the caller's portable kernel.
pub(crate) fn dense_panels(
    packed: &[f32],
    t: usize,
    inp: usize,
    panels: &[u16],
    cols: usize,
    out: &mut [f32],
) -> bool {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    #[expect(
        unsafe_code,
        reason = "calling a target-feature function after detecting the feature"
    )]
    // SAFETY: the CPU has AVX-512F (detected just above), the only requirement of
    // `dense_panels_avx512` beyond its safe signature.
    unsafe {
        dense_panels_avx512(packed, t, inp, panels, cols, out);
    }
    true
}

/// `minilm::dense_panels` in 512-bit registers: a panel's 16 weights are one register, widened
/// from bfloat16 by a shift, and two panels are walked together so each broadcast input
/// feeds two multiply-adds (12 accumulators of the 32 registers). The compiler's own
/// vectorisation of `minilm::panels_kernel` keeps to 256-bit registers even when AVX-512 is
/// enabled, hence the intrinsics. Same results as the portable kernel up to the order of
/// the f32 sums (tested).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dense_panels_avx512(
    packed: &[f32],
    t: usize,
    inp: usize,
    panels: &[u16],
    cols: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::{
        __m256i, __m512, _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32,
        _mm512_fmadd_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32, _mm512_storeu_ps,
    };
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn weights(panel: &[u16], k: usize) -> __m512 {
        let w = &panel[k * COLS..(k + 1) * COLS];
        #[expect(unsafe_code, reason = "an unaligned 32-byte load")]
        // SAFETY: `w` is 16 `u16`s, exactly the 32 bytes read; the load is unaligned.
        let bits = unsafe { _mm256_loadu_si256(w.as_ptr().cast::<__m256i>()) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits)))
    }
    let store = |acc: __m512, out: &mut [f32], m: usize, c0: usize| {
        let mut lanes = [0f32; COLS];
        #[expect(unsafe_code, reason = "an unaligned 64-byte store")]
        // SAFETY: `lanes` is 16 `f32`s, exactly the 64 bytes written.
        unsafe {
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
        }
        let width = COLS.min(cols - c0);
        out[m * cols + c0..][..width].copy_from_slice(&lanes[..width]);
    };
    let count = panels.len() / (inp * COLS);
    let panel = |p: usize| &panels[p * inp * COLS..(p + 1) * inp * COLS];
    let mut p = 0;
    while p < count {
        let pair = p + 1 < count;
        for (g, group) in packed.chunks_exact(inp * TOKENS).enumerate() {
            let mut a0 = [_mm512_setzero_ps(); TOKENS];
            let mut a1 = [_mm512_setzero_ps(); TOKENS];
            for k in 0..inp {
                let xs = &group[k * TOKENS..(k + 1) * TOKENS];
                let w0 = weights(panel(p), k);
                if pair {
                    let w1 = weights(panel(p + 1), k);
                    for j in 0..TOKENS {
                        let x = _mm512_set1_ps(xs[j]);
                        a0[j] = _mm512_fmadd_ps(x, w0, a0[j]);
                        a1[j] = _mm512_fmadd_ps(x, w1, a1[j]);
                    }
                } else {
                    for j in 0..TOKENS {
                        a0[j] = _mm512_fmadd_ps(_mm512_set1_ps(xs[j]), w0, a0[j]);
                    }
                }
            }
            let m0 = g * TOKENS;
            for j in 0..TOKENS.min(t - m0) {
                store(a0[j], out, m0 + j, p * COLS);
                if pair {
                    store(a1[j], out, m0 + j, (p + 1) * COLS);
                }
            }
        }
        p += if pair { 2 } else { 1 };
    }
}
