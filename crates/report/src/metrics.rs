//! `metrics.json`: what a run measured, written and read back through these types.

use graft_eval::{
    ClassificationReport, Interval, McNemar, MultiLabelReport, PairedBootstrap, ProbabilityReport,
};
use serde::{Deserialize, Serialize};

use crate::training::TrainingFigures;

/// Scores of one split, with class names attached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    /// Rows scored.
    pub rows: usize,
    /// Share of rows predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1.
    pub macro_f1: f64,
    /// Per-class precision, recall, F1 and support.
    pub per_class: Vec<ClassScores>,
    /// `confusion[t][p]`: rows of true class `t` predicted as class `p` (order of `Metrics::classes`);
    /// empty for multi-label data.
    pub confusion: Vec<Vec<usize>>,
    /// Multi-label data: share of wrong label decisions (`accuracy` is then the exact-set match rate and
    /// `per_class` holds each label's scores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hamming_loss: Option<f64>,
    /// Multi-label data: F1 over all label decisions pooled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
    /// Mean per-class recall (single-label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    /// Support-weighted F1 (single-label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_f1: Option<f64>,
    /// Scores of the probabilities (test split, single-label): ROC-AUC, PR-AUC, log loss, Brier,
    /// calibration error and reliability bins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<ProbabilityReport>,
    /// Bootstrap confidence intervals (test split, single-label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<SplitIntervals>,
}

/// Bootstrap intervals of a split's headline scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitIntervals {
    /// Accuracy.
    pub accuracy: Interval,
    /// Macro-F1.
    pub macro_f1: Interval,
}

/// A head's k-fold cross-validation over the training and validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScores {
    /// Folds.
    pub folds: usize,
    /// Whether folds kept each group's rows together (group k-fold) rather than stratifying by class.
    pub grouped: bool,
    /// Mean held-out accuracy.
    pub accuracy_mean: f64,
    /// Its standard deviation over the folds.
    pub accuracy_std: f64,
    /// Mean held-out macro-F1.
    pub macro_f1_mean: f64,
    /// Each fold's held-out accuracy.
    pub accuracy_per_fold: Vec<f64>,
}

impl CvScores {
    pub fn of(per_fold: &[(f64, f64)], grouped: bool) -> CvScores {
        let k = per_fold.len() as f64;
        let accuracy_mean = per_fold.iter().map(|s| s.0).sum::<f64>() / k;
        let var = per_fold
            .iter()
            .map(|s| (s.0 - accuracy_mean).powi(2))
            .sum::<f64>()
            / (k - 1.0).max(1.0);
        CvScores {
            folds: per_fold.len(),
            grouped,
            accuracy_mean,
            accuracy_std: var.sqrt(),
            macro_f1_mean: per_fold.iter().map(|s| s.1).sum::<f64>() / k,
            accuracy_per_fold: per_fold.iter().map(|s| s.0).collect(),
        }
    }
}

/// A hyperparameter search: every candidate's score and the one kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The head searched.
    pub head: String,
    /// `grid` or `random`.
    pub method: String,
    /// What candidates were compared on.
    pub selection: String,
    /// In the order tried.
    pub candidates: Vec<SearchCandidate>,
    /// Index of the winner (retrained and scored on test like any head).
    pub best: usize,
    /// Seconds for the whole search.
    pub seconds: f64,
}

/// One search candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchCandidate {
    /// The searched keys and their values.
    pub values: serde_json::Value,
    /// Validation accuracy, or the mean over folds.
    pub accuracy: f64,
    /// Macro-F1 likewise.
    pub macro_f1: f64,
    /// Standard deviation of the accuracy over folds (cross-validation only).
    pub accuracy_std: Option<f64>,
}

/// A head against the headline head on the same test rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// McNemar's exact test.
    pub mcnemar: McNemar,
    /// Paired bootstrap of this head's accuracy minus the headline's.
    pub accuracy_difference: Option<PairedBootstrap>,
}

/// One class's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// Class name.
    pub class: String,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Rows of this class.
    pub support: usize,
}

impl SplitMetrics {
    pub fn new(report: ClassificationReport, classes: &[String]) -> SplitMetrics {
        SplitMetrics {
            rows: report.rows,
            accuracy: report.accuracy,
            macro_f1: report.macro_f1,
            per_class: report
                .per_class
                .into_iter()
                .zip(classes)
                .map(|(m, class)| ClassScores {
                    class: class.clone(),
                    precision: m.precision,
                    recall: m.recall,
                    f1: m.f1,
                    support: m.support,
                })
                .collect(),
            confusion: report.confusion,
            hamming_loss: None,
            micro_f1: None,
            balanced_accuracy: Some(report.balanced_accuracy),
            weighted_f1: Some(report.weighted_f1),
            probabilities: None,
            intervals: None,
        }
    }

    pub fn from_multi_label(report: MultiLabelReport, labels: &[String]) -> SplitMetrics {
        SplitMetrics {
            rows: report.rows,
            accuracy: report.subset_accuracy,
            macro_f1: report.macro_f1,
            per_class: report
                .per_label
                .into_iter()
                .zip(labels)
                .map(|(m, label)| ClassScores {
                    class: label.clone(),
                    precision: m.precision,
                    recall: m.recall,
                    f1: m.f1,
                    support: m.support,
                })
                .collect(),
            confusion: Vec::new(),
            hamming_loss: Some(report.hamming_loss),
            micro_f1: Some(report.micro_f1),
            balanced_accuracy: None,
            weighted_f1: None,
            probabilities: None,
            intervals: None,
        }
    }
}

