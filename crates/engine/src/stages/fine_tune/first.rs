//! `[fine_tune.first]`: the same top blocks trained first — with SimCSE on unlabelled texts (self-supervised
//! adaptation) or on another labelled data set (intermediate-task transfer) — then on the task. Compared on
//! the same split with the frozen features, with the first phase alone, and with direct fine-tuning.
//!
//! Both phases train the same top blocks, so the frozen blocks' states at the boundary are shared: the first
//! phase's rows get theirs from the same bottom graph (and feature cache), and the features of the first
//! phase's weights come from graft-tune's own forward pass over those states (equal to the ONNX graph's
//! within float32 rounding).

use std::time::Instant;

use graft_config::techniques::FirstPhasePlan;
use graft_config::techniques::{FirstObjective, FirstTexts};
use graft_eval::{Bootstrap, Interval, McNemar, PairedBootstrap, mcnemar};
use graft_report::TechniqueReport;
use graft_tune::{BertWeights, Objective, TuneOutcome, TuneRow};
use serde_json::json;

use super::{BOUNDARY_OUTPUT, Comparison, Ready, Trained, head_predictions, percent, tune_rows};
use crate::PipelineError;
use crate::stages::{RunData, accuracy, f4};

/// What the first phase read and how it went.
pub(super) struct FirstPhase {
    pub(super) outcome: TuneOutcome,
    /// In words: which texts or which data set.
    source: String,
    rows: usize,
    /// Classes of the intermediate task (classification).
    classes: Option<usize>,
    states_seconds: f64,
    seconds: f64,
}

/// One variant's head on the test rows.
#[derive(Debug, serde::Serialize)]
struct Scored {
    accuracy: f64,
    interval: Interval,
}

/// The first phase's comparisons on the split.
pub(super) struct FirstComparison {
    phase: FirstPhase,
    objective: FirstObjective,
    /// The first phase's weights alone (no task training).
    first_only: Scored,
    /// The first phase, then the task's own fine-tuning.
    first_then_tuned: Scored,
    then_outcome: TuneOutcome,
    first_vs_frozen: PairedBootstrap,
    then_vs_direct: PairedBootstrap,
    then_vs_direct_mcnemar: McNemar,
    then_vs_frozen: PairedBootstrap,
}

