//! From a pipeline file to a checked plan: defaults filled in, paths made absolute, values validated.

use std::ops::Range;
use std::path::{Path, PathBuf};

use graft_assets::Registry;
use graft_backbone::{
    Augmentation, ImagePreprocess, Layout, PixelType, Pooling, Provider, TextBackboneConfig,
};
use graft_heads::{
    Activation, HeadError, Knn, Logistic, Metric, Mlp, Monitor, ParamGuard, Prototype, Schedule,
    Weighting,
};
use graft_ingest::SplitRatios;
use serde_json::json;
use toml::Spanned;

use crate::ConfigError;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::heads::{HeadKind, HeadSpec, Threshold, TransformPlan};
use crate::resolved::{
    AugmentSettings, BackboneSettings, CurveSettings, DataSettings, DataSourceSettings,
    EvaluationSettings, ImageSettings, ModelSourceSettings, ResolvedPipeline, SearchSettings,
    SelectSettings, SplitSettings, ValidationWord,
};
use crate::schema::{
    RawActivation, RawBackbone, RawClassWeight, RawData, RawEvaluation, RawHeads, RawMetric,
    RawMonitor, RawPipeline, RawPooling, RawProvider, RawRange, RawSchedule, RawSearch,
    RawSearchMethod, RawSelect, RawSplit, RawThreshold, RawTransform, RawWeighting, SCHEMA_VERSION,
};
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
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        let file = absolute(path);
        let source = std::fs::read_to_string(&file).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::parse(&file, &source)
    }

    /// Checks pipeline text as if it were the file `file` (relative paths resolve against its folder).
    pub fn parse(file: &Path, source: &str) -> Result<Plan, ConfigError> {
        let raw: RawPipeline = toml::from_str(source).map_err(|e| toml_error(file, source, &e))?;
        Checker { file, source }.check(raw)
    }

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

/// Turns a TOML/serde error into a diagnostic, suggesting the right name for a misspelt key or variant.
fn toml_error(file: &Path, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end().to_owned();
    let mut diagnostic = Diagnostic::at(file, source, e.span(), message.clone());
    // serde phrases these as "unknown field `x`, expected one of `a`, `b`" / "unknown variant `x`, expected `a`".
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if (message.starts_with("unknown field") || message.starts_with("unknown variant"))
        && !quoted.is_empty()
    {
        let hint = match did_you_mean(quoted[0], quoted[1..].iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of: {}", quoted[1..].join(", ")),
        };
        diagnostic = diagnostic.with_hint(hint);
    } else if message.starts_with("missing field") && !quoted.is_empty() {
        diagnostic = diagnostic.with_hint(format!(
            "add `{}`; see pipelines/quickstart.toml for a complete example",
            quoted[0]
        ));
    }
    ConfigError::Invalid(diagnostic)
}

