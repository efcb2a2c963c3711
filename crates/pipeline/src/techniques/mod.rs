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
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{Diagnostic, PipelineError, heads::HeadSpec};

pub(crate) use augmentation::{AugmentationPlan, RawAugmentation};
pub(crate) use continual::{ContinualPlan, RawContinual};
pub(crate) use distillation::{DistillationPlan, RawDistillation};
pub(crate) use domain::{DomainPlan, RawDomainAdaptation, TargetSource};
pub(crate) use few_shot::{FewShotPlan, RawFewShot};
pub(crate) use fusion::{FusionPlan, RawFusion};
pub(crate) use multitask::{MultitaskPlan, RawMultitask};
pub(crate) use prompts::{PromptTemplatesPlan, RawPromptTemplates};
pub(crate) use self_training::{RawSelfTraining, SelfTrainingPlan};
pub(crate) use zero_shot::{RawZeroShot, ZeroShotPlan};

/// What one technique stage measured, as metrics.json records it and the reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueReport {
    /// The table that enabled it (`zero_shot`, `few_shot`, …).
    pub technique: String,
    /// A heading.
    pub title: String,
    /// What was done, with the published method it follows.
    pub method: String,
    /// The comparison the technique exists for, in one sentence with its numbers.
    pub finding: String,
    /// Column names of the results table.
    pub columns: Vec<String>,
    /// Its rows, formatted.
    pub rows: Vec<Vec<String>>,
    /// The same results as numbers.
    pub details: serde_json::Value,
    /// Seconds the stage took.
    pub seconds: f64,
}

/// The technique tables of a pipeline, checked.
#[derive(Debug, Clone, Default)]
pub struct TechniquesPlan {
    pub(crate) zero_shot: Option<ZeroShotPlan>,
    pub(crate) few_shot: Option<FewShotPlan>,
    pub(crate) self_training: Option<SelfTrainingPlan>,
    pub(crate) continual: Option<ContinualPlan>,
    pub(crate) domain: Option<DomainPlan>,
    pub(crate) multitask: Option<MultitaskPlan>,
    pub(crate) distillation: Option<DistillationPlan>,
    pub(crate) fusion: Option<FusionPlan>,
    pub(crate) augmentation: Option<AugmentationPlan>,
    pub(crate) prompt_templates: Option<PromptTemplatesPlan>,
}

impl TechniquesPlan {
    /// Whether any stage is on.
    pub fn is_empty(&self) -> bool {
        self.zero_shot.is_none()
            && self.few_shot.is_none()
            && self.self_training.is_none()
            && self.continual.is_none()
            && self.domain.is_none()
            && self.multitask.is_none()
            && self.distillation.is_none()
            && self.fusion.is_none()
            && self.augmentation.is_none()
            && self.prompt_templates.is_none()
    }

    /// The resolved settings, for the manifest.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "zero_shot": self.zero_shot.as_ref().map(ZeroShotPlan::json),
            "few_shot": self.few_shot.as_ref().map(FewShotPlan::json),
            "self_training": self.self_training.as_ref().map(SelfTrainingPlan::json),
            "continual": self.continual.as_ref().map(ContinualPlan::json),
            "domain_adaptation": self.domain.as_ref().map(DomainPlan::json),
            "multitask": self.multitask.as_ref().map(MultitaskPlan::json),
            "distillation": self.distillation.as_ref().map(DistillationPlan::json),
            "fusion": self.fusion.as_ref().map(FusionPlan::json),
            "augmentation": self.augmentation.as_ref().map(AugmentationPlan::json),
            "prompt_templates": self.prompt_templates.as_ref().map(PromptTemplatesPlan::json),
        })
    }

    /// Further registered backbones the stages embed with (for `fetch`).
    pub(crate) fn registered_backbones(&self) -> Vec<&str> {
        [
            self.distillation.as_ref().map(|d| &d.student),
            self.fusion.as_ref().map(|f| &f.backbone),
        ]
        .into_iter()
        .flatten()
        .filter_map(|b| match b {
            OtherBackbone::Registry(name) => Some(name.as_str()),
            OtherBackbone::Files { .. } => None,
        })
        .collect()
    }

    /// The target data set of a domain-adaptation stage, when it is a registered one (for `fetch`).
    pub(crate) fn registered_target(&self) -> Option<&str> {
        match self.domain.as_ref().map(|d| &d.target) {
            Some(TargetSource::Registry(name)) => Some(name),
            _ => None,
        }
    }
}

