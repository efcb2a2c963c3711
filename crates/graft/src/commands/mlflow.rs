//! `graft mlflow`: a finished run folder logged to an MLflow tracking server.

use std::path::PathBuf;

use graft_engine::PipelineError;

/// Log a finished run to an MLflow tracking server: parameters, metrics with their intervals, the learning
/// curve as a series, the report and manifest as artefacts, and tags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run folder (runs/<pipeline>/<timestamp>).
    pub run: PathBuf,
    /// The tracking server (default: the pipeline's `[tracking] mlflow`, else $MLFLOW_TRACKING_URI).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// The experiment (default: the pipeline's `[tracking] experiment`, else the pipeline's name).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Log the run again though `mlflow.json` in the run folder says it was logged to this server.
    #[arg(long)]
    pub again: bool,
}

/// Where `--mlflow`-style options and a pipeline's `[tracking]` say to log, the flag first.
pub(crate) fn target(
    uri: Option<String>,
    experiment: Option<String>,
    tracking: Option<&graft_config::TrackingPlan>,
) -> Option<graft_tracking::Target> {
    let uri = uri.or_else(|| tracking.map(|t| t.mlflow.clone()))?;
    Some(graft_tracking::Target {
        tracking_uri: uri,
        experiment: experiment.or_else(|| tracking.and_then(|t| t.experiment.clone())),
        again: false,
    })
}

pub(crate) fn run(args: Args) -> Result<(), PipelineError> {
    // The pipeline as the run recorded it: its `[tracking]`, when it has one.
    let recorded = graft_config::Plan::load(&args.run.join("pipeline.toml")).ok();
    let tracking = recorded.as_ref().and_then(|p| p.tracking.as_ref());
    let uri = args.tracking_uri.or_else(|| {
        std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|v| !v.is_empty())
    });
    let Some(mut target) = target(uri, args.experiment, tracking) else {
        return Err(PipelineError::Job {
            message: "no MLflow tracking server given".to_owned(),
            hint: "pass --tracking-uri http://host:5000, set MLFLOW_TRACKING_URI, or add `[tracking] mlflow = \"…\"` to the pipeline".to_owned(),
        });
    };
    target.again = args.again;
    log(&args.run, &target)
}

/// Logs the run folder and prints where it went.
pub(crate) fn log(
    run: &std::path::Path,
    target: &graft_tracking::Target,
) -> Result<(), PipelineError> {
    let logged = graft_tracking::log_run(run, target).map_err(|e| PipelineError::Job {
        message: e.to_string(),
        hint: format!(
            "the run folder {} is complete; log it later with `graft mlflow {}`",
            run.display(),
            run.display()
        ),
    })?;
    outln!(
        "  mlflow      run {} in experiment {}: {} params, {} metric values, artefacts {} · {}",
        logged.run_id,
        logged.experiment_id,
        logged.params,
        logged.metrics,
        logged.artifacts.join(", "),
        logged.url
    )?;
    Ok(())
}
