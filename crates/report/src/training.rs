//! What training a head and running a technique stage recorded.

use serde::{Deserialize, Serialize};

/// Per-epoch figures of an iterative head, for the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation loss after the epoch.
    pub validation_loss: Option<f64>,
    /// Validation accuracy after the epoch.
    pub validation_accuracy: Option<f64>,
}

/// How a head's training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingFigures {
    /// Head kind.
    pub head: String,
    /// Optimiser iterations (logistic) or epochs (MLP); 0 for heads that only store statistics.
    pub iterations: usize,
    /// Final training objective (logistic: per-row objective; MLP: last epoch's mean loss).
    pub loss: f64,
    /// Why training stopped.
    pub termination: String,
    /// Temperature fitted on the validation split, when `calibrate` is on.
    pub temperature: Option<f64>,
    /// Per-epoch training curve (MLP).
    pub curve: Vec<CurvePoint>,
    /// The epoch whose weights were kept (best validation score), when validation rows were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// Whether patience ran out before the epoch limit.
    #[serde(default)]
    pub stopped_early: bool,
}

/// What one technique stage measured, as metrics.json records it and the reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueReport {
    /// The table that enabled it (`zero_shot`, `few_shot`, …).
    pub technique: String,
    /// A heading.
    pub title: String,
    /// What was done, with the published method it follows.
    pub method: String,
    /// The comparison the technique exists for, in one sentence with its numbers.
    pub finding: String,
    /// Column names of the results table.
    pub columns: Vec<String>,
    /// Its rows, formatted.
    pub rows: Vec<Vec<String>>,
    /// The same results as numbers.
    pub details: serde_json::Value,
    /// A per-epoch curve the stage trained along (fine-tuning), plotted in report.html.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<CurvePoint>,
    /// Seconds the stage took.
    pub seconds: f64,
}