/// The technique tables as written.
pub(crate) struct RawTechniques {
    pub zero_shot: Option<Spanned<RawZeroShot>>,
    pub few_shot: Option<Spanned<RawFewShot>>,
    pub self_training: Option<Spanned<RawSelfTraining>>,
    pub continual: Option<Spanned<RawContinual>>,
    pub domain_adaptation: Option<Spanned<RawDomainAdaptation>>,
    pub multitask: Option<Spanned<RawMultitask>>,
    pub distillation: Option<Spanned<RawDistillation>>,
    pub fusion: Option<Spanned<RawFusion>>,
    pub augmentation: Option<Spanned<RawAugmentation>>,
    pub prompt_templates: Option<Spanned<RawPromptTemplates>>,
}

/// A second backbone as a stage names it: a registered name, or files.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawBackboneRef {
    Name(String),
    Files(RawModelFiles),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelFiles {
    pub onnx: String,
    pub tokenizer: String,
}

/// A second text backbone, checked: the pipeline's extraction settings apply to it (registered ones bring
/// their own output, pooling, normalisation and length).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OtherBackbone {
    Registry(String),
    Files {
        onnx: std::path::PathBuf,
        tokenizer: std::path::PathBuf,
    },
}

impl OtherBackbone {
    /// For reports.
    pub(crate) fn name(&self) -> String {
        match self {
            OtherBackbone::Registry(name) => name.clone(),
            OtherBackbone::Files { onnx, .. } => onnx
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Whether it is the pipeline's own backbone.
    pub(crate) fn is_pipeline_backbone(&self, plan: &crate::Plan) -> bool {
        match (self, plan.backbone.as_ref().map(|b| &b.source)) {
            (OtherBackbone::Registry(a), Some(crate::plan::ModelSource::Registry(b))) => a == b,
            (
                OtherBackbone::Files { onnx: a, .. },
                Some(crate::plan::ModelSource::Files { onnx: b, .. }),
            ) => a == b,
            _ => false,
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        match self {
            OtherBackbone::Registry(name) => serde_json::json!({ "model": name }),
            OtherBackbone::Files { onnx, tokenizer } => {
                serde_json::json!({ "onnx": onnx, "tokenizer": tokenizer })
            }
        }
    }
}

impl std::fmt::Display for OtherBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// What the data and backbone of the pipeline are, for checks that depend on them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Modality {
    /// Rows are texts embedded by a text backbone.
    pub texts: bool,
    /// Rows are images.
    pub images: bool,
    /// Multi-label data.
    pub multi_label: bool,
    /// `[backbone] augment` makes augmented views of the training images.
    pub image_views: bool,
    /// `[backbone] prompt` is set.
    pub prompted: bool,
    /// Number of `[head.*]` tables.
    pub heads: usize,
}

/// Builds located errors for the checks.
pub(crate) struct Check<'a> {
    pub file: &'a Path,
    pub source: &'a str,
}

impl Check<'_> {
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, self.source, Some(span), message)
    }

    /// A path relative to the pipeline file's folder.
    pub(crate) fn resolve(&self, path: &str) -> std::path::PathBuf {
        crate::plan::absolute(&self.file.parent().unwrap_or(Path::new(".")).join(path))
    }

    /// A positive count, or the default.
    pub(crate) fn positive(
        &self,
        value: &Option<Spanned<usize>>,
        default: usize,
        key: &str,
        hint: &str,
    ) -> Result<usize, Diagnostic> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref()),
            Some(v) => Err(self
                .error(v.span(), format!("`{key}` must be at least 1"))
                .with_hint(hint.to_owned())),
        }
    }

    /// A list of positive counts, sorted and deduplicated, or the default.
    pub(crate) fn shots(
        &self,
        value: &Option<Spanned<Vec<usize>>>,
        default: &[usize],
        key: &str,
    ) -> Result<Vec<usize>, Diagnostic> {
        let mut shots = match value {
            None => default.to_vec(),
            Some(s) if s.get_ref().is_empty() || s.get_ref().contains(&0) => {
                return Err(self
                    .error(
                        s.span(),
                        format!("`{key}` must list positive numbers of examples per class"),
                    )
                    .with_hint(format!("e.g. `{key} = [1, 5, 10]`")));
            }
            Some(s) => s.get_ref().clone(),
        };
        shots.sort_unstable();
        shots.dedup();
        Ok(shots)
    }

    /// A probability strictly between 0 and 1, or the default.
    pub(crate) fn fraction(
        &self,
        value: &Option<Spanned<f64>>,
        default: f64,
        key: &str,
        hint: &str,
    ) -> Result<f64, Diagnostic> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() < 1.0 => Ok(*v.get_ref()),
            Some(v) => Err(self
                .error(
                    v.span(),
                    format!("`{key}` = {} must be between 0 and 1", v.get_ref()),
                )
                .with_hint(hint.to_owned())),
        }
    }

    /// A second text backbone named by a stage: registered, or ONNX + tokenizer files.
    pub(crate) fn text_backbone(
        &self,
        raw: &Spanned<RawBackboneRef>,
    ) -> Result<OtherBackbone, Diagnostic> {
        let registry = graft_assets::Registry::builtin();
        let text_models: Vec<&str> = registry
            .models
            .iter()
            .filter(|(_, m)| m.modality == "text")
            .map(|(n, _)| n.as_str())
            .collect();
        let hint = format!(
            "registered text backbones: {}; or give files: {{ onnx = \"model.onnx\", tokenizer = \"tokenizer.json\" }}",
            text_models.join(", ")
        );
        match raw.get_ref() {
            RawBackboneRef::Name(name) => match registry.models.get(name) {
                Some(m) if m.modality == "text" => Ok(OtherBackbone::Registry(name.clone())),
                Some(_) => Err(self
                    .error(raw.span(), format!("`{name}` is not a text backbone"))
                    .with_hint(hint)),
                None => Err(self
                    .error(raw.span(), format!("unknown backbone `{name}`"))
                    .with_hint(hint)),
            },
            RawBackboneRef::Files(files) => {
                let mut paths = Vec::new();
                for (what, path) in [("ONNX model", &files.onnx), ("tokenizer", &files.tokenizer)] {
                    let resolved = self.resolve(path);
                    if !resolved.is_file() {
                        return Err(self
                            .error(
                                raw.span(),
                                format!("{what} not found: {}", resolved.display()),
                            )
                            .with_hint(
                                "relative paths are resolved from the folder of the pipeline file",
                            ));
                    }
                    paths.push(resolved);
                }
                let tokenizer = paths.pop().expect("two paths");
                let onnx = paths.pop().expect("two paths");
                Ok(OtherBackbone::Files { onnx, tokenizer })
            }
        }
    }

    /// Refuses a stage on multi-label data.
    pub(crate) fn single_label(
        &self,
        modality: Modality,
        span: Range<usize>,
        table: &str,
    ) -> Result<(), Diagnostic> {
        if modality.multi_label {
            return Err(self
                .error(span, format!("`[{table}]` applies to single-label data"))
                .with_hint("remove it, or drop `label_separator` from `[data]`"));
        }
        Ok(())
    }
}

