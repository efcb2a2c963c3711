//! AdamW updated in place: one pass over each parameter, its gradient and its two moments, split across
//! rayon's threads, with no temporary buffers.
//!
//! Profiling a full fine-tuning epoch of MiniLM-L6 on candle (benches/README.md) put 30% of the time in
//! candle-nn's `AdamW::step` and gradient clipping: about 14 tensor operations per parameter, each
//! allocating a tensor the size of the parameter (the word-embedding table alone is 11.7 M values). This
//! computes the same update (candle-nn's and PyTorch's formula: decoupled weight decay, bias-corrected
//! moments, `eps` outside the square root) on flat buffers, and takes the clipping factor as a multiplier
//! of the gradient instead of rewriting every gradient first. `tests` pin it to candle-nn's `AdamW` step
//! by step.

use rayon::prelude::*;

/// AdamW's constants (candle-nn's and PyTorch's defaults for the betas and `eps`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamWParams {
    pub(crate) weight_decay: f64,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
}

impl AdamWParams {
    pub(crate) fn new(weight_decay: f64) -> AdamWParams {
        AdamWParams {
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One parameter's two moments.
#[derive(Debug, Clone)]
pub(crate) struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    pub(crate) fn new(len: usize) -> Moments {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Values of the parameter they belong to.
    pub(crate) fn len(&self) -> usize {
        self.m.len()
    }
}

/// The constants of one step of one group: its rate, the bias corrections of step `t`, the clipping factor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    grad_scale: f32,
    lr: f32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    scale_m: f32,
    scale_v: f32,
    eps: f32,
}

impl Step {
    /// Step `t` (1-based) at learning rate `lr`, gradients multiplied by `grad_scale` (clipping).
    pub(crate) fn new(p: &AdamWParams, lr: f64, t: i32, grad_scale: f64) -> Step {
        Step {
            grad_scale: grad_scale as f32,
            lr: lr as f32,
            decay: (1.0 - lr * p.weight_decay) as f32,
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            scale_m: (1.0 / (1.0 - p.beta1.powi(t))) as f32,
            scale_v: (1.0 / (1.0 - p.beta2.powi(t))) as f32,
            eps: p.eps as f32,
        }
    }

    /// Updates `theta` in place from its gradient and moments.
    pub(crate) fn apply(&self, theta: &mut [f32], grad: &[f32], moments: &mut Moments) {
        assert!(
            theta.len() == grad.len() && moments.m.len() == theta.len(),
            "AdamW: {} parameters, {} gradients, {} moments",
            theta.len(),
            grad.len(),
            moments.m.len()
        );
        let u = *self;
        theta
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(moments.m.par_chunks_mut(CHUNK))
            .zip(moments.v.par_chunks_mut(CHUNK))
            .for_each(|(((theta, grad), m), v)| {
                for (((t, &g), m), v) in theta.iter_mut().zip(grad).zip(m).zip(v) {
                    let g = g * u.grad_scale;
                    *m = *m * u.beta1 + g * (1.0 - u.beta1);
                    *v = *v * u.beta2 + g * g * (1.0 - u.beta2);
                    let step = (*m * u.scale_m) / ((*v * u.scale_v).sqrt() + u.eps);
                    *t = *t * u.decay - step * u.lr;
                }
            });
    }
}

/// Values per rayon task: large enough that scheduling costs nothing, small enough to share out a block's
/// 147 k-value matrices.
const CHUNK: usize = 16 * 1024;

/// The sum of squares of `values`, in float64: partial sums of fixed chunks, added in order, so the
/// result does not depend on how rayon shares the work (the clipping factor, and so the weights, stay
/// bit-identical from run to run).
pub(crate) fn squares(values: &[f32]) -> f64 {
    let partial: Vec<f64> = values
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .collect();
    partial.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::backprop::GradStore;
    use candle_core::{Device, Tensor, Var};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    /// A gradient store holding `grad` for `var`, made the way candle makes one: by backprop.
    fn grads_of(var: &Var, grad: &Tensor) -> GradStore {
        // d/dθ Σ θ·g = g.
        (var.as_tensor() * grad)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn in_place_adamw_follows_candle_nn_step_by_step() {
        let device = Device::Cpu;
        let n = 3 * CHUNK + 17; // several rayon chunks and a ragged end
        let start = Tensor::randn(0f32, 1.0, n, &device).unwrap();
        let mut ours: Vec<f32> = start.to_vec1().unwrap();
        let mut moments = Moments::new(n);
        let theirs = Var::from_tensor(&start.copy().unwrap()).unwrap();
        let params = AdamWParams::new(0.01);
        let mut reference = AdamW::new(
            vec![theirs.clone()],
            ParamsAdamW {
                lr: 3e-3,
                weight_decay: 0.01,
                ..ParamsAdamW::default()
            },
        )
        .unwrap();
        for step in 0..6 {
            let grad = Tensor::randn(0f32, 1.0, n, &device).unwrap();
            // A clipping factor on our side equals scaled gradients on candle-nn's.
            let scale = if step % 2 == 0 { 1.0 } else { 0.37 };
            let lr = 3e-3 * (1.0 - step as f64 / 10.0);
            reference.set_learning_rate(lr);
            Step::new(&params, lr, step + 1, scale).apply(
                &mut ours,
                &grad.to_vec1::<f32>().unwrap(),
                &mut moments,
            );
            let scaled = (&grad * scale).unwrap();
            reference.step(&grads_of(&theirs, &scaled)).unwrap();
            let theirs: Vec<f32> = theirs.as_tensor().to_vec1().unwrap();
            let diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "step {step}: max difference {diff}");
        }
    }

    #[test]
    fn the_sum_of_squares_is_exact_in_float64() {
        let values: Vec<f32> = (0..3 * CHUNK + 5).map(|i| (i % 7) as f32 - 3.0).collect();
        let expected: f64 = values.iter().map(|&v| f64::from(v * v)).sum();
        assert_eq!(squares(&values), expected);
    }
}
