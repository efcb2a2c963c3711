//! `predict`: a run's saved head applied to new rows, through the same frozen backbone.

use std::path::{Path, PathBuf};

use graft_assets::Cache;
use graft_backbone::{ChunkPooling, LongTexts, Pooling, Provider};
use ndarray::{Array2, ArrayView2};
use polars::prelude::{Column, DataFrame, NamedFrom, ParquetWriter, SerWriter, Series};

use graft_config::resolved::{BackboneSettings, ModelSourceSettings};
use graft_report::Manifest;

use crate::EmbedSettings;
use crate::JobError;
use crate::extract::{ExtractJob, extract};
use graft_config::ModelSource;
use graft_engine::{LoadedHead, load_head};

/// What to predict, with what, and where to write it.
#[derive(Debug, Clone)]
pub struct PredictJob {
    /// A run folder written by `run` (holds `manifest.json` and `heads/`).
    pub run_dir: PathBuf,
    /// Rows to classify: a table (`.csv`, `.tsv`, `.jsonl`, `.parquet`) or a folder of images.
    pub input: PathBuf,
    /// Column with the texts (tables only).
    pub text_column: String,
    /// Column copied into the output to identify rows.
    pub id_column: Option<String>,
    /// `.csv` or `.parquet`.
    pub output: PathBuf,
    /// Which of the run's heads (default: the headline, the first in the pipeline).
    pub head: Option<String>,
    /// The backbone to use instead of the one recorded in the run; refused unless its sha256 is the one
    /// the head was trained on.
    pub model: Option<ModelSource>,
    /// The graph output to pool instead of the one the run used.
    pub output_name: Option<String>,
    /// Inference batch size.
    pub batch_size: usize,
    /// ONNX Runtime threads.
    pub threads: usize,
    /// Execution provider.
    pub provider: Provider,
    /// Cache of fetched runtimes and models.
    pub cache_dir: PathBuf,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What `predict` did.
#[derive(Debug, Clone)]
pub struct PredictOutcome {
    /// The file written.
    pub output: PathBuf,
    /// Rows predicted.
    pub rows: usize,
    /// The head used.
    pub head: String,
}

/// The backbone a head was trained with, from its artefact; relative paths (a graph a stage wrote into the
/// run folder) are resolved from `run_dir`.
pub(crate) fn recorded_model(loaded: &LoadedHead, run_dir: &Path) -> Result<ModelSource, JobError> {
    match loaded.info.backbone.settings.as_ref().map(|s| &s.source) {
        Some(ModelSourceSettings::Registry { model }) => Ok(ModelSource::Registry(model.clone())),
        Some(ModelSourceSettings::Files {
            onnx, tokenizer, ..
        }) => Ok(ModelSource::Files {
            onnx: run_dir.join(onnx),
            tokenizer: run_dir.join(tokenizer),
            sha256: None,
        }),
        None => Err(JobError::invalid(
            "the head's artefact does not record its backbone",
            "pass the backbone with --model (and --tokenizer for an .onnx file)",
        )),
    }
}

/// sha256 of a backbone's ONNX graph (registered models are fetched and verified first).
pub(crate) fn model_sha256(
    cache: &Cache,
    model: &ModelSource,
    image: bool,
) -> Result<String, JobError> {
    Ok(match model {
        ModelSource::Registry(name) if image => cache.image_model(name)?.onnx.sha256,
        ModelSource::Registry(name) => graft_engine::provision::text_model(cache, name)?.1.sha256,
        ModelSource::Files { onnx, .. } => {
            let bytes = std::fs::read(onnx).map_err(|source| JobError::Io {
                path: onnx.clone(),
                source,
            })?;
            graft_stdx::sha256_hex(&bytes)
        }
    })
}

/// A head's name in its run folder: its artefact's file stem (`logistic`, `logistic-tuned`).
pub(crate) fn artefact_name(json_path: &Path) -> String {
    json_path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// Picks the head's artefact in `run_dir/heads/`.
pub(crate) fn head_file(run_dir: &Path, head: Option<&str>) -> Result<PathBuf, JobError> {
    let heads_dir = run_dir.join("heads");
    let manifest = Manifest::read(run_dir).map_err(|e| {
        JobError::invalid(
            format!(
                "{} is not a graft run folder we can read: {e}",
                run_dir.display()
            ),
            "pass the folder `graft run` printed as `run folder`",
        )
    })?;
    // The pipeline's heads first (the headline is the default), then heads a stage kept (`logistic-tuned`).
    let mut names: Vec<&str> = manifest
        .pipeline
        .resolved
        .heads
        .iter()
        .map(|h| h.kind.name())
        .collect();
    let kept = manifest.artefacts.keys().filter_map(|k| {
        k.strip_prefix("heads/")
            .and_then(|n| n.strip_suffix(".json"))
    });
    for name in kept {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() || !heads_dir.is_dir() {
        return Err(JobError::invalid(
            format!("{} holds no saved heads", run_dir.display()),
            "runs made before heads were saved cannot predict; run the pipeline again",
        ));
    }
    let name = match head {
        Some(h) if names.contains(&h) => h.to_owned(),
        Some(h) => {
            return Err(JobError::invalid(
                format!("the run has no head `{h}`"),
                format!("its heads: {}", names.join(", ")),
            ));
        }
        None => names[0].to_owned(),
    };
    let description = heads_dir.join(format!("{name}.json"));
    for name in [
        format!("heads/{name}.json"),
        format!("heads/{name}.safetensors"),
    ] {
        manifest.verify(run_dir, &name).map_err(|e| {
            JobError::invalid(
                e.to_string(),
                "use the run folder as the run wrote it, or run the pipeline again",
            )
        })?;
    }
    Ok(description)
}

/// A hidden name next to `output` for this process's scratch or temporary files.
fn beside(output: &Path, what: &str) -> PathBuf {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent.join(format!(".{name}.{what}-{}", std::process::id()))
}

/// The backbone to embed with for `loaded`: `given`, else the one recorded in the run; refused unless its
/// graph's sha256 is the one the head was trained on.
fn checked_model(
    loaded: &LoadedHead,
    run_dir: &Path,
    given: Option<ModelSource>,
    cache_dir: &Path,
) -> Result<ModelSource, JobError> {
    let image = loaded
        .info
        .backbone
        .settings
        .as_ref()
        .is_some_and(|s| s.image.is_some());
    let model = match given {
        Some(m) => m,
        None => recorded_model(loaded, run_dir)?,
    };
    let sha = model_sha256(&Cache::new(cache_dir), &model, image)?;
    if sha != loaded.info.backbone_sha256 {
        return Err(JobError::invalid(
            format!(
                "the backbone's sha256 is {sha}, but the head was trained on features of {}",
                loaded.info.backbone_sha256
            ),
            "a head only works on the exact backbone it was trained with; pass that model with --model",
        ));
    }
    check_tokenizer(loaded, &model)?;
    Ok(model)
}

/// A text backbone's tokenizer must be the one the head was trained with: the same graph fed other token
/// ids gives other features. Registered models' tokenizers are verified when fetched; files are hashed here.
pub(crate) fn check_tokenizer(loaded: &LoadedHead, model: &ModelSource) -> Result<(), JobError> {
    let (ModelSource::Files { tokenizer, .. }, Some(recorded)) =
        (model, loaded.info.backbone.files.tokenizer.as_ref())
    else {
        return Ok(());
    };
    let actual = graft_stdx::sha256_file(tokenizer).map_err(|source| JobError::Io {
        path: tokenizer.clone(),
        source,
    })?;
    if actual != recorded.sha256 {
        return Err(JobError::invalid(
            format!(
                "the tokenizer {} has sha256 {actual}, but the head was trained with a tokenizer of sha256 {}",
                tokenizer.display(),
                recorded.sha256
            ),
            "the same graph with another tokenizer gives other features; pass the tokenizer.json the run used \
             (the model folder or --tokenizer it was trained with)",
        ));
    }
    Ok(())
}

/// The text settings the run embedded with (pooling, truncation, prompt, normalisation, graph output), onto
/// `text`; `output_name` overrides the recorded graph output.
fn recorded_settings(
    settings: &BackboneSettings,
    output_name: Option<String>,
    text: &mut EmbedSettings,
) {
    text.max_length = Some(settings.max_length);
    text.long_texts = match &settings.long_texts {
        None => LongTexts::Truncate,
        Some(l) => LongTexts::Chunks {
            stride: l.stride,
            pooling: if l.chunk_pooling == "max" {
                ChunkPooling::Max
            } else {
                ChunkPooling::Mean
            },
        },
    };
    text.pooling = match settings.pooling.as_str() {
        "cls" => Some(Pooling::Cls),
        "mean" => Some(Pooling::Mean),
        _ => None,
    };
    text.prompt = settings.prompt.clone();
    text.normalize = Some(settings.normalize);
    text.output_name = output_name.or(settings.output.clone());
}

/// Features of the input rows through the run's backbone (the batch-extraction path: streaming,
/// length-sorted batches), into a scratch folder beside the output.
fn extracted_features(
    job: &PredictJob,
    loaded: &LoadedHead,
) -> Result<(Array2<f32>, Option<Series>), JobError> {
    let Some(settings) = &loaded.info.backbone.settings else {
        unreachable!("a head with a backbone records its settings")
    };
    let model = checked_model(loaded, &job.run_dir, job.model.clone(), &job.cache_dir)?;

    let scratch = beside(&job.output, "predict");
    std::fs::create_dir_all(&scratch).map_err(|source| JobError::Io {
        path: scratch.clone(),
        source,
    })?;
    let features_path = scratch.join("features.parquet");
    let mut extract_job = ExtractJob::new(
        model.clone(),
        &job.input,
        &job.text_column,
        &features_path,
        &job.cache_dir,
    );
    extract_job.id_column = job.id_column.clone();
    extract_job.progress = job.progress;
    let mut text = EmbedSettings::new(model, &job.cache_dir);
    text.batch_size = job.batch_size;
    text.threads = job.threads;
    text.provider = job.provider;
    recorded_settings(settings, job.output_name.clone(), &mut text);
    extract_job.backbone = text;
    extract_job.image_size = settings.image.as_ref().map(|i| i.image_size);
    extract_job.resize = settings.image.as_ref().map(|i| i.resize);
    let result = extract(&extract_job)
        .and_then(|_| graft_ingest::read_embeddings(&features_path, None).map_err(JobError::from));
    let _ = std::fs::remove_dir_all(&scratch);
    let batch = result?;
    Ok((batch.embeddings, batch.ids))
}

/// Features given in a file, for a run trained on given features: the same column (Parquet) or a `.npy`
/// matrix; `--id-column` names a column of the Parquet table.
fn given_features(
    job: &PredictJob,
    loaded: &LoadedHead,
) -> Result<(Array2<f32>, Option<Series>), JobError> {
    let column = loaded
        .info
        .backbone
        .files
        .embedding_column
        .as_deref()
        .unwrap_or("embedding");
    let embeddings = graft_ingest::read_feature_matrix(&job.input, column).map_err(|e| {
        JobError::invalid(
            e.to_string(),
            format!(
                "this run's head was trained on given features, so the input must be features too: a .parquet table with a `{column}` list column, or a .npy matrix"
            ),
        )
    })?;
    let ids = match &job.id_column {
        Some(name) => {
            let table = graft_ingest::read_table(&job.input).map_err(|e| {
                JobError::invalid(e.to_string(), "--id-column needs a .parquet input")
            })?;
            let ids = table.column(name).map_err(|_| {
                JobError::invalid(
                    format!("the input has no column `{name}`"),
                    "name a column of the input table with --id-column",
                )
            })?;
            Some(ids.as_materialized_series().clone())
        }
        None => None,
    };
    Ok((embeddings, ids))
}

/// Classifies every row of the input and writes predictions with per-class probabilities.
pub fn predict(job: &PredictJob) -> Result<PredictOutcome, JobError> {
    let format = output_format(job)?;
    let scored = score_rows(job)?;
    write_predictions(job, format, &scored)?;
    Ok(PredictOutcome {
        output: job.output.clone(),
        rows: scored.proba.nrows(),
        head: artefact_name(&scored.json_path),
    })
}

/// `csv` or `parquet`, from the output's extension.
pub(crate) fn output_format(job: &PredictJob) -> Result<&'static str, JobError> {
    match job.output.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok("csv"),
        Some("parquet") => Ok("parquet"),
        _ => Err(JobError::invalid(
            format!("cannot write predictions to {}", job.output.display()),
            "name the output .csv or .parquet",
        )),
    }
}

/// The input rows through the run's backbone and head.
pub(crate) struct ScoredRows {
    pub json_path: PathBuf,
    pub loaded: LoadedHead,
    /// One row per input row: each class's probability (each label's, for a multi-label head).
    pub proba: Array2<f32>,
    ids: Option<Series>,
}

pub(crate) fn score_rows(job: &PredictJob) -> Result<ScoredRows, JobError> {
    let json_path = head_file(&job.run_dir, job.head.as_deref())?;
    let loaded = load_head(&json_path)?;
    let (embeddings, ids) = if loaded.info.backbone.settings.is_none() {
        given_features(job, &loaded)?
    } else {
        extracted_features(job, &loaded)?
    };
    if embeddings.ncols() != loaded.trained.n_features() {
        return Err(JobError::invalid(
            format!(
                "the features are {}-d but the head expects {}",
                embeddings.ncols(),
                loaded.trained.n_features()
            ),
            "predict with the backbone (or the kind of features) the run was trained on, with the run's own settings",
        ));
    }
    let proba = loaded.trained.predict_proba(embeddings.view())?;
    Ok(ScoredRows {
        json_path,
        loaded,
        proba,
        ids,
    })
}

/// predictions.csv / .parquet: row, id, the predicted class (or label set) and every probability.
pub(crate) fn write_predictions(
    job: &PredictJob,
    format: &str,
    scored: &ScoredRows,
) -> Result<(), JobError> {
    let (loaded, proba) = (&scored.loaded, &scored.proba);
    // A class per row, or for a multi-label head the labels at or above their thresholds, joined as in the
    // training data.
    let classes = &loaded.info.classes;
    let predicted: Vec<String> = match &loaded.trained.thresholds {
        Some(thresholds) => {
            let separator = loaded.info.label_separator.as_deref().unwrap_or("|");
            graft_heads::threshold_rows(proba.view(), thresholds)
                .iter()
                .map(|set| {
                    set.iter()
                        .map(|&l| classes[l].as_str())
                        .collect::<Vec<_>>()
                        .join(separator)
                })
                .collect()
        }
        None => graft_heads::argmax_rows(proba.view())
            .into_iter()
            .map(|c| classes[c].clone())
            .collect(),
    };
    let n = predicted.len();
    let mut columns: Vec<Column> =
        vec![Series::new("row".into(), (0..n as u64).collect::<Vec<_>>()).into()];
    if let Some(ids) = &scored.ids {
        columns.push(ids.clone().into());
    }
    columns.push(Series::new("predicted".into(), predicted).into());
    for (c, class) in classes.iter().enumerate() {
        columns.push(Series::new(format!("p_{class}").into(), proba.column(c).to_vec()).into());
    }
    let mut frame = DataFrame::new(n, columns).map_err(|e| {
        JobError::invalid(
            format!("assembling predictions: {e}"),
            "this is a bug in graft; please report it",
        )
    })?;
    let io = |source| JobError::Io {
        path: job.output.clone(),
        source,
    };
    let mut out = graft_stdx::atomic::AtomicFile::create(&job.output).map_err(io)?;
    let written = if format == "csv" {
        polars::prelude::CsvWriter::new(out.file_mut()).finish(&mut frame)
    } else {
        ParquetWriter::new(out.file_mut())
            .finish(&mut frame)
            .map(|_| ())
    };
    if let Err(e) = written {
        return Err(JobError::invalid(
            format!("writing {}: {e}", job.output.display()),
            "check that the folder is writable and has space",
        ));
    }
    out.commit().map_err(io)
}

/// A run's saved head, loaded for predicting in this process (what `graft predict` does to a file, on rows in
/// memory).
///
/// ```no_run
/// use graft_jobs::{Embedder, SavedHead};
///
/// # fn main() -> Result<(), graft_jobs::JobError> {
/// let head = SavedHead::open("runs/quickstart/20261129T101500Z".as_ref(), None)?;
/// let settings = head.embed_settings(None, ".graft-cache".as_ref())?;
/// let features = Embedder::open(&settings)?.embed(&["a fine film"])?;
/// let proba = head.predict_proba(features.view())?;
/// println!("{}: {:.3}", head.classes()[0], proba[[0, 0]]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SavedHead {
    loaded: LoadedHead,
    run_dir: PathBuf,
    name: String,
}

