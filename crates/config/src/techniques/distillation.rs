//! `[distillation]`: knowledge distillation (Hinton, Vinyals & Dean, 2015) from the pipeline's backbone and
//! headline head (the teacher) into a smaller backbone with an MLP head (the student).
//!
//! The teacher, trained on the training split, gives probabilities softened at temperature T for the
//! training rows; the student MLP trains on the smaller backbone's features with
//! (1 − α)·cross-entropy + α·T²·KL(teacher_T ‖ student_T). Reported: the teacher, the student trained on the
//! labels alone (α = 0, same settings and seed) and the distilled student on the test split, and the
//! student's extraction speed-up — both backbones timed on the same rows, bypassing the cache.

use crate::spanned::Spanned;
use graft_schema::techniques::RawDistillation;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[distillation]`, checked.
#[derive(Debug, Clone)]
pub struct DistillationPlan {
    /// The student backbone.
    pub student: super::OtherBackbone,
    pub temperature: f64,
    pub alpha: f64,
    pub epochs: usize,
    /// Rows both backbones embed, uncached, for the speed-up.
    pub timing_rows: usize,
    pub student_span: std::ops::Range<usize>,
    /// The teacher is every `[head.*]` of the pipeline, averaged (else the headline).
    pub ensemble: bool,
}

impl DistillationPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "student": self.student.json(), "temperature": self.temperature, "alpha": self.alpha,
                "epochs": self.epochs, "timing_rows": self.timing_rows,
                "teacher": if self.ensemble { "ensemble" } else { "headline" } })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawDistillation>,
    modality: Modality,
) -> Result<DistillationPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "distillation")?;
    if !modality.texts {
        return Err(c
            .error(
                span,
                "`[distillation]` distils into a smaller text backbone",
            )
            .with_hint("it needs text rows and a text `[backbone]` as the teacher"));
    }
    let r = raw.into_inner();
    let temperature = match &r.temperature {
        None => 4.0,
        Some(t) if t.get_ref().is_finite() && *t.get_ref() > 0.0 => *t.get_ref(),
        Some(t) => {
            return Err(c
                .error(t.span(), "`temperature` must be a number above 0")
                .with_hint("Hinton et al. (2015) soften with T between 2 and 20; 4 is common"));
        }
    };
    let alpha = match &r.alpha {
        None => 0.5,
        Some(a) if (0.0..=1.0).contains(a.get_ref()) => *a.get_ref(),
        Some(a) => {
            return Err(c
                .error(
                    a.span(),
                    format!("`alpha` = {} must be between 0 and 1", a.get_ref()),
                )
                .with_hint(
                    "the weight of the teacher's soft targets; 1 − alpha goes to the labels",
                ));
        }
    };
    let ensemble = match &r.teacher {
        None => false,
        Some(t) if t.get_ref() == "headline" => false,
        Some(t) if t.get_ref() == "ensemble" => {
            if modality.heads < 2 {
                return Err(c
                    .error(
                        t.span(),
                        "`teacher = \"ensemble\"` averages the pipeline's heads, but it has one",
                    )
                    .with_hint("add more `[head.*]` tables, or use `teacher = \"headline\"`"));
            }
            true
        }
        Some(t) => {
            return Err(c
                .error(t.span(), format!("unknown teacher `{}`", t.get_ref()))
                .with_hint(
                    "`headline` (the first head) or `ensemble` (all heads' mean probabilities)",
                ));
        }
    };
    Ok(DistillationPlan {
        ensemble,
        student: c.text_backbone(&r.student)?,
        student_span: r.student.span(),
        temperature,
        alpha,
        epochs: c.positive(
            &r.epochs,
            20,
            "epochs",
            "epochs of the student MLP, e.g. 20",
        )?,
        timing_rows: c.positive(
            &r.timing_rows,
            1000,
            "timing_rows",
            "rows both backbones embed uncached to time them, e.g. 1000",
        )?,
    })
}
