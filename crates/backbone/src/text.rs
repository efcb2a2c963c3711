//! Text encoders: tokenize, batch by length, run, pool.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ndarray::{Array2, ArrayViewD, Axis};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::{BackboneError, Runtime};

/// How token states become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Average of the token states where the attention mask is 1 (sentence-transformers' default).
    Mean,
    /// The first token's state (`[CLS]`).
    Cls,
}

impl Pooling {
    /// The name used in pipeline files and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// What becomes of a text longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongTexts {
    /// Keep its first `max_length` tokens (sentence-transformers' behaviour).
    #[default]
    Truncate,
    /// Cut it into windows of `max_length` tokens (special tokens included), each starting `stride` tokens
    /// of text after the one before; embed every window as a text of its own and pool them into one row.
    Chunks {
        /// Tokens of text between the starts of neighbouring windows: at most the window's room for text
        /// (`max_length` less the special tokens), where windows just touch. `None`: three quarters of the
        /// room (a quarter overlap).
        stride: Option<usize>,
        /// How the windows' embeddings become the text's.
        pooling: ChunkPooling,
    },
}

impl LongTexts {
    /// The name used in pipeline files and manifests.
    pub fn name(self) -> &'static str {
        match self {
            LongTexts::Truncate => "truncate",
            LongTexts::Chunks { .. } => "chunks",
        }
    }
}

/// How a long text's window embeddings are pooled into one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkPooling {
    /// Their average (then L2-normalised again when the backbone normalises).
    #[default]
    Mean,
    /// Their element-wise maximum (likewise).
    Max,
}

impl ChunkPooling {
    /// The name used in pipeline files and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ChunkPooling::Mean => "mean",
            ChunkPooling::Max => "max",
        }
    }
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA (needs an ONNX Runtime GPU build, the NVIDIA driver, CUDA 13 and cuDNN 9).
    Cuda {
        /// The GPU to use.
        device_id: i32,
        /// When CUDA cannot be initialised: warn and run on CPU (`true`), or fail (`false`).
        fallback: bool,
    },
}

impl Provider {
    /// The name used in pipeline files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda { .. } => "cuda",
        }
    }
}

/// Settings of a [`TextBackbone`].
#[derive(Debug, Clone, PartialEq)]
pub struct TextBackboneConfig {
    /// Tokens kept per text, special tokens included. Default 256 (sentence-transformers' `max_seq_length`).
    /// With [`LongTexts::Chunks`], the width of each window.
    pub max_length: usize,
    /// Texts longer than `max_length`: truncated (default) or embedded in windows and pooled.
    pub long_texts: LongTexts,
    /// Texts per inference call (at most: [`plan_batches`](crate::plan_batches) cuts where lengths change).
    /// Default 16, the fastest measured for MiniLM-L6 on 2 cores, short sentences and 256-token documents
    /// alike (benches/README.md, "A graph written for speed").
    pub batch_size: usize,
    /// Pooling of token states. Default [`Pooling::Mean`].
    pub pooling: Pooling,
    /// L2-normalise each embedding. Default `true`.
    pub normalize: bool,
    /// ONNX Runtime intra-op threads (shared out among the sessions). Default: the number of cores.
    pub intra_threads: usize,
    /// Sessions running batches at once. Small graphs use cores better as several single-threaded sessions
    /// than as one multi-threaded session. Default 1.
    pub sessions: usize,
    /// Name of the graph output to pool; `None` takes the first output. Default `None`.
    pub output: Option<String>,
    /// Draw a progress bar on a terminal. Default `true`.
    pub progress: bool,
    /// Execution provider. Default [`Provider::Cpu`].
    pub provider: Provider,
}

impl Default for TextBackboneConfig {
    fn default() -> Self {
        TextBackboneConfig {
            max_length: 256,
            long_texts: LongTexts::Truncate,
            batch_size: 16,
            pooling: Pooling::Mean,
            normalize: true,
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sessions: 1,
            output: None,
            progress: true,
            provider: Provider::Cpu,
        }
    }
}

/// What one [`TextBackbone::embed`] call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractionStats {
    /// Texts embedded.
    pub rows: usize,
    /// Inference calls made.
    pub batches: usize,
    /// Real (unpadded) tokens fed.
    pub tokens: usize,
    /// Tokens fed including per-batch padding.
    pub padded_tokens: usize,
    /// Texts cut at `max_length` (none when long texts are chunked).
    pub truncated_rows: usize,
    /// Texts longer than `max_length`: truncated, or embedded in several windows.
    pub long_rows: usize,
    /// Token sequences fed: one per text when truncating, one per window when chunking.
    pub sequences: usize,
    /// Seconds spent tokenizing.
    pub tokenize_seconds: f64,
    /// Seconds spent in total.
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy)]
enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

