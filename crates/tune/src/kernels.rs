//! The numeric kernels of graft-tune's encoder, forward and backward: matrix products on faer's GEMM,
//! layer norm, GELU, softmax attention and dropout written out by hand, each over rows in parallel.
//!
//! Every buffer is a row-major slice (`n` token rows × width); every kernel is generic over [`Real`] so the
//! same code runs in float32 for training and in float64 for the central-difference tests.
//!
//! Why by hand (benches/README.md, "Where a fine-tuning epoch goes"): through candle, a full epoch spent
//! a quarter of its CPU in the kernel faulting in freshly allocated outputs, ran element-wise work on one
//! thread and multiplied matrices at a third of PyTorch's rate; faer's GEMM reaches 0.7–0.9 of it.
//!
//! **No subnormal numbers.** Kernels write exact zeros where the mathematics gives numbers below ~1e−22
//! (the far tails of GELU, attention probabilities of masked or hopeless keys): products of such numbers
//! with gradients land in float32's subnormal range, which x86 cores compute in microcode at a small
//! fraction of the normal rate. The first profile of these kernels lost 80% of a full epoch that way
//! (20.8 s against 4.2 s with the CPU told to flush subnormals to zero, which graft does not do: it would
//! change the floating-point mode of threads it does not own).

use faer::{Accum, MatMut, MatRef, Par};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The floating-point types the encoder runs in: float32 (training) and float64 (gradient checks).
pub(crate) trait Real:
    faer::traits::RealField + Copy + Default + Send + Sync + std::iter::Sum + 'static
{
    fn of(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp_(self) -> Self;
    fn sqrt_(self) -> Self;
    fn ln_(self) -> Self;
    /// GELU (the erf form) and its derivative at `self`: `(u·Φ(u), Φ(u) + u·φ(u))`.
    fn gelu_(self) -> (Self, Self);
}

impl Real for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn exp_(self) -> f32 {
        fast::exp(self)
    }
    fn sqrt_(self) -> f32 {
        self.sqrt()
    }
    fn ln_(self) -> f32 {
        self.ln()
    }
    #[inline(always)]
    fn gelu_(self) -> (f32, f32) {
        fast::gelu(self)
    }
}

impl Real for f64 {
    fn of(v: f64) -> f64 {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn exp_(self) -> f64 {
        self.exp()
    }
    fn sqrt_(self) -> f64 {
        self.sqrt()
    }
    fn ln_(self) -> f64 {
        self.ln()
    }
    fn gelu_(self) -> (f64, f64) {
        let cdf = 0.5 * (1.0 + libm::erf(self * std::f64::consts::FRAC_1_SQRT_2));
        let pdf = (-0.5 * self * self).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (self * cdf, cdf + self * pdf)
    }
}

/// Branch-free float32 `exp` and GELU for the element-wise loops: written so that the compiler vectorises
/// them (glibc's `expf` and libm's `erff` are scalar calls with special-case branches; in the first
/// profile of these kernels `expf` alone took a quarter of a training epoch's CPU). Accuracy is pinned by
/// sweeping float32 values against float64 in `tests`.
mod fast {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact for the |n| ≤ 128 used here (Cody and Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    /// Adding and subtracting 1.5 · 2²³ rounds a float32 of magnitude below 2²² to the nearest integer.
    const ROUND: f32 = 12_582_912.0;

    /// `eˣ` to about 2 units in the last place; exactly 0 below −87.3 (where float32 has only
    /// subnormals left), e^88.37 above 88.37 (no infinity: the exponent field stays below 255).
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        let clamped = x.clamp(-87.336_55, 88.37);
        // `shifted`'s low mantissa bits hold n = round(x / ln 2) (as 2²² + n), so 2ⁿ is a shift of them
        // into the exponent field: no float-to-integer conversion, which would keep this loop scalar.
        let shifted = clamped * LOG2_E + ROUND;
        let n = shifted - ROUND;
        let r = (clamped - n * LN2_HI) - n * LN2_LO;
        // Taylor series of eʳ for |r| ≤ ln 2 / 2, to r⁷ (truncation below 5e−9).
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        let scale = f32::from_bits((shifted.to_bits() + 127) << 23);
        if x < -87.336_55 { 0.0 } else { p * scale }
    }

