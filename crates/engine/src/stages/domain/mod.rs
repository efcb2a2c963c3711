//! `[domain_adaptation]`: a labelled source (the pipeline's data: its training split) and a target domain
//! whose rows are used unlabelled to align the features; the target's labels, when it has them, only score
//! the result.
//!
//! Feature-level alignment before the headline head, each compared with no adaptation on the same rows:
//! per-domain standardisation (each domain z-scored with its own statistics), CORAL (Sun, Feng & Saenko,
//! 2016: source covariance whitened and re-coloured with the target's, λ = 1 on standardised features), and
//! both. As a ceiling, the same head trained on target labels (stratified 5-fold cross-validation on the
//! target rows). A head is kept (`heads/<head>-adapted.json`, with its alignment's target transform inside
//! it, so that `predict` applies it to raw target rows) by evidence only: the alignment that measurably helps
//! on labelled target rows, else none.

mod simcse;

use std::ops::Range;
use std::path::Path;

use graft_config::techniques::{DomainPlan, TargetSource};
use graft_config::{Diagnostic, HeadSpec};
use graft_eval::{Bootstrap, Interval, McNemar, PairedBootstrap, mcnemar};
use graft_heads::{FittedTransform, Targets, argmax_rows, coral};
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;
use ndarray::{Array2, ArrayView2, Axis};
use serde_json::json;

use super::{DatasetTable, RunData, accuracy, f4};
use crate::PipelineError;
use crate::heads::{TrainedHead, train_head};

/// The target domain's rows.
pub(crate) struct Target {
    pub texts: Vec<String>,
    /// Each row's class (a source class index) when the table has labels.
    pub labels: Option<Vec<usize>>,
    /// The target as the report names it.
    pub name: String,
    /// Rows without a text (or, when labelled, without a label), left out.
    pub dropped: usize,
}

/// Reads the target table and checks it against the source's classes: what `check` runs too, so that a
/// wrong column or class is found before anything is extracted.
pub(crate) fn read_target(
    p: &DomainPlan,
    classes: &[String],
    dataset: &DatasetTable<'_>,
    file: &Path,
    source: &str,
) -> Result<Target, PipelineError> {
    let at = |span: &Option<Range<usize>>, message: String| {
        Diagnostic::at(file, source, span.clone().or(Some(p.span.clone())), message)
    };
    let (path, name) = match &p.target {
        TargetSource::Registry(name) => (dataset(name)?, format!("{name} (registered data set)")),
        TargetSource::File(path) => (path.clone(), path.display().to_string()),
    };
    let table = graft_ingest::read_table(&path).map_err(|e| {
        PipelineError::from(at(&None, format!("target domain: {e}")).with_hint(
            "give a CSV/TSV, JSONL or Parquet table with a header row and a text column",
        ))
    })?;
    let columns: Vec<String> = table
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let missing = |column: &str, span: &Option<Range<usize>>, key: &str| {
        let hint = match graft_config::did_you_mean(column, columns.iter().map(String::as_str)) {
            Some(best) => format!(
                "did you mean `{best}`? the table has columns: {}",
                columns.join(", ")
            ),
            None => format!(
                "`{key}` names a column of the target table; it has: {}",
                columns.join(", ")
            ),
        };
        PipelineError::from(
            at(
                span,
                format!(
                    "column `{column}` not found in the target table {}",
                    path.display()
                ),
            )
            .with_hint(hint),
        )
    };
    if !columns.contains(&p.text_column) {
        return Err(missing(&p.text_column, &p.text_span, "text_column"));
    }
    // A label column named in the pipeline (or the registry) must exist; the default `label` is optional.
    let label_column = match &p.label_column {
        Some(column) if !columns.contains(column) => {
            return Err(missing(column, &p.label_span, "label_column"));
        }
        Some(column) => Some(column.as_str()),
        None => columns.iter().any(|c| c == "label").then_some("label"),
    };
    let target = match label_column {
        Some(label_column) => {
            let target = graft_ingest::text_classification(&table, &p.text_column, label_column)
                .map_err(|e| {
                    PipelineError::from(
                        at(
                            &p.label_span,
                            format!("target domain {}: {e}", path.display()),
                        )
                        .with_hint(
                            "`text_column` and `label_column` name the target table's columns",
                        ),
                    )
                })?;
            if target.classes != classes {
                return Err(at(
                    &p.label_span,
                    format!(
                        "the target domain's classes ({}) differ from the source's ({})",
                        target.classes.join(", "),
                        classes.join(", ")
                    ),
                )
                .with_hint("both domains must use the same class names (target labels only score the result; a table without a label column is fine)")
                .into());
            }
            Target {
                dropped: target.dropped_null_text + target.dropped_null_label,
                texts: target.texts,
                labels: Some(target.labels),
                name,
            }
        }
        None => {
            let (texts, dropped) = graft_ingest::texts(&table, &p.text_column).map_err(|e| {
                PipelineError::from(at(
                    &p.text_span,
                    format!("target domain {}: {e}", path.display()),
                ))
            })?;
            Target {
                texts,
                labels: None,
                name,
                dropped,
            }
        }
    };
    if target.texts.is_empty() {
        return Err(at(
            &None,
            format!(
                "the target domain {} has no rows with a text",
                path.display()
            ),
        )
        .with_hint("give a table with a text per row")
        .into());
    }
    Ok(target)
}

