//! Metrics on predicted probabilities: ROC-AUC, PR-AUC (average precision), log loss, Brier score and
//! expected calibration error with its reliability bins — scikit-learn's definitions.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::EvalError;

fn check(y_true: &[usize], proba: ArrayView2<'_, f32>) -> Result<(), EvalError> {
    if y_true.len() != proba.nrows() {
        return Err(EvalError::LengthMismatch {
            truth: y_true.len(),
            predicted: proba.nrows(),
        });
    }
    if y_true.is_empty() {
        return Err(EvalError::Empty);
    }
    if let Some(&label) = y_true.iter().find(|&&l| l >= proba.ncols()) {
        return Err(EvalError::LabelOutOfRange {
            label,
            n_classes: proba.ncols(),
        });
    }
    if let Some(((row, column), _)) = proba.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(EvalError::NonFinite { row, column });
    }
    Ok(())
}

fn all_finite(scores: &[f64]) -> bool {
    scores.iter().all(|s| s.is_finite())
}

/// Area under the ROC curve of `scores` for the positives in `positive` (ties count half, as the
/// Mann-Whitney statistic); `None` when either class is absent or a score is not finite.
pub fn roc_auc_binary(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    let neg = positive.len() - pos;
    if pos == 0 || neg == 0 || positive.len() != scores.len() || !all_finite(scores) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' (average) ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&r| positive[r]).count() as f64 * average_rank;
        i = j + 1;
    }
    let (pos, neg) = (pos as f64, neg as f64);
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Average precision of `scores` for the positives (scikit-learn's `average_precision_score`: Σ (Rₙ − Rₙ₋₁)·Pₙ
/// over the distinct thresholds); `None` without positives or with a non-finite score.
pub fn average_precision_binary(positive: &[bool], scores: &[f64]) -> Option<f64> {
    let pos = positive.iter().filter(|&&p| p).count();
    // A NaN is not equal to itself: the tie loop below would never advance past it.
    if pos == 0 || positive.len() != scores.len() || !all_finite(scores) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // All rows tied at this score cross the threshold together.
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            tp += usize::from(positive[order[j]]);
            seen += 1;
            j += 1;
        }
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / seen as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        i = j;
    }
    Some(ap)
}

/// One-vs-rest scores for each class (for two classes, class 1 only, as scikit-learn), macro-averaged
/// over the classes present with both signs.
fn one_vs_rest(
    y_true: &[usize],
    proba: ArrayView2<'_, f32>,
    metric: fn(&[bool], &[f64]) -> Option<f64>,
) -> Option<f64> {
    let classes: Vec<usize> = if proba.ncols() == 2 {
        vec![1]
    } else {
        (0..proba.ncols()).collect()
    };
    let values: Vec<f64> = classes
        .iter()
        .filter_map(|&c| {
            let positive: Vec<bool> = y_true.iter().map(|&y| y == c).collect();
            let scores: Vec<f64> = proba.column(c).iter().map(|&p| f64::from(p)).collect();
            metric(&positive, &scores)
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Everything computed from class probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProbabilityReport {
    /// ROC-AUC: binary (class 1) or one-vs-rest macro average; `None` when undefined (one class only).
    pub roc_auc: Option<f64>,
    /// Average precision, likewise.
    pub pr_auc: Option<f64>,
    /// Mean negative log-likelihood of the true class (probabilities clipped at 1e-15).
    pub log_loss: f64,
    /// Brier score: mean squared error of the probabilities against the one-hot truth — for two classes
    /// that of class 1 only (scikit-learn's binary definition), else summed over classes.
    pub brier: f64,
    /// Expected calibration error of the top-class confidence over `bins` equal-width bins.
    pub ece: f64,
    /// The reliability diagram's bins (empty bins included, with zero counts).
    pub reliability: Vec<ReliabilityBin>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the confidence range (exclusive, except for the first bin).
    pub lower: f64,
    /// Upper edge (inclusive).
    pub upper: f64,
    /// Rows whose top-class probability falls in the bin.
    pub count: usize,
    /// Their mean top-class probability (0 for an empty bin).
    pub confidence: f64,
    /// The share of them predicted correctly (0 for an empty bin).
    pub accuracy: f64,
}

/// Scores class probabilities (rows × classes) against the true classes.
///
/// ```
/// use graft_eval::probability_report;
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_eval::EvalError> {
/// let p = array![[0.9f32, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]];
/// let r = probability_report(&[0, 1, 1, 1], p.view(), 10)?;
/// assert_eq!(r.roc_auc, Some(1.0));
/// assert!(r.log_loss > 0.0 && r.ece >= 0.0);
/// # Ok(())
/// # }
/// ```
pub fn probability_report(
    y_true: &[usize],
    proba: ArrayView2<'_, f32>,
    bins: usize,
) -> Result<ProbabilityReport, EvalError> {
    check(y_true, proba)?;
    let n = y_true.len() as f64;
    let log_loss = y_true
        .iter()
        .zip(proba.rows())
        .map(|(&y, row)| -f64::from(row[y]).clamp(1e-15, 1.0).ln())
        .sum::<f64>()
        / n
        + 0.0; // −0 (every row certain and right) reads as 0
    let brier = if proba.ncols() == 2 {
        y_true
            .iter()
            .zip(proba.rows())
            .map(|(&y, row)| (f64::from(row[1]) - if y == 1 { 1.0 } else { 0.0 }).powi(2))
            .sum::<f64>()
            / n
    } else {
        y_true
            .iter()
            .zip(proba.rows())
            .map(|(&y, row)| {
                row.iter()
                    .enumerate()
                    .map(|(c, &p)| (f64::from(p) - if c == y { 1.0 } else { 0.0 }).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n
    };
    let bins = bins.max(1);
    let mut reliability: Vec<ReliabilityBin> = (0..bins)
        .map(|b| ReliabilityBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for (&y, row) in y_true.iter().zip(proba.rows()) {
        let (top, confidence) =
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (c, &p)| {
                    if p > best.1 { (c, p) } else { best }
                });
        let confidence = f64::from(confidence).clamp(0.0, 1.0);
        // Bin b holds (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin.
        let b = ((confidence * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        let bin = &mut reliability[b];
        bin.count += 1;
        bin.confidence += confidence;
        bin.accuracy += if top == y { 1.0 } else { 0.0 };
    }
    let mut ece = 0.0;
    for bin in &mut reliability {
        if bin.count > 0 {
            bin.confidence /= bin.count as f64;
            bin.accuracy /= bin.count as f64;
            ece += bin.count as f64 / n * (bin.accuracy - bin.confidence).abs();
        }
    }
    Ok(ProbabilityReport {
        roc_auc: one_vs_rest(y_true, proba, roc_auc_binary),
        pr_auc: one_vs_rest(y_true, proba, average_precision_binary),
        log_loss,
        brier,
        ece,
        reliability,
    })
}
