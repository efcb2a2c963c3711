//! `graft merge`: the part files of a sharded `extract`, in input order.

use std::path::PathBuf;

use graft_engine::PipelineError;

/// Merge the part files of a sharded `extract` into one file in input order.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder the shards wrote into (their --output).
    pub parts: PathBuf,
    /// The merged file (.parquet or .npy).
    #[arg(long)]
    pub output: PathBuf,
}

pub(crate) fn run(args: Args) -> Result<(), PipelineError> {
    let m = graft_jobs::merge(&args.parts, &args.output)?;
    outln!(
        "merged {} parts: {} rows → {}",
        m.parts,
        m.rows,
        m.output.display()
    )?;
    Ok(())
}
