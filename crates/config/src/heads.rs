//! The heads and transform a pipeline declares, checked: what the engine trains.

use graft_heads::{
    Activation, FittedTransform, HeadError, Knn, KnnValidParams, Logistic, LogisticValidParams,
    Metric, Mlp, MlpValidParams, Monitor, ParamGuard, Prototype, PrototypeValidParams, Schedule,
    Weighting,
};
use ndarray::ArrayView2;

use crate::resolved::{
    HeadKindSettings, HeadSettings, KnnSettings, LogisticSettings, MlpSettings, PrototypeSettings,
    ThresholdSetting, TransformSettings, TuneWord,
};

/// One head's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadKind {
    /// Multinomial logistic regression.
    Logistic(LogisticValidParams),
    /// Multilayer perceptron.
    Mlp(MlpValidParams),
    /// Nearest class mean.
    Prototype(PrototypeValidParams),
    /// k-nearest neighbours.
    Knn(KnnValidParams),
}

/// A head as the pipeline declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSpec {
    /// Which head, with its checked hyperparameters.
    pub kind: HeadKind,
    /// Fit a temperature on the validation split and apply it to the probabilities.
    pub calibrate: bool,
    /// For multi-label data: how each label's decision threshold is set (`None`: single-label).
    pub multi_label: Option<Threshold>,
}

/// How a multi-label head turns per-label probabilities into a label set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// The same probability for every label.
    Fixed(f32),
    /// Per label, the threshold that maximises F1 on the validation rows.
    Tuned,
}

/// The feature transform fitted before the heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransformPlan {
    /// Per-feature standardisation.
    Standardize,
    /// PCA whitening.
    PcaWhiten {
        /// Leading components kept (all when `None`).
        components: Option<usize>,
        /// Added to each eigenvalue before the square root.
        epsilon: f64,
    },
}

impl HeadSpec {
    /// The same head without temperature scaling: for fits that have no validation rows to calibrate on, or
    /// only compare predicted classes (which calibration does not change).
    pub fn uncalibrated(&self) -> HeadSpec {
        HeadSpec {
            calibrate: false,
            ..self.clone()
        }
    }

