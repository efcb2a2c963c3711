//! Running a checked plan: ingest → featurize (provision + extract) → train → evaluate → write the run
//! folder. This module only orders the phases and times them; each phase lives in its own module.

use std::time::Instant;

use graft_assets::Cache;
use graft_config::{DataSource, Plan};
use graft_report::{TechniqueReport, Timings};

use crate::PipelineError;
use crate::artifacts::{Finished, write_run};
use crate::data::{Ingested, Inputs, ingest};
use crate::evaluate::{Evaluated, cross_validation, evaluate_heads, learning_curve};
use crate::featurize::{Featurized, embed_texts, featurize};
pub use crate::options::{RunOptions, RunOutcome};
use crate::stages::{EmbedTexts, RunData};
use crate::train::{
    FitRows, SplitRows, TrainedHeads, check_against_data, initialise_prototypes, train_heads,
};

/// Runs a checked plan end to end and writes its run folder.
pub fn run(plan: &Plan, options: &RunOptions) -> Result<RunOutcome, PipelineError> {
    let started_at = chrono::Utc::now().to_rfc3339();
    let total = Instant::now();
    let cache = Cache::new(&options.cache_dir);
    let mut timings = Timings::default();

    let clock = Instant::now();
    let mut ingested = ingest(plan, &cache)?;
    timings.ingest = clock.elapsed().as_secs_f64();
    tracing::info!(
        rows = ingested.data.labels.len(),
        train = ingested.split.train.len(),
        "ingested"
    );
    check_ingested(plan, &cache, &ingested)?;

    let clock = Instant::now();
    // With `[backbones]`, the candidates are ranked first and the winner's plan and features are the run's.
    let ranked = crate::candidates::rank_backbones(plan, options, &cache, &mut ingested)?;
    let (winner, featurized, ranking) = match ranked {
        Some(r) => (Some(r.plan), r.featurized, Some(r.report)),
        None => (
            None,
            featurize(
                plan,
                options,
                &cache,
                &mut ingested.data,
                &ingested.split.train,
                &ingested.file,
            )?,
            None,
        ),
    };
    let plan = winner.as_ref().unwrap_or(plan);
    timings.provision = featurized.provision_seconds;
    timings.extract = clock.elapsed().as_secs_f64() - featurized.provision_seconds;
    check_against_data(
        plan,
        ingested.split.train.len(),
        Some(featurized.features.ncols()),
    )?;
    let embed =
        |backbone: Option<&graft_config::techniques::OtherBackbone>,
         texts: &[String],
         fresh: bool| { embed_texts(plan, options, &cache, backbone, texts, fresh) };

    let clock = Instant::now();
    let (data, split) = (&ingested.data, &ingested.split);
    let rows = SplitRows::select(
        &featurized.features,
        &data.labels,
        split,
        data.classes.len(),
    );
    let fit = FitRows::new(plan, &rows, &featurized.train_views)?;
    let step = |what: &str| crate::progress::spinner(options.progress, what);
    let spinner = step(&training_message(plan));
    let mut trained = train_heads(plan, &fit, data, split)?;
    initialise_prototypes(plan, &mut trained, &fit, &embed, &data.classes)?;
    spinner.finish_and_clear();
    timings.train = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let spinner = step("scoring the heads (intervals, cross-validation)");
    let cv = cross_validation(plan, &featurized.features, data, split, &trained.specs)?;
    let evaluated = evaluate_heads(plan, data, split, &rows, &trained, &cv)?;
    spinner.finish_and_clear();
    let spinner = plan
        .learning_curve
        .as_ref()
        .map(|_| step("learning curve (the head and its baseline per K)"));
    let mut learning_curve =
        learning_curve(plan, &trained.specs[0], &featurized.features, data, split)?;
    spinner.inspect(indicatif::ProgressBar::finish_and_clear);
    timings.evaluate = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let (techniques, stage_files, stage_heads) = technique_stages(
        plan,
        options,
        &cache,
        &ingested,
        &featurized,
        &trained,
        &evaluated,
        &embed,
    )?;
    let mut techniques = techniques;
    if let Some(ranking) = ranking {
        techniques.insert(0, ranking);
    }
    crate::evaluate::add_tuned_line(&mut learning_curve, &techniques);
    timings.techniques = clock.elapsed().as_secs_f64();
    timings.total = total.elapsed().as_secs_f64();

    write_run(
        Finished {
            plan,
            started_at,
            ingested,
            featurized,
            trained,
            evaluated,
            learning_curve,
            techniques,
            stage_files,
            stage_heads,
            timings,
        },
        options,
    )
}

/// The spinner's words while the heads train: how many, and the search's candidates when there is one.
fn training_message(plan: &Plan) -> String {
    let heads = plan.heads.len();
    match &plan.search {
        Some(_) => format!("searching hyperparameters and training {heads} head(s)"),
        None => format!("training {heads} head(s)"),
    }
}

/// What `graft check` learns from the data without a model: rows read, classes and the split, after
/// every check that needs only the data (the split's class counts, kNN `k` against the training rows).
pub fn check_data(plan: &Plan, cache_dir: &std::path::Path) -> Result<DataSummary, PipelineError> {
    let cache = Cache::new(cache_dir);
    let ingested = ingest(plan, &cache)?;
    check_ingested(plan, &cache, &ingested)?;
    Ok(DataSummary::of(&ingested))
}