/// One alignment: the rows as it presents them to the head, and the standardisation a target row gets
/// before the head (kept with the adapted head).
struct Aligned {
    name: &'static str,
    train: Array2<f32>,
    source_test: Array2<f32>,
    target_transform: Option<FittedTransform>,
}

/// One alignment's head and scores.
struct Scored {
    name: &'static str,
    /// Taken when it is the kept one.
    head: Option<TrainedHead>,
    source_test_accuracy: f64,
    /// Predicted class of every target row.
    target_predicted: Vec<usize>,
    /// Accuracy on the labelled target rows, with its bootstrap interval.
    target: Option<Interval>,
}

fn train_and_score(
    spec: &HeadSpec,
    m: Aligned,
    source: (&[usize], &[usize], usize),
    x_target: ArrayView2<'_, f32>,
    y_target: Option<&[usize]>,
    bootstrap: &Bootstrap,
) -> Result<Scored, PipelineError> {
    let (y_train, y_test, n_classes) = source;
    let (mut head, _) = train_head(
        spec,
        None,
        m.train.view(),
        &Targets::new(y_train, n_classes)?,
        None,
    )?;
    // The source test rows are already in the head's space; target rows go through the target's transform.
    let source_predicted = argmax_rows(head.predict_proba(m.source_test.view())?.view());
    head.transform = m.target_transform;
    let target_predicted = argmax_rows(head.predict_proba(x_target)?.view());
    let target = y_target
        .map(|y| {
            bootstrap.interval(y.len(), |rows| {
                rows.iter()
                    .filter(|&&i| target_predicted[i] == y[i])
                    .count() as f64
                    / rows.len() as f64
            })
        })
        .transpose()?;
    Ok(Scored {
        name: m.name,
        head: Some(head),
        source_test_accuracy: accuracy(&source_predicted, y_test),
        target_predicted,
        target,
    })
}

/// The four alignments of source and target features.
fn alignments(
    x_source: &Array2<f32>,
    x_source_test: &Array2<f32>,
    x_target: ArrayView2<'_, f32>,
    lambda: f64,
) -> Result<Vec<Aligned>, PipelineError> {
    let source_z = FittedTransform::standardize(x_source.view())?;
    let target_z = FittedTransform::standardize(x_target)?;
    let (s_own, st_own) = (
        source_z.transform(x_source.view())?,
        source_z.transform(x_source_test.view())?,
    );
    // CORAL on features standardised with the source's statistics (one shared scale, no alignment of its own).
    let a = coral(s_own.view(), source_z.transform(x_target)?.view(), lambda)?;
    let a_own = coral(s_own.view(), target_z.transform(x_target)?.view(), lambda)?;
    Ok(vec![
        Aligned {
            name: "no adaptation",
            train: x_source.clone(),
            source_test: x_source_test.clone(),
            target_transform: None,
        },
        Aligned {
            name: "per-domain standardisation",
            train: s_own.clone(),
            source_test: st_own.clone(),
            target_transform: Some(target_z.clone()),
        },
        Aligned {
            name: "CORAL",
            train: s_own.dot(&a),
            source_test: st_own.dot(&a),
            target_transform: Some(source_z),
        },
        Aligned {
            name: "per-domain standardisation + CORAL",
            train: s_own.dot(&a_own),
            source_test: st_own.dot(&a_own),
            target_transform: Some(target_z),
        },
    ])
}

