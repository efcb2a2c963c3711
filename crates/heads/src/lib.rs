//! Trainable classification heads on frozen features.
//!
//! Every head follows one shape, after linfa: an unchecked `…Params` builder whose setters document their
//! defaults, [`ParamGuard::check`] turning it into validated params (an error names the offending parameter),
//! [`Fit::fit`] producing a separate fitted type, and [`Predict`] on that fitted type only. Logistic and MLP
//! heads also have multi-label variants in the same shape ([`FitMultiLabel`] on [`LabelSets`],
//! [`PredictMultiLabel`]: one sigmoid per label, binary cross-entropy, a threshold per label, which
//! [`tune_thresholds`] can fit on validation rows).
//!
//! ```
//! use graft_heads::{FitMultiLabel, LabelSets, Logistic, PredictMultiLabel};
//! use ndarray::array;
//!
//! # fn main() -> Result<(), graft_heads::HeadError> {
//! // Label 0 when x₀ > 0, label 1 when x₁ > 0: a row may carry none, one or both.
//! let x = array![[1.0f32, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]];
//! let sets = vec![vec![0, 1], vec![0], vec![1], vec![]];
//! let head = Logistic::params().c(10.0).fit_multi_label(x.view(), &LabelSets::new(&sets, 2)?)?;
//! assert_eq!(head.predict_sets(x.view(), &[0.5, 0.5])?, sets);
//! # Ok(())
//! # }
//! ```
//!
//! ```
//! use graft_heads::{Fit, Logistic, Predict, Targets};
//! use ndarray::array;
//!
//! # fn main() -> Result<(), graft_heads::HeadError> {
//! let x = array![[0.0f32, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]];
//! let y = [0, 0, 1, 1];
//! let head = Logistic::params().c(10.0).fit(x.view(), &Targets::new(&y, 2)?)?;
//! assert_eq!(head.predict(x.view())?, vec![0, 0, 1, 1]);
//! let proba = head.predict_proba(x.view())?;
//! assert!((proba.row(0).sum() - 1.0).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

mod calibration;
mod episodic;
mod kernels;
mod knn;
mod layer_mix;
mod lbfgs;
mod logistic;
mod mlp;
mod prototype;
mod ridge;
mod sparse;
mod transform;

use ndarray::{Array2, ArrayView2};

pub use calibration::TemperatureScaling;
pub use episodic::{EpisodicParams, EpisodicProjection, FittedProjection};
pub use knn::{FittedKnn, Knn, KnnParams, KnnValidParams, Weighting};
pub use layer_mix::{FittedLayerMix, LayerMix, LayerMixParams, LayerMixValidParams};
pub use lbfgs::Termination;
pub use logistic::{
    FittedLogistic, FittedMultiLabelLogistic, Logistic, LogisticParams, LogisticValidParams,
    TrainingReport,
};
pub use mlp::{
    Activation, EpochRecord, FittedMlp, FittedMultiLabelMlp, FittedMultitaskMlp, Mlp, MlpParams,
    MlpReport, MlpValidParams, Monitor, Schedule, TaskTargets,
};
pub use prototype::{FittedPrototype, Metric, Prototype, PrototypeParams, PrototypeValidParams};
pub use ridge::{FittedRidge, Ridge, RidgeParams, RidgeValidParams};
pub use sparse::SparseRows;
pub use transform::{FittedTransform, TransformKind, coral};

/// Everything that can go wrong while configuring, training or applying a head.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeadError {
    /// A hyperparameter outside its valid range.
    #[error("invalid value for `{name}`: {value} ({expected})")]
    InvalidParameter {
        /// The parameter's name as written in pipeline files.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// Arrays whose sizes do not fit together.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which quantity.
        what: &'static str,
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A label not below the declared class count.
    #[error("label {label} at row {row} is not below the class count {n_classes}")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// Its row.
        row: usize,
        /// Declared number of classes.
        n_classes: usize,
    },
    /// Too few classes or rows to learn anything.
    #[error("cannot train on {rows} row(s) covering {classes} class(es): need at least 2 classes")]
    Degenerate {
        /// Rows given.
        rows: usize,
        /// Distinct classes among them.
        classes: usize,
    },
    /// Training blew up: the loss became NaN or infinite.
    #[error(
        "the {head}'s training diverged at epoch {epoch} (its weights or loss are no longer finite numbers); lower `{setting}` (now {value:?})"
    )]
    Diverged {
        /// The head.
        head: &'static str,
        /// The 1-based epoch whose loss was not finite.
        epoch: usize,
        /// The hyperparameter to lower.
        setting: &'static str,
        /// Its value.
        value: f64,
    },
    /// NaN or infinite feature values.
    #[error("feature matrix contains a non-finite value at row {row}, column {column}")]
    NonFinite {
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        column: usize,
    },
}

