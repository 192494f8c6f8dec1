//! Cosine similarity of two vectors stored as f32 or f16, the arithmetic of `cosine_sim`.
//!
//! The sums run in `LANES` independent partial sums (lane `l` adds the products of elements
//! `l`, `l + LANES`, ...), each product rounded to f32 and then added, and the lanes are summed
//! in order at the end. Where the CPU has AVX and F16C, the lanes are four 256-bit registers
//! per sum and f16 is widened inside the loop; elsewhere plain loops do the same operations
//! in the same order. Both give the same bits: a similarity does not depend on the machine
//! or the path that computed it.

use half::f16;

/// Independent partial sums of each dot product (a single running sum is one long chain of
/// dependent additions).
pub const LANES: usize = 32;

/// A vector's values as stored.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl Row<'_> {
    fn len(&self) -> usize {
        match self {
            Row::F32(v) => v.len(),
            Row::F16(v) => v.len(),
        }
    }

    /// The values from `i` on.
    fn from(&self, i: usize) -> Row<'_> {
        match self {
            Row::F32(v) => Row::F32(&v[i..]),
            Row::F16(v) => Row::F16(&v[i..]),
        }
    }

    /// The values as f32, in `buf` when they have to be widened.
    fn widened<'b>(&'b self, buf: &'b mut Vec<f32>) -> &'b [f32] {
        match self {
            Row::F32(v) => v,
            Row::F16(v) => {
                use half::slice::HalfFloatSliceExt;
                buf.resize(v.len(), 0.0);
                v.convert_to_f32_slice(buf);
                buf
            }
        }
    }
}

/// The lane sums of x.y, x.x and y.y.
struct Sums {
    d: [f32; LANES],
    nx: [f32; LANES],
    ny: [f32; LANES],
}

impl Sums {
    fn new() -> Sums {
        Sums {
            d: [0.0; LANES],
            nx: [0.0; LANES],
            ny: [0.0; LANES],
        }
    }

    /// Adds `x` and `y` from lane 0 (whole chunks of `LANES`, then a remainder).
    fn add(&mut self, x: &[f32], y: &[f32]) {
        for (p, q) in x.chunks(LANES).zip(y.chunks(LANES)) {
            for (l, (p, q)) in p.iter().zip(q).enumerate() {
                self.d[l] += p * q;
                self.nx[l] += p * p;
                self.ny[l] += q * q;
            }
        }
    }

    fn cosine(&self) -> f32 {
        let sum = |v: &[f32; LANES]| v.iter().sum::<f32>();
        let (d, nx, ny) = (sum(&self.d), sum(&self.nx), sum(&self.ny));
        let den = (nx * ny).sqrt();
        if den > 0.0 {
            d / den
        } else {
            f32::NAN
        }
    }
}

