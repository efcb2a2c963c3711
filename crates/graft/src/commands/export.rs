//! `graft export`: a run's head as ONNX, merged with its backbone or alone.

use std::path::PathBuf;

use graft_engine::PipelineError;

use crate::Defaults;

/// Write a run's head as ONNX: merged with its backbone (token ids or pixels in, probabilities out) or alone.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `run`.
    pub run_dir: PathBuf,
    /// Which head of the run (default: the first in its pipeline).
    #[arg(long)]
    pub head: Option<String>,
    /// The .onnx file (default: heads/<head>.onnx in the run folder, heads/<head>.head.onnx with --head-only).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Export the head alone; its input is the backbone's features.
    #[arg(long)]
    pub head_only: bool,
    /// Cache folder (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let o = graft_jobs::export(&graft_jobs::ExportJob {
        run_dir: args.run_dir,
        head: args.head,
        output: args.output,
        head_only: args.head_only,
        cache_dir: args.cache_dir.unwrap_or_else(|| defaults.cache_dir.clone()),
    })?;
    outln!(
        "exported head `{}` → {} ({:.1} KB)",
        o.head,
        o.output.display(),
        o.bytes as f64 / 1e3
    )?;
    outln!("  inputs   {}", o.inputs.join("; "))?;
    outln!("  outputs  {}", o.outputs.join("; "))?;
    if let Some(t) = &o.tokenizer {
        outln!("  tokenizer {}", t.display())?;
    }
    Ok(())
}