/// A frozen text encoder: ONNX graph + tokenizer.
pub struct TextBackbone {
    /// One or more sessions of the same graph; batches are shared out among them.
    sessions: Vec<Session>,
    tokenizer: TextTokenizer,
    config: TextBackboneConfig,
    feeds: Vec<(String, Feed)>,
    output: String,
    model_path: PathBuf,
    provider_used: &'static str,
    fallback_reason: Option<String>,
}

impl std::fmt::Debug for TextBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextBackbone")
            .field("model", &self.model_path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TextBackbone {
    /// Opens the graph and tokenizer and checks that graft can feed the graph's inputs.
    pub fn load(
        runtime: &Runtime,
        model: &Path,
        tokenizer: &Path,
        config: TextBackboneConfig,
    ) -> Result<TextBackbone, BackboneError> {
        if config.batch_size == 0 {
            return Err(BackboneError::InvalidConfig {
                name: "batch_size",
                reason: "must be at least 1".to_owned(),
            });
        }
        if config.max_length < 2 {
            return Err(BackboneError::InvalidConfig {
                name: "max_length",
                reason: "must be at least 2 (room for the special tokens)".to_owned(),
            });
        }
        if config.intra_threads == 0 {
            return Err(BackboneError::InvalidConfig {
                name: "threads",
                reason: "must be at least 1".to_owned(),
            });
        }
        for (what, path) in [("model", model), ("tokenizer", tokenizer)] {
            if !path.is_file() {
                return Err(BackboneError::MissingFile {
                    what,
                    path: path.to_path_buf(),
                });
            }
        }
        let text_tokenizer =
            TextTokenizer::open_with(tokenizer, config.max_length, config.long_texts)?;
        let model_err = |message: String| BackboneError::Model {
            path: model.to_path_buf(),
            message,
        };
        if config.sessions == 0 || config.sessions > config.intra_threads {
            return Err(BackboneError::InvalidConfig {
                name: "sessions",
                reason: format!(
                    "must be between 1 and the number of threads ({}), got {}",
                    config.intra_threads, config.sessions
                ),
            });
        }
        let threads_of = |s: usize| session_threads(config.intra_threads, config.sessions, s);
        let (session, provider_used, fallback_reason) =
            open_session_on(runtime, model, threads_of(0), config.provider)?;

        let mut feeds = Vec::new();
        for input in session.inputs() {
            let feed = match input.name() {
                "input_ids" => Feed::InputIds,
                "attention_mask" => Feed::AttentionMask,
                "token_type_ids" => Feed::TokenTypeIds,
                other => {
                    return Err(model_err(format!(
                        "input `{other}` is not one graft can feed; a text backbone may take \
                         input_ids, attention_mask and token_type_ids"
                    )));
                }
            };
            feeds.push((input.name().to_owned(), feed));
        }
        if !feeds.iter().any(|(_, f)| matches!(f, Feed::InputIds)) {
            return Err(model_err("the graph has no `input_ids` input".to_owned()));
        }
        let outputs: Vec<(String, ort::value::ValueType)> = session
            .outputs()
            .iter()
            .map(|o| (o.name().to_owned(), o.dtype().clone()))
            .collect();
        let output = choose_output(&outputs, config.output.as_deref()).map_err(model_err)?;
        let mut sessions = vec![session];
        // The others on the provider the first one ended up with (no second fallback warning).
        let provider = if provider_used == "CUDAExecutionProvider" {
            config.provider
        } else {
            Provider::Cpu
        };
        for s in 1..config.sessions {
            sessions.push(open_session_on(runtime, model, threads_of(s), provider)?.0);
        }
        Ok(TextBackbone {
            provider_used,
            fallback_reason,
            sessions,
            tokenizer: text_tokenizer,
            config,
            feeds,
            output,
            model_path: model.to_path_buf(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &TextBackboneConfig {
        &self.config
    }

    /// The execution provider the session runs on (`CUDAExecutionProvider` or `CPUExecutionProvider`).
    pub fn execution_provider(&self) -> &'static str {
        self.provider_used
    }

    /// Why CUDA was asked for but the session runs on CPU, if it does.
    pub fn provider_fallback(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// A handle on the tokenizer that other threads can use to prepare input for
    /// [`embed_encoded`](Self::embed_encoded) while this backbone runs inference.
    pub fn tokenizer(&self) -> TextTokenizer {
        self.tokenizer.clone()
    }

    /// Embeds `texts`; row `i` of the result belongs to `texts[i]`.
    pub fn embed<S: AsRef<str> + Sync>(
        &mut self,
        texts: &[S],
    ) -> Result<(Array2<f32>, ExtractionStats), BackboneError> {
        let started = Instant::now();
        let encoded = self.tokenizer.encode(texts)?;
        let bar = if self.config.progress {
            ProgressBar::new(texts.len() as u64)
        } else {
            ProgressBar::with_draw_target(Some(texts.len() as u64), ProgressDrawTarget::hidden())
        };
        bar.set_style(
            ProgressStyle::with_template(
                "extracting {bar:32.cyan/blue} {pos}/{len} rows  {per_sec}  ETA {eta}",
            )
            .expect("static template"),
        );
        let (embeddings, mut stats) = self.embed_encoded(&encoded, |rows| bar.inc(rows as u64))?;
        bar.finish_and_clear();
        stats.seconds = started.elapsed().as_secs_f64();
        Ok((embeddings, stats))
    }

    /// Embeds texts tokenized by [`TextTokenizer::encode`]; row `i` of the result belongs to text `i` (its
    /// windows pooled, when long texts are chunked). Calls `on_batch(sequences)` after each inference call
    /// (from the session's thread when there are several).
    pub fn embed_encoded(
        &mut self,
        encoded: &EncodedTexts,
        on_batch: impl Fn(usize) + Sync,
    ) -> Result<(Array2<f32>, ExtractionStats), BackboneError> {
        // Longest first: similar lengths share a batch, so little padding is computed, and the largest batch
        // (the memory peak) comes first.
        let order = encoded.length_order();
        let batches = encoded.batch_plan(&order, self.config.batch_size);
        let (embeddings, mut stats) = self.embed_into(
            encoded,
            &order,
            &batches,
            &order,
            encoded.sequences(),
            on_batch,
        )?;
        stats.tokenize_seconds = encoded.tokenize_seconds;
        stats.seconds += encoded.tokenize_seconds;
        stats.rows = encoded.len();
        stats.long_rows = encoded.long_texts();
        Ok((
            encoded.pool_windows(embeddings, self.config.normalize),
            stats,
        ))
    }

    /// Embeds the token sequences `rows` of `encoded`, in the batches [`EncodedTexts::batch_plan`] cuts them
    /// into (pass a slice of [`EncodedTexts::length_order`] to pad little); row `k` of the result belongs to
    /// sequence `rows[k]` (a text's when truncating; [`EncodedTexts::pool_windows`] joins windows).
    /// Tokenizing time is not counted.
    pub fn embed_rows(
        &mut self,
        encoded: &EncodedTexts,
        rows: &[usize],
        on_batch: impl Fn(usize) + Sync,
    ) -> Result<(Array2<f32>, ExtractionStats), BackboneError> {
        let batches = encoded.batch_plan(rows, self.config.batch_size);
        self.embed_batches(encoded, rows, &batches, on_batch)
    }

    /// Embeds the texts `rows` of `encoded` in the given `batches` (ranges of positions in `rows` that cover
    /// it in order, as [`EncodedTexts::batch_plan`] makes); row `k` of the result belongs to text `rows[k]`.
    /// A caller that stores results as it goes runs a long plan a few batches at a time with this. Tokenizing
    /// time is not counted.
    pub fn embed_batches(
        &mut self,
        encoded: &EncodedTexts,
        rows: &[usize],
        batches: &[std::ops::Range<usize>],
        on_batch: impl Fn(usize) + Sync,
    ) -> Result<(Array2<f32>, ExtractionStats), BackboneError> {
        let covered = batches.first().map_or(0, |b| b.start) == 0
            && batches.last().map_or(0, |b| b.end) == rows.len()
            && batches.windows(2).all(|w| w[0].end == w[1].start)
            && batches.iter().all(|b| b.start < b.end);
        if !covered {
            return Err(BackboneError::InvalidConfig {
                name: "batches",
                reason: format!(
                    "the batches must cover the {} rows in order, each non-empty",
                    rows.len()
                ),
            });
        }
        let positions: Vec<usize> = (0..rows.len()).collect();
        self.embed_into(encoded, rows, batches, &positions, rows.len(), on_batch)
    }

    /// The graph's per-token output states, unpooled: entry `k` is `[tokens of rows[k], hidden]` (padding
    /// dropped). Batches are consecutive runs of `rows` (pass a length order to pad little); one session
    /// computes them all. Fine-tuning caches these at a frozen block boundary.
    pub fn token_states(
        &mut self,
        encoded: &EncodedTexts,
        rows: &[usize],
        on_batch: impl Fn(usize),
    ) -> Result<Vec<Array2<f32>>, BackboneError> {
        let batches = encoded.batch_plan(rows, self.config.batch_size);
        let job = BatchJob {
            encodings: &encoded.encodings,
            rows,
            batches: &batches,
            targets: rows,
            out_rows: rows.len(),
            feeds: &self.feeds,
            output: &self.output,
            pooling: self.config.pooling,
            normalize: false,
            model_path: &self.model_path,
        };
        let mut out = Vec::with_capacity(rows.len());
        for batch in batches.iter().map(|b| &rows[b.clone()]) {
            let states = job.run_with(&mut self.sessions[0], batch, |states, _| {
                let states = states
                    .into_dimensionality::<ndarray::Ix3>()
                    .map_err(|_| "token states must be [batch, tokens, hidden]".to_owned())?;
                Ok(batch
                    .iter()
                    .enumerate()
                    .map(|(r, &i)| {
                        let tokens = encoded.encodings[i].get_ids().len();
                        states.slice(ndarray::s![r, ..tokens, ..]).to_owned()
                    })
                    .collect::<Vec<_>>())
            })?;
            out.extend(states);
            on_batch(batch.len());
        }
        Ok(out)
    }

    /// Embeds texts `rows` in `batches` (ranges of positions in `rows`); text `rows[k]` goes to row
    /// `targets[k]` of an `out_rows`-row result.
    fn embed_into(
        &mut self,
        encoded: &EncodedTexts,
        rows: &[usize],
        batches: &[std::ops::Range<usize>],
        targets: &[usize],
        out_rows: usize,
        on_batch: impl Fn(usize) + Sync,
    ) -> Result<(Array2<f32>, ExtractionStats), BackboneError> {
        let started = Instant::now();
        let encodings = &encoded.encodings;
        let truncated_rows = if encoded.windows.is_some() {
            0
        } else {
            rows.iter()
                .filter(|&&i| !encodings[i].get_overflowing().is_empty())
                .count()
        };
        let mut stats = ExtractionStats {
            rows: rows.len(),
            truncated_rows,
            long_rows: truncated_rows,
            sequences: rows.len(),
            ..ExtractionStats::default()
        };
        for batch in batches.iter().map(|b| &rows[b.clone()]) {
            let lengths = batch.iter().map(|&i| encodings[i].get_ids().len());
            stats.tokens += lengths.clone().sum::<usize>();
            stats.padded_tokens += batch.len() * lengths.max().unwrap_or(0);
            stats.batches += 1;
        }

        // Each session takes the next batch when free and writes its rows straight into the result. A batch
        // is computed whole by one session, so the result does not depend on which one, nor on how many.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let result = std::sync::Mutex::new(None);
        let job = BatchJob {
            encodings,
            rows,
            batches,
            targets,
            out_rows,
            feeds: &self.feeds,
            output: &self.output,
            pooling: self.config.pooling,
            normalize: self.config.normalize,
            model_path: &self.model_path,
        };
        if self.sessions.len() == 1 {
            job.run_all(&mut self.sessions[0], &next, &result, &on_batch)?;
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = self
                    .sessions
                    .iter_mut()
                    .map(|session| {
                        let (job, next, result, on_batch) = (&job, &next, &result, &on_batch);
                        scope.spawn(move || job.run_all(session, next, result, on_batch))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("an inference thread does not panic"))
                    .collect::<Result<Vec<()>, _>>()
            })?;
        }
        stats.seconds = started.elapsed().as_secs_f64();
        let result = result
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok((result.unwrap_or_else(|| Array2::zeros((0, 0))), stats))
    }
}

/// Intra-op threads of session `index` when `threads` are shared out as evenly as possible among `sessions`
/// (5 threads, 2 sessions: 3 + 2).
pub fn session_threads(threads: usize, sessions: usize, index: usize) -> usize {
    threads / sessions + usize::from(index < threads % sessions)
}

/// What every session needs to run a batch and store its rows.
struct BatchJob<'a> {
    encodings: &'a [Encoding],
    /// Texts in batch order.
    rows: &'a [usize],
    /// The batches: ranges of positions in `rows`, covering it in order.
    batches: &'a [std::ops::Range<usize>],
    /// Result row of each entry of `rows`.
    targets: &'a [usize],
    out_rows: usize,
    feeds: &'a [(String, Feed)],
    output: &'a str,
    pooling: Pooling,
    normalize: bool,
    model_path: &'a Path,
}

impl BatchJob<'_> {
    /// Runs batches on `session` until none are left, writing (and normalising) their rows into `result`.
    fn run_all(
        &self,
        session: &mut Session,
        next: &std::sync::atomic::AtomicUsize,
        result: &std::sync::Mutex<Option<Array2<f32>>>,
        on_batch: &(impl Fn(usize) + Sync),
    ) -> Result<(), BackboneError> {
        loop {
            let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(batch) = self.batches.get(b) else {
                return Ok(());
            };
            let (start, end) = (batch.start, batch.end);
            let pooled = self.run(session, &self.rows[start..end])?;
            {
                let mut result = result
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let out =
                    result.get_or_insert_with(|| Array2::zeros((self.out_rows, pooled.ncols())));
                for (r, &target) in self.targets[start..end].iter().enumerate() {
                    let mut row = out.row_mut(target);
                    row.assign(&pooled.row(r));
                    if self.normalize {
                        let norm = row.dot(&row).sqrt();
                        if norm > 0.0 {
                            row /= norm;
                        }
                    }
                }
            }
            on_batch(end - start);
        }
    }

    /// One inference call: pad the batch to its longest row, run, pool.
    fn run(&self, session: &mut Session, batch: &[usize]) -> Result<Array2<f32>, BackboneError> {
        self.run_with(session, batch, |states, mask| {
            pool(states, mask, self.pooling)
        })
    }

    /// One inference call: pad the batch to its longest row, run, hand the output states and the mask to
    /// `take`.
    fn run_with<T>(
        &self,
        session: &mut Session,
        batch: &[usize],
        take: impl FnOnce(ArrayViewD<'_, f32>, &Array2<i64>) -> Result<T, String>,
    ) -> Result<T, BackboneError> {
        let encodings = self.encodings;
        let width = batch
            .iter()
            .map(|&i| encodings[i].get_ids().len())
            .max()
            .unwrap_or(0);
        let mut ids = Array2::<i64>::zeros((batch.len(), width));
        let mut mask = Array2::<i64>::zeros((batch.len(), width));
        let mut types = Array2::<i64>::zeros((batch.len(), width));
        for (r, &i) in batch.iter().enumerate() {
            let enc = &encodings[i];
            for (t, ((&id, &m), &ty)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[[r, t]] = i64::from(id);
                mask[[r, t]] = i64::from(m);
                types[[r, t]] = i64::from(ty);
            }
        }
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(self.feeds.len());
        for (name, kind) in self.feeds {
            let array = match kind {
                Feed::InputIds => &ids,
                Feed::AttentionMask => &mask,
                Feed::TokenTypeIds => &types,
            };
            feed.push((
                Cow::Borrowed(name.as_str()),
                TensorRef::from_array_view(array)?.into(),
            ));
        }
        let outputs = session.run(feed)?;
        let states = outputs[self.output].try_extract_array::<f32>()?;
        take(states, &mask).map_err(|message| BackboneError::Model {
            path: self.model_path.to_path_buf(),
            message,
        })
    }
}

/// Opens a session on `provider`; returns it, the provider in use and, after a fallback to CPU, the reason.
pub(crate) fn open_session_on(
    runtime: &Runtime,
    model: &Path,
    intra_threads: usize,
    provider: Provider,
) -> Result<(Session, &'static str, Option<String>), BackboneError> {
    let model_err = |message: String| BackboneError::Model {
        path: model.to_path_buf(),
        message,
    };
    let builder = || -> Result<ort::session::builder::SessionBuilder, BackboneError> {
        Ok(Session::builder(runtime.environment())?
            .with_intra_threads(intra_threads)
            .map_err(ort::Error::<()>::from)?)
    };
    if let Provider::Cuda {
        device_id,
        fallback,
    } = provider
    {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure();
        // Without `error_on_failure`, ONNX Runtime logs the failure and quietly runs on CPU.
        let attempt = builder()?
            .with_execution_providers([cuda])
            .map_err(|e| ort::Error::<()>::from(e).to_string())
            .and_then(|mut b| b.commit_from_file(model).map_err(|e| e.to_string()));
        match attempt {
            Ok(session) => return Ok((session, "CUDAExecutionProvider", None)),
            Err(reason) if fallback => {
                tracing::warn!(
                    device_id,
                    %reason,
                    "CUDA cannot be initialised; running on CPU (set `fallback = false` to make this an error)"
                );
                let session = builder()?
                    .commit_from_file(model)
                    .map_err(|e| model_err(e.to_string()))?;
                return Ok((session, "CPUExecutionProvider", Some(reason)));
            }
            Err(reason) => {
                return Err(BackboneError::Provider {
                    provider: "CUDA",
                    reason,
                    hint: "CUDA needs an NVIDIA GPU and driver, ONNX Runtime's GPU build (graft provisions \
                           onnxruntime-gpu when `provider = \"cuda\"`), CUDA 13 and cuDNN 9 libraries on \
                           LD_LIBRARY_PATH; or allow the CPU fallback"
                        .to_owned(),
                });
            }
        }
    }
    let session = builder()?
        .commit_from_file(model)
        .map_err(|e| model_err(e.to_string()))?;
    Ok((session, "CPUExecutionProvider", None))
}

/// Texts turned into token sequences, ready for [`TextBackbone::embed_encoded`]: one sequence per text, or
/// with [`LongTexts::Chunks`] one per window, each text's windows consecutive.
#[derive(Debug, Clone)]
pub struct EncodedTexts {
    encodings: Vec<Encoding>,
    windows: Option<Windows>,
    tokenize_seconds: f64,
}

/// Which sequences are whose windows, and how they are pooled.
#[derive(Debug, Clone)]
struct Windows {
    of_text: Vec<std::ops::Range<usize>>,
    pooling: ChunkPooling,
}

impl EncodedTexts {
    /// Number of texts.
    pub fn len(&self) -> usize {
        self.windows
            .as_ref()
            .map_or(self.encodings.len(), |w| w.of_text.len())
    }

    /// Whether there are no texts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of token sequences to embed: [`len`](Self::len) when truncating, the windows when chunking.
    pub fn sequences(&self) -> usize {
        self.encodings.len()
    }

    /// The sequences of text `text` (`text..text + 1` when truncating).
    pub fn windows_of(&self, text: usize) -> std::ops::Range<usize> {
        self.windows
            .as_ref()
            .map_or(text..text + 1, |w| w.of_text[text].clone())
    }

    /// Texts longer than the tokenizer's `max_length`: truncated, or cut into several windows.
    pub fn long_texts(&self) -> usize {
        match &self.windows {
            Some(w) => w.of_text.iter().filter(|r| r.len() > 1).count(),
            None => self
                .encodings
                .iter()
                .filter(|e| !e.get_overflowing().is_empty())
                .count(),
        }
    }

    /// One row per text from one row per sequence (`rows` as [`TextBackbone::embed_rows`] returns them, in
    /// sequence order): a text's windows pooled, then L2-normalised again when `normalize`. When truncating
    /// the rows are returned as they are.
    pub fn pool_windows(&self, rows: Array2<f32>, normalize: bool) -> Array2<f32> {
        let Some(windows) = &self.windows else {
            return rows;
        };
        let mut out = Array2::zeros((windows.of_text.len(), rows.ncols()));
        for (mut row, range) in out.rows_mut().into_iter().zip(&windows.of_text) {
            let part = rows.slice(ndarray::s![range.clone(), ..]);
            if range.len() == 1 {
                // A text of one window is embedded exactly as when truncating, bit for bit.
                row.assign(&part.row(0));
                continue;
            }
            match windows.pooling {
                ChunkPooling::Mean => {
                    row.assign(&part.mean_axis(Axis(0)).expect("a text has a window"))
                }
                ChunkPooling::Max => {
                    row.fill(f32::NEG_INFINITY);
                    for window in part.rows() {
                        row.zip_mut_with(&window, |a, &b| *a = a.max(b));
                    }
                }
            }
            if normalize {
                let norm = row.dot(&row).sqrt();
                if norm > 0.0 {
                    row /= norm;
                }
            }
        }
        out
    }

    /// Sequence indices from the longest to the shortest (ties in index order): the order in which
    /// [`TextBackbone::embed_encoded`] forms batches.
    pub fn length_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.encodings.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.encodings[i].get_ids().len()));
        order
    }

    /// The batches [`plan_batches`](crate::plan_batches) cuts the sequences `rows` (taken in that order)
    /// into: ranges of positions in `rows`. Embedding consecutive runs of these batches
    /// ([`TextBackbone::embed_batches`]) forms exactly the batches of one call over all of `rows`.
    pub fn batch_plan(&self, rows: &[usize], batch_size: usize) -> Vec<std::ops::Range<usize>> {
        let lengths: Vec<usize> = rows
            .iter()
            .map(|&i| self.encodings[i].get_ids().len())
            .collect();
        crate::plan_batches(&lengths, batch_size)
    }

    /// Token ids of sequence `row` (special tokens included, truncated, unpadded): what the graph's
    /// `input_ids` holds for it, e.g. to feed a model exported by graft.
    pub fn ids(&self, row: usize) -> &[u32] {
        self.encodings[row].get_ids()
    }

    /// Seconds the tokenizer took.
    pub fn tokenize_seconds(&self) -> f64 {
        self.tokenize_seconds
    }
}

