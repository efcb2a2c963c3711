//! `graft predict`: new rows classified by a run's saved head.

use std::path::PathBuf;

use graft_engine::PipelineError;

use super::{InferenceArgs, all_cores};
use crate::Defaults;

/// Classify new rows with a run's saved head (features from the same frozen backbone).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `run`.
    pub run_dir: PathBuf,
    /// Rows to classify: a .csv, .tsv, .jsonl or .parquet table, or a folder of images.
    pub input: PathBuf,
    /// Predictions: .csv or .parquet (row, id, predicted class, one probability column per class).
    #[arg(long)]
    pub output: PathBuf,
    /// Which head of the run (default: the first in its pipeline).
    #[arg(long)]
    pub head: Option<String>,
    /// Column with the texts (tables).
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Column copied into the output to identify rows.
    #[arg(long)]
    pub id_column: Option<String>,
    #[command(flatten)]
    pub model: super::ModelOverride,
    /// The graph output to pool (default: the one the run used).
    #[arg(long)]
    pub output_name: Option<String>,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let model = args.model.source()?;
    let job = graft_jobs::PredictJob {
        run_dir: args.run_dir,
        input: args.input,
        text_column: args.text_column,
        id_column: args.id_column,
        output: args.output,
        head: args.head,
        model,
        output_name: args.output_name,
        batch_size: args.inference.batch_size,
        threads: args.inference.threads.unwrap_or_else(all_cores),
        provider: args.inference.device.provider(),
        cache_dir: args
            .inference
            .cache_dir
            .unwrap_or_else(|| defaults.cache_dir.clone()),
        progress: !args.inference.no_progress,
    };
    let outcome = graft_jobs::predict(&job)?;
    outln!(
        "predicted {} rows with head `{}` → {}",
        outcome.rows,
        outcome.head,
        outcome.output.display()
    )?;
    Ok(())
}
