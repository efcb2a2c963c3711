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
    /// Print the plan (what is cached, what would be fetched, rows and split, cached features) and stop:
    /// nothing is fetched, extracted or written.
    #[arg(long)]
    pub dry_run: bool,
    /// Log the finished run to this MLflow tracking server (default: the pipeline's `[tracking] mlflow`).
    #[arg(long, value_name = "TRACKING_URI")]
    pub mlflow: Option<String>,
    /// The MLflow experiment (default: `[tracking] experiment`, else the pipeline's name).
    #[arg(long)]
    pub mlflow_experiment: Option<String>,
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
    if args.dry_run {
        print_plan(
            &args.pipeline,
            &plan,
            &graft_engine::dry_run(&plan, &options)?,
        )?;
        return Ok(());
    }
    let tracking =
        super::mlflow::target(args.mlflow, args.mlflow_experiment, plan.tracking.as_ref());
    if let Some(target) = &tracking {
        // A URI graft cannot log to is refused before the run, not after it.
        graft_tracking::MlflowClient::new(&target.tracking_uri).map_err(|e| {
            PipelineError::Job {
                message: e.to_string(),
                hint: "fix --mlflow (or `[tracking] mlflow`)".to_owned(),
            }
        })?;
    }
    let outcome = graft_engine::run(&plan, &options)?;
    outln!("{}", outcome.summary)?;
    if let Some(target) = tracking {
        super::mlflow::log(&outcome.run_dir, &target)?;
    }
    Ok(())
}

fn print_plan(
    file: &std::path::Path,
    plan: &Plan,
    dry: &graft_engine::DryRun,
) -> Result<(), PipelineError> {
    outln!(
        "{}: pipeline `{}` (dry run: nothing fetched, extracted or written)",
        file.display(),
        plan.name
    )?;
    for (what, name, here) in &dry.parts {
        let state = if *here {
            "in the cache"
        } else {
            "would be fetched"
        };
        outln!("  {what:<9} {name}: {state}")?;
    }
    match &dry.data {
        Some(d) => outln!(
            "  rows      {} ({} classes; {} dropped{}): train {} · validation {} · test {}",
            d.rows,
            d.classes,
            d.dropped,
            if d.dropped_rows.is_empty() {
                String::new()
            } else {
                format!(
                    ", first rows {}",
                    d.dropped_rows
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            d.train,
            d.validation,
            d.test
        )?,
        None => outln!("  rows      known once the data set is fetched (`fetch` fetches it)")?,
    }
    match dry.cached_features {
        Some((hits, rows)) => outln!(
            "  features  {hits} of {rows} rows in the feature cache; {} to extract",
            rows - hits
        )?,
        None => outln!("  features  looked up when the run starts")?,
    }
    let stages: Vec<&str> = plan
        .techniques
        .stages
        .iter()
        .map(|s| s.stage().table())
        .collect();
    outln!(
        "  heads     {}{}",
        plan.heads
            .iter()
            .map(|h| h.label())
            .collect::<Vec<_>>()
            .join(", "),
        if stages.is_empty() {
            String::new()
        } else {
            format!("; stages: {}", stages.join(", "))
        }
    )
}