impl SavedHead {
    /// Loads head `head` of the run in `run_dir` (default: the headline head), checking its files against
    /// the run's manifest.
    pub fn open(run_dir: &Path, head: Option<&str>) -> Result<SavedHead, JobError> {
        let json_path = head_file(run_dir, head)?;
        Ok(SavedHead {
            loaded: load_head(&json_path)?,
            run_dir: run_dir.to_path_buf(),
            name: artefact_name(&json_path),
        })
    }

    /// The head's name in the run (`logistic`, `logistic-tuned`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Class names, in the order of [`predict_proba`](Self::predict_proba)'s columns.
    pub fn classes(&self) -> &[String] {
        &self.loaded.info.classes
    }

    /// The feature width the head takes.
    pub fn n_features(&self) -> usize {
        self.loaded.trained.n_features()
    }

    /// Multi-label heads: each label's decision threshold.
    pub fn thresholds(&self) -> Option<&[f32]> {
        self.loaded.trained.thresholds.as_deref()
    }

    /// Whether the head was trained on a text backbone's features (so it can score texts), rather than on
    /// given features or an image backbone's.
    pub fn takes_texts(&self) -> bool {
        self.loaded
            .info
            .backbone
            .settings
            .as_ref()
            .is_some_and(|s| s.image.is_none())
    }

