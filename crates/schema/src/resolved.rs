//! The resolved pipeline as run manifests and saved heads record it: the same types write and read it.
//!
//! These are the checked [`Plan`](crate::Plan)'s settings in plain serde form (registry defaults filled in,
//! paths absolute). `predict` and `export` read a head's backbone settings back through
//! [`BackboneSettings`] and rebuild its [`HeadSpec`](crate::HeadSpec) from [`HeadSettings`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole pipeline, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPipeline {
    /// The pipeline format version the file declared.
    pub schema: u32,
    /// Pipeline name.
    pub name: String,
    /// Seed of every random choice.
    pub seed: u64,
    /// `[data]`.
    pub data: DataSettings,
    /// `[split.*]`.
    pub split: SplitSettings,
    /// `[backbone]` (none for given features).
    pub backbone: Option<BackboneSettings>,
    /// `[transform.*]`.
    pub transform: Option<TransformSettings>,
    /// Every `[head.*]`, in file order.
    pub heads: Vec<HeadSettings>,
    /// `[search]`.
    pub search: Option<SearchSettings>,
    /// `[learning_curve]`.
    pub learning_curve: Option<CurveSettings>,
    /// Each technique table's settings by table name (`null` when off).
    pub techniques: serde_json::Map<String, serde_json::Value>,
    /// `[evaluation]`.
    pub evaluation: EvaluationSettings,
}

/// `[data]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSettings {
    /// Where the rows come from.
    pub source: DataSourceSettings,
    /// Column with the texts.
    pub text_column: String,
    /// Column with the labels.
    pub label_column: String,
    /// Rows kept by a seeded, stratified sample.
    pub sample: Option<usize>,
    /// Column naming each row's split.
    pub split_column: Option<String>,
    /// Column naming each row's group.
    pub group_column: Option<String>,
    /// Separator of multi-label cells.
    pub label_separator: Option<String>,
}

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSourceSettings {
    /// A registered data set (text or images).
    Dataset(String),
    /// A table.
    Path(PathBuf),
    /// A folder of class sub-folders of images.
    Images(PathBuf),
    /// Features computed elsewhere.
    Features {
        /// The `.parquet` or `.npy` file.
        path: PathBuf,
        /// The labels table, when not the features file.
        labels: Option<PathBuf>,
        /// The Parquet column of feature vectors.
        embedding_column: String,
    },
}

/// `[split.*]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitSettings {
    /// Seeded stratified shares.
    Stratified {
        /// Training share.
        train: f64,
        /// Validation share.
        validation: f64,
        /// Test share.
        test: f64,
    },
    /// The data's own split, with a validation share of its training rows.
    Predefined {
        /// Share of training rows held out.
        validation: f64,
    },
}

/// `[backbone]`, resolved: what extraction needs to reproduce the features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneSettings {
    /// The model.
    pub source: ModelSourceSettings,
    /// Graph output holding the features (`None`: the graph's first).
    pub output: Option<String>,
    /// `mean` or `cls`.
    pub pooling: String,
    /// L2-normalised embeddings.
    pub normalize: bool,
    /// Tokens kept per text (with chunks: per window).
    pub max_length: usize,
    /// Texts longer than `max_length`: `truncate`, or `chunks` (windows embedded and pooled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_texts: Option<LongTextsSettings>,
    /// Rows per inference call.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    pub threads: usize,
    /// Sessions sharing the threads.
    pub sessions: usize,
    /// Whether the feature cache is used.
    pub cache: bool,
    /// Template every text goes through before tokenization.
    pub prompt: Option<String>,
    /// `cpu` or `cuda`.
    pub provider: String,
    /// CUDA device.
    pub device_id: Option<i32>,
    /// CUDA: fall back to CPU when it cannot start.
    pub fallback: Option<bool>,
    /// Image backbones: the preprocessing.
    pub image: Option<ImageSettings>,
}

/// `long_texts = "chunks"` as a run resolved it (absent: truncated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongTextsSettings {
    /// Tokens of text between the starts of neighbouring windows (`None`: three quarters of a window's room).
    pub stride: Option<usize>,
    /// `mean` or `max`.
    pub chunk_pooling: String,
}

/// A registered model, or files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelSourceSettings {
    /// `{ "model": name }`
    Registry {
        /// Registry name.
        model: String,
    },
    /// `{ "onnx": …, "tokenizer": …, "sha256": … }`
    Files {
        /// The ONNX graph.
        onnx: PathBuf,
        /// Its tokenizer.
        tokenizer: PathBuf,
        /// The pinned sha256, if any.
        sha256: Option<String>,
    },
}

/// Image preprocessing, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSettings {
    /// Graph input.
    pub input: String,
    /// Short side before the crop.
    pub resize: u32,
    /// Centre-crop side.
    pub image_size: u32,
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// `nchw` or `nhwc`.
    pub layout: String,
    /// `float32` or `uint8`.
    pub dtype: String,
    /// Channels in BGR order.
    pub bgr: bool,
    /// Graph output holding the features.
    pub output: String,
    /// Training-time augmentation.
    pub augment: Option<AugmentSettings>,
}

