//! One module per subcommand: its arguments (clap) and what it does with them.

/// `print!` that returns an error instead of panicking when standard output cannot be written.
macro_rules! out {
    ($($arg:tt)*) => { $crate::commands::write_stdout(format_args!($($arg)*)) };
}

/// `println!` that returns an error instead of panicking when standard output cannot be written.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::commands::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod cache;
pub mod check;
pub mod compare;
pub mod evaluate;
pub mod export;
pub mod extract;
pub mod fetch;
pub mod merge;
pub mod mlflow;
pub mod models;
pub mod predict;
pub mod run;
pub mod schema;

use std::path::{Path, PathBuf};

use graft_engine::PipelineError;

/// The execution providers a command line can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderArg {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// NVIDIA GPUs through ONNX Runtime's CUDA provider.
    Cuda,
}

/// Pooling of token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolingArg {
    /// Mean over the attention mask.
    Mean,
    /// The first token's state.
    Cls,
}

impl From<PoolingArg> for graft_engine::Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::Mean => graft_engine::Pooling::Mean,
            PoolingArg::Cls => graft_engine::Pooling::Cls,
        }
    }
}

/// What becomes of texts longer than `--max-length` tokens.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LongTextsArg {
    /// Keep the first `--max-length` tokens.
    Truncate,
    /// Embed windows of `--max-length` tokens and pool them into one row.
    Chunks,
}

/// How chunked windows are pooled.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ChunkPoolingArg {
    /// The windows' average.
    Mean,
    /// Their element-wise maximum.
    Max,
}

/// `--long-texts`, `--stride` and `--chunk-pooling`, for the commands that embed texts.
#[derive(Debug, clap::Args)]
pub struct LongTextsArgs {
    /// Texts longer than --max-length tokens: truncate (default), or chunks: windows of --max-length
    /// tokens embedded separately and pooled into one row.
    #[arg(long, value_enum)]
    pub long_texts: Option<LongTextsArg>,
    /// With --long-texts chunks: tokens of text between the starts of neighbouring windows (default:
    /// three quarters of a window, so a quarter overlaps).
    #[arg(long)]
    pub stride: Option<usize>,
    /// With --long-texts chunks: how the windows' embeddings are pooled (default: mean).
    #[arg(long, value_enum)]
    pub chunk_pooling: Option<ChunkPoolingArg>,
}

impl LongTextsArgs {
    /// The backbone's setting; `--stride` and `--chunk-pooling` without chunks are refused.
    pub fn long_texts(&self) -> Result<graft_engine::LongTexts, PipelineError> {
        match self.long_texts {
            Some(LongTextsArg::Chunks) => Ok(graft_engine::LongTexts::Chunks {
                stride: self.stride,
                pooling: match self.chunk_pooling {
                    Some(ChunkPoolingArg::Max) => graft_engine::ChunkPooling::Max,
                    _ => graft_engine::ChunkPooling::Mean,
                },
            }),
            _ if self.stride.is_some() || self.chunk_pooling.is_some() => Err(PipelineError::Job {
                message: "--stride and --chunk-pooling apply to --long-texts chunks".to_owned(),
                hint: "add --long-texts chunks, or leave them out".to_owned(),
            }),
            _ => Ok(graft_engine::LongTexts::Truncate),
        }
    }
}

/// How inference runs, for the commands that embed rows (`extract`, `predict`).
#[derive(Debug, clap::Args)]
pub struct InferenceArgs {
    /// Rows per inference call (16 was fastest for MiniLM on 2 cores: benches/README.md).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Cache folder (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Where inference runs (`extract`, `predict`).
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Execution provider.
    #[arg(long, value_enum, default_value_t = ProviderArg::Cpu)]
    pub provider: ProviderArg,
    /// GPU to use with --provider cuda.
    #[arg(long, default_value_t = 0)]
    pub device_id: i32,
    /// With --provider cuda: fail instead of running on CPU when CUDA cannot be initialised.
    #[arg(long)]
    pub no_fallback: bool,
}

