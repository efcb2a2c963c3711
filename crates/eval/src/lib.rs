//! Classification metrics on plain label slices (and, for probability metrics, an ndarray of class
//! probabilities): accuracy, balanced accuracy, precision/recall/F1 (macro, micro, weighted, per class),
//! confusion matrix ([`classification_report`]); ROC-AUC, PR-AUC, log loss, Brier score, expected
//! calibration error and reliability bins ([`probability_report`]); multi-label scores
//! ([`multi_label_report`]); seeded bootstrap intervals and paired tests ([`Bootstrap`], [`mcnemar`]).
//!
//! ```
//! use graft_eval::classification_report;
//!
//! # fn main() -> Result<(), graft_eval::EvalError> {
//! let report = classification_report(&[0, 0, 1, 1], &[0, 1, 1, 1], 2)?;
//! assert_eq!(report.accuracy, 0.75);
//! assert_eq!(report.confusion, vec![vec![1, 1], vec![0, 2]]);
//! assert_eq!(report.per_class[1].precision, 2.0 / 3.0);
//! # Ok(())
//! # }
//! ```

mod confidence;
mod proba;

use serde::Serialize;

pub use confidence::{Bootstrap, Interval, McNemar, PairedBootstrap, mcnemar};
pub use proba::{
    ProbabilityReport, ReliabilityBin, average_precision_binary, probability_report, roc_auc_binary,
};

/// Everything that can go wrong while scoring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    /// `y_true` and `y_pred` differ in length.
    #[error("y_true has {truth} labels but y_pred has {predicted}")]
    LengthMismatch {
        /// Length of `y_true`.
        truth: usize,
        /// Length of `y_pred`.
        predicted: usize,
    },
    /// Nothing to score.
    #[error("cannot score an empty set of predictions")]
    Empty,
    /// A label not below the class count.
    #[error("label {label} is not below the class count {n_classes}")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// The class count.
        n_classes: usize,
    },
    /// A setting out of its range.
    #[error("{0}")]
    InvalidSetting(String),
    /// A probability or score that is NaN or infinite (a diverged model): nothing can be ranked or averaged.
    #[error("probabilities contain a non-finite value at row {row}, column {column}")]
    NonFinite {
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        column: usize,
    },
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    /// Of the rows predicted as this class, the share that are. 0 when nothing was predicted as it.
    pub precision: f64,
    /// Of the rows of this class, the share predicted as it. 0 when the class has no rows.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Rows of this class in `y_true`.
    pub support: usize,
}

/// The standard single-label classification summary.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClassificationReport {
    /// Share of rows predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores (every class counts, as scikit-learn's `average="macro"`).
    pub macro_f1: f64,
    /// Mean of the per-class recalls over the classes present (scikit-learn's `balanced_accuracy_score`).
    pub balanced_accuracy: f64,
    /// Unweighted means of the per-class precision and recall.
    pub macro_precision: f64,
    /// See `macro_precision`.
    pub macro_recall: f64,
    /// Per-class F1 weighted by support (`average="weighted"`).
    pub weighted_f1: f64,
    /// Per-class precision weighted by support.
    pub weighted_precision: f64,
    /// Per-class recall weighted by support (equal to accuracy for one class per row).
    pub weighted_recall: f64,
    /// F1 over all decisions pooled (`average="micro"`; equal to accuracy for one class per row, as are
    /// micro precision and recall).
    pub micro_f1: f64,
    /// One entry per class, by class index.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[t][p]`: rows of true class `t` predicted as `p`.
    pub confusion: Vec<Vec<usize>>,
    /// Rows scored.
    pub rows: usize,
}

