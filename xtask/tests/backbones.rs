//! `[backbones] candidates` on the tiny fixture: every candidate is extracted and scored, the best on the
//! validation split becomes the run's backbone, and the ranking is in metrics.json and the reports.

mod common;

use common::{metrics, run_pipeline};

#[test]
fn candidates_are_ranked_on_validation_and_the_winner_is_the_runs_backbone() {
    let runs = tempfile::tempdir().unwrap();
    let dir = run_pipeline("fixtures/pipelines/tiny-backbones.toml", runs.path());
    let recorded = metrics(&dir);
    let ranking = recorded["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["technique"] == "backbones")
        .unwrap_or_else(|| panic!("no ranking in {recorded}"))
        .clone();
    let candidates = ranking["details"]["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    let accuracy = |c: &serde_json::Value| c["validation_accuracy"]["estimate"].as_f64().unwrap();
    // Ranked best first, ranks 1, 2, 3.
    for (i, c) in candidates.iter().enumerate() {
        assert_eq!(c["rank"], i + 1);
        let (lo, hi) = (
            c["validation_accuracy"]["lower"].as_f64().unwrap(),
            c["validation_accuracy"]["upper"].as_f64().unwrap(),
        );
        assert!(lo <= accuracy(c) && accuracy(c) <= hi, "{c}");
    }
    assert!(
        candidates
            .windows(2)
            .all(|w| accuracy(&w[0]) >= accuracy(&w[1]))
    );
    // The candidate that reads nothing is listed first but cannot win: every row has the same features.
    let blind = candidates
        .iter()
        .find(|c| c["backbone"] == "tiny-embedder.onnx (max_length 2)")
        .unwrap();
    assert!(accuracy(blind) <= 0.5, "{blind}");
    let winner = &candidates[0];
    assert_ne!(winner["backbone"], blind["backbone"]);
    assert_eq!(ranking["details"]["winner"], winner["backbone"]);
    assert!(winner["test_versus_winner"].is_null());
    for c in &candidates[1..] {
        let versus = &c["test_versus_winner"];
        assert!(
            (0.0..=1.0).contains(&versus["mcnemar_p_value"].as_f64().unwrap()),
            "{c}"
        );
        assert!(
            c["rows_extracted"].as_u64().unwrap() > 0
                && c["rows_per_second"].as_f64().unwrap() > 0.0
        );
    }
    // The run's features are the winner's: its width, and its long-text handling in the extraction record.
    assert_eq!(recorded["extraction"]["dimension"], winner["dimension"]);
    let chunks = winner["backbone"].as_str().unwrap().contains("chunks");
    assert_eq!(
        recorded["extraction"]["long_texts"],
        if chunks { "chunks" } else { "truncate" }
    );
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(markdown.contains("## Backbones ranked on the validation split"));
    assert!(markdown.contains("tiny-embedder-small.onnx"));
}

#[test]
fn check_reports_every_candidate_and_its_long_texts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(common::repo())
        .args([
            "check",
            "fixtures/pipelines/tiny-backbones.toml",
            "--cache-dir",
        ])
        .arg(common::cache())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let candidates: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  candidate "))
        .collect();
    assert_eq!(candidates.len(), 3, "{text}");
    assert!(
        candidates[2].starts_with("  candidate tiny-embedder-small.onnx:"),
        "{text}"
    );
    // Every fixture sentence is longer than 2 or 4 tokens: truncated by the first, windows for the second.
    assert!(
        text.contains("would be truncated") && text.contains("windows in all"),
        "{text}"
    );
}

#[test]
fn predict_embeds_as_the_winner_did_windows_included() {
    let runs = tempfile::tempdir().unwrap();
    let dir = run_pipeline("fixtures/pipelines/tiny-backbones.toml", runs.path());
    let winner = metrics(&dir)["techniques"][0]["details"]["winner"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        winner.contains("chunks"),
        "the fixture's winner reads windows: {winner}"
    );
    let artefact_path = dir.join("heads/logistic.json");
    let artefact: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artefact_path).unwrap()).unwrap();
    let settings = &artefact["backbone"]["settings"];
    assert_eq!(settings["max_length"], 4);
    assert_eq!(settings["long_texts"]["stride"], 1);
    let predict = |out: &std::path::Path| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(common::repo())
            .args([
                "predict",
                dir.to_str().unwrap(),
                "fixtures/data/tiny-sentiment.csv",
                "--output",
            ])
            .arg(out)
            .arg("--cache-dir")
            .arg(common::cache())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(out).unwrap()
    };
    let windows = predict(&runs.path().join("windows.csv"));
    // The same head told its backbone truncated predicts other probabilities: predict applies the
    // recorded windows (a deliberate edit, its checksum recorded so predict accepts the head).
    let mut truncated = artefact.clone();
    truncated["backbone"]["settings"]["long_texts"] = serde_json::Value::Null;
    let edited = serde_json::to_string(&truncated).unwrap();
    std::fs::write(&artefact_path, &edited).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["artefacts"]["heads/logistic.json"] = {
        use sha2::Digest;
        sha2::Sha256::digest(edited.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    };
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    assert_ne!(windows, predict(&runs.path().join("truncated.csv")));
}
