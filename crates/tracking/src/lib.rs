//! A finished graft run logged to an MLflow tracking server, through MLflow's REST API (no Python needed).
//!
//! [`log_run`] reads a run folder with graft's own types (`manifest.json`, `metrics.json`, each checked
//! against the checksums the manifest records) and logs to the server at a tracking URI:
//!
//! - **parameters**: every resolved pipeline setting, by its path (`backbone.max_length`, …);
//! - **metrics**: every number of `metrics.json` by its path, intervals included
//!   (`test.intervals.accuracy.lower`), arrays of named entries by name (`heads.logistic.fit_seconds`,
//!   `test.per_class.pos.f1`); per-epoch curves and the learning curve as metric *series* (steps: epochs,
//!   and training rows drawn);
//! - **artefacts**: the report (`report.md`, `report.html`), `manifest.json`, `metrics.json` and the
//!   pipeline file, through the server's artefact proxy (`mlflow server`'s default) or, for a local
//!   artefact store, by copying;
//! - **tags**: graft's version, the seed, the backbone's sha256, the pipeline's sha256 and the run folder.
//!
//! The MLflow run's id is written to `mlflow.json` in the run folder, so logging the same run to the same
//! server twice is refused unless asked for.
//!
//! ```no_run
//! let logged = graft_tracking::log_run(
//!     "runs/quickstart/20261207T120000Z".as_ref(),
//!     &graft_tracking::Target::new("http://127.0.0.1:5000"),
//! )?;
//! println!("{} metrics in MLflow run {}", logged.metrics, logged.run_id);
//! # Ok::<(), graft_tracking::TrackingError>(())
//! ```

mod client;
mod flatten;

use std::path::{Path, PathBuf};

use graft_report::{ArtefactError, Manifest, Metrics};
use serde::{Deserialize, Serialize};

pub use client::MlflowClient;
pub use flatten::{Series, metric_series, metrics_of, params_of};

/// The file in the run folder that records where the run was logged.
pub const RECORD_FILE: &str = "mlflow.json";

/// Everything that can go wrong while logging a run.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// The run folder cannot be read.
    #[error(transparent)]
    RunFolder(#[from] ArtefactError),
    /// A file of the run folder cannot be read or the record cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No answer from the tracking server.
    #[error("cannot reach the MLflow tracking server at {uri}: {reason}\n  hint: {hint}")]
    Unreachable {
        /// The tracking URI.
        uri: String,
        /// What the HTTP client said.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// The server answered with an error.
    #[error("MLflow at {uri} refused {endpoint}: HTTP {status}: {message}")]
    Server {
        /// The tracking URI.
        uri: String,
        /// The REST endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's message (its `error_code` and `message`, or the body).
        message: String,
    },
    /// A tracking URI graft cannot use.
    #[error("tracking URI {uri:?}: {reason}\n  hint: {hint}")]
    BadUri {
        /// The URI.
        uri: String,
        /// Why.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// The run's artefact store is one graft cannot write to.
    #[error(
        "MLflow run {run_id} stores artefacts at {artifact_uri}, which graft cannot write to\n  hint: {hint}"
    )]
    ArtefactStore {
        /// The MLflow run.
        run_id: String,
        /// Its artefact URI.
        artifact_uri: String,
        /// What to do about it.
        hint: String,
    },
    /// The run was logged to this server already.
    #[error(
        "{} says this run was logged to {uri} already (MLflow run {run_id})\n  hint: open that run, or log it again with --again (a second MLflow run)",
        path.display()
    )]
    AlreadyLogged {
        /// The record file.
        path: PathBuf,
        /// The tracking URI.
        uri: String,
        /// The MLflow run it made.
        run_id: String,
    },
}

/// Where to log: a tracking URI (`http://host:port`, `https://…`) and an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The tracking server's URI.
    pub tracking_uri: String,
    /// The experiment's name (`None`: the pipeline's name).
    pub experiment: Option<String>,
    /// Log again when the run folder records this server already.
    pub again: bool,
}

impl Target {
    /// A target at `tracking_uri`, experiment named after the pipeline.
    pub fn new(tracking_uri: &str) -> Target {
        Target {
            tracking_uri: tracking_uri.to_owned(),
            experiment: None,
            again: false,
        }
    }
}

/// What [`log_run`] logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The MLflow experiment.
    pub experiment_id: String,
    /// The MLflow run.
    pub run_id: String,
    /// Metric values logged (series points included).
    pub metrics: usize,
    /// Parameters logged.
    pub params: usize,
    /// Artefact files uploaded.
    pub artifacts: Vec<String>,
    /// The run's page in the MLflow UI.
    pub url: String,
}

/// `mlflow.json`: where a run folder was logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingRecord {
    /// Format of this file (1).
    pub format: u32,
    /// Every logging of this run folder, oldest first.
    pub logged: Vec<LoggedTo>,
}

/// One logging of a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedTo {
    /// The tracking URI.
    pub tracking_uri: String,
    /// The MLflow experiment.
    pub experiment_id: String,
    /// The MLflow run.
    pub run_id: String,
    /// UTC, RFC 3339.
    pub logged_at: String,
}

