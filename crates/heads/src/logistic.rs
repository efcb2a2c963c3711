//! Multinomial logistic regression with L2 regularisation, trained by L-BFGS.

use ndarray::{Array1, Array2, ArrayView2, s};
use rayon::prelude::*;

use crate::lbfgs::{self, Settings, Termination};
use crate::{
    Fit, FitMultiLabel, HeadError, LabelSets, ParamGuard, Predict, PredictMultiLabel, SparseRows,
    Targets, check_features, check_multi_label, check_training, check_training_rows, softmax_rows,
};

/// Multinomial (softmax) logistic regression.
///
/// Minimises `C · Σᵢ −log p(yᵢ | xᵢ) + ½‖W‖²` (one weight column per class; the intercept is not penalised),
/// scikit-learn's multinomial objective, so for three or more classes a given `C` means the same here as in
/// `sklearn.linear_model.LogisticRegression`. With two classes scikit-learn fits a single weight vector
/// `w = w₁ − w₀` instead; at the optimum `w₀ = −w₁`, so graft's `C` equals scikit-learn's `C / 2` there.
/// Training starts from zero weights and is fully deterministic.
#[derive(Debug, Clone, Copy)]
pub struct Logistic;

impl Logistic {
    /// Default hyperparameters, ready for the setters.
    pub fn params() -> LogisticParams {
        LogisticParams(LogisticValidParams {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-6,
            fit_intercept: true,
            balanced: false,
        })
    }
}

/// Unchecked hyperparameters of [`Logistic`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticParams(LogisticValidParams);

/// Validated hyperparameters of [`Logistic`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticValidParams {
    c: f64,
    max_iter: usize,
    tol: f64,
    fit_intercept: bool,
    balanced: bool,
}

impl LogisticParams {
    /// Weight each row by `n / (classes · rows of its class)`, as scikit-learn's
    /// `class_weight="balanced"`, so rare classes count as much as common ones. Default `false`.
    pub fn balanced(mut self, balanced: bool) -> Self {
        self.0.balanced = balanced;
        self
    }

    /// Inverse regularisation strength, as scikit-learn's `C`; larger fits the training data more closely.
    /// Default `1.0`; must be positive.
    pub fn c(mut self, c: f64) -> Self {
        self.0.c = c;
        self
    }

    /// Most L-BFGS iterations. Default `1000`; must be at least 1.
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.0.max_iter = max_iter;
        self
    }

    /// Stop when every gradient component of the per-row objective is below this. Default `1e-6`; must be
    /// positive.
    pub fn tol(mut self, tol: f64) -> Self {
        self.0.tol = tol;
        self
    }

    /// Learn a per-class intercept. Default `true`.
    pub fn fit_intercept(mut self, fit_intercept: bool) -> Self {
        self.0.fit_intercept = fit_intercept;
        self
    }
}

impl ParamGuard for LogisticParams {
    type Checked = LogisticValidParams;

    fn check(self) -> Result<LogisticValidParams, HeadError> {
        let p = self.0;
        if !(p.c.is_finite() && p.c > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "c",
                value: p.c.to_string(),
                expected: "a positive finite number",
            });
        }
        if !(p.tol.is_finite() && p.tol > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "tol",
                value: p.tol.to_string(),
                expected: "a positive finite number",
            });
        }
        if p.max_iter == 0 {
            return Err(HeadError::InvalidParameter {
                name: "max_iter",
                value: "0".to_owned(),
                expected: "at least 1",
            });
        }
        Ok(p)
    }
}

impl LogisticValidParams {
    /// Inverse regularisation strength.
    pub fn c(&self) -> f64 {
        self.c
    }

    /// Iteration budget.
    pub fn max_iter(&self) -> usize {
        self.max_iter
    }

    /// Gradient tolerance.
    pub fn tol(&self) -> f64 {
        self.tol
    }

    /// Whether an intercept is learnt.
    pub fn fit_intercept(&self) -> bool {
        self.fit_intercept
    }

    /// Whether classes are balanced by row weights.
    pub fn balanced(&self) -> bool {
        self.balanced
    }

