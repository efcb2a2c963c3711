//! Heads from the pipeline file to shipped artefacts: every head trains in one run, is saved, and
//! `predict` loads it back and reproduces the run's own test scores; a mismatched backbone is refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{cache, repo};

fn xtask(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(args)
        .args(extra)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap()
}

fn run_tiny_heads(runs: &Path) -> PathBuf {
    let output = xtask(
        &[
            "run",
            "fixtures/pipelines/tiny-heads.toml",
            "--no-progress",
            "--runs-dir",
        ],
        &[runs, Path::new("--features-dir"), &runs.join(".features")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_dir(runs.join("tiny-heads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn every_head_is_saved_and_predict_reproduces_its_test_scores() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_tiny_heads(runs.path());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap())
            .unwrap();
    let heads = metrics["heads"].as_array().unwrap();
    let names: Vec<&str> = heads.iter().map(|h| h["name"].as_str().unwrap()).collect();
    // File order: the first head is the headline.
    assert_eq!(names, ["logistic", "mlp", "prototype", "knn"]);
    assert_eq!(metrics["test"], heads[0]["test"]);
    // Uncertainty and calibration of the test scores; paired comparisons against the headline.
    let test = &metrics["test"];
    let ci = &test["intervals"]["accuracy"];
    assert_eq!(ci["resamples"], 1000);
    assert!(
        ci["lower"].as_f64() <= ci["estimate"].as_f64()
            && ci["estimate"].as_f64() <= ci["upper"].as_f64()
    );
    assert_eq!(ci["estimate"], test["accuracy"]);
    let bins = test["probabilities"]["reliability"].as_array().unwrap();
    assert_eq!(bins.len(), 10);
    assert_eq!(
        bins.iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum::<u64>(),
        10
    );
    assert!(heads[0].get("versus_headline").is_none());
    let versus = &heads[3]["versus_headline"];
    let (only_knn, only_headline) = (
        versus["mcnemar"]["a_only"].as_u64().unwrap(),
        versus["mcnemar"]["b_only"].as_u64().unwrap(),
    );
    let difference =
        heads[3]["test"]["accuracy"].as_f64().unwrap() - test["accuracy"].as_f64().unwrap();
    assert!((difference - (only_knn as f64 - only_headline as f64) / 10.0).abs() < 1e-12);
    assert!(
        (versus["accuracy_difference"]["interval"]["estimate"]
            .as_f64()
            .unwrap()
            - difference)
            .abs()
            < 1e-12
    );
    assert!(heads[1]["training"]["curve"].as_array().unwrap().len() > 1);
    assert!(heads[0]["training"]["temperature"].as_f64().unwrap() > 0.0);

    // Which rows were test rows, with their true labels.
    let splits = std::fs::read_to_string(run_dir.join("splits.csv")).unwrap();
    let test_rows: HashMap<usize, String> = splits
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2] == "test").then(|| (f[0].parse().unwrap(), f[1].to_owned()))
        })
        .collect();
    assert_eq!(test_rows.len(), 10);

    for (i, name) in names.iter().enumerate() {
        let artefact: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join(format!("heads/{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(artefact["format"], "graft-head");
        assert_eq!(
            artefact["classes"],
            serde_json::json!(["negative", "positive"])
        );
        assert_eq!(artefact["input_dimension"], 8);
        assert_eq!(artefact["backbone_sha256"].as_str().unwrap().len(), 64);
        assert!(run_dir.join(format!("heads/{name}.safetensors")).is_file());
        if *name == "mlp" {
            // Initialisation, shuffling and dropout are seeded by the pipeline's seed.
            assert_eq!(artefact["head"]["mlp"]["seed"], 7);
        }

        let out = runs.path().join(format!("{name}.csv"));
        let output = xtask(
            &[
                "predict",
                run_dir.to_str().unwrap(),
                "fixtures/data/tiny-sentiment.csv",
                "--no-progress",
                "--head",
                name,
                "--output",
            ],
            &[&out],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "row,predicted,p_negative,p_positive");
        let mut correct = 0;
        let mut rows = 0;
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let p: f64 = f[2].parse::<f64>().unwrap() + f[3].parse::<f64>().unwrap();
            assert!((p - 1.0).abs() < 1e-5, "{line}");
            rows += 1;
            if let Some(truth) = test_rows.get(&f[0].parse().unwrap()) {
                correct += usize::from(f[1] == truth);
            }
        }
        assert_eq!(rows, 40);
        let accuracy = correct as f64 / 10.0;
        assert_eq!(
            accuracy,
            heads[i]["test"]["accuracy"].as_f64().unwrap(),
            "{name}"
        );
    }

    // A head refuses features from a different backbone.
    let other = runs.path().join("other.onnx");
    let mut bytes = std::fs::read(repo().join("fixtures/models/tiny-embedder.onnx")).unwrap();
    bytes.push(0);
    std::fs::write(&other, bytes).unwrap();
    let output = xtask(
        &[
            "predict",
            run_dir.to_str().unwrap(),
            "fixtures/data/tiny-sentiment.csv",
            "--tokenizer",
            "fixtures/models/tiny-tokenizer.json",
            "--output",
            "/dev/null/never.csv",
            "--model",
        ],
        &[&other],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("but the head was trained on features of"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Export from the command line: the merged model's inputs are the backbone's token inputs.
    let output = xtask(&["export", run_dir.to_str().unwrap(), "--head", "mlp"], &[]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("inputs   input_ids: int64 [batch, tokens]"),
        "{out}"
    );
    assert!(out.contains("probabilities: float32 [batch, 2]"), "{out}");
    assert!(run_dir.join("heads/mlp.onnx").is_file());
    for (args, message) in [
        (vec!["--head", "knn"], "a kNN head cannot be exported"),
        (vec!["--output", "model.txt"], "name the output .onnx"),
        (vec!["--head", "svm"], "the run has no head `svm`"),
    ] {
        let mut all = vec!["export", run_dir.to_str().unwrap()];
        all.extend(args);
        let output = xtask(&all, &[]);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.contains(message), "{err}");
    }
}

#[test]
fn head_settings_are_checked_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo().join("fixtures/pipelines/tiny-heads.toml")).unwrap();
    let cases = [
        (
            "dropout = 0.1",
            "dropout = 1.5",
            "invalid value for `dropout`",
        ),
        ("k = 3", "k = 0", "invalid value for `k`"),
        (
            "warmup_epochs = 2",
            "warmup_epochs = 2\ngamma = 0.5",
            "`gamma` applies to `schedule = \"step\"`",
        ),
        ("[head.knn]", "[head.knm]", "unknown field `knm`"),
    ];
    for (from, to, expected) in cases {
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            base.replace(from, to)
                .replace("../", &format!("{}/fixtures/", repo().display())),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["check"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "expected `{expected}` in {err}");
        assert!(err.contains("p.toml:"), "{err}");
    }
}

