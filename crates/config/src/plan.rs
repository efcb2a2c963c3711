//! From a pipeline file to a checked plan: defaults filled in, paths made absolute, values validated.

use std::ops::Range;
use std::path::PathBuf;

use graft_assets::Registry;
use graft_backbone::{
    Augmentation, ImagePreprocess, Layout, LongTexts, PixelType, Pooling, Provider,
    TextBackboneConfig,
};
use graft_ingest::SplitRatios;

use crate::Diagnostic;
use crate::heads::{HeadSpec, TransformPlan};
use crate::resolved::{
    AugmentSettings, BackboneSettings, CurveSettings, DataSettings, DataSourceSettings,
    EvaluationSettings, ImageSettings, LongTextsSettings, ModelSourceSettings, ResolvedPipeline,
    SearchSettings, SelectSettings, SplitSettings, ValidationWord,
};
use crate::schema::SCHEMA_VERSION;
pub use crate::sources::{ModelSource, absolute};

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A data set from graft's registry, fetched into the cache.
    Registry(String),
    /// A CSV/TSV/Parquet file.
    File(PathBuf),
    /// An image data set from graft's registry, with its official train/test split.
    ImageRegistry(String),
    /// A folder of class sub-folders of images.
    ImageFolder(PathBuf),
    /// Features computed elsewhere: a Parquet table with a list column, or a `.npy` matrix (labels then come
    /// from `labels`, a row-aligned table).
    Features {
        /// The `.parquet` or `.npy` file.
        path: PathBuf,
        /// The table with the labels (and split column), when not the features file itself.
        labels: Option<PathBuf>,
        /// The Parquet column holding each row's feature vector.
        embedding_column: String,
    },
}

impl DataSource {
    /// Whether the rows are images.
    pub fn is_images(&self) -> bool {
        matches!(
            self,
            DataSource::ImageRegistry(_) | DataSource::ImageFolder(_)
        )
    }
}

/// How rows are split into train, validation and test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitPlan {
    /// A seeded split that keeps class proportions.
    Stratified(SplitRatios),
    /// The data set's official train/test split; `validation` is the share of the training rows held out.
    Predefined {
        /// Share of the official training rows held out for validation (stratified, seeded).
        validation: f64,
    },
}

/// Image-specific backbone settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePlan {
    /// Preprocessing (the registry entry's, with `image_size`/`resize` overrides).
    pub preprocess: ImagePreprocess,
    /// Graph output holding the features.
    pub output: String,
    /// Training-time augmentation and how many augmented views each training image adds.
    pub augment: Option<(Augmentation, usize)>,
}

/// The data section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPlan {
    /// Where the rows come from.
    pub source: DataSource,
    /// Column with the input text.
    pub text_column: String,
    /// Column with the class label.
    pub label_column: String,
    /// Keep only this many rows (a seeded, stratified sample) before splitting.
    pub sample: Option<usize>,
    /// Leave out the rows of classes with fewer rows than this (after `sample`).
    pub min_class_rows: Option<usize>,
    /// Column naming each row's split (`train`, `validation`, `test`), for `[split.predefined]`.
    pub split_column: Option<String>,
    /// Multi-label data: each label cell lists the row's labels joined by this separator.
    pub label_separator: Option<String>,
    /// Column naming each row's group: cross-validation keeps a group's rows in one fold.
    pub group_column: Option<String>,
}

/// The backbone section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BackbonePlan {
    /// Where the model comes from.
    pub source: ModelSource,
    /// Extraction settings (for images: batch size, threads and provider).
    pub config: TextBackboneConfig,
    /// Set for image backbones.
    pub image: Option<ImagePlan>,
    /// Reuse and fill the shared feature cache.
    pub cache: bool,
    /// Text backbones: a template every text is put through before tokenization (`{text}` marks the
    /// text), e.g. `"query: {text}"`.
    pub prompt: Option<String>,
}

/// Spans of values that are checked only once data or models are at hand.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    pub data: Option<Range<usize>>,
    pub text_column: Option<Range<usize>>,
    pub label_column: Option<Range<usize>>,
    pub split_column: Option<Range<usize>>,
    pub group_column: Option<Range<usize>>,
    pub split: Option<Range<usize>>,
    pub sha256: Option<Range<usize>>,
    pub backbone: Option<Range<usize>>,
    pub backbone_model: Option<Range<usize>>,
    /// Head keys checked again once the data is known (kind, key, span: the key, or its table when left at
    /// its default), such as `[head.knn] k`.
    pub head_keys: Vec<(&'static str, &'static str, Range<usize>)>,
    /// `[transform.pca_whiten] components` (or the table).
    pub pca_components: Option<Range<usize>>,
}

/// `[tracking]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingPlan {
    /// The MLflow tracking server's URI.
    pub mlflow: String,
    /// The experiment (`None`: the pipeline's name).
    pub experiment: Option<String>,
}

/// One of `[backbones] candidates`, checked.
#[derive(Debug, Clone)]
pub struct BackboneCandidate {
    /// A short name: the model and the settings the candidate sets.
    pub label: String,
    /// The candidate's keys over `[backbone]`'s.
    pub backbone: BackbonePlan,
    /// Its place in the file.
    pub span: Range<usize>,
}