/// Checks every technique table.
pub(crate) fn check(
    check: &Check<'_>,
    raw: RawTechniques,
    modality: Modality,
) -> Result<TechniquesPlan, Diagnostic> {
    Ok(TechniquesPlan {
        zero_shot: raw
            .zero_shot
            .map(|r| zero_shot::check(check, r, modality))
            .transpose()?,
        few_shot: raw
            .few_shot
            .map(|r| few_shot::check(check, r, modality))
            .transpose()?,
        self_training: raw
            .self_training
            .map(|r| self_training::check(check, r, modality))
            .transpose()?,
        continual: raw
            .continual
            .map(|r| continual::check(check, r, modality))
            .transpose()?,
        domain: raw
            .domain_adaptation
            .map(|r| domain::check(check, r, modality))
            .transpose()?,
        multitask: raw
            .multitask
            .map(|r| multitask::check(check, r, modality))
            .transpose()?,
        distillation: raw
            .distillation
            .map(|r| distillation::check(check, r, modality))
            .transpose()?,
        fusion: raw
            .fusion
            .map(|r| fusion::check(check, r, modality))
            .transpose()?,
        augmentation: raw
            .augmentation
            .map(|r| augmentation::check(check, r, modality))
            .transpose()?,
        prompt_templates: raw
            .prompt_templates
            .map(|r| prompts::check(check, r, modality))
            .transpose()?,
    })
}