/// Scores `y_pred` against `y_true`, both class indices below `n_classes`.
pub fn classification_report(
    y_true: &[usize],
    y_pred: &[usize],
    n_classes: usize,
) -> Result<ClassificationReport, EvalError> {
    if y_true.len() != y_pred.len() {
        return Err(EvalError::LengthMismatch {
            truth: y_true.len(),
            predicted: y_pred.len(),
        });
    }
    if y_true.is_empty() {
        return Err(EvalError::Empty);
    }
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        if let Some(&label) = [t, p].iter().find(|&&l| l >= n_classes) {
            return Err(EvalError::LabelOutOfRange { label, n_classes });
        }
        confusion[t][p] += 1;
    }
    let correct: usize = (0..n_classes).map(|c| confusion[c][c]).sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = (0..n_classes)
        .map(|c| {
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(confusion[c][c], predicted);
            let recall = ratio(confusion[c][c], support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let mean =
        |f: fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / n_classes as f64;
    let macro_f1 = mean(|m| m.f1);
    let present: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
    let balanced_accuracy =
        present.iter().map(|m| m.recall).sum::<f64>() / present.len().max(1) as f64;
    let weighted = |f: fn(&ClassMetrics) -> f64| {
        per_class
            .iter()
            .map(|m| f(m) * m.support as f64)
            .sum::<f64>()
            / y_true.len() as f64
    };
    let weighted_f1 = weighted(|m| m.f1);
    Ok(ClassificationReport {
        accuracy: ratio(correct, y_true.len()),
        macro_f1,
        balanced_accuracy,
        macro_precision: mean(|m| m.precision),
        macro_recall: mean(|m| m.recall),
        weighted_f1,
        weighted_precision: weighted(|m| m.precision),
        weighted_recall: weighted(|m| m.recall),
        micro_f1: ratio(correct, y_true.len()),
        per_class,
        confusion,
        rows: y_true.len(),
    })
}

/// The standard multi-label summary (scikit-learn's definitions).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MultiLabelReport {
    /// Rows whose predicted label set equals the true set exactly (`accuracy_score` on indicators).
    pub subset_accuracy: f64,
    /// Share of label decisions that are wrong (`hamming_loss`).
    pub hamming_loss: f64,
    /// F1 over all label decisions pooled (`f1_score(average="micro")`).
    pub micro_f1: f64,
    /// Unweighted mean of the per-label F1 scores (`average="macro"`).
    pub macro_f1: f64,
    /// One entry per label; `support` counts the rows carrying it.
    pub per_label: Vec<ClassMetrics>,
    /// Rows scored.
    pub rows: usize,
}

/// Scores predicted label sets against true ones, every label below `n_labels`.
///
/// ```
/// use graft_eval::multi_label_report;
///
/// # fn main() -> Result<(), graft_eval::EvalError> {
/// let truth = [vec![0, 1], vec![1], vec![]];
/// let predicted = [vec![0, 1], vec![0], vec![]];
/// let r = multi_label_report(&truth, &predicted, 2)?;
/// assert_eq!(r.subset_accuracy, 2.0 / 3.0);
/// assert_eq!(r.hamming_loss, 2.0 / 6.0);
/// assert_eq!(r.per_label[1].recall, 0.5);
/// # Ok(())
/// # }
/// ```
pub fn multi_label_report(
    y_true: &[Vec<usize>],
    y_pred: &[Vec<usize>],
    n_labels: usize,
) -> Result<MultiLabelReport, EvalError> {
    if y_true.len() != y_pred.len() {
        return Err(EvalError::LengthMismatch {
            truth: y_true.len(),
            predicted: y_pred.len(),
        });
    }
    if y_true.is_empty() {
        return Err(EvalError::Empty);
    }
    // Per label: true positives, predicted positives, actual positives.
    let mut counts = vec![(0usize, 0usize, 0usize); n_labels];
    let (mut exact, mut wrong) = (0usize, 0usize);
    for (t, p) in y_true.iter().zip(y_pred) {
        let mut truth = vec![false; n_labels];
        let mut predicted = vec![false; n_labels];
        for (set, flags) in [(t, &mut truth), (p, &mut predicted)] {
            for &l in set {
                if l >= n_labels {
                    return Err(EvalError::LabelOutOfRange {
                        label: l,
                        n_classes: n_labels,
                    });
                }
                flags[l] = true;
            }
        }
        exact += usize::from(truth == predicted);
        for l in 0..n_labels {
            wrong += usize::from(truth[l] != predicted[l]);
            counts[l].0 += usize::from(truth[l] && predicted[l]);
            counts[l].1 += usize::from(predicted[l]);
            counts[l].2 += usize::from(truth[l]);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let f1 = |tp: usize, predicted: usize, actual: usize| {
        if predicted + actual == 0 {
            0.0
        } else {
            2.0 * tp as f64 / (predicted + actual) as f64
        }
    };
    let per_label: Vec<ClassMetrics> = counts
        .iter()
        .map(|&(tp, predicted, actual)| ClassMetrics {
            precision: ratio(tp, predicted),
            recall: ratio(tp, actual),
            f1: f1(tp, predicted, actual),
            support: actual,
        })
        .collect();
    let (tp, predicted, actual) = counts
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    let rows = y_true.len();
    Ok(MultiLabelReport {
        subset_accuracy: ratio(exact, rows),
        hamming_loss: ratio(wrong, rows * n_labels.max(1)),
        micro_f1: f1(tp, predicted, actual),
        macro_f1: per_label.iter().map(|m| m.f1).sum::<f64>() / n_labels.max(1) as f64,
        per_label,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_probabilities_are_refused_not_looped_over() {
        // A NaN score used to spin forever in the tie loop of average precision.
        let positive = [true, false, true, false];
        assert_eq!(
            average_precision_binary(&positive, &[0.9, f64::NAN, 0.2, 0.1]),
            None
        );
        assert_eq!(
            roc_auc_binary(&positive, &[0.9, 0.3, f64::INFINITY, 0.1]),
            None
        );
        let p = ndarray::array![[0.5f32, 0.5], [f32::NAN, f32::NAN], [0.2, 0.8]];
        assert_eq!(
            probability_report(&[0, 1, 1], p.view(), 10),
            Err(EvalError::NonFinite { row: 1, column: 0 })
        );
    }

    #[test]
    fn three_class_case_computed_by_hand() {
        // true:  0 0 0 1 1 2 2 2 2
        // pred:  0 1 0 1 2 2 2 0 2
        let report = classification_report(
            &[0, 0, 0, 1, 1, 2, 2, 2, 2],
            &[0, 1, 0, 1, 2, 2, 2, 0, 2],
            3,
        )
        .unwrap();
        assert_eq!(
            report.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 3]]
        );
        assert_eq!(report.accuracy, 6.0 / 9.0);
        // class 0: P = 2/3, R = 2/3; class 1: P = 1/2, R = 1/2; class 2: P = 3/4, R = 3/4.
        let expected = [(2.0 / 3.0, 3), (0.5, 2), (0.75, 4)];
        for (m, (pr, support)) in report.per_class.iter().zip(expected) {
            assert!((m.precision - pr).abs() < 1e-12 && (m.recall - pr).abs() < 1e-12);
            assert!((m.f1 - pr).abs() < 1e-12);
            assert_eq!(m.support, support);
        }
        assert!((report.macro_f1 - (2.0 / 3.0 + 0.5 + 0.75) / 3.0).abs() < 1e-12);
    }

    /// Reference values from scikit-learn 1.9.1 (`accuracy_score`, `balanced_accuracy_score`, `f1_score`,
    /// `precision_score`, `recall_score`, `roc_auc_score(multi_class="ovr")`, `average_precision_score` on
    /// `label_binarize`d truth, `log_loss`, `brier_score_loss`) on exactly these arrays (the probabilities
    /// first rounded to float32, as graft stores them), printed with `repr`.
    #[test]
    fn three_class_and_binary_cases_match_scikit_learn() {
        use ndarray::array;
        let y = [0, 1, 2, 2, 1, 0, 1, 2, 0, 1, 2, 0];
        let p = array![
            [0.7f32, 0.2, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.3, 0.6],
            [0.3, 0.3, 0.4],
            [0.25, 0.5, 0.25],
            [0.5, 0.4, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.2, 0.6],
            [0.4, 0.4, 0.2],
            [0.1, 0.8, 0.1],
            [0.3, 0.5, 0.2],
            [0.8, 0.1, 0.1]
        ];
        let pred = [0, 1, 2, 2, 1, 0, 0, 2, 0, 1, 1, 0];
        let close =
            |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-9, "{what}: {a} vs {b}");
        let r = classification_report(&y, &pred, 3).unwrap();
        close(r.accuracy, 0.8333333333333334, "accuracy");
        close(r.balanced_accuracy, 0.8333333333333334, "balanced accuracy");
        close(r.macro_f1, 0.832010582010582, "macro F1");
        close(r.micro_f1, 0.8333333333333334, "micro F1");
        close(r.weighted_f1, 0.832010582010582, "weighted F1");
        close(r.macro_precision, 0.85, "macro precision");
        close(r.macro_recall, 0.8333333333333334, "macro recall");
        close(r.weighted_precision, 0.85, "weighted precision");
        close(r.weighted_recall, 0.8333333333333334, "weighted recall");
        let q = probability_report(&y, p.view(), 10).unwrap();
        close(
            q.roc_auc.unwrap(),
            0.9010416666666666,
            "ROC-AUC (ovr, macro)",
        );
        close(
            q.pr_auc.unwrap(),
            0.8388227513227514,
            "average precision (macro)",
        );
        close(q.log_loss, 0.7125039033001769, "log loss");
        close(q.brier, 0.40625000049670557, "Brier");

        let yb = [0, 1, 1, 0, 1, 0, 1, 1];
        let p1 = [0.1f32, 0.8, 0.6, 0.4, 0.4, 0.3, 0.9, 0.55];
        let pb = ndarray::Array2::from_shape_fn(
            (8, 2),
            |(i, c)| if c == 1 { p1[i] } else { 1.0 - p1[i] },
        );
        let q = probability_report(&yb, pb.view(), 10).unwrap();
        close(q.roc_auc.unwrap(), 0.9666666666666668, "binary ROC-AUC");
        close(
            q.pr_auc.unwrap(),
            0.9666666666666666,
            "binary average precision",
        );
        assert!(
            (q.log_loss - 0.4157898088284786).abs() < 1e-7,
            "binary log loss {}",
            q.log_loss
        );
        close(q.brier, 0.12906249690800925, "binary Brier");
    }

    #[test]
    fn calibration_bins_and_ece_by_hand() {
        use ndarray::array;
        // Confidences 0.9 (right), 0.9 (wrong), 0.65 (right), 0.55 (right) in 5 bins of width 0.2.
        let p = array![[0.9f32, 0.1], [0.9, 0.1], [0.35, 0.65], [0.55, 0.45]];
        let r = probability_report(&[0, 1, 1, 0], p.view(), 5).unwrap();
        let bins: Vec<usize> = r.reliability.iter().map(|b| b.count).collect();
        assert_eq!(bins, [0, 0, 1, 1, 2]);
        // |1 − 0.55|·¼ + |1 − 0.65|·¼ + |0.5 − 0.9|·½
        assert!((r.ece - 0.4).abs() < 1e-6, "{}", r.ece);
        assert!((r.reliability[4].confidence - 0.9).abs() < 1e-6);
        assert_eq!(r.reliability[4].accuracy, 0.5);
    }

    #[test]
    fn mcnemar_exact_p_values_by_hand() {
        // 10 rows only A gets right, 2 only B: p = 2 · (C(12,0) + C(12,1) + C(12,2)) / 2¹² = 158/4096.
        let y = vec![0usize; 14];
        let mut a = vec![0usize; 14];
        let mut b = vec![0usize; 14];
        b[..10].fill(1);
        a[10] = 1;
        a[11] = 1;
        let t = mcnemar(&y, &a, &b).unwrap();
        assert_eq!((t.a_only, t.b_only), (10, 2));
        assert!((t.p_value - 158.0 / 4096.0).abs() < 1e-12, "{}", t.p_value);
        assert_eq!(mcnemar(&y, &a, &a).unwrap().p_value, 1.0);
    }

    #[test]
    fn bootstrap_intervals_are_seeded_and_about_the_normal_width() {
        // 200 rows, 140 right: the normal approximation gives ±1.96·√(0.7·0.3/200) ≈ ±0.0635.
        let correct: Vec<bool> = (0..200).map(|i| i % 10 < 7).collect();
        let accuracy = |rows: &[usize]| {
            rows.iter().filter(|&&r| correct[r]).count() as f64 / rows.len() as f64
        };
        let b = Bootstrap {
            resamples: 2000,
            level: 0.95,
            seed: 7,
        };
        let ci = b.interval(200, accuracy).unwrap();
        assert_eq!(
            ci,
            b.interval(200, accuracy).unwrap(),
            "same seed, same interval"
        );
        assert_eq!(ci.estimate, 0.7);
        assert!((ci.upper - ci.lower - 2.0 * 0.0635).abs() < 0.015, "{ci:?}");
        let other = Bootstrap { seed: 8, ..b }.interval(200, accuracy).unwrap();
        assert_ne!(ci, other);
        assert!(
            Bootstrap { resamples: 1, ..b }
                .interval(200, accuracy)
                .is_err()
        );

        // A head right on 20 more rows of 200 than another: the paired difference is clearly positive.
        let y = vec![0usize; 200];
        let a: Vec<usize> = (0..200).map(|i| usize::from(i % 10 >= 8)).collect();
        let bp: Vec<usize> = (0..200).map(|i| usize::from(i % 10 >= 7)).collect();
        let paired = b.paired_accuracy(&y, &a, &bp).unwrap();
        assert!((paired.interval.estimate - 0.1).abs() < 1e-12);
        assert!(
            paired.interval.lower > 0.0 && paired.p_value < 0.01,
            "{paired:?}"
        );
    }

    #[test]
    fn multi_label_case_computed_by_hand() {
        // label 0: TP 2, FP 0, FN 0; label 1: TP 1, FN 1; label 2: TP 1, FP 1.
        let truth = [vec![0, 1], vec![1], vec![], vec![0, 2]];
        let predicted = [vec![0], vec![1], vec![2], vec![2, 0]];
        let r = multi_label_report(&truth, &predicted, 3).unwrap();
        assert_eq!(r.subset_accuracy, 0.5);
        assert_eq!(r.hamming_loss, 2.0 / 12.0);
        assert!((r.micro_f1 - 0.8).abs() < 1e-12, "2·4 / (5 + 5)");
        assert!((r.macro_f1 - 7.0 / 9.0).abs() < 1e-12);
        assert_eq!(r.per_label[1].recall, 0.5);
        assert_eq!(r.per_label[2].precision, 0.5);
        assert_eq!(
            r.per_label.iter().map(|m| m.support).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(
            multi_label_report(&truth, &predicted[..2], 3).unwrap_err(),
            EvalError::LengthMismatch {
                truth: 4,
                predicted: 2
            }
        );
        assert!(multi_label_report(&[vec![3]], &[vec![]], 3).is_err());
    }

    #[test]
    fn a_never_predicted_class_scores_zero_not_nan() {
        let report = classification_report(&[0, 1, 1], &[0, 0, 0], 2).unwrap();
        assert_eq!(report.per_class[1].precision, 0.0);
        assert_eq!(report.per_class[1].f1, 0.0);
        assert!((report.per_class[0].f1 - 0.5).abs() < 1e-12);
        assert!(report.macro_f1.is_finite());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(
            classification_report(&[0, 1], &[0], 2)
                .unwrap_err()
                .to_string(),
            "y_true has 2 labels but y_pred has 1"
        );
        assert_eq!(
            classification_report(&[], &[], 2).unwrap_err(),
            EvalError::Empty
        );
        assert_eq!(
            classification_report(&[0, 3], &[0, 1], 2)
                .unwrap_err()
                .to_string(),
            "label 3 is not below the class count 2"
        );
    }
}
