//! In-process embedding: texts in, an ndarray out, through the same backbone set-up as [`extract`] and cut
//! into the same chunks, so the same rows with the same settings give the same bytes as an `extract` file.
//!
//! Batches matter for graphs with batch-dependent operators (`DynamicQuantizeLinear` quantises a batch's
//! activations with one scale), where a row's embedding depends in its last bits on its batch-mates.
//! [`Embedder::embed`] therefore cuts its texts into chunks of `chunk_rows`, length-sorts and batches each chunk
//! exactly as `extract` does a file, so the bytes agree for any graph. (MiniLM-L6 int8 has no such operator:
//! its weights are int8, its activations fp32, and its embeddings do not depend on the batch.)
//!
//! [`extract`]: crate::extract()

use std::path::PathBuf;

use graft_assets::Cache;
use graft_backbone::{LongTexts, Pooling, Provider, Runtime, TextBackbone, TextBackboneConfig};
use ndarray::Array2;

use crate::JobError;
use graft_config::{ModelSource, apply_registry_defaults};
use graft_engine::provision::{ModelProblem, ResolvedModel, resolve_model, runtime_library};

/// What an [`Embedder`] (or an `extract` job's text backbone) is made of.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    /// The backbone: a registry name, or an ONNX graph with its tokenizer.
    pub model: ModelSource,
    /// Tokens kept per text (default: the registry entry's, else 256); with chunks, per window.
    pub max_length: Option<usize>,
    /// Texts longer than `max_length`: truncated (default) or embedded in windows and pooled.
    pub long_texts: LongTexts,
    /// Pooling of token states (default: the registry entry's, else mean).
    pub pooling: Option<Pooling>,
    /// L2-normalise (default: the registry entry's, else on).
    pub normalize: Option<bool>,
    /// The graph output to pool (default: the registry entry's, else `sentence_embedding` or the first float
    /// output of rank 3).
    pub output_name: Option<String>,
    /// A template each text is put through before tokenization (`{text}` marks the text).
    pub prompt: Option<String>,
    /// Texts per inference call.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads, shared out among the sessions.
    pub threads: usize,
    /// Inference sessions sharing `threads`.
    pub sessions: usize,
    /// Rows per chunk: the unit of length-sorted batching.
    pub chunk_rows: usize,
    /// Execution provider (CUDA falls back to CPU with a warning unless its `fallback` is off).
    pub provider: Provider,
    /// Cache of fetched runtimes and models.
    pub cache_dir: PathBuf,
}

impl EmbedSettings {
    /// `extract`'s defaults: batch 64, all cores in one session, 4,096-row chunks, CPU.
    pub fn new(model: ModelSource, cache_dir: impl Into<PathBuf>) -> EmbedSettings {
        EmbedSettings {
            model,
            max_length: None,
            long_texts: LongTexts::Truncate,
            pooling: None,
            normalize: None,
            output_name: None,
            prompt: None,
            batch_size: 16,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sessions: 1,
            chunk_rows: 4096,
            provider: Provider::Cpu,
            cache_dir: cache_dir.into(),
        }
    }

    /// The prompt texts get: the caller's, else a registered model's own (E5's `query: {text}`).
    pub fn prompt_in_effect(&self) -> Option<String> {
        self.prompt.clone().or_else(|| match &self.model {
            ModelSource::Registry(name) => graft_assets::Registry::builtin()
                .models
                .get(name)
                .and_then(|e| e.prompt.clone()),
            ModelSource::Files { .. } => None,
        })
    }

    /// Refuses zero counts, more sessions than threads, and a prompt without `{text}`.
    pub(crate) fn check(&self) -> Result<(), JobError> {
        self.check_counts(str::to_owned)?;
        if let Some(p) = &self.prompt
            && !p.contains("{text}")
        {
            return Err(JobError::invalid(
                format!("the prompt {p:?} has no {{text}} placeholder"),
                "mark where each text goes, e.g. \"query: {text}\"",
            ));
        }
        Ok(())
    }