/// The run folder files logged as artefacts (those present).
const ARTEFACTS: [&str; 5] = [
    "report.md",
    "report.html",
    "manifest.json",
    "metrics.json",
    "pipeline.toml",
];

/// Logs the run folder `run_dir` to the MLflow server of `target`: parameters, metrics, series, artefacts
/// and tags, in one MLflow run marked finished; then records it in `mlflow.json`.
pub fn log_run(run_dir: &Path, target: &Target) -> Result<Logged, TrackingError> {
    let manifest = Manifest::read(run_dir)?;
    let metrics = Metrics::read(run_dir)?;
    let record_path = run_dir.join(RECORD_FILE);
    let mut record = read_record(&record_path)?;
    let uri = target.tracking_uri.trim_end_matches('/');
    if !target.again
        && let Some(earlier) = record.logged.iter().find(|l| l.tracking_uri == uri)
    {
        return Err(TrackingError::AlreadyLogged {
            path: record_path,
            uri: uri.to_owned(),
            run_id: earlier.run_id.clone(),
        });
    }
    let client = MlflowClient::new(uri)?;
    let experiment = target
        .experiment
        .clone()
        .unwrap_or_else(|| manifest.pipeline.resolved.name.clone());
    let experiment_id = client.experiment_id(&experiment)?;
    let folder = run_dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tags = tags_of(&manifest, run_dir);
    let started = millis(&manifest.started_at);
    let run_name = format!("{} {folder}", manifest.pipeline.resolved.name);
    let (run_id, artifact_uri) = client.create_run(&experiment_id, &run_name, started, &tags)?;

    let params = params_of(&manifest);
    let values = serde_json::to_value(&metrics).expect("metrics serialise");
    let flat = metrics_of(&values);
    let series = metric_series(&values);
    let finished = millis(&manifest.finished_at);
    client.log_batch(&run_id, &params, &flat, &series, finished)?;
    let mut uploaded = Vec::new();
    for name in ARTEFACTS {
        let path = run_dir.join(name);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| TrackingError::Io {
            path: path.clone(),
            source,
        })?;
        client.upload_artifact(&run_id, &artifact_uri, name, &bytes)?;
        uploaded.push(name.to_owned());
    }
    client.finish_run(&run_id, finished)?;

    record.logged.push(LoggedTo {
        tracking_uri: uri.to_owned(),
        experiment_id: experiment_id.clone(),
        run_id: run_id.clone(),
        logged_at: now_rfc3339(),
    });
    let text = serde_json::to_string_pretty(&record).expect("the record serialises") + "\n";
    graft_stdx::atomic::write(&record_path, text.as_bytes()).map_err(|source| {
        TrackingError::Io {
            path: record_path.clone(),
            source,
        }
    })?;
    Ok(Logged {
        url: format!("{uri}/#/experiments/{experiment_id}/runs/{run_id}"),
        experiment_id,
        run_id,
        metrics: flat.len() + series.iter().map(|s| s.points.len()).sum::<usize>(),
        params: params.len(),
        artifacts: uploaded,
    })
}

/// `mlflow.json`, or an empty record when the run was never logged.
fn read_record(path: &Path) -> Result<TrackingRecord, TrackingError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            TrackingError::RunFolder(ArtefactError::Invalid {
                path: path.to_path_buf(),
                what: "MLflow record",
                problem: e.to_string(),
            })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrackingRecord {
            format: 1,
            logged: Vec::new(),
        }),
        Err(source) => Err(TrackingError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The run's tags: graft's own, and MLflow's source.
fn tags_of(manifest: &Manifest, run_dir: &Path) -> Vec<(String, String)> {
    let mut tags = vec![
        ("graft.version".to_owned(), manifest.graft_version.clone()),
        ("graft.seed".to_owned(), manifest.seed.to_string()),
        (
            "graft.pipeline_sha256".to_owned(),
            manifest.pipeline.sha256.clone(),
        ),
        (
            "graft.run_folder".to_owned(),
            std::path::absolute(run_dir)
                .unwrap_or_else(|_| run_dir.to_path_buf())
                .display()
                .to_string(),
        ),
        (
            "mlflow.source.name".to_owned(),
            manifest.pipeline.file.display().to_string(),
        ),
        ("mlflow.source.type".to_owned(), "LOCAL".to_owned()),
    ];
    let b = &manifest.backbone;
    if let Some(file) = b
        .onnx
        .as_ref()
        .or(b.weights.as_ref())
        .or(b.features.as_ref())
    {
        tags.push(("graft.backbone_sha256".to_owned(), file.sha256.clone()));
    }
    if let Some(name) = &b.name {
        tags.push(("graft.backbone".to_owned(), name.clone()));
    }
    tags
}

/// Milliseconds since the epoch of an RFC 3339 time (now, when it cannot be read).
fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| chrono::Utc::now().timestamp_millis(),
        |t| t.timestamp_millis(),
    )
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339()
}