/// Cosine similarity of two rows of equal length; NaN when either has no direction. `bufs`
/// hold widened values between calls.
pub fn cosine(x: Row, y: Row, bufs: &mut (Vec<f32>, Vec<f32>)) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sums = Sums::new();
    #[cfg(target_arch = "x86_64")]
    if let Some(whole) = x86::sums(x, y, &mut sums) {
        if whole < x.len() {
            let (x, y) = (x.from(whole), y.from(whole));
            sums.add(x.widened(&mut bufs.0), y.widened(&mut bufs.1));
        }
        return sums.cosine();
    }
    let (x, y) = (x.widened(&mut bufs.0), y.widened(&mut bufs.1));
    sums.add(x, y);
    sums.cosine()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{f16, Row, Sums, LANES};

    /// Registers per sum.
    const REGS: usize = LANES / 8;

    /// Adds the whole chunks of `LANES` values of `x` and `y` to `sums` with AVX (and F16C),
    /// when the CPU has them and both rows have the same type; returns how many values that was.
    pub(super) fn sums(x: Row, y: Row, sums: &mut Sums) -> Option<usize> {
        match (x, y) {
            (Row::F32(x), Row::F32(y)) if std::is_x86_feature_detected!("avx") => {
                // SAFETY: the CPU has AVX.
                Some(unsafe { sums_f32(x, y, sums) })
            }
            (Row::F16(x), Row::F16(y))
                if std::is_x86_feature_detected!("avx")
                    && std::is_x86_feature_detected!("f16c") =>
            {
                // SAFETY: the CPU has AVX and F16C.
                Some(unsafe { sums_f16(x, y, sums) })
            }
            _ => None,
        }
    }

    /// The registers of one sum, stored as its lanes.
    #[target_feature(enable = "avx")]
    fn store(regs: [__m256; REGS], lanes: &mut [f32; LANES]) {
        for (r, chunk) in regs.iter().zip(lanes.chunks_exact_mut(8)) {
            let mut v = [0f32; 8];
            // SAFETY: `v` holds 8 f32.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *r) };
            chunk.copy_from_slice(&v);
        }
    }

    /// Accumulates chunk after chunk of `LANES` values; `load(i)` gives the 8 values of both
    /// rows from index `i` as f32.
    #[target_feature(enable = "avx")]
    fn accumulate(
        chunks: usize,
        load: impl Fn(usize) -> (__m256, __m256),
        sums: &mut Sums,
    ) -> usize {
        let zero = _mm256_setzero_ps();
        let (mut d, mut nx, mut ny) = ([zero; REGS], [zero; REGS], [zero; REGS]);
        for c in 0..chunks {
            for r in 0..REGS {
                let (p, q) = load(c * LANES + r * 8);
                d[r] = _mm256_add_ps(d[r], _mm256_mul_ps(p, q));
                nx[r] = _mm256_add_ps(nx[r], _mm256_mul_ps(p, p));
                ny[r] = _mm256_add_ps(ny[r], _mm256_mul_ps(q, q));
            }
        }
        store(d, &mut sums.d);
        store(nx, &mut sums.nx);
        store(ny, &mut sums.ny);
        chunks * LANES
    }

    #[target_feature(enable = "avx")]
    fn sums_f32(x: &[f32], y: &[f32], sums: &mut Sums) -> usize {
        // SAFETY: `accumulate` asks for `i + 8 <= chunks * LANES`, within both rows.
        let at = |v: &[f32], i: usize| unsafe { _mm256_loadu_ps(v.as_ptr().add(i)) };
        accumulate(x.len().min(y.len()) / LANES, |i| (at(x, i), at(y, i)), sums)
    }

    #[target_feature(enable = "avx,f16c")]
    fn sums_f16(x: &[f16], y: &[f16], sums: &mut Sums) -> usize {
        // SAFETY: as above; 8 f16 are one unaligned 128-bit load, widened exactly to f32.
        let at = |v: &[f16], i: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()))
        };
        accumulate(x.len().min(y.len()) / LANES, |i| (at(x, i), at(y, i)), sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain loops alone, for comparison with whatever path `cosine` takes.
    fn plain(x: &[f32], y: &[f32]) -> f32 {
        let mut s = Sums::new();
        s.add(x, y);
        s.cosine()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 20001) as f32 / 10000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_path_gives_the_same_bits_at_any_length() {
        let mut bufs = Default::default();
        for n in [1, 7, 31, 32, 33, 100, 768, 1024, 1031] {
            let (x, y) = (values(n, n as u32), values(n, 7 * n as u32 + 1));
            let want = plain(&x, &y);
            let got = cosine(Row::F32(&x), Row::F32(&y), &mut bufs);
            assert_eq!(got.to_bits(), want.to_bits(), "f32, n = {n}");
            let (hx, hy): (Vec<f16>, Vec<f16>) = (
                x.iter().map(|v| f16::from_f32(*v)).collect(),
                y.iter().map(|v| f16::from_f32(*v)).collect(),
            );
            let (wx, wy): (Vec<f32>, Vec<f32>) = (
                hx.iter().map(|v| v.to_f32()).collect(),
                hy.iter().map(|v| v.to_f32()).collect(),
            );
            let want = plain(&wx, &wy);
            let got = cosine(Row::F16(&hx), Row::F16(&hy), &mut bufs);
            assert_eq!(got.to_bits(), want.to_bits(), "f16, n = {n}");
            // Mixed types take the widened path, to the same value.
            let got = cosine(Row::F16(&hx), Row::F32(&wy), &mut bufs);
            assert_eq!(got.to_bits(), want.to_bits(), "mixed, n = {n}");
        }
    }

    #[test]
    fn cosine_is_close_to_a_direct_f64_computation_and_nan_without_direction() {
        let mut bufs = Default::default();
        let (x, y) = (values(1024, 3), values(1024, 5));
        let dot: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let want = dot / (norm(&x) * norm(&y));
        let got = cosine(Row::F32(&x), Row::F32(&y), &mut bufs) as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let same = cosine(Row::F32(&x), Row::F32(&x), &mut bufs);
        assert!((same - 1.0).abs() < 1e-6, "{same}");
        let zero = vec![0f32; 1024];
        assert!(cosine(Row::F32(&x), Row::F32(&zero), &mut bufs).is_nan());
    }
}