    /// Trains starting from an earlier fit's weights (warm start): with the same rows it converges in a few
    /// iterations; with more rows it continues from there. The earlier head must have the same shape.
    pub fn fit_from(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        start: &FittedLogistic,
    ) -> Result<FittedLogistic, HeadError> {
        check_features(x, Some(start.n_features()))?;
        if start.n_classes() != targets.n_classes() {
            return Err(HeadError::ShapeMismatch {
                what: "warm-start class count",
                expected: targets.n_classes(),
                got: start.n_classes(),
            });
        }
        let (d, k) = start.weights.dim();
        let mut theta = Array1::zeros(d * k + k);
        for c in 0..k {
            for j in 0..d {
                theta[c * d + j] = f64::from(start.weights[[j, c]]);
            }
            theta[d * k + c] = f64::from(start.bias[c]);
        }
        self.fit_with_start(Features::Dense(x), targets, theta)
    }
}

/// How training went.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingReport {
    /// L-BFGS iterations run.
    pub iterations: usize,
    /// Final objective per row (mean cross-entropy plus the scaled penalty).
    pub loss: f64,
    /// Largest gradient component at the end.
    pub gradient_norm: f64,
    /// Why training stopped.
    pub termination: Termination,
}

/// A trained [`Logistic`] head.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedLogistic {
    weights: Array2<f32>,
    bias: Array1<f32>,
    report: TrainingReport,
}

impl FittedLogistic {
    /// Class of each sparse row (the arg-max of its scores), costing the non-zeros.
    pub fn predict_sparse(&self, x: &SparseRows) -> Result<Vec<usize>, HeadError> {
        if x.ncols() != self.weights.nrows() {
            return Err(HeadError::ShapeMismatch {
                what: "feature count",
                expected: self.weights.nrows(),
                got: x.ncols(),
            });
        }
        let k = self.bias.len();
        let mut scores = vec![0.0f32; k];
        Ok((0..x.nrows())
            .map(|i| {
                scores.copy_from_slice(self.bias.as_slice().expect("contiguous"));
                let (columns, values) = x.row(i);
                for (&j, &v) in columns.iter().zip(values) {
                    for (score, &w) in scores.iter_mut().zip(self.weights.row(j)) {
                        *score += v * w;
                    }
                }
                (0..k).fold(0, |best, c| if scores[c] > scores[best] { c } else { best })
            })
            .collect())
    }

    /// Weights, features × classes.
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// Intercepts, one per class.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// How training went.
    pub fn report(&self) -> &TrainingReport {
        &self.report
    }

    /// Rebuilds a head from saved weights (features × classes) and intercepts.
    pub fn from_parts(
        weights: Array2<f32>,
        bias: Array1<f32>,
    ) -> Result<FittedLogistic, HeadError> {
        if weights.ncols() != bias.len() {
            return Err(HeadError::ShapeMismatch {
                what: "bias length",
                expected: weights.ncols(),
                got: bias.len(),
            });
        }
        Ok(FittedLogistic {
            weights,
            bias,
            report: TrainingReport {
                iterations: 0,
                loss: 0.0,
                gradient_norm: 0.0,
                termination: Termination::MaxIterations,
            },
        })
    }
}

impl Fit for LogisticParams {
    type Fitted = FittedLogistic;

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedLogistic, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for LogisticValidParams {
    type Fitted = FittedLogistic;

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedLogistic, HeadError> {
        check_training(x, targets)?;
        let (d, k) = (x.ncols(), targets.n_classes());
        self.fit_with_start(Features::Dense(x), targets, Array1::zeros(d * k + k))
    }
}

impl LogisticValidParams {
    /// Trains on sparse rows (e.g. TF-IDF vectors): the same objective and solver as [`Fit::fit`], with
    /// evaluations that cost the non-zeros (in f64 throughout).
    pub fn fit_sparse(
        &self,
        x: &SparseRows,
        targets: &Targets<'_>,
    ) -> Result<FittedLogistic, HeadError> {
        check_training_rows(x.nrows(), targets)?;
        let (d, k) = (x.ncols(), targets.n_classes());
        self.fit_with_start(Features::Sparse(x), targets, Array1::zeros(d * k + k))
    }