/// Ceiling: the head trained on target labels, stratified 5-fold cross-validation on the target rows.
fn target_ceiling(
    spec: &HeadSpec,
    x_target: ArrayView2<'_, f32>,
    y_target: &[usize],
    n_classes: usize,
    seed: u64,
) -> Result<f64, PipelineError> {
    let folds =
        graft_ingest::stratified_kfold(y_target, n_classes, 5, derive_seed(seed, "domain oracle"))?;
    let mut right = 0;
    for fold in &folds {
        let y_train: Vec<usize> = fold.train.iter().map(|&r| y_target[r]).collect();
        let (head, _) = train_head(
            spec,
            None,
            x_target.select(Axis(0), &fold.train).view(),
            &Targets::new(&y_train, n_classes)?,
            None,
        )?;
        let predicted = argmax_rows(
            head.predict_proba(x_target.select(Axis(0), &fold.held_out).view())?
                .view(),
        );
        right += fold
            .held_out
            .iter()
            .zip(&predicted)
            .filter(|&(&r, &p)| y_target[r] == p)
            .count();
    }
    Ok(right as f64 / y_target.len() as f64)
}

/// The best adaptation against none on the labelled target rows.
struct Verdict {
    best: usize,
    paired: PairedBootstrap,
    test: McNemar,
}

fn verdict_words(v: &Verdict, scored: &[Scored], level: f64) -> String {
    let i = &v.paired.interval;
    let name = scored[v.best].name;
    let percent = level * 100.0;
    if i.lower > 0.0 {
        format!(
            "{name} helps on the target: {:+.4} accuracy, {percent:.0}% interval [{:+.4}, {:+.4}] above zero (McNemar p = {:.2e})",
            i.estimate, i.lower, i.upper, v.test.p_value
        )
    } else if i.upper < 0.0 {
        format!(
            "every alignment hurts on the target; the best, {name}, by {:+.4} ({percent:.0}% interval [{:+.4}, {:+.4}]): keep the unadapted head",
            i.estimate, i.lower, i.upper
        )
    } else {
        format!(
            "no alignment measurably changes target accuracy: the best, {name}, differs by {:+.4} ({percent:.0}% interval [{:+.4}, {:+.4}] includes zero; McNemar p = {:.2})",
            i.estimate, i.lower, i.upper, v.test.p_value
        )
    }
}

/// The alignment whose head is kept for `predict` on target rows, by evidence only: one that measurably
/// helps on labelled target rows (its paired interval above zero), else none. Without target labels no
/// criterion validates an alignment (and one can hurt: CORAL moved a public review set's target accuracy from
/// 0.849 to 0.740), so none is kept.
fn kept_alignment(verdict: Option<&Verdict>) -> (usize, &'static str) {
    match verdict {
        Some(v) if v.paired.interval.lower > 0.0 => (
            v.best,
            "it measurably improves accuracy on the labelled target rows",
        ),
        Some(_) => (
            0,
            "no alignment measurably improves accuracy on the labelled target rows",
        ),
        None => (
            0,
            "the target rows are unlabelled, and nothing validates an alignment without labels",
        ),
    }
}