/// Embeds texts (through the backbone's prompt) with the run's backbone (`backbone = None`) or a registered
/// text backbone with the run's threads and batch size, through the feature cache unless `fresh` (then
/// every row is extracted, for timing).
pub(crate) type EmbedTexts<'a> =
    dyn Fn(Option<&OtherBackbone>, &[String], bool) -> Result<Embedded, PipelineError> + Sync + 'a;

/// Features of texts a stage asked for, and how fast they were extracted.
pub(crate) struct Embedded {
    pub features: Array2<f32>,
    /// Rows per second of the rows extracted (0 when all came from the cache).
    pub rows_per_second: f64,
    /// Rows extracted rather than found in the cache.
    pub extracted: usize,
}

/// Everything the stages read from the run.
pub(crate) struct RunData<'a> {
    pub plan: &'a crate::Plan,
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
    /// The cache folder, for registered data sets a stage reads.
    pub cache: &'a graft_assets::Cache,
    /// Draw progress on the terminal.
    pub progress: bool,
}

/// Runs the stages the plan asks for, in a fixed order, each behind a spinner with its elapsed time.
pub(crate) fn run(data: &RunData<'_>) -> Result<Vec<TechniqueReport>, PipelineError> {
    let t = &data.plan.techniques;
    type Stage<'s> = Box<dyn Fn() -> Result<TechniqueReport, PipelineError> + 's>;
    let mut stages: Vec<(&str, Stage<'_>)> = Vec::new();
    if let Some(p) = &t.prompt_templates {
        stages.push(("prompt templates", Box::new(move || prompts::run(p, data))));
    }
    if let Some(p) = &t.zero_shot {
        stages.push(("zero-shot", Box::new(move || zero_shot::run(p, data))));
    }
    if let Some(p) = &t.few_shot {
        stages.push((
            "few-shot episodes",
            Box::new(move || few_shot::run(p, data)),
        ));
    }
    if let Some(p) = &t.self_training {
        stages.push((
            "self-training",
            Box::new(move || self_training::run(p, data)),
        ));
    }
    if let Some(p) = &t.continual {
        stages.push((
            "continual learning",
            Box::new(move || continual::run(p, data)),
        ));
    }
    if let Some(p) = &t.domain {
        stages.push(("domain adaptation", Box::new(move || domain::run(p, data))));
    }
    if let Some(p) = &t.multitask {
        stages.push(("multitask", Box::new(move || multitask::run(p, data))));
    }
    if let Some(p) = &t.fusion {
        stages.push(("feature fusion", Box::new(move || fusion::run(p, data))));
    }
    if let Some(p) = &t.distillation {
        stages.push(("distillation", Box::new(move || distillation::run(p, data))));
    }
    if let Some(p) = &t.augmentation {
        stages.push(("augmentation", Box::new(move || augmentation::run(p, data))));
    }
    let mut reports = Vec::new();
    for (name, stage) in stages {
        tracing::info!(technique = name, "running");
        let spinner = if data.progress {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("a valid template"),
        );
        spinner.set_message(name.to_owned());
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let report = stage();
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
pub(crate) fn with_interval(s: &crate::Spread) -> String {
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
        .plan
        .heads
        .iter()
        .find_map(|h| match &h.kind {
            crate::heads::HeadKind::Mlp(m) => Some(m.unchecked()),
            _ => None,
        })
        .unwrap_or_else(|| {
            graft_heads::Mlp::params().seed(crate::run::derive_seed(d.plan.seed, purpose))
        });
    Ok(base.max_epochs(epochs).patience(None).check()?)
}

/// A short name of the pipeline's backbone: the registered name, or the ONNX file's name.
pub(crate) fn pipeline_backbone_name(d: &RunData<'_>) -> String {
    match d.plan.backbone.as_ref().map(|b| &b.source) {
        Some(crate::plan::ModelSource::Registry(name)) => name.clone(),
        Some(crate::plan::ModelSource::Files { onnx, .. }) => onnx.file_name().map_or_else(
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
) -> Result<Vec<(usize, crate::Spread, crate::Spread)>, PipelineError> {
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
                crate::Spread::of(draws.iter().map(|d| d.0).collect()),
                crate::Spread::of(draws.iter().map(|d| d.1).collect()),
            )
        })
        .collect())
}

/// A spread as metrics.json records it in technique details.
pub(crate) fn spread_json(s: &crate::Spread) -> serde_json::Value {
    serde_json::json!({ "mean": s.mean, "lower": s.lower, "upper": s.upper, "std": s.std })
}
