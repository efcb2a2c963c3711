//! `[domain_adaptation]`: a labelled source (the pipeline's data: its training split) and a target domain
//! whose rows are used unlabelled to align the features; the target's labels only score the result.
//!
//! Feature-level alignment before the headline head, each compared with no adaptation on the same rows:
//! per-domain standardisation (each domain z-scored with its own statistics), CORAL (Sun, Feng & Saenko,
//! 2016: source covariance whitened and re-coloured with the target's, λ = 1 on standardised features), and
//! both. As a ceiling, the same head trained on target labels (stratified 5-fold cross-validation on the
//! target rows).

use graft_heads::{FittedTransform, Targets, argmax_rows, coral};
use ndarray::{Array2, ArrayView2, Axis};
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;
use crate::heads::train_head;
use graft_config::HeadSpec;
use graft_config::techniques::{DomainPlan, TargetSource};
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

/// The target table's texts and labels (as source class indices).
fn read_target(
    p: &DomainPlan,
    d: &RunData<'_>,
) -> Result<(Vec<String>, Vec<usize>, String), PipelineError> {
    let span = Some(p.span.clone());
    let (path, label) = match &p.target {
        TargetSource::Registry(name) => {
            ((d.dataset)(name)?, format!("{name} (registered data set)"))
        }
        TargetSource::File(path) => (path.clone(), path.display().to_string()),
    };
    let table = graft_ingest::read_table(&path).map_err(|e| {
        PipelineError::from(
            d.diagnostic(&span, format!("target domain: {e}"))
                .with_hint("give a CSV/TSV or Parquet table with a header row, texts and labels"),
        )
    })?;
    let target = graft_ingest::text_classification(&table, &p.text_column, &p.label_column)
        .map_err(|e| {
            PipelineError::from(
                d.diagnostic(&span, format!("target domain {}: {e}", path.display()))
                    .with_hint("`text_column` and `label_column` name the target table's columns; it needs rows of at least two classes"),
            )
        })?;
    if target.texts.is_empty() {
        return Err(d
            .diagnostic(
                &span,
                format!("the target domain {} has no rows", path.display()),
            )
            .with_hint("give a table with texts and labels")
            .into());
    }
    if target.classes != d.classes {
        return Err(d
            .diagnostic(
                &span,
                format!(
                    "the target domain's classes ({}) differ from the source's ({})",
                    target.classes.join(", "),
                    d.classes.join(", ")
                ),
            )
            .with_hint("both domains must use the same class names")
            .into());
    }
    Ok((target.texts, target.labels, label))
}

/// One alignment: the rows as it presents them to the head.
struct Aligned {
    name: &'static str,
    train: Array2<f32>,
    source_test: Array2<f32>,
    target: Array2<f32>,
}

