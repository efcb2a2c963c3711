//! `graft extract`: every row of a file embedded by a frozen backbone, streamed (resumable, shardable).

use std::path::PathBuf;

use graft_engine::PipelineError;

use super::{InferenceArgs, PoolingArg, model_source};
use crate::Defaults;

/// Embed every row of a file with a frozen backbone, streaming into Parquet or .npy (resumable, shardable).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A registry backbone (e.g. minilm-l6-int8), a model folder (model.onnx or onnx/model.onnx and
    /// tokenizer.json; sentence-transformers settings are read), or an .onnx file (then give --tokenizer).
    #[arg(long)]
    pub model: String,
    /// The tokenizer.json of an .onnx --model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Input: a .csv, .tsv, .jsonl/.ndjson or .parquet table, or a folder of images (with an image backbone).
    #[arg(long)]
    pub input: PathBuf,
    /// Column (or JSON key) with the texts (tables only; a folder of images needs none).
    #[arg(long)]
    pub text_column: Option<String>,
    /// Column copied next to each embedding (otherwise rows are identified by `row`, their 0-based number).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Output: a .parquet or .npy file; with --shard, a folder for the part files.
    #[arg(long)]
    pub output: PathBuf,
    /// Inference sessions sharing --threads, running batches at once (default: 2 when there are 2 threads or
    /// more; 2 sessions of 1 thread were 6% faster than 1 of 2 on MR: benches/README.md).
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Rows per chunk: the unit of length-sorted batching, resumption and sharding.
    #[arg(long, default_value_t = 4096)]
    pub chunk_rows: usize,
    /// Process only shard I of N (I from 0), e.g. --shard "$JOB_COMPLETION_INDEX/8".
    #[arg(long)]
    pub shard: Option<graft_jobs::Shard>,
    /// Tokens kept per text (default: the registry entry's, else 256).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Pooling of token states (default: the registry entry's, else mean).
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// The graph output to pool (default: `sentence_embedding`, else the first float output of rank 3).
    #[arg(long)]
    pub output_name: Option<String>,
    /// A template each text is put through before tokenization, `{text}` marking the text
    /// (e.g. "query: {text}").
    #[arg(long)]
    pub prompt: Option<String>,
    #[command(flatten)]
    pub long_texts: super::LongTextsArgs,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    if let Some(p) = &args.prompt
        && !p.contains("{text}")
    {
        return Err(PipelineError::Job {
            message: format!("--prompt {p:?} has no {{text}} placeholder"),
            hint: "mark where each text goes, e.g. --prompt \"query: {text}\"".to_owned(),
        });
    }
    let (model, folder) = model_source(args.model, args.tokenizer)?;
    let mut job = graft_jobs::ExtractJob::new(
        model,
        args.input,
        args.text_column.unwrap_or_default(),
        args.output,
        args.inference
            .cache_dir
            .unwrap_or_else(|| defaults.cache_dir.clone()),
    );
    job.id_column = args.id_column;
    job.backbone.batch_size = args.inference.batch_size;
    if let Some(threads) = args.inference.threads {
        job.backbone.threads = threads;
    }
    job.backbone.chunk_rows = args.chunk_rows;
    job.backbone.sessions = args
        .sessions
        .unwrap_or(if job.backbone.threads >= 2 { 2 } else { 1 });
    job.shard = args.shard;
    let pooling = args.pooling.map(Into::into);
    job.backbone.pooling = match &folder {
        Some(f) => f.pooling_or(pooling)?,
        None => pooling,
    };
    job.backbone.max_length = args
        .max_length
        .or(folder.as_ref().and_then(|f| f.max_length));
    job.backbone.normalize = folder.as_ref().and_then(|f| f.normalize);
    job.backbone.long_texts = args.long_texts.long_texts()?;
    job.backbone.output_name = args.output_name;
    job.backbone.prompt = args.prompt;
    job.progress = !args.inference.no_progress;
    job.backbone.provider = args.inference.device.provider();
    let outcome = graft_jobs::extract(&job)?;
    outln!("{}", outcome.summary)?;
    Ok(())
}
