//! `graft fetch`: what pipelines need, fetched and verified ahead of a run.

use std::path::{Path, PathBuf};

use graft_config::Plan;
use graft_engine::PipelineError;

use crate::Defaults;

/// Fetch and verify what pipelines need (runtime, models, data sets) without running them.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files whose parts to fetch (in a checkout, default: pipelines/quickstart.toml).
    pub pipelines: Vec<PathBuf>,
    /// Cache folder (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let cache = args.cache_dir.unwrap_or_else(|| defaults.cache_dir.clone());
    let pipelines = if args.pipelines.is_empty() {
        defaults.fetch_pipelines.clone()
    } else {
        args.pipelines
    };
    if pipelines.is_empty() {
        return Err(PipelineError::Job {
            message: "no pipeline file given".to_owned(),
            hint: "name the pipeline files whose parts to fetch, e.g. `graft fetch my.toml`"
                .to_owned(),
        });
    }
    fetch(&pipelines, &cache)
}

/// Fetches every part the pipelines need into `cache`.
pub fn fetch(pipelines: &[PathBuf], cache: &Path) -> Result<(), PipelineError> {
    for pipeline in pipelines {
        let plan = Plan::load(pipeline)?;
        graft_engine::provision_all(&plan, cache)?;
        outln!(
            "{}: everything fetched and verified in {}",
            pipeline.display(),
            cache.display()
        )?;
    }
    Ok(())
}
