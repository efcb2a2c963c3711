//! `[zero_shot]`: classes given as names or descriptions, put through a template ("This review is
//! {label}.") and embedded by the text backbone (through the pipeline's prompt, like every text); each row
//! goes to the class whose embedding is most cosine-similar, with no training — embedding-based zero-shot
//! classification (Yin, Hay & Roth, 2019; the label-template recipe CLIP popularised, Radford et al., 2021).
//!
//! The class embeddings also serve as a prior for a prototype head: with K examples per class the prototype
//! is unit(w · ê_c + Σ x̂_i) — the description counts as `prior_weight` examples — which is compared with the
//! plain class mean on the same seeded draws, and with `initialise_prototype` trains the pipeline's
//! `[head.prototype]`.

use graft_eval::classification_report;
use graft_heads::{FittedPrototype, Metric, ParamGuard, Predict, Prototype, argmax_rows};
use ndarray::{Array2, ArrayView2, Axis};
use serde_json::json;

use super::{RunData, f4, spread_json, with_interval};
use crate::PipelineError;
use graft_config::techniques::ZeroShotPlan;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

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

/// `labels` may only describe classes the data has: what `check` runs too.
pub(crate) fn check_classes(
    p: &ZeroShotPlan,
    classes: &[String],
    file: &std::path::Path,
    source: &str,
) -> Result<(), PipelineError> {
    let Some(unknown) = p.labels.keys().find(|k| !classes.contains(k)) else {
        return Ok(());
    };
    let known = classes.join(", ");
    Err(graft_config::Diagnostic::at(
        file,
        source,
        p.labels_span.clone(),
        format!("`labels` names class `{unknown}`, which the data does not have"),
    )
    .with_hint(
        match graft_config::did_you_mean(unknown, classes.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`? the classes are: {known}"),
            None => format!("the classes are: {known}"),
        },
    )
    .into())
}

pub(crate) fn run(p: &ZeroShotPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    check_classes(p, d.classes, d.file, d.source)?;
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
    let interval = graft_eval::Bootstrap {
        level: d.level,
        seed: derive_seed(d.seed, "zero-shot bootstrap"),
        ..graft_eval::Bootstrap::default()
    }
    .interval(y_test.len(), |rows| {
        rows.iter().filter(|&&i| predicted[i] == y_test[i]).count() as f64 / rows.len() as f64
    })?;

    // The description as a prior for a prototype head, on the same seeded draws as the plain class mean;
    // accuracy and macro-F1 of each draw's predictions.
    let draws = |macro_f1: bool| {
        super::paired_draws(&p.prior_shots, p.repeats, d.level, |k, r| {
            let rows = crate::curve::draw(
                d.train,
                d.labels,
                n_classes,
                k,
                derive_seed(d.seed, &format!("zero-shot prior {k} {r}")),
            );
            let x = d.features.select(Axis(0), &rows);
            let y: Vec<usize> = rows.iter().map(|&r| d.labels[r]).collect();
            let score = |weight: f32| -> Result<f64, PipelineError> {
                let predicted =
                    prior_head(x.view(), &y, &class_embeddings, weight)?.predict(x_test.view())?;
                Ok(if macro_f1 {
                    classification_report(&y_test, &predicted, n_classes)?.macro_f1
                } else {
                    super::accuracy(&predicted, &y_test)
                })
            };
            Ok((score(0.0)?, score(p.prior_weight as f32)?))
        })
    };
    let per_k = draws(false)?;
    let per_k_f1 = draws(true)?;
    let mut rows = vec![
        vec![
            "zero-shot (class descriptions only)".to_owned(),
            "0".to_owned(),
            format!(
                "{:.4} [{:.4}, {:.4}]",
                interval.estimate, interval.lower, interval.upper
            ),
            f4(report.macro_f1),
        ],
        vec![
            "trained headline head (whole training split)".to_owned(),
            d.train.len().to_string(),
            f4(d.headline_accuracy),
            f4(d.headline_macro_f1),
        ],
    ];
    let mut points = Vec::new();
    for ((k, plain, prior), (_, plain_f1, prior_f1)) in per_k.iter().zip(&per_k_f1) {
        rows.push(vec![
            format!("prototype, {k} per class"),
            (k * n_classes).to_string(),
            with_interval(plain),
            with_interval(plain_f1),
        ]);
        rows.push(vec![
            format!("prototype with zero-shot prior, {k} per class"),
            (k * n_classes).to_string(),
            with_interval(prior),
            with_interval(prior_f1),
        ]);
        points.push(json!({ "per_class": k, "prototype": spread_json(plain),
                            "with_prior": spread_json(prior) }));
    }
    let first = &per_k[0];
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "zero_shot".to_owned(),
        title: "Zero-shot: classes from their descriptions".to_owned(),
        method: method(p, &texts),
        finding: format!(
            "zero-shot test accuracy {:.4} ({:.0}% interval [{:.4}, {:.4}], macro-F1 {:.4}) vs {:.4} for the trained \
             head; with {} per class the \
             prototype head scores {:.4} without the prior and {:.4} with it",
            report.accuracy,
            d.level * 100.0,
            interval.lower,
            interval.upper,
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
            "test_interval": [interval.lower, interval.upper],
            "trained_macro_f1": d.headline_macro_f1,
            "trained_accuracy": d.headline_accuracy,
            "prior_weight": p.prior_weight,
            "prior": points,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// What the stage does, in the report's words.
fn method(p: &ZeroShotPlan, texts: &[String]) -> String {
    format!(
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
    )
}
