//! `[fine_tune]` as a user runs it, on the tiny BERT fixture: the same file and seed give the same tuned
//! graph and metrics, the graph is recorded in the manifest, and it extracts like any other model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::Digest;

mod common;

use common::{cache, metrics, repo, run_pipeline_with_features};

const PIPELINE: &str = "fixtures/pipelines/tiny-fine-tune.toml";

fn stage(run_dir: &Path) -> Value {
    let recorded = metrics(run_dir);
    recorded["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["technique"] == "fine_tune")
        .unwrap_or_else(|| panic!("no fine_tune in {recorded}"))
        .clone()
}

/// The details without wall-clock times, memory and cache counts.
fn timeless(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.retain(|k, _| {
                !k.contains("seconds") && !k.contains("cached") && !k.contains("rss")
            });
            for value in map.values_mut() {
                *value = timeless(value.take());
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = timeless(item.take());
            }
        }
        _ => {}
    }
    v
}

/// `xtask extract` of the fixture sentences through `model` into a .npy file; its float32 values.
fn extract(model: &Path, out: &Path) -> Vec<f32> {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("extract")
        .arg("--model")
        .arg(model)
        .args([
            "--tokenizer",
            "fixtures/models/tiny-tokenizer.json",
            "--text-column",
            "text",
        ])
        .args([
            "--no-progress",
            "--input",
            "fixtures/data/tiny-sentiment.csv",
            "--output",
        ])
        .arg(out)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(out).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn a_tuned_run_repeats_exactly_records_its_graph_and_the_graph_extracts_like_any_model() {
    // The second run shares the first's feature cache: the frozen block's states come from it.
    let (first, second, features) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let runs: Vec<PathBuf> = [&first, &second]
        .iter()
        .map(|d| run_pipeline_with_features(PIPELINE, d.path(), features.path()))
        .collect();
    let reports: Vec<Value> = runs.iter().map(|r| stage(r)).collect();
    assert_eq!(reports[0]["details"]["boundary_states_cached_rows"], 0);
    assert_eq!(
        reports[1]["details"]["boundary_states_cached_rows"], 40,
        "20 training, 10 validation and (for the curve) 10 test rows from the cache"
    );
    assert_eq!(
        timeless(reports[0]["details"].clone()),
        timeless(reports[1]["details"].clone())
    );
    let details = &reports[0]["details"];
    for key in ["frozen_test_accuracy", "tuned_test_accuracy"] {
        let a = details[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{key} = {a}");
    }
    assert!(!details["epochs"].as_array().unwrap().is_empty());
    // The learning curve's third line: the backbone tuned on each draw, the same in both runs.
    let curves: Vec<Value> = runs
        .iter()
        .map(|r| metrics(r)["learning_curve"].clone())
        .collect();
    let points = curves[0]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "K = 2, 4 and the whole split");
    for (a, b) in points.iter().zip(curves[1]["points"].as_array().unwrap()) {
        let tuned = &a["tuned"]["mean"];
        assert!(
            tuned.as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)),
            "{a}"
        );
        assert_eq!(a["tuned"], b["tuned"]);
    }
    assert_eq!(
        points[2]["tuned"]["mean"], details["tuned_test_accuracy"],
        "the whole split is the stage's own result"
    );
    let markdown = std::fs::read_to_string(runs[0].join("report.md")).unwrap();
    let whole = markdown.lines().find(|l| l.starts_with("| all |")).unwrap();
    assert_eq!(whole.matches("– (one draw)").count(), 3, "{whole}");
    let html = std::fs::read_to_string(runs[0].join("report.html")).unwrap();
    assert!(
        html.contains("<th>fine-tuned</th>") && html.contains("learning_curve.points.0.tuned.mean")
    );
    assert_eq!(details["trainable_blocks"], 1);
    // One quantity, one number: the frozen features' head is the headline, and its interval in the
    // fine-tuning table is the one the Scores section reports.
    let scored = &metrics(&runs[0])["heads"][0]["test"]["intervals"]["accuracy"];
    assert_eq!(details["frozen_interval"][0], scored["lower"], "{scored}");
    assert_eq!(details["frozen_interval"][1], scored["upper"], "{scored}");
    // The method reads as a sentence for these settings (it used to say "Linear decay", "1 epochs").
    let method = reports[0]["method"].as_str().unwrap();
    assert!(
        method.starts_with("The top 1 of 2 blocks of the backbone trained with")
            && method.contains("from the frozen blocks' states computed once by ONNX Runtime")
            && !method.contains("Linear")
            && !method.contains(" 1 epochs"),
        "{method}"
    );

    let graphs: Vec<Vec<u8>> = runs
        .iter()
        .map(|r| std::fs::read(r.join("backbone-tuned.onnx")).unwrap())
        .collect();
    assert_eq!(
        graphs[0], graphs[1],
        "the same seed writes the same tuned graph"
    );
    let sha: String = sha2::Sha256::digest(&graphs[0])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(details["tuned_graph_sha256"], sha.as_str());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["artefacts"]["backbone-tuned.onnx"], sha.as_str());

    let out = tempfile::tempdir().unwrap();
    let tuned = extract(
        &runs[0].join("backbone-tuned.onnx"),
        &out.path().join("tuned.npy"),
    );
    let frozen = extract(
        &repo().join("fixtures/models/tiny-bert.onnx"),
        &out.path().join("frozen.npy"),
    );
    assert_eq!(tuned.len(), 40 * 8, "40 sentences × 8 dimensions");
    assert_eq!(frozen.len(), tuned.len());
    assert!(tuned.iter().all(|v| v.is_finite()));
    assert!(
        tuned.iter().zip(&frozen).any(|(a, b)| (a - b).abs() > 1e-3),
        "tuning changed the features"
    );
}