    /// `(u·Φ(u), Φ(u) + u·φ(u))`, with erf from Abramowitz and Stegun 7.1.26 (absolute error below
    /// 1.5e−7), whose `e^(−u²/2)` also gives φ. Beyond |u| = 10 the tails (below 1e−22) are exactly 0, so
    /// that no subnormal number reaches the matrix products (the module's notes say why).
    #[inline(always)]
    pub(super) fn gelu(u: f32) -> (f32, f32) {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [
            0.254_829_6,
            -0.284_496_74,
            1.421_413_7,
            -1.453_152_1,
            1.061_405_4,
        ];
        let x = u.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + P * x);
        let gauss = if x * x > 50.0 { 0.0 } else { exp(-x * x) };
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let erf_abs = 1.0 - poly * gauss;
        let erf = erf_abs.copysign(u);
        let cdf = 0.5 * (1.0 + erf);
        let pdf = gauss * 0.398_942_3; // 1/√(2π)
        (u * cdf, cdf + u * pdf)
    }
}

/// A buffer of `n` values of `T`, zero-filled.
pub(crate) fn zeros<T: Real>(n: usize) -> Vec<T> {
    vec![T::default(); n]
}

/// Products below this many multiply-adds run on the calling thread (splitting them costs more).
const PARALLEL_GEMM: usize = 1 << 18;

fn gemm_par(m: usize, k: usize, n: usize) -> Par {
    if m * k * n < PARALLEL_GEMM || rayon::current_num_threads() < 2 {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

fn view<T: Real>(s: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&s[..rows * cols], rows, cols)
}

fn view_mut<T: Real>(s: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut s[..rows * cols], rows, cols)
}

/// A row-major matrix operand: its values, rows, columns, and whether to use its transpose.
pub(crate) type Operand<'a, T> = (&'a [T], usize, usize, bool);

/// `out = alpha · op(a) · op(b)` into a row-major buffer (replacing it).
pub(crate) fn product<T: Real>(out: &mut [T], a: Operand<'_, T>, b: Operand<'_, T>, alpha: T) {
    fn op<T: Real>((values, rows, cols, transposed): Operand<'_, T>) -> MatRef<'_, T> {
        let m = view(values, rows, cols);
        if transposed { m.transpose() } else { m }
    }
    let (a, b) = (op(a), op(b));
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    faer::linalg::matmul::matmul(
        view_mut(out, m, n),
        Accum::Replace,
        a,
        b,
        alpha,
        gemm_par(m, k, n),
    );
}

/// Rows per rayon task for row-wise kernels.
const ROWS_PER_TASK: usize = 16;

/// `y = x · wᵀ + b` for `x: [n, k]` and a Hugging Face `[m, k]` weight; `y: [n, m]`.
pub(crate) fn linear<T: Real>(x: &[T], w: &[T], b: &[T], n: usize, k: usize) -> Vec<T> {
    let m = b.len();
    let mut y = zeros(n * m);
    y.par_chunks_mut(m * ROWS_PER_TASK).for_each(|rows| {
        rows.chunks_mut(m).for_each(|row| row.copy_from_slice(b));
    });
    faer::linalg::matmul::matmul(
        view_mut(&mut y, n, m),
        Accum::Add,
        view(x, n, k),
        view(w, m, k).transpose(),
        T::of(1.0),
        gemm_par(n, k, m),
    );
    y
}

/// The backward pass of [`linear`]: `dw += dyᵀ · x`, `db += Σ dy`, and `dy · w` into `dx` (replacing or
/// adding to it) when the input's gradient is wanted.
pub(crate) struct LinearGrads<'a, T> {
    pub(crate) dw: &'a mut [T],
    pub(crate) db: &'a mut [T],
}

