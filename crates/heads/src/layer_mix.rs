//! A learned mix of an encoder's layers under a linear softmax head (ELMo's scalar mix, Peters et al.,
//! 2018): the frozen encoder's per-layer sentence embeddings feed a new trainable column that reads every
//! layer, not only the last.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};

use crate::{
    Fit, HeadError, ParamGuard, Predict, Targets, check_features, check_training, softmax_rows,
};

/// `z = γ · Σ_l softmax(a)_l · x̃_l`, then `softmax(W z + b)`: `x̃_l` is layer `l`'s embedding standardised
/// with the training rows' mean and deviation; the mix logits `a`, the scale `γ`, `W` and `b` train
/// together by full-batch Adam on the mean cross-entropy plus `alpha/2 · ‖W‖²`, from `a = 0` (an even mix),
/// `γ = 1`, `W = 0`. With `mix(false)` the column reads the last layer only (`a`, `γ` fixed): the same
/// head, trained the same way, on the features a frozen backbone usually gives — the comparison at equal
/// head capacity (the mix adds `layers + 1` numbers). Deterministic: no random choice.
///
/// The input is one row per example with the layers side by side, `[rows, layers · width]`, bottom
/// first.
///
/// ```
/// use graft_heads::{Fit, LayerMix, Predict, Targets};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// // Two layers of width 1: the class is visible in the first layer only.
/// let x = array![[0.0f32, 0.3], [0.1, 0.7], [1.0, 0.4], [0.9, 0.6]];
/// let y = Targets::new(&[0, 0, 1, 1], 2)?;
/// let head = LayerMix::params().layers(2).fit(x.view(), &y)?;
/// assert_eq!(head.predict(x.view())?, vec![0, 0, 1, 1]);
/// assert!(head.mix()[0] > head.mix()[1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LayerMix;

impl LayerMix {
    /// Default hyperparameters (one layer, a learned mix, 300 epochs at rate 0.05, `alpha = 1e-3`).
    pub fn params() -> LayerMixParams {
        LayerMixParams(LayerMixValidParams {
            layers: 1,
            mix: true,
            epochs: 300,
            learning_rate: 0.05,
            alpha: 1e-3,
        })
    }
}

/// Unchecked hyperparameters of [`LayerMix`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMixParams(LayerMixValidParams);

/// Validated hyperparameters of [`LayerMix`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMixValidParams {
    layers: usize,
    mix: bool,
    epochs: usize,
    learning_rate: f64,
    alpha: f64,
}

impl LayerMixParams {
    /// Layers side by side in each row (the feature count must be a multiple). Default 1.
    pub fn layers(mut self, layers: usize) -> Self {
        self.0.layers = layers;
        self
    }

    /// Learn the mix (`true`, default), or read the last layer only.
    pub fn mix(mut self, mix: bool) -> Self {
        self.0.mix = mix;
        self
    }

    /// Full-batch Adam steps. Default 300; at least 1.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.0.epochs = epochs;
        self
    }

    /// Adam's step size. Default 0.05; finite and above 0.
    pub fn learning_rate(mut self, learning_rate: f64) -> Self {
        self.0.learning_rate = learning_rate;
        self
    }

    /// L2 penalty on `W`. Default 1e-3; finite and ≥ 0.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }
}

impl ParamGuard for LayerMixParams {
    type Checked = LayerMixValidParams;

    fn check(self) -> Result<LayerMixValidParams, HeadError> {
        let p = &self.0;
        let bad = |name: &'static str, value: String, expected: &'static str| {
            Err(HeadError::InvalidParameter {
                name,
                value,
                expected,
            })
        };
        if p.layers == 0 {
            return bad("layers", "0".into(), "at least 1");
        }
        if p.epochs == 0 {
            return bad("epochs", "0".into(), "at least 1, e.g. 300");
        }
        if !(p.learning_rate.is_finite() && p.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                p.learning_rate.to_string(),
                "a finite number above 0, e.g. 0.05",
            );
        }
        if !(p.alpha.is_finite() && p.alpha >= 0.0) {
            return bad(
                "alpha",
                p.alpha.to_string(),
                "a finite number ≥ 0, e.g. 1e-3",
            );
        }
        Ok(self.0)
    }
}