/// Class labels with the number of classes they are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    labels: &'a [usize],
    n_classes: usize,
}

impl<'a> Targets<'a> {
    /// Checks that every label is below `n_classes`.
    pub fn new(labels: &'a [usize], n_classes: usize) -> Result<Targets<'a>, HeadError> {
        if let Some((row, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= n_classes) {
            return Err(HeadError::LabelOutOfRange {
                label,
                row,
                n_classes,
            });
        }
        Ok(Targets { labels, n_classes })
    }

    /// The labels.
    pub fn labels(&self) -> &'a [usize] {
        self.labels
    }

    /// The number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }
}

/// Multi-label targets: each row's set of label indices (possibly empty), with the number of labels.
#[derive(Debug, Clone)]
pub struct LabelSets<'a> {
    sets: &'a [Vec<usize>],
    n_labels: usize,
}

impl<'a> LabelSets<'a> {
    /// Checks that every label is below `n_labels`.
    pub fn new(sets: &'a [Vec<usize>], n_labels: usize) -> Result<LabelSets<'a>, HeadError> {
        for (row, set) in sets.iter().enumerate() {
            if let Some(&label) = set.iter().find(|&&l| l >= n_labels) {
                return Err(HeadError::LabelOutOfRange {
                    label,
                    row,
                    n_classes: n_labels,
                });
            }
        }
        Ok(LabelSets { sets, n_labels })
    }

    /// The sets.
    pub fn sets(&self) -> &'a [Vec<usize>] {
        self.sets
    }

    /// The number of labels.
    pub fn n_labels(&self) -> usize {
        self.n_labels
    }

    /// The 0/1 indicator matrix, rows × labels.
    pub fn indicator(&self) -> Array2<f32> {
        let mut y = Array2::zeros((self.sets.len(), self.n_labels));
        for (row, set) in self.sets.iter().enumerate() {
            for &l in set {
                y[[row, l]] = 1.0;
            }
        }
        y
    }
}

/// Multi-label training: each label is its own yes/no decision (sigmoid outputs, binary cross-entropy).
pub trait FitMultiLabel {
    /// The trained head.
    type Fitted: PredictMultiLabel;
    /// Trains on `x` (rows × features) and each row's label set.
    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<Self::Fitted, HeadError>;
}

/// Inference with a fitted multi-label head.
pub trait PredictMultiLabel {
    /// Number of input features expected.
    fn n_features(&self) -> usize;
    /// Number of labels.
    fn n_labels(&self) -> usize;
    /// Each label's probability, independently (rows need not sum to one), rows × labels.
    fn predict_scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError>;
    /// The labels whose probability reaches `thresholds` (one per label).
    fn predict_sets(
        &self,
        x: ArrayView2<'_, f32>,
        thresholds: &[f32],
    ) -> Result<Vec<Vec<usize>>, HeadError> {
        if thresholds.len() != self.n_labels() {
            return Err(HeadError::ShapeMismatch {
                what: "threshold count",
                expected: self.n_labels(),
                got: thresholds.len(),
            });
        }
        Ok(threshold_rows(self.predict_scores(x)?.view(), thresholds))
    }
}

/// Each row's labels whose probability reaches its threshold.
pub fn threshold_rows(scores: ArrayView2<'_, f32>, thresholds: &[f32]) -> Vec<Vec<usize>> {
    scores
        .rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .zip(thresholds)
                .enumerate()
                .filter(|(_, (p, t))| p >= t)
                .map(|(l, _)| l)
                .collect()
        })
        .collect()
}

/// Per-label thresholds that maximise each label's F1 on held-out `scores` (rows × labels) and their true
/// sets: the midpoint between consecutive distinct scores where F1 peaks (ties go to the threshold nearest
/// ½); a label with no positive row keeps ½.
pub fn tune_thresholds(scores: ArrayView2<'_, f32>, targets: &LabelSets<'_>) -> Vec<f32> {
    let y = targets.indicator();
    (0..scores.ncols())
        .map(|l| {
            let mut rows: Vec<(f32, bool)> = scores
                .column(l)
                .iter()
                .zip(y.column(l))
                .map(|(&p, &t)| (p, t > 0.5))
                .collect();
            let positives = rows.iter().filter(|(_, t)| *t).count();
            if positives == 0 {
                return 0.5;
            }
            rows.sort_by(|a, b| b.0.total_cmp(&a.0));
            // Predicting the top `i + 1` rows positive, for each cut between distinct scores.
            let (mut best, mut best_f1) = (0.5f32, -1.0f64);
            let mut tp = 0usize;
            for i in 0..rows.len() {
                tp += usize::from(rows[i].1);
                if i + 1 < rows.len() && rows[i + 1].0 == rows[i].0 {
                    continue;
                }
                let f1 = 2.0 * tp as f64 / (i + 1 + positives) as f64;
                let threshold = match rows.get(i + 1) {
                    Some(next) => (rows[i].0 + next.0) / 2.0,
                    None => rows[i].0,
                };
                if f1 > best_f1 + 1e-12
                    || ((f1 - best_f1).abs() <= 1e-12
                        && (threshold - 0.5).abs() < (best - 0.5).abs())
                {
                    best = threshold;
                    best_f1 = f1;
                }
            }
            best
        })
        .collect()
}

