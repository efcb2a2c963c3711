//! Trained MLPs (single-label, multi-label, multitask) and the report of how training went.

use ndarray::{Array1, Array2, ArrayView2};

use super::network::{Layer, Network};
use super::objectives::softmax_blocks;
use super::params::{Activation, MlpParams, MlpValidParams};
use crate::{
    Fit, FitMultiLabel, HeadError, LabelSets, ParamGuard, Predict, PredictMultiLabel, Targets,
    check_features,
};

/// One epoch of training as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch's batches (with dropout on).
    pub train_loss: f64,
    /// Validation cross-entropy after the epoch, when validation rows were given.
    pub validation_loss: Option<f64>,
    /// Validation accuracy after the epoch, when validation rows were given.
    pub validation_accuracy: Option<f64>,
}

/// How training went.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpReport {
    /// Epochs trained.
    pub epochs_run: usize,
    /// The epoch with the best monitored validation score, when validation rows were given.
    pub best_epoch: Option<usize>,
    /// Whether patience ran out before `max_epochs`.
    pub stopped_early: bool,
    /// Per-epoch losses and validation scores: the training curve.
    pub history: Vec<EpochRecord>,
}

/// A trained [`Mlp`] head.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMlp {
    pub(crate) net: Network<f32>,
    pub(crate) report: MlpReport,
}

impl FittedMlp {
    /// The layers as (weights in × out, bias) pairs, input side first; the last is the output layer.
    pub fn layers(&self) -> Vec<(&Array2<f32>, &Array1<f32>)> {
        self.net.layers.iter().map(|l| (&l.w, &l.b)).collect()
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.net.activation
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }

    /// Rebuilds a head from saved layers (weights in × out, bias), checking that consecutive shapes fit.
    pub fn from_layers(
        layers: Vec<(Array2<f32>, Array1<f32>)>,
        activation: Activation,
    ) -> Result<FittedMlp, HeadError> {
        if layers.is_empty() {
            return Err(HeadError::ShapeMismatch {
                what: "layer count",
                expected: 1,
                got: 0,
            });
        }
        for (i, (w, b)) in layers.iter().enumerate() {
            if w.ncols() != b.len() {
                return Err(HeadError::ShapeMismatch {
                    what: "bias length",
                    expected: w.ncols(),
                    got: b.len(),
                });
            }
            if i > 0 && layers[i - 1].0.ncols() != w.nrows() {
                return Err(HeadError::ShapeMismatch {
                    what: "layer input width",
                    expected: layers[i - 1].0.ncols(),
                    got: w.nrows(),
                });
            }
        }
        Ok(FittedMlp {
            net: Network {
                layers: layers.into_iter().map(|(w, b)| Layer { w, b }).collect(),
                activation,
            },
            report: MlpReport {
                epochs_run: 0,
                best_epoch: None,
                stopped_early: false,
                history: Vec::new(),
            },
        })
    }
}

impl Fit for MlpParams {
    type Fitted = FittedMlp;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedMlp, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for MlpValidParams {
    type Fitted = FittedMlp;

    /// Trains all `max_epochs` on `x` (no validation rows, so no early stopping).
    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedMlp, HeadError> {
        self.fit_with_validation(x, targets, None)
    }
}

impl Predict for FittedMlp {
    fn n_features(&self) -> usize {
        self.net.layers[0].w.nrows()
    }

    fn n_classes(&self) -> usize {
        self.net
            .layers
            .last()
            .expect("at least one layer")
            .w
            .ncols()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        Ok(self.net.forward_proba(x))
    }
}

/// One task's labels for [`MlpValidParams::fit_multitask`]: a class per row, or `None` where the row is not
/// labelled for this task.
#[derive(Debug, Clone, Copy)]
pub struct TaskTargets<'a> {
    pub(crate) labels: &'a [Option<usize>],
    pub(crate) n_classes: usize,
}

impl<'a> TaskTargets<'a> {
    /// Checks that every label is below `n_classes` and that at least two classes exist.
    pub fn new(
        labels: &'a [Option<usize>],
        n_classes: usize,
    ) -> Result<TaskTargets<'a>, HeadError> {
        if n_classes < 2 || labels.iter().flatten().any(|&l| l >= n_classes) {
            return Err(HeadError::Degenerate {
                rows: labels.len(),
                classes: n_classes,
            });
        }
        Ok(TaskTargets { labels, n_classes })
    }
}

/// A trained multitask [`Mlp`]: a shared trunk and one softmax block per task.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMultitaskMlp {
    pub(crate) net: Network<f32>,
    pub(crate) widths: Vec<usize>,
    pub(crate) report: MlpReport,
}

impl FittedMultitaskMlp {
    /// Class probabilities of every task, in task order (rows × that task's classes).
    pub fn predict_proba_tasks(
        &self,
        x: ArrayView2<'_, f32>,
    ) -> Result<Vec<Array2<f32>>, HeadError> {
        check_features(x, Some(self.net.layers[0].w.nrows()))?;
        let mut z = self.net.logits(x);
        softmax_blocks(&mut z, &self.widths);
        let mut start = 0;
        Ok(self
            .widths
            .iter()
            .map(|&w| {
                let block = z.slice(ndarray::s![.., start..start + w]).to_owned();
                start += w;
                block
            })
            .collect())
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }
}

/// A trained multi-label [`Mlp`] head (one sigmoid output per label).
#[derive(Debug, Clone, PartialEq)]
pub struct FittedMultiLabelMlp {
    pub(crate) net: Network<f32>,
    pub(crate) report: MlpReport,
}

impl FittedMultiLabelMlp {
    /// The layers as (weights in × out, bias) pairs, input side first; the last is the output layer.
    pub fn layers(&self) -> Vec<(&Array2<f32>, &Array1<f32>)> {
        self.net.layers.iter().map(|l| (&l.w, &l.b)).collect()
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.net.activation
    }

    /// How training went.
    pub fn report(&self) -> &MlpReport {
        &self.report
    }

    /// Rebuilds a head from saved layers, as [`FittedMlp::from_layers`].
    pub fn from_layers(
        layers: Vec<(Array2<f32>, Array1<f32>)>,
        activation: Activation,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        let FittedMlp { net, report } = FittedMlp::from_layers(layers, activation)?;
        Ok(FittedMultiLabelMlp { net, report })
    }
}

impl FitMultiLabel for MlpParams {
    type Fitted = FittedMultiLabelMlp;

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        self.clone().check()?.fit_multi_label(x, targets)
    }
}

impl FitMultiLabel for MlpValidParams {
    type Fitted = FittedMultiLabelMlp;

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
    ) -> Result<FittedMultiLabelMlp, HeadError> {
        self.fit_multi_label_with_validation(x, targets, None)
    }
}

impl PredictMultiLabel for FittedMultiLabelMlp {
    fn n_features(&self) -> usize {
        self.net.layers[0].w.nrows()
    }

    fn n_labels(&self) -> usize {
        self.net
            .layers
            .last()
            .expect("at least one layer")
            .w
            .ncols()
    }

    fn predict_scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        Ok(self.net.logits(x).mapv(crate::sigmoid))
    }
}
