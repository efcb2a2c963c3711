//! Paths every command-line test needs.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cache `cargo xtask test` filled (GRAFT_CACHE), else the default one.
pub fn cache() -> PathBuf {
    std::env::var_os(graft_assets::CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".graft-cache"))
}

/// Runs a pipeline file through the command line into `runs` (feature cache in `runs/.features`) and returns
/// the run folder.
#[allow(dead_code)] // not every test binary runs pipelines
pub fn run_pipeline(pipeline: &str, runs: &Path) -> PathBuf {
    run_pipeline_with_features(pipeline, runs, &runs.join(".features"))
}

/// [`run_pipeline`] with the feature cache in `features` (runs can share it).
#[allow(dead_code)]
pub fn run_pipeline_with_features(pipeline: &str, runs: &Path, features: &Path) -> PathBuf {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["run", pipeline, "--no-progress", "--runs-dir"])
        .arg(runs)
        .arg("--features-dir")
        .arg(features)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let name = Path::new(pipeline).file_stem().unwrap();
    std::fs::read_dir(runs.join(name))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// The run folder's metrics.json.
#[allow(dead_code)]
pub fn metrics(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap()
}

/// Every pipeline under `fixtures/pipelines/errors/`, sorted.
#[allow(dead_code)]
pub fn error_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("fixtures/pipelines/errors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}