pub(crate) fn linear_backward<T: Real>(
    dy: &[T],
    x: &[T],
    w: &[T],
    (n, k, m): (usize, usize, usize),
    grads: LinearGrads<'_, T>,
    dx: Option<(&mut [T], Accum)>,
) {
    faer::linalg::matmul::matmul(
        view_mut(grads.dw, m, k),
        Accum::Add,
        view(dy, n, m).transpose(),
        view(x, n, k),
        T::of(1.0),
        gemm_par(m, n, k),
    );
    column_sums_into(dy, m, grads.db);
    if let Some((dx, accum)) = dx {
        faer::linalg::matmul::matmul(
            view_mut(dx, n, k),
            accum,
            view(dy, n, m),
            view(w, m, k),
            T::of(1.0),
            gemm_par(n, m, k),
        );
    }
}

/// `out[j] += Σ_rows x[row, j]`, split over column blocks.
fn column_sums_into<T: Real>(x: &[T], width: usize, out: &mut [T]) {
    const COLUMNS_PER_TASK: usize = 64;
    out.par_chunks_mut(COLUMNS_PER_TASK)
        .enumerate()
        .for_each(|(c, out)| {
            let (start, len) = (c * COLUMNS_PER_TASK, out.len());
            for row in x.chunks(width) {
                for (o, v) in out.iter_mut().zip(&row[start..start + len]) {
                    *o += *v;
                }
            }
        });
}

/// What layer norm's backward pass needs: the normalised input and each row's `1 / σ`.
pub(crate) struct NormTape<T> {
    pub(crate) normed: Vec<T>,
    pub(crate) inv_std: Vec<T>,
}

/// `(x − mean) / sqrt(var + eps) · γ + β` over rows of `gamma.len()` values.
pub(crate) fn layer_norm<T: Real>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    eps: f64,
) -> (Vec<T>, NormTape<T>) {
    let width = gamma.len();
    let rows = x.len() / width;
    let mut y = zeros(x.len());
    let mut normed = zeros(x.len());
    let mut inv_std = zeros(rows);
    let per_task = width * ROWS_PER_TASK;
    y.par_chunks_mut(per_task)
        .zip(normed.par_chunks_mut(per_task))
        .zip(inv_std.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(per_task))
        .for_each(|(((y, normed), inv_std), x)| {
            for (((y, normed), s), x) in y
                .chunks_mut(width)
                .zip(normed.chunks_mut(width))
                .zip(inv_std.iter_mut())
                .zip(x.chunks(width))
            {
                let n = T::of(width as f64);
                let mean = x.iter().copied().sum::<T>() / n;
                let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<T>() / n;
                *s = T::of(1.0) / (var + T::of(eps)).sqrt_();
                for ((((y, h), &v), &g), &b) in y
                    .iter_mut()
                    .zip(normed.iter_mut())
                    .zip(x)
                    .zip(gamma)
                    .zip(beta)
                {
                    *h = (v - mean) * *s;
                    *y = *h * g + b;
                }
            }
        });
    (y, NormTape { normed, inv_std })
}

