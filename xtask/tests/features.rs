//! Bring your own features: a pipeline without a backbone trains on embeddings from a Parquet list column or
//! a `.npy` matrix with the file's own split; both give the same scores; `predict` takes features files;
//! the head exports alone and the merged export is refused.

use std::process::{Command, Output};

mod common;

use common::{cache, metrics, repo, run_pipeline};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(args)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap()
}

#[test]
fn parquet_and_npy_features_train_the_same_heads_and_predict_reproduces_the_test_scores() {
    let runs = tempfile::tempdir().unwrap();
    let parquet_run = run_pipeline("fixtures/pipelines/tiny-features.toml", runs.path());
    let npy_run = run_pipeline("fixtures/pipelines/tiny-features-npy.toml", runs.path());
    let (a, b) = (metrics(&parquet_run), metrics(&npy_run));
    // The file's own split: 24 / 12 / 12.
    assert_eq!(a["rows"]["train"], 24);
    assert_eq!(a["rows"]["validation"], 12);
    assert_eq!(a["rows"]["test"], 12);
    assert_eq!(a["extraction"]["unit"], "features");
    assert_eq!(a["extraction"]["dimension"], 6);
    assert_eq!(a["extraction"]["extracted"], 0);
    for (x, y) in a["heads"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["heads"].as_array().unwrap())
    {
        assert_eq!(
            x["test"], y["test"],
            "{}: float64 Parquet vs float32 .npy",
            x["name"]
        );
    }
    let accuracy = a["test"]["accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.6 && accuracy < 1.0,
        "a non-trivial fixture: {accuracy}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(parquet_run.join("manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["pipeline"]["resolved"]["backbone"].is_null());
    assert_eq!(manifest["backbone"]["embedding_column"], "embedding");
    let report = std::fs::read_to_string(parquet_run.join("report.md")).unwrap();
    assert!(
        report.contains("**Backbone:** none; 6-d features given"),
        "{report}"
    );

    // predict on the features themselves reproduces the test accuracy on the test rows.
    let labels =
        std::fs::read_to_string(repo().join("fixtures/data/tiny-features-labels.csv")).unwrap();
    let truth: Vec<(&str, &str)> = labels
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[1])
        })
        .collect();
    for (run_dir, input) in [
        (&parquet_run, "fixtures/data/tiny-features.parquet"),
        (&npy_run, "fixtures/data/tiny-features.npy"),
    ] {
        let out = runs.path().join("predictions.csv");
        let output = xtask(&[
            "predict",
            run_dir.to_str().unwrap(),
            input,
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let predictions = std::fs::read_to_string(&out).unwrap();
        let mut correct = 0;
        for (line, (label, split)) in predictions.lines().skip(1).zip(&truth) {
            if *split == "test" {
                correct += usize::from(line.split(',').nth(1) == Some(*label));
            }
        }
        assert_eq!(correct as f64 / 12.0, accuracy, "{input}");
    }

    // A text file is not features.
    let output = xtask(&[
        "predict",
        parquet_run.to_str().unwrap(),
        "fixtures/data/tiny-sentiment.csv",
        "--output",
        "/tmp/never.csv",
    ]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("the input must be features too"), "{err}");

    // The head exports alone; there is no backbone to merge it with.
    let output = xtask(&["export", parquet_run.to_str().unwrap(), "--head-only"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("features: float32 [batch, 6]"));
    let output = xtask(&["export", parquet_run.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("export the head alone with --head-only"),
        "{err}"
    );
}

#[test]
fn multi_label_heads_train_report_and_predict_label_sets() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-multilabel.toml", runs.path());
    let m = metrics(&run_dir);
    assert_eq!(m["task"], "multi-label");
    assert_eq!(m["classes"], serde_json::json!(["a", "b", "c"]));
    let test = &m["test"];
    let (subset, hamming) = (
        test["accuracy"].as_f64().unwrap(),
        test["hamming_loss"].as_f64().unwrap(),
    );
    // Three labels each carried by one noisy feature: most decisions right, most sets exact.
    assert!(hamming < 0.2 && subset > 0.5, "{test}");
    assert!(test["micro_f1"].as_f64().unwrap() > 0.8, "{test}");
    assert_eq!(test["confusion"], serde_json::json!([]));
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("| split | rows | subset accuracy | macro-F1 | micro-F1 | Hamming loss |")
    );
    assert!(!report.contains("Confusion matrix"));

    // The logistic head's thresholds were tuned on the validation rows; the MLP's are the fixed 0.5.
    let artefact = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(run_dir.join(format!("heads/{name}.json"))).unwrap(),
        )
        .unwrap()
    };
    let tuned = artefact("logistic")["multi_label"]["thresholds"].clone();
    assert_eq!(tuned.as_array().unwrap().len(), 3);
    assert!(
        tuned
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_f64() != Some(0.5)),
        "{tuned}"
    );
    assert_eq!(
        artefact("mlp")["multi_label"]["thresholds"],
        serde_json::json!([0.5, 0.5, 0.5])
    );

    // predict writes each row's label set, joined as in the data; on the test rows it reproduces the
    // subset accuracy.
    let labels =
        std::fs::read_to_string(repo().join("fixtures/data/tiny-features-labels.csv")).unwrap();
    let truth: Vec<Vec<&str>> = labels
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let out = runs.path().join("sets.csv");
    let output = xtask(&[
        "predict",
        run_dir.to_str().unwrap(),
        "fixtures/data/tiny-features.parquet",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let predictions = std::fs::read_to_string(&out).unwrap();
    assert!(
        predictions.starts_with("row,predicted,p_a,p_b,p_c\n"),
        "{predictions}"
    );
    let mut exact = 0;
    for (line, t) in predictions.lines().skip(1).zip(&truth) {
        if t[1] == "test" {
            // An empty set is written as "" (an empty string, not a missing value).
            let predicted = line.split(',').nth(1).unwrap_or("").trim_matches('"');
            exact += usize::from(predicted == t[2]);
        }
    }
    assert_eq!(exact as f64 / 12.0, subset);

    let output = xtask(&["export", run_dir.to_str().unwrap(), "--head-only"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("predicted: bool [batch, 3]"), "{out}");
}

#[test]
fn a_seeded_search_picks_its_best_candidate_and_trains_it() {
    let runs = tempfile::tempdir().unwrap();
    let first = run_pipeline("fixtures/pipelines/tiny-search.toml", runs.path());
    let m = metrics(&first);
    let search = &m["search"];
    let candidates = search["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 6);
    assert_eq!(search["selection"], "mean accuracy over 3 stratified folds");
    let best = search["best"].as_u64().unwrap() as usize;
    let top = candidates
        .iter()
        .map(|c| c["accuracy"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(candidates[best]["accuracy"].as_f64().unwrap(), top);
    for c in candidates {
        assert!(c["accuracy_std"].as_f64().is_some());
        let lr = c["values"]["learning_rate"].as_f64().unwrap();
        assert!(
            (0.001..0.1).contains(&lr),
            "drawn from the log-uniform range: {lr}"
        );
    }
    // The winner is the MLP that was trained, saved and scored.
    let artefact: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(first.join("heads/mlp.json")).unwrap())
            .unwrap();
    let winner = &candidates[best]["values"];
    assert_eq!(artefact["head"]["mlp"]["hidden"], winner["hidden"]);
    assert_eq!(
        artefact["head"]["mlp"]["learning_rate"],
        winner["learning_rate"]
    );
    assert_eq!(artefact["head"]["mlp"]["dropout"], winner["dropout"]);
    let report = std::fs::read_to_string(first.join("report.md")).unwrap();
    assert!(report.contains("## Hyperparameter search"), "{report}");
    // Same file, same seed: the same draws and the same scores.
    let again = tempfile::tempdir().unwrap();
    let second = run_pipeline("fixtures/pipelines/tiny-search.toml", again.path());
    assert_eq!(
        metrics(&second)["search"]["candidates"],
        search["candidates"]
    );
}