struct Checker<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, self.source, Some(span), message)
    }

    /// A name missing from the registry: suggest the closest one and list them all.
    fn unknown(
        &self,
        name: &Spanned<String>,
        what: &str,
        plural: &str,
        known: &[&str],
    ) -> Diagnostic {
        let list = format!("registered {plural}: {}", known.join(", "));
        let hint = match did_you_mean(name.get_ref(), known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? {list}"),
            None => list,
        };
        self.error(name.span(), format!("unknown {what} `{}`", name.get_ref()))
            .with_hint(hint)
    }

    /// Resolves a path key against the pipeline's folder; a diagnostic at the key when no such file exists.
    fn existing_file(&self, path: &Spanned<String>, what: &str) -> Result<PathBuf, Diagnostic> {
        let resolved = self.resolve(path.get_ref());
        if resolved.is_file() {
            return Ok(resolved);
        }
        Err(self
            .error(
                path.span(),
                format!("{what} not found: {}", resolved.display()),
            )
            .with_hint("relative paths are resolved from the folder of the pipeline file"))
    }

    fn resolve(&self, path: &str) -> PathBuf {
        absolute(&self.file.parent().unwrap_or(Path::new(".")).join(path))
    }

    fn check(&self, raw: RawPipeline) -> Result<Plan, ConfigError> {
        self.check_raw(raw).map_err(ConfigError::Invalid)
    }

    fn check_raw(&self, raw: RawPipeline) -> Result<Plan, Diagnostic> {
        if *raw.schema.get_ref() != SCHEMA_VERSION {
            return Err(self
                .error(
                    raw.schema.span(),
                    format!("unsupported schema version {}", raw.schema.get_ref()),
                )
                .with_hint(format!(
                    "this build of graft reads `schema = {SCHEMA_VERSION}`"
                )));
        }
        let name = raw.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            return Err(self
                .error(raw.name.span(), format!("invalid pipeline name `{name}`"))
                .with_hint(
                    "use letters, digits, `-`, `_` and `.`; the name becomes a folder under runs/",
                ));
        }
        let mut spans = Spans {
            data: Some(raw.data.span()),
            backbone: raw.backbone.as_ref().map(Spanned::span),
            ..Spans::default()
        };
        let data = self.check_data(raw.data, &mut spans)?;
        let split = match raw.split {
            RawSplit::Stratified(s) => {
                spans.split = Some(s.span());
                let r = s.get_ref();
                let ratios = SplitRatios::new(r.train, r.validation, r.test).map_err(|e| {
                    self.error(s.span(), e.to_string())
                        .with_hint("for example train = 0.8, validation = 0.1, test = 0.1")
                })?;
                if ratios.test() == 0.0 {
                    return Err(self
                        .error(s.span(), "test = 0 leaves nothing to evaluate on")
                        .with_hint("give the test split a share, e.g. test = 0.1"));
                }
                if let Some(span) = &spans.split_column {
                    return Err(self
                        .error(span.clone(), "`split_column` assigns rows to splits, but the split is `[split.stratified]`")
                        .with_hint("use `[split.predefined]` to keep the column's train/validation/test, or remove `split_column`"));
                }
                SplitPlan::Stratified(ratios)
            }
            RawSplit::Predefined(s) => {
                spans.split = Some(s.span());
                if !matches!(data.source, DataSource::ImageRegistry(_))
                    && data.split_column.is_none()
                {
                    return Err(self
                        .error(s.span(), "`[split.predefined]` needs a data set with an official split or a split column")
                        .with_hint("registered image data sets (e.g. fashion-mnist) have one; for your own table name the column with `split_column = \"split\"` in `[data]` (values train, validation, test), or use `[split.stratified]`"));
                }
                let validation = s.get_ref().validation.unwrap_or(0.0);
                if !(0.0..1.0).contains(&validation) {
                    return Err(self
                        .error(
                            s.span(),
                            format!("validation = {validation} must be in [0, 1)"),
                        )
                        .with_hint(
                            "it is the share of the official training rows held out, e.g. 0.1",
                        ));
                }
                SplitPlan::Predefined { validation }
            }
        };
        let given_features = matches!(data.source, DataSource::Features { .. });
        let backbone = match (raw.backbone, given_features) {
            (Some(b), true) => {
                return Err(self
                    .error(b.span(), "`[backbone]` does not apply: `[data] features` gives the features")
                    .with_hint("remove `[backbone]` to train on the given features, or `features` to extract them with the backbone"));
            }
            (None, true) => None,
            (None, false) => {
                return Err(self
                    .error(0..0, "the pipeline has no `[backbone]`")
                    .with_hint("add `[backbone]` with `model = \"minilm-l6-int8\"` (or another registered backbone), or give features computed elsewhere with `[data] features = \"x.parquet\"`"));
            }
            (Some(b), false) => Some(self.check_backbone(b, &mut spans)?),
        };
        if let Some(backbone) = &backbone
            && backbone.image.is_some() != data.source.is_images()
        {
            let (model, rows) = if backbone.image.is_some() {
                ("an image backbone", "texts")
            } else {
                ("a text backbone", "images")
            };
            return Err(self
                .error(
                    spans
                        .backbone_model
                        .clone()
                        .or(spans.backbone.clone())
                        .expect("backbone span"),
                    format!("{model} cannot embed {rows}"),
                )
                .with_hint(format!(
                    "pick a backbone for the data's modality; registered backbones: {}",
                    Registry::builtin().model_names().join(", ")
                )));
        }
        let seed = raw.seed.unwrap_or(42);
        let heads = self.check_heads(raw.head, seed, data.label_separator.is_some())?;
        let transform = raw.transform.map(|t| self.check_transform(t)).transpose()?;
        let evaluation = match raw.evaluation {
            None => EvaluationPlan::default(),
            Some(e) => self.check_evaluation(e.into_inner())?,
        };
        let search = match raw.search {
            None => None,
            Some(r) => {
                if data.label_separator.is_some() {
                    return Err(self
                        .error(r.span(), "`[search]` applies to single-label data")
                        .with_hint(
                            "multi-label heads are not searched yet; set their keys in `[head.*]`",
                        ));
                }
                Some(self.check_search(r, &heads, seed)?)
            }
        };
        let learning_curve = match raw.learning_curve {
            None => None,
            Some(c) => {
                let span = c.span();
                if data.label_separator.is_some() {
                    return Err(self
                        .error(span, "`[learning_curve]` applies to single-label data")
                        .with_hint("remove it, or drop `label_separator`"));
                }
                if matches!(data.source, DataSource::Features { .. }) {
                    return Err(self
                        .error(span, "`[learning_curve]` needs the raw texts or images, for the from-scratch baseline")
                        .with_hint("given features have no raw inputs to train a baseline on; remove `[learning_curve]`"));
                }
                let c = c.into_inner();
                let mut shots = c
                    .shots
                    .as_ref()
                    .map_or_else(|| vec![1, 2, 4, 8, 16, 32, 64], |s| s.get_ref().clone());
                if let Some(s) = &c.shots
                    && (s.get_ref().is_empty() || s.get_ref().contains(&0))
                {
                    return Err(self
                        .error(s.span(), "`shots` must list positive numbers of examples per class")
                        .with_hint("e.g. `shots = [1, 2, 4, 8, 16, 32]`; the whole training split is always added"));
                }
                shots.sort_unstable();
                shots.dedup();
                let repeats = c.repeats.as_ref().map_or(5, |r| *r.get_ref());
                if repeats == 0 {
                    return Err(self
                        .error(
                            c.repeats.as_ref().map_or(span, Spanned::span),
                            "`repeats` must be at least 1",
                        )
                        .with_hint("5 seeded draws per point give a usable interval"));
                }
                Some(CurvePlan { shots, repeats })
            }
        };
        let techniques = crate::techniques::check(
            &crate::techniques::Check {
                file: self.file,
                source: self.source,
            },
            crate::techniques::RawTechniques {
                zero_shot: raw.zero_shot,
                few_shot: raw.few_shot,
                self_training: raw.self_training,
                continual: raw.continual,
                domain_adaptation: raw.domain_adaptation,
                multitask: raw.multitask,
                distillation: raw.distillation,
                fusion: raw.fusion,
                augmentation: raw.augmentation,
                prompt_templates: raw.prompt_templates,
            },
            crate::techniques::Modality {
                texts: backbone.as_ref().is_some_and(|b| b.image.is_none()),
                images: data.source.is_images(),
                multi_label: data.label_separator.is_some(),
                image_views: backbone
                    .as_ref()
                    .and_then(|b| b.image.as_ref())
                    .is_some_and(|i| i.augment.is_some()),
                prompted: backbone.as_ref().is_some_and(|b| b.prompt.is_some()),
                heads: heads.len(),
            },
        )?;
        if let Some(span) = techniques
            .zero_shot()
            .and_then(|z| z.initialise_prototype.clone())
        {
            let cosine_prototype = heads.iter().any(|h| {
                matches!(&h.kind, HeadKind::Prototype(p) if p.metric() == graft_heads::Metric::Cosine)
            });
            if !cosine_prototype {
                return Err(self
                    .error(
                        span,
                        "`initialise_prototype` needs a cosine `[head.prototype]`",
                    )
                    .with_hint("add `[head.prototype]` (metric = \"cosine\", the default)"));
            }
            if transform.is_some() {
                return Err(self
                    .error(span, "`initialise_prototype` mixes class descriptions into prototypes of transformed features")
                    .with_hint("the descriptions are embedded as the backbone gives them; remove `[transform.*]` or this key"));
            }
        }
        Ok(Plan {
            file: self.file.to_path_buf(),
            source: self.source.to_owned(),
            name: name.clone(),
            seed,
            data,
            split,
            backbone,
            transform,
            heads,
            evaluation,
            search,
            learning_curve,
            techniques,
            spans,
        })
    }

    /// Checks every `[head.*]` table; an invalid hyperparameter points at its own line. Heads that draw random
    /// numbers (the MLP) are seeded with the pipeline's seed.
    /// A head's task: single-label unless the data is multi-label, where `threshold` (a probability or
    /// "tune") applies and temperature scaling does not.
    fn head_task(
        &self,
        multi_label: bool,
        threshold: Option<Spanned<RawThreshold>>,
        calibrate: Option<bool>,
        table: Range<usize>,
    ) -> Result<Option<Threshold>, Diagnostic> {
        if !multi_label {
            return match threshold {
                Some(t) => Err(self
                    .error(t.span(), "`threshold` applies to multi-label data")
                    .with_hint("set `label_separator` in `[data]` when a row can carry several labels; single-label heads predict the most probable class")),
                None => Ok(None),
            };
        }
        if calibrate == Some(true) {
            return Err(self
                .error(table, "`calibrate` applies to single-label heads")
                .with_hint("temperature scaling calibrates a softmax; multi-label heads have one sigmoid per label — tune their decision with `threshold = \"tune\"`"));
        }
        Ok(Some(
            match threshold.as_ref().map(|t| (t.span(), t.get_ref())) {
                None => Threshold::Fixed(0.5),
                Some((_, RawThreshold::Name(n))) if n == "tune" => Threshold::Tuned,
                Some((span, RawThreshold::Value(v))) => {
                    if !(*v > 0.0 && *v < 1.0) {
                        return Err(self
                        .error(span, format!("`threshold = {v}` must be between 0 and 1"))
                        .with_hint("a label is predicted when its probability reaches the threshold, e.g. 0.5"));
                    }
                    Threshold::Fixed(*v as f32)
                }
                Some((span, RawThreshold::Name(n))) => {
                    return Err(self
                    .error(span, format!("`threshold = \"{n}\"` is not a probability or \"tune\""))
                    .with_hint("`threshold = 0.5` or `threshold = \"tune\"` (per label, maximising F1 on the validation rows)"));
                }
            },
        ))
    }

    fn check_heads(
        &self,
        raw: Spanned<RawHeads>,
        seed: u64,
        multi_label: bool,
    ) -> Result<Vec<HeadSpec>, Diagnostic> {
        let section = raw.span();
        let raw = raw.into_inner();
        // (position in the file, head)
        let mut heads: Vec<(usize, HeadSpec)> = Vec::new();
        let located =
            |e: HeadError, spans: &[(&str, Option<Range<usize>>)], table: Range<usize>| {
                let span = match &e {
                    HeadError::InvalidParameter { name, .. } => spans
                        .iter()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, s)| s.clone()),
                    _ => None,
                };
                self.error(span.unwrap_or(table), e.to_string())
            };
        let sp = |v: &Option<Spanned<f64>>| v.as_ref().map(Spanned::span);
        let su = |v: &Option<Spanned<usize>>| v.as_ref().map(Spanned::span);
        let metric = |m: Option<RawMetric>| match m {
            None | Some(RawMetric::Cosine) => Metric::Cosine,
            Some(RawMetric::Euclidean) => Metric::Euclidean,
        };
        if let Some(h) = raw.logistic {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Logistic::params();
            if let Some(c) = &r.c {
                params = params.c(*c.get_ref());
            }
            if let Some(m) = &r.max_iter {
                params = params.max_iter(*m.get_ref());
            }
            if let Some(t) = &r.tol {
                params = params.tol(*t.get_ref());
            }
            if let Some(f) = r.fit_intercept {
                params = params.fit_intercept(f);
            }
            params = params.balanced(matches!(r.class_weight, Some(RawClassWeight::Balanced)));
            let checked = params.check().map_err(|e| {
                located(
                    e,
                    &[
                        ("c", sp(&r.c)),
                        ("max_iter", su(&r.max_iter)),
                        ("tol", sp(&r.tol)),
                    ],
                    table.clone(),
                )
            })?;
            let multi_label =
                self.head_task(multi_label, r.threshold, r.calibrate, table.clone())?;
            if multi_label.is_some() && checked.balanced() {
                return Err(self
                    .error(
                        table,
                        "`class_weight = \"balanced\"` applies to single-label heads",
                    )
                    .with_hint(
                        "balanced weights are defined for one class per row; remove `class_weight`",
                    ));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Logistic(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label,
                },
            ));
        }
        if let Some(h) = raw.mlp {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Mlp::params().seed(seed);
            if let Some(v) = &r.hidden {
                params = params.hidden(v.get_ref());
            }
            if let Some(a) = r.activation {
                params = params.activation(match a {
                    RawActivation::Relu => Activation::Relu,
                    RawActivation::Gelu => Activation::Gelu,
                });
            }
            if let Some(v) = &r.dropout {
                params = params.dropout(*v.get_ref());
            }
            if let Some(v) = &r.learning_rate {
                params = params.learning_rate(*v.get_ref());
            }
            if let Some(v) = &r.weight_decay {
                params = params.weight_decay(*v.get_ref());
            }
            if let Some(v) = &r.batch_size {
                params = params.batch_size(*v.get_ref());
            }
            if let Some(v) = &r.max_epochs {
                params = params.max_epochs(*v.get_ref());
            }
            if let Some(v) = &r.patience {
                params = params.patience((*v.get_ref() > 0).then_some(*v.get_ref()));
            }
            if let Some(m) = r.monitor {
                params = params.monitor(match m {
                    RawMonitor::Loss => Monitor::Loss,
                    RawMonitor::Accuracy => Monitor::Accuracy,
                });
            }
            if let Some(b) = r.restore_best {
                params = params.restore_best(b);
            }
            let schedule_keys = [
                (
                    "warmup_epochs",
                    r.warmup_epochs.as_ref().map(Spanned::span),
                    "cosine",
                ),
                (
                    "step_epochs",
                    r.step_epochs.as_ref().map(Spanned::span),
                    "step",
                ),
                ("gamma", r.gamma.as_ref().map(Spanned::span), "step"),
            ];
            let schedule = r.schedule.unwrap_or(RawSchedule::Constant);
            let schedule_name = match schedule {
                RawSchedule::Constant => "constant",
                RawSchedule::Cosine => "cosine",
                RawSchedule::Step => "step",
            };
            for (key, span, needs) in &schedule_keys {
                if let Some(span) = span
                    && *needs != schedule_name
                {
                    return Err(self
                        .error(span.clone(), format!("`{key}` applies to `schedule = \"{needs}\"`"))
                        .with_hint(format!("this head's schedule is \"{schedule_name}\"; set `schedule = \"{needs}\"` or remove `{key}`")));
                }
            }
            params = params.schedule(match schedule {
                RawSchedule::Constant => Schedule::Constant,
                RawSchedule::Cosine => Schedule::Cosine {
                    warmup_epochs: r.warmup_epochs.as_ref().map_or(0, |v| *v.get_ref()),
                },
                RawSchedule::Step => Schedule::Step {
                    step_epochs: r.step_epochs.as_ref().map_or(10, |v| *v.get_ref()),
                    gamma: r.gamma.as_ref().map_or(0.1, |v| *v.get_ref()),
                },
            });
            let checked = params.check().map_err(|e| {
                located(
                    e,
                    &[
                        ("hidden", r.hidden.as_ref().map(Spanned::span)),
                        ("dropout", sp(&r.dropout)),
                        ("learning_rate", sp(&r.learning_rate)),
                        ("weight_decay", sp(&r.weight_decay)),
                        ("batch_size", su(&r.batch_size)),
                        ("max_epochs", su(&r.max_epochs)),
                        ("patience", su(&r.patience)),
                        ("warmup_epochs", su(&r.warmup_epochs)),
                        ("step_epochs", su(&r.step_epochs)),
                        ("gamma", sp(&r.gamma)),
                    ],
                    table.clone(),
                )
            })?;
            let multi_label =
                self.head_task(multi_label, r.threshold, r.calibrate, table.clone())?;
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Mlp(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label,
                },
            ));
        }
        if let Some(h) = raw.prototype {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Prototype::params().metric(metric(r.metric));
            if let Some(t) = &r.temperature {
                params = params.temperature(*t.get_ref());
            }
            let checked = params
                .check()
                .map_err(|e| located(e, &[("temperature", sp(&r.temperature))], table.clone()))?;
            if multi_label {
                return Err(self
                    .error(table, "`[head.prototype]` is single-label, and the data is multi-label (`label_separator`)")
                    .with_hint("multi-label data trains `[head.logistic]` and `[head.mlp]` (one sigmoid per label)"));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Prototype(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label: None,
                },
            ));
        }
        if let Some(h) = raw.knn {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Knn::params().metric(metric(r.metric));
            if let Some(k) = &r.k {
                params = params.k(*k.get_ref());
            }
            if let Some(w) = r.weighting {
                params = params.weighting(match w {
                    RawWeighting::Uniform => Weighting::Uniform,
                    RawWeighting::Distance => Weighting::Distance,
                });
            }
            let checked = params
                .check()
                .map_err(|e| located(e, &[("k", su(&r.k))], table.clone()))?;
            if multi_label {
                return Err(self
                    .error(table, "`[head.knn]` is single-label, and the data is multi-label (`label_separator`)")
                    .with_hint("multi-label data trains `[head.logistic]` and `[head.mlp]` (one sigmoid per label)"));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Knn(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label: None,
                },
            ));
        }
        if heads.is_empty() {
            return Err(self
                .error(section, "`[head]` names no head")
                .with_hint("add at least one of `[head.logistic]`, `[head.mlp]`, `[head.prototype]`, `[head.knn]`"));
        }
        heads.sort_by_key(|(at, _)| *at);
        Ok(heads.into_iter().map(|(_, h)| h).collect())
    }

    fn check_search(
        &self,
        raw: Spanned<RawSearch>,
        heads: &[HeadSpec],
        seed: u64,
    ) -> Result<SearchPlan, Diagnostic> {
        use rand::{Rng, SeedableRng};
        let section = raw.span();
        let r = raw.into_inner();
        let method = r.method.unwrap_or(RawSearchMethod::Grid);
        let select = match (r.select.unwrap_or(RawSelect::Validation), &r.folds) {
            (RawSelect::Validation, Some(f)) => {
                return Err(self
                    .error(f.span(), "`folds` applies to `select = \"cv\"`")
                    .with_hint(
                        "remove `folds`, or select by cross-validation with `select = \"cv\"`",
                    ));
            }
            (RawSelect::Validation, None) => Selection::Validation,
            (RawSelect::Cv, folds) => {
                let k = folds.as_ref().map_or(5, |f| *f.get_ref());
                if k < 2 {
                    return Err(self
                        .error(
                            folds.as_ref().map_or(section.clone(), Spanned::span),
                            "`folds` must be at least 2",
                        )
                        .with_hint("5 folds is the usual choice"));
                }
                Selection::CrossValidation { folds: k }
            }
        };
        let (name, space_span) = match (&r.logistic, &r.mlp) {
            (Some(l), None) => ("logistic", l.span()),
            (None, Some(m)) => ("mlp", m.span()),
            (Some(_), Some(m)) => {
                return Err(self
                    .error(m.span(), "`[search]` tunes one head at a time")
                    .with_hint("keep one of `[search.logistic]` and `[search.mlp]`"));
            }
            (None, None) => {
                return Err(self
                    .error(section, "`[search]` names no head to tune")
                    .with_hint(
                        "add `[search.logistic]` (e.g. `c = [0.01, 0.1, 1, 10]`) or `[search.mlp]`",
                    ));
            }
        };
        let head = heads.iter().position(|h| h.name() == name).ok_or_else(|| {
            self.error(
                space_span.clone(),
                format!("`[search.{name}]` tunes a head the pipeline does not train"),
            )
            .with_hint(format!(
                "add `[head.{name}]`; its keys are the starting point of the search"
            ))
        })?;
        // (key, span, values or range)
        let mut dims: Vec<(&'static str, Range<usize>, RawRange)> = Vec::new();
        let mut hidden: Option<(Range<usize>, Vec<Vec<usize>>)> = None;
        if let Some(c) = r.logistic.and_then(|l| l.into_inner().c) {
            dims.push(("c", c.span(), c.into_inner()));
        }
        if let Some(m) = r.mlp {
            let m = m.into_inner();
            for (key, v) in [
                ("learning_rate", m.learning_rate),
                ("weight_decay", m.weight_decay),
                ("dropout", m.dropout),
            ] {
                if let Some(v) = v {
                    dims.push((key, v.span(), v.into_inner()));
                }
            }
            hidden = m.hidden.map(|h| (h.span(), h.into_inner()));
        }
        if dims.is_empty() && hidden.is_none() {
            return Err(self
                .error(
                    space_span,
                    format!("`[search.{name}]` lists no parameter to search"),
                )
                .with_hint("give each searched key a list of values, e.g. `c = [0.01, 0.1, 1]`"));
        }
        for (key, span, range) in &dims {
            match range {
                RawRange::Values(v) if v.is_empty() => {
                    return Err(self.error(span.clone(), format!("`{key}` lists no values")));
                }
                RawRange::Range(b) => {
                    if method == RawSearchMethod::Grid {
                        return Err(self
                            .error(span.clone(), format!("`{key}` is a range, and a grid needs values"))
                            .with_hint("list the values (`[0.01, 0.1, 1]`), or set `method = \"random\"` to draw from the range"));
                    }
                    let ok = match (b.uniform, b.log_uniform) {
                        (Some([lo, hi]), None) => lo.is_finite() && hi.is_finite() && lo < hi,
                        (None, Some([lo, hi])) => lo > 0.0 && hi.is_finite() && lo < hi,
                        _ => false,
                    };
                    if !ok {
                        return Err(self
                            .error(span.clone(), format!("`{key}` needs one range: `{{ uniform = [lo, hi] }}` or `{{ log_uniform = [lo, hi] }}` with lo < hi (and lo > 0 for log_uniform)"))
                            .with_hint("or list the values to try"));
                    }
                }
                RawRange::Values(_) => {}
            }
        }
        // Each candidate: one value per searched key (and a hidden-layer list for the MLP).
        type Point = (Vec<f64>, Option<Vec<usize>>);
        let points: Vec<Point> = match method {
            RawSearchMethod::Grid => {
                let mut points: Vec<Point> = vec![(Vec::new(), None)];
                for (_, _, range) in &dims {
                    let RawRange::Values(values) = range else {
                        unreachable!("checked above")
                    };
                    points = points
                        .into_iter()
                        .flat_map(|(p, h)| {
                            values.iter().map(move |v| {
                                let mut p = p.clone();
                                p.push(*v);
                                (p, h.clone())
                            })
                        })
                        .collect();
                }
                if let Some((_, layers)) = &hidden {
                    points = points
                        .into_iter()
                        .flat_map(|(p, _)| layers.iter().map(move |l| (p.clone(), Some(l.clone()))))
                        .collect();
                }
                points
            }
            RawSearchMethod::Random => {
                let trials = r.trials.as_ref().map_or(20, |t| *t.get_ref());
                if trials == 0 {
                    return Err(self.error(
                        r.trials.as_ref().map_or(section.clone(), Spanned::span),
                        "`trials` must be at least 1",
                    ));
                }
                let mut rng =
                    rand_chacha::ChaCha8Rng::seed_from_u64(graft_stdx::derive_seed(seed, "search"));
                (0..trials)
                    .map(|_| {
                        let p = dims
                            .iter()
                            .map(|(_, _, range)| match range {
                                RawRange::Values(v) => v[rng.random_range(0..v.len())],
                                RawRange::Range(b) => match (b.uniform, b.log_uniform) {
                                    (Some([lo, hi]), _) => rng.random_range(lo..hi),
                                    (_, Some([lo, hi])) => rng.random_range(lo.ln()..hi.ln()).exp(),
                                    _ => unreachable!("checked above"),
                                },
                            })
                            .collect();
                        let h = hidden
                            .as_ref()
                            .map(|(_, l)| l[rng.random_range(0..l.len())].clone());
                        (p, h)
                    })
                    .collect()
            }
        };
        if method == RawSearchMethod::Grid
            && let Some(t) = &r.trials
        {
            return Err(self
                .error(t.span(), "`trials` applies to `method = \"random\"`")
                .with_hint("a grid tries every combination of the listed values"));
        }
        let base = &heads[head];
        let mut candidates = Vec::with_capacity(points.len());
        let mut values = Vec::with_capacity(points.len());
        for (point, layers) in points {
            let mut v = serde_json::Map::new();
            let kind = match &base.kind {
                HeadKind::Logistic(p) => {
                    let mut params = Logistic::params()
                        .c(p.c())
                        .max_iter(p.max_iter())
                        .tol(p.tol())
                        .fit_intercept(p.fit_intercept())
                        .balanced(p.balanced());
                    for ((key, _, _), x) in dims.iter().zip(&point) {
                        if *key == "c" {
                            params = params.c(*x);
                        }
                        v.insert((*key).to_owned(), json!(x));
                    }
                    HeadKind::Logistic(
                        params
                            .check()
                            .map_err(|e| self.error(dims[0].1.clone(), e.to_string()))?,
                    )
                }
                HeadKind::Mlp(p) => {
                    let mut params = Mlp::params()
                        .hidden(p.hidden())
                        .activation(p.activation())
                        .dropout(p.dropout())
                        .learning_rate(p.learning_rate())
                        .weight_decay(p.weight_decay())
                        .batch_size(p.batch_size())
                        .max_epochs(p.max_epochs())
                        .schedule(p.schedule())
                        .patience(p.patience())
                        .monitor(p.monitor())
                        .restore_best(p.restore_best())
                        .seed(p.seed());
                    for ((key, _, _), x) in dims.iter().zip(&point) {
                        params = match *key {
                            "learning_rate" => params.learning_rate(*x),
                            "weight_decay" => params.weight_decay(*x),
                            _ => params.dropout(*x),
                        };
                        v.insert((*key).to_owned(), json!(x));
                    }
                    if let Some(l) = &layers {
                        params = params.hidden(l);
                        v.insert("hidden".to_owned(), json!(l));
                    }
                    let at = |name: &str| {
                        dims.iter()
                            .find(|(k, _, _)| *k == name)
                            .map(|(_, s, _)| s.clone())
                            .or(hidden.as_ref().map(|(s, _)| s.clone()))
                            .unwrap_or(space_span.clone())
                    };
                    HeadKind::Mlp(params.check().map_err(|e| {
                        let span = match &e {
                            HeadError::InvalidParameter { name, .. } => at(name),
                            _ => space_span.clone(),
                        };
                        self.error(span, e.to_string())
                    })?)
                }
                _ => unreachable!("only logistic and MLP heads are searched"),
            };
            candidates.push(HeadSpec {
                kind,
                calibrate: base.calibrate,
                multi_label: None,
            });
            values.push(serde_json::Value::Object(v));
        }
        Ok(SearchPlan {
            head,
            method: match method {
                RawSearchMethod::Grid => "grid",
                RawSearchMethod::Random => "random",
            },
            select,
            candidates,
            values,
        })
    }

    fn check_evaluation(&self, raw: RawEvaluation) -> Result<EvaluationPlan, Diagnostic> {
        let mut plan = EvaluationPlan::default();
        if let Some(b) = &raw.bootstrap {
            if *b.get_ref() == 1 {
                return Err(self
                    .error(b.span(), "`bootstrap = 1` cannot make an interval")
                    .with_hint("use 1000 or more resamples (or 0 to turn intervals off)"));
            }
            plan.bootstrap = *b.get_ref();
        }
        if let Some(l) = &raw.level {
            let v = *l.get_ref();
            if !(v > 0.0 && v < 1.0) {
                return Err(self
                    .error(l.span(), format!("`level = {v}` must be between 0 and 1"))
                    .with_hint("e.g. 0.95 for 95% intervals"));
            }
            plan.level = v;
        }
        if let Some(b) = &raw.bins {
            if *b.get_ref() == 0 {
                return Err(self
                    .error(b.span(), "`bins` must be at least 1")
                    .with_hint("10 equal-width confidence bins is the usual choice"));
            }
            plan.bins = *b.get_ref();
        }
        if let Some(c) = &raw.cv {
            if *c.get_ref() < 2 {
                return Err(self
                    .error(c.span(), "`cv` must be at least 2 folds")
                    .with_hint(
                        "5 folds is the usual choice; leave `cv` out to skip cross-validation",
                    ));
            }
            plan.cv = Some(*c.get_ref());
        }
        Ok(plan)
    }

    fn check_transform(&self, raw: RawTransform) -> Result<TransformPlan, Diagnostic> {
        Ok(match raw {
            RawTransform::Standardize(_) => TransformPlan::Standardize,
            RawTransform::PcaWhiten(t) => {
                let r = t.get_ref();
                if let Some(c) = &r.components
                    && *c.get_ref() == 0
                {
                    return Err(self.error(c.span(), "`components` must be at least 1"));
                }
                let epsilon = r.epsilon.as_ref().map_or(Ok(1e-5), |e| {
                    let v = *e.get_ref();
                    if v.is_finite() && v >= 0.0 {
                        Ok(v)
                    } else {
                        Err(self.error(e.span(), "`epsilon` must be a finite number of at least 0"))
                    }
                })?;
                TransformPlan::PcaWhiten {
                    components: r.components.as_ref().map(|c| *c.get_ref()),
                    epsilon,
                }
            }
        })
    }

    fn check_data(
        &self,
        data: Spanned<RawData>,
        spans: &mut Spans,
    ) -> Result<DataPlan, Diagnostic> {
        let section = data.span();
        let data = data.into_inner();
        spans.text_column = data.text_column.as_ref().map(Spanned::span);
        spans.label_column = data.label_column.as_ref().map(Spanned::span);
        let registry = Registry::builtin();
        spans.split_column = data.split_column.as_ref().map(Spanned::span);
        spans.group_column = data.group_column.as_ref().map(Spanned::span);
        if let Some(c) = &data.group_column
            && (data.dataset.is_some() || data.images.is_some())
        {
            return Err(self
                .error(
                    c.span(),
                    "`group_column` applies to your own table or features",
                )
                .with_hint("registered data sets and image folders have no group column"));
        }
        let given: Vec<&Spanned<String>> =
            [&data.dataset, &data.path, &data.images, &data.features]
                .into_iter()
                .flatten()
                .collect();
        if given.len() > 1 {
            return Err(self
                .error(given[1].span(), "`[data]` gives more than one of `dataset`, `path`, `images` and `features`")
                .with_hint("keep one: `dataset` names a registered data set, `path` a table of your own, `images` a folder of class sub-folders, `features` embeddings computed elsewhere"));
        }
        if data.features.is_none()
            && let Some(key) = data.labels.as_ref().or(data.embedding_column.as_ref())
        {
            return Err(self
                    .error(key.span(), "this key applies to `features` only")
                    .with_hint("`labels` and `embedding_column` describe a features file given with `features = \"x.parquet\"`"));
        }
        if let Some(c) = &data.split_column
            && (data.dataset.is_some() || data.images.is_some())
        {
            return Err(self
                .error(c.span(), "`split_column` applies to your own table or features")
                .with_hint("registered data sets and image folders have no split column; use `[split.predefined]` for a registered data set's official split"));
        }
        let (source, default_columns) = match (&data.dataset, &data.path, &data.images) {
            (None, None, None) if data.features.is_some() => {
                let features = data.features.as_ref().expect("checked");
                let resolved = self.existing_file(features, "features file")?;
                let ext = resolved
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if !["parquet", "pq", "npy"].contains(&ext.as_str()) {
                    return Err(self
                        .error(features.span(), format!("cannot read features from {}", resolved.display()))
                        .with_hint("give a .parquet table with one list column of numbers per row (`embedding_column`, default \"embedding\"), or a .npy float matrix with `labels = \"labels.csv\"`"));
                }
                if let Some(t) = &data.text_column {
                    return Err(self
                        .error(t.span(), "features need no text column")
                        .with_hint("remove `text_column`; the rows are already feature vectors"));
                }
                let labels = match &data.labels {
                    Some(l) => Some(self.existing_file(l, "labels file")?),
                    None if ext == "npy" => {
                        return Err(self
                            .error(features.span(), "a .npy file holds only the feature matrix; the labels must come from elsewhere")
                            .with_hint("add `labels = \"labels.csv\"`: a table with the label column (and split column), one row per matrix row, in the same order"));
                    }
                    None => None,
                };
                (
                    DataSource::Features {
                        path: resolved,
                        labels,
                        embedding_column: data
                            .embedding_column
                            .as_ref()
                            .map_or_else(|| "embedding".to_owned(), |c| c.get_ref().clone()),
                    },
                    Some((String::new(), "label".to_owned())),
                )
            }
            (None, None, None) => {
                return Err(self
                    .error(section, "`[data]` needs `dataset`, `path`, `images` or `features`")
                    .with_hint(format!(
                        "`dataset = \"mr\"` uses a registered data set ({}); `path = \"my.csv\"` reads your own CSV/Parquet file; `images = \"photos/\"` a folder of class sub-folders; `features = \"x.parquet\"` embeddings computed elsewhere",
                        registry.dataset_names().join(", ")
                    )));
            }
            (Some(name), _, _) => {
                if registry.image_datasets.contains_key(name.get_ref()) {
                    (
                        DataSource::ImageRegistry(name.get_ref().clone()),
                        Some((String::new(), String::new())),
                    )
                } else {
                    let entry = registry.datasets.get(name.get_ref()).ok_or_else(|| {
                        self.unknown(name, "data set", "data sets", &registry.dataset_names())
                    })?;
                    (
                        DataSource::Registry(name.get_ref().clone()),
                        Some((entry.text_column.clone(), entry.label_column.clone())),
                    )
                }
            }
            (None, Some(path), _) => {
                let resolved = self.existing_file(path, "data file")?;
                (DataSource::File(resolved), None)
            }
            (None, None, Some(folder)) => {
                let resolved = self.resolve(folder.get_ref());
                if !resolved.is_dir() {
                    return Err(self
                        .error(
                            folder.span(),
                            format!("image folder not found: {}", resolved.display()),
                        )
                        .with_hint(
                            "relative paths are resolved from the folder of the pipeline file",
                        ));
                }
                (
                    DataSource::ImageFolder(resolved),
                    Some((String::new(), String::new())),
                )
            }
        };
        if source.is_images()
            && let Some(c) = data.text_column.as_ref().or(data.label_column.as_ref())
        {
            return Err(self
                .error(c.span(), "image data has no columns to name")
                .with_hint("labels come from the data set or from the class sub-folder names"));
        }
        let column = |value: Option<Spanned<String>>, key: &str, default: Option<String>| {
            value.map(Spanned::into_inner).or(default).ok_or_else(|| {
                self.error(section.clone(), format!("`[data]` needs `{key}`"))
                    .with_hint(format!(
                        "name the column of your file that holds the {}",
                        key.trim_end_matches("_column")
                    ))
            })
        };
        let (text_default, label_default) = default_columns.unzip();
        let text_column = column(data.text_column, "text_column", text_default)?;
        let label_column = column(data.label_column, "label_column", label_default)?;
        let split_column = data.split_column.map(Spanned::into_inner);
        let label_separator = match data.label_separator {
            Some(sep) if sep.get_ref().is_empty() => {
                return Err(self
                    .error(sep.span(), "`label_separator` is empty")
                    .with_hint("give the character that joins a row's labels, e.g. \"|\""));
            }
            Some(sep) if source.is_images() => {
                return Err(self
                    .error(
                        sep.span(),
                        "image folders and registered image data sets are single-label",
                    )
                    .with_hint("remove `label_separator`"));
            }
            other => other.map(Spanned::into_inner),
        };
        let sample = match data.sample {
            Some(s) if *s.get_ref() < 2 => {
                return Err(self
                    .error(s.span(), "`sample` must be at least 2")
                    .with_hint("leave it out to use every row"));
            }
            other => other.map(Spanned::into_inner),
        };
        Ok(DataPlan {
            source,
            text_column,
            label_column,
            sample,
            split_column,
            label_separator,
            group_column: data.group_column.map(Spanned::into_inner),
        })
    }

    fn check_backbone(
        &self,
        backbone: Spanned<RawBackbone>,
        spans: &mut Spans,
    ) -> Result<BackbonePlan, Diagnostic> {
        let section = backbone.span();
        let b = backbone.into_inner();
        let registry = Registry::builtin();
        spans.sha256 = b.sha256.as_ref().map(Spanned::span);
        let mut config = TextBackboneConfig::default();
        let mut image = None;
        let source = match (&b.model, &b.onnx) {
            (Some(_), Some(onnx)) => {
                return Err(self
                    .error(onnx.span(), "`[backbone]` gives both `model` and `onnx`")
                    .with_hint("keep one: `model` names a registered backbone, `onnx` + `tokenizer` are files of your own"));
            }
            (None, None) => {
                return Err(self.error(section, "`[backbone]` needs `model` or `onnx`").with_hint(format!(
                    "registered backbones: {}; or give `onnx = \"model.onnx\"` and `tokenizer = \"tokenizer.json\"`",
                    registry.model_names().join(", ")
                )));
            }
            (Some(name), None) if registry.image_models.contains_key(name.get_ref()) => {
                spans.backbone_model = Some(name.span());
                let entry = &registry.image_models[name.get_ref()];
                for (key, span) in [
                    ("tokenizer", b.tokenizer.as_ref().map(Spanned::span)),
                    ("sha256", b.sha256.as_ref().map(Spanned::span)),
                    ("max_length", b.max_length.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        return Err(self
                            .error(span, format!("`{key}` does not apply to an image backbone"))
                            .with_hint("image backbones take `image_size`, `resize` and `[backbone.augment]`"));
                    }
                }
                if b.pooling.is_some() || b.normalize.is_some() {
                    return Err(self
                        .error(
                            section.clone(),
                            "`pooling` and `normalize` do not apply to an image backbone",
                        )
                        .with_hint("the image backbone's output is already pooled"));
                }
                let p = &entry.preprocess;
                let mut preprocess = image_preprocess(p);
                if let Some(size) = &b.image_size {
                    if *size.get_ref() < 16 {
                        return Err(self.error(
                            size.span(),
                            format!("`image_size` must be at least 16, got {}", size.get_ref()),
                        ));
                    }
                    // Keep the registry's ratio of resize to crop (256/224) unless `resize` is given.
                    preprocess.resize = (f64::from(*size.get_ref()) * f64::from(p.resize)
                        / f64::from(p.crop))
                    .round() as u32;
                    preprocess.crop = *size.get_ref();
                }
                if let Some(resize) = &b.resize {
                    if *resize.get_ref() < preprocess.crop {
                        return Err(self
                            .error(resize.span(), format!("`resize` ({}) is smaller than the crop ({})", resize.get_ref(), preprocess.crop))
                            .with_hint("the short side is resized first, then the centre crop of `image_size` is taken"));
                    }
                    preprocess.resize = *resize.get_ref();
                }
                let augment = match &b.augment {
                    None => None,
                    Some(a) => {
                        let raw = a.get_ref();
                        let crop_scale = match &raw.crop_scale {
                            None => None,
                            Some(c) => match c.get_ref().as_slice() {
                                [low, high] if 0.0 < *low && low <= high && *high <= 1.0 => {
                                    Some((*low, *high))
                                }
                                _ => {
                                    return Err(self
                                        .error(c.span(), "`crop_scale` must be [low, high] with 0 < low <= high <= 1")
                                        .with_hint("the share of the image's area a random crop keeps, e.g. [0.5, 1.0]"));
                                }
                            },
                        };
                        let views = match &raw.views {
                            Some(v) if *v.get_ref() == 0 => {
                                return Err(self
                                    .error(v.span(), "`views` must be at least 1")
                                    .with_hint(
                                        "remove `[backbone.augment]` to train without augmentation",
                                    ));
                            }
                            Some(v) => *v.get_ref(),
                            None => 1,
                        };
                        let horizontal_flip = raw.horizontal_flip.unwrap_or(false);
                        if !horizontal_flip && crop_scale.is_none() {
                            return Err(self
                                .error(a.span(), "`[backbone.augment]` turns nothing on")
                                .with_hint(
                                    "set `horizontal_flip = true` and/or `crop_scale = [0.5, 1.0]`",
                                ));
                        }
                        Some((
                            Augmentation {
                                horizontal_flip,
                                crop_scale,
                            },
                            views,
                        ))
                    }
                };
                image = Some(ImagePlan {
                    preprocess,
                    output: entry.output.clone(),
                    augment,
                });
                ModelSource::Registry(name.get_ref().clone())
            }
            (Some(name), None) => {
                spans.backbone_model = Some(name.span());
                let entry = registry.models.get(name.get_ref()).ok_or_else(|| {
                    self.unknown(name, "backbone", "backbones", &registry.model_names())
                })?;
                if let Some(sha) = &b.sha256 {
                    return Err(self
                        .error(sha.span(), "`sha256` applies to your own `onnx` file")
                        .with_hint("registered backbones are always verified against the registry's checksum"));
                }
                if let Some(tok) = &b.tokenizer {
                    return Err(self
                        .error(tok.span(), "`tokenizer` applies to your own `onnx` file")
                        .with_hint("a registered backbone brings its own tokenizer"));
                }
                apply_registry_defaults(&mut config, entry);
                ModelSource::Registry(name.get_ref().clone())
            }
            (None, Some(onnx)) => {
                let onnx_path = self.existing_file(onnx, "model file")?;
                let tokenizer = b.tokenizer.as_ref().ok_or_else(|| {
                    self.error(
                        section.clone(),
                        "`[backbone]` with `onnx` also needs `tokenizer`",
                    )
                    .with_hint("give the path of the model's tokenizer.json")
                })?;
                let tokenizer_path = self.existing_file(tokenizer, "tokenizer file")?;
                let sha256 = match &b.sha256 {
                    Some(s) => {
                        let v = s.get_ref().to_ascii_lowercase();
                        if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err(self
                                .error(s.span(), "`sha256` must be 64 hexadecimal digits")
                                .with_hint(format!(
                                    "`sha256sum {}` prints it",
                                    onnx_path.display()
                                )));
                        }
                        Some(v)
                    }
                    None => None,
                };
                ModelSource::Files {
                    onnx: onnx_path,
                    tokenizer: tokenizer_path,
                    sha256,
                }
            }
        };
        if let Some(output) = b.output {
            config.output = Some(output);
        }
        if let Some(pooling) = b.pooling {
            config.pooling = match pooling {
                RawPooling::Mean => Pooling::Mean,
                RawPooling::Cls => Pooling::Cls,
            };
        }
        if let Some(normalize) = b.normalize {
            config.normalize = normalize;
        }
        let at_least = |value: &Option<Spanned<usize>>,
                        key: &str,
                        min: usize|
         -> Result<Option<usize>, Diagnostic> {
            match value {
                Some(v) if *v.get_ref() < min => Err(self.error(
                    v.span(),
                    format!("`{key}` must be at least {min}, got {}", v.get_ref()),
                )),
                other => Ok(other.as_ref().map(|v| *v.get_ref())),
            }
        };
        if let Some(v) = at_least(&b.max_length, "max_length", 2)? {
            config.max_length = v;
        }
        if let Some(v) = at_least(&b.batch_size, "batch_size", 1)? {
            config.batch_size = v;
        }
        if let Some(v) = at_least(&b.threads, "threads", 1)? {
            config.intra_threads = v;
        }
        if let Some(v) = at_least(&b.sessions, "sessions", 1)? {
            let span = b.sessions.as_ref().map(Spanned::span).expect("given");
            if image.is_some() {
                return Err(self
                    .error(span, "`sessions` applies to text backbones")
                    .with_hint("image backbones run one session with `threads` threads"));
            }
            if v > config.intra_threads {
                return Err(self
                    .error(span, format!("`sessions = {v}` is more than `threads = {}`", config.intra_threads))
                    .with_hint("every session needs at least one of the threads; e.g. threads = 2, sessions = 2"));
            }
            config.sessions = v;
        }
        config.provider = match b.provider {
            None | Some(RawProvider::Cpu) => {
                if let Some(span) = b
                    .device_id
                    .as_ref()
                    .map(Spanned::span)
                    .or(b.fallback.as_ref().map(Spanned::span))
                {
                    return Err(self
                        .error(
                            span,
                            "`device_id` and `fallback` apply to `provider = \"cuda\"`",
                        )
                        .with_hint("add `provider = \"cuda\"` or remove the key"));
                }
                Provider::Cpu
            }
            Some(RawProvider::Cuda) => {
                let device_id = match &b.device_id {
                    Some(d) if *d.get_ref() < 0 => {
                        return Err(self.error(
                            d.span(),
                            format!("`device_id` must be 0 or more, got {}", d.get_ref()),
                        ));
                    }
                    Some(d) => *d.get_ref(),
                    None => 0,
                };
                Provider::Cuda {
                    device_id,
                    fallback: b.fallback.as_ref().is_none_or(|f| *f.get_ref()),
                }
            }
        };
        if image.is_none() {
            for (key, span) in [
                ("image_size", b.image_size.as_ref().map(Spanned::span)),
                ("resize", b.resize.as_ref().map(Spanned::span)),
                ("augment", b.augment.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(self
                        .error(span, format!("`{key}` applies to image backbones only"))
                        .with_hint(format!(
                            "registered image backbones: {}",
                            registry.image_model_names().join(", ")
                        )));
                }
            }
        }
        let prompt = match b.prompt {
            Some(p) if image.is_some() => {
                return Err(self
                    .error(p.span(), "`prompt` applies to text backbones")
                    .with_hint("image backbones take no text; remove `prompt`"));
            }
            Some(p) if !p.get_ref().contains("{text}") => {
                return Err(self
                    .error(p.span(), "`prompt` has no `{text}` placeholder")
                    .with_hint("mark where each text goes, e.g. `prompt = \"query: {text}\"`"));
            }
            other => other.map(Spanned::into_inner),
        };
        Ok(BackbonePlan {
            source,
            config,
            image,
            cache: b.cache.unwrap_or(true),
            prompt,
        })
    }
}
