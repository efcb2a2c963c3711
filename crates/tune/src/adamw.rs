//! AdamW updated in place: one pass over each parameter, its gradient and its two moments, split across
//! rayon's threads, with no temporary tensors.
//!
//! Profiling a full fine-tuning epoch of MiniLM-L6 (benches/README.md) put 30% of the time in candle-nn's
//! `AdamW::step` and gradient clipping: about 14 tensor operations per parameter, each allocating a
//! tensor the size of the parameter (the word-embedding table alone is 11.7 M values), so the kernel spent
//! its time faulting and zeroing fresh pages. This computes the same update (candle-nn's formula: decoupled
//! weight decay, bias-corrected moments, `eps` outside the square root) through candle's in-place custom-op
//! interface, and takes the clipping factor as a multiplier of the gradient instead of rewriting every
//! gradient first. `tests` pin it to candle-nn's `AdamW` step by step.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Storage, Tensor, Var, bail};
use rayon::prelude::*;

/// AdamW's constants (candle-nn's defaults for the betas and `eps`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamWParams {
    pub(crate) lr: f64,
    pub(crate) weight_decay: f64,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
}

impl AdamWParams {
    pub(crate) fn new(lr: f64, weight_decay: f64) -> AdamWParams {
        AdamWParams {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One parameter and its moments (kept outside candle: only this optimiser reads them).
struct Slot {
    var: Var,
    moments: Mutex<(Vec<f32>, Vec<f32>)>,
}

/// AdamW over a group of variables, updated in place.
pub(crate) struct InPlaceAdamW {
    slots: Vec<Slot>,
    params: AdamWParams,
    step_t: i32,
}

/// The update of one parameter, run by candle on its storage.
struct Update<'a> {
    moments: &'a Mutex<(Vec<f32>, Vec<f32>)>,
    /// Multiplies the gradient (gradient clipping).
    grad_scale: f32,
    lr: f32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    scale_m: f32,
    scale_v: f32,
    eps: f32,
}

/// Values per rayon task: large enough that scheduling costs nothing, small enough to share out a block's
/// 147 k-value matrices.
const CHUNK: usize = 16 * 1024;

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "graft-adamw"
    }

    fn cpu_fwd(
        &self,
        theta: &mut CpuStorage,
        theta_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (theta, grad) else {
            bail!("graft-adamw: parameters and gradients must be float32");
        };
        let (Some((t0, t1)), Some((g0, g1))) = (
            theta_layout.contiguous_offsets(),
            grad_layout.contiguous_offsets(),
        ) else {
            bail!("graft-adamw: parameters and gradients must be contiguous");
        };
        let (theta, grad) = (&mut theta[t0..t1], &grad[g0..g1]);
        let mut moments = self.moments.lock().unwrap_or_else(|p| p.into_inner());
        let (m, v) = &mut *moments;
        if theta.len() != grad.len() || m.len() != theta.len() {
            bail!(
                "graft-adamw: {} parameters, {} gradients, {} moments",
                theta.len(),
                grad.len(),
                m.len()
            );
        }
        let u = self;
        theta
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((theta, grad), (m, v))| {
                for (((t, &g), m), v) in theta.iter_mut().zip(grad).zip(m).zip(v) {
                    let g = g * u.grad_scale;
                    *m = *m * u.beta1 + g * (1.0 - u.beta1);
                    *v = *v * u.beta2 + g * g * (1.0 - u.beta2);
                    let step = (*m * u.scale_m) / ((*v * u.scale_v).sqrt() + u.eps);
                    *t = *t * u.decay - step * u.lr;
                }
            });
        Ok(())
    }
}

impl InPlaceAdamW {
    pub(crate) fn new(vars: Vec<Var>, params: AdamWParams) -> InPlaceAdamW {
        let slots = vars
            .into_iter()
            .map(|var| {
                let n = var.elem_count();
                Slot {
                    var,
                    moments: Mutex::new((vec![0.0; n], vec![0.0; n])),
                }
            })
            .collect();
        InPlaceAdamW {
            slots,
            params,
            step_t: 0,
        }
    }

    pub(crate) fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// One AdamW step on every variable that has a gradient, each gradient multiplied by `grad_scale`.
    pub(crate) fn step(&mut self, grads: &GradStore, grad_scale: f64) -> candle_core::Result<()> {
        self.step_t += 1;
        let p = self.params;
        let update = |moments| Update {
            moments,
            grad_scale: grad_scale as f32,
            lr: p.lr as f32,
            decay: (1.0 - p.lr * p.weight_decay) as f32,
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            scale_m: (1.0 / (1.0 - p.beta1.powi(self.step_t))) as f32,
            scale_v: (1.0 / (1.0 - p.beta2.powi(self.step_t))) as f32,
            eps: p.eps as f32,
        };
        for slot in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                slot.var
                    .as_tensor()
                    .inplace_op2(g, &update(&slot.moments))?;
            }
        }
        Ok(())
    }
}

/// The joint L2 norm of `vars`' gradients, read where they lie (no squared copies).
pub(crate) fn gradient_norm(grads: &GradStore, vars: &[&Var]) -> candle_core::Result<f64> {
    let mut total = 0.0f64;
    for var in vars {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        total += squares(g)?;
    }
    Ok(total.sqrt())
}

fn squares(t: &Tensor) -> candle_core::Result<f64> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    else {
        // Anything else (a strided view): candle's own reduction.
        drop(storage);
        return Ok(f64::from(t.sqr()?.sum_all()?.to_scalar::<f32>()?));
    };
    Ok(values[start..end]
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    /// A gradient store holding `grad` for `var`, made the way training makes one: by backprop.
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
        let ours = Var::from_tensor(&start.copy().unwrap()).unwrap();
        let theirs = Var::from_tensor(&start.copy().unwrap()).unwrap();
        let mut fast = InPlaceAdamW::new(vec![ours.clone()], AdamWParams::new(3e-3, 0.01));
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
            fast.set_learning_rate(lr);
            reference.set_learning_rate(lr);
            fast.step(&grads_of(&ours, &grad), scale).unwrap();
            let scaled = (&grad * scale).unwrap();
            reference.step(&grads_of(&theirs, &scaled)).unwrap();
            let diff = (ours.as_tensor() - theirs.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff <= 1e-6, "step {step}: max difference {diff}");
        }
        assert_eq!(ours.dtype(), DType::F32);
    }

    #[test]
    fn the_gradient_norm_is_read_in_place_and_matches_candle() {
        let device = Device::Cpu;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (300, 70), &device).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 41, &device).unwrap()).unwrap();
        let ga = Tensor::randn(0f32, 2.0, (300, 70), &device).unwrap();
        let gb = Tensor::randn(0f32, 2.0, 41, &device).unwrap();
        let loss = ((a.as_tensor() * &ga).unwrap().sum_all().unwrap()
            + (b.as_tensor() * &gb).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let norm = gradient_norm(&grads, &[&a, &b]).unwrap();
        let expected = (f64::from(
            ga.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        ) + f64::from(
            gb.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        ))
        .sqrt();
        assert!(
            (norm - expected).abs() <= 1e-4 * expected,
            "{norm} vs {expected}"
        );
    }
}