    fn fit_with_start(
        &self,
        x: Features<'_>,
        targets: &Targets<'_>,
        start: Array1<f64>,
    ) -> Result<FittedLogistic, HeadError> {
        if let Features::Dense(x) = x {
            check_training(x, targets)?;
        }
        let labels = targets.labels();
        let k = targets.n_classes();
        let row_weights = self.balanced.then(|| {
            let mut counts = vec![0usize; k];
            labels.iter().for_each(|&l| counts[l] += 1);
            let n = labels.len() as f64;
            let per_class: Vec<f64> = counts
                .iter()
                .map(|&c| {
                    if c > 0 {
                        n / (k as f64 * c as f64)
                    } else {
                        0.0
                    }
                })
                .collect();
            labels.iter().map(|&l| per_class[l]).collect::<Vec<f64>>()
        });
        let (weights, bias, report) =
            self.solve(x, Target::Classes(labels), k, row_weights.as_deref(), start);
        Ok(FittedLogistic {
            weights,
            bias,
            report,
        })
    }

    /// Minimises the objective for `target` from `start`; returns W (features × outputs), b and the report.
    fn solve<'t>(
        &self,
        rows: Features<'_>,
        target: Target<'t>,
        k: usize,
        row_weights: Option<&'t [f64]>,
        start: Array1<f64>,
    ) -> (Array2<f32>, Array1<f32>, TrainingReport) {
        let (n, d) = rows.dim();
        // Dense rows in another layout are copied once into row-major order.
        let copied: Option<Array2<f32>> = match rows {
            Features::Dense(dense) if !dense.is_standard_layout() => {
                Some(dense.as_standard_layout().into_owned())
            }
            _ => None,
        };
        let x = match (&copied, &rows) {
            (Some(dense), _) => Features::Dense(dense.view()),
            (None, Features::Dense(dense)) => Features::Dense(dense.view()),
            (None, Features::Sparse(sparse)) => Features::Sparse(sparse),
        };
        let reg = 1.0 / (self.c * n as f64);
        let fast = Problem {
            x,
            target,
            k,
            reg,
            fit_intercept: self.fit_intercept,
            row_weights,
            precision: Precision::Single,
        };
        let settings = Settings {
            max_iter: self.max_iter,
            tol: self.tol,
            memory: 10,
        };
        // Most of the way in f32 products; the last steps, where the objective's changes fall below f32's
        // resolution, in f64 (a gradient within tolerance in f32 is trusted down to 1e-6: its error is
        // orders of magnitude smaller).
        let mut outcome =
            lbfgs::minimize(|theta, grad| fast.evaluate(theta, grad), start, &settings);
        let finished = outcome.termination == Termination::MaxIterations
            || (outcome.termination == Termination::GradientTolerance && self.tol >= 1e-6)
            || matches!(x, Features::Sparse(_));
        if !finished {
            let exact = Problem {
                precision: Precision::Double,
                ..fast
            };
            let first = outcome.iterations;
            outcome = lbfgs::minimize(
                |theta, grad| exact.evaluate(theta, grad),
                outcome.x,
                &Settings {
                    max_iter: self.max_iter.saturating_sub(first),
                    ..settings
                },
            );
            outcome.iterations += first;
        }
        // The optimiser works on Wᵀ (outputs × features); the fitted head stores W.
        let weights = outcome
            .x
            .slice(s![..d * k])
            .to_owned()
            .into_shape_with_order((k, d))
            .expect("contiguous")
            .t()
            .mapv(|v| v as f32);
        let bias = outcome.x.slice(s![d * k..]).mapv(|v| v as f32);
        let report = TrainingReport {
            iterations: outcome.iterations,
            loss: outcome.value,
            gradient_norm: outcome.gradient_norm,
            termination: outcome.termination,
        };
        (weights, bias, report)
    }
}

