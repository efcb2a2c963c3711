//! The technique tables of a pipeline (`[zero_shot]`, `[few_shot]`, `[self_training]`, …): raw serde
//! types, checked plans with located errors, and the one list of stages ([`STAGES`]).

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

use serde::Deserialize;
use toml::Spanned;

use crate::Diagnostic;

pub use augmentation::{AugmentationPlan, RawAugmentation};
pub use continual::{ContinualPlan, RawContinual, RawOrder};
pub use distillation::{DistillationPlan, RawDistillation};
pub use domain::{DomainPlan, RawDomainAdaptation, TargetSource};
pub use few_shot::{FewShotPlan, RawFewShot};
pub use fusion::{FusionPlan, RawFusion};
pub use multitask::{MultitaskPlan, RawMultitask};
pub use prompts::{PromptTemplatesPlan, RawPromptTemplates};
pub use self_training::{RawSelfTraining, SelfTrainingPlan};
pub use zero_shot::{RawZeroShot, ZeroShotPlan};

/// A technique stage: one optional top-level table of the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `[prompt_templates]`
    PromptTemplates,
    /// `[zero_shot]`
    ZeroShot,
    /// `[few_shot]`
    FewShot,
    /// `[self_training]`
    SelfTraining,
    /// `[continual]`
    Continual,
    /// `[domain_adaptation]`
    DomainAdaptation,
    /// `[multitask]`
    Multitask,
    /// `[fusion]`
    Fusion,
    /// `[distillation]`
    Distillation,
    /// `[augmentation]`
    Augmentation,
}

/// Every stage, in the order a run executes and reports them. The one list: adding a stage means adding it
/// here, to [`Stage`] and [`StagePlan`] (whose matches have no catch-all arm, so the compiler finds the rest).
pub const STAGES: [Stage; 10] = [
    Stage::PromptTemplates,
    Stage::ZeroShot,
    Stage::FewShot,
    Stage::SelfTraining,
    Stage::Continual,
    Stage::DomainAdaptation,
    Stage::Multitask,
    Stage::Fusion,
    Stage::Distillation,
    Stage::Augmentation,
];

impl Stage {
    /// The table that enables it.
    pub fn table(self) -> &'static str {
        match self {
            Stage::PromptTemplates => "prompt_templates",
            Stage::ZeroShot => "zero_shot",
            Stage::FewShot => "few_shot",
            Stage::SelfTraining => "self_training",
            Stage::Continual => "continual",
            Stage::DomainAdaptation => "domain_adaptation",
            Stage::Multitask => "multitask",
            Stage::Fusion => "fusion",
            Stage::Distillation => "distillation",
            Stage::Augmentation => "augmentation",
        }
    }

    /// What the progress line calls it.
    pub fn title(self) -> &'static str {
        match self {
            Stage::PromptTemplates => "prompt templates",
            Stage::ZeroShot => "zero-shot",
            Stage::FewShot => "few-shot episodes",
            Stage::SelfTraining => "self-training",
            Stage::Continual => "continual learning",
            Stage::DomainAdaptation => "domain adaptation",
            Stage::Multitask => "multitask",
            Stage::Fusion => "feature fusion",
            Stage::Distillation => "distillation",
            Stage::Augmentation => "augmentation",
        }
    }
}

/// One checked technique table.
#[derive(Debug, Clone)]
pub enum StagePlan {
    /// `[prompt_templates]`
    PromptTemplates(PromptTemplatesPlan),
    /// `[zero_shot]`
    ZeroShot(ZeroShotPlan),
    /// `[few_shot]`
    FewShot(FewShotPlan),
    /// `[self_training]`
    SelfTraining(SelfTrainingPlan),
    /// `[continual]`
    Continual(ContinualPlan),
    /// `[domain_adaptation]`
    DomainAdaptation(DomainPlan),
    /// `[multitask]`
    Multitask(MultitaskPlan),
    /// `[fusion]`
    Fusion(FusionPlan),
    /// `[distillation]`
    Distillation(DistillationPlan),
    /// `[augmentation]`
    Augmentation(AugmentationPlan),
}

impl StagePlan {
    /// Which stage.
    pub fn stage(&self) -> Stage {
        match self {
            StagePlan::PromptTemplates(_) => Stage::PromptTemplates,
            StagePlan::ZeroShot(_) => Stage::ZeroShot,
            StagePlan::FewShot(_) => Stage::FewShot,
            StagePlan::SelfTraining(_) => Stage::SelfTraining,
            StagePlan::Continual(_) => Stage::Continual,
            StagePlan::DomainAdaptation(_) => Stage::DomainAdaptation,
            StagePlan::Multitask(_) => Stage::Multitask,
            StagePlan::Fusion(_) => Stage::Fusion,
            StagePlan::Distillation(_) => Stage::Distillation,
            StagePlan::Augmentation(_) => Stage::Augmentation,
        }
    }

    /// The resolved settings, for the manifest.
    pub fn json(&self) -> serde_json::Value {
        match self {
            StagePlan::PromptTemplates(p) => p.json(),
            StagePlan::ZeroShot(p) => p.json(),
            StagePlan::FewShot(p) => p.json(),
            StagePlan::SelfTraining(p) => p.json(),
            StagePlan::Continual(p) => p.json(),
            StagePlan::DomainAdaptation(p) => p.json(),
            StagePlan::Multitask(p) => p.json(),
            StagePlan::Fusion(p) => p.json(),
            StagePlan::Distillation(p) => p.json(),
            StagePlan::Augmentation(p) => p.json(),
        }
    }
}

