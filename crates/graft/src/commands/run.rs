//! `graft run`: a pipeline file end to end, into a run folder.

use std::path::PathBuf;

use graft_config::Plan;
use graft_engine::{PipelineError, RunOptions};

use crate::Defaults;

/// Run a pipeline file end to end and write its run folder.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Where run folders go (default: runs/ in the current folder; in a checkout, its runs/).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Cache of fetched runtimes, models and data sets (default: $GRAFT_CACHE, else $XDG_CACHE_HOME/graft,
    /// else ~/.cache/graft; in a checkout, .graft-cache/).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Shared feature cache (default: features/ inside the cache folder).
    #[arg(long)]
    pub features_dir: Option<PathBuf>,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let plan = Plan::load(&args.pipeline)?;
    let mut options = RunOptions::new(
        args.cache_dir.unwrap_or_else(|| defaults.cache_dir.clone()),
        args.runs_dir.unwrap_or_else(|| defaults.runs_dir.clone()),
    );
    options.progress = !args.no_progress;
    if let Some(dir) = args.features_dir {
        options.features_dir = dir;
    }
    let outcome = graft_engine::run(&plan, &options)?;
    println!("{}", outcome.summary);
    Ok(())
}