impl Fit for LayerMixParams {
    type Fitted = FittedLayerMix;

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedLayerMix, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

/// Adam's moments for one parameter buffer (β = 0.9, 0.999; ε = 1e-8).
struct Moments {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Moments {
    fn new(len: usize) -> Moments {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    fn step(&mut self, params: &mut [f64], grads: &[f64], rate: f64, t: i32) {
        let (b1, b2) = (0.9f64, 0.999f64);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= rate * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// The standardised layers of `x`, `[layers][rows, width]`, with the statistics used.
fn standardised(
    x: ArrayView2<'_, f32>,
    layers: usize,
    mean: &Array1<f64>,
    scale: &Array1<f64>,
) -> Vec<Array2<f64>> {
    let width = x.ncols() / layers;
    (0..layers)
        .map(|l| {
            let columns = s![.., l * width..(l + 1) * width];
            let block = x.slice(columns).mapv(f64::from);
            (block - mean.slice(s![l * width..(l + 1) * width]))
                / scale.slice(s![l * width..(l + 1) * width])
        })
        .collect()
}

/// The mixed embedding `γ · Σ_l s_l x̃_l`.
fn mixed(layers: &[Array2<f64>], shares: &[f64], gamma: f64) -> Array2<f64> {
    let mut z = Array2::zeros(layers[0].raw_dim());
    for (x, &share) in layers.iter().zip(shares) {
        if share != 0.0 {
            z.scaled_add(gamma * share, x);
        }
    }
    z
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|a| (a - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// All weight on the last layer.
fn last_layer(layers: usize) -> Vec<f64> {
    (0..layers)
        .map(|l| f64::from(u8::from(l + 1 == layers)))
        .collect()
}

/// The trainable values at one step.
struct State<'a> {
    w: &'a Array2<f64>,
    b: &'a [f64],
    logits: &'a [f64],
    gamma: f64,
}

/// The loss and its gradient with respect to every trainable value.
struct Gradient {
    loss: f64,
    dw: Array2<f64>,
    db: Vec<f64>,
    d_logits: Vec<f64>,
    d_gamma: f64,
}

/// Mean cross-entropy plus `alpha/2 · ‖W‖²`, and its gradient (the mix's only when `mix`).
fn objective(
    xs: &[Array2<f64>],
    onehot: &Array2<f64>,
    alpha: f64,
    mix: bool,
    state: &State<'_>,
) -> Gradient {
    let n = onehot.nrows() as f64;
    let shares = if mix {
        softmax(state.logits)
    } else {
        last_layer(xs.len())
    };
    let z = mixed(xs, &shares, state.gamma);
    let mut p = z.dot(&state.w.t()) + ArrayView1::from(state.b);
    softmax_rows(&mut p);
    let loss = -p
        .iter()
        .zip(onehot)
        .filter(|(_, y)| **y > 0.0)
        .map(|(p, _)| p.max(1e-300).ln())
        .sum::<f64>()
        / n
        + 0.5 * alpha * state.w.iter().map(|v| v * v).sum::<f64>();
    let g = (&p - onehot) / n;
    let dw = g.t().dot(&z) + &(state.w * alpha);
    let db = g.sum_axis(Axis(0)).to_vec();
    let (mut d_logits, mut d_gamma) = (vec![0.0; xs.len()], 0.0);
    if mix {
        let dz = g.dot(state.w);
        // t_l = Σ_i dz_i · x̃_il: the loss's slope along each layer's contribution.
        let slopes: Vec<f64> = xs.iter().map(|x| (&dz * x).sum()).collect();
        d_gamma = shares.iter().zip(&slopes).map(|(s, t)| s * t).sum();
        let d_shares: Vec<f64> = slopes.iter().map(|t| state.gamma * t).collect();
        let mean_d: f64 = shares.iter().zip(&d_shares).map(|(s, d)| s * d).sum();
        d_logits = shares
            .iter()
            .zip(&d_shares)
            .map(|(s, d)| s * (d - mean_d))
            .collect();
    }
    Gradient {
        loss,
        dw,
        db,
        d_logits,
        d_gamma,
    }
}

impl Fit for LayerMixValidParams {
    type Fitted = FittedLayerMix;

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedLayerMix, HeadError> {
        check_training(x, targets)?;
        let layers = self.layers;
        if !x.ncols().is_multiple_of(layers) || x.ncols() == 0 {
            return Err(HeadError::ShapeMismatch {
                what: "feature columns (a multiple of `layers`)",
                expected: layers * (x.ncols() / layers).max(1),
                got: x.ncols(),
            });
        }
        let (n, k) = (x.nrows(), targets.n_classes());
        let width = x.ncols() / layers;
        let wide = x.mapv(f64::from);
        let mean = wide.mean_axis(Axis(0)).expect("rows");
        let scale = wide
            .std_axis(Axis(0), 0.0)
            .mapv(|s| if s > 1e-12 { s } else { 1.0 });
        let xs = standardised(x, layers, &mean, &scale);
        let mut onehot = Array2::<f64>::zeros((n, k));
        for (row, &label) in targets.labels().iter().enumerate() {
            onehot[[row, label]] = 1.0;
        }
        // Parameters: W [k, width] and b [k]; the mix logits and γ (learned only with `mix`).
        let mut w = Array2::<f64>::zeros((k, width));
        let mut b = vec![0.0; k];
        let mut logits = vec![0.0; layers];
        let mut gamma = 1.0;
        let last_only = last_layer(layers);
        let (mut mw, mut mb, mut ma, mut mg) = (
            Moments::new(k * width),
            Moments::new(k),
            Moments::new(layers),
            Moments::new(1),
        );
        let mut loss = f64::NAN;
        for epoch in 1..=self.epochs {
            let state = State {
                w: &w,
                b: &b,
                logits: &logits,
                gamma,
            };
            let g = objective(&xs, &onehot, self.alpha, self.mix, &state);
            loss = g.loss;
            if !loss.is_finite() {
                return Err(HeadError::Diverged {
                    head: "layer mix",
                    epoch,
                    setting: "learning_rate",
                    value: self.learning_rate,
                });
            }
            let t = i32::try_from(epoch).unwrap_or(i32::MAX);
            if self.mix {
                ma.step(&mut logits, &g.d_logits, self.learning_rate, t);
                let mut g_vec = [gamma];
                mg.step(&mut g_vec, &[g.d_gamma], self.learning_rate, t);
                gamma = g_vec[0];
            }
            mw.step(
                w.as_slice_mut().expect("standard layout"),
                g.dw.as_slice().expect("standard layout"),
                self.learning_rate,
                t,
            );
            mb.step(&mut b, &g.db, self.learning_rate, t);
        }
        let shares = if self.mix {
            softmax(&logits)
        } else {
            last_only
        };
        Ok(FittedLayerMix {
            layers,
            shares,
            gamma,
            mean,
            scale,
            weights: w,
            bias: Array1::from(b),
            loss,
        })
    }
}

/// A trained [`LayerMix`].
#[derive(Debug, Clone, PartialEq)]
pub struct FittedLayerMix {
    layers: usize,
    shares: Vec<f64>,
    gamma: f64,
    mean: Array1<f64>,
    scale: Array1<f64>,
    weights: Array2<f64>,
    bias: Array1<f64>,
    loss: f64,
}

impl FittedLayerMix {
    /// Each layer's share of the mix (softmax of the learned logits), bottom first; sums to 1.
    pub fn mix(&self) -> &[f64] {
        &self.shares
    }

    /// The learned scale γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// The training loss after the last step (cross-entropy + penalty).
    pub fn loss(&self) -> f64 {
        self.loss
    }
}

impl Predict for FittedLayerMix {
    fn n_features(&self) -> usize {
        self.mean.len()
    }

    fn n_classes(&self) -> usize {
        self.bias.len()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        let xs = standardised(x, self.layers, &self.mean, &self.scale);
        let z = mixed(&xs, &self.shares, self.gamma);
        let mut p = z.dot(&self.weights.t()) + &self.bias;
        softmax_rows(&mut p);
        Ok(p.mapv(|v| v as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three layers of width 2: the class shows in layer 1 (the middle) only; the others are noise.
    fn layered() -> (Array2<f32>, Vec<usize>) {
        let n = 60;
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let x = Array2::from_shape_fn((n, 6), |(i, j)| {
            let noise = (((i * 7 + j * 13) % 17) as f32 / 17.0) - 0.5;
            if j / 2 == 1 {
                labels[i] as f32 * 2.0 - 1.0 + 0.3 * noise
            } else {
                noise
            }
        });
        (x, labels)
    }

    #[test]
    fn the_mix_finds_the_layer_that_carries_the_class() {
        let (x, labels) = layered();
        let y = Targets::new(&labels, 2).unwrap();
        let mixed = LayerMix::params().layers(3).fit(x.view(), &y).unwrap();
        assert!(mixed.mix()[1] > 0.6, "{:?}", mixed.mix());
        assert!((mixed.mix().iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(mixed.predict(x.view()).unwrap(), labels);
        // The last layer alone holds no signal: the same head on it cannot separate the classes.
        let last = LayerMix::params()
            .layers(3)
            .mix(false)
            .fit(x.view(), &y)
            .unwrap();
        assert_eq!(last.mix(), &[0.0, 0.0, 1.0]);
        let right = last
            .predict(x.view())
            .unwrap()
            .iter()
            .zip(&labels)
            .filter(|(a, b)| a == b)
            .count();
        assert!(right < 50, "{right} of 60 from noise");
    }

    #[test]
    fn the_gradient_matches_central_differences() {
        let (x, labels) = layered();
        let xs: Vec<Array2<f64>> = (0..3)
            .map(|l| x.slice(s![.., 2 * l..2 * l + 2]).mapv(f64::from))
            .collect();
        let mut onehot = Array2::zeros((labels.len(), 2));
        labels
            .iter()
            .enumerate()
            .for_each(|(i, &y)| onehot[[i, y]] = 1.0);
        let w = Array2::from_shape_fn((2, 2), |(i, j)| 0.3 * i as f64 - 0.2 * j as f64 + 0.1);
        let (b, logits, gamma) = (vec![0.05, -0.1], vec![0.2, -0.3, 0.1], 1.3);
        let at = |w: &Array2<f64>, b: &[f64], logits: &[f64], gamma: f64| {
            let state = State {
                w,
                b,
                logits,
                gamma,
            };
            objective(&xs, &onehot, 0.01, true, &state)
        };
        let g = at(&w, &b, &logits, gamma);
        let eps = 1e-6;
        let close = |analytic: f64, plus: f64, minus: f64, what: &str| {
            let numeric = (plus - minus) / (2.0 * eps);
            assert!(
                (analytic - numeric).abs() < 1e-7,
                "{what}: {analytic} vs {numeric}"
            );
        };
        for l in 0..3 {
            let (mut up, mut down) = (logits.clone(), logits.clone());
            up[l] += eps;
            down[l] -= eps;
            close(
                g.d_logits[l],
                at(&w, &b, &up, gamma).loss,
                at(&w, &b, &down, gamma).loss,
                "mix logit",
            );
        }
        close(
            g.d_gamma,
            at(&w, &b, &logits, gamma + eps).loss,
            at(&w, &b, &logits, gamma - eps).loss,
            "γ",
        );
        for ((i, j), &analytic) in g.dw.indexed_iter() {
            let (mut up, mut down) = (w.clone(), w.clone());
            up[[i, j]] += eps;
            down[[i, j]] -= eps;
            close(
                analytic,
                at(&up, &b, &logits, gamma).loss,
                at(&down, &b, &logits, gamma).loss,
                "W",
            );
        }
        for c in 0..2 {
            let (mut up, mut down) = (b.clone(), b.clone());
            up[c] += eps;
            down[c] -= eps;
            close(
                g.db[c],
                at(&w, &up, &logits, gamma).loss,
                at(&w, &down, &logits, gamma).loss,
                "b",
            );
        }
    }

    #[test]
    fn bad_parameters_and_shapes_are_named() {
        let (x, labels) = layered();
        let y = Targets::new(&labels, 2).unwrap();
        let err = LayerMix::params().layers(4).fit(x.view(), &y).unwrap_err();
        assert!(err.to_string().contains("multiple of `layers`"), "{err}");
        let err = LayerMix::params()
            .learning_rate(0.0)
            .fit(x.view(), &y)
            .unwrap_err();
        assert!(err.to_string().contains("`learning_rate`"), "{err}");
        let fitted = LayerMix::params().layers(3).fit(x.view(), &y).unwrap();
        let err = fitted.predict(x.slice(s![.., ..4])).unwrap_err();
        assert!(matches!(err, HeadError::ShapeMismatch { .. }), "{err}");
    }
}