/// A backbone's tokenizer, configured (truncation or windows, no fixed padding) and cheap to clone across
/// threads.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Arc<Tokenizer>,
    path: PathBuf,
    long_texts: LongTexts,
    /// With chunks: tokens of text per window, and the overlap of neighbouring windows.
    room: usize,
    overlap: usize,
}

impl TextTokenizer {
    /// Reads a Hugging Face `tokenizer.json`, set to pad nothing (batches are padded to their own longest
    /// row) and to truncate at `max_length` tokens.
    pub fn open(path: &Path, max_length: usize) -> Result<TextTokenizer, BackboneError> {
        TextTokenizer::open_with(path, max_length, LongTexts::Truncate)
    }

    /// Special tokens the tokenizer adds to one text (`[CLS]` and `[SEP]`: 2).
    pub fn special_tokens(&self) -> usize {
        self.tokenizer
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false))
    }

    /// [`open`](Self::open), with texts longer than `max_length` tokens truncated or cut into windows.
    pub fn open_with(
        path: &Path,
        max_length: usize,
        long_texts: LongTexts,
    ) -> Result<TextTokenizer, BackboneError> {
        let tokenizer_err = |message: String| BackboneError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| tokenizer_err(e.to_string()))?;
        // The tokenizers library panics (an `expect`) when its decoder's value is not JSON at all, so the
        // syntax is checked here first, with the line and column; a panic from any other damaged setting
        // is still turned into an error that names the file.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| tokenizer_err(format!("it is not valid JSON: {e}")))?;
        let mut tok = std::panic::catch_unwind(|| text.parse::<Tokenizer>())
            .map_err(|panic| tokenizer_err(panic_message(panic)))?
            .map_err(|e| tokenizer_err(e.to_string()))?;
        // Some shipped tokenizers pad every text to a fixed length; we pad per batch instead.
        tok.with_padding(None);
        let specials = tok
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        let room = max_length.saturating_sub(specials);
        // The library's `stride` is the overlap of neighbouring windows, in tokens of text.
        let overlap = match long_texts {
            LongTexts::Truncate => {
                tok.with_truncation(Some(TruncationParams {
                    max_length,
                    ..TruncationParams::default()
                }))
                .map_err(|e| tokenizer_err(e.to_string()))?;
                0
            }
            LongTexts::Chunks { .. } if room == 0 => {
                return Err(BackboneError::InvalidConfig {
                    name: "max_length",
                    reason: format!(
                        "a window of {max_length} tokens has no room for text beside {specials} special tokens"
                    ),
                });
            }
            LongTexts::Chunks {
                stride: Some(stride),
                ..
            } if stride == 0 || stride > room => {
                return Err(BackboneError::InvalidConfig {
                    name: "stride",
                    reason: format!(
                        "must be between 1 and {room} (the {max_length}-token window less {specials} \
                         special tokens), got {stride}"
                    ),
                });
            }
            LongTexts::Chunks { stride, .. } => {
                // Windows are cut after tokenizing the whole text: the library's own truncation stops
                // tokenizing at `max_length` tokens (tokenizers 0.23), so its overflowing windows end there.
                tok.with_truncation(None)
                    .map_err(|e| tokenizer_err(e.to_string()))?;
                room - stride.unwrap_or((room * 3 / 4).max(1)).min(room)
            }
        };
        if let Some(processor) = tok.get_post_processor()
            && let Ok(json) = serde_json::to_value(processor)
            && let Some(undefined) = undefined_special_token(&json)
        {
            return Err(tokenizer_err(format!(
                "its post-processor's template names the special token `{undefined}`, which its \
                 `special_tokens` do not define"
            )));
        }
        let opened = TextTokenizer {
            tokenizer: Arc::new(tok),
            path: path.to_path_buf(),
            long_texts,
            room,
            overlap,
        };
        // A file can parse and still fail at its first text (a template naming a special token it does not
        // define): found here, at the file, rather than mid-run.
        opened.encode(&["a"])?;
        Ok(opened)
    }

    /// Tokenizes `texts` in parallel (rayon).
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<EncodedTexts, BackboneError> {
        let started = Instant::now();
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let failed = |message: String| BackboneError::Tokenizer {
            path: self.path.clone(),
            message,
        };
        // The tokenizers library panics on some damaged files (an `expect` on a template's special token)
        // instead of returning an error; the panic is turned into one that names the file.
        let chunks = matches!(self.long_texts, LongTexts::Chunks { .. });
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Windows get their special tokens once cut.
            self.tokenizer.encode_batch_fast(inputs, !chunks)
        }))
        .map_err(|panic| failed(panic_message(panic)))?;
        let encodings = encoded.map_err(|e| failed(e.to_string()))?;
        let (encodings, windows) = match self.long_texts {
            LongTexts::Truncate => (encodings, None),
            LongTexts::Chunks { pooling, .. } => {
                let mut sequences = Vec::with_capacity(encodings.len());
                let mut of_text = Vec::with_capacity(encodings.len());
                for mut text in encodings {
                    let start = sequences.len();
                    // The library's own cut: the first window, the others as its "overflowing" ones.
                    text.truncate(
                        self.room,
                        self.overlap,
                        tokenizers::TruncationDirection::Right,
                    );
                    let rest = text.take_overflowing();
                    for window in std::iter::once(text).chain(rest) {
                        let window = self
                            .tokenizer
                            .post_process(window, None, true)
                            .map_err(|e| failed(e.to_string()))?;
                        sequences.push(window);
                    }
                    of_text.push(start..sequences.len());
                }
                (sequences, Some(Windows { of_text, pooling }))
            }
        };
        Ok(EncodedTexts {
            encodings,
            windows,
            tokenize_seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// A special token that a `TemplateProcessing` post-processor (anywhere in `processor`, which may be a
/// sequence of them) puts into its templates without defining it: the tokenizers library reads such a file,
/// then panics at the first text.
fn undefined_special_token(processor: &serde_json::Value) -> Option<String> {
    match processor {
        serde_json::Value::Array(items) => items.iter().find_map(undefined_special_token),
        serde_json::Value::Object(map) => {
            if map.get("type").and_then(serde_json::Value::as_str) == Some("TemplateProcessing") {
                let defined = map
                    .get("special_tokens")
                    .and_then(serde_json::Value::as_object);
                let named = ["single", "pair"]
                    .iter()
                    .filter_map(|t| map.get(*t).and_then(serde_json::Value::as_array))
                    .flatten()
                    .filter_map(|piece| piece.pointer("/SpecialToken/id"))
                    .filter_map(serde_json::Value::as_str);
                for id in named {
                    if !defined.is_some_and(|d| d.contains_key(id)) {
                        return Some(id.to_owned());
                    }
                }
            }
            map.values().find_map(undefined_special_token)
        }
        _ => None,
    }
}

/// The graph output graft pools: the one named, else `sentence_embedding` (sentence-transformers' pooled
/// output), else the first float output of rank 3 (token states), else the first float output of rank 2
/// (already pooled). Only float32 outputs can be features; the error lists every output with its type.
fn choose_output(
    outputs: &[(String, ort::value::ValueType)],
    requested: Option<&str>,
) -> Result<String, String> {
    let float_rank = |t: &ort::value::ValueType| match t {
        ort::value::ValueType::Tensor {
            ty: ort::value::TensorElementType::Float32,
            shape,
            ..
        } => Some(shape.len()),
        _ => None,
    };
    let listing = || {
        outputs
            .iter()
            .map(|(name, t)| format!("{name} ({t})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match requested {
        Some(name) => match outputs.iter().find(|(n, _)| n == name) {
            None => {
                return Err(format!(
                    "no output named `{name}`; the graph's outputs are: {}",
                    listing()
                ));
            }
            Some((_, t)) if float_rank(t).is_none() => {
                return Err(format!(
                    "output `{name}` holds {t}, not float32 features; the graph's outputs are: {}",
                    listing()
                ));
            }
            Some((n, _)) => Some(n),
        },
        None => outputs
            .iter()
            .find(|(n, t)| n == "sentence_embedding" && float_rank(t).is_some())
            .or_else(|| outputs.iter().find(|(_, t)| float_rank(t) == Some(3)))
            .or_else(|| outputs.iter().find(|(_, t)| float_rank(t) == Some(2)))
            .map(|(n, _)| n),
    };
    chosen.cloned().ok_or_else(|| {
        format!(
            "no output holds float32 token states [batch, tokens, dim] or embeddings [batch, dim]; the graph's \
             outputs are: {} (name one with `output` in [backbone] or --output-name)",
            listing()
        )
    })
}

/// Pools `[batch, tokens, dim]` states with the attention mask; `[batch, dim]` outputs are already pooled.
fn pool(
    states: ArrayViewD<'_, f32>,
    mask: &Array2<i64>,
    pooling: Pooling,
) -> Result<Array2<f32>, String> {
    match states.ndim() {
        2 => Ok(states
            .into_dimensionality::<ndarray::Ix2>()
            .expect("checked ndim")
            .to_owned()),
        3 => {
            let states = states
                .into_dimensionality::<ndarray::Ix3>()
                .expect("checked ndim");
            let (batch, tokens, dim) = states.dim();
            if batch != mask.nrows() || tokens != mask.ncols() {
                return Err(format!(
                    "output shape [{batch}, {tokens}, {dim}] does not match the batch [{}, {}]",
                    mask.nrows(),
                    mask.ncols()
                ));
            }
            let mut pooled = Array2::<f32>::zeros((batch, dim));
            for (b, mut out) in pooled.axis_iter_mut(Axis(0)).enumerate() {
                let row = states.index_axis(Axis(0), b);
                match pooling {
                    Pooling::Cls => out.assign(&row.index_axis(Axis(0), 0)),
                    Pooling::Mean => {
                        let mut count = 0.0f32;
                        for t in 0..tokens {
                            if mask[[b, t]] != 0 {
                                out += &row.index_axis(Axis(0), t);
                                count += 1.0;
                            }
                        }
                        if count > 0.0 {
                            out /= count;
                        }
                    }
                }
            }
            Ok(pooled)
        }
        n => Err(format!(
            "the pooled output has {n} dimensions; expected 2 or 3"
        )),
    }
}

/// What a panic inside the tokenizers library said, as an error message.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let why = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "no message".to_owned());
    format!("the tokenizer failed on its own settings ({why})")
}

#[cfg(test)]
mod tests {
    use ndarray::{Array3, array};

    use super::*;

    #[test]
    fn mean_pooling_ignores_padding_and_cls_takes_the_first_token() {
        let states = Array3::from_shape_vec(
            (2, 3, 2),
            vec![
                1.0, 2.0, 3.0, 4.0, 100.0, 100.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
            ],
        )
        .unwrap();
        let mask = array![[1, 1, 0], [1, 1, 1]];
        let mean = pool(states.view().into_dyn(), &mask, Pooling::Mean).unwrap();
        assert_eq!(mean, array![[2.0, 3.0], [7.0, 8.0]]);
        let cls = pool(states.view().into_dyn(), &mask, Pooling::Cls).unwrap();
        assert_eq!(cls, array![[1.0, 2.0], [5.0, 6.0]]);
    }

    #[test]
    fn already_pooled_output_passes_through_and_bad_ranks_are_errors() {
        let states = array![[1.0f32, 2.0], [3.0, 4.0]];
        let mask = array![[1, 1], [1, 0]];
        assert_eq!(
            pool(states.view().into_dyn(), &mask, Pooling::Mean).unwrap(),
            states
        );
        let flat = ndarray::Array1::<f32>::zeros(4);
        let err = pool(flat.view().into_dyn(), &mask, Pooling::Mean).unwrap_err();
        assert_eq!(err, "the pooled output has 1 dimensions; expected 2 or 3");
    }
}
