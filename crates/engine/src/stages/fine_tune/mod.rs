//! `[fine_tune]`: train the backbone's top blocks, then compare the headline head on frozen and on tuned
//! features, on the same split.
//!
//! The bottom blocks stay frozen, so their output is computed once: graft-onnx writes a graph of the
//! bottom blocks alone (an output at the block boundary), ONNX Runtime runs it over the training and
//! validation rows, and each epoch of graft-tune runs only the top blocks from those states. The tuned
//! weights become a whole ONNX graph again (the same inputs and outputs as the original), which extracts
//! the tuned features through the usual path and feature cache, and goes into the run folder.

mod first;

use std::time::Instant;

use graft_config::techniques::{FineTuneObjective, FineTunePlan, FineTuneSchedule, OtherBackbone};
use graft_eval::{Bootstrap, mcnemar};
use graft_report::TechniqueReport;
use graft_tune::{BertWeights, Decay, Objective, TuneOptions, TuneRow};
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;

/// The graph output at the frozen boundary.
const BOUNDARY_OUTPUT: &str = "boundary_states";

/// The tuned graph's name in the run folder.
pub(crate) const TUNED_GRAPH: &str = "backbone-tuned.onnx";
/// The tokenizer of the tuned graph, copied beside it so the run folder holds everything its head reads.
pub(crate) const TUNED_TOKENIZER: &str = "backbone-tuned.tokenizer.json";

fn options(p: &FineTunePlan, layers: usize, classes: usize, seed: u64) -> TuneOptions {
    TuneOptions {
        trainable_layers: p.layers.unwrap_or(layers),
        learning_rate: p.learning_rate,
        head_learning_rate: p.head_learning_rate,
        layer_decay: p.layer_decay,
        epochs: p.epochs,
        batch_size: p.batch_size,
        warmup: p.warmup,
        decay: match p.schedule {
            FineTuneSchedule::Constant => Decay::Constant,
            FineTuneSchedule::Linear => Decay::Linear,
            FineTuneSchedule::Cosine => Decay::Cosine,
        },
        weight_decay: p.weight_decay,
        dropout: p.dropout as f32,
        patience: p.patience,
        gradual_unfreezing: p.gradual_unfreezing,
        frozen_dropout: p.frozen_dropout,
        objective: match p.objective {
            FineTuneObjective::Classification => Objective::Classification { classes },
            FineTuneObjective::Contrastive => Objective::Contrastive {
                pairs_per_row: p.pairs_per_row(),
            },
            FineTuneObjective::Simcse => Objective::SimCse {
                temperature: p.temperature,
            },
        },
        max_grad_norm: p.max_grad_norm,
        seed: graft_stdx::derive_seed(seed, "fine-tune"),
        lora: p.lora.map(|(rank, alpha)| graft_tune::Lora { rank, alpha }),
    }
}

/// What the checks found: the weights, the options and the run's text machinery.
struct Ready<'d> {
    kit: &'d super::TuneKit<'d>,
    texts: &'d [String],
    embed: &'d super::EmbedTexts<'d>,
    weights: BertWeights,
    options: TuneOptions,
    /// `[fine_tune] draws`.
    draws: usize,
    /// Whether `[fine_tune.first]` is set (its rows need the test rows' states).
    first: bool,
}

/// The training run: the tuned weights' record and how the frozen states were obtained.
struct Trained {
    outcome: graft_tune::TuneOutcome,
    states_seconds: f64,
    states_cached: usize,
    learn_rows: usize,
    /// Token ids and boundary states of the training and validation rows, then (with a learning curve,
    /// repeated draws or a first phase) the test rows.
    ids: Vec<Vec<u32>>,
    states: Vec<ndarray::Array2<f32>>,
    /// The graph of the frozen bottom blocks (in the cache), for more rows' states.
    bottom_path: std::path::PathBuf,
}

/// The tuned graph and what it extracted.
struct Tuned {
    sha256: String,
    features: ndarray::Array2<f32>,
    extract_seconds: f64,
}

/// Frozen vs tuned on the test rows.
struct Comparison {
    frozen: (f64, graft_eval::Interval),
    tuned: (f64, graft_eval::Interval),
    paired: graft_eval::PairedBootstrap,
    mcnemar: graft_eval::McNemar,
    head_name: String,
    /// Test predictions of the head on the frozen and on the tuned features.
    frozen_predicted: Vec<usize>,
    tuned_predicted: Vec<usize>,
}