/// Runs a copy of the tiny fine-tuning pipeline named `name`, with `edits` (text, replacement) applied.
fn run_variant(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let fixtures = repo().join("fixtures");
    let mut text = std::fs::read_to_string(repo().join(PIPELINE))
        .unwrap()
        .replace("../", &format!("{}/", fixtures.display()))
        .replace("name = \"tiny-fine-tune\"", &format!("name = \"{name}\""));
    for (from, to) in edits {
        text = text.replace(from, to);
    }
    let pipeline = dir.join(format!("{name}.toml"));
    std::fs::write(&pipeline, text).unwrap();
    run_pipeline_with_features(
        pipeline.to_str().unwrap(),
        &dir.join("runs"),
        &dir.join("features"),
    )
}

#[test]
fn tuning_every_block_says_so_in_the_report() {
    // `layers = "all"`, one epoch: nothing is frozen, so the report must not speak of frozen blocks' states.
    let dir = tempfile::tempdir().unwrap();
    let run = run_variant(
        dir.path(),
        "tiny-all",
        &[
            ("layers = 1", "layers = \"all\""),
            ("epochs = 12", "epochs = 1"),
        ],
    );
    let report = stage(&run);
    let method = report["method"].as_str().unwrap();
    assert!(
        method.starts_with("Every block of the backbone (2) and its embeddings trained with")
            && method.contains("nothing is frozen")
            && !method.contains("frozen blocks' states")
            && method.contains("1 epoch of batches"),
        "{method}"
    );
}