/// What the objective fits: one class per row (softmax cross-entropy) or a label set per row (one sigmoid
/// and binary cross-entropy per label).
#[derive(Clone, Copy)]
enum Target<'a> {
    Classes(&'a [usize]),
    /// 0/1 indicators, rows × labels.
    Sets(ArrayView2<'a, f32>),
}

/// The training objective divided by `C·n`: mean cross-entropy + `reg/2 · ‖W‖²` with `reg = 1/(C·n)`.
/// Same minimiser as scikit-learn's form, with gradients that do not grow with the row count.
struct Problem<'x, 'a> {
    x: Features<'x>,
    target: Target<'a>,
    k: usize,
    reg: f64,
    fit_intercept: bool,
    /// Per-row loss weights (class balancing), or all ones.
    row_weights: Option<&'a [f64]>,
    precision: Precision,
}

/// The training rows: dense (standard, row-major layout) or sparse.
#[derive(Clone, Copy)]
enum Features<'x> {
    Dense(ArrayView2<'x, f32>),
    Sparse(&'x SparseRows),
}

impl Features<'_> {
    fn dim(&self) -> (usize, usize) {
        match self {
            Features::Dense(x) => x.dim(),
            Features::Sparse(x) => (x.nrows(), x.ncols()),
        }
    }
}

/// Rows per parallel work item; fixed, so the reduction order (and so every bit of the result) does not
/// depend on how many threads run. (Measured: 512 beats 64–256, whose per-product packing overhead
/// outweighs the better cache reuse.)
const BLOCK: usize = 512;
/// Groups of blocks summed separately (then in group order).
const GROUPS: usize = 16;

/// Arithmetic of the two matrix products in an evaluation (the loss and softmax are always f64).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// f32 products on the features as stored: about twice the speed, and no f64 copy of the rows; the
    /// objective is then accurate to ~1e-7, too coarse for line searches very near the optimum.
    Single,
    /// f64 products on an f64 copy of each block.
    Double,
}

