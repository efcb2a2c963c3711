//! `[continual]`: class-incremental learning. The classes arrive in stages (a fixed number per stage, in
//! class order or, with `order = "seeded"`, a seeded random order as in iCaRL's protocol); after each stage every learner is scored on the test rows of all classes seen so far, choosing
//! among those classes only.
//!
//! Learners: the prototype head, which adds each new class's mean and never touches old ones
//! (nearest-class-mean, as in iCaRL's classifier, Rebuffi et al., 2017); an MLP fine-tuned on each stage's
//! rows alone (the naive baseline that forgets); the same MLP with rehearsal — each stage's rows plus a
//! bounded, class-balanced exemplar memory drawn at random from earlier stages (experience replay,
//! Chaudhry et al., 2019, "On tiny episodic memories in continual learning"); and, as the ceiling, the MLP
//! trained on all classes at once. Average forgetting follows Chaudhry et al. (2018): for each earlier
//! stage's classes, the best accuracy they ever had minus their accuracy after the last stage.

use crate::spanned::Spanned;
use graft_schema::techniques::{RawContinual, RawOrder};
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[continual]`, checked.
#[derive(Debug, Clone)]
pub struct ContinualPlan {
    pub classes_per_stage: usize,
    /// Exemplars kept for rehearsal, over all seen classes.
    pub memory: usize,
    /// MLP epochs per stage.
    pub epochs: usize,
    /// Classes arrive in a seeded random order (else in class order).
    pub seeded_order: bool,
    pub span: std::ops::Range<usize>,
}

impl ContinualPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "classes_per_stage": self.classes_per_stage, "memory": self.memory, "epochs": self.epochs,
                "order": if self.seeded_order { "seeded" } else { "classes" } })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawContinual>,
    modality: Modality,
) -> Result<ContinualPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "continual")?;
    let r = raw.into_inner();
    Ok(ContinualPlan {
        classes_per_stage: c.positive(
            &r.classes_per_stage,
            2,
            "classes_per_stage",
            "how many new classes each stage brings, e.g. 2",
        )?,
        memory: c.positive(
            &r.memory,
            200,
            "memory",
            "exemplars kept for rehearsal over all seen classes, e.g. 200",
        )?,
        epochs: c.positive(&r.epochs, 10, "epochs", "MLP epochs per stage, e.g. 10")?,
        seeded_order: r.order == Some(RawOrder::Seeded),
        span,
    })
}