#[test]
fn repeated_draws_report_each_draw_and_the_paired_spread() {
    // `draws = 3`: three seeded draws of the split's training size per class, the rest as test rows.
    let dir = tempfile::tempdir().unwrap();
    let run = run_variant(
        dir.path(),
        "tiny-draws",
        &[("epochs = 12", "epochs = 3\ndraws = 3")],
    );
    let report = stage(&run);
    let draws = &report["details"]["draws"];
    assert_eq!(draws["draws"], 3, "{draws}");
    let rows = draws["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let splits = std::fs::read_to_string(run.join("splits.csv")).unwrap();
    let labelled = splits.lines().count() - 1;
    let per_class = draws["per_class"].as_u64().unwrap() as usize;
    for drawn in rows {
        let drawn: Vec<u64> = drawn
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(
            drawn.len(),
            2 * per_class,
            "two classes, {per_class} rows each"
        );
        assert!(
            drawn.windows(2).all(|w| w[0] < w[1]) && drawn.iter().all(|&r| (r as usize) < labelled)
        );
    }
    assert_ne!(rows[0], rows[1], "each draw its own rows");
    for side in ["frozen", "tuned"] {
        let values = draws[side]["values"].as_array().unwrap();
        assert_eq!(values.len(), 3);
        let mean = values.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / 3.0;
        assert!((draws[side]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    }
    // The paired spread is of the differences, draw by draw.
    for k in 0..3 {
        let d = draws["tuned"]["values"][k].as_f64().unwrap()
            - draws["frozen"]["values"][k].as_f64().unwrap();
        assert!((draws["difference"]["values"][k].as_f64().unwrap() - d).abs() < 1e-12);
    }
    let finding = report["finding"].as_str().unwrap();
    assert!(finding.starts_with("over 3 draws of "), "{finding}");
    let markdown = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(markdown.contains("tuned, 3 draws"), "{markdown}");
}

/// The first cell of each row of a stage's table.
fn row_names(report: &Value) -> Vec<&str> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect()
}

/// `[fine_tune.first]` appended to the tiny pipeline.
const SIMCSE_FIRST: &str = "\n[fine_tune.first]\nobjective = \"simcse\"\ntexts = \"all\"\nepochs = 4\n\
                            learning_rate = 3e-3\nbatch_size = 8\ndropout = 0.1\n";

#[test]
fn a_simcse_first_phase_moves_the_weights_and_is_compared_with_direct_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_variant(
        dir.path(),
        "tiny-simcse-first",
        &[
            ("shots = [2, 4]", "shots = [4]"),
            ("repeats = 2\n", &format!("repeats = 2\n{SIMCSE_FIRST}")),
        ],
    );
    let report = stage(&run);
    let first = &report["details"]["first"];
    assert_eq!(first["objective"], "simcse", "{first}");
    let splits = std::fs::read_to_string(run.join("splits.csv")).unwrap();
    assert_eq!(
        first["rows"].as_u64().unwrap() as usize,
        splits.lines().count() - 1,
        "every row's text"
    );
    let losses: Vec<f64> = first["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < losses[0], "SimCSE's loss falls: {losses:?}");
    // Not a no-op: the task's fine-tuning from SimCSE's weights, with the same seed and settings as direct
    // fine-tuning, follows another path.
    assert_ne!(
        first["then_epochs"][0]["train_loss"], report["details"]["epochs"][0]["train_loss"],
        "tuning after SimCSE starts where direct tuning does: the first phase changed nothing"
    );
    for key in ["first_only", "first_then_tuned"] {
        let accuracy = first[key]["accuracy"].as_f64().unwrap();
        let interval = &first[key]["interval"];
        assert!(
            interval["lower"].as_f64().unwrap() <= accuracy
                && accuracy <= interval["upper"].as_f64().unwrap(),
            "{key}: {first}"
        );
    }
    let rows = row_names(&report);
    assert_eq!(
        rows[2], "SimCSE only (first phase, no task training)",
        "{rows:?}"
    );
    assert_eq!(rows[3], "SimCSE, then tuned", "{rows:?}");
    assert!(
        report["finding"]
            .as_str()
            .unwrap()
            .contains("SimCSE first, then tuned")
    );
    // The learning curve's draws are tuned both ways, paired.
    assert!(rows.contains(&"4 rows per class (2 draws)"), "{rows:?}");
    let point = &report["details"]["learning_curve"][0];
    assert_eq!(point["per_class"], 4);
    let tuned = point["tuned"]["values"].as_array().unwrap();
    let after = point["first_then_tuned"]["values"].as_array().unwrap();
    let difference = point["first_then_tuned_minus_tuned"]["values"]
        .as_array()
        .unwrap();
    for k in 0..2 {
        let d = after[k].as_f64().unwrap() - tuned[k].as_f64().unwrap();
        assert!((difference[k].as_f64().unwrap() - d).abs() < 1e-12);
    }
}

#[test]
fn an_intermediate_task_trains_first_on_another_registered_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let first = "\n[fine_tune.first]\nobjective = \"classification\"\ndataset = \"amazon-snippets\"\n\
                 max_rows = 40\nepochs = 2\nlearning_rate = 3e-3\nbatch_size = 8\n";
    let run = run_variant(
        dir.path(),
        "tiny-intermediate",
        &[("[learning_curve]", &format!("{first}\n[learning_curve]"))],
    );
    let report = stage(&run);
    let first = &report["details"]["first"];
    assert_eq!(first["objective"], "classification", "{first}");
    assert_eq!(first["classes"], 2, "{first}");
    assert_eq!(first["rows"], 40, "{first}");
    assert!(
        first["source"]
            .as_str()
            .unwrap()
            .contains("`amazon-snippets`"),
        "{first}"
    );
    assert_ne!(
        first["then_epochs"][0]["train_loss"], report["details"]["epochs"][0]["train_loss"],
        "the intermediate task changed nothing"
    );
    let rows = row_names(&report);
    assert_eq!(rows[3], "intermediate task, then tuned", "{rows:?}");
}

#[test]
fn lora_trains_adapters_merged_into_the_written_graph() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_variant(
        dir.path(),
        "tiny-lora",
        &[(
            "dropout = 0.0\n",
            "dropout = 0.0\nlora = { rank = 2, alpha = 4.0 }\n",
        )],
    );
    let report = stage(&run);
    let details = &report["details"];
    assert_eq!(details["lora"]["rank"], 2, "{details}");
    // The top block's six adapters (A [2, in], B [out, 2]; hidden 8, feed-forward 16) and the head.
    let adapters = 2 * (4 * (8 + 8) + (8 + 16) + (16 + 8));
    assert_eq!(details["trainable_parameters"], adapters + 2 * 8 + 2);
    assert!(
        report["method"]
            .as_str()
            .unwrap()
            .starts_with("LoRA adapters (Hu et al., 2021: rank 2")
    );
    // Not a no-op: the merged graph is not the released one (which is exactly what graft writes).
    let released = std::fs::read(repo().join("fixtures/models/tiny-bert.onnx")).unwrap();
    assert_ne!(
        details["tuned_graph_sha256"].as_str().unwrap(),
        format!("{:x}", sha2::Sha256::digest(&released))
    );
    // The tuned graph in the run folder is the one recorded.
    let written = std::fs::read(run.join("backbone-tuned.onnx")).unwrap();
    assert_eq!(
        details["tuned_graph_sha256"].as_str().unwrap(),
        format!("{:x}", sha2::Sha256::digest(&written))
    );
}