pub(crate) fn run(p: &FineTunePlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = Instant::now();
    let ready = check(p, d)?;
    let trained = train(d, &ready)?;
    let first_phase = match &p.first {
        Some(f) => Some(first::train_first(f, d, &ready, &trained)?),
        None => None,
    };
    let tuned = write_tuned(d, &ready, &trained)?;
    let comparison = compare(d, &tuned)?;
    let curve_clock = Instant::now();
    let first_weights = first_phase.as_ref().map(|f| &f.outcome.weights);
    let curve = tuned_curve(d, &ready, &trained, comparison.tuned.0, first_weights)?;
    let curve_seconds = curve_clock.elapsed().as_secs_f64();
    let draws = repeated_draws(d, &ready, &trained)?;
    let first = match (&p.first, first_phase) {
        (Some(f), Some(phase)) => Some((
            f,
            first::compare_first(f, phase, d, &ready, &trained, &comparison)?,
        )),
        _ => None,
    };
    let mut report = report(p, d, &ready, &trained, &tuned, &comparison);
    if let Some((f, first)) = first {
        first::add_to_report(&mut report, f, &first, d.level);
    }
    if let (Some(points), Some(map)) = (curve, report.details.as_object_mut()) {
        map.insert("learning_curve".to_owned(), points);
        map.insert("learning_curve_seconds".to_owned(), json!(curve_seconds));
    }
    if p.first.is_some() {
        first::add_curve_rows(&mut report);
    }
    if let Some(draws) = draws {
        add_draws(&mut report, &draws, d.level);
    }
    report.seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// Everything that can be refused before training, each at its key.
/// `layers` may not exceed the blocks of the weights: what `check` runs too.
pub(crate) fn check_layers(
    p: &FineTunePlan,
    layers: usize,
    file: &std::path::Path,
    source: &str,
) -> Result<(), PipelineError> {
    match p.layers.filter(|&k| k > layers) {
        Some(k) => Err(graft_config::Diagnostic::at(
            file,
            source,
            p.layers_span.clone(),
            format!("`layers = {k}` but the backbone has {layers} blocks"),
        )
        .with_hint(format!("use 1 to {layers}, or \"all\""))
        .into()),
        None => Ok(()),
    }
}

fn check<'d>(p: &FineTunePlan, d: &RunData<'d>) -> Result<Ready<'d>, PipelineError> {
    let span = Some(p.span.clone());
    let (Some(kit), Some(texts), Some(embed)) = (d.tune, d.texts, d.embed) else {
        return Err(d
            .diagnostic(&span, "fine-tuning needs the backbone's float32 weights")
            .with_hint("use `model = \"minilm-l6\"` in [backbone] (all-MiniLM-L6-v2, float32 safetensors), or for \
                        your own ONNX graph name the weights it was made from: `weights = \"model.safetensors\"` \
                        and `attention_heads` in [fine_tune]")
            .into());
    };
    let weights = BertWeights::read_safetensors(&kit.weights, kit.attention_heads)?;
    let layers = weights.config().layers;
    check_layers(p, layers, d.file, d.source)?;
    if p.patience.is_some() && d.validation.is_empty() {
        return Err(d
            .diagnostic(
                &p.patience_span,
                "early stopping needs validation rows, and the split has none",
            )
            .with_hint(
                "give the split a validation share (`validation = 0.1`), or remove `patience`",
            )
            .into());
    }
    let options = options(p, layers, d.classes.len(), d.seed);
    Ok(Ready {
        kit,
        texts,
        embed,
        weights,
        options,
        draws: p.draws,
        first: p.first.is_some(),
    })
}