/// Layer norm's backward pass: returns `dx`, adds to `dgamma` and `dbeta`.
pub(crate) fn layer_norm_backward<T: Real>(
    dy: &[T],
    tape: &NormTape<T>,
    gamma: &[T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> Vec<T> {
    let width = gamma.len();
    for (dy, h) in dy.chunks(width).zip(tape.normed.chunks(width)) {
        for (((dg, db), &d), &h) in dgamma.iter_mut().zip(dbeta.iter_mut()).zip(dy).zip(h) {
            *dg += d * h;
            *db += d;
        }
    }
    let mut dx = zeros(dy.len());
    let per_task = width * ROWS_PER_TASK;
    dx.par_chunks_mut(per_task)
        .zip(dy.par_chunks(per_task))
        .zip(tape.normed.par_chunks(per_task))
        .zip(tape.inv_std.par_chunks(ROWS_PER_TASK))
        .for_each(|(((dx, dy), normed), inv_std)| {
            for (((dx, dy), h), &s) in dx
                .chunks_mut(width)
                .zip(dy.chunks(width))
                .zip(normed.chunks(width))
                .zip(inv_std)
            {
                let n = T::of(width as f64);
                let (mut mean_g, mut mean_gh) = (T::default(), T::default());
                for ((&d, &g), &h) in dy.iter().zip(gamma).zip(h) {
                    mean_g += d * g;
                    mean_gh += d * g * h;
                }
                mean_g /= n;
                mean_gh /= n;
                for (((dx, &d), &g), &h) in dx.iter_mut().zip(dy).zip(gamma).zip(h) {
                    *dx = s * (d * g - mean_g - h * mean_gh);
                }
            }
        });
    dx
}

/// GELU (the erf form): returns the activation and its slope at each input, which the backward pass
/// multiplies by. Plain loops over chunks: the compiler vectorises them (a rayon `map`/`unzip` per value
/// did not, and took 4× as long).
pub(crate) fn gelu<T: Real>(u: &[T]) -> (Vec<T>, Vec<T>) {
    const CHUNK: usize = 4096;
    let mut out = zeros(u.len());
    let mut slope = zeros(u.len());
    out.par_chunks_mut(CHUNK)
        .zip(slope.par_chunks_mut(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((out, slope), u)| {
            for ((o, s), &u) in out.iter_mut().zip(slope.iter_mut()).zip(u) {
                (*o, *s) = u.gelu_();
            }
        });
    (out, slope)
}

/// `a ⊙= b`, element by element (GELU's backward pass, with `b` its slopes).
pub(crate) fn multiply_into<T: Real>(a: &mut [T], b: &[T]) {
    a.par_chunks_mut(MASK_CHUNK)
        .zip(b.par_chunks(MASK_CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a *= b));
}

/// Values per independently seeded stretch of a dropout mask: the mask does not depend on the threads.
const MASK_CHUNK: usize = 8192;

/// A dropout mask (1 keep, 0 drop) of `len` values, each dropped with probability `rate`: one seed from
/// `rng`, then one ChaCha stream per stretch of the mask, filled in parallel.
pub(crate) fn dropout_mask(len: usize, rate: f32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let seed = rng.next_u64();
    let threshold = (f64::from(rate) * 4_294_967_296.0).min(u32::MAX as f64) as u32;
    let mut mask = vec![0u8; len];
    mask.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(c, mask)| {
            let mut stream = ChaCha8Rng::seed_from_u64(seed);
            stream.set_stream(c as u64);
            for m in mask {
                *m = u8::from(stream.next_u32() >= threshold);
            }
        });
    mask
}

/// `x ⊙ mask / (1 − rate)`, in place, over rayon's threads.
pub(crate) fn apply_mask<T: Real>(x: &mut [T], mask: &[u8], rate: f32) {
    x.par_chunks_mut(MASK_CHUNK)
        .zip(mask.par_chunks(MASK_CHUNK))
        .for_each(|(x, mask)| mask_here(x, mask, rate));
}

/// [`apply_mask`] on the calling thread (inside a task that is already parallel).
fn mask_here<T: Real>(x: &mut [T], mask: &[u8], rate: f32) {
    let scale = T::of(1.0 / (1.0 - f64::from(rate)));
    for (x, &m) in x.iter_mut().zip(mask) {
        *x = if m == 1 { *x * scale } else { T::default() };
    }
}

/// The shape of one attention call: `rows` sequences of `width` tokens, `heads` heads of `head_size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub(crate) rows: usize,
    pub(crate) width: usize,
    pub(crate) heads: usize,
    pub(crate) head_size: usize,
}

impl AttentionShape {
    fn hidden(&self) -> usize {
        self.heads * self.head_size
    }

    /// Head `head` of sequence `row` as a `width × head_size` view of a token-major buffer whose rows
    /// hold `parts` blocks of `hidden` values (1 for a context, 3 for fused queries, keys and values),
    /// in block `part`.
    fn head_of<'a, T: Real>(
        &self,
        all: &'a [T],
        (parts, part): (usize, usize),
        row: usize,
        head: usize,
    ) -> MatRef<'a, T> {
        let stride = parts * self.hidden();
        let start = row * self.width * stride + part * self.hidden() + head * self.head_size;
        let len = (self.width - 1) * stride + self.head_size;
        MatRef::from_row_major_slice_with_stride(
            &all[start..start + len],
            self.width,
            self.head_size,
            stride,
        )
    }

    /// Head-major `[rows, heads, width, head_size]` buffers → one token-major `[rows·width, parts·hidden]`
    /// buffer holding them side by side.
    fn tokens_from_heads<T: Real>(&self, parts: &[&[T]]) -> Vec<T> {
        let (h, d, l) = (self.hidden(), self.head_size, self.width);
        let stride = parts.len() * h;
        let mut out = zeros(self.rows * l * stride);
        out.par_chunks_mut(stride).enumerate().for_each(|(t, out)| {
            let (row, pos) = (t / l, t % l);
            for (p, heads) in parts.iter().enumerate() {
                for head in 0..self.heads {
                    let from = ((row * self.heads + head) * l + pos) * d;
                    let to = p * h + head * d;
                    out[to..to + d].copy_from_slice(&heads[from..from + d]);
                }
            }
        });
        out
    }
}

