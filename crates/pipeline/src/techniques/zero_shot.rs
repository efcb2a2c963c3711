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

use graft_eval::classification_report;
use graft_heads::{FittedPrototype, Metric, ParamGuard, Predict, Prototype, argmax_rows};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Deserialize;
use serde_json::json;
use toml::Spanned;

use super::{Check, Modality, RunData, TechniqueReport, f4, spread_json, with_interval};
use crate::run::derive_seed;
use crate::{Diagnostic, PipelineError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZeroShot {
    pub template: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    pub prior_shots: Option<Spanned<Vec<usize>>>,
    pub prior_weight: Option<Spanned<f64>>,
    pub repeats: Option<Spanned<usize>>,
    pub initialise_prototype: Option<Spanned<bool>>,
}

/// `[zero_shot]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct ZeroShotPlan {
    /// Contains `{label}`.
    pub template: String,
    /// Class name → the words that describe it (classes not listed use their name).
    pub labels: BTreeMap<String, String>,
    labels_span: Option<std::ops::Range<usize>>,
    pub prior_shots: Vec<usize>,
    pub prior_weight: f64,
    pub repeats: usize,
    /// Set (to the key's span) when the pipeline's prototype head starts from the descriptions.
    pub initialise_prototype: Option<std::ops::Range<usize>>,
}

impl ZeroShotPlan {
    pub(crate) fn json(&self) -> serde_json::Value {
        json!({ "template": self.template, "labels": self.labels, "prior_shots": self.prior_shots,
                "prior_weight": self.prior_weight, "repeats": self.repeats,
                "initialise_prototype": self.initialise_prototype.is_some() })
    }

    /// The text embedded for each class, in class order.
    pub(crate) fn class_texts(&self, classes: &[String]) -> Vec<String> {
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
    c: &Check<'_>,
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

/// A cosine prototype head from `x` (classes `y`) and the class descriptions, which count as `weight`
/// examples each (temperature 1: only the predicted class is used here).
fn prior_head(
    x: ArrayView2<'_, f32>,
    y: &[usize],
    class_embeddings: &Array2<f32>,
    weight: f32,
) -> Result<FittedPrototype, PipelineError> {
    Ok(Prototype::params()
        .metric(Metric::Cosine)
        .temperature(1.0)
        .check()?
        .fit_with_prior(x, y, class_embeddings.view(), weight)?)
}

pub(crate) fn run(p: &ZeroShotPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    if let Some(unknown) = p.labels.keys().find(|k| !d.classes.contains(k)) {
        return Err(d
            .plan
            .diagnostic(
                &p.labels_span,
                format!("`labels` names class `{unknown}`, which the data does not have"),
            )
            .with_hint(
                match crate::diagnostic::did_you_mean(unknown, d.classes.iter().map(String::as_str))
                {
                    Some(best) => format!(
                        "did you mean `{best}`? the classes are: {}",
                        d.classes.join(", ")
                    ),
                    None => format!("the classes are: {}", d.classes.join(", ")),
                },
            )
            .into());
    }
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let texts = p.class_texts(d.classes);
    let class_embeddings = embed(None, &texts, false)?.features;
    let n_classes = d.classes.len();
    let zero_shot = prior_head(
        d.features.slice(ndarray::s![..0, ..]),
        &[],
        &class_embeddings,
        1.0,
    )?;
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let x_test = d.features.select(Axis(0), d.test);
    let predicted = argmax_rows(zero_shot.similarities(x_test.view()).view());
    let report = classification_report(&y_test, &predicted, n_classes)?;

    // The description as a prior for a prototype head, on the same seeded draws as the plain class mean.
    let per_k = super::paired_draws(&p.prior_shots, p.repeats, |k, r| {
        let rows = crate::curve::draw(
            d.train,
            d.labels,
            n_classes,
            k,
            derive_seed(d.plan.seed, &format!("zero-shot prior {k} {r}")),
        );
        let x = d.features.select(Axis(0), &rows);
        let y: Vec<usize> = rows.iter().map(|&r| d.labels[r]).collect();
        let score = |weight: f32| -> Result<f64, PipelineError> {
            let head = prior_head(x.view(), &y, &class_embeddings, weight)?;
            Ok(super::accuracy(&head.predict(x_test.view())?, &y_test))
        };
        Ok((score(0.0)?, score(p.prior_weight as f32)?))
    })?;
    let mut rows = vec![
        vec![
            "zero-shot (class descriptions only)".to_owned(),
            "0".to_owned(),
            f4(report.accuracy),
            f4(report.macro_f1),
        ],
        vec![
            "trained headline head (whole training split)".to_owned(),
            d.train.len().to_string(),
            f4(d.headline_accuracy),
            "–".to_owned(),
        ],
    ];
    let mut points = Vec::new();
    for (k, plain, prior) in &per_k {
        rows.push(vec![
            format!("prototype, {k} per class"),
            (k * n_classes).to_string(),
            with_interval(plain),
            "–".to_owned(),
        ]);
        rows.push(vec![
            format!("prototype with zero-shot prior, {k} per class"),
            (k * n_classes).to_string(),
            with_interval(prior),
            "–".to_owned(),
        ]);
        points.push(json!({ "per_class": k, "prototype": spread_json(plain),
                            "with_prior": spread_json(prior) }));
    }
    let first = &per_k[0];
    Ok(TechniqueReport {
        technique: "zero_shot".to_owned(),
        title: "Zero-shot: classes from their descriptions".to_owned(),
        method: format!(
            "Each class's description is put through the template `{}` and embedded by the backbone (texts: {}); \
             every test row goes to the most cosine-similar class — no training row is used. As a prior, the \
             description counts as {} example(s) in a cosine prototype head (unit(w·ê + Σx̂)), compared with the \
             plain class mean on {} seeded draws per K from the training split.{}",
            p.template,
            texts
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", "),
            p.prior_weight,
            p.repeats,
            if p.initialise_prototype.is_some() {
                " The pipeline's prototype head was trained with this prior (its saved means include it)."
            } else {
                ""
            }
        ),
        finding: format!(
            "zero-shot test accuracy {:.4} (macro-F1 {:.4}) vs {:.4} for the trained head; with {} per class the \
             prototype head scores {:.4} without the prior and {:.4} with it",
            report.accuracy,
            report.macro_f1,
            d.headline_accuracy,
            first.0,
            first.1.mean,
            first.2.mean,
        ),
        columns: vec![
            "classifier".to_owned(),
            "labelled rows".to_owned(),
            "test accuracy".to_owned(),
            "macro-F1".to_owned(),
        ],
        rows,
        details: json!({
            "class_texts": texts,
            "test_accuracy": report.accuracy,
            "test_macro_f1": report.macro_f1,
            "trained_accuracy": d.headline_accuracy,
            "prior_weight": p.prior_weight,
            "prior": points,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
