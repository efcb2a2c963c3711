//! Transfer-learning techniques as pipeline stages: each an optional top-level table of the pipeline file
//! (`[zero_shot]`, `[few_shot]`, `[self_training]`, …) that runs on the run's frozen features after the heads
//! and reports the comparison it exists for (a [`TechniqueReport`] in metrics.json, report.md, report.html).
//!
//! The stages share one shape: checked settings (errors point at their key), a seed derived from the
//! pipeline's, the features the run already extracted (or cached), and a table of measured results.

mod augmentation;
mod continual;
mod distillation;
mod domain;
mod few_shot;
mod fusion;
mod multitask;
mod prompts;
mod self_training;
mod zero_shot;

use std::ops::Range;
use std::path::{Path, PathBuf};

use graft_config::techniques::OtherBackbone;
use graft_config::{Diagnostic, HeadSpec, ModelSource, StagePlan, TechniquesPlan};
use graft_report::TechniqueReport;
use ndarray::{Array2, ArrayView2};

use crate::PipelineError;

/// Embeds texts (through the backbone's prompt) with the run's backbone (`backbone = None`) or a registered
/// text backbone with the run's threads and batch size, through the feature cache unless `fresh` (then
/// every row is extracted, for timing).
pub(crate) type EmbedTexts<'a> =
    dyn Fn(Option<&OtherBackbone>, &[String], bool) -> Result<Embedded, PipelineError> + Sync + 'a;

/// The table of a registered data set a stage reads (e.g. a target domain), fetched and verified.
pub(crate) type DatasetTable<'a> = dyn Fn(&str) -> Result<PathBuf, PipelineError> + Sync + 'a;

/// Features of texts a stage asked for, and how fast they were extracted.
pub(crate) struct Embedded {
    pub features: Array2<f32>,
    /// Rows per second of the rows extracted (0 when all came from the cache).
    pub rows_per_second: f64,
    /// Rows extracted rather than found in the cache.
    pub extracted: usize,
}

/// Everything a stage reads: plain data from the run, and two functions for what it brings (texts to embed,
/// a registered table to read). Never the plan or the cache.
pub(crate) struct RunData<'a> {
    /// The pipeline's seed; each stage derives its own streams from it.
    pub seed: u64,
    /// The pipeline file and its text, to locate mistakes found while a stage runs.
    pub file: &'a Path,
    pub source: &'a str,
    /// Every head of the pipeline (the first is the headline), for stages that reuse their settings.
    pub heads: &'a [HeadSpec],
    /// The pipeline's backbone (`None` for given features).
    pub backbone: Option<&'a ModelSource>,
    /// The data's label column, for stages that read more of the table.
    pub label_column: &'a str,
    /// Every used row's features.
    pub features: ArrayView2<'a, f32>,
    /// Every used row's class.
    pub labels: &'a [usize],
    pub classes: &'a [String],
    pub train: &'a [usize],
    pub test: &'a [usize],
    /// The headline head's settings, and its test accuracy for comparison.
    pub headline: &'a HeadSpec,
    pub headline_accuracy: f64,
    /// The data table and the table row of each used row, for stages that read more of its columns.
    pub table: Option<(&'a Path, &'a [usize])>,
    /// The backbone, for texts a stage brings (`None` for image backbones and given features).
    pub embed: Option<&'a EmbedTexts<'a>>,
    /// Every used row's text, for text data.
    pub texts: Option<&'a [String]>,
    /// Augmented views of the training images (one matrix per view, rows aligned with `train`).
    pub train_views: &'a [Array2<f32>],
    /// Registered data sets a stage reads.
    pub dataset: &'a DatasetTable<'a>,
    /// Draw progress on the terminal.
    pub progress: bool,
}

impl RunData<'_> {
    /// A mistake of the pipeline file found while a stage runs, pointing at the stage's key.
    pub(crate) fn diagnostic(
        &self,
        span: &Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::at(self.file, self.source, span.clone(), message)
    }
}

/// Runs one stage.
fn run_stage(plan: &StagePlan, data: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    match plan {
        StagePlan::PromptTemplates(p) => prompts::run(p, data),
        StagePlan::ZeroShot(p) => zero_shot::run(p, data),
        StagePlan::FewShot(p) => few_shot::run(p, data),
        StagePlan::SelfTraining(p) => self_training::run(p, data),
        StagePlan::Continual(p) => continual::run(p, data),
        StagePlan::DomainAdaptation(p) => domain::run(p, data),
        StagePlan::Multitask(p) => multitask::run(p, data),
        StagePlan::Fusion(p) => fusion::run(p, data),
        StagePlan::Distillation(p) => distillation::run(p, data),
        StagePlan::Augmentation(p) => augmentation::run(p, data),
    }
}

