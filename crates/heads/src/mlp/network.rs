//! The network: layers, activations, dropout, the forward pass and the gradients (in f32 for training,
//! f64 for the gradient check).

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::objectives::{Outputs, Real, block_labels, cast, loss_and_accuracy, softmax_blocks};
use super::params::Activation;
use crate::softmax_rows;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer<A> {
    /// in × out
    pub(crate) w: Array2<A>,
    pub(crate) b: Array1<A>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Network<A> {
    pub(crate) layers: Vec<Layer<A>>,
    pub(crate) activation: Activation,
}

impl<A: Real> Network<A> {
    /// Whether every weight and bias is a finite number (a diverged run leaves NaN or infinity).
    pub(crate) fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.w.iter().chain(l.b.iter()).all(|v| v.is_finite()))
    }

    pub(crate) fn init(widths: &[usize], activation: Activation, rng: &mut ChaCha8Rng) -> Self {
        let layers = widths
            .windows(2)
            .map(|io| {
                let bound = 1.0 / (io[0] as f64).sqrt();
                let mut draw = || cast::<A>(rng.random_range(-bound..bound));
                let w = Array2::from_shape_simple_fn((io[0], io[1]), &mut draw);
                let b = Array1::from_shape_simple_fn(io[1], &mut draw);
                Layer { w, b }
            })
            .collect();
        Network { layers, activation }
    }

    pub(crate) fn activate(&self, z: &Array2<A>) -> Array2<A> {
        match self.activation {
            Activation::Relu => z.mapv(|v| v.max(A::zero())),
            Activation::Gelu => z.mapv(|v| gelu(v).0),
        }
    }

    pub(crate) fn activation_derivative(&self, z: &Array2<A>) -> Array2<A> {
        match self.activation {
            Activation::Relu => z.mapv(|v| if v > A::zero() { A::one() } else { A::zero() }),
            Activation::Gelu => z.mapv(|v| gelu(v).1),
        }
    }

    /// Inverted-dropout masks for each hidden layer: 0 or 1/(1−p).
    pub(crate) fn dropout_masks(
        &self,
        rows: usize,
        p: f32,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Option<Array2<A>>> {
        let hidden = &self.layers[..self.layers.len() - 1];
        hidden
            .iter()
            .map(|l| {
                (p > 0.0).then(|| {
                    let keep = cast::<A>(1.0 / (1.0 - f64::from(p)));
                    Array2::from_shape_simple_fn((rows, l.w.ncols()), || {
                        if rng.random::<f32>() < p {
                            A::zero()
                        } else {
                            keep
                        }
                    })
                })
            })
            .collect()
    }

    pub(crate) fn logits(&self, x: ArrayView2<'_, A>) -> Array2<A> {
        let mut h = x.to_owned();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = h.dot(&layer.w) + &layer.b;
            h = if i + 1 < self.layers.len() {
                self.activate(&z)
            } else {
                z
            };
        }
        h
    }

    pub(crate) fn forward_proba(&self, x: ArrayView2<'_, A>) -> Array2<A> {
        let mut z = self.logits(x);
        softmax_rows(&mut z);
        z
    }

    /// Validation loss (mean cross-entropy; summed over labels for label sets) and accuracy (for label sets:
    /// the share of label decisions right at threshold ½, i.e. 1 − Hamming loss).
    pub(crate) fn validation_scores(
        &self,
        x: ArrayView2<'_, A>,
        targets: &Outputs<'_, A>,
    ) -> (f64, f64) {
        match targets {
            Outputs::Classes(labels, _) | Outputs::Soft(labels, ..) => {
                let proba = self.forward_proba(x);
                let proba = proba.mapv(|v| v.to_f32().unwrap_or(0.0));
                loss_and_accuracy(&proba, labels)
            }
            Outputs::Sets(y) => {
                let z = self.logits(x);
                let (mut loss, mut right) = (0.0, 0usize);
                for (zv, yv) in z.iter().zip(y.iter()) {
                    let (zv, yv) = (zv.to_f64().unwrap_or(0.0), yv.to_f64().unwrap_or(0.0));
                    loss += zv.max(0.0) + (-zv.abs()).exp().ln_1p() - yv * zv;
                    right += usize::from((zv >= 0.0) == (yv > 0.5));
                }
                let n = z.nrows().max(1) as f64;
                (loss / n, right as f64 / z.len().max(1) as f64)
            }
            Outputs::Tasks(y, widths) => {
                let mut p = self.logits(x);
                softmax_blocks(&mut p, widths);
                let (mut loss, mut right, mut labelled) = (0.0, 0usize, 0usize);
                let mut start = 0;
                for (&w, labels) in widths.iter().zip(block_labels(*y, widths)) {
                    for (i, label) in labels.iter().enumerate() {
                        let Some(k) = *label else { continue };
                        let row = p.slice(ndarray::s![i, start..start + w]);
                        loss -= row[k].to_f64().unwrap_or(0.0).max(1e-12).ln();
                        let best = (0..w).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                        right += usize::from(best == k);
                        labelled += 1;
                    }
                    start += w;
                }
                (
                    loss / p.nrows().max(1) as f64,
                    right as f64 / labelled.max(1) as f64,
                )
            }
        }
    }

    /// Mean loss of a batch (softmax cross-entropy, or binary cross-entropy summed over labels) and its
    /// gradient with respect to every weight and bias.
    pub(crate) fn loss_and_gradients(
        &self,
        x: ArrayView2<'_, A>,
        targets: &Outputs<'_, A>,
        masks: &[Option<Array2<A>>],
    ) -> (A, Vec<Layer<A>>) {
        let n = x.nrows();
        // Forward, keeping each layer's input and pre-activation.
        let mut inputs = vec![x.to_owned()];
        let mut pre = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let z = inputs[i].dot(&layer.w) + &layer.b;
            if i + 1 < self.layers.len() {
                let mut h = self.activate(&z);
                if let Some(mask) = &masks[i] {
                    h *= mask;
                }
                inputs.push(h);
            }
            pre.push(z);
        }
        let inv_n = cast::<A>(1.0 / n as f64);
        let mut loss = A::zero();
        // dL/dz of the output layer: (P − Y)/n for both losses.
        let mut delta = pre.last().expect("output layer").clone();
        match targets {
            Outputs::Classes(labels, _) => {
                softmax_rows(&mut delta);
                for (i, &y) in labels.iter().enumerate() {
                    loss += -delta[[i, y]].max(cast(1e-30)).ln();
                    delta[[i, y]] = delta[[i, y]] - A::one();
                }
            }
            Outputs::Sets(y) => {
                for (z, &yv) in delta.iter_mut().zip(y.iter()) {
                    // softplus(z) − y·z, stably
                    loss += z.max(A::zero()) + (-z.abs()).exp().ln_1p() - yv * *z;
                    *z = crate::sigmoid(*z) - yv;
                }
            }
            Outputs::Soft(labels, soft, t, alpha) => {
                // (1 − α)·CE(y, q) + α·T²·KL(p_T ‖ q_T) (Hinton et al., 2015); its gradient with respect to the
                // logits is (1 − α)(q − y) + α·T·(q_T − p_T).
                let mut tempered = delta.mapv(|z| z / *t);
                softmax_rows(&mut tempered);
                softmax_rows(&mut delta);
                let one = A::one();
                for (i, &y) in labels.iter().enumerate() {
                    loss += (one - *alpha) * -delta[[i, y]].max(cast(1e-30)).ln();
                    for k in 0..delta.ncols() {
                        let (p, q) = (soft[[i, k]], tempered[[i, k]]);
                        if p > A::zero() {
                            loss += *alpha * *t * *t * p * (p.ln() - q.max(cast(1e-30)).ln());
                        }
                        let hard = if k == y { one } else { A::zero() };
                        delta[[i, k]] =
                            (one - *alpha) * (delta[[i, k]] - hard) + *alpha * *t * (q - p);
                    }
                }
            }
            Outputs::Tasks(y, widths) => {
                // Summed cross-entropy over the tasks a row is labelled for; unlabelled blocks pass no gradient.
                softmax_blocks(&mut delta, widths);
                let mut start = 0;
                for (&w, labels) in widths.iter().zip(block_labels(*y, widths)) {
                    for (i, label) in labels.iter().enumerate() {
                        let mut block = delta.slice_mut(ndarray::s![i, start..start + w]);
                        match *label {
                            Some(k) => {
                                loss += -block[k].max(cast(1e-30)).ln();
                                block[k] = block[k] - A::one();
                            }
                            None => block.fill(A::zero()),
                        }
                    }
                    start += w;
                }
            }
        }
        delta.mapv_inplace(|v| v * inv_n);
        let mut grads = Vec::with_capacity(self.layers.len());
        for i in (0..self.layers.len()).rev() {
            let gw = inputs[i].t().dot(&delta);
            let gb = delta.sum_axis(Axis(0));
            grads.push(Layer { w: gw, b: gb });
            if i > 0 {
                let mut back = delta.dot(&self.layers[i].w.t());
                if let Some(mask) = &masks[i - 1] {
                    back *= mask;
                }
                delta = back * self.activation_derivative(&pre[i - 1]);
            }
        }
        grads.reverse();
        (loss * inv_n, grads)
    }
}

/// GELU (tanh form) and its derivative.
pub(crate) fn gelu<A: Real>(x: A) -> (A, A) {
    let c = cast::<A>((2.0 / std::f64::consts::PI).sqrt());
    let a = cast::<A>(0.044715);
    let half = cast::<A>(0.5);
    let u = c * (x + a * x * x * x);
    let t = u.tanh();
    let du = c * (A::one() + cast::<A>(3.0) * a * x * x);
    let value = half * x * (A::one() + t);
    let derivative = half * (A::one() + t) + half * x * (A::one() - t * t) * du;
    (value, derivative)
}