pub(crate) fn run(p: &DomainPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let target = read_target(p, d.classes, d.dataset, d.file, d.source)?;
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let extract_clock = std::time::Instant::now();
    let embedded = embed(None, &target.texts, false)?;
    let extract_seconds = extract_clock.elapsed().as_secs_f64();
    let x_target = embedded.features;
    let n_classes = d.classes.len();
    let spec = d.headline.uncalibrated();
    let x_source = d.features.select(Axis(0), d.train);
    let y_source: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let x_source_test = d.features.select(Axis(0), d.test);
    let y_source_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let bootstrap = Bootstrap {
        level: d.level,
        seed: derive_seed(d.seed, "domain bootstrap"),
        ..Bootstrap::default()
    };
    let y_target = target.labels.as_deref();
    let scored = alignments(&x_source, &x_source_test, x_target.view(), p.lambda)?
        .into_iter()
        .map(|m| {
            train_and_score(
                &spec,
                m,
                (&y_source, &y_source_test, n_classes),
                x_target.view(),
                y_target,
                &bootstrap,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut scored = scored;
    let mut adapted = match &p.simcse {
        Some(s) => Some(simcse::adapt(s, d, &target.texts)?),
        None => None,
    };
    if let Some(a) = &mut adapted {
        a.target_shift = mean_cosine_distance(x_target.view(), a.target.view());
        let m = Aligned {
            name: SIMCSE,
            train: a.source_train.clone(),
            source_test: a.source_test.clone(),
            target_transform: None,
        };
        scored.push(train_and_score(
            &spec,
            m,
            (&y_source, &y_source_test, n_classes),
            a.target.view(),
            y_target,
            &bootstrap,
        )?);
    }
    let verdict = y_target
        .map(|y| -> Result<Verdict, PipelineError> {
            let best = (1..scored.len())
                .max_by(|&a, &b| {
                    let score = |i: usize| scored[i].target.as_ref().map_or(0.0, |t| t.estimate);
                    score(a).total_cmp(&score(b))
                })
                .expect("three adapted methods");
            Ok(Verdict {
                best,
                paired: bootstrap.paired_accuracy(
                    y,
                    &scored[best].target_predicted,
                    &scored[0].target_predicted,
                )?,
                test: mcnemar(
                    y,
                    &scored[best].target_predicted,
                    &scored[0].target_predicted,
                )?,
            })
        })
        .transpose()?;
    let ceiling = y_target
        .map(|y| target_ceiling(&spec, x_target.view(), y, n_classes, d.seed))
        .transpose()?;
    let (kept, kept_because) = kept_alignment(verdict.as_ref());
    let head_name = format!("{}-adapted", d.headline.name());
    // A kept SimCSE head reads the adapted encoder's features: its graph goes into the run folder with it.
    let graph = match &adapted {
        Some(a) if scored[kept].name == SIMCSE => Some(write_adapted_graph(d, a)?),
        _ => None,
    };
    (d.add_head)(super::StageHead {
        name: head_name.clone(),
        head: scored[kept].head.take().expect("each head is kept once"),
        graph,
    })?;
    Ok(report(
        p,
        d,
        &Outcome {
            target,
            adapted,
            extract_seconds,
            extracted: embedded.extracted,
            scored,
            verdict,
            ceiling,
            kept,
            kept_because,
            head_name,
        },
        clock.elapsed().as_secs_f64(),
    ))
}

/// The name of the backbone adapted with SimCSE, as the table lists it.
const SIMCSE: &str = "SimCSE on both domains' texts (backbone tuned)";

/// The adapted encoder's graph, in the run folder beside the kept head.
const ADAPTED_GRAPH: &str = "backbone-adapted.onnx";
const ADAPTED_TOKENIZER: &str = "backbone-adapted.tokenizer.json";

fn write_adapted_graph(
    d: &RunData<'_>,
    a: &simcse::Adapted,
) -> Result<super::StageGraph, PipelineError> {
    let kit = d.tune.expect("SimCSE ran, so the kit is there");
    let graph = crate::provision::bert_graph(&a.weights, a.blocks, &kit.output)?;
    let sha256 = graft_stdx::sha256_hex(&graph);
    (d.outputs)(ADAPTED_GRAPH, graph)?;
    let tokenizer = std::fs::read(&kit.tokenizer).map_err(|source| PipelineError::Io {
        path: kit.tokenizer.clone(),
        source,
    })?;
    (d.outputs)(ADAPTED_TOKENIZER, tokenizer)?;
    Ok(super::StageGraph {
        onnx: ADAPTED_GRAPH.into(),
        sha256,
        tokenizer: ADAPTED_TOKENIZER.into(),
    })
}

/// The mean of 1 − cosine between the rows of `a` and `b`: how far an adaptation moved the embeddings.
fn mean_cosine_distance(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f64 {
    let n = a.nrows().max(1) as f64;
    a.rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| {
            let dot = f64::from(x.dot(&y));
            let norms = f64::from(x.dot(&x)).sqrt() * f64::from(y.dot(&y)).sqrt();
            1.0 - dot / norms.max(f64::MIN_POSITIVE)
        })
        .sum::<f64>()
        / n
}

/// What the stage measured, for its report.
struct Outcome {
    target: Target,
    /// `simcse`: the adapted encoder and how its training went.
    adapted: Option<simcse::Adapted>,
    extract_seconds: f64,
    /// Target rows extracted (the rest came from the feature cache).
    extracted: usize,
    scored: Vec<Scored>,
    verdict: Option<Verdict>,
    ceiling: Option<f64>,
    /// The alignment whose head is kept, why, and the head's name.
    kept: usize,
    kept_because: &'static str,
    head_name: String,
}

/// The stage's section: a row per alignment (target accuracy with its interval, or the predicted shares of
/// an unlabelled target), the ceiling, the verdict in words and the figures.
fn report(p: &DomainPlan, d: &RunData<'_>, o: &Outcome, seconds: f64) -> TechniqueReport {
    let Outcome {
        target,
        adapted: _,
        extract_seconds,
        extracted,
        scored,
        verdict,
        ceiling,
        kept,
        kept_because,
        head_name,
    } = o;
    let (extract_seconds, kept, ceiling) = (*extract_seconds, *kept, *ceiling);
    let y_target = target.labels.as_deref();
    let shares = |predicted: &[usize]| -> String {
        d.classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let n = predicted.iter().filter(|&&p| p == c).count();
                format!("{name} {:.0}%", 100.0 * n as f64 / predicted.len() as f64)
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let percent = format!("{:.0}%", d.level * 100.0);
    let mut rows: Vec<Vec<String>> = scored
        .iter()
        .map(|s| {
            vec![
                s.name.to_owned(),
                f4(s.source_test_accuracy),
                match &s.target {
                    Some(t) => format!("{:.4} [{:.4}, {:.4}]", t.estimate, t.lower, t.upper),
                    None => shares(&s.target_predicted),
                },
            ]
        })
        .collect();
    if let Some(ceiling) = ceiling {
        rows.push(vec![
            "target labels (5-fold CV, ceiling)".to_owned(),
            "not scored (trained on the target)".to_owned(),
            f4(ceiling),
        ]);
    }
    let methods: Vec<serde_json::Value> = scored
        .iter()
        .map(|s| {
            json!({ "method": s.name, "source_test_accuracy": s.source_test_accuracy,
                    "target_accuracy": s.target.as_ref().map(|t| t.estimate),
                    "target_interval": s.target.as_ref().map(|t| [t.lower, t.upper]) })
        })
        .collect();
    let kept_words = format!("{head_name} keeps {}: {kept_because}", scored[kept].name);
    let finding = match (&verdict, y_target) {
        (Some(v), Some(_)) => format!(
            "{}; target accuracy {:.4} without adaptation; a head trained on target labels reaches {:.4}; \
             {kept_words}",
            verdict_words(v, scored, d.level),
            scored[0].target.as_ref().map_or(0.0, |t| t.estimate),
            ceiling.unwrap_or(0.0)
        ),
        _ => {
            // How far the alignment that moves the class mix most would move it: a warning, not a score.
            let moved = (1..scored.len())
                .max_by_key(|&i| {
                    let differ =
                        |a: &[usize], b: &[usize]| a.iter().zip(b).filter(|(x, y)| x != y).count();
                    differ(&scored[i].target_predicted, &scored[0].target_predicted)
                })
                .expect("three alignments");
            format!(
                "the target rows are unlabelled, so nothing scores the adaptation there; {kept_words}. Without \
                 adaptation the head predicts {} on them; {} would predict {}",
                shares(&scored[0].target_predicted),
                scored[moved].name,
                shares(&scored[moved].target_predicted),
            )
        }
    };
    TechniqueReport {
        curve: Vec::new(),
        technique: "domain_adaptation".to_owned(),
        title: "Domain adaptation: source → target".to_owned(),
        method: method(p, d, o),
        finding,
        columns: vec![
            "alignment".to_owned(),
            "source test accuracy".to_owned(),
            if y_target.is_some() {
                format!("target accuracy [{percent} interval]")
            } else {
                "predicted on the target".to_owned()
            },
        ],
        rows,
        details: json!({
            "target": target.name, "target_rows": target.texts.len(), "target_dropped": target.dropped,
            "labelled": y_target.is_some(), "target_extract_seconds": extract_seconds,
            "target_rows_extracted": extracted, "methods": methods,
            "target_cross_validated_accuracy": ceiling, "lambda": p.lambda,
            "simcse": o.adapted.as_ref().map(|a| json!({
                "rows": a.rows, "trained_blocks": a.outcome.epochs.first().map(|e| e.trainable_blocks),
                "target_shift": a.target_shift,
                "epochs": a.outcome.epochs, "seconds": a.seconds,
                "boundary_states_seconds": a.states_seconds,
            })),
            "adapted_head": { "name": head_name, "alignment": scored[kept].name, "because": kept_because },
            "best_vs_none": verdict.as_ref().map(|v| json!({
                "alignment": scored[v.best].name, "difference": v.paired.interval.estimate,
                "lower": v.paired.interval.lower, "upper": v.paired.interval.upper,
                "bootstrap_p": v.paired.p_value, "mcnemar": v.test,
            })),
        }),
        seconds,
    }
}

/// The class counts of `labels`, as "12 negative, 30 positive".
fn class_counts(labels: &[usize], classes: &[String]) -> String {
    classes
        .iter()
        .enumerate()
        .map(|(c, name)| format!("{} {name}", labels.iter().filter(|&&y| y == c).count()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the stage did, in the report's words.
fn method(p: &DomainPlan, d: &RunData<'_>, o: &Outcome) -> String {
    let Outcome {
        target,
        extracted,
        scored,
        kept,
        head_name,
        ..
    } = o;
    let spec = d.headline.uncalibrated();
    let y_target = target.labels.as_deref();
    let percent = format!("{:.0}%", d.level * 100.0);
    format!(
        "Source: the {} training rows of this pipeline's data. Target: {}, {} rows{}{}, embedded by the same \
         backbone ({} rows extracted, {} from the feature cache; seconds in the details); its features (never \
         its labels) fit the alignment. The headline head ({}) is trained on aligned source rows and scored on \
         the source test split{}. CORAL: Sun, Feng & Saenko (2016), λ = {}. The head of {} is kept as \
         heads/{head_name}.json, with its alignment's target transform inside it, for `predict --head \
         {head_name}` on raw target rows; an alignment is kept only when labelled target rows show it helps.",
        d.train.len(),
        target.name,
        target.texts.len(),
        y_target.map_or_else(
            || " (unlabelled)".to_owned(),
            |y| format!(" ({})", class_counts(y, d.classes))
        ),
        if target.dropped > 0 {
            format!("; {} rows without a text or label left out", target.dropped)
        } else {
            String::new()
        },
        extracted,
        target.texts.len() - extracted,
        spec.label(),
        if y_target.is_some() {
            format!(
                " and on every target row ({percent} bootstrap intervals; the best alignment against none by a \
                 paired bootstrap of the difference and McNemar's exact test)"
            )
        } else {
            "; on the unlabelled target the table gives the predicted class shares".to_owned()
        },
        p.lambda,
        scored[*kept].name,
    ) + &o.adapted.as_ref().zip(p.simcse.as_ref()).map_or_else(String::new, |(a, s)| {
        format!(
            " SimCSE (Gao, Yao & Chen, 2021): the backbone's top {} of {} blocks tuned without labels on the {} \
             texts of the source's training rows and the target ({} epoch{} of batches of {}, rate {:e}, \
             temperature {}, dropout {}; {:.1} s), the frozen blocks' states computed once; the head then trains \
             on the adapted source features and reads the adapted target features (a kept SimCSE head carries \
             the adapted graph, {ADAPTED_GRAPH}).",
            s.layers,
            a.blocks,
            a.rows,
            s.epochs,
            if s.epochs == 1 { "" } else { "s" },
            s.batch_size,
            s.learning_rate,
            s.temperature,
            s.dropout,
            a.seconds,
        )
    })
}
