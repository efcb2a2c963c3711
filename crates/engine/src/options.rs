//! Where a run reads its cache and writes its folder.

use std::path::PathBuf;

use graft_report::Metrics;

/// Where a run reads its cache and writes its folder.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cache of fetched runtimes, models and data sets.
    pub cache_dir: PathBuf,
    /// Parent of the `<pipeline name>/<timestamp>/` run folders.
    pub runs_dir: PathBuf,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// Root of the shared feature cache (default `<cache_dir>/features`).
    pub features_dir: PathBuf,
}

impl RunOptions {
    /// Options with progress bars on.
    pub fn new(cache_dir: impl Into<PathBuf>, runs_dir: impl Into<PathBuf>) -> RunOptions {
        let cache_dir = cache_dir.into();
        RunOptions {
            features_dir: cache_dir.join("features"),
            cache_dir,
            runs_dir: runs_dir.into(),
            progress: true,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder (complete: it appears only once every file is written).
    pub run_dir: PathBuf,
    /// The metrics written to `metrics.json`.
    pub metrics: Metrics,
    /// The summary table, for printing.
    pub summary: String,
}