impl Problem<'_, '_> {
    /// Returns the objective at `theta` = [Wᵀ (classes × features, row-major), b] and writes its gradient.
    ///
    /// One pass over the rows in blocks: per block the class scores `Z = X_b·W` and the gradient `R_bᵀ·X_b` of
    /// the softmax residuals as matrix products (cache-blocked SIMD kernels), in f64; blocks run on rayon's
    /// threads and are summed in block order, so every bit of the result is independent of the thread count.
    fn evaluate(&self, theta: &Array1<f64>, grad: &mut Array1<f64>) -> f64 {
        let (n, d) = self.x.dim();
        let k = self.k;
        let theta = theta.as_slice().expect("contiguous");
        let (wt, b) = theta.split_at(d * k);
        let wt = ArrayView2::from_shape((k, d), wt).expect("k × d weights");
        let wt32 = (self.precision == Precision::Single).then(|| wt.mapv(|v| v as f32));
        // A fixed number of groups of consecutive blocks, each summed in order into one accumulator: the
        // work spreads over the threads, and the reduction order depends on `n` only.
        let blocks = n.div_ceil(BLOCK);
        let groups = blocks.min(GROUPS);
        let partials: Vec<(f64, Vec<f64>)> = (0..groups)
            .into_par_iter()
            .map(|group| {
                let mut group_loss = 0.0;
                let mut group_grad = vec![0.0f64; d * k + k];
                for block in group * blocks / groups..(group + 1) * blocks / groups {
                    let rows = block * BLOCK..((block + 1) * BLOCK).min(n);
                    let dense = match &self.x {
                        Features::Dense(x) => Some(x.slice(s![rows.clone(), ..])),
                        Features::Sparse(_) => None,
                    };
                    let x64 = dense
                        .filter(|_| wt32.is_none())
                        .map(|x32| x32.mapv(f64::from));
                    let mut z = match (self.x, dense, &wt32, &x64) {
                        (Features::Sparse(x), ..) => sparse_scores(x, rows.clone(), wt),
                        (_, Some(x32), Some(w), _) => {
                            crate::kernels::scores(x32, w.view()).mapv(f64::from)
                        }
                        (_, _, None, Some(x)) => x.dot(&wt.t()),
                        _ => unreachable!("one precision is chosen"),
                    };
                    let mut loss = 0.0;
                    for (mut zr, i) in z.rows_mut().into_iter().zip(rows.clone()) {
                        if self.fit_intercept {
                            zr.iter_mut().zip(b).for_each(|(v, bc)| *v += bc);
                        }
                        let weight = self.row_weights.map_or(1.0, |w| w[i]);
                        match self.target {
                            Target::Classes(labels) => {
                                let max = zr.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                                let lse =
                                    max + zr.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                                let y = labels[i];
                                loss += weight * (lse - zr[y]);
                                // The row of Z becomes the row's residual: weight · (softmax − one-hot).
                                for (c, v) in zr.iter_mut().enumerate() {
                                    *v = weight
                                        * ((*v - lse).exp() - if c == y { 1.0 } else { 0.0 });
                                }
                            }
                            Target::Sets(y) => {
                                // Σ_labels softplus(z) − y·z; residual σ(z) − y.
                                for (c, v) in zr.iter_mut().enumerate() {
                                    let yc = f64::from(y[[i, c]]);
                                    let softplus = v.max(0.0) + (-v.abs()).exp().ln_1p();
                                    loss += weight * (softplus - yc * *v);
                                    *v = weight * (crate::sigmoid(*v) - yc);
                                }
                            }
                        }
                    }
                    match (self.x, dense, &x64) {
                        (Features::Sparse(x), ..) => {
                            sparse_gradient(x, rows.clone(), z.view(), &mut group_grad[..d * k]);
                        }
                        (_, _, Some(x)) => {
                            let gw = z.t().dot(x);
                            group_grad
                                .iter_mut()
                                .zip(gw.iter())
                                .for_each(|(a, b)| *a += b);
                        }
                        (_, Some(x32), None) => {
                            let gw = crate::kernels::gradient(x32, z.mapv(|v| v as f32).view());
                            group_grad
                                .iter_mut()
                                .zip(gw.iter())
                                .for_each(|(a, &b)| *a += f64::from(b));
                        }
                        _ => unreachable!("dense rows have a block"),
                    }
                    for (a, b) in group_grad[d * k..]
                        .iter_mut()
                        .zip(z.sum_axis(ndarray::Axis(0)))
                    {
                        *a += b;
                    }
                    group_loss += loss;
                }
                (group_loss, group_grad)
            })
            .collect();
        let inv_n = 1.0 / n as f64;
        let mut loss = 0.0;
        let grad = grad.as_slice_mut().expect("contiguous");
        grad.fill(0.0);
        for (block_loss, g) in partials {
            loss += block_loss;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let mut penalty = 0.0;
        for (gj, &wj) in grad[..d * k].iter_mut().zip(wt) {
            *gj = *gj * inv_n + self.reg * wj;
            penalty += wj * wj;
        }
        for gb in &mut grad[d * k..] {
            *gb = if self.fit_intercept { *gb * inv_n } else { 0.0 };
        }
        loss * inv_n + 0.5 * self.reg * penalty
    }
}

/// Scores `Z = X_rows · Wᵀ` of sparse rows, in f64 (the products cost the non-zeros only).
fn sparse_scores(
    x: &SparseRows,
    rows: std::ops::Range<usize>,
    wt: ArrayView2<'_, f64>,
) -> Array2<f64> {
    let k = wt.nrows();
    let mut z = Array2::zeros((rows.len(), k));
    for (out, i) in rows.enumerate() {
        let (columns, values) = x.row(i);
        for c in 0..k {
            let w = wt.row(c);
            z[[out, c]] = columns
                .iter()
                .zip(values)
                .map(|(&j, &v)| w[j] * f64::from(v))
                .sum();
        }
    }
    z
}

/// Adds `R_rowsᵀ · X_rows` of sparse rows to `grad` (outputs × features, row-major).
fn sparse_gradient(
    x: &SparseRows,
    rows: std::ops::Range<usize>,
    residuals: ArrayView2<'_, f64>,
    grad: &mut [f64],
) {
    let d = x.ncols();
    for (r, i) in rows.enumerate() {
        let (columns, values) = x.row(i);
        for (c, &residual) in residuals.row(r).iter().enumerate() {
            let out = &mut grad[c * d..(c + 1) * d];
            for (&j, &v) in columns.iter().zip(values) {
                out[j] += residual * f64::from(v);
            }
        }
    }
}

/// A trained multi-label logistic head: one independent sigmoid per label.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMultiLabelLogistic {
    weights: Array2<f32>,
    bias: Array1<f32>,
    report: TrainingReport,
}

impl FittedMultiLabelLogistic {
    /// Weights, features × labels.
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// Intercepts, one per label.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// How training went.
    pub fn report(&self) -> &TrainingReport {
        &self.report
    }

    /// Rebuilds a head from saved weights (features × labels) and intercepts.
    pub fn from_parts(
        weights: Array2<f32>,
        bias: Array1<f32>,
    ) -> Result<FittedMultiLabelLogistic, HeadError> {
        let single = FittedLogistic::from_parts(weights, bias)?;
        Ok(FittedMultiLabelLogistic {
            weights: single.weights,
            bias: single.bias,
            report: single.report,
        })
    }
}

impl FitMultiLabel for LogisticParams {
    type Fitted = FittedMultiLabelLogistic;

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelLogistic, HeadError> {
        self.clone().check()?.fit_multi_label(x, targets)
    }
}