/// Checks shared by multi-label training: one set per row, finite features, every label both present and
/// absent somewhere (otherwise its decision cannot be learned).
pub(crate) fn check_multi_label(
    x: ArrayView2<'_, f32>,
    targets: &LabelSets<'_>,
) -> Result<(), HeadError> {
    if x.nrows() != targets.sets().len() {
        return Err(HeadError::ShapeMismatch {
            what: "label-set count",
            expected: x.nrows(),
            got: targets.sets().len(),
        });
    }
    check_features(x, None)?;
    if targets.n_labels() == 0 || x.nrows() < 2 {
        return Err(HeadError::Degenerate {
            rows: x.nrows(),
            classes: targets.n_labels(),
        });
    }
    Ok(())
}

pub(crate) fn sigmoid<A: num_traits::Float>(z: A) -> A {
    if z >= A::zero() {
        A::one() / (A::one() + (-z).exp())
    } else {
        let e = z.exp();
        e / (A::one() + e)
    }
}

/// Validation of unchecked hyperparameters.
pub trait ParamGuard {
    /// The validated parameters.
    type Checked;
    /// Validates, naming the first invalid parameter in the error.
    fn check(self) -> Result<Self::Checked, HeadError>;
}

/// Training: turns hyperparameters and data into a fitted head.
pub trait Fit {
    /// The trained head.
    type Fitted: Predict;
    /// Trains on `x` (rows × features) and `targets`.
    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>)
    -> Result<Self::Fitted, HeadError>;
}

/// Inference with a fitted head.
pub trait Predict {
    /// Number of input features expected.
    fn n_features(&self) -> usize;
    /// Number of classes predicted.
    fn n_classes(&self) -> usize;
    /// Class probabilities, rows × classes; each row sums to one.
    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError>;
    /// The most probable class per row (the lowest index on ties).
    fn predict(&self, x: ArrayView2<'_, f32>) -> Result<Vec<usize>, HeadError> {
        Ok(argmax_rows(self.predict_proba(x)?.view()))
    }
}

/// The index of each row's largest value (the lowest index on ties): the predicted class of probabilities.
pub fn argmax_rows(proba: ArrayView2<'_, f32>) -> Vec<usize> {
    proba
        .rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &p)| {
                    if p > best.1 { (i, p) } else { best }
                })
                .0
        })
        .collect()
}

