//! The technique tables of a pipeline (`[zero_shot]`, `[few_shot]`, `[self_training]`, …): raw serde
//! types, checked plans with located errors, and the one list of stages ([`STAGES`]).

mod augmentation;
mod continual;
mod distillation;
mod domain;
mod few_shot;
mod fine_tune;
mod fusion;
mod meta_learning;
mod multitask;
mod progressive;
mod prompts;
mod self_training;
mod zero_shot;

use crate::spanned::Spanned;

use crate::Diagnostic;
use crate::checker::Checker;
pub use crate::checker::Modality;
pub use crate::sources::{OtherBackbone, RawBackboneRef, RawModelFiles};

pub use augmentation::AugmentationPlan;
pub use continual::ContinualPlan;
pub use distillation::DistillationPlan;
pub use domain::{DomainPlan, DomainSimcsePlan, TargetSource};
pub use few_shot::FewShotPlan;
pub use fine_tune::{FineTunePlan, FirstPhasePlan};
pub use fusion::FusionPlan;
pub use graft_schema::techniques::{
    FineTuneObjective, FineTuneSchedule, FirstObjective, FirstTexts, ProgressiveColumn,
    RawAugmentation, RawContinual, RawDistillation, RawDomainAdaptation, RawFewShot, RawFineTune,
    RawFusion, RawLayers, RawMetaLearning, RawMultitask, RawOrder, RawProgressive,
    RawPromptTemplates, RawSelfTraining, RawZeroShot,
};
pub use meta_learning::MetaLearningPlan;
pub use multitask::MultitaskPlan;
pub use progressive::ProgressivePlan;
pub use prompts::PromptTemplatesPlan;
pub use self_training::SelfTrainingPlan;
pub use zero_shot::ZeroShotPlan;

/// A technique stage: one optional top-level table of the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `[prompt_templates]`
    PromptTemplates,
    /// `[zero_shot]`
    ZeroShot,
    /// `[few_shot]`
    FewShot,
    /// `[meta_learning]`
    MetaLearning,
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
    /// `[fine_tune]`
    FineTune,
    /// `[progressive]`
    Progressive,
}

/// Every stage, in the order a run executes and reports them. The one list: adding a stage means adding it
/// here, to [`Stage`] and [`StagePlan`] (whose matches have no catch-all arm, so the compiler finds the rest).
pub const STAGES: [Stage; 13] = [
    Stage::PromptTemplates,
    Stage::ZeroShot,
    Stage::FewShot,
    Stage::MetaLearning,
    Stage::SelfTraining,
    Stage::Continual,
    Stage::DomainAdaptation,
    Stage::Multitask,
    Stage::Fusion,
    Stage::Distillation,
    Stage::Augmentation,
    Stage::FineTune,
    Stage::Progressive,
];

impl Stage {
    /// The table that enables it.
    pub fn table(self) -> &'static str {
        match self {
            Stage::PromptTemplates => "prompt_templates",
            Stage::ZeroShot => "zero_shot",
            Stage::FewShot => "few_shot",
            Stage::MetaLearning => "meta_learning",
            Stage::SelfTraining => "self_training",
            Stage::Continual => "continual",
            Stage::DomainAdaptation => "domain_adaptation",
            Stage::Multitask => "multitask",
            Stage::Fusion => "fusion",
            Stage::Distillation => "distillation",
            Stage::Augmentation => "augmentation",
            Stage::FineTune => "fine_tune",
            Stage::Progressive => "progressive",
        }
    }

    /// What the progress line calls it.
    pub fn title(self) -> &'static str {
        match self {
            Stage::PromptTemplates => "prompt templates",
            Stage::ZeroShot => "zero-shot",
            Stage::FewShot => "few-shot episodes",
            Stage::MetaLearning => "meta-learning",
            Stage::SelfTraining => "self-training",
            Stage::Continual => "continual learning",
            Stage::DomainAdaptation => "domain adaptation",
            Stage::Multitask => "multitask",
            Stage::Fusion => "feature fusion",
            Stage::Distillation => "distillation",
            Stage::Augmentation => "augmentation",
            Stage::FineTune => "fine-tuning",
            Stage::Progressive => "progressive column",
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
    /// `[meta_learning]`
    MetaLearning(MetaLearningPlan),
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
    /// `[fine_tune]`
    FineTune(FineTunePlan),
    /// `[progressive]`
    Progressive(ProgressivePlan),
}