// Where queries, keys and values lie in a fused `[tokens, 3·hidden]` buffer: (parts, part).
const QUERIES: (usize, usize) = (3, 0);
const KEYS: (usize, usize) = (3, 1);
const VALUES: (usize, usize) = (3, 2);

/// What attention's backward pass needs: the probabilities before dropout and the dropout mask.
pub(crate) struct AttentionTape<T> {
    pub(crate) probs: Vec<T>,
    pub(crate) mask: Option<Vec<u8>>,
}

/// Scaled dot-product attention of the queries, keys and values side by side in `qkv`
/// (`[rows·width, 3·hidden]`), with `key_bias[row·width + j]` added to every score of key `j` (the padding
/// mask) and dropout on the probabilities. Returns the context, `[rows·width, hidden]`.
pub(crate) fn attention<T: Real>(
    qkv: &[T],
    key_bias: &[T],
    shape: AttentionShape,
    dropout: Option<(f32, &mut ChaCha8Rng)>,
) -> (Vec<T>, AttentionTape<T>) {
    let (l, d) = (shape.width, shape.head_size);
    let scale = T::of(1.0 / (d as f64).sqrt());
    let tasks = shape.rows * shape.heads;
    let mask = dropout.map(|(rate, rng)| (rate, dropout_mask(tasks * l * l, rate, rng)));
    let mut probs = zeros(tasks * l * l);
    let mut context = zeros(tasks * l * d);
    probs
        .par_chunks_mut(l * l)
        .zip(context.par_chunks_mut(l * d))
        .enumerate()
        .for_each(|(t, (p, c))| {
            let (row, head) = (t / shape.heads, t % shape.heads);
            faer::linalg::matmul::matmul(
                view_mut(p, l, l),
                Accum::Replace,
                shape.head_of(qkv, QUERIES, row, head),
                shape.head_of(qkv, KEYS, row, head).transpose(),
                scale,
                Par::Seq,
            );
            let bias = &key_bias[row * l..(row + 1) * l];
            for scores in p.chunks_mut(l) {
                softmax_in_place(scores, bias);
            }
            let dropped;
            let used: &[T] = match &mask {
                Some((rate, m)) => {
                    let mut x = p.to_vec();
                    mask_here(&mut x, &m[t * l * l..(t + 1) * l * l], *rate);
                    dropped = x;
                    &dropped
                }
                None => p,
            };
            faer::linalg::matmul::matmul(
                view_mut(c, l, d),
                Accum::Replace,
                view(used, l, l),
                shape.head_of(qkv, VALUES, row, head),
                T::of(1.0),
                Par::Seq,
            );
        });
    let tape = AttentionTape {
        probs,
        mask: mask.map(|(_, m)| m),
    };
    (shape.tokens_from_heads(&[&context]), tape)
}

