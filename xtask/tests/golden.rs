//! Golden outputs: the tiny fixtures' run folders and every config-error message, recorded before the engine
//! was reorganised, must stay exactly what they were. A change that alters a result shows here as a diff
//! against `fixtures/golden/`.
//!
//! What is compared: `metrics.json` without the figures that measure time (seconds, rows per second), the
//! sha256 of every head's `.safetensors`, `splits.csv`, `predictions.csv`, and the message of each pipeline
//! under `fixtures/pipelines/errors/`. `GRAFT_BLESS=1` rewrites the golden files (only do that for a change
//! that is meant to alter results, and say so in the commit).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cache, repo};
use serde_json::Value;

/// The fixture pipelines whose run folders are pinned.
const PIPELINES: &[&str] = &[
    "tiny",
    "tiny-parquet",
    "tiny-heads",
    "tiny-prompt",
    "tiny-curve",
    "tiny-features",
    "tiny-features-npy",
    "tiny-cv",
    "tiny-search",
    "tiny-multilabel",
    "tiny-techniques",
    "tiny-continual",
    "tiny-continual-seeded",
    "tiny-images",
    "tiny-images-augment",
];

/// Keys whose values measure time on this machine, not results.
const TIMING_KEYS: &[&str] = &[
    "timings_seconds",
    "fit_seconds",
    "seconds",
    "rows_per_second",
    "speed_up",
];

fn golden_dir() -> PathBuf {
    repo().join("fixtures/golden")
}

fn blessing() -> bool {
    std::env::var_os("GRAFT_BLESS").is_some_and(|v| v == "1")
}

/// Removes timing figures anywhere in the tree: timing keys, table columns of rows/s, and the clause of a
/// sentence that quotes a speed.
fn without_timings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| {
                !TIMING_KEYS.contains(&k.as_str())
                    && !k.ends_with("_seconds")
                    && !k.ends_with("rows_per_second")
            });
            let timed_column = map.get("columns").and_then(Value::as_array).and_then(|c| {
                c.iter()
                    .position(|name| name.as_str().is_some_and(|n| n.contains("rows/s")))
            });
            if let (Some(column), Some(Value::Array(rows))) = (timed_column, map.get_mut("rows")) {
                for row in rows.iter_mut().filter_map(Value::as_array_mut) {
                    if let Some(cell) = row.get_mut(column) {
                        *cell = Value::from("<timing>");
                    }
                }
            }
            map.values_mut().for_each(without_timings);
        }
        Value::Array(items) => items.iter_mut().for_each(without_timings),
        Value::String(text) => {
            if let Some(clause) = text.find("rows/s").and_then(|at| text[..at].rfind("; ")) {
                text.replace_range(clause.., "; <timing>");
            }
        }
        _ => {}
    }
}

/// Text with the checkout's absolute path replaced by `<repo>`, so golden files hold no machine's paths.
fn without_checkout(text: String) -> String {
    let canonical = std::fs::canonicalize(repo()).unwrap().display().to_string();
    text.replace(&canonical, "<repo>")
        .replace(&repo().display().to_string(), "<repo>")
}

/// Compares `actual` with the golden file `relative`, or writes it when blessing.
fn check_golden(relative: &str, actual: &str, mismatches: &mut Vec<String>) {
    let path = golden_dir().join(relative);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => {
            let line = expected
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(expected.lines().count().min(actual.lines().count()));
            mismatches.push(format!(
                "{relative}: differs from line {} on\n  golden: {:?}\n  now:    {:?}",
                line + 1,
                expected.lines().nth(line).unwrap_or("<end>"),
                actual.lines().nth(line).unwrap_or("<end>"),
            ));
        }
        Err(e) => mismatches.push(format!("{relative}: cannot read golden file: {e}")),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_fixture(name: &str, runs: &Path) -> PathBuf {
    common::run_pipeline(&format!("fixtures/pipelines/{name}.toml"), runs)
}

/// Every record of the run folder reads back through the types that wrote it, and writes out identically.
fn check_round_trip(run_dir: &Path, mismatches: &mut Vec<String>) {
    let same = |path: &Path, rewritten: String, mismatches: &mut Vec<String>| {
        if std::fs::read_to_string(path).unwrap() != rewritten {
            mismatches.push(format!("{}: does not round-trip", path.display()));
        }
    };
    let metrics = graft_report::Metrics::read(run_dir).unwrap();
    same(
        &run_dir.join("metrics.json"),
        graft_report::to_json_text(&metrics),
        mismatches,
    );
    let manifest = graft_report::Manifest::read(run_dir).unwrap();
    same(
        &run_dir.join("manifest.json"),
        graft_report::to_json_text(&manifest),
        mismatches,
    );
    for entry in std::fs::read_dir(run_dir.join("heads")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let head = graft_report::HeadArtefact::read(&path).unwrap();
            same(&path, graft_report::to_json_text(&head), mismatches);
        }
    }
}

fn check_run_folder(name: &str, run_dir: &Path, mismatches: &mut Vec<String>) {
    check_round_trip(run_dir, mismatches);
    let mut metrics = common::metrics(run_dir);
    without_timings(&mut metrics);
    let metrics = without_checkout(serde_json::to_string_pretty(&metrics).unwrap() + "\n");
    check_golden(&format!("{name}/metrics.json"), &metrics, mismatches);
    for file in ["splits.csv", "predictions.csv"] {
        let text = std::fs::read_to_string(run_dir.join(file)).unwrap();
        check_golden(&format!("{name}/{file}"), &text, mismatches);
    }
    let mut heads: Vec<PathBuf> = std::fs::read_dir(run_dir.join("heads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    heads.sort();
    let sums: String = heads
        .iter()
        .map(|p| {
            format!(
                "{}  {}\n",
                sha256_hex(&std::fs::read(p).unwrap()),
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    check_golden(&format!("{name}/heads.sha256"), &sums, mismatches);
}

#[test]
fn tiny_fixture_runs_are_unchanged() {
    let runs = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    for name in PIPELINES {
        let run_dir = run_fixture(name, runs.path());
        check_run_folder(name, &run_dir, &mut mismatches);
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The message of a rejected pipeline, with the machine's folders replaced by placeholders.
fn error_message(pipeline: &Path, scratch: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("run")
        .arg(pipeline.strip_prefix(repo()).unwrap_or(pipeline))
        .args(["--no-progress", "--runs-dir"])
        .arg(scratch.join("runs"))
        .arg("--features-dir")
        .arg(scratch.join("features"))
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "{} must be rejected",
        pipeline.display()
    );
    let repo_text = std::fs::canonicalize(repo()).unwrap().display().to_string();
    String::from_utf8_lossy(&output.stderr)
        .replace(&scratch.display().to_string(), "<scratch>")
        .replace(&repo_text, "<repo>")
        .replace(&repo().display().to_string(), "<repo>")
        .replace(&cache().display().to_string(), "<cache>")
}

#[test]
fn config_error_messages_are_unchanged() {
    let scratch = tempfile::tempdir().unwrap();
    let files = common::error_fixtures();
    let mut mismatches = Vec::new();
    let mut all = String::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy();
        all += &format!("=== {name}\n{}\n", error_message(file, scratch.path()));
    }
    check_golden("errors.txt", &all, &mut mismatches);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