impl StagePlan {
    /// Which stage.
    pub fn stage(&self) -> Stage {
        match self {
            StagePlan::PromptTemplates(_) => Stage::PromptTemplates,
            StagePlan::ZeroShot(_) => Stage::ZeroShot,
            StagePlan::FewShot(_) => Stage::FewShot,
            StagePlan::MetaLearning(_) => Stage::MetaLearning,
            StagePlan::SelfTraining(_) => Stage::SelfTraining,
            StagePlan::Continual(_) => Stage::Continual,
            StagePlan::DomainAdaptation(_) => Stage::DomainAdaptation,
            StagePlan::Multitask(_) => Stage::Multitask,
            StagePlan::Fusion(_) => Stage::Fusion,
            StagePlan::Distillation(_) => Stage::Distillation,
            StagePlan::Augmentation(_) => Stage::Augmentation,
            StagePlan::FineTune(_) => Stage::FineTune,
            StagePlan::Progressive(_) => Stage::Progressive,
        }
    }

    /// The resolved settings, for the manifest.
    pub fn json(&self) -> serde_json::Value {
        match self {
            StagePlan::PromptTemplates(p) => p.json(),
            StagePlan::ZeroShot(p) => p.json(),
            StagePlan::FewShot(p) => p.json(),
            StagePlan::MetaLearning(p) => p.json(),
            StagePlan::SelfTraining(p) => p.json(),
            StagePlan::Continual(p) => p.json(),
            StagePlan::DomainAdaptation(p) => p.json(),
            StagePlan::Multitask(p) => p.json(),
            StagePlan::Fusion(p) => p.json(),
            StagePlan::Distillation(p) => p.json(),
            StagePlan::Augmentation(p) => p.json(),
            StagePlan::FineTune(p) => p.json(),
            StagePlan::Progressive(p) => p.json(),
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

    /// The registered data sets stages read besides the pipeline's own (for `fetch`): a domain-adaptation
    /// target, an intermediate task of `[fine_tune.first]`.
    pub fn registered_datasets(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter_map(|p| match p {
                StagePlan::DomainAdaptation(DomainPlan {
                    target: TargetSource::Registry(name),
                    ..
                }) => Some(name.as_str()),
                StagePlan::FineTune(FineTunePlan {
                    first: Some(first), ..
                }) => first.dataset.as_deref(),
                _ => None,
            })
            .collect()
    }
}

/// The technique tables as written.
pub struct RawTechniques {
    pub zero_shot: Option<Spanned<RawZeroShot>>,
    pub few_shot: Option<Spanned<RawFewShot>>,
    pub meta_learning: Option<Spanned<RawMetaLearning>>,
    pub self_training: Option<Spanned<RawSelfTraining>>,
    pub continual: Option<Spanned<RawContinual>>,
    pub domain_adaptation: Option<Spanned<RawDomainAdaptation>>,
    pub multitask: Option<Spanned<RawMultitask>>,
    pub distillation: Option<Spanned<RawDistillation>>,
    pub fusion: Option<Spanned<RawFusion>>,
    pub augmentation: Option<Spanned<RawAugmentation>>,
    pub prompt_templates: Option<Spanned<RawPromptTemplates>>,
    pub fine_tune: Option<Spanned<RawFineTune>>,
    pub progressive: Option<Spanned<RawProgressive>>,
}

/// Checks every technique table (in [`STAGES`] order, so that order also decides which of two mistakes is
/// reported).
pub(crate) fn check(
    check: &Checker<'_>,
    raw: RawTechniques,
    modality: Modality,
) -> Result<TechniquesPlan, Diagnostic> {
    let RawTechniques {
        zero_shot,
        few_shot,
        meta_learning,
        self_training,
        continual,
        domain_adaptation,
        multitask,
        distillation,
        fusion,
        augmentation,
        prompt_templates,
        fine_tune,
        progressive,
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
    if let Some(r) = meta_learning {
        stages.push(StagePlan::MetaLearning(meta_learning::check(
            check, r, modality,
        )?));
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
    if let Some(r) = fine_tune {
        stages.push(StagePlan::FineTune(fine_tune::check(check, r, modality)?));
    }
    if let Some(r) = progressive {
        stages.push(StagePlan::Progressive(progressive::check(
            check, r, modality,
        )?));
    }
    Ok(TechniquesPlan { stages })
}
