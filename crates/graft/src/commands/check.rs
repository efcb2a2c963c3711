//! `graft check`: a pipeline file checked without running it.

use std::path::PathBuf;

use graft_config::Plan;
use graft_engine::PipelineError;

/// Check a pipeline file without running it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
}

pub(crate) fn run(args: Args) -> Result<(), PipelineError> {
    let plan = Plan::load(&args.pipeline)?;
    println!("{}: ok (pipeline `{}`)", args.pipeline.display(), plan.name);
    Ok(())
}
