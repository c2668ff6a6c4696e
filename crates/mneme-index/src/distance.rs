//! Dot products and scalar quantisation, the inner loops of every search.
//!
//! SIMD: plain Rust written so that it autovectorises (independent accumulator lanes, exact
//! chunks), compiled by `multiversion` for AVX2+FMA and SSE4.1 with a runtime CPU check and a
//! portable fallback. No `unsafe` here.

use multiversion::multiversion;

use crate::IndexError;

const LANES: usize = 16;

/// Dot product of two equally long f32 slices.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += x * y;
    }
    sum
}

/// Dot product of two equally long i8 slices, exact in i32 (dimensions ≤ 2^17): in
/// AVX-512 intrinsics where the CPU has AVX-512BW and VNNI, else [`dot_i8_portable`].
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    crate::native::dot_i8_avx512(a, b).unwrap_or_else(|| dot_i8_portable(a, b))
}

/// [`dot_i8`] in plain Rust the compiler vectorises.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1"))]
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += i32::from(x[l]) * i32::from(y[l]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// Checks that every component is finite and the vector is not zero, then scales it to
/// unit length in place (idempotent: a unit vector is left bit for bit as it is).
pub fn normalize(v: &mut [f32]) -> Result<(), IndexError> {
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::NotFinite { index });
    }
    // In f64, summed in order: no finite f32 vector overflows (3e38² · 4096 < 1.8e308) or
    // underflows (1e-45² > 5e-324) here, and the result is the same on every CPU, so
    // replicas normalising the same input agree bit for bit.
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return Err(IndexError::ZeroVector);
    }
    // Already unit length (within f32 rounding): leave the bits alone, so normalising is
    // idempotent and exported vectors re-import bit for bit.
    if (norm - 1.0).abs() > 1e-6 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    Ok(())
}

/// Quantises `v` to i8 codes with one scale per vector: `v[i] ≈ codes[i] · scale`.
pub fn quantize(v: &[f32], codes: &mut Vec<i8>) -> f32 {
    let max_abs = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max_abs == 0.0 {
        codes.extend(std::iter::repeat_n(0i8, v.len()));
        return 0.0;
    }
    let inv = 127.0 / max_abs;
    codes.extend(
        v.iter()
            .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8),
    );
    max_abs / 127.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_naive_sum_for_every_length() {
        for n in (0..70).chain([383, 384, 385, 1024]) {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n = {n}");
            let qa: Vec<i8> = (0..n).map(|i| (i * 7 % 255) as i8).collect();
            let qb: Vec<i8> = (0..n).map(|i| (i * 13 % 255) as i8).collect();
            let naive: i32 = qa
                .iter()
                .zip(&qb)
                .map(|(x, y)| i32::from(*x) * i32::from(*y))
                .sum();
            assert_eq!(dot_i8(&qa, &qb), naive, "n = {n}");
            assert_eq!(dot_i8_portable(&qa, &qb), naive, "n = {n}");
        }
    }

    #[test]
    fn normalize_rejects_nan_inf_and_zero() {
        assert_eq!(
            normalize(&mut [1.0, f32::NAN]),
            Err(IndexError::NotFinite { index: 1 })
        );
        assert_eq!(
            normalize(&mut [f32::INFINITY]),
            Err(IndexError::NotFinite { index: 0 })
        );
        assert_eq!(normalize(&mut [0.0, 0.0]), Err(IndexError::ZeroVector));
        let mut v = [3.0, 4.0];
        normalize(&mut v).unwrap();
        assert_eq!(v, [0.6, 0.8]);
    }

    #[test]
    fn normalize_handles_finite_vectors_whose_squared_norm_overflows_or_underflows() {
        for x in [3e38f32, 1e-25, 1e-44, f32::MIN_POSITIVE] {
            let mut v = vec![x; 384];
            normalize(&mut v).unwrap_or_else(|e| panic!("{x}: {e}"));
            let norm: f64 = v.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{x}: norm {norm}");
            assert!(v.iter().all(|y| (*y - v[0]).abs() < 1e-7));
        }
        let mut v = vec![-3e38f32, 3e38];
        normalize(&mut v).unwrap();
        assert!((v[0] + std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn quantized_dot_approximates_the_real_one() {
        let a: Vec<f32> = (0..384)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 500.0)
            .collect();
        let b: Vec<f32> = (0..384)
            .map(|i| ((i * 17 % 89) as f32 - 44.0) / 500.0)
            .collect();
        let (mut qa, mut qb) = (Vec::new(), Vec::new());
        let sa = quantize(&a, &mut qa);
        let sb = quantize(&b, &mut qb);
        let approx = dot_i8(&qa, &qb) as f32 * sa * sb;
        assert!(
            (approx - dot(&a, &b)).abs() < 2e-3,
            "{approx} vs {}",
            dot(&a, &b)
        );
    }
}