/// Trains the first phase from the released weights.
pub(super) fn train_first(
    f: &FirstPhasePlan,
    d: &RunData<'_>,
    r: &Ready<'_>,
    t: &Trained,
) -> Result<FirstPhase, PipelineError> {
    let (texts, labels, classes, source) = first_rows(f, d, r)?;
    let clock = Instant::now();
    let ((ids, states), _) = (r.kit.token_states)(&t.bottom_path, BOUNDARY_OUTPUT, &texts)?;
    let states_seconds = clock.elapsed().as_secs_f64();
    let boundary = r.weights.config().layers - r.options.trainable_layers;
    let rows: Vec<TuneRow<'_>> = ids
        .iter()
        .zip(&states)
        .zip(&labels)
        .map(|((ids, states), &label)| TuneRow {
            ids,
            states: (boundary > 0).then_some(states),
            label,
        })
        .collect();
    let mut options = r.options.clone();
    options.epochs = f.epochs;
    options.learning_rate = f.learning_rate;
    options.batch_size = f.batch_size;
    options.dropout = f.dropout as f32;
    options.patience = None;
    options.gradual_unfreezing = false;
    options.objective = match f.objective {
        FirstObjective::Simcse => Objective::SimCse {
            temperature: f.temperature,
        },
        FirstObjective::Classification => Objective::Classification {
            classes: classes.unwrap_or(2),
        },
    };
    options.seed = graft_stdx::derive_seed(d.seed, "fine-tune first phase");
    let bar = crate::progress::stage_bar(d.progress, "fine-tuning, first phase", 0, 0, "steps");
    let clock = Instant::now();
    let outcome = graft_tune::fine_tune(&r.weights, &rows, &[], &options, &mut |s| {
        crate::progress::show_tuning_step(&bar, s)
    })?;
    bar.finish_and_clear();
    Ok(FirstPhase {
        outcome,
        source,
        rows: rows.len(),
        classes,
        states_seconds,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The first phase's texts, labels (0 for SimCSE, which reads none), class count and description.
type FirstRows = (Vec<String>, Vec<usize>, Option<usize>, String);

fn first_rows(
    f: &FirstPhasePlan,
    d: &RunData<'_>,
    r: &Ready<'_>,
) -> Result<FirstRows, PipelineError> {
    match (f.objective, &f.dataset) {
        (FirstObjective::Classification, Some(name)) => {
            let entry = &graft_assets::Registry::builtin().datasets[name];
            let path = (d.dataset)(name)?;
            let table = graft_ingest::read_table(&path)?;
            let data =
                graft_ingest::text_classification(&table, &entry.text_column, &entry.label_column)?;
            let classes = data.classes.len();
            let all: Vec<usize> = (0..data.texts.len()).collect();
            let picked = match f.max_rows {
                Some(n) if n < all.len() => {
                    let seed = graft_stdx::derive_seed(d.seed, "fine-tune first phase rows");
                    crate::curve::draw(&all, &data.labels, classes, n.div_ceil(classes), seed)
                }
                _ => all,
            };
            let source = format!(
                "{} rows of `{name}` ({} classes: {})",
                picked.len(),
                classes,
                data.classes.join(", ")
            );
            Ok((
                picked.iter().map(|&i| data.texts[i].clone()).collect(),
                picked.iter().map(|&i| data.labels[i]).collect(),
                Some(classes),
                source,
            ))
        }
        _ => {
            let rows: Vec<usize> = match f.texts {
                FirstTexts::Train => d.train.to_vec(),
                FirstTexts::All => (0..r.texts.len()).collect(),
            };
            let texts: Vec<String> = rows.iter().map(|&i| r.texts[i].clone()).collect();
            let labels = vec![0; texts.len()];
            let source = match f.texts {
                FirstTexts::Train => format!("the {} training rows' texts", texts.len()),
                FirstTexts::All => format!(
                    "all {} rows' texts, test rows included (their labels unread: transductive)",
                    texts.len()
                ),
            };
            Ok((texts, labels, None, source))
        }
    }
}

/// The task's own fine-tuning from the first phase's weights, and the headline head on the features of
/// both, against the frozen features and direct fine-tuning (`c`).
pub(super) fn compare_first(
    f: &FirstPhasePlan,
    phase: FirstPhase,
    d: &RunData<'_>,
    r: &Ready<'_>,
    t: &Trained,
    c: &Comparison,
) -> Result<FirstComparison, PipelineError> {
    let top = r.options.trainable_layers;
    let boundary = r.weights.config().layers - top;
    let learn: Vec<usize> = d.train.iter().chain(d.validation).copied().collect();
    let rows = tune_rows(d, &learn, &t.ids, &t.states, boundary);
    let (train_rows, valid_rows) = rows.split_at(d.train.len());
    let test_rows = tune_rows(
        d,
        d.test,
        &t.ids[learn.len()..],
        &t.states[learn.len()..],
        boundary,
    );
    let bar = crate::progress::stage_bar(
        d.progress,
        "fine-tuning after the first phase",
        0,
        0,
        "steps",
    );
    let then_outcome = graft_tune::fine_tune(
        &phase.outcome.weights,
        train_rows,
        valid_rows,
        &r.options,
        &mut |s| crate::progress::show_tuning_step(&bar, s),
    )?;
    bar.finish_and_clear();
    let y: Vec<usize> = d.train.iter().map(|&row| d.labels[row]).collect();
    let predict = |weights: &BertWeights| -> Result<Vec<usize>, PipelineError> {
        let x = graft_tune::embed_rows(weights, top, train_rows, 64)?;
        let x_test = graft_tune::embed_rows(weights, top, &test_rows, 64)?;
        head_predictions(d, x.view(), &y, x_test.view())
    };
    let first_pred = predict(&phase.outcome.weights)?;
    let then_pred = predict(&then_outcome.weights)?;
    let truth: Vec<usize> = d.test.iter().map(|&row| d.labels[row]).collect();
    let bootstrap = Bootstrap {
        level: d.level,
        seed: graft_stdx::derive_seed(d.seed, "fine-tune first phase bootstrap"),
        ..Bootstrap::default()
    };
    let scored = |pred: &[usize]| -> Result<Scored, PipelineError> {
        Ok(Scored {
            accuracy: accuracy(pred, &truth),
            interval: bootstrap.interval(truth.len(), |rows| {
                rows.iter().filter(|&&i| pred[i] == truth[i]).count() as f64 / rows.len() as f64
            })?,
        })
    };
    Ok(FirstComparison {
        objective: f.objective,
        first_only: scored(&first_pred)?,
        first_then_tuned: scored(&then_pred)?,
        first_vs_frozen: bootstrap.paired_accuracy(&truth, &first_pred, &c.frozen_predicted)?,
        then_vs_direct: bootstrap.paired_accuracy(&truth, &then_pred, &c.tuned_predicted)?,
        then_vs_direct_mcnemar: mcnemar(&truth, &then_pred, &c.tuned_predicted)?,
        then_vs_frozen: bootstrap.paired_accuracy(&truth, &then_pred, &c.frozen_predicted)?,
        then_outcome,
        phase,
    })
}

/// A paired difference in the report's words: `+0.0123 [+0.0010, +0.0240]`.
fn difference(p: &PairedBootstrap) -> String {
    format!(
        "{:+.4} [{:+.4}, {:+.4}]",
        p.interval.estimate, p.interval.lower, p.interval.upper
    )
}

/// Whether a paired interval excludes zero, in words.
fn verdict(p: &PairedBootstrap, better: &str, worse: &str) -> String {
    if p.interval.lower > 0.0 {
        better.to_owned()
    } else if p.interval.upper < 0.0 {
        worse.to_owned()
    } else {
        "no measurable difference".to_owned()
    }
}

/// Two rows of the stage's table, `details.first`, the method's and the finding's sentences.
pub(super) fn add_to_report(
    report: &mut TechniqueReport,
    f: &FirstPhasePlan,
    c: &FirstComparison,
    level: f64,
) {
    let name = match c.objective {
        FirstObjective::Simcse => "SimCSE",
        FirstObjective::Classification => "intermediate task",
    };
    let cell = |s: &Scored| {
        format!(
            "{} [{}, {}]",
            f4(s.accuracy),
            f4(s.interval.lower),
            f4(s.interval.upper)
        )
    };
    report.rows.insert(
        2,
        vec![
            format!("{name} only (first phase, no task training)"),
            cell(&c.first_only),
            format!("{} vs frozen", difference(&c.first_vs_frozen)),
        ],
    );
    report.rows.insert(
        3,
        vec![
            format!("{name}, then tuned"),
            cell(&c.first_then_tuned),
            format!(
                "{} vs tuned directly, McNemar p = {:.2e}; {} vs frozen",
                difference(&c.then_vs_direct),
                c.then_vs_direct_mcnemar.p_value,
                difference(&c.then_vs_frozen)
            ),
        ],
    );
    let phase = &c.phase;
    let epoch_seconds = phase.outcome.epochs.iter().map(|e| e.seconds).sum::<f64>()
        / phase.outcome.epochs.len().max(1) as f64;
    report.method.push_str(&format!(
        " First phase ([fine_tune.first]): the same top blocks trained from the released weights with {} on {} \
         ({} epoch{} of batches of {}, peak rate {:e}, dropout {}; {:.1} s per epoch), then the task's own \
         fine-tuning from those weights with the settings above. The headline head is trained on the features \
         of the first phase's weights and of the weights after both phases (graft-tune's forward pass over the \
         shared boundary states) and scored on the same test rows; paired bootstrap ({}) against the frozen \
         features and against direct fine-tuning, McNemar against direct fine-tuning.",
        match c.objective {
            FirstObjective::Simcse => format!(
                "SimCSE (InfoNCE on cosines / {}, in-batch negatives, labels not read)",
                f.temperature
            ),
            FirstObjective::Classification => format!(
                "cross-entropy through a linear head over the intermediate task's {} classes",
                phase.classes.unwrap_or(0)
            ),
        },
        phase.source,
        f.epochs,
        if f.epochs == 1 { "" } else { "s" },
        f.batch_size,
        f.learning_rate,
        f.dropout,
        epoch_seconds,
        percent(level),
    ));
    report.finding.push_str(&format!(
        "; {name} first, then tuned: {} ({} vs tuned directly: {}); {name} alone: {} ({} vs frozen: {})",
        f4(c.first_then_tuned.accuracy),
        difference(&c.then_vs_direct),
        verdict(
            &c.then_vs_direct,
            "the first phase helps",
            "the first phase hurts"
        ),
        f4(c.first_only.accuracy),
        difference(&c.first_vs_frozen),
        verdict(
            &c.first_vs_frozen,
            "better than frozen",
            "worse than frozen"
        ),
    ));
    if let Some(map) = report.details.as_object_mut() {
        map.insert(
            "first".to_owned(),
            json!({
                "objective": format!("{:?}", c.objective).to_lowercase(),
                "source": phase.source,
                "rows": phase.rows,
                "classes": phase.classes,
                "epochs": phase.outcome.epochs,
                "seconds": phase.seconds,
                "boundary_states_seconds": phase.states_seconds,
                "first_only": c.first_only,
                "first_then_tuned": c.first_then_tuned,
                "then_epochs": c.then_outcome.epochs,
                "then_best_epoch": c.then_outcome.best_epoch,
                "first_only_minus_frozen": c.first_vs_frozen,
                "first_then_tuned_minus_tuned": c.then_vs_direct,
                "first_then_tuned_vs_tuned_mcnemar": c.then_vs_direct_mcnemar,
                "first_then_tuned_minus_frozen": c.then_vs_frozen,
            }),
        );
    }
}

/// One table row per learning-curve K where each draw was fine-tuned both ways: direct, after the first
/// phase, and the paired spread of the difference over the draws.
pub(super) fn add_curve_rows(report: &mut TechniqueReport) {
    let Some(points) = report.details["learning_curve"].as_array().cloned() else {
        return;
    };
    let spread = |v: &serde_json::Value| -> Option<graft_report::Spread> {
        serde_json::from_value(v.clone()).ok()
    };
    for point in points {
        let (Some(k), Some(direct), Some(after), Some(difference)) = (
            point["per_class"].as_u64(),
            spread(&point["tuned"]),
            spread(&point["first_then_tuned"]),
            spread(&point["first_then_tuned_minus_tuned"]),
        ) else {
            continue;
        };
        report.rows.push(vec![
            format!("{k} rows per class ({} draws)", direct.values.len()),
            format!(
                "tuned {} ± {}, first phase then tuned {} ± {}",
                f4(direct.mean),
                f4(direct.std),
                f4(after.mean),
                f4(after.std)
            ),
            format!(
                "{:+.4} [{:+.4}, {:+.4}] (paired over draws)",
                difference.mean, difference.lower, difference.upper
            ),
        ]);
    }
}