impl FitMultiLabel for LogisticValidParams {
    type Fitted = FittedMultiLabelLogistic;

    /// Minimises `C · Σᵢ Σₗ BCE(yᵢₗ, σ(xᵢ·wₗ + bₗ)) + ½‖W‖²`: one-vs-rest logistic regressions sharing `C`,
    /// solved together.
    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelLogistic, HeadError> {
        check_multi_label(x, targets)?;
        if self.balanced {
            return Err(HeadError::InvalidParameter {
                name: "class_weight",
                value: "balanced".to_owned(),
                expected: "no class weights for multi-label targets (balanced weights are defined for one class per row)",
            });
        }
        let (d, k) = (x.ncols(), targets.n_labels());
        let y = targets.indicator();
        let (weights, bias, report) = self.solve(
            Features::Dense(x),
            Target::Sets(y.view()),
            k,
            None,
            Array1::zeros(d * k + k),
        );
        Ok(FittedMultiLabelLogistic {
            weights,
            bias,
            report,
        })
    }
}

impl PredictMultiLabel for FittedMultiLabelLogistic {
    fn n_features(&self) -> usize {
        self.weights.nrows()
    }

    fn n_labels(&self) -> usize {
        self.weights.ncols()
    }

    fn predict_scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        Ok((x.dot(&self.weights) + &self.bias).mapv(crate::sigmoid))
    }
}

impl Predict for FittedLogistic {
    fn n_features(&self) -> usize {
        self.weights.nrows()
    }

    fn n_classes(&self) -> usize {
        self.weights.ncols()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        let mut z = x.dot(&self.weights) + &self.bias;
        softmax_rows(&mut z);
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Axis, array};
    use proptest::prelude::*;

    use super::*;
    use crate::tests_support::blobs;

