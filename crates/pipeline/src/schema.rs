//! The pipeline file as written: serde types that mirror the TOML, with spans kept for later checks.
//!
//! Variants are chosen by table name (`[split.stratified]`, `[head.logistic]`) and every struct denies
//! unknown keys, so typos get an exact position. Checks that need more than the syntax live in `plan.rs`.

use serde::Deserialize;
use toml::Spanned;

/// The version of the pipeline format this build reads.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub schema: Spanned<u32>,
    pub name: Spanned<String>,
    pub seed: Option<u64>,
    pub data: Spanned<RawData>,
    pub split: RawSplit,
    pub backbone: Spanned<RawBackbone>,
    pub head: RawHead,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawData {
    pub dataset: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub images: Option<Spanned<String>>,
    pub text_column: Option<Spanned<String>>,
    pub label_column: Option<Spanned<String>>,
    pub sample: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum RawSplit {
    Stratified(Spanned<RawStratified>),
    Predefined(Spanned<RawPredefined>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPredefined {
    pub validation: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAugment {
    pub horizontal_flip: Option<bool>,
    pub crop_scale: Option<Spanned<Vec<f32>>>,
    pub views: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStratified {
    pub train: f64,
    pub validation: f64,
    pub test: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawPooling {
    Mean,
    Cls,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawProvider {
    Cpu,
    Cuda,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackbone {
    pub model: Option<Spanned<String>>,
    pub onnx: Option<Spanned<String>>,
    pub tokenizer: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    pub output: Option<String>,
    pub pooling: Option<RawPooling>,
    pub normalize: Option<bool>,
    pub max_length: Option<Spanned<usize>>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum RawHead {
    Logistic(Spanned<RawLogistic>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogistic {
    pub c: Option<Spanned<f64>>,
    pub max_iter: Option<Spanned<usize>>,
    pub tol: Option<Spanned<f64>>,
    pub fit_intercept: Option<bool>,
}