impl DeviceArgs {
    /// As the engine takes it.
    pub fn provider(&self) -> graft_engine::Provider {
        match self.provider {
            ProviderArg::Cpu => graft_engine::Provider::Cpu,
            ProviderArg::Cuda => graft_engine::Provider::Cuda {
                device_id: self.device_id,
                fallback: !self.no_fallback,
            },
        }
    }
}

/// `--model` (+ `--tokenizer`) as a model source: a folder holding model.onnx (or onnx/model.onnx) and
/// tokenizer.json (returned too, for its sentence-transformers settings), an `.onnx` file (or any existing
/// file) with its tokenizer, or else a registry name.
pub fn model_source(
    model: String,
    tokenizer: Option<PathBuf>,
) -> Result<(graft_config::ModelSource, Option<graft_engine::ModelFolder>), PipelineError> {
    if Path::new(&model).is_dir() {
        if tokenizer.is_some() {
            return Err(PipelineError::Job {
                message: format!("--model {model} is a folder, and --tokenizer is given too"),
                hint: "a model folder brings its own tokenizer.json; drop --tokenizer".to_owned(),
            });
        }
        let folder = graft_engine::ModelFolder::open(Path::new(&model)).map_err(|e| PipelineError::Job {
            message: e.to_string(),
            hint: "a model folder holds model.onnx (or onnx/model.onnx) and tokenizer.json, as Hugging Face's \
                   exporters write them"
                .to_owned(),
        })?;
        let source = graft_config::ModelSource::Files {
            onnx: folder.onnx.clone(),
            tokenizer: folder.tokenizer.clone(),
            sha256: None,
        };
        return Ok((source, Some(folder)));
    }
    let is_file = model.ends_with(".onnx") || Path::new(&model).is_file();
    match (is_file, tokenizer) {
        (true, Some(tokenizer)) => Ok((
            graft_config::ModelSource::Files {
                onnx: PathBuf::from(&model),
                tokenizer,
                sha256: None,
            },
            None,
        )),
        (true, None) => Err(PipelineError::Job {
            message: format!("--model {model} is a file, and --tokenizer is missing"),
            hint: "give the model's tokenizer.json with --tokenizer, or a model folder or registry name as --model"
                .to_owned(),
        }),
        (false, _) if looks_like_a_path(&model) => Err(PipelineError::Job {
            message: format!("--model {model}: no such file or folder"),
            hint: "give an existing model folder (model.onnx + tokenizer.json), an .onnx file with --tokenizer, \
                   or a registry name (`graft models` lists them)"
                .to_owned(),
        }),
        (false, _) => Ok((graft_config::ModelSource::Registry(model), None)),
    }
}

/// `--model` / `--tokenizer` of `predict` and `evaluate`: another copy of the run's backbone.
#[derive(Debug, clap::Args)]
pub struct ModelOverride {
    /// Use this backbone instead of the run's (registry name, model folder, or .onnx with --tokenizer);
    /// refused unless its sha256 is the one the head was trained on.
    #[arg(long)]
    pub model: Option<String>,
    /// The tokenizer.json of an .onnx --model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl ModelOverride {
    /// The model source, when one is given.
    pub fn source(self) -> Result<Option<graft_config::ModelSource>, PipelineError> {
        self.model
            .map(|m| model_source(m, self.tokenizer).map(|(source, _)| source))
            .transpose()
    }
}

/// All cores, for ONNX Runtime's intra-op threads when not told.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Registry names are plain words (`minilm-l6-int8`); a value with a path separator or a file extension
/// names a file or folder.
pub(crate) fn looks_like_a_path(model: &str) -> bool {
    model.contains('/')
        || model.contains('\\')
        || model.starts_with('.')
        || model.ends_with(".onnx")
}

/// Writes to standard output; a failed write (a full disk, a closed pipe) is an error that says so, not a
/// panic.
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>) -> Result<(), PipelineError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .map_err(|e| PipelineError::Job {
            message: format!("cannot write to standard output: {e}"),
            hint: "check where the output goes (a full disk, a closed pipe), or write to a file with --output \
                   where the command has it"
                .to_owned(),
        })
}