/// `[backbone.augment]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentSettings {
    /// Random horizontal flips.
    pub horizontal_flip: bool,
    /// Random resized crop's area range.
    pub crop_scale: Option<(f32, f32)>,
    /// Augmented views per training image.
    pub views: usize,
}

/// `[transform.*]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformSettings {
    /// Per-feature standardisation.
    Standardize {},
    /// PCA whitening.
    PcaWhiten {
        /// Leading components kept.
        components: Option<usize>,
        /// Added to each eigenvalue.
        epsilon: f64,
    },
}

/// One `[head.*]`, resolved: its kind with that kind's settings, and what applies to every kind. Written
/// as `{"logistic": {…}, "calibrate": …}`, the table name as the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSettings {
    /// Which head, with its hyperparameters.
    #[serde(flatten)]
    pub kind: HeadKindSettings,
    /// Temperature scaling on the validation split.
    pub calibrate: bool,
    /// Multi-label heads: the decision threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdSetting>,
}

/// A head's kind and its own settings, keyed by its table name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKindSettings {
    /// `[head.logistic]`
    Logistic(LogisticSettings),
    /// `[head.mlp]`
    Mlp(MlpSettings),
    /// `[head.prototype]`
    Prototype(PrototypeSettings),
    /// `[head.knn]`
    Knn(KnnSettings),
    /// `[head.ridge]`
    Ridge(RidgeSettings),
}

impl HeadKindSettings {
    /// The table name: `logistic`, `mlp`, `prototype`, `knn`.
    pub fn name(&self) -> &'static str {
        match self {
            HeadKindSettings::Logistic(_) => "logistic",
            HeadKindSettings::Mlp(_) => "mlp",
            HeadKindSettings::Prototype(_) => "prototype",
            HeadKindSettings::Knn(_) => "knn",
            HeadKindSettings::Ridge(_) => "ridge",
        }
    }
}

/// A multi-label threshold: a number, or `"tune"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ThresholdSetting {
    /// The same threshold for every label.
    Fixed(f32),
    /// `"tune"`: per label, F1-optimal on validation.
    Tuned(TuneWord),
}

/// The word `"tune"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneWord {
    /// `"tune"`
    Tune,
}

/// Logistic regression settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticSettings {
    /// Inverse regularisation strength.
    pub c: f64,
    /// L-BFGS iterations.
    pub max_iter: usize,
    /// Gradient tolerance.
    pub tol: f64,
    /// Fit a bias.
    pub fit_intercept: bool,
    /// `none` or `balanced`.
    pub class_weight: String,
}

/// MLP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpSettings {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// `relu` or `gelu`.
    pub activation: String,
    /// Dropout probability.
    pub dropout: f64,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// Epoch limit.
    pub max_epochs: usize,
    /// `constant`, `cosine` or `step`.
    pub schedule: String,
    /// Cosine warm-up epochs.
    pub warmup_epochs: Option<usize>,
    /// Step schedule: epochs per step.
    pub step_epochs: Option<usize>,
    /// Step schedule: factor per step.
    pub gamma: Option<f64>,
    /// Early-stopping patience.
    pub patience: Option<usize>,
    /// `loss` or `accuracy`.
    pub monitor: String,
    /// Restore the best epoch's weights.
    pub restore_best: bool,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
}

/// Prototype settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrototypeSettings {
    /// `cosine` or `euclidean`.
    pub metric: String,
    /// Softmax temperature.
    pub temperature: f64,
}

/// kNN settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnSettings {
    /// Neighbours.
    pub k: usize,
    /// `cosine` or `euclidean`.
    pub metric: String,
    /// `uniform` or `distance`.
    pub weighting: String,
}

/// Ridge classifier settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RidgeSettings {
    /// Penalty strength.
    pub alpha: f64,
    /// Fit a bias.
    pub fit_intercept: bool,
}

/// `[search]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// The tuned head's table name.
    pub head: String,
    /// `grid` or `random`.
    pub method: String,
    /// `validation`, or cross-validation folds.
    pub select: SelectSettings,
    /// The searched values of each candidate.
    pub candidates: Vec<serde_json::Value>,
}

/// How candidates were compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SelectSettings {
    /// `"validation"`
    Validation(ValidationWord),
    /// `{ "cv": folds }`
    CrossValidation {
        /// Folds.
        cv: usize,
    },
}

/// The word `"validation"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationWord {
    /// `"validation"`
    Validation,
}

/// `[learning_curve]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSettings {
    /// Examples per class.
    pub shots: Vec<usize>,
    /// Draws per point.
    pub repeats: usize,
}

/// `[evaluation]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSettings {
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Confidence level.
    pub level: f64,
    /// Reliability bins.
    pub bins: usize,
    /// Cross-validation folds.
    pub cv: Option<usize>,
}