    #[test]
    fn sparse_rows_train_the_same_head_as_their_dense_copy() {
        // 300 rows × 60 columns, ~10% non-zero (TF-IDF-like), three classes from a linear rule.
        let (n, d) = (300, 60);
        let mut indptr = vec![0];
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        let mut labels = Vec::new();
        for i in 0..n {
            let mut score = [0.0f32; 3];
            for j in 0..d {
                if (i * 7 + j * 13) % 10 == 0 {
                    let v = ((i * 31 + j * 17) % 97) as f32 / 97.0;
                    indices.push(j);
                    values.push(v);
                    score[j % 3] += v;
                }
            }
            indptr.push(indices.len());
            labels.push(
                (0..3)
                    .max_by(|&a, &b| score[a].total_cmp(&score[b]))
                    .unwrap(),
            );
        }
        let sparse = SparseRows::new(indptr, indices, values, d).unwrap();
        let dense = sparse.to_dense();
        let targets = Targets::new(&labels, 3).unwrap();
        let params = Logistic::params()
            .c(1.0)
            .tol(1e-8)
            .max_iter(1000)
            .check()
            .unwrap();
        let from_sparse = params.fit_sparse(&sparse, &targets).unwrap();
        let from_dense = params.fit(dense.view(), &targets).unwrap();
        for (a, b) in from_sparse.weights().iter().zip(from_dense.weights()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(
            from_sparse.predict(dense.view()).unwrap(),
            from_dense.predict(dense.view()).unwrap()
        );
        assert_eq!(
            from_sparse.predict_sparse(&sparse).unwrap(),
            from_sparse.predict(dense.view()).unwrap()
        );
        // Parts that do not describe a matrix are refused.
        assert!(SparseRows::new(vec![0, 2], vec![1, 0], vec![1.0, 1.0], 2).is_err());
        assert!(SparseRows::new(vec![0, 1], vec![5], vec![1.0], 2).is_err());
        assert!(SparseRows::new(vec![0, 1], vec![0], vec![f32::NAN], 2).is_err());
    }

    #[test]
    fn separates_three_clusters() {
        let (x, y) = blobs();
        let head = Logistic::params()
            .fit(x.view(), &Targets::new(&y, 3).unwrap())
            .unwrap();
        assert_eq!(head.predict(x.view()).unwrap(), y);
        assert_eq!(head.report().termination, Termination::GradientTolerance);
        assert!(head.report().gradient_norm <= 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs();
        // Multi-label targets for the same rows: label 0 = class 0, label 1 = class ≥ 1, label 2 = odd rows.
        let sets: Vec<Vec<usize>> = y
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let mut s = vec![usize::from(c > 0)];
                if i % 2 == 1 {
                    s.push(2);
                }
                s
            })
            .collect();
        let indicator = LabelSets::new(&sets, 3).unwrap().indicator();
        let weights = [
            1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 0.2, 1.0, 1.0, 1.0, 1.0,
        ];
        for target in [Target::Classes(&y), Target::Sets(indicator.view())] {
            let problem = Problem {
                x: Features::Dense(x.view()),
                target,
                k: 3,
                reg: 0.3,
                fit_intercept: true,
                row_weights: Some(&weights),
                precision: Precision::Double,
            };
            let theta = Array1::from_iter((0..9).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3));
            let mut grad = Array1::zeros(9);
            problem.evaluate(&theta, &mut grad);
            let mut scratch = Array1::zeros(9);
            for i in 0..9 {
                let h = 1e-6;
                let (mut up, mut down) = (theta.clone(), theta.clone());
                up[i] += h;
                down[i] -= h;
                let numeric = (problem.evaluate(&up, &mut scratch)
                    - problem.evaluate(&down, &mut scratch))
                    / (2.0 * h);
                assert!(
                    (numeric - grad[i]).abs() < 1e-6,
                    "component {i}: {numeric} vs {}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn multi_label_logistic_learns_independent_labels() {
        // Label 0 when x₀ > 0, label 1 when x₁ > 0: any combination, including none and both.
        let x = ndarray::array![
            [1.0f32, 1.0],
            [1.2, -0.8],
            [-0.9, 1.1],
            [-1.1, -1.0],
            [0.8, 0.9],
            [0.9, -1.2],
            [-1.0, 0.7],
            [-0.7, -0.9]
        ];
        let sets = vec![
            vec![0, 1],
            vec![0],
            vec![1],
            vec![],
            vec![0, 1],
            vec![0],
            vec![1],
            vec![],
        ];
        let targets = LabelSets::new(&sets, 2).unwrap();
        let head = Logistic::params()
            .c(10.0)
            .fit_multi_label(x.view(), &targets)
            .unwrap();
        assert_eq!(head.predict_sets(x.view(), &[0.5, 0.5]).unwrap(), sets);
        let scores = head.predict_scores(x.view()).unwrap();
        assert!(scores.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(
            scores[[0, 0]] > 0.5 && scores[[0, 1]] > 0.5,
            "rows need not sum to one"
        );
        let err = Logistic::params()
            .balanced(true)
            .fit_multi_label(x.view(), &targets)
            .unwrap_err();
        assert!(err.to_string().contains("class_weight"), "{err}");
        let err = LabelSets::new(&[vec![2]], 2).unwrap_err();
        assert!(matches!(err, HeadError::LabelOutOfRange { label: 2, .. }));
    }

    #[test]
    fn optimum_satisfies_the_stationarity_condition() {
        // At the optimum the gradient of C·ΣCE + ½‖W‖² vanishes: W = C · Xᵀ(Y − P).
        let (x, y) = blobs();
        let c = 0.5;
        let head = Logistic::params()
            .c(c)
            .tol(1e-9)
            .fit(x.view(), &Targets::new(&y, 3).unwrap())
            .unwrap();
        let p = head.predict_proba(x.view()).unwrap();
        let mut residual = -p.mapv(f64::from);
        for (i, &label) in y.iter().enumerate() {
            residual[[i, label]] += 1.0;
        }
        let expected = x.mapv(f64::from).t().dot(&residual) * c;
        for (w, e) in head.weights().iter().zip(expected.iter()) {
            assert!((f64::from(*w) - e).abs() < 1e-4, "{w} vs {e}");
        }
        // The unpenalised intercept makes the residuals sum to zero per class.
        for s in residual.sum_axis(Axis(0)) {
            assert!(s.abs() < 1e-4, "{s}");
        }
    }

    #[test]
    fn warm_start_from_the_optimum_needs_almost_no_iterations() {
        let (x, y) = blobs();
        let t = Targets::new(&y, 3).unwrap();
        let params = Logistic::params().check().unwrap();
        let cold = params.fit(x.view(), &t).unwrap();
        let warm = params.fit_from(x.view(), &t, &cold).unwrap();
        assert!(warm.report().iterations <= 2, "{:?}", warm.report());
        assert_eq!(warm.predict(x.view()).unwrap(), y);
    }

    #[test]
    fn balanced_weights_favour_the_rare_class() {
        // One row of class 1 among nine of class 0, overlapping: balancing moves the boundary towards 0.
        let x = Array2::from_shape_fn((10, 1), |(i, _)| i as f32 / 10.0);
        let y = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        let t = Targets::new(&y, 2).unwrap();
        let plain = Logistic::params().fit(x.view(), &t).unwrap();
        let balanced = Logistic::params().balanced(true).fit(x.view(), &t).unwrap();
        let p_plain = plain.predict_proba(x.view()).unwrap()[[7, 1]];
        let p_balanced = balanced.predict_proba(x.view()).unwrap()[[7, 1]];
        assert!(p_balanced > p_plain + 0.2, "{p_plain} vs {p_balanced}");
    }

    #[test]
    fn smaller_c_shrinks_the_weights() {
        let (x, y) = blobs();
        let t = Targets::new(&y, 3).unwrap();
        let strong = Logistic::params().c(0.01).fit(x.view(), &t).unwrap();
        let weak = Logistic::params().c(100.0).fit(x.view(), &t).unwrap();
        let norm = |h: &FittedLogistic| h.weights().iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&strong) < norm(&weak) / 10.0);
    }

    #[test]
    fn invalid_parameters_are_named() {
        let err = Logistic::params().c(-1.0).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `c`: -1 (a positive finite number)"
        );
        let err = Logistic::params().tol(0.0).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `tol`: 0 (a positive finite number)"
        );
        let err = Logistic::params().max_iter(0).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `max_iter`: 0 (at least 1)"
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let x = array![[0.0f32, 1.0], [1.0, 0.0]];
        let err = Targets::new(&[0, 2], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label 2 at row 1 is not below the class count 2"
        );
        let err = Logistic::params()
            .fit(x.view(), &Targets::new(&[0, 0], 2).unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot train on 2 row(s) covering 1 class(es): need at least 2 classes"
        );
        let err = Logistic::params()
            .fit(x.view(), &Targets::new(&[0], 2).unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape mismatch in label count: expected 2, got 1"
        );
        let head = Logistic::params()
            .fit(x.view(), &Targets::new(&[0, 1], 2).unwrap())
            .unwrap();
        let err = head.predict(array![[1.0f32, 2.0, 3.0]].view()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape mismatch in feature columns: expected 2, got 3"
        );
        let err = head.predict(array![[f32::NAN, 2.0]].view()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature matrix contains a non-finite value at row 0, column 0"
        );
    }

    proptest! {
        #[test]
        fn probabilities_are_finite_and_sum_to_one(
            values in prop::collection::vec(-50.0f32..50.0, 24),
            query in prop::collection::vec(-1e3f32..1e3, 8),
        ) {
            let x = Array2::from_shape_vec((8, 3), values).unwrap();
            let y = [0, 1, 2, 0, 1, 2, 0, 1];
            let head = Logistic::params().max_iter(50).fit(x.view(), &Targets::new(&y, 3).unwrap()).unwrap();
            let q = Array2::from_shape_vec((2, 4), query).unwrap();
            let q = q.slice(s![.., ..3]);
            let p = head.predict_proba(q).unwrap();
            for row in p.rows() {
                prop_assert!(row.iter().all(|v| v.is_finite() && *v >= 0.0));
                prop_assert!((row.sum() - 1.0).abs() < 1e-5);
            }
        }

        #[test]
        fn training_row_order_does_not_change_the_model(seed in any::<u64>()) {
            let (x, y) = blobs();
            let mut order: Vec<usize> = (0..y.len()).collect();
            // A seeded permutation without an RNG dependency: sort by a hash of (seed, index).
            order.sort_by_key(|&i| (seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17));
            let xp = x.select(Axis(0), &order);
            let yp: Vec<usize> = order.iter().map(|&i| y[i]).collect();
            let a = Logistic::params().fit(x.view(), &Targets::new(&y, 3).unwrap()).unwrap();
            let b = Logistic::params().fit(xp.view(), &Targets::new(&yp, 3).unwrap()).unwrap();
            for (u, v) in a.predict_proba(x.view()).unwrap().iter().zip(b.predict_proba(x.view()).unwrap().iter()) {
                prop_assert!((u - v).abs() < 1e-4);
            }
        }
    }
}