/// The technique tables of a pipeline, checked, in [`STAGES`] order.
#[derive(Debug, Clone, Default)]
pub struct TechniquesPlan {
    /// The stages that are on.
    pub stages: Vec<StagePlan>,
}

impl TechniquesPlan {
    /// Whether any stage is on.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The resolved settings, for the manifest: every stage's table, `null` when off.
    pub fn json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for stage in STAGES {
            let plan = self.stages.iter().find(|p| p.stage() == stage);
            map.insert(
                stage.table().to_owned(),
                plan.map_or(serde_json::Value::Null, StagePlan::json),
            );
        }
        serde_json::Value::Object(map)
    }

    /// `[zero_shot]`, when on (its descriptions can initialise a prototype head).
    pub fn zero_shot(&self) -> Option<&ZeroShotPlan> {
        self.stages.iter().find_map(|p| match p {
            StagePlan::ZeroShot(z) => Some(z),
            _ => None,
        })
    }

    /// Further registered backbones the stages embed with (for `fetch`).
    pub fn registered_backbones(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter_map(|p| match p {
                StagePlan::Distillation(d) => Some(&d.student),
                StagePlan::Fusion(f) => Some(&f.backbone),
                _ => None,
            })
            .filter_map(|b| match b {
                OtherBackbone::Registry(name) => Some(name.as_str()),
                OtherBackbone::Files { .. } => None,
            })
            .collect()
    }

    /// The target data set of a domain-adaptation stage, when it is a registered one (for `fetch`).
    pub fn registered_target(&self) -> Option<&str> {
        self.stages.iter().find_map(|p| match p {
            StagePlan::DomainAdaptation(DomainPlan {
                target: TargetSource::Registry(name),
                ..
            }) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// The technique tables as written.
pub struct RawTechniques {
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
pub enum RawBackboneRef {
    Name(String),
    Files(RawModelFiles),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelFiles {
    pub onnx: String,
    pub tokenizer: String,
}

/// A second text backbone, checked: the pipeline's extraction settings apply to it (registered ones bring
/// their own output, pooling, normalisation and length).
#[derive(Debug, Clone, PartialEq)]
pub enum OtherBackbone {
    Registry(String),
    Files {
        onnx: std::path::PathBuf,
        tokenizer: std::path::PathBuf,
    },
}

impl OtherBackbone {
    /// For reports.
    pub fn name(&self) -> String {
        match self {
            OtherBackbone::Registry(name) => name.clone(),
            OtherBackbone::Files { onnx, .. } => onnx
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Whether it is the pipeline's own backbone.
    pub fn is_pipeline_backbone(&self, pipeline: Option<&crate::sources::ModelSource>) -> bool {
        match (self, pipeline) {
            (OtherBackbone::Registry(a), Some(crate::sources::ModelSource::Registry(b))) => a == b,
            (
                OtherBackbone::Files { onnx: a, .. },
                Some(crate::sources::ModelSource::Files { onnx: b, .. }),
            ) => a == b,
            _ => false,
        }
    }

    pub fn json(&self) -> serde_json::Value {
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
pub struct Modality {
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
pub struct Check<'a> {
    pub file: &'a Path,
    pub source: &'a str,
}

impl Check<'_> {
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, self.source, Some(span), message)
    }

    /// A path relative to the pipeline file's folder.
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        crate::sources::absolute(&self.file.parent().unwrap_or(Path::new(".")).join(path))
    }

    /// A positive count, or the default.
    pub fn positive(
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
    pub fn shots(
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
    pub fn fraction(
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
    pub fn text_backbone(
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
    pub fn single_label(
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

/// Checks every technique table (in [`STAGES`] order, so that order also decides which of two mistakes is
/// reported).
pub fn check(
    check: &Check<'_>,
    raw: RawTechniques,
    modality: Modality,
) -> Result<TechniquesPlan, Diagnostic> {
    let RawTechniques {
        zero_shot,
        few_shot,
        self_training,
        continual,
        domain_adaptation,
        multitask,
        distillation,
        fusion,
        augmentation,
        prompt_templates,
    } = raw;
    let mut stages = Vec::new();
    if let Some(r) = prompt_templates {
        stages.push(StagePlan::PromptTemplates(prompts::check(
            check, r, modality,
        )?));
    }
    if let Some(r) = zero_shot {
        stages.push(StagePlan::ZeroShot(zero_shot::check(check, r, modality)?));
    }
    if let Some(r) = few_shot {
        stages.push(StagePlan::FewShot(few_shot::check(check, r, modality)?));
    }
    if let Some(r) = self_training {
        stages.push(StagePlan::SelfTraining(self_training::check(
            check, r, modality,
        )?));
    }
    if let Some(r) = continual {
        stages.push(StagePlan::Continual(continual::check(check, r, modality)?));
    }
    if let Some(r) = domain_adaptation {
        stages.push(StagePlan::DomainAdaptation(domain::check(
            check, r, modality,
        )?));
    }
    if let Some(r) = multitask {
        stages.push(StagePlan::Multitask(multitask::check(check, r, modality)?));
    }
    if let Some(r) = fusion {
        stages.push(StagePlan::Fusion(fusion::check(check, r, modality)?));
    }
    if let Some(r) = distillation {
        stages.push(StagePlan::Distillation(distillation::check(
            check, r, modality,
        )?));
    }
    if let Some(r) = augmentation {
        stages.push(StagePlan::Augmentation(augmentation::check(
            check, r, modality,
        )?));
    }
    Ok(TechniquesPlan { stages })
}