/// A pipeline file, parsed and checked; ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Absolute path of the pipeline file.
    pub file: PathBuf,
    /// Its text, for error messages and the manifest.
    pub source: String,
    /// Pipeline name; names the run folder.
    pub name: String,
    /// Seed for every random choice.
    pub seed: u64,
    /// The data.
    pub data: DataPlan,
    /// How rows are split.
    pub split: SplitPlan,
    /// The frozen backbone (`None` when the data gives features).
    pub backbone: Option<BackbonePlan>,
    /// `[backbones] candidates`: ranked on the validation split before the run, the winner becoming the run's
    /// backbone (empty: `backbone` is the run's).
    pub backbone_candidates: Vec<BackboneCandidate>,
    /// `[tracking]`: an MLflow server the finished run is logged to.
    pub tracking: Option<TrackingPlan>,
    /// Transform fitted on the training rows before the heads.
    pub transform: Option<TransformPlan>,
    /// The heads, in file order; the first is the headline.
    pub heads: Vec<HeadSpec>,
    /// How test scores are qualified (bootstrap intervals, calibration bins).
    pub evaluation: EvaluationPlan,
    /// Hyperparameter search over one head, when `[search]` asks for it.
    pub search: Option<SearchPlan>,
    /// The learning curve, when `[learning_curve]` asks for it.
    pub learning_curve: Option<CurvePlan>,
    /// Transfer-learning technique stages (`[zero_shot]`, `[few_shot]`, …).
    pub techniques: crate::techniques::TechniquesPlan,
    pub spans: Spans,
}

/// The `[learning_curve]` section, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurvePlan {
    /// Training examples per class, ascending (the whole training split is always added).
    pub shots: Vec<usize>,
    /// Seeded draws per K.
    pub repeats: usize,
}

/// How search candidates are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Accuracy on the validation split.
    Validation,
    /// Mean accuracy over stratified folds of the training rows (the transform refitted per fold).
    CrossValidation {
        /// Number of folds.
        folds: usize,
    },
}

/// The `[search]` section, resolved: every candidate already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// Position of the tuned head in `Plan::heads`.
    pub head: usize,
    /// `grid` or `random`.
    pub method: &'static str,
    /// How candidates are compared.
    pub select: Selection,
    /// The settings to try (the head's table with the searched keys replaced), in order.
    pub candidates: Vec<HeadSpec>,
    /// The searched values of each candidate, for reports.
    pub values: Vec<serde_json::Value>,
}

/// The `[evaluation]` section, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluationPlan {
    /// Bootstrap resamples for confidence intervals and paired comparisons (0: none).
    pub bootstrap: usize,
    /// Confidence level.
    pub level: f64,
    /// Reliability-diagram bins.
    pub bins: usize,
    /// Folds of a cross-validation of every head over the training and validation rows (`None`: none).
    pub cv: Option<usize>,
}

impl Default for EvaluationPlan {
    fn default() -> Self {
        EvaluationPlan {
            bootstrap: 1000,
            level: 0.95,
            bins: 10,
            cv: None,
        }
    }
}

impl Plan {
    /// A diagnostic at a span recorded in the plan.
    pub fn diagnostic(
        &self,
        span: &Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::at(&self.file, &self.source, span.clone(), message)
    }

    /// The resolved pipeline, as recorded in the run manifest.
    pub fn resolved(&self) -> ResolvedPipeline {
        let source = match &self.data.source {
            DataSource::Registry(name) | DataSource::ImageRegistry(name) => {
                DataSourceSettings::Dataset(name.clone())
            }
            DataSource::File(path) => DataSourceSettings::Path(path.clone()),
            DataSource::ImageFolder(path) => DataSourceSettings::Images(path.clone()),
            DataSource::Features {
                path,
                labels,
                embedding_column,
            } => DataSourceSettings::Features {
                path: path.clone(),
                labels: labels.clone(),
                embedding_column: embedding_column.clone(),
            },
        };
        let split = match self.split {
            SplitPlan::Stratified(r) => SplitSettings::Stratified {
                train: r.train(),
                validation: r.validation(),
                test: r.test(),
            },
            SplitPlan::Predefined { validation } => SplitSettings::Predefined { validation },
        };
        let serde_json::Value::Object(techniques) = self.techniques.json() else {
            unreachable!("technique settings are a table")
        };
        ResolvedPipeline {
            schema: SCHEMA_VERSION,
            name: self.name.clone(),
            seed: self.seed,
            data: DataSettings {
                source,
                text_column: self.data.text_column.clone(),
                label_column: self.data.label_column.clone(),
                sample: self.data.sample,
                split_column: self.data.split_column.clone(),
                group_column: self.data.group_column.clone(),
                label_separator: self.data.label_separator.clone(),
            },
            split,
            backbone: self.backbone.as_ref().map(BackbonePlan::settings),
            transform: self.transform.as_ref().map(TransformPlan::settings),
            heads: self.heads.iter().map(HeadSpec::settings).collect(),
            search: self.search.as_ref().map(|r| SearchSettings {
                head: self.heads[r.head].name().to_owned(),
                method: r.method.to_owned(),
                select: match r.select {
                    Selection::Validation => SelectSettings::Validation(ValidationWord::Validation),
                    Selection::CrossValidation { folds } => {
                        SelectSettings::CrossValidation { cv: folds }
                    }
                },
                candidates: r.values.clone(),
            }),
            learning_curve: self.learning_curve.as_ref().map(|c| CurveSettings {
                shots: c.shots.clone(),
                repeats: c.repeats,
            }),
            techniques,
            evaluation: EvaluationSettings {
                bootstrap: self.evaluation.bootstrap,
                level: self.evaluation.level,
                bins: self.evaluation.bins,
                cv: self.evaluation.cv,
            },
        }
    }
}