/// The frozen blocks once (token states at the boundary, from the feature cache when present), then the top
/// blocks trained from them.
fn train(d: &RunData<'_>, r: &Ready<'_>) -> Result<Trained, PipelineError> {
    let boundary = r.weights.config().layers - r.options.trainable_layers;
    let states_clock = Instant::now();
    let learn: Vec<usize> = d.train.iter().chain(d.validation).copied().collect();
    // The learning curve's tuned line and repeated draws embed the test rows from their boundary states too.
    let test: &[usize] = if d.curve.is_some() || r.draws > 1 || r.first {
        d.test
    } else {
        &[]
    };
    let learn_texts: Vec<String> = learn
        .iter()
        .chain(test)
        .map(|&row| r.texts[row].clone())
        .collect();
    let bottom = crate::provision::bert_graph(&r.weights, boundary, BOUNDARY_OUTPUT)?;
    let bottom_path = (r.kit.store_graph)(&bottom)?;
    let ((ids, states), states_cached) =
        (r.kit.token_states)(&bottom_path, BOUNDARY_OUTPUT, &learn_texts)?;
    let states_seconds = states_clock.elapsed().as_secs_f64();
    let rows = tune_rows(d, &learn, &ids, &states, boundary);
    let (train_rows, valid_rows) = rows.split_at(d.train.len());
    let bar = crate::progress::stage_bar(d.progress, "fine-tuning", 0, 0, "steps");
    bar.set_message("starting");
    let outcome =
        graft_tune::fine_tune(&r.weights, train_rows, valid_rows, &r.options, &mut |s| {
            crate::progress::show_tuning_step(&bar, s)
        })?;
    bar.finish_and_clear();
    Ok(Trained {
        outcome,
        states_seconds,
        states_cached,
        learn_rows: learn.len(),
        ids,
        states,
        bottom_path,
    })
}

/// graft-tune's rows for data rows `rows`, whose ids and states are the first entries of `ids`/`states`.
fn tune_rows<'a>(
    d: &RunData<'_>,
    rows: &[usize],
    ids: &'a [Vec<u32>],
    states: &'a [ndarray::Array2<f32>],
    boundary: usize,
) -> Vec<TuneRow<'a>> {
    rows.iter()
        .enumerate()
        .map(|(i, &row)| TuneRow {
            ids: &ids[i],
            states: (boundary > 0).then_some(&states[i]),
            label: d.labels[row],
        })
        .collect()
}

