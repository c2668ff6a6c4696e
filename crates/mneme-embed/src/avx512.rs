//! The MiniLM dense kernels in AVX-512 intrinsics, and the only `unsafe` of this crate:
//! unaligned loads and stores, bit-casts between 512-bit register types, and calls of
//! `#[target_feature]` functions. Those calls take a proof ([`Avx512F`], [`Bf16Dot`]) that
//! only run-time feature detection constructs, so the safe wrappers cannot be reached on a
//! CPU without the features. Built with the `minilm` feature on x86_64.

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_and_si512, _mm512_castsi512_ps, _mm512_dpbf16_ps,
    _mm512_fmadd_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_slli_epi32, _mm512_storeu_ps,
};

use crate::minilm::{COLS, TOKENS};

/// Proof that this CPU has AVX-512F.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512F(());

impl Avx512F {
    pub(crate) fn detect() -> Option<Self> {
        std::arch::is_x86_feature_detected!("avx512f").then_some(Self(()))
    }
}

/// Proof that this CPU has AVX-512F and AVX-512 BF16.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bf16Dot(());

impl Bf16Dot {
    pub(crate) fn detect() -> Option<Self> {
        (std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16"))
        .then_some(Self(()))
    }
}

/// `minilm::dense_panels` for f32 activations in 512-bit registers (see [`f32_kernel`]).
pub(crate) fn dense_f32(
    _: Avx512F,
    tokens: &[f32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    #[expect(unsafe_code, reason = "calling a target-feature function")]
    // SAFETY: an `Avx512F` exists only when the CPU has AVX-512F, the only requirement of
    // `f32_kernel` beyond its safe signature.
    unsafe {
        f32_kernel(tokens, t, pairs, panels, cols, out);
    }
}

/// `minilm::dense_panels` for bfloat16 activation pairs (see [`bf16_kernel`]).
pub(crate) fn dense_bf16(
    _: Bf16Dot,
    tokens: &[u32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    #[expect(unsafe_code, reason = "calling a target-feature function")]
    // SAFETY: a `Bf16Dot` exists only when the CPU has AVX-512F and AVX-512 BF16, the only
    // requirement of `bf16_kernel` beyond its safe signature.
    unsafe {
        bf16_kernel(tokens, t, pairs, panels, cols, out);
    }
}

/// The 16 words of a panel at input pair `i`: one register.
#[inline]
#[target_feature(enable = "avx512f")]
fn load(panel: &[u32], i: usize) -> __m512i {
    let w = &panel[i * COLS..(i + 1) * COLS];
    #[expect(unsafe_code, reason = "an unaligned 64-byte load")]
    // SAFETY: `w` is 16 `u32`s, exactly the 64 bytes read; the load is unaligned.
    unsafe {
        _mm512_loadu_si512(w.as_ptr().cast::<__m512i>())
    }
}

/// Writes the first `cols - c0` lanes (at most 16) of `acc` to row `m` of `out` at `c0`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store(acc: __m512, out: &mut [f32], cols: usize, m: usize, c0: usize) {
    let mut lanes = [0f32; COLS];
    #[expect(unsafe_code, reason = "an unaligned 64-byte store")]
    // SAFETY: `lanes` is 16 `f32`s, exactly the 64 bytes written.
    unsafe {
        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
    }
    let width = COLS.min(cols - c0);
    out[m * cols + c0..][..width].copy_from_slice(&lanes[..width]);
}

/// Walks the panels two at a time (a last odd one alone) against every group of
/// [`TOKENS`] token rows, calling `step(accumulators, panel words, group, pair)` per input
/// pair, then stores the accumulators: 12 of the 32 registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn walk<X>(
    tokens: &[X],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
    step: impl Fn(&mut [__m512; TOKENS], __m512i, &[X], usize),
) {
    let group_len = tokens.len() / t.div_ceil(TOKENS).max(1);
    let count = panels.len() / (pairs * COLS);
    let panel = |p: usize| &panels[p * pairs * COLS..(p + 1) * pairs * COLS];
    let mut p = 0;
    while p < count {
        let pair = p + 1 < count;
        for (g, group) in tokens.chunks_exact(group_len).enumerate() {
            let mut a0 = [_mm512_setzero_ps(); TOKENS];
            let mut a1 = [_mm512_setzero_ps(); TOKENS];
            for i in 0..pairs {
                step(&mut a0, load(panel(p), i), group, i);
                if pair {
                    step(&mut a1, load(panel(p + 1), i), group, i);
                }
            }
            let m0 = g * TOKENS;
            for j in 0..TOKENS.min(t - m0) {
                store(a0[j], out, cols, m0 + j, p * COLS);
                if pair {
                    store(a1[j], out, cols, m0 + j, (p + 1) * COLS);
                }
            }
        }
        p += if pair { 2 } else { 1 };
    }
}

/// f32 activations: a panel word holds two bfloat16 weights, widened to two registers of
/// f32 by a shift (input `2i`) and a mask (input `2i + 1`), each multiplied into
/// broadcast inputs with f32 FMAs. The compiler's own vectorisation of the portable kernel
/// keeps to 256-bit registers even when AVX-512 is enabled, hence the intrinsics. Same
/// results as the portable kernel up to the order of the f32 sums (tested).
#[target_feature(enable = "avx512f")]
fn f32_kernel(
    tokens: &[f32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    let high = _mm512_set1_epi32(0xffff_0000_u32.cast_signed());
    walk(
        tokens,
        t,
        pairs,
        panels,
        cols,
        out,
        #[inline(always)]
        |acc, w, group, i| {
            let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w));
            let odd = _mm512_castsi512_ps(_mm512_and_si512(w, high));
            let xs = &group[2 * i * TOKENS..(2 * i + 2) * TOKENS];
            for j in 0..TOKENS {
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(xs[j]), even, acc[j]);
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(xs[TOKENS + j]), odd, acc[j]);
            }
        },
    );
}

/// bfloat16 activations: each step broadcasts a token's pair of inputs (one 32-bit word)
/// and `vdpbf16ps` adds both products to 16 f32 sums, twice the multiply-adds of an f32
/// FMA per instruction.
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_kernel(
    tokens: &[u32],
    t: usize,
    pairs: usize,
    panels: &[u32],
    cols: usize,
    out: &mut [f32],
) {
    walk(
        tokens,
        t,
        pairs,
        panels,
        cols,
        out,
        #[inline(always)]
        |acc, w, group, i| {
            let w = bits(w);
            let xs = &group[i * TOKENS..(i + 1) * TOKENS];
            for j in 0..TOKENS {
                let x = bits(_mm512_set1_epi32(xs[j].cast_signed()));
                acc[j] = _mm512_dpbf16_ps(acc[j], x, w);
            }
        },
    );
}

/// The same 512 bits as 32 bfloat16.
#[inline]
#[target_feature(enable = "avx512f")]
fn bits(v: __m512i) -> __m512bh {
    #[expect(unsafe_code, reason = "a bit-cast between two 512-bit register types")]
    // SAFETY: both types are 64 bytes of plain data, every bit pattern valid in each.
    unsafe {
        std::mem::transmute::<__m512i, __m512bh>(v)
    }
}