impl BackbonePlan {
    /// The resolved settings, as recorded in the manifest and in saved heads.
    pub fn settings(&self) -> BackboneSettings {
        let image = self.image.as_ref().map(|i| {
            let p = &i.preprocess;
            ImageSettings {
                input: p.input.clone(),
                resize: p.resize,
                image_size: p.crop,
                mean: p.mean,
                std: p.std,
                layout: format!("{:?}", p.layout).to_lowercase(),
                dtype: format!("{:?}", p.dtype).to_lowercase(),
                bgr: p.bgr,
                output: i.output.clone(),
                augment: i.augment.map(|(a, views)| AugmentSettings {
                    horizontal_flip: a.horizontal_flip,
                    crop_scale: a.crop_scale,
                    views,
                }),
            }
        });
        let source = match &self.source {
            ModelSource::Registry(name) => ModelSourceSettings::Registry {
                model: name.clone(),
            },
            ModelSource::Files {
                onnx,
                tokenizer,
                sha256,
            } => ModelSourceSettings::Files {
                onnx: onnx.clone(),
                tokenizer: tokenizer.clone(),
                sha256: sha256.clone(),
            },
        };
        let c = &self.config;
        let (device_id, fallback) = match c.provider {
            Provider::Cuda {
                device_id,
                fallback,
            } => (Some(device_id), Some(fallback)),
            Provider::Cpu => (None, None),
        };
        BackboneSettings {
            source,
            output: c.output.clone(),
            pooling: c.pooling.name().to_owned(),
            normalize: c.normalize,
            max_length: c.max_length,
            long_texts: match c.long_texts {
                LongTexts::Truncate => None,
                LongTexts::Chunks { stride, pooling } => Some(LongTextsSettings {
                    stride,
                    chunk_pooling: pooling.name().to_owned(),
                }),
            },
            batch_size: c.batch_size,
            threads: c.intra_threads,
            sessions: c.sessions,
            cache: self.cache,
            prompt: self.prompt.clone(),
            provider: c.provider.name().to_owned(),
            device_id,
            fallback,
            image,
        }
    }
}

/// A text put through a prompt template (`{text}` replaced by the text).
pub fn apply_prompt(template: &str, text: &str) -> String {
    template.replace("{text}", text)
}

/// A registered image backbone's preprocessing, as the backbone crate takes it.
pub fn image_preprocess(p: &graft_assets::ImagePreprocessEntry) -> ImagePreprocess {
    ImagePreprocess {
        input: p.input.clone(),
        resize: p.resize,
        crop: p.crop,
        mean: p.mean,
        std: p.std,
        layout: if p.layout == "nhwc" {
            Layout::Nhwc
        } else {
            Layout::Nchw
        },
        dtype: if p.dtype == "uint8" {
            PixelType::Uint8
        } else {
            PixelType::Float32
        },
        bgr: p.channels == "bgr",
    }
}

/// A stage's second text backbone with `base`'s batch size, threads, provider, cache and prompt; a
/// registered one brings its own output, pooling, normalisation and length, files take `base`'s.
pub fn other_text_backbone(
    base: &BackbonePlan,
    other: &crate::techniques::OtherBackbone,
) -> BackbonePlan {
    let mut config = base.config.clone();
    let source = match other {
        crate::techniques::OtherBackbone::Registry(name) => {
            apply_registry_defaults(&mut config, &Registry::builtin().models[name]);
            ModelSource::Registry(name.clone())
        }
        crate::techniques::OtherBackbone::Files { onnx, tokenizer } => ModelSource::Files {
            onnx: onnx.clone(),
            tokenizer: tokenizer.clone(),
            sha256: None,
        },
    };
    BackbonePlan {
        source,
        config,
        image: None,
        cache: base.cache,
        prompt: base.prompt.clone(),
    }
}

/// A registered text backbone's extraction settings (output, pooling, normalisation, truncation).
pub fn apply_registry_defaults(config: &mut TextBackboneConfig, entry: &graft_assets::ModelEntry) {
    config.output = Some(entry.output.clone());
    config.pooling = if entry.pooling == "cls" {
        Pooling::Cls
    } else {
        Pooling::Mean
    };
    config.normalize = entry.normalize;
    config.max_length = entry.max_length;
}