/// The learning curve's third line: at each K and draw of the curve (the same seeded rows), the backbone
/// fine-tuned on the drawn rows alone (same settings, no early stopping: no validation rows), then the
/// headline head on its features, scored on the test rows. The whole split is the stage's main result.
/// With a first phase (`first`: its weights), each draw is also fine-tuned from those weights: the point's
/// `first_then_tuned` and its paired difference from `tuned`.
fn tuned_curve(
    d: &RunData<'_>,
    r: &Ready<'_>,
    t: &Trained,
    whole_split: f64,
    first: Option<&BertWeights>,
) -> Result<Option<serde_json::Value>, PipelineError> {
    let Some((shots, repeats)) = d.curve else {
        return Ok(None);
    };
    let top = r.options.trainable_layers;
    let boundary = r.weights.config().layers - top;
    let learn_len = d.train.len() + d.validation.len();
    let test_rows = tune_rows(
        d,
        d.test,
        &t.ids[learn_len..],
        &t.states[learn_len..],
        boundary,
    );
    let position: std::collections::HashMap<usize, usize> = d
        .train
        .iter()
        .enumerate()
        .map(|(i, &row)| (row, i))
        .collect();
    let truth: Vec<usize> = d.test.iter().map(|&row| d.labels[row]).collect();
    let mut options = r.options.clone();
    options.patience = None;
    let mut points = Vec::new();
    // The headline head on the features of `weights` tuned on `rows`, scored on the test rows.
    let score = |weights: &BertWeights,
                 rows: &[TuneRow<'_>],
                 options: &TuneOptions|
     -> Result<f64, PipelineError> {
        let tuned = graft_tune::fine_tune(weights, rows, &[], options, &mut |_| {})?;
        let x = graft_tune::embed_rows(&tuned.weights, top, rows, 64)?;
        let x_test = graft_tune::embed_rows(&tuned.weights, top, &test_rows, 64)?;
        let y: Vec<usize> = rows.iter().map(|row| row.label).collect();
        let predicted = head_predictions(d, x.view(), &y, x_test.view())?;
        Ok(accuracy(&predicted, &truth))
    };
    for &k in shots {
        let (mut scores, mut after_first) = (Vec::new(), Vec::new());
        for draw in 0..repeats {
            let seed = graft_stdx::derive_seed(d.seed, &format!("learning-curve {k} {draw}"));
            let drawn = crate::curve::draw(d.train, d.labels, d.classes.len(), k, seed);
            let rows: Vec<TuneRow<'_>> = drawn
                .iter()
                .map(|row| {
                    let i = position[row];
                    TuneRow {
                        ids: &t.ids[i],
                        states: (boundary > 0).then_some(&t.states[i]),
                        label: d.labels[*row],
                    }
                })
                .collect();
            options.seed = graft_stdx::derive_seed(seed, "fine-tune");
            scores.push(score(&r.weights, &rows, &options)?);
            if let Some(first) = first {
                after_first.push(score(first, &rows, &options)?);
            }
        }
        let mut point = json!({ "per_class": k, "tuned": graft_report::Spread::at_level(scores.clone(), d.level) });
        if first.is_some() {
            let difference = after_first
                .iter()
                .zip(&scores)
                .map(|(a, b)| a - b)
                .collect();
            point["first_then_tuned"] = json!(graft_report::Spread::at_level(after_first, d.level));
            point["first_then_tuned_minus_tuned"] =
                json!(graft_report::Spread::of_differences(difference, d.level));
        }
        points.push(point);
    }
    points.push(json!({ "per_class": null, "tuned": graft_report::Spread::at_level(vec![whole_split], d.level) }));
    Ok(Some(json!(points)))
}

/// Frozen vs tuned over `[fine_tune] draws` seeded draws of training rows.
#[derive(Debug, serde::Serialize)]
struct Draws {
    draws: usize,
    /// Training rows drawn per class (the split's training rows per class, on average).
    per_class: usize,
    /// Each draw's rows, `[draw][row]` (data rows, as splits.csv numbers them).
    rows: Vec<Vec<usize>>,
    frozen: graft_report::Spread,
    tuned: graft_report::Spread,
    /// Tuned − frozen, draw by draw: the paired comparison.
    difference: graft_report::Spread,
    seconds: f64,
}

/// `[fine_tune] draws`: the comparison repeated on seeded draws of training rows, each the split's size
/// per class, drawn from every labelled row; the other labelled rows are that draw's test rows. Each draw
/// trains the headline head on the frozen features and fine-tunes the encoder on the drawn rows alone
/// (same settings, no early stopping: no validation rows), then the headline head on its features.
fn repeated_draws(
    d: &RunData<'_>,
    r: &Ready<'_>,
    t: &Trained,
) -> Result<Option<Draws>, PipelineError> {
    if r.draws < 2 {
        return Ok(None);
    }
    let clock = Instant::now();
    let top = r.options.trainable_layers;
    let boundary = r.weights.config().layers - top;
    // `t.ids`/`t.states` hold the training, validation and test rows, in that order.
    let labelled: Vec<usize> = d
        .train
        .iter()
        .chain(d.validation)
        .chain(d.test)
        .copied()
        .collect();
    let position: std::collections::HashMap<usize, usize> = labelled
        .iter()
        .enumerate()
        .map(|(i, &row)| (row, i))
        .collect();
    let rows_of = |rows: &[usize]| -> Vec<TuneRow<'_>> {
        rows.iter()
            .map(|row| TuneRow {
                ids: &t.ids[position[row]],
                states: (boundary > 0).then_some(&t.states[position[row]]),
                label: d.labels[*row],
            })
            .collect()
    };
    let classes = d.classes.len();
    let per_class = d.train.len().div_ceil(classes);
    let bar =
        crate::progress::stage_bar(d.progress, "fine-tuning draws", r.draws as u64, 0, "draws");
    let mut options = r.options.clone();
    options.patience = None;
    let (mut frozen, mut tuned, mut drawn_rows) = (Vec::new(), Vec::new(), Vec::new());
    for draw in 0..r.draws {
        let seed = graft_stdx::derive_seed(d.seed, &format!("fine-tune draw {draw}"));
        let drawn = crate::curve::draw(&labelled, d.labels, classes, per_class, seed);
        let picked: std::collections::HashSet<usize> = drawn.iter().copied().collect();
        let rest: Vec<usize> = labelled
            .iter()
            .copied()
            .filter(|row| !picked.contains(row))
            .collect();
        let truth: Vec<usize> = rest.iter().map(|&row| d.labels[row]).collect();
        let y: Vec<usize> = drawn.iter().map(|&row| d.labels[row]).collect();
        let x = d.features.select(ndarray::Axis(0), &drawn);
        let x_rest = d.features.select(ndarray::Axis(0), &rest);
        frozen.push(accuracy(
            &head_predictions(d, x.view(), &y, x_rest.view())?,
            &truth,
        ));
        let (train_rows, test_rows) = (rows_of(&drawn), rows_of(&rest));
        options.seed = graft_stdx::derive_seed(seed, "fine-tune");
        let outcome = graft_tune::fine_tune(&r.weights, &train_rows, &[], &options, &mut |_| {})?;
        let x = graft_tune::embed_rows(&outcome.weights, top, &train_rows, 64)?;
        let x_rest = graft_tune::embed_rows(&outcome.weights, top, &test_rows, 64)?;
        tuned.push(accuracy(
            &head_predictions(d, x.view(), &y, x_rest.view())?,
            &truth,
        ));
        drawn_rows.push(drawn);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let difference = tuned.iter().zip(&frozen).map(|(t, f)| t - f).collect();
    Ok(Some(Draws {
        draws: r.draws,
        per_class,
        rows: drawn_rows,
        frozen: graft_report::Spread::at_level(frozen, d.level),
        tuned: graft_report::Spread::at_level(tuned, d.level),
        difference: graft_report::Spread::of_differences(difference, d.level),
        seconds: clock.elapsed().as_secs_f64(),
    }))
}

/// The headline head (uncalibrated) trained on `x` with labels `y`, its predictions for `x_test`.
fn head_predictions(
    d: &RunData<'_>,
    x: ndarray::ArrayView2<'_, f32>,
    y: &[usize],
    x_test: ndarray::ArrayView2<'_, f32>,
) -> Result<Vec<usize>, PipelineError> {
    let targets = graft_heads::Targets::new(y, d.classes.len())?;
    let (head, _) = crate::heads::train_head(&d.headline.uncalibrated(), None, x, &targets, None)?;
    Ok(graft_heads::argmax_rows(head.predict_proba(x_test)?.view()))
}

/// The draws' result in the report: a finding, two rows of the table, and `details.draws`.
fn add_draws(report: &mut TechniqueReport, draws: &Draws, level: f64) {
    let (f, t, diff) = (&draws.frozen, &draws.tuned, &draws.difference);
    report.finding = format!(
        "over {} draws of {} rows per class: tuned {} ± {} vs frozen {} ± {} (mean ± sd; tuned − frozen \
         {:+.4}, {} interval [{:+.4}, {:+.4}]); on the split: {}",
        draws.draws,
        draws.per_class,
        f4(t.mean),
        f4(t.std),
        f4(f.mean),
        f4(f.std),
        diff.mean,
        percent(level),
        diff.lower,
        diff.upper,
        report.finding
    );
    let spread = |s: &graft_report::Spread| {
        format!(
            "{} ± {} [{}, {}]",
            f4(s.mean),
            f4(s.std),
            f4(s.lower),
            f4(s.upper)
        )
    };
    report.rows.push(vec![
        format!("frozen, {} draws", draws.draws),
        spread(f),
        "–".to_owned(),
    ]);
    report.rows.push(vec![
        format!("tuned, {} draws", draws.draws),
        spread(t),
        format!(
            "{:+.4} ± {:.4} [{:+.4}, {:+.4}] (paired over draws)",
            diff.mean, diff.std, diff.lower, diff.upper
        ),
    ]);
    report.method.push_str(&format!(
        " Repeated draws: {} seeded draws of {} training rows per class from every labelled row, the other \
         labelled rows as each draw's test rows; per draw the headline head on the frozen features and the \
         encoder fine-tuned on the drawn rows alone (no early stopping), then the head on its features; \
         mean ± standard deviation over the draws and a {} Student-t interval of the paired differences.",
        draws.draws,
        draws.per_class,
        percent(level)
    ));
    if let Some(map) = report.details.as_object_mut() {
        map.insert("draws".to_owned(), json!(draws));
    }
}

/// The tuned encoder as a whole graph (into the run folder), and the tuned features through the usual
/// extraction and feature cache.
fn write_tuned(d: &RunData<'_>, r: &Ready<'_>, t: &Trained) -> Result<Tuned, PipelineError> {
    let layers = r.weights.config().layers;
    let graph = crate::provision::bert_graph(&t.outcome.weights, layers, &r.kit.output)?;
    let path = (r.kit.store_graph)(&graph)?;
    let sha256 = graft_stdx::sha256_hex(&graph);
    let backbone = OtherBackbone::Files {
        onnx: path.clone(),
        tokenizer: r.kit.tokenizer.clone(),
    };
    let clock = Instant::now();
    let features = (r.embed)(Some(&backbone), r.texts, false)?.features;
    let extract_seconds = clock.elapsed().as_secs_f64();
    (d.outputs)(TUNED_GRAPH, graph)?;
    let tokenizer = std::fs::read(&r.kit.tokenizer).map_err(|source| PipelineError::Io {
        path: r.kit.tokenizer.clone(),
        source,
    })?;
    (d.outputs)(TUNED_TOKENIZER, tokenizer)?;
    Ok(Tuned {
        sha256,
        features,
        extract_seconds,
    })
}

/// The headline head on frozen and on tuned features of the same rows; the tuned one is kept.
fn compare(d: &RunData<'_>, tuned: &Tuned) -> Result<Comparison, PipelineError> {
    let truth: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let frozen_pred = super::headline_test_predictions(d, d.features)?;
    let (tuned_head, tuned_pred) = super::headline_on(d, tuned.features.view())?;
    let head_name = format!("{}-tuned", d.headline.name());
    (d.add_head)(super::StageHead {
        name: head_name.clone(),
        head: tuned_head,
        // Paths relative to the run folder, which holds both files: the head travels with its run.
        graph: Some(super::StageGraph {
            onnx: TUNED_GRAPH.into(),
            sha256: tuned.sha256.clone(),
            tokenizer: TUNED_TOKENIZER.into(),
        }),
    })?;
    let frozen_accuracy = accuracy(&frozen_pred, &truth);
    let tuned_accuracy = accuracy(&tuned_pred, &truth);
    let bootstrap = Bootstrap {
        level: d.level,
        seed: graft_stdx::derive_seed(d.seed, "fine-tune bootstrap"),
        ..Bootstrap::default()
    };
    let paired = bootstrap.paired_accuracy(&truth, &tuned_pred, &frozen_pred)?;
    let test = mcnemar(&truth, &tuned_pred, &frozen_pred)?;
    let interval = |pred: &[usize]| {
        bootstrap.interval(truth.len(), |rows| {
            rows.iter().filter(|&&i| pred[i] == truth[i]).count() as f64 / rows.len() as f64
        })
    };
    Ok(Comparison {
        // The frozen features' head is the headline: its interval is the Scores section's, one quantity,
        // one number.
        frozen: (
            frozen_accuracy,
            match &d.headline_interval {
                Some(scored) => *scored,
                None => interval(&frozen_pred)?,
            },
        ),
        tuned: (tuned_accuracy, interval(&tuned_pred)?),
        paired,
        mcnemar: test,
        head_name,
        frozen_predicted: frozen_pred,
        tuned_predicted: tuned_pred,
    })
}

/// The stage's section: the comparison, one row per epoch, the method and the numbers.
fn report(
    p: &FineTunePlan,
    d: &RunData<'_>,
    r: &Ready<'_>,
    t: &Trained,
    tuned: &Tuned,
    c: &Comparison,
) -> TechniqueReport {
    let layers = r.weights.config().layers;
    let options = &r.options;
    let outcome = &t.outcome;
    let (frozen_accuracy, frozen_ci) = (c.frozen.0, &c.frozen.1);
    let (tuned_accuracy, tuned_ci) = (c.tuned.0, &c.tuned.1);
    let (paired, test) = (&c.paired, &c.mcnemar);
    let (states_seconds, states_cached) = (t.states_seconds, t.states_cached);
    let (tuned_sha256, extract_seconds, tuned_head_name) =
        (&tuned.sha256, tuned.extract_seconds, &c.head_name);
    let epoch_seconds: Vec<f64> = outcome.epochs.iter().map(|e| e.seconds).collect();
    let mean_epoch = epoch_seconds.iter().sum::<f64>() / epoch_seconds.len().max(1) as f64;
    let table = table(c, outcome, options.trainable_layers, layers);
    let objective = match p.objective {
        FineTuneObjective::Classification => "cross-entropy through a linear head".to_owned(),
        FineTuneObjective::Contrastive => format!(
            "SetFit's cosine-similarity loss on {} seeded pairs per training row ({} iterations of one same-class \
             partner → 1 and one other-class partner → 0, as the setfit library samples them)",
            p.pairs_per_row(),
            p.iterations
        ),
        FineTuneObjective::Simcse => format!(
            "SimCSE, self-supervised (Gao et al., 2021: each training text twice through dropout is a positive \
             pair, the batch's other texts negatives; InfoNCE on cosines / {}; labels not read, last epoch kept)",
            p.temperature
        ),
    };
    let curve = outcome
        .epochs
        .iter()
        .map(|e| graft_report::CurvePoint {
            epoch: e.epoch,
            train_loss: e.train_loss,
            validation_loss: e.valid_loss,
            validation_accuracy: e.valid_accuracy,
        })
        .collect();
    TechniqueReport {
        curve,
        technique: "fine_tune".to_owned(),
        title: "Fine-tuning: frozen vs tuned backbone".to_owned(),
        method: method_text(
            p,
            options.trainable_layers,
            layers,
            &objective,
            d.level,
            t,
            tuned,
            c,
        ),
        finding: format!(
            "tuned {} vs frozen {} test accuracy ({:+.4}, {} interval [{:+.4}, {:+.4}], McNemar p = {:.2e}); \
             {:.1} s per epoch over {} training rows",
            f4(tuned_accuracy),
            f4(frozen_accuracy),
            paired.interval.estimate,
            percent(d.level),
            paired.interval.lower,
            paired.interval.upper,
            test.p_value,
            mean_epoch,
            d.train.len()
        ),
        columns: vec![
            "features".into(),
            format!(
                "test accuracy [{} CI] / validation accuracy",
                percent(d.level)
            ),
            "tuned − frozen / epoch".into(),
        ],
        rows: table,
        details: json!({
            "frozen_test_accuracy": frozen_accuracy,
            "tuned_test_accuracy": tuned_accuracy,
            "frozen_interval": [frozen_ci.lower, frozen_ci.upper],
            "tuned_interval": [tuned_ci.lower, tuned_ci.upper],
            "paired_bootstrap": paired,
            "mcnemar": test,
            "trainable_blocks": options.trainable_layers,
            "blocks": layers,
            "epochs": outcome.epochs,
            "best_epoch": outcome.best_epoch,
            "stopped_early": outcome.stopped_early,
            "epoch_seconds_mean": mean_epoch,
            "boundary_states_seconds": states_seconds,
            "boundary_states_cached_rows": states_cached,
            "tuned_extraction_seconds": extract_seconds,
            "tuned_graph": TUNED_GRAPH,
            "tuned_graph_sha256": tuned_sha256,
            "tuned_head": tuned_head_name,
            "training_rows": d.train.len(),
            "validation_rows": d.validation.len(),
            "trainable_parameters": outcome.trainable_parameters,
            "lora": p.lora.map(|(rank, alpha)| json!({ "rank": rank, "alpha": alpha })),
            "process_peak_rss_mb": graft_stdx::peak_rss_mb(),
        }),
        seconds: 0.0,
    }
}

/// Frozen and tuned test accuracy with intervals and their difference, then one row per epoch.
fn table(
    c: &Comparison,
    outcome: &graft_tune::TuneOutcome,
    trained_blocks: usize,
    layers: usize,
) -> Vec<Vec<String>> {
    let (frozen_accuracy, frozen_ci) = (c.frozen.0, &c.frozen.1);
    let (tuned_accuracy, tuned_ci) = (c.tuned.0, &c.tuned.1);
    let (paired, test) = (&c.paired, &c.mcnemar);
    let mut table = vec![
        vec![
            "frozen".to_owned(),
            format!(
                "{} [{}, {}]",
                f4(frozen_accuracy),
                f4(frozen_ci.lower),
                f4(frozen_ci.upper)
            ),
            "–".to_owned(),
        ],
        vec![
            format!("tuned (top {} of {layers} blocks)", trained_blocks),
            format!(
                "{} [{}, {}]",
                f4(tuned_accuracy),
                f4(tuned_ci.lower),
                f4(tuned_ci.upper)
            ),
            format!(
                "{:+.4} [{:+.4}, {:+.4}], McNemar p = {:.2e}",
                paired.interval.estimate,
                paired.interval.lower,
                paired.interval.upper,
                test.p_value
            ),
        ],
    ];
    for e in &outcome.epochs {
        table.push(vec![
            format!(
                "epoch {}{}",
                e.epoch,
                if e.epoch == outcome.best_epoch {
                    " (kept)"
                } else {
                    ""
                }
            ),
            e.valid_accuracy.map_or_else(|| "–".to_owned(), f4),
            format!(
                "train loss {:.4}, validation loss {}, {:.1} s",
                e.train_loss,
                e.valid_loss
                    .map_or_else(|| "–".to_owned(), |l| format!("{l:.4}")),
                e.seconds
            ),
        ]);
    }
    table
}

/// `95%` for a level of 0.95.
fn percent(level: f64) -> String {
    format!("{}%", (level * 1000.0).round() / 10.0)
}

/// The report's account of how the backbone was tuned, in words that hold for every setting: which blocks
/// (and the embeddings with `layers = "all"`), what they started from, the schedule in lower case, epochs
/// counted in the singular or plural.
#[allow(clippy::too_many_arguments)] // one sentence's facts, gathered from the stage's parts
fn method_text(
    p: &FineTunePlan,
    trainable: usize,
    layers: usize,
    objective: &str,
    level: f64,
    t: &Trained,
    tuned: &Tuned,
    c: &Comparison,
) -> String {
    let what = match (p.lora, p.layers) {
        (Some((rank, alpha)), _) => format!(
            "LoRA adapters (Hu et al., 2021: rank {rank}, α = {alpha}) on the query, key, value, attention-output \
             and feed-forward matrices of the top {trainable} of {layers} blocks trained, everything else of the \
             backbone frozen ({} values trained, the head's included; the adapters are merged into the weights \
             written out, so the tuned graph costs nothing more to run)",
            t.outcome.trainable_parameters
        ),
        (None, None) => {
            format!("Every block of the backbone ({layers}) and its embeddings trained")
        }
        (None, Some(_)) => {
            format!("The top {trainable} of {layers} blocks of the backbone trained")
        }
    };
    let epochs = if p.epochs == 1 {
        "1 epoch".to_owned()
    } else {
        format!("{} epochs", p.epochs)
    };
    let schedule = format!("{:?}", p.schedule).to_lowercase();
    let unfreezing = if p.gradual_unfreezing {
        ", unfreezing one more block per epoch"
    } else {
        ""
    };
    let stopping = p.patience.map_or_else(String::new, |k| {
        format!(", early stopping after {k} epochs without a better validation score, best weights restored")
    });
    let start = if trainable == layers {
        "from the token ids: nothing is frozen, so no block's states are cached".to_owned()
    } else if p.frozen_dropout {
        format!(
            "from the token ids at every step, the frozen blocks running with dropout (`frozen_dropout`) but \
             taking no gradient; validation and the tuned features from the frozen blocks' states computed \
             once by ONNX Runtime ({:.1} s; {} of {} rows from the feature cache)",
            t.states_seconds, t.states_cached, t.learn_rows
        )
    } else {
        format!(
            "from the frozen blocks' states computed once by ONNX Runtime ({:.1} s; {} of {} rows from the \
             feature cache)",
            t.states_seconds, t.states_cached, t.learn_rows
        )
    };
    format!(
        "{what} with {objective} (AdamW, peak rate {:e} for the top block, ×{} per block below, head {:e}; {} \
         warm-up then {schedule} decay; weight decay {}; dropout {}; {epochs} of batches of {}{unfreezing}\
         {stopping}), {start}. The tuned encoder is written back as ONNX ({TUNED_GRAPH}, sha256 {}) and extracts \
         the tuned features ({:.1} s). The headline head is trained on the frozen and on the tuned features of \
         the same training rows and scored on the same test rows: paired bootstrap of the difference ({}) and \
         McNemar's exact test. The head on the tuned features is kept as heads/{}.json (predict and export with \
         --head {}; its backbone is the tuned graph, pinned by sha256).",
        p.learning_rate,
        p.layer_decay,
        p.head_learning_rate,
        p.warmup,
        p.weight_decay,
        p.dropout,
        p.batch_size,
        &tuned.sha256[..12],
        tuned.extract_seconds,
        percent(level),
        c.head_name,
        c.head_name,
    )
}