/// Turns each row of scores into probabilities, in place (max-shifted for stability).
pub(crate) fn softmax_rows<A: num_traits::Float>(z: &mut Array2<A>) {
    for mut row in z.rows_mut() {
        let max = row.fold(A::neg_infinity(), |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.fold(A::zero(), |s, &v| s + v);
        row.mapv_inplace(|v| v / sum);
    }
}

pub(crate) fn check_features(
    x: ArrayView2<'_, f32>,
    expected: Option<usize>,
) -> Result<(), HeadError> {
    if let Some(expected) = expected
        && x.ncols() != expected
    {
        return Err(HeadError::ShapeMismatch {
            what: "feature columns",
            expected,
            got: x.ncols(),
        });
    }
    // A branch-free pass first (vectorised; the common case), the element's position only when one is bad.
    let any_bad = |values: &[f32]| {
        values
            .chunks(4096)
            .any(|c| c.iter().fold(false, |bad, v| bad | !v.is_finite()))
    };
    let bad = match x.as_slice() {
        Some(values) => any_bad(values),
        None => x.rows().into_iter().any(|r| match r.as_slice() {
            Some(values) => any_bad(values),
            None => r.iter().any(|v| !v.is_finite()),
        }),
    };
    if bad && let Some(((row, column), _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(HeadError::NonFinite { row, column });
    }
    Ok(())
}

/// Checks shared by every head's training: one label per row, finite features, at least two classes.
pub(crate) fn check_training(
    x: ArrayView2<'_, f32>,
    targets: &Targets<'_>,
) -> Result<(), HeadError> {
    check_features(x, None)?;
    check_training_rows(x.nrows(), targets)
}

/// One label per row, and at least two classes among them.
pub(crate) fn check_training_rows(rows: usize, targets: &Targets<'_>) -> Result<(), HeadError> {
    let labels = targets.labels();
    if rows != labels.len() {
        return Err(HeadError::ShapeMismatch {
            what: "label count",
            expected: rows,
            got: labels.len(),
        });
    }
    let mut present = vec![false; targets.n_classes()];
    labels.iter().for_each(|&l| present[l] = true);
    let distinct = present.iter().filter(|&&p| p).count();
    if distinct < 2 {
        return Err(HeadError::Degenerate {
            rows: labels.len(),
            classes: distinct,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn tuned_thresholds_separate_what_a_fixed_half_does_not() {
        // Label 0 is positive exactly when its score exceeds 0.3; label 1 has no positive row.
        let scores = array![
            [0.9f32, 0.2],
            [0.35, 0.1],
            [0.32, 0.45],
            [0.2, 0.3],
            [0.1, 0.4]
        ];
        let sets = vec![vec![0], vec![0], vec![0], vec![], vec![]];
        let t = tune_thresholds(scores.view(), &LabelSets::new(&sets, 2).unwrap());
        assert!((t[0] - 0.26).abs() < 1e-6, "{t:?}");
        assert_eq!(t[1], 0.5);
        assert_eq!(threshold_rows(scores.view(), &t), sets);
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use ndarray::Array2;

    /// Three well-separated clusters in 2-D, five fixed points each (no RNG needed).
    pub fn blobs() -> (Array2<f32>, Vec<usize>) {
        let centres = [(0.0f32, 0.0f32), (4.0, 0.0), (0.0, 4.0)];
        let offsets = [
            (-0.5f32, -0.3f32),
            (0.4, 0.2),
            (0.1, -0.6),
            (-0.2, 0.5),
            (0.6, 0.6),
        ];
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (c, (cx, cy)) in centres.iter().enumerate() {
            for (ox, oy) in offsets {
                x.extend([cx + ox, cy + oy]);
                y.push(c);
            }
        }
        (Array2::from_shape_vec((15, 2), x).expect("15 × 2"), y)
    }
}

#[cfg(test)]
mod properties {
    use ndarray::{Array2, Axis};
    use proptest::prelude::*;

    use super::*;

    fn every_head(x: ArrayView2<'_, f32>, t: &Targets<'_>) -> Vec<Box<dyn Predict>> {
        vec![
            Box::new(Logistic::params().max_iter(50).fit(x, t).unwrap()),
            Box::new(
                Mlp::params()
                    .hidden(&[4])
                    .max_epochs(3)
                    .batch_size(4)
                    .fit(x, t)
                    .unwrap(),
            ),
            Box::new(Prototype::params().fit(x, t).unwrap()),
            Box::new(
                Prototype::params()
                    .metric(Metric::Euclidean)
                    .fit(x, t)
                    .unwrap(),
            ),
            Box::new(
                Knn::params()
                    .k(3)
                    .weighting(Weighting::Distance)
                    .fit(x, t)
                    .unwrap(),
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_head_gives_finite_probabilities_summing_to_one(
            values in prop::collection::vec(-20.0f32..20.0, 36),
            query in prop::collection::vec(-1e3f32..1e3, 12),
        ) {
            let x = Array2::from_shape_vec((12, 3), values).unwrap();
            let y = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2];
            let t = Targets::new(&y, 3).unwrap();
            let q = Array2::from_shape_vec((4, 3), query).unwrap();
            for head in every_head(x.view(), &t) {
                let p = head.predict_proba(q.view()).unwrap();
                for row in p.rows() {
                    prop_assert!(row.iter().all(|v| v.is_finite() && *v >= 0.0), "{p}");
                    prop_assert!((row.sum() - 1.0).abs() < 1e-4, "{p}");
                }
            }
        }

        #[test]
        fn statistic_heads_ignore_training_row_order(seed in any::<u64>()) {
            let (x, y) = tests_support::blobs();
            let mut order: Vec<usize> = (0..y.len()).collect();
            order.sort_by_key(|&i| (seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17));
            let xp = x.select(Axis(0), &order);
            let yp: Vec<usize> = order.iter().map(|&i| y[i]).collect();
            let (t, tp) = (Targets::new(&y, 3).unwrap(), Targets::new(&yp, 3).unwrap());
            let pairs: Vec<(Box<dyn Predict>, Box<dyn Predict>)> = vec![
                (Box::new(Prototype::params().fit(x.view(), &t).unwrap()),
                 Box::new(Prototype::params().fit(xp.view(), &tp).unwrap())),
                (Box::new(Knn::params().k(4).metric(Metric::Euclidean).fit(x.view(), &t).unwrap()),
                 Box::new(Knn::params().k(4).metric(Metric::Euclidean).fit(xp.view(), &tp).unwrap())),
            ];
            for (a, b) in pairs {
                let (pa, pb) = (a.predict_proba(x.view()).unwrap(), b.predict_proba(x.view()).unwrap());
                for (u, v) in pa.iter().zip(pb.iter()) {
                    prop_assert!((u - v).abs() < 1e-5);
                }
            }
        }
    }
}