#[test]
fn a_prompt_template_reaches_the_backbone_in_runs_and_in_predict() {
    let runs = tempfile::tempdir().unwrap();
    let output = xtask(
        &[
            "run",
            "fixtures/pipelines/tiny-prompt.toml",
            "--no-progress",
            "--runs-dir",
        ],
        &[
            runs.path(),
            Path::new("--features-dir"),
            &runs.path().join(".features"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run_dir = std::fs::read_dir(runs.path().join("tiny-prompt"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let artefact_path = run_dir.join("heads/logistic.json");
    let artefact: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artefact_path).unwrap()).unwrap();
    assert_eq!(artefact["backbone"]["settings"]["prompt"], "great {text}");

    let predict = |out: &Path| {
        let output = xtask(
            &[
                "predict",
                run_dir.to_str().unwrap(),
                "fixtures/data/tiny-sentiment.csv",
                "--output",
            ],
            &[out],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(out).unwrap()
    };
    let with_prompt = predict(&runs.path().join("with.csv"));
    // The same head told its backbone took the bare texts predicts other probabilities: predict does apply
    // the recorded template.
    let mut without = artefact.clone();
    without["backbone"]["settings"]["prompt"] = serde_json::Value::Null;
    let edited = serde_json::to_string(&without).unwrap();
    std::fs::write(&artefact_path, &edited).unwrap();
    // A deliberate edit: record the file's new checksum, or predict refuses the changed head.
    let manifest_path = run_dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["artefacts"]["heads/logistic.json"] = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(edited.as_bytes());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    };
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let bare = predict(&runs.path().join("bare.csv"));
    assert_ne!(with_prompt, bare);
}

#[test]
fn an_edited_head_description_is_refused_by_predict_and_export() {
    // On main, reversing `classes` in heads/<head>.json made predict and export succeed with every label
    // inverted: only the weights were checksummed, and that checksum lived in the edited file.
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_tiny_heads(runs.path());
    let description = run_dir.join("heads/logistic.json");
    let text = std::fs::read_to_string(&description).unwrap();
    let reversed = text.replacen("\"negative\",", "\"positive\",", 1).replacen(
        "\"positive\"\n",
        "\"negative\"\n",
        1,
    );
    assert_ne!(text, reversed);
    std::fs::write(&description, reversed).unwrap();
    let run = run_dir.to_str().unwrap();
    let output = xtask(
        &[
            "predict",
            run,
            "fixtures/data/tiny-sentiment.csv",
            "--output",
            runs.path().join("p.csv").to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("logistic.json changed after the run"), "{err}");
    let output = xtask(&["export", run, "--head", "logistic"], &[]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("logistic.json changed after the run"), "{err}");
    assert!(!runs.path().join("p.csv").exists());
}

/// The ridge head, added by following ARCHITECTURE.md's checklist: it trains in a run, predicts as
/// scikit-learn's `RidgeClassifier(alpha=2.0)` does on the same rows (its test predictions, computed with
/// scikit-learn 1.9.1, are pinned here), is saved, reloaded by `predict` with the same predictions, and
/// exports to ONNX alone.
#[test]
fn a_ridge_head_predicts_as_scikit_learn_and_ships() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = common::run_pipeline("fixtures/pipelines/tiny-ridge.toml", runs.path());
    let predictions = std::fs::read_to_string(run_dir.join("predictions.csv")).unwrap();
    let ours: Vec<(String, String)> = predictions
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[2].to_owned())
        })
        .collect();
    let scikit_learn = [
        (6, "positive"),
        (7, "positive"),
        (14, "positive"),
        (15, "negative"),
        (22, "positive"),
        (23, "negative"),
        (30, "positive"),
        (31, "positive"),
        (38, "positive"),
        (39, "negative"),
        (46, "positive"),
        (47, "negative"),
    ]
    .map(|(row, label)| (row.to_string(), label.to_owned()));
    assert_eq!(ours, scikit_learn);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["test"]["accuracy"], 10.0 / 12.0);
    assert!(
        metrics["heads"][0]["training"]["temperature"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let artefact = std::fs::read_to_string(run_dir.join("heads/ridge.json")).unwrap();
    assert!(artefact.contains("\"ridge\": {"), "{artefact}");

    let out = runs.path().join("again.csv");
    let output = xtask(
        &[
            "predict",
            run_dir.to_str().unwrap(),
            "fixtures/data/tiny-features.npy",
            "--output",
        ],
        &[&out],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let again = std::fs::read_to_string(&out).unwrap();
    for (row, label) in &ours {
        let line = again
            .lines()
            .nth(row.parse::<usize>().unwrap() + 1)
            .unwrap();
        assert_eq!(line.split(',').nth(1), Some(label.as_str()), "{line}");
    }

    let output = xtask(&["export", run_dir.to_str().unwrap(), "--head-only"], &[]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("predicted: int64 [batch]"), "{printed}");

    // Its one hyperparameter is checked where it is written.
    let path = runs.path().join("bad.toml");
    let text = std::fs::read_to_string(repo().join("fixtures/pipelines/tiny-ridge.toml"))
        .unwrap()
        .replace("alpha = 2.0", "alpha = 0.0")
        .replace("../", &format!("{}/fixtures/", repo().display()));
    std::fs::write(&path, text).unwrap();
    let output = xtask(&["check"], &[&path]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml:16:9") && err.contains("invalid value for `alpha`"),
        "{err}"
    );
}