/// Trains `spec` on `x`/`y` and returns its accuracy on each of `scored`.
fn train_and_score(
    spec: &HeadSpec,
    x: ArrayView2<'_, f32>,
    y: &[usize],
    n_classes: usize,
    scored: &[(ArrayView2<'_, f32>, &[usize])],
) -> Result<Vec<f64>, PipelineError> {
    let (head, _) = train_head(spec, None, x, &Targets::new(y, n_classes)?, None)?;
    scored
        .iter()
        .map(|(x, y)| Ok(accuracy(&argmax_rows(head.predict_proba(*x)?.view()), y)))
        .collect()
}

pub(crate) fn run(p: &DomainPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let (texts, y_target, target_label) = read_target(p, d)?;
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let x_target = embed(None, &texts, false)?.features;
    let n_classes = d.classes.len();
    let spec = d.headline.uncalibrated();
    let x_source = d.features.select(Axis(0), d.train);
    let y_source: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let x_source_test = d.features.select(Axis(0), d.test);
    let y_source_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();

    let source_z = FittedTransform::standardize(x_source.view())?;
    let target_z = FittedTransform::standardize(x_target.view())?;
    let (s_own, st_own, t_own) = (
        source_z.transform(x_source.view())?,
        source_z.transform(x_source_test.view())?,
        target_z.transform(x_target.view())?,
    );
    // CORAL on features standardised with the source's statistics (one shared scale, no alignment of its own).
    let t_shared = source_z.transform(x_target.view())?;
    let a = coral(s_own.view(), t_shared.view(), p.lambda)?;
    let a_own = coral(s_own.view(), t_own.view(), p.lambda)?;
    let methods = [
        Aligned {
            name: "no adaptation",
            train: x_source.clone(),
            source_test: x_source_test.clone(),
            target: x_target.clone(),
        },
        Aligned {
            name: "per-domain standardisation",
            train: s_own.clone(),
            source_test: st_own.clone(),
            target: t_own.clone(),
        },
        Aligned {
            name: "CORAL",
            train: s_own.dot(&a),
            source_test: st_own.dot(&a),
            target: t_shared,
        },
        Aligned {
            name: "per-domain standardisation + CORAL",
            train: s_own.dot(&a_own),
            source_test: st_own.dot(&a_own),
            target: t_own,
        },
    ];
    let mut rows = Vec::new();
    let mut results = Vec::new();
    // (method, target accuracy) of each alignment.
    let mut target_scores = Vec::new();
    for m in &methods {
        let scores = train_and_score(
            &spec,
            m.train.view(),
            &y_source,
            n_classes,
            &[
                (m.source_test.view(), &y_source_test),
                (m.target.view(), &y_target),
            ],
        )?;
        rows.push(vec![m.name.to_owned(), f4(scores[0]), f4(scores[1])]);
        results.push(json!({ "method": m.name, "source_test_accuracy": scores[0], "target_accuracy": scores[1] }));
        target_scores.push((m.name, scores[1]));
    }
    // Ceiling: target labels, stratified 5-fold cross-validation on the target rows.
    let folds = graft_ingest::stratified_kfold(
        &y_target,
        n_classes,
        5,
        derive_seed(d.seed, "domain oracle"),
    )?;
    let mut right = 0.0;
    for fold in &folds {
        let y_train: Vec<usize> = fold.train.iter().map(|&r| y_target[r]).collect();
        let y_held: Vec<usize> = fold.held_out.iter().map(|&r| y_target[r]).collect();
        let held = x_target.select(Axis(0), &fold.held_out);
        let a = train_and_score(
            &spec,
            x_target.select(Axis(0), &fold.train).view(),
            &y_train,
            n_classes,
            &[(held.view(), &y_held)],
        )?;
        right += a[0] * y_held.len() as f64;
    }
    let oracle = right / y_target.len() as f64;
    rows.push(vec![
        "target labels (5-fold CV, ceiling)".to_owned(),
        "–".to_owned(),
        f4(oracle),
    ]);
    let none = target_scores[0].1;
    let (best_method, best) = target_scores[1..]
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three adapted methods");
    let counts: Vec<usize> = (0..n_classes)
        .map(|c| y_target.iter().filter(|&&y| y == c).count())
        .collect();
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "domain_adaptation".to_owned(),
        title: "Domain adaptation: source → target".to_owned(),
        method: format!(
            "Source: the {} training rows of this pipeline's data. Target: {target_label}, {} rows ({}), embedded \
             by the same backbone; its features (never its labels) fit the alignment. The headline head ({}) is \
             trained on aligned source rows and scored on the source test split and on every target row. CORAL: \
             Sun, Feng & Saenko (2016), λ = {}.",
            d.train.len(),
            y_target.len(),
            d.classes
                .iter()
                .zip(&counts)
                .map(|(c, n)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", "),
            spec.label(),
            p.lambda
        ),
        finding: format!(
            "target accuracy {none:.4} without adaptation, {:.4} with {} ({:+.4}); a head trained on target labels \
             reaches {oracle:.4}",
            best,
            best_method,
            best - none
        ),
        columns: vec![
            "alignment".to_owned(),
            "source test accuracy".to_owned(),
            "target accuracy".to_owned(),
        ],
        rows,
        details: json!({ "target": target_label, "target_rows": y_target.len(), "methods": results,
                         "target_cross_validated_accuracy": oracle, "lambda": p.lambda }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
