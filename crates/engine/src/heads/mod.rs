//! The heads of a pipeline trained on extracted features, with what applies around every kind (the fitted
//! transform before, the temperature or the multi-label thresholds after); each kind's own training is its
//! graft-headkit module's. `artefact.rs` writes and reads the files a run leaves (`heads/<name>.safetensors`
//! + `heads/<name>.json`).

mod artefact;

pub use artefact::{ArtefactInfo, LoadedHead, load_head, save_head, save_head_as};

use std::sync::Arc;

use graft_headkit::{Figures, Model};
use graft_heads::{
    FittedTransform, HeadError, LabelSets, Targets, TemperatureScaling, threshold_rows,
    tune_thresholds,
};
use ndarray::{Array2, ArrayView2};

use graft_config::{HeadSpec, Threshold};
use graft_report::{CurvePoint, TrainingFigures};

/// A fitted head of any kind (graft-headkit's [`Model`](graft_headkit::Model)).
pub type FittedHead = Arc<dyn Model>;

/// A trained head with everything applied around it: the fitted transform before, the temperature after.
#[derive(Debug, Clone)]
pub struct TrainedHead {
    /// Settings it was trained with.
    pub spec: HeadSpec,
    /// The transform fitted on the training rows, shared by all heads of a run.
    pub transform: Option<FittedTransform>,
    /// The head.
    pub head: FittedHead,
    /// Fitted temperature.
    pub temperature: Option<TemperatureScaling>,
    /// Multi-label heads: each label's decision threshold.
    pub thresholds: Option<Vec<f32>>,
}

impl TrainedHead {
    /// Class probabilities for raw (untransformed) features; for a multi-label head, each label's
    /// probability (rows need not sum to one).
    pub fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        let proba = match &self.transform {
            Some(t) => self.head.scores(t.transform(x)?.view())?,
            None => self.head.scores(x)?,
        };
        Ok(match &self.temperature {
            Some(t) => t.apply(proba.view()),
            None => proba,
        })
    }

    /// Each row's predicted label set (multi-label heads), or its most probable class as a one-element set.
    pub fn predict_sets(&self, x: ArrayView2<'_, f32>) -> Result<Vec<Vec<usize>>, HeadError> {
        let scores = self.predict_proba(x)?;
        Ok(match &self.thresholds {
            Some(t) => threshold_rows(scores.view(), t),
            None => graft_heads::argmax_rows(scores.view())
                .into_iter()
                .map(|c| vec![c])
                .collect(),
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        match &self.transform {
            Some(t) => t.n_features(),
            None => self.head.n_features(),
        }
    }

    /// Number of classes (labels, for a multi-label head).
    pub fn n_classes(&self) -> usize {
        self.head.n_outputs()
    }

    /// Whether the head predicts label sets.
    pub fn is_multi_label(&self) -> bool {
        self.thresholds.is_some()
    }
}

/// Trains one head on (already transformed) training rows; validation rows drive early stopping and the
/// temperature.
pub fn train_head(
    spec: &HeadSpec,
    transform: Option<&FittedTransform>,
    x_train: ArrayView2<'_, f32>,
    targets: &Targets<'_>,
    validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
) -> Result<(TrainedHead, TrainingFigures), HeadError> {
    let fitted = spec.kind.head().fit(x_train, targets, validation)?;
    let temperature = match (spec.calibrate, validation) {
        (true, Some((xv, tv))) => {
            let proba = fitted.model.scores(xv)?;
            Some(TemperatureScaling::fit(proba.view(), tv)?)
        }
        _ => None,
    };
    let figures = training_figures(spec, fitted.figures, temperature.map(|t| t.temperature()));
    Ok((
        TrainedHead {
            spec: spec.clone(),
            transform: transform.cloned(),
            head: fitted.model,
            temperature,
            thresholds: None,
        },
        figures,
    ))
}

/// A kind's training figures as the report records them.
fn training_figures(spec: &HeadSpec, f: Figures, temperature: Option<f64>) -> TrainingFigures {
    TrainingFigures {
        head: spec.name().to_owned(),
        iterations: f.iterations,
        loss: f.loss,
        termination: f.termination,
        temperature,
        curve: f
            .curve
            .into_iter()
            .map(|e| CurvePoint {
                epoch: e.epoch,
                train_loss: e.train_loss,
                validation_loss: e.validation_loss,
                validation_accuracy: e.validation_accuracy,
            })
            .collect(),
        best_epoch: f.best_epoch,
        stopped_early: f.stopped_early,
    }
}

/// Trains one multi-label head (logistic or MLP) on (already transformed) training rows and sets its
/// thresholds (tuned on the validation rows when the spec says so).
pub fn train_multi_label_head(
    spec: &HeadSpec,
    transform: Option<&FittedTransform>,
    x_train: ArrayView2<'_, f32>,
    targets: &LabelSets<'_>,
    validation: Option<(ArrayView2<'_, f32>, &LabelSets<'_>)>,
) -> Result<(TrainedHead, TrainingFigures), HeadError> {
    let fitted = spec
        .kind
        .head()
        .fit_multi_label(x_train, targets, validation)?;
    let head = fitted.model;
    let n_labels = targets.n_labels();
    let thresholds = match (spec.multi_label, validation) {
        (Some(Threshold::Tuned), Some((xv, tv))) => tune_thresholds(head.scores(xv)?.view(), tv),
        (Some(Threshold::Tuned), None) => {
            return Err(HeadError::InvalidParameter {
                name: "threshold",
                value: "tune".to_owned(),
                expected: "validation rows to tune on (give the validation split a share)",
            });
        }
        (Some(Threshold::Fixed(t)), _) => vec![t; n_labels],
        (None, _) => vec![0.5; n_labels],
    };
    let figures = training_figures(spec, fitted.figures, None);
    Ok((
        TrainedHead {
            spec: spec.clone(),
            transform: transform.cloned(),
            head,
            temperature: None,
            thresholds: Some(thresholds),
        },
        figures,
    ))
}
