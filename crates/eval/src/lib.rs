//! Classification metrics on plain label slices.
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

use serde::Serialize;

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
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// Share of rows predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores (every class counts, as scikit-learn's `average="macro"`).
    pub macro_f1: f64,
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
    let macro_f1 = per_class.iter().map(|m| m.f1).sum::<f64>() / n_classes as f64;
    Ok(ClassificationReport {
        accuracy: ratio(correct, y_true.len()),
        macro_f1,
        per_class,
        confusion,
        rows: y_true.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