/// The checks that need the data but no model: kNN `k` against the training rows, and the stages' (zero-shot
/// classes, the target domain's table).
fn check_ingested(plan: &Plan, cache: &Cache, ingested: &Ingested) -> Result<(), PipelineError> {
    check_against_data(plan, ingested.split.train.len(), None)?;
    let dataset = |name: &str| Ok(cache.dataset(name)?.table.path);
    crate::stages::check_with_data(
        &plan.techniques,
        plan.backbone.as_ref().map(|b| &b.source),
        &ingested.data.classes,
        &dataset,
        &plan.file,
        &plan.source,
    )
}

/// Row counts of a checked data set (see [`check_data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSummary {
    /// Labelled rows kept.
    pub rows: usize,
    /// Rows read but dropped (an empty label or text), and the first of them (0-based table rows).
    pub dropped: usize,
    pub dropped_rows: Vec<usize>,
    /// Distinct classes (labels, for multi-label data).
    pub classes: usize,
    /// Rows per split.
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    /// The rows' texts (before any prompt), for counting long ones; empty for images and features.
    pub texts: Vec<String>,
}

impl DataSummary {
    pub(crate) fn of(ingested: &Ingested) -> DataSummary {
        let data = &ingested.data;
        DataSummary {
            rows: data.labels.len(),
            dropped: data.dropped_null_text + data.dropped_null_label,
            dropped_rows: data.dropped_rows.clone(),
            classes: data.classes.len(),
            train: ingested.split.train.len(),
            validation: ingested.split.validation.len(),
            test: ingested.split.test.len(),
            texts: match &data.inputs {
                crate::data::Inputs::Texts(texts) => texts.clone(),
                _ => Vec::new(),
            },
        }
    }
}

/// Technique stages, on the run's features; texts they bring go through the same backbone and cache.
#[allow(clippy::too_many_arguments)] // the run's phases, each once
fn technique_stages(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    ingested: &Ingested,
    featurized: &Featurized,
    trained: &TrainedHeads,
    evaluated: &Evaluated,
    embed: &EmbedTexts<'_>,
) -> Result<StageResults, PipelineError> {
    if plan.techniques.is_empty() {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let data = &ingested.data;
    let texts = match &data.inputs {
        Inputs::Texts(texts) => Some(texts.as_slice()),
        _ => None,
    };
    let table = matches!(
        plan.data.source,
        DataSource::Registry(_) | DataSource::File(_)
    )
    .then(|| (ingested.file.path.as_path(), data.source_rows.as_slice()));
    let dataset = |name: &str| Ok(cache.dataset(name)?.table.path);
    let files = std::sync::Mutex::new(Vec::new());
    let outputs = |name: &str, bytes: Vec<u8>| {
        files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), bytes));
        Ok(())
    };
    let heads = std::sync::Mutex::new(Vec::new());
    let add_head = |head: crate::stages::StageHead| {
        heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(head);
        Ok(())
    };
    let store_graph = |bytes: &[u8]| crate::featurize::store_graph(cache, bytes);
    let token_states = |onnx: &std::path::Path, output: &str, texts: &[String]| {
        crate::featurize::token_states(plan, options, cache, onnx, output, texts)
    };
    let kit = crate::featurize::tune_sources(plan, cache)?;
    let kit = kit.map(
        |(weights, attention_heads, tokenizer, output)| crate::stages::TuneKit {
            weights,
            attention_heads,
            tokenizer,
            output,
            max_length: plan.backbone.as_ref().map_or(512, |b| b.config.max_length),
            store_graph: &store_graph,
            token_states: &token_states,
        },
    );
    let reports = crate::stages::run(
        &plan.techniques,
        &RunData {
            seed: plan.seed,
            file: &plan.file,
            source: &plan.source,
            heads: &plan.heads,
            backbone: plan.backbone.as_ref().map(|b| &b.source),
            label_column: &plan.data.label_column,
            features: featurized.features.view(),
            labels: &data.labels,
            classes: &data.classes,
            train: &ingested.split.train,
            validation: &ingested.split.validation,
            test: &ingested.split.test,
            headline: &trained.specs[0],
            headline_accuracy: evaluated.heads[0].test.accuracy,
            headline_macro_f1: evaluated.heads[0].test.macro_f1,
            headline_interval: evaluated.heads[0]
                .test
                .intervals
                .as_ref()
                .map(|i| i.accuracy),
            level: plan.evaluation.level,
            table,
            embed: texts.is_some().then_some(embed),
            texts,
            train_views: &featurized.train_views,
            dataset: &dataset,
            progress: options.progress,
            tune: kit.as_ref(),
            outputs: &outputs,
            add_head: &add_head,
            curve: plan
                .learning_curve
                .as_ref()
                .map(|c| (c.shots.as_slice(), c.repeats)),
        },
    )?;
    let files = files
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let heads = heads
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok((reports, files, heads))
}

/// The stages' reports, the files they add to the run folder and the heads they keep.
type StageResults = (
    Vec<TechniqueReport>,
    Vec<(String, Vec<u8>)>,
    Vec<crate::stages::StageHead>,
);
