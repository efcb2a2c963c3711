//! The heads and transform a pipeline declares, checked: what the engine trains.

use graft_heads::{
    FittedTransform, HeadError, KnnValidParams, LogisticValidParams, MlpValidParams, Monitor,
    PrototypeValidParams, Schedule,
};
use ndarray::ArrayView2;
use serde_json::json;

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
    pub fn json(&self) -> serde_json::Value {
        let params = match &self.kind {
            HeadKind::Logistic(p) => json!({
                "c": p.c(), "max_iter": p.max_iter(), "tol": p.tol(), "fit_intercept": p.fit_intercept(),
                "class_weight": if p.balanced() { "balanced" } else { "none" },
            }),
            HeadKind::Mlp(p) => {
                let (schedule, warmup, step, gamma) = match p.schedule() {
                    Schedule::Constant => ("constant", None, None, None),
                    Schedule::Cosine { warmup_epochs } => {
                        ("cosine", Some(warmup_epochs), None, None)
                    }
                    Schedule::Step { step_epochs, gamma } => {
                        ("step", None, Some(step_epochs), Some(gamma))
                    }
                };
                json!({
                    "hidden": p.hidden(), "activation": p.activation().name(), "dropout": p.dropout(),
                    "learning_rate": p.learning_rate(), "weight_decay": p.weight_decay(),
                    "batch_size": p.batch_size(), "max_epochs": p.max_epochs(), "schedule": schedule,
                    "warmup_epochs": warmup, "step_epochs": step, "gamma": gamma,
                    "patience": p.patience(),
                    "monitor": match p.monitor() { Monitor::Loss => "loss", Monitor::Accuracy => "accuracy" },
                    "restore_best": p.restore_best(), "seed": p.seed(),
                })
            }
            HeadKind::Prototype(p) => {
                json!({ "metric": p.metric().name(), "temperature": p.temperature() })
            }
            HeadKind::Knn(p) => json!({
                "k": p.k(), "metric": p.metric().name(), "weighting": p.weighting().name(),
            }),
        };
        let mut v = json!({ self.name(): params, "calibrate": self.calibrate });
        if let Some(t) = self.multi_label {
            v["threshold"] = match t {
                Threshold::Fixed(t) => json!(t),
                Threshold::Tuned => json!("tune"),
            };
        }
        v
    }
}

impl TransformPlan {
    /// As recorded in manifests.
    pub fn json(&self) -> serde_json::Value {
        match self {
            TransformPlan::Standardize => json!({ "standardize": {} }),
            TransformPlan::PcaWhiten {
                components,
                epsilon,
            } => json!({ "pca_whiten": { "components": components, "epsilon": epsilon } }),
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
