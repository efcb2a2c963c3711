//! `graft compare`: runs side by side, with paired tests on shared test rows.

use std::path::PathBuf;

use graft_engine::PipelineError;

use crate::Defaults;

/// Put runs side by side: each run's headline head, its test scores and intervals, and a paired test against
/// the first run on the same test rows.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Two or more run folders; the first is the reference.
    #[arg(num_args = 2.., required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for comparison.md and comparison.json (default: comparisons/<UTC timestamp>/ in the runs folder).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Bootstrap resamples of the paired accuracy difference.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let o = graft_jobs::compare(&graft_jobs::CompareJob {
        runs: args.runs,
        output_dir: args
            .output
            .unwrap_or_else(|| graft_jobs::comparison_dir(&defaults.runs_dir)),
        bootstrap: graft_engine::Bootstrap {
            resamples: args.bootstrap,
            seed: args.seed,
            ..graft_engine::Bootstrap::default()
        },
    })?;
    out!("{}", o.table)?;
    outln!("wrote {} and {}", o.markdown.display(), o.json.display())?;
    Ok(())
}
