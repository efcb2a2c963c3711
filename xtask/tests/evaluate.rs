//! `evaluate` as a user runs it: a run's head on labelled rows. Evaluating on exactly the run's test rows
//! must reproduce the run's own test scores (accuracy, macro-F1, confusion, log loss, calibration), which
//! pins the row alignment and the probability path; empty labels are left out by row number; unknown
//! classes and columns are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cache, repo, run_pipeline};

fn evaluate(run_dir: &Path, input: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("evaluate")
        .arg(run_dir)
        .arg(input)
        .args(["--no-progress", "--cache-dir"])
        .arg(cache())
        .args(extra)
        .output()
        .unwrap()
}

/// The rows of tiny-sentiment.csv in the run's test split (splits.csv numbers the table's rows), plus
/// `extra_lines` appended.
fn test_rows(run_dir: &Path, out: &Path, extra_lines: &[&str]) -> PathBuf {
    let splits = std::fs::read_to_string(run_dir.join("splits.csv")).unwrap();
    let test: Vec<usize> = splits
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",test"))
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let table = std::fs::read_to_string(repo().join("fixtures/data/tiny-sentiment.csv")).unwrap();
    let mut lines = table.lines();
    let mut text = format!("{}\n", lines.next().unwrap());
    for (row, line) in lines.enumerate() {
        if test.contains(&row) {
            text += &format!("{line}\n");
        }
    }
    for line in extra_lines {
        text += &format!("{line}\n");
    }
    std::fs::write(out, text).unwrap();
    out.to_path_buf()
}

#[test]
fn the_run_s_test_rows_give_the_run_s_test_scores() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny.toml", runs.path());
    let input = test_rows(
        &run_dir,
        &runs.path().join("test.csv"),
        &["99,\"a wonderful film\","],
    );
    let out = runs.path().join("evaluation");
    let output = evaluate(&run_dir, &input, &["--output", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("evaluated head `logistic` on 10 rows"),
        "{stdout}"
    );

    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap())
            .unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap())
            .unwrap();
    let (mine, run) = (&e["scores"], &m["test"]);
    for key in ["rows", "accuracy", "macro_f1", "confusion", "per_class"] {
        assert_eq!(mine[key], run[key], "{key}");
    }
    for key in ["log_loss", "brier", "ece"] {
        let (a, b) = (
            mine["probabilities"][key].as_f64().unwrap(),
            run["probabilities"][key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{key}: {a} vs {b}");
    }
    assert_eq!(e["run_test"]["accuracy"], run["accuracy"]);
    // The row without a label is left out by its number; predictions cover every row.
    assert_eq!(e["rows_read"], 11);
    assert_eq!(e["dropped_rows"], serde_json::json!([10]));
    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 12);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| **these rows** | 10 |"), "{report}");
    assert!(
        report.contains("1 rows without a label left out (rows 10)"),
        "{report}"
    );
    // The record reads back through its type.
    let typed = graft_report::Evaluation::read(&out).unwrap();
    assert_eq!(typed.head, "logistic");
}

#[test]
fn unknown_classes_and_columns_are_refused_by_name() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny.toml", runs.path());
    let other = repo().join("fixtures/data/tiny-target-other-classes.csv");
    let output = evaluate(&run_dir, &other, &[]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "the labels `bad`, `good` are not classes of the head, which knows negative, positive"
        ),
        "{err}"
    );
    let output = evaluate(
        &run_dir,
        &repo().join("fixtures/data/tiny-target.csv"),
        &["--label-column", "stars"],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("column `stars` not found") && err.contains("--label-column"),
        "{err}"
    );
    assert!(
        !run_dir
            .join("evaluations/tiny-target.csv/evaluation.json")
            .exists()
    );
}