    /// The head's name: its table name in the pipeline, and its artefact file stem.
    pub fn name(&self) -> &'static str {
        match self.kind {
            HeadKind::Logistic(_) => "logistic",
            HeadKind::Mlp(_) => "mlp",
            HeadKind::Prototype(_) => "prototype",
            HeadKind::Knn(_) => "knn",
        }
    }

    /// A one-line description for reports.
    pub fn label(&self) -> String {
        let base = match &self.kind {
            HeadKind::Logistic(p) => format!(
                "logistic regression (C = {}, L2{}, L-BFGS)",
                p.c(),
                if p.balanced() { ", balanced" } else { "" }
            ),
            HeadKind::Mlp(p) => format!(
                "MLP (hidden {:?}, {}, dropout {}, AdamW lr {} wd {})",
                p.hidden(),
                p.activation().name(),
                p.dropout(),
                p.learning_rate(),
                p.weight_decay()
            ),
            HeadKind::Prototype(p) => {
                format!("prototypes ({}, nearest class mean)", p.metric().name())
            }
            HeadKind::Knn(p) => format!(
                "kNN (k = {}, {}, {} votes)",
                p.k(),
                p.metric().name(),
                p.weighting().name()
            ),
        };
        match self.multi_label {
            Some(Threshold::Fixed(t)) => format!("{base}, multi-label (sigmoid, threshold {t})"),
            Some(Threshold::Tuned) => format!("{base}, multi-label (sigmoid, thresholds tuned)"),
            None if self.calibrate => format!("{base}, temperature-scaled"),
            None => base,
        }
    }

    /// The hyperparameters, as recorded in manifests and artefacts.
    pub fn settings(&self) -> HeadSettings {
        let kind = match &self.kind {
            HeadKind::Logistic(p) => HeadKindSettings::Logistic(LogisticSettings {
                c: p.c(),
                max_iter: p.max_iter(),
                tol: p.tol(),
                fit_intercept: p.fit_intercept(),
                class_weight: if p.balanced() { "balanced" } else { "none" }.to_owned(),
            }),
            HeadKind::Mlp(p) => {
                let (schedule, warmup_epochs, step_epochs, gamma) = match p.schedule() {
                    Schedule::Constant => ("constant", None, None, None),
                    Schedule::Cosine { warmup_epochs } => {
                        ("cosine", Some(warmup_epochs), None, None)
                    }
                    Schedule::Step { step_epochs, gamma } => {
                        ("step", None, Some(step_epochs), Some(gamma))
                    }
                };
                HeadKindSettings::Mlp(MlpSettings {
                    hidden: p.hidden().to_vec(),
                    activation: p.activation().name().to_owned(),
                    dropout: p.dropout(),
                    learning_rate: p.learning_rate(),
                    weight_decay: p.weight_decay(),
                    batch_size: p.batch_size(),
                    max_epochs: p.max_epochs(),
                    schedule: schedule.to_owned(),
                    warmup_epochs,
                    step_epochs,
                    gamma,
                    patience: p.patience(),
                    monitor: match p.monitor() {
                        Monitor::Loss => "loss",
                        Monitor::Accuracy => "accuracy",
                    }
                    .to_owned(),
                    restore_best: p.restore_best(),
                    seed: p.seed(),
                })
            }
            HeadKind::Prototype(p) => HeadKindSettings::Prototype(PrototypeSettings {
                metric: p.metric().name().to_owned(),
                temperature: p.temperature(),
            }),
            HeadKind::Knn(p) => HeadKindSettings::Knn(KnnSettings {
                k: p.k(),
                metric: p.metric().name().to_owned(),
                weighting: p.weighting().name().to_owned(),
            }),
        };
        HeadSettings {
            kind,
            calibrate: self.calibrate,
            threshold: self.multi_label.map(|t| match t {
                Threshold::Fixed(t) => ThresholdSetting::Fixed(t),
                Threshold::Tuned => ThresholdSetting::Tuned(TuneWord::Tune),
            }),
        }
    }

    /// The head a saved artefact or manifest records, checked again (an edited file gets an error naming
    /// the parameter).
    pub fn from_settings(s: &HeadSettings) -> Result<HeadSpec, String> {
        let err = |e: HeadError| e.to_string();
        let metric = |name: &str| match name {
            "euclidean" => Ok(Metric::Euclidean),
            "cosine" => Ok(Metric::Cosine),
            other => Err(format!("unknown metric `{other}`")),
        };
        let kind = match &s.kind {
            HeadKindSettings::Logistic(o) => HeadKind::Logistic(
                Logistic::params()
                    .c(o.c)
                    .max_iter(o.max_iter)
                    .tol(o.tol)
                    .fit_intercept(o.fit_intercept)
                    .balanced(o.class_weight == "balanced")
                    .check()
                    .map_err(err)?,
            ),
            HeadKindSettings::Mlp(o) => HeadKind::Mlp(mlp_params(o)?.check().map_err(err)?),
            HeadKindSettings::Prototype(o) => HeadKind::Prototype(
                Prototype::params()
                    .metric(metric(&o.metric)?)
                    .temperature(o.temperature)
                    .check()
                    .map_err(err)?,
            ),
            HeadKindSettings::Knn(o) => HeadKind::Knn(
                Knn::params()
                    .k(o.k)
                    .metric(metric(&o.metric)?)
                    .weighting(match o.weighting.as_str() {
                        "distance" => Weighting::Distance,
                        "uniform" => Weighting::Uniform,
                        other => return Err(format!("unknown weighting `{other}`")),
                    })
                    .check()
                    .map_err(err)?,
            ),
        };
        Ok(HeadSpec {
            kind,
            calibrate: s.calibrate,
            multi_label: s.threshold.map(|t| match t {
                ThresholdSetting::Fixed(t) => Threshold::Fixed(t),
                ThresholdSetting::Tuned(_) => Threshold::Tuned,
            }),
        })
    }
}

/// The MLP parameters a record names, unchecked.
fn mlp_params(o: &MlpSettings) -> Result<graft_heads::MlpParams, String> {
    let activation = match o.activation.as_str() {
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => return Err(format!("unknown activation `{other}`")),
    };
    let schedule = match o.schedule.as_str() {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::Cosine {
            warmup_epochs: o.warmup_epochs.unwrap_or(0),
        },
        "step" => Schedule::Step {
            step_epochs: o.step_epochs.ok_or("`step_epochs` missing")?,
            gamma: o.gamma.ok_or("`gamma` missing")?,
        },
        other => return Err(format!("unknown schedule `{other}`")),
    };
    let monitor = match o.monitor.as_str() {
        "accuracy" => Monitor::Accuracy,
        "loss" => Monitor::Loss,
        other => return Err(format!("unknown monitor `{other}`")),
    };
    Ok(Mlp::params()
        .hidden(&o.hidden)
        .activation(activation)
        .dropout(o.dropout)
        .learning_rate(o.learning_rate)
        .weight_decay(o.weight_decay)
        .batch_size(o.batch_size)
        .max_epochs(o.max_epochs)
        .schedule(schedule)
        .patience(o.patience)
        .monitor(monitor)
        .restore_best(o.restore_best)
        .seed(o.seed))
}

impl TransformPlan {
    /// As recorded in manifests.
    pub fn settings(&self) -> TransformSettings {
        match *self {
            TransformPlan::Standardize => TransformSettings::Standardize {},
            TransformPlan::PcaWhiten {
                components,
                epsilon,
            } => TransformSettings::PcaWhiten {
                components,
                epsilon,
            },
        }
    }

    /// Fits the transform on training rows.
    pub fn fit(&self, x: ArrayView2<'_, f32>) -> Result<FittedTransform, HeadError> {
        match *self {
            TransformPlan::Standardize => FittedTransform::standardize(x),
            TransformPlan::PcaWhiten {
                components,
                epsilon,
            } => FittedTransform::pca_whiten(x, components, epsilon),
        }
    }
}