/// Softmax of `scores + bias` in place; probabilities below e^−50 (2e−22) are exactly 0 (no subnormal
/// numbers: the module's notes say why).
fn softmax_in_place<T: Real>(scores: &mut [T], bias: &[T]) {
    let mut max = scores[0] + bias[0];
    for (s, &b) in scores.iter_mut().zip(bias) {
        *s += b;
        if *s > max {
            max = *s;
        }
    }
    let mut sum = T::default();
    let floor = T::of(-50.0);
    for s in scores.iter_mut() {
        let shifted = *s - max;
        *s = if shifted < floor {
            T::default()
        } else {
            shifted.exp_()
        };
        sum += *s;
    }
    let inv = T::of(1.0) / sum;
    for s in scores {
        *s *= inv;
    }
}

/// Attention's backward pass: from the context's gradient to that of `qkv` (same layout).
pub(crate) fn attention_backward<T: Real>(
    d_context: &[T],
    qkv: &[T],
    tape: &AttentionTape<T>,
    shape: AttentionShape,
    rate: f32,
) -> Vec<T> {
    let (l, d) = (shape.width, shape.head_size);
    let scale = T::of(1.0 / (d as f64).sqrt());
    let tasks = shape.rows * shape.heads;
    let mut dq = zeros(tasks * l * d);
    let mut dk = zeros(tasks * l * d);
    let mut dv = zeros(tasks * l * d);
    dq.par_chunks_mut(l * d)
        .zip(dk.par_chunks_mut(l * d))
        .zip(dv.par_chunks_mut(l * d))
        .enumerate()
        .for_each(|(t, ((dq, dk), dv))| {
            let (row, head) = (t / shape.heads, t % shape.heads);
            let probs = &tape.probs[t * l * l..(t + 1) * l * l];
            let mask = tape.mask.as_ref().map(|m| &m[t * l * l..(t + 1) * l * l]);
            let mut used = probs.to_vec();
            if let Some(m) = mask {
                mask_here(&mut used, m, rate);
            }
            let dc = shape.head_of(d_context, (1, 0), row, head);
            // dV = P'ᵀ · dC
            faer::linalg::matmul::matmul(
                view_mut(dv, l, d),
                Accum::Replace,
                view(&used, l, l).transpose(),
                dc,
                T::of(1.0),
                Par::Seq,
            );
            // dP' = dC · Vᵀ, then through dropout and softmax: dS = P ⊙ (dP − Σ dP ⊙ P).
            let mut ds = zeros(l * l);
            faer::linalg::matmul::matmul(
                view_mut(&mut ds, l, l),
                Accum::Replace,
                dc,
                shape.head_of(qkv, VALUES, row, head).transpose(),
                T::of(1.0),
                Par::Seq,
            );
            if let Some(m) = mask {
                mask_here(&mut ds, m, rate);
            }
            for (ds, p) in ds.chunks_mut(l).zip(probs.chunks(l)) {
                let dot: T = ds.iter().zip(p).map(|(&a, &b)| a * b).sum();
                for (x, &p) in ds.iter_mut().zip(p) {
                    *x = p * (*x - dot);
                }
            }
            faer::linalg::matmul::matmul(
                view_mut(dq, l, d),
                Accum::Replace,
                view(&ds, l, l),
                shape.head_of(qkv, KEYS, row, head),
                scale,
                Par::Seq,
            );
            faer::linalg::matmul::matmul(
                view_mut(dk, l, d),
                Accum::Replace,
                view(&ds, l, l).transpose(),
                shape.head_of(qkv, QUERIES, row, head),
                scale,
                Par::Seq,
            );
        });
    shape.tokens_from_heads(&[&dq, &dk, &dv])
}