    /// Refuses zero counts and more sessions than threads; errors call each setting `name(setting)` (a
    /// command-line flag, a keyword argument).
    pub(crate) fn check_counts(&self, name: impl Fn(&str) -> String) -> Result<(), JobError> {
        for (setting, value) in [
            ("batch_size", self.batch_size),
            ("threads", self.threads),
            ("sessions", self.sessions),
            ("chunk_rows", self.chunk_rows),
        ] {
            if value == 0 {
                return Err(JobError::invalid(
                    format!("{} must be at least 1", name(setting)),
                    "leave it out to use the default",
                ));
            }
        }
        if self.sessions > self.threads {
            return Err(JobError::invalid(
                format!(
                    "{} {} is more than {} {}: every session needs a thread",
                    name("sessions"),
                    self.sessions,
                    name("threads"),
                    self.threads
                ),
                "use at most as many sessions as threads",
            ));
        }
        Ok(())
    }

    /// The backbone's settings: the registry entry's defaults, then these overrides.
    fn backbone_config(&self) -> Result<TextBackboneConfig, JobError> {
        let mut config = TextBackboneConfig {
            batch_size: self.batch_size,
            intra_threads: self.threads,
            sessions: self.sessions,
            progress: false,
            provider: self.provider,
            ..TextBackboneConfig::default()
        };
        if let ModelSource::Registry(name) = &self.model {
            let registry = graft_assets::Registry::builtin();
            let entry = registry.models.get(name).ok_or_else(|| {
                let hint = if registry.image_models.contains_key(name) {
                    format!(
                        "`{name}` is an image backbone; text backbones: {}",
                        registry.model_names().join(", ")
                    )
                } else {
                    format!(
                        "registered backbones: {}; or give an .onnx file with its tokenizer",
                        registry.model_names().join(", ")
                    )
                };
                JobError::invalid(
                    format!("no text backbone `{name}` in graft's registry"),
                    hint,
                )
            })?;
            apply_registry_defaults(&mut config, entry);
        }
        if let Some(pooling) = self.pooling {
            config.pooling = pooling;
        }
        if let Some(max_length) = self.max_length {
            config.max_length = max_length;
        }
        if let Some(normalize) = self.normalize {
            config.normalize = normalize;
        }
        config.long_texts = self.long_texts;
        if let Some(output) = &self.output_name {
            config.output = Some(output.clone());
        }
        Ok(config)
    }

    /// The backbone's files, fetched and verified, and the configuration extraction will use, its
    /// `max_length` within the graph's position table (past it ONNX Runtime fails with a raw broadcast error).
    pub(crate) fn resolved(
        &self,
        cache: &Cache,
    ) -> Result<(ResolvedModel, TextBackboneConfig), JobError> {
        // The settings first: an unknown or image model is named as such before anything is fetched.
        let mut config = self.backbone_config()?;
        let model = self.model_files(cache)?;
        let path = &model.onnx.path;
        let bytes = std::fs::read(path).map_err(|source| JobError::Io {
            path: path.clone(),
            source,
        })?;
        // An unreadable graph is reported by ONNX Runtime when it loads, with its own words.
        let limit = graft_onnx::GraphSummary::read(&bytes)
            .ok()
            .and_then(|g| g.position_limit());
        let limit = limit.filter(|&limit| config.max_length > limit);
        let chosen = self.max_length.is_some() || matches!(self.model, ModelSource::Registry(_));
        if let Some(limit) = limit
            && !chosen
        {
            // graft's default, lowered to the graph's positions (as sentence-transformers caps its own).
            config.max_length = limit;
        } else if let Some(limit) = limit {
            return Err(JobError::invalid(
                format!(
                    "max_length {} is more than {} reads ({limit} token positions)",
                    config.max_length,
                    path.display()
                ),
                format!(
                    "use at most {limit} (--max-length, or max_length= in Python); longer texts are truncated"
                ),
            ));
        }
        Ok((model, config))
    }

    /// The backbone's files, fetched and verified.
    fn model_files(&self, cache: &Cache) -> Result<ResolvedModel, JobError> {
        resolve_model(cache, &self.model).map_err(|problem| match problem {
            ModelProblem::NotText(name) => JobError::invalid(
                format!("backbone `{name}` is not a text model"),
                "give a registry name such as minilm-l6-int8, or an .onnx file with its tokenizer.json",
            ),
            ModelProblem::Checksum {
                path,
                expected,
                actual,
            } => JobError::invalid(
                format!(
                    "checksum mismatch for {}: expected {expected}, found {actual}",
                    path.display()
                ),
                "the model file changed",
            ),
            ModelProblem::Other(e) => e.into(),
        })
    }
}