/// Runs the stages the plan asks for, in [`graft_config::STAGES`] order, each behind a spinner with its
/// elapsed time.
pub(crate) fn run(
    techniques: &TechniquesPlan,
    data: &RunData<'_>,
) -> Result<Vec<TechniqueReport>, PipelineError> {
    let mut reports = Vec::new();
    for plan in &techniques.stages {
        let name = plan.stage().title();
        tracing::info!(technique = name, "running");
        let spinner = crate::progress::spinner(data.progress, name);
        let report = run_stage(plan, data);
        spinner.finish_and_clear();
        reports.push(report?);
    }
    Ok(reports)
}

/// Share of equal entries.
pub(crate) fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// `0.7670` style.
pub(crate) fn f4(v: f64) -> String {
    format!("{v:.4}")
}

/// `0.7670 [0.7406, 0.7925]` style.
pub(crate) fn with_interval(s: &graft_report::Spread) -> String {
    format!("{:.4} [{:.4}, {:.4}]", s.mean, s.lower, s.upper)
}

/// The MLP a stage trains: the pipeline's `[head.mlp]` settings when it has one, else graft's defaults
/// (seeded from the pipeline); `epochs` epochs and no early stopping (stages have no validation rows).
pub(crate) fn mlp_settings(
    d: &RunData<'_>,
    epochs: usize,
    purpose: &str,
) -> Result<graft_heads::MlpValidParams, PipelineError> {
    use graft_heads::ParamGuard;
    let base = d
        .heads
        .iter()
        .find_map(|h| match &h.kind {
            graft_config::HeadKind::Mlp(m) => Some(m.unchecked()),
            _ => None,
        })
        .unwrap_or_else(|| {
            graft_heads::Mlp::params().seed(graft_stdx::derive_seed(d.seed, purpose))
        });
    Ok(base.max_epochs(epochs).patience(None).check()?)
}

/// A short name of the pipeline's backbone: the registered name, or the ONNX file's name.
pub(crate) fn pipeline_backbone_name(d: &RunData<'_>) -> String {
    match d.backbone {
        Some(graft_config::ModelSource::Registry(name)) => name.clone(),
        Some(graft_config::ModelSource::Files { onnx, .. }) => onnx.file_name().map_or_else(
            || "backbone".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ),
        None => "given features".to_owned(),
    }
}

/// The headline head's settings (uncalibrated) trained on the training rows of `x` (one row per used row),
/// and its predictions for the test rows: the comparison stages that swap the features make.
pub(crate) fn headline_test_predictions(
    d: &RunData<'_>,
    x: ArrayView2<'_, f32>,
) -> Result<Vec<usize>, PipelineError> {
    let y: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let (head, _) = crate::heads::train_head(
        &d.headline.uncalibrated(),
        None,
        x.select(ndarray::Axis(0), d.train).view(),
        &graft_heads::Targets::new(&y, d.classes.len())?,
        None,
    )?;
    Ok(graft_heads::argmax_rows(
        head.predict_proba(x.select(ndarray::Axis(0), d.test).view())?
            .view(),
    ))
}

/// Runs `job(k, repeat)` for every K of `ks` × `repeats` seeded repeats in parallel; each returns two scores
/// of the same draw (e.g. without and with a technique). Per K, in order: K and the two scores' spreads.
pub(crate) fn paired_draws(
    ks: &[usize],
    repeats: usize,
    job: impl Fn(usize, usize) -> Result<(f64, f64), PipelineError> + Sync,
) -> Result<Vec<(usize, graft_report::Spread, graft_report::Spread)>, PipelineError> {
    use rayon::prelude::*;
    let jobs: Vec<(usize, usize)> = ks
        .iter()
        .flat_map(|&k| (0..repeats).map(move |r| (k, r)))
        .collect();
    let results: Vec<(f64, f64)> = jobs
        .par_iter()
        .map(|&(k, r)| job(k, r))
        .collect::<Result<_, _>>()?;
    Ok(ks
        .iter()
        .zip(results.chunks(repeats))
        .map(|(&k, draws)| {
            (
                k,
                graft_report::Spread::of(draws.iter().map(|d| d.0).collect()),
                graft_report::Spread::of(draws.iter().map(|d| d.1).collect()),
            )
        })
        .collect())
}

/// A spread as metrics.json records it in technique details.
pub(crate) fn spread_json(s: &graft_report::Spread) -> serde_json::Value {
    serde_json::json!({ "mean": s.mean, "lower": s.lower, "upper": s.upper, "std": s.std })
}