/// `a += b`, element by element.
pub(crate) fn add_into<T: Real>(a: &mut [T], b: &[T]) {
    a.par_chunks_mut(MASK_CHUNK)
        .zip(b.par_chunks(MASK_CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th float32 from 0 up to `limit` (positive), with its negation when `both_signs`.
    fn sweep(limit: f32, step: usize, both_signs: bool) -> impl Iterator<Item = f32> {
        (0..=limit.to_bits())
            .step_by(step)
            .map(f32::from_bits)
            .flat_map(move |x| [x, -x].into_iter().take(if both_signs { 2 } else { 1 }))
    }

    #[test]
    fn fast_exp_is_within_two_units_in_the_last_place_where_it_is_normal() {
        let mut worst = 0.0f64;
        for x in sweep(87.3, 61, true).chain(sweep(88.37, 61, false)) {
            let exact = f64::from(x).exp();
            let relative = ((f64::from(fast::exp(x)) - exact) / exact).abs();
            worst = worst.max(relative);
        }
        assert!(worst < 2.5e-7, "largest relative error {worst}");
        // Far below: exactly 0, never a subnormal or NaN (softmax adds −10,000 for padding).
        assert_eq!(fast::exp(-10_000.0), 0.0);
        assert_eq!(fast::exp(f32::NEG_INFINITY), 0.0);
        assert!(fast::exp(-87.3).is_normal());
        assert!(fast::exp(88.37).is_finite() && fast::exp(1e9).is_finite());
    }

    #[test]
    fn fast_gelu_and_its_slope_follow_float64() {
        let (mut worst_value, mut worst_slope) = (0.0f64, 0.0f64);
        for x in sweep(30.0, 97, true).map(f64::from) {
            let (value, slope) = (x as f32).gelu_();
            let (v, s) = x.gelu_();
            worst_value = worst_value.max((f64::from(value) - v).abs() / (1.0 + x.abs()));
            worst_slope = worst_slope.max((f64::from(slope) - s).abs() / (1.0 + x.abs()));
        }
        assert!(worst_value < 3e-7, "value: largest error {worst_value}");
        // The slope adds u·φ(u), whose rounding in float32 is a few units in the last place.
        assert!(worst_slope < 5e-7, "slope: largest error {worst_slope}");
    }

    #[test]
    fn a_dropout_mask_depends_on_the_seed_only_and_drops_its_rate() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let n = 5 * MASK_CHUNK + 11;
        let ma = dropout_mask(n, 0.1, &mut a);
        let mb = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| dropout_mask(n, 0.1, &mut b));
        assert_eq!(ma, mb);
        let dropped = ma.iter().filter(|&&m| m == 0).count() as f64 / n as f64;
        assert!((dropped - 0.1).abs() < 0.01, "dropped {dropped}");
        assert_ne!(ma, dropout_mask(n, 0.1, &mut a), "the next mask differs");
    }

    #[test]
    fn linear_and_its_backward_pass_match_plain_loops() {
        let (n, k, m) = (37, 23, 19); // odd sizes, above and below the parallel cut
        let x: Vec<f64> = (0..n * k)
            .map(|i| ((i * 7) % 13) as f64 / 13.0 - 0.4)
            .collect();
        let w: Vec<f64> = (0..m * k)
            .map(|i| ((i * 5) % 11) as f64 / 11.0 - 0.5)
            .collect();
        let b: Vec<f64> = (0..m).map(|i| i as f64 * 0.1).collect();
        let dy: Vec<f64> = (0..n * m)
            .map(|i| ((i * 3) % 7) as f64 / 7.0 - 0.3)
            .collect();
        let y = linear(&x, &w, &b, n, k);
        let (mut dw, mut db, mut dx) = (zeros(m * k), zeros(m), zeros(n * k));
        linear_backward(
            &dy,
            &x,
            &w,
            (n, k, m),
            LinearGrads {
                dw: &mut dw,
                db: &mut db,
            },
            Some((&mut dx, Accum::Replace)),
        );
        for r in 0..n {
            for o in 0..m {
                let e: f64 = b[o] + (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum::<f64>();
                assert!((y[r * m + o] - e).abs() < 1e-12);
            }
            for i in 0..k {
                let e: f64 = (0..m).map(|o| dy[r * m + o] * w[o * k + i]).sum();
                assert!((dx[r * k + i] - e).abs() < 1e-12);
            }
        }
        for o in 0..m {
            let e: f64 = (0..n).map(|r| dy[r * m + o]).sum();
            assert!((db[o] - e).abs() < 1e-12);
            for i in 0..k {
                let e: f64 = (0..n).map(|r| dy[r * m + o] * x[r * k + i]).sum();
                assert!((dw[o * k + i] - e).abs() < 1e-12);
            }
        }
    }
}
