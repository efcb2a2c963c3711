//! The technique tables as written (`[zero_shot]`, `[fine_tune]`, …): serde types that mirror the TOML.
//! graft-config checks each into its plan beside the code that knows the technique's limits.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::spanned::Spanned;

/// A second backbone as a stage names it: a registered name, or files.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RawBackboneRef {
    Name(String),
    Files(RawModelFiles),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModelFiles {
    pub onnx: String,
    pub tokenizer: String,
}

// `[zero_shot]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawZeroShot {
    pub template: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    pub prior_shots: Option<Spanned<Vec<usize>>>,
    pub prior_weight: Option<Spanned<f64>>,
    pub repeats: Option<Spanned<usize>>,
    pub initialise_prototype: Option<Spanned<bool>>,
}

// `[few_shot]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFewShot {
    pub ways: Option<Spanned<usize>>,
    pub shots: Option<Spanned<Vec<usize>>>,
    pub queries: Option<Spanned<usize>>,
    pub episodes: Option<Spanned<usize>>,
}

/// `[meta_learning]`: a projection meta-trained by episodes on the base classes, scored by episodes on
/// novel classes held out from it, against prototypes on the frozen features.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetaLearning {
    /// Classes held out of meta-training (names); default the second half of the classes.
    pub novel: Option<Spanned<Vec<String>>>,
    pub ways: Option<Spanned<usize>>,
    pub shots: Option<Spanned<Vec<usize>>>,
    pub queries: Option<Spanned<usize>>,
    /// Evaluation episodes per K.
    pub episodes: Option<Spanned<usize>>,
    /// Meta-training episodes.
    pub train_episodes: Option<Spanned<usize>>,
    /// Width of the projection; default the features' (starting from the identity).
    pub dim: Option<Spanned<usize>>,
    pub learning_rate: Option<Spanned<f64>>,
    /// Base classes held out of meta-training to choose when to stop (meta-validation); 0: none.
    pub validation_classes: Option<Spanned<usize>>,
}

// `[self_training]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSelfTraining {
    pub labelled: Option<Spanned<usize>>,
    pub threshold: Option<Spanned<f64>>,
    pub rounds: Option<Spanned<usize>>,
}

// `[continual]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawContinual {
    pub classes_per_stage: Option<Spanned<usize>>,
    pub memory: Option<Spanned<usize>>,
    pub epochs: Option<Spanned<usize>>,
    pub order: Option<RawOrder>,
}

/// The order classes arrive in.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawOrder {
    /// Class-index order (the data's sorted class names).
    Classes,
    /// A seeded random permutation, as iCaRL's protocol (Rebuffi et al., 2017).
    Seeded,
}

// `[domain_adaptation]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDomainAdaptation {
    pub target: Option<Spanned<String>>,
    pub target_path: Option<Spanned<String>>,
    pub text_column: Option<Spanned<String>>,
    pub label_column: Option<Spanned<String>>,
    pub lambda: Option<Spanned<f64>>,
    /// Also adapt the backbone itself: SimCSE on both domains' texts, unlabelled.
    pub simcse: Option<Spanned<RawDomainSimcse>>,
}

/// `[domain_adaptation] simcse = { … }`: the top blocks tuned with SimCSE on the source's training texts and
/// the target's texts (no labels), compared with the feature alignments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDomainSimcse {
    pub layers: Option<Spanned<usize>>,
    pub epochs: Option<Spanned<usize>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<usize>>,
    pub temperature: Option<Spanned<f64>>,
    pub dropout: Option<Spanned<f64>>,
}

// `[multitask]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMultitask {
    pub tasks: Spanned<Vec<String>>,
    pub shared_trunk: Option<bool>,
    pub epochs: Option<Spanned<usize>>,
}

// `[distillation]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDistillation {
    pub student: Spanned<RawBackboneRef>,
    pub temperature: Option<Spanned<f64>>,
    pub alpha: Option<Spanned<f64>>,
    pub epochs: Option<Spanned<usize>>,
    pub timing_rows: Option<Spanned<usize>>,
    pub teacher: Option<Spanned<String>>,
}

// `[fusion]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFusion {
    pub backbone: Spanned<RawBackboneRef>,
    pub project: Option<Spanned<usize>>,
}

// `[augmentation]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAugmentation {
    pub views: Option<Spanned<usize>>,
    pub deletion: Option<Spanned<f64>>,
    pub swap: Option<Spanned<f64>>,
    pub per_class: Option<Spanned<Vec<usize>>>,
    pub repeats: Option<Spanned<usize>>,
}