    /// The text backbone settings the run embedded with, for an [`Embedder`](crate::Embedder): `model`
    /// (default: the run's own) must be the graph the head was trained on. Refused for a head trained on
    /// given features or on an image backbone.
    pub fn embed_settings(
        &self,
        model: Option<ModelSource>,
        cache_dir: &Path,
    ) -> Result<EmbedSettings, JobError> {
        let Some(settings) = &self.loaded.info.backbone.settings else {
            return Err(JobError::invalid(
                "this head was trained on given features, not on a backbone's: it cannot embed texts",
                "pass the features themselves (the same kind of features the run was trained on)",
            ));
        };
        if settings.image.is_some() {
            return Err(JobError::invalid(
                "this head was trained on an image backbone's features: it cannot embed texts",
                "pass image features, or use `graft predict` with a folder of images",
            ));
        }
        let model = checked_model(&self.loaded, &self.run_dir, model, cache_dir)?;
        let mut text = EmbedSettings::new(model, cache_dir);
        recorded_settings(settings, None, &mut text);
        Ok(text)
    }

    /// Each class's probability (each label's, for a multi-label head) for each row of `features`.
    pub fn predict_proba(&self, features: ArrayView2<'_, f32>) -> Result<Array2<f32>, JobError> {
        if features.ncols() != self.n_features() {
            return Err(JobError::invalid(
                format!(
                    "the features are {}-d but the head expects {}",
                    features.ncols(),
                    self.n_features()
                ),
                "use features of the backbone the run was trained on, with the run's own settings",
            ));
        }
        if let Some((row, col)) = features
            .indexed_iter()
            .find_map(|(at, v)| (!v.is_finite()).then_some(at))
        {
            return Err(JobError::invalid(
                format!(
                    "feature {col} of row {row} is {}; features must be finite numbers",
                    features[[row, col]]
                ),
                "check how the features were made",
            ));
        }
        Ok(self.loaded.trained.predict_proba(features)?)
    }
}
