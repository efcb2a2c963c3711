//! The two f32 matrix products of a logistic-regression evaluation, for few outputs (classes) and many
//! rows: `Z = X·Wᵀ` (scores) and `G = Rᵀ·X` (gradient). General GEMM kernels pad a handful of outputs to
//! their panel width and copy (pack) every row block first; these read rows in place and keep every
//! accumulator in a register. With AVX2 and FMA (checked at run time) they use 8-lane intrinsics;
//! elsewhere they fall back to ndarray's products.

use ndarray::{Array2, ArrayView2};

/// `x · wᵀ`: `x` rows × d, `w` outputs × d, both row-major; returns rows × outputs.
pub(crate) fn scores(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
    #[cfg(target_arch = "x86_64")]
    if x.is_standard_layout()
        && w.is_standard_layout()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has AVX2 and FMA (checked above); both arrays are contiguous row-major.
        return unsafe { avx2::scores(x, w) };
    }
    x.dot(&w.t())
}

/// `rᵀ · x`: `r` rows × outputs, `x` rows × d, both row-major; returns outputs × d.
pub(crate) fn gradient(x: ArrayView2<'_, f32>, r: ArrayView2<'_, f32>) -> Array2<f32> {
    #[cfg(target_arch = "x86_64")]
    if x.is_standard_layout()
        && r.is_standard_layout()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: as in `scores`.
        return unsafe { avx2::gradient(x, r) };
    }
    r.t().dot(&x)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use ndarray::{Array2, ArrayView2};

    /// Rows per scores tile; with 3 outputs per tile, 4 × 3 accumulators plus 4 row vectors fill the 16
    /// registers. (The gradient keeps up to 12 outputs' accumulators in registers.)
    const ROWS: usize = 4;
    /// Rows per gradient sweep, so that the sweep's rows stay in L2 while every 8-feature chunk visits them.
    const SWEEP: usize = 128;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Dot products of `R` rows with `O` weight rows over the whole chunks, plus the scalar tail.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const O: usize>(
        x: &[&[f32]; R],
        w: &[&[f32]; O],
        d: usize,
    ) -> [[f32; O]; R] {
        let chunks = d / 8;
        let mut acc = [[_mm256_setzero_ps(); O]; R];
        for j in 0..chunks {
            let mut xv = [_mm256_setzero_ps(); R];
            for r in 0..R {
                // SAFETY: j·8 + 8 ≤ d = the row's length.
                xv[r] = unsafe { _mm256_loadu_ps(x[r].as_ptr().add(j * 8)) };
            }
            for o in 0..O {
                // SAFETY: as above, for the weight row.
                let wv = unsafe { _mm256_loadu_ps(w[o].as_ptr().add(j * 8)) };
                for r in 0..R {
                    acc[r][o] = _mm256_fmadd_ps(xv[r], wv, acc[r][o]);
                }
            }
        }
        let mut out = [[0f32; O]; R];
        for r in 0..R {
            for o in 0..O {
                let tail: f32 = x[r][chunks * 8..]
                    .iter()
                    .zip(&w[o][chunks * 8..])
                    .map(|(a, b)| a * b)
                    .sum();
                out[r][o] = hsum(acc[r][o]) + tail;
            }
        }
        out
    }

    /// Scores for rows `r0..r0+R` and every output, in tiles of up to OUTS outputs.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_group<const R: usize>(
        rows: &[&[f32]],
        w_rows: &[&[f32]],
        r0: usize,
        d: usize,
        z: &mut Array2<f32>,
    ) {
        let x: [&[f32]; R] = std::array::from_fn(|r| rows[r0 + r]);
        let k = w_rows.len();
        let mut o0 = 0;
        while o0 < k {
            macro_rules! outs {
                ($o:literal) => {{
                    let w: [&[f32]; $o] = std::array::from_fn(|o| w_rows[o0 + o]);
                    // SAFETY: every row has length d.
                    let t = unsafe { tile::<R, $o>(&x, &w, d) };
                    for r in 0..R {
                        for o in 0..$o {
                            z[[r0 + r, o0 + o]] = t[r][o];
                        }
                    }
                    o0 += $o;
                }};
            }
            match k - o0 {
                1 => outs!(1),
                2 => outs!(2),
                _ => outs!(3),
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` and `w` must be in standard layout.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
        let (n, d) = x.dim();
        let k = w.nrows();
        let mut z = Array2::<f32>::zeros((n, k));
        if k == 0 || n == 0 {
            return z;
        }
        let rows: Vec<&[f32]> = x
            .rows()
            .into_iter()
            .map(|r| r.to_slice().expect("standard layout"))
            .collect();
        let w_rows: Vec<&[f32]> = w
            .rows()
            .into_iter()
            .map(|r| r.to_slice().expect("standard layout"))
            .collect();
        let mut r0 = 0;
        while r0 < n {
            // SAFETY: rows have length d; the caller guarantees the CPU features.
            unsafe {
                match n - r0 {
                    1 => row_group::<1>(&rows, &w_rows, r0, d, &mut z),
                    2 => row_group::<2>(&rows, &w_rows, r0, d, &mut z),
                    3 => row_group::<3>(&rows, &w_rows, r0, d, &mut z),
                    _ => row_group::<ROWS>(&rows, &w_rows, r0, d, &mut z),
                }
            }
            r0 += (n - r0).min(ROWS);
        }
        z
    }

    /// Gradient accumulation for outputs `o0..o0+O` over one sweep of rows.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sweep<const O: usize>(
        rows: &[&[f32]],
        r: &[f32],
        k: usize,
        o0: usize,
        d: usize,
        g: &mut [f32],
    ) {
        let chunks = d / 8;
        for j in 0..chunks {
            // SAFETY: g is k × d row-major and (o0 + o)·d + j·8 + 8 ≤ k·d.
            let mut acc: [__m256; O] = std::array::from_fn(|o| unsafe {
                _mm256_loadu_ps(g.as_ptr().add((o0 + o) * d + j * 8))
            });
            for (i, row) in rows.iter().enumerate() {
                // SAFETY: j·8 + 8 ≤ d.
                let xv = unsafe { _mm256_loadu_ps(row.as_ptr().add(j * 8)) };
                for o in 0..O {
                    let rv = _mm256_set1_ps(r[i * k + o0 + o]);
                    acc[o] = _mm256_fmadd_ps(rv, xv, acc[o]);
                }
            }
            for (o, a) in acc.iter().enumerate() {
                // SAFETY: as for the loads.
                unsafe { _mm256_storeu_ps(g.as_mut_ptr().add((o0 + o) * d + j * 8), *a) };
            }
        }
        for (i, row) in rows.iter().enumerate() {
            for o in 0..O {
                let rv = r[i * k + o0 + o];
                for f in chunks * 8..d {
                    g[(o0 + o) * d + f] += rv * row[f];
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `x` and `r` must be in standard layout.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gradient(x: ArrayView2<'_, f32>, r: ArrayView2<'_, f32>) -> Array2<f32> {
        let (n, d) = x.dim();
        let k = r.ncols();
        let mut g = vec![0f32; k * d];
        let rows: Vec<&[f32]> = x
            .rows()
            .into_iter()
            .map(|r| r.to_slice().expect("standard layout"))
            .collect();
        let r = r.as_slice().expect("standard layout");
        for s0 in (0..n).step_by(SWEEP) {
            let s1 = (s0 + SWEEP).min(n);
            let mut o0 = 0;
            while o0 < k {
                let left = k - o0;
                macro_rules! outs {
                    ($o:literal) => {{
                        // SAFETY: shapes as documented; CPU features guaranteed by the caller.
                        unsafe { sweep::<$o>(&rows[s0..s1], &r[s0 * k..s1 * k], k, o0, d, &mut g) };
                        o0 += $o;
                    }};
                }
                match left {
                    1 => outs!(1),
                    2 => outs!(2),
                    3 => outs!(3),
                    4 => outs!(4),
                    5 => outs!(5),
                    6 => outs!(6),
                    7 => outs!(7),
                    8 => outs!(8),
                    9 => outs!(9),
                    10 => outs!(10),
                    11 => outs!(11),
                    _ => outs!(12),
                }
            }
        }
        Array2::from_shape_vec((k, d), g).expect("k × d")
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    #[test]
    fn kernels_match_ndarray_products_for_every_small_shape() {
        for n in [1, 3, 4, 5, 9, 130, 260] {
            for d in [1, 7, 8, 9, 17, 40] {
                for k in [1, 2, 3, 4, 10, 13] {
                    let x =
                        Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
                    let w = Array2::from_shape_fn((k, d), |(i, j)| {
                        ((i * 5 + j) % 7) as f32 * 0.5 - 1.0
                    });
                    let r = Array2::from_shape_fn((n, k), |(i, j)| ((i + j * 3) % 5) as f32 - 2.0);
                    let z = scores(x.view(), w.view());
                    let expected = x.dot(&w.t());
                    assert_eq!(z, expected, "scores n={n} d={d} k={k}");
                    let g = gradient(x.view(), r.view());
                    let expected = r.t().dot(&x);
                    assert_eq!(g, expected, "gradient n={n} d={d} k={k}");
                }
            }
        }
    }
}