// `[prompt_templates]`
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPromptTemplates {
    pub templates: Spanned<Vec<String>>,
}

// `[fine_tune]`
/// `layers = 2` or `layers = "all"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "`layers` is the number of top blocks to train (such as 2) or \"all\""
)]
pub enum RawLayers {
    Count(#[schemars(range(min = 1))] usize),
    Word(#[schemars(regex(pattern = "^all$"))] String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneObjective {
    /// Cross-entropy through a new linear head.
    Classification,
    /// SetFit's cosine-similarity loss on pairs drawn from the labels.
    Contrastive,
    /// SimCSE, self-supervised: each training text twice through dropout is a positive pair, the batch's
    /// other texts negatives. Labels are not read.
    Simcse,
}

/// What `[fine_tune.first]` trains on before the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirstObjective {
    /// SimCSE on unlabelled texts (self-supervised adaptation).
    Simcse,
    /// Cross-entropy on another labelled data set (intermediate-task transfer).
    Classification,
}

/// Which of the task's texts `[fine_tune.first] objective = "simcse"` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirstTexts {
    /// The training rows' texts.
    Train,
    /// Every row's text, test rows included (their labels are never read): transductive.
    All,
}

/// `[fine_tune.first]`: a first training phase of the same top blocks before the task's own.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFirstPhase {
    pub objective: Spanned<FirstObjective>,
    /// SimCSE: which texts (default "train").
    pub texts: Option<Spanned<FirstTexts>>,
    /// Classification: the registered data set of the intermediate task.
    pub dataset: Option<Spanned<String>>,
    /// Classification: rows drawn from it (seeded, stratified), at most; default all.
    pub max_rows: Option<Spanned<usize>>,
    pub epochs: Option<Spanned<usize>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<usize>>,
    pub dropout: Option<Spanned<f64>>,
    /// SimCSE's softmax temperature.
    pub temperature: Option<Spanned<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneSchedule {
    Constant,
    Linear,
    Cosine,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFineTune {
    pub layers: Option<Spanned<RawLayers>>,
    pub objective: Option<Spanned<FineTuneObjective>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub head_learning_rate: Option<Spanned<f64>>,
    pub layer_decay: Option<Spanned<f64>>,
    pub epochs: Option<Spanned<usize>>,
    pub batch_size: Option<Spanned<usize>>,
    pub warmup: Option<Spanned<f64>>,
    pub schedule: Option<Spanned<FineTuneSchedule>>,
    pub weight_decay: Option<Spanned<f64>>,
    pub dropout: Option<Spanned<f64>>,
    pub patience: Option<Spanned<usize>>,
    pub gradual_unfreezing: Option<bool>,
    /// Run the frozen blocks every step with dropout instead of from their cached states.
    pub frozen_dropout: Option<bool>,
    /// SetFit's `num_iterations`: each one gives every training row a same-class and an other-class partner.
    pub iterations: Option<Spanned<usize>>,
    /// The key before `iterations` (it counted pairs): read only to say what to write instead.
    #[schemars(skip)]
    pub pairs_per_row: Option<Spanned<usize>>,
    pub max_grad_norm: Option<Spanned<f64>>,
    /// Repeat the comparison on this many seeded draws of training rows (the split's size per class), the
    /// rest of the labelled rows as each draw's test rows.
    pub draws: Option<Spanned<usize>>,
    pub weights: Option<Spanned<String>>,
    pub attention_heads: Option<Spanned<usize>>,
    /// SimCSE's softmax temperature (`objective = "simcse"`).
    pub temperature: Option<Spanned<f64>>,
    /// A first phase (self-supervised or another labelled task) before the task's own training.
    pub first: Option<Spanned<RawFirstPhase>>,
    /// Train low-rank adapters of the trained blocks' matrices instead of the blocks (LoRA).
    pub lora: Option<Spanned<RawLora>>,
}

/// `[fine_tune] lora = { rank = 8, alpha = 16 }`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLora {
    pub rank: Option<Spanned<usize>>,
    pub alpha: Option<Spanned<f64>>,
}

/// The trainable column `[progressive]` puts over the frozen backbone's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProgressiveColumn {
    /// A learned softmax mix of every layer's sentence embedding and a scale (ELMo), under a linear head.
    Mix,
}

/// `[progressive]`: a new trainable column over the frozen backbone's per-layer embeddings, compared with
/// the same head on the last layer alone.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProgressive {
    pub column: Option<Spanned<ProgressiveColumn>>,
    pub epochs: Option<Spanned<usize>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub alpha: Option<Spanned<f64>>,
}