/// A loaded text backbone that embeds lists of texts in this process.
///
/// ```no_run
/// use graft_config::ModelSource;
/// use graft_jobs::{EmbedSettings, Embedder};
///
/// # fn main() -> Result<(), graft_jobs::JobError> {
/// let settings = EmbedSettings::new(ModelSource::Registry("minilm-l6-int8".into()), ".graft-cache");
/// let mut embedder = Embedder::open(&settings)?;
/// let embeddings = embedder.embed(&["a fine film", "a dull film"])?;
/// assert_eq!(embeddings.dim(), (2, embedder.dimension()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Embedder {
    backbone: TextBackbone,
    prompt: Option<String>,
    chunk_rows: usize,
    dimension: usize,
    model: String,
}

impl Embedder {
    /// Fetches (once) and verifies the runtime and the model, and opens the backbone.
    pub fn open(settings: &EmbedSettings) -> Result<Embedder, JobError> {
        settings.check()?;
        let cache = Cache::new(&settings.cache_dir);
        let (model, config) = settings.resolved(&cache)?;
        let choice = runtime_library(&cache, settings.provider)?;
        let runtime = Runtime::load(&choice.library.path)?;
        let mut backbone = TextBackbone::load(
            &runtime,
            &model.onnx.path,
            &model.tokenizer.path,
            TextBackboneConfig {
                provider: choice.provider,
                ..config
            },
        )?;
        // The width is the graph's, whatever its declared output shape says: one text shows it.
        let dimension = backbone.embed(&["graft"])?.0.ncols();
        Ok(Embedder {
            backbone,
            prompt: settings.prompt_in_effect(),
            chunk_rows: settings.chunk_rows,
            dimension,
            model: model.label,
        })
    }

    /// Embeds `texts`; row `i` belongs to `texts[i]`.
    pub fn embed<S: AsRef<str> + Sync>(&mut self, texts: &[S]) -> Result<Array2<f32>, JobError> {
        self.embed_with(texts, || Ok(()))
    }

    /// [`embed`](Self::embed), calling `between_batches` before each round of inference calls (one batch per
    /// session, so a check waits for a few hundred rows at most, not a whole chunk); its error stops the work
    /// (a caller's interrupt check). The batches are the ones `graft extract` forms, so the bytes are too.
    pub fn embed_with<S: AsRef<str> + Sync>(
        &mut self,
        texts: &[S],
        mut between_batches: impl FnMut() -> Result<(), JobError>,
    ) -> Result<Array2<f32>, JobError> {
        let mut embeddings = Array2::<f32>::zeros((texts.len(), self.dimension));
        let config = self.backbone.config();
        let (batch_size, round, normalize) =
            (config.batch_size, config.sessions.max(1), config.normalize);
        for (c, chunk) in texts.chunks(self.chunk_rows).enumerate() {
            between_batches()?;
            let tokenizer = self.backbone.tokenizer();
            let encoded = match &self.prompt {
                Some(p) => tokenizer.encode(
                    &chunk
                        .iter()
                        .map(|t| graft_config::apply_prompt(p, t.as_ref()))
                        .collect::<Vec<_>>(),
                ),
                None => tokenizer.encode(chunk),
            }?;
            let first = c * self.chunk_rows;
            // The batches of one `embed_encoded` call over the chunk, one per session at a time; a long
            // text's windows (when chunking) are sequences of their own, pooled at the end.
            let order = encoded.length_order();
            let plan = encoded.batch_plan(&order, batch_size);
            let mut sequences = Array2::<f32>::zeros((encoded.sequences(), self.dimension));
            for (r, group) in plan.chunks(round).enumerate() {
                if r > 0 {
                    between_batches()?;
                }
                let (span, batches) = graft_backbone::rebase(group);
                let rows = &order[span];
                let (done, _) = self
                    .backbone
                    .embed_batches(&encoded, rows, &batches, |_| {})?;
                for (k, &row) in rows.iter().enumerate() {
                    sequences.row_mut(row).assign(&done.row(k));
                }
            }
            let pooled = encoded.pool_windows(sequences, normalize);
            embeddings
                .slice_mut(ndarray::s![first..first + chunk.len(), ..])
                .assign(&pooled);
        }
        Ok(embeddings)
    }

    /// The embedding width.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The registry name, or the graph's path.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The execution provider the backbone runs on (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub fn execution_provider(&self) -> &'static str {
        self.backbone.execution_provider()
    }
}
