//! `[self_training]`: pseudo-labelling (Yarowsky, 1995; Lee, 2013), with the semantics of scikit-learn's
//! `SelfTrainingClassifier`: K labelled rows per class are drawn from the training split and the rest of it
//! becomes the unlabelled pool (its labels are hidden from the head and used only to score the pseudo-labels).
//! Each round the headline head is trained on the labelled and pseudo-labelled rows, scored on the test
//! split, and labels the pool rows it predicts with probability ≥ `threshold`; rounds stop at `rounds` or when
//! nothing new clears the threshold.

use crate::spanned::Spanned;
use graft_schema::techniques::RawSelfTraining;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[self_training]`, checked.
#[derive(Debug, Clone)]
pub struct SelfTrainingPlan {
    /// Labelled rows per class.
    pub labelled: usize,
    pub threshold: f64,
    pub rounds: usize,
}

impl SelfTrainingPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "labelled": self.labelled, "threshold": self.threshold, "rounds": self.rounds })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawSelfTraining>,
    modality: Modality,
) -> Result<SelfTrainingPlan, Diagnostic> {
    c.single_label(modality, raw.span(), "self_training")?;
    let r = raw.into_inner();
    Ok(SelfTrainingPlan {
        labelled: c.positive(
            &r.labelled,
            10,
            "labelled",
            "labelled rows per class, e.g. 10; the rest of the training split is the unlabelled pool",
        )?,
        threshold: c.fraction(
            &r.threshold,
            0.9,
            "threshold",
            "the probability a prediction needs to become a pseudo-label, e.g. 0.9",
        )?,
        rounds: c.positive(&r.rounds, 5, "rounds", "e.g. 5 rounds of pseudo-labelling")?,
    })
}
