//! `[zero_shot]`: classes given as names or descriptions, put through a template ("This review is
//! {label}.") and embedded by the text backbone (through the pipeline's prompt, like every text); each row
//! goes to the class whose embedding is most cosine-similar, with no training — embedding-based zero-shot
//! classification (Yin, Hay & Roth, 2019; the label-template recipe CLIP popularised, Radford et al., 2021).
//!
//! The class embeddings also serve as a prior for a prototype head: with K examples per class the prototype
//! is unit(w · ê_c + Σ x̂_i) — the description counts as `prior_weight` examples — which is compared with the
//! plain class mean on the same seeded draws, and with `initialise_prototype` trains the pipeline's
//! `[head.prototype]`.

use std::collections::BTreeMap;

use crate::spanned::Spanned;
use graft_schema::techniques::RawZeroShot;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[zero_shot]`, checked.
#[derive(Debug, Clone)]
pub struct ZeroShotPlan {
    /// Contains `{label}`.
    pub template: String,
    /// Class name → the words that describe it (classes not listed use their name).
    pub labels: BTreeMap<String, String>,
    pub labels_span: Option<std::ops::Range<usize>>,
    pub prior_shots: Vec<usize>,
    pub prior_weight: f64,
    pub repeats: usize,
    /// Set (to the key's span) when the pipeline's prototype head starts from the descriptions.
    pub initialise_prototype: Option<std::ops::Range<usize>>,
}

impl ZeroShotPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "template": self.template, "labels": self.labels, "prior_shots": self.prior_shots,
                "prior_weight": self.prior_weight, "repeats": self.repeats,
                "initialise_prototype": self.initialise_prototype.is_some() })
    }

    /// The text embedded for each class, in class order.
    pub fn class_texts(&self, classes: &[String]) -> Vec<String> {
        classes
            .iter()
            .map(|c| {
                let words = self.labels.get(c).unwrap_or(c);
                self.template.replace("{label}", words)
            })
            .collect()
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawZeroShot>,
    modality: Modality,
) -> Result<ZeroShotPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "zero_shot")?;
    if !modality.texts {
        return Err(c
            .error(span, "`[zero_shot]` embeds class descriptions with a text backbone")
            .with_hint("it needs text rows and a text `[backbone]`; remove `[zero_shot]` for images or given features"));
    }
    let r = raw.into_inner();
    let template = match &r.template {
        None => "This is {label}.".to_owned(),
        Some(t) if !t.get_ref().contains("{label}") => {
            return Err(c
                .error(t.span(), "`template` must contain `{label}`")
                .with_hint("e.g. `template = \"This review is {label}.\"`; `{label}` is replaced by each class's description"));
        }
        Some(t) => t.get_ref().clone(),
    };
    if let Some(l) = &r.labels
        && let Some((class, _)) = l.get_ref().iter().find(|(_, v)| v.trim().is_empty())
    {
        return Err(c
            .error(
                l.span(),
                format!("the description of class `{class}` is empty"),
            )
            .with_hint("give the words the template puts in place of `{label}`"));
    }
    let prior_weight = match &r.prior_weight {
        None => 1.0,
        Some(w) if w.get_ref().is_finite() && *w.get_ref() >= 0.0 => *w.get_ref(),
        Some(w) => {
            return Err(c
                .error(w.span(), "`prior_weight` must be a number ≥ 0")
                .with_hint("how many examples the class description counts as, e.g. 1"));
        }
    };
    Ok(ZeroShotPlan {
        template,
        labels_span: r.labels.as_ref().map(Spanned::span),
        labels: r.labels.map(Spanned::into_inner).unwrap_or_default(),
        prior_shots: c.shots(&r.prior_shots, &[1, 2, 4, 8, 16], "prior_shots")?,
        prior_weight,
        repeats: c.positive(&r.repeats, 10, "repeats", "10 seeded draws per K")?,
        initialise_prototype: r
            .initialise_prototype
            .as_ref()
            .filter(|i| *i.get_ref())
            .map(Spanned::span),
    })
}
