//! `[fusion]`: features of a second frozen text backbone next to the pipeline's, for the same rows — the
//! lateral use of several frozen models (Rusu et al., 2016, "Progressive neural networks", with frozen
//! columns and no adapters). The fused row is the concatenation of both embeddings; the headline head's
//! settings are trained on each backbone alone and on the fusion, all on the same split, and the fusion is
//! paired with the pipeline's backbone on the test rows (McNemar's exact test).

use crate::spanned::Spanned;
use graft_schema::techniques::RawFusion;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[fusion]`, checked.
#[derive(Debug, Clone)]
pub struct FusionPlan {
    /// The second backbone.
    pub backbone: super::OtherBackbone,
    /// Also project the concatenation onto this many PCA-whitened axes (fitted on the training rows).
    pub project: Option<usize>,
    pub span: std::ops::Range<usize>,
}

impl FusionPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "backbone": self.backbone.json(), "method": "concatenate", "project": self.project })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawFusion>,
    modality: Modality,
) -> Result<FusionPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "fusion")?;
    if !modality.texts {
        return Err(c
            .error(span, "`[fusion]` adds a second text backbone")
            .with_hint("it needs text rows and a text `[backbone]`"));
    }
    let raw = raw.into_inner();
    let project = raw
        .project
        .as_ref()
        .map(|_| {
            c.positive(
                &raw.project,
                0,
                "project",
                "PCA components of the fused features, e.g. 256",
            )
        })
        .transpose()?;
    Ok(FusionPlan {
        backbone: c.text_backbone(&raw.backbone)?,
        project,
        span: raw.project.as_ref().map_or(span, Spanned::span),
    })
}
