//! The pipeline file as written: serde types that mirror the TOML, with spans kept for later checks.
//!
//! Variants are chosen by table name (`[split.stratified]`, `[head.logistic]`) and every struct denies
//! unknown keys, so typos get an exact position. Checks that need more than the syntax live in `plan.rs`.

use crate::spanned::Spanned;
use serde::Deserialize;

/// The version of the pipeline format this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Removes `null` from the schema's types: TOML has no null.
fn drop_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    let is_null = |v: &Value| v.get("type") == Some(&Value::from("null"));
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            if let Some(Value::Array(options)) = map.get("anyOf")
                && options.len() == 2
                && options.iter().any(is_null)
            {
                let kept = options
                    .iter()
                    .find(|o| !is_null(o))
                    .cloned()
                    .expect("two options");
                map.remove("anyOf");
                if let Value::Object(kept) = kept {
                    map.extend(kept);
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// The JSON Schema (draft 2020-12) of the pipeline file, derived from [`RawPipeline`] and the types under it,
/// as pretty-printed JSON ending in a newline: what `graft schema` prints and `pipelines/graft.schema.json`
/// holds.
///
/// ```
/// let schema: serde_json::Value =
///     serde_json::from_str(&graft_schema::pipeline_schema_json()).unwrap();
/// assert_eq!(schema["title"], "graft pipeline");
/// assert!(schema["required"].as_array().unwrap().contains(&"schema".into()));
/// ```
pub fn pipeline_schema_json() -> String {
    let mut schema = schemars::schema_for!(RawPipeline).to_value();
    // TOML has no null: an optional key is one that may be left out, not one that may be null (and
    // validators then point at the key inside a table rather than at the table).
    drop_null(&mut schema);
    schema["title"] = "graft pipeline".into();
    schema["description"] = format!(
        "A graft pipeline file, schema version {SCHEMA_VERSION} (`graft schema` prints this)."
    )
    .into();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    #[schemars(range(min = 1, max = 1))]
    pub schema: Spanned<u32>,
    pub name: Spanned<String>,
    pub seed: Option<u64>,
    pub data: Spanned<RawData>,
    pub split: RawSplit,
    pub backbone: Option<Spanned<RawBackbone>>,
    pub backbones: Option<Spanned<RawBackbones>>,
    pub tracking: Option<Spanned<RawTracking>>,
    pub transform: Option<RawTransform>,
    pub evaluation: Option<Spanned<RawEvaluation>>,
    pub search: Option<Spanned<RawSearch>>,
    pub learning_curve: Option<Spanned<RawLearningCurve>>,
    pub zero_shot: Option<Spanned<crate::techniques::RawZeroShot>>,
    pub few_shot: Option<Spanned<crate::techniques::RawFewShot>>,
    pub meta_learning: Option<Spanned<crate::techniques::RawMetaLearning>>,
    pub self_training: Option<Spanned<crate::techniques::RawSelfTraining>>,
    pub continual: Option<Spanned<crate::techniques::RawContinual>>,
    pub domain_adaptation: Option<Spanned<crate::techniques::RawDomainAdaptation>>,
    pub multitask: Option<Spanned<crate::techniques::RawMultitask>>,
    pub distillation: Option<Spanned<crate::techniques::RawDistillation>>,
    pub fusion: Option<Spanned<crate::techniques::RawFusion>>,
    pub augmentation: Option<Spanned<crate::techniques::RawAugmentation>>,
    pub prompt_templates: Option<Spanned<crate::techniques::RawPromptTemplates>>,
    pub fine_tune: Option<Spanned<crate::techniques::RawFineTune>>,
    pub progressive: Option<Spanned<crate::techniques::RawProgressive>>,
    pub head: Spanned<RawHeads>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub dataset: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub images: Option<Spanned<String>>,
    pub features: Option<Spanned<String>>,
    pub labels: Option<Spanned<String>>,
    pub embedding_column: Option<Spanned<String>>,
    pub split_column: Option<Spanned<String>>,
    pub label_separator: Option<Spanned<String>>,
    pub group_column: Option<Spanned<String>>,
    pub text_column: Option<Spanned<String>>,
    pub label_column: Option<Spanned<String>>,
    pub sample: Option<Spanned<usize>>,
    /// Leave out the rows of classes with fewer rows than this (after `sample`).
    pub min_class_rows: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawSplit {
    Stratified(Spanned<RawStratified>),
    Predefined(Spanned<RawPredefined>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPredefined {
    pub validation: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAugment {
    pub horizontal_flip: Option<bool>,
    pub crop_scale: Option<Spanned<Vec<f32>>>,
    pub views: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStratified {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawPooling {
    Mean,
    Cls,
}

/// What becomes of texts longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawLongTexts {
    Truncate,
    Chunks,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawChunkPooling {
    Mean,
    Max,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawProvider {
    Cpu,
    Cuda,
}

/// `[tracking]`: where a finished run is logged besides its run folder.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTracking {
    /// An MLflow tracking server (`http://127.0.0.1:5000`).
    pub mlflow: Option<Spanned<String>>,
    /// The MLflow experiment (default: the pipeline's name).
    pub experiment: Option<Spanned<String>>,
}

/// `[backbones]`: backbones ranked by evidence before the run; the winner is the run's backbone.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackbones {
    /// Each candidate: `[backbone]` keys that replace the `[backbone]` table's (`{ model = "minilm-l3" }`).
    pub candidates: Spanned<Vec<Spanned<RawBackbone>>>,
}

#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackbone {
    pub model: Option<Spanned<String>>,
    pub onnx: Option<Spanned<String>>,
    pub tokenizer: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    pub output: Option<String>,
    pub pooling: Option<RawPooling>,
    pub normalize: Option<bool>,
    pub max_length: Option<Spanned<usize>>,
    pub long_texts: Option<Spanned<RawLongTexts>>,
    pub stride: Option<Spanned<usize>>,
    pub chunk_pooling: Option<Spanned<RawChunkPooling>>,
    pub batch_size: Option<Spanned<usize>>,
    pub threads: Option<Spanned<usize>>,
    pub sessions: Option<Spanned<usize>>,
    pub cache: Option<bool>,
    pub provider: Option<RawProvider>,
    pub device_id: Option<Spanned<i32>>,
    pub fallback: Option<Spanned<bool>>,
    pub image_size: Option<Spanned<u32>>,
    pub resize: Option<Spanned<u32>>,
    pub augment: Option<Spanned<RawAugment>>,
    pub prompt: Option<Spanned<String>>,
}

/// `[transform.standardize]` or `[transform.pca_whiten]`: fitted on the training rows, applied before
/// every head.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawTransform {
    Standardize(RawStandardize),
    PcaWhiten(Spanned<RawPcaWhiten>),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStandardize {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPcaWhiten {
    pub components: Option<Spanned<usize>>,
    pub epsilon: Option<Spanned<f64>>,
}

/// One or more heads, each under its own table (`[head.logistic]`, `[head.mlp]`, …); all train on the same
/// features and are reported side by side, the first listed here being the headline.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeads {
    pub logistic: Option<Spanned<RawLogistic>>,
    pub mlp: Option<Spanned<RawMlp>>,
    pub prototype: Option<Spanned<RawPrototype>>,
    pub knn: Option<Spanned<RawKnn>>,
    pub ridge: Option<Spanned<RawRidge>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogistic {
    pub c: Option<Spanned<f64>>,
    pub max_iter: Option<Spanned<usize>>,
    pub tol: Option<Spanned<f64>>,
    pub fit_intercept: Option<bool>,
    pub class_weight: Option<RawClassWeight>,
    pub calibrate: Option<bool>,
    pub threshold: Option<Spanned<RawThreshold>>,
}

/// A multi-label head's decision threshold: a probability, or `"tune"` (per label, on validation rows).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "`threshold` is a probability (such as 0.5) or \"tune\""
)]
pub enum RawThreshold {
    Value(f64),
    Name(#[schemars(regex(pattern = "^tune$"))] String),
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawClassWeight {
    None,
    Balanced,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawActivation {
    Relu,
    Gelu,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawSchedule {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawMonitor {
    Loss,
    Accuracy,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMlp {
    pub hidden: Option<Spanned<Vec<usize>>>,
    pub activation: Option<RawActivation>,
    pub dropout: Option<Spanned<f64>>,
    pub learning_rate: Option<Spanned<f64>>,
    pub weight_decay: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<usize>>,
    pub max_epochs: Option<Spanned<usize>>,
    pub schedule: Option<RawSchedule>,
    pub warmup_epochs: Option<Spanned<usize>>,
    pub step_epochs: Option<Spanned<usize>>,
    pub gamma: Option<Spanned<f64>>,
    /// 0 turns early stopping off.
    pub patience: Option<Spanned<usize>>,
    pub monitor: Option<RawMonitor>,
    pub restore_best: Option<bool>,
    pub calibrate: Option<bool>,
    pub threshold: Option<Spanned<RawThreshold>>,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawMetric {
    Cosine,
    Euclidean,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawWeighting {
    Uniform,
    Distance,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrototype {
    pub metric: Option<RawMetric>,
    pub temperature: Option<Spanned<f64>>,
    pub calibrate: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKnn {
    pub k: Option<Spanned<usize>>,
    pub metric: Option<RawMetric>,
    pub weighting: Option<RawWeighting>,
    pub calibrate: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRidge {
    pub alpha: Option<Spanned<f64>>,
    pub fit_intercept: Option<bool>,
    pub calibrate: Option<bool>,
}

/// `[evaluation]`: how the test scores' uncertainty and calibration are reported.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEvaluation {
    /// Bootstrap resamples for the confidence intervals (0 turns them off).
    pub bootstrap: Option<Spanned<usize>>,
    /// Confidence level of the intervals.
    pub level: Option<Spanned<f64>>,
    /// Bins of the reliability diagram and the expected calibration error.
    pub bins: Option<Spanned<usize>>,
    /// Folds of a k-fold cross-validation of every head over the training and validation rows.
    pub cv: Option<Spanned<usize>>,
}

/// `[search]`: hyperparameter search over one head, on the cached features, before it is trained for good.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    pub method: Option<RawSearchMethod>,
    pub trials: Option<Spanned<usize>>,
    pub select: Option<RawSelect>,
    pub folds: Option<Spanned<usize>>,
    pub logistic: Option<Spanned<RawLogisticSpace>>,
    pub mlp: Option<Spanned<RawMlpSpace>>,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSearchMethod {
    Grid,
    Random,
}

#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawSelect {
    Validation,
    Cv,
}

/// A searched value: a list (grid values, or choices for random search) or a range to draw from.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "a searched value is a list (such as [0.1, 1.0, 10.0]) or a table with `uniform` or `log_uniform` bounds"
)]
pub enum RawRange {
    Values(Vec<f64>),
    Range(RawBounds),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBounds {
    pub uniform: Option<[f64; 2]>,
    pub log_uniform: Option<[f64; 2]>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogisticSpace {
    pub c: Option<Spanned<RawRange>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMlpSpace {
    pub learning_rate: Option<Spanned<RawRange>>,
    pub weight_decay: Option<Spanned<RawRange>>,
    pub dropout: Option<Spanned<RawRange>>,
    pub hidden: Option<Spanned<Vec<Vec<usize>>>>,
}

/// `[learning_curve]`: transfer vs a from-scratch baseline at K training examples per class.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLearningCurve {
    pub shots: Option<Spanned<Vec<usize>>>,
    pub repeats: Option<Spanned<usize>>,
}