/// Row counts through ingest and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Rows in the data file.
    pub read: usize,
    /// Dropped for a null text.
    pub dropped_null_text: usize,
    /// Dropped for a null label.
    pub dropped_null_label: usize,
    /// The first (at most 10) dropped rows: 0-based data rows, as splits.csv numbers them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_rows: Vec<usize>,
    /// Left out by `sample`.
    pub not_sampled: usize,
    /// Left out by `min_class_rows`: the rows of the classes it names in `rare_classes`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rare_class_rows: usize,
    /// The classes `min_class_rows` left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rare_classes: Vec<String>,
    /// Rows used.
    pub used: usize,
    /// Training rows.
    pub train: usize,
    /// Validation rows.
    pub validation: usize,
    /// Test rows.
    pub test: usize,
}

/// Seconds per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// Reading, cleaning and splitting the data (including fetching a registered data set).
    pub ingest: f64,
    /// Fetching or verifying the model files.
    pub provision: f64,
    /// Features: cache lookup, and for missing rows loading ONNX Runtime, opening the session, extracting
    /// and storing.
    pub extract: f64,
    /// Training the head.
    pub train: f64,
    /// Scoring: test metrics, intervals, cross-validation, the learning curve.
    pub evaluate: f64,
    /// The technique stages, the extraction of the texts they bring included (each stage's section gives
    /// its own figures).
    #[serde(default)]
    pub techniques: f64,
    /// Whole run.
    pub total: f64,
}

/// Feature-extraction figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExtractionFigures {
    /// Rows that needed features.
    pub rows: usize,
    /// Rows run through the backbone (the rest came from the feature cache).
    pub extracted: usize,
    /// Rows whose features came from the feature cache.
    pub cache_hits: usize,
    /// Embedding width.
    pub dimension: usize,
    /// Extracted rows per second of tokenization and inference (0 when nothing was extracted).
    pub rows_per_second: f64,
    /// Inference calls.
    pub batches: usize,
    /// Real tokens.
    pub tokens: usize,
    /// Tokens including padding.
    pub padded_tokens: usize,
    /// Texts cut at `max_length` (none when long texts are chunked).
    pub truncated_rows: usize,
    /// What became of texts longer than `max_length`: `truncate` or `chunks`.
    #[serde(default = "truncate")]
    pub long_texts: String,
    /// Texts longer than `max_length` (all of them, those from the cache too).
    #[serde(default)]
    pub long_rows: usize,
    /// Token sequences behind the rows: one per text, or one per window when chunking (`extracted` and
    /// `cache_hits` then count windows).
    #[serde(default)]
    pub sequences: usize,
    /// Seconds of the extraction spent tokenizing (images: decoding and preprocessing).
    pub tokenize_seconds: f64,
    /// Execution provider used.
    pub execution_provider: String,
    /// What a row is: `texts` or `images` (augmented views count as rows).
    pub unit: String,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
}

/// One head's scores and training figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetrics {
    /// Head name (its pipeline table).
    pub name: String,
    /// One-line description.
    pub label: String,
    /// Test scores.
    pub test: SplitMetrics,
    /// Validation scores.
    pub validation: Option<SplitMetrics>,
    /// Training scores.
    pub train: SplitMetrics,
    /// Against the headline (first) head on the same test rows; absent for the headline itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus_headline: Option<Comparison>,
    /// k-fold cross-validation over the training and validation rows, when `[evaluation] cv` asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_validation: Option<CvScores>,
    /// Training figures.
    pub training: TrainingFigures,
    /// Seconds spent training (a timing: varies from run to run).
    pub fit_seconds: f64,
}

/// Everything `metrics.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Pipeline name.
    pub pipeline: String,
    /// `single-label` (one class per row) or `multi-label` (a set of labels per row).
    pub task: String,
    /// Class names, in label-index order (the labels, for multi-label data).
    pub classes: Vec<String>,
    /// Row counts.
    pub rows: RowCounts,
    /// The headline: scores on the test split, computed once.
    pub test: SplitMetrics,
    /// Scores on the validation split (absent when it is empty).
    pub validation: Option<SplitMetrics>,
    /// Scores on the training split (to judge over-fitting).
    pub train: SplitMetrics,
    /// Extraction figures.
    pub extraction: ExtractionFigures,
    /// Training figures of the headline head.
    pub training: TrainingFigures,
    /// Every head, in pipeline order; the first is the headline above.
    pub heads: Vec<HeadMetrics>,
    /// The hyperparameter search, when the pipeline has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchReport>,
    /// The learning curve (transfer vs a from-scratch baseline), when the pipeline asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_curve: Option<crate::curve::LearningCurve>,
    /// Transfer-learning technique stages, in the order they ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<crate::training::TechniqueReport>,
    /// Seconds per stage.
    pub timings_seconds: Timings,
}

/// For `skip_serializing_if`: counts that are zero are left out of the file.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `long_texts` of metrics files written before chunking existed.
fn truncate() -> String {
    "truncate".to_owned()
}
