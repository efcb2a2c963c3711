//! The transfer-learning technique stages on the tiny fixtures: each reports the comparison it exists for,
//! deterministically, and mistakes found only once the data is read are located errors.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{cache, metrics, repo, run_pipeline};
use serde_json::Value;

/// fixtures/pipelines/tiny-techniques.toml, run once for every test of this file.
fn techniques() -> &'static (tempfile::TempDir, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let runs = tempfile::tempdir().unwrap();
        let dir = run_pipeline("fixtures/pipelines/tiny-techniques.toml", runs.path());
        (runs, dir)
    })
}

/// The stage `name`'s report in the shared run.
fn stage(name: &str) -> Value {
    let recorded = metrics(&techniques().1);
    recorded["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["technique"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {recorded}"))
        .clone()
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn assert_interval(s: &Value) {
    let (lo, mean, hi) = (number(&s["lower"]), number(&s["mean"]), number(&s["upper"]));
    assert!(
        (0.0..=1.0).contains(&mean) && lo <= mean && mean <= hi,
        "{s}"
    );
}

#[test]
fn every_stage_is_reported_in_metrics_markdown_html_and_the_manifest() {
    let dir = &techniques().1;
    let recorded = metrics(dir);
    let names: Vec<&str> = recorded["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["technique"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "prompt_templates",
            "zero_shot",
            "few_shot",
            "self_training",
            "domain_adaptation",
            "multitask",
            "fusion",
            "distillation",
            "augmentation"
        ]
    );
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for t in recorded["techniques"].as_array().unwrap() {
        let title = t["title"].as_str().unwrap();
        assert!(markdown.contains(&format!("## {title}")), "{title}");
        assert!(markdown.contains(t["finding"].as_str().unwrap()));
        assert!(html.contains(&format!(
            "id=\"technique-{}\"",
            t["technique"].as_str().unwrap()
        )));
        let columns = t["columns"].as_array().unwrap().len();
        assert!(
            t["rows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r.as_array().unwrap().len() == columns)
        );
    }
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let resolved = &manifest["pipeline"]["resolved"]["techniques"];
    assert_eq!(resolved["few_shot"]["episodes"], 20);
    assert_eq!(resolved["distillation"]["alpha"], 0.5);
    assert!(
        resolved["fusion"]["backbone"]["onnx"]
            .as_str()
            .unwrap()
            .ends_with("tiny-embedder-small.onnx")
    );
}

#[test]
fn the_same_file_and_seed_give_the_same_technique_results() {
    let again = tempfile::tempdir().unwrap();
    let second = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-techniques.toml",
        again.path(),
    ));
    let first = metrics(&techniques().1);
    for (a, b) in first["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["techniques"].as_array().unwrap())
    {
        let (mut a, mut b) = (a["details"].clone(), b["details"].clone());
        // Extraction speeds are timings, not results.
        for d in [&mut a, &mut b] {
            if let Some(o) = d.as_object_mut() {
                o.retain(|k, _| {
                    !k.contains("per_second") && !k.ends_with("_seconds") && k != "speed_up"
                });
            }
        }
        assert_eq!(a, b);
    }
}

#[test]
fn zero_shot_embeds_the_class_descriptions_through_the_template() {
    let z = stage("zero_shot");
    let d = &z["details"];
    // Classes in label order: negative, positive.
    assert_eq!(
        d["class_texts"],
        serde_json::json!(["it is terrible", "it is wonderful"])
    );
    // The tiny embedder puts sentiment on one axis, so the descriptions alone separate the classes.
    assert_eq!(d["test_accuracy"], 1.0);
    // The pipeline's prototype head started from the descriptions.
    assert!(
        z["method"]
            .as_str()
            .unwrap()
            .contains("The pipeline's prototype head was trained with this prior")
    );
    let prior = d["prior"].as_array().unwrap();
    assert_eq!(prior.len(), 2);
    for p in prior {
        assert_interval(&p["prototype"]);
        assert_interval(&p["with_prior"]);
    }
}

#[test]
fn few_shot_runs_seeded_episodes_per_k() {
    let f = stage("few_shot");
    let d = &f["details"];
    assert_eq!(
        (d["ways"].as_u64(), d["episodes"].as_u64()),
        (Some(2), Some(20))
    );
    let points = d["points"].as_array().unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["shots"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2]
    );
    for p in points {
        assert_interval(&p["prototype"]);
        assert_interval(&p["logistic"]);
    }
}

#[test]
fn self_training_adds_confident_pseudo_labels_round_by_round() {
    let s = stage("self_training");
    let rounds = s["details"]["rounds"].as_array().unwrap();
    assert_eq!(rounds[0]["labelled"], 4, "2 per class");
    assert_eq!(rounds[0]["pseudo_labelled"], 0);
    let added: Vec<u64> = rounds
        .iter()
        .map(|r| r["pseudo_labelled"].as_u64().unwrap())
        .collect();
    assert!(added.windows(2).all(|w| w[0] <= w[1]), "{added:?}");
    assert!(added.last().unwrap() > &0 && added.last().unwrap() <= &16);
    assert!(
        rounds.len() <= 3,
        "at most `rounds` = 2 rounds after round 0"
    );
    assert!((0.0..=1.0).contains(&number(&s["details"]["all_labels_accuracy"])));
}

#[test]
fn domain_adaptation_scores_every_alignment_on_the_target_rows() {
    let d = stage("domain_adaptation");
    let details = &d["details"];
    assert_eq!(details["target_rows"], 12);
    let methods: Vec<&str> = details["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "no adaptation",
            "per-domain standardisation",
            "CORAL",
            "per-domain standardisation + CORAL"
        ]
    );
    for m in details["methods"].as_array().unwrap() {
        let accuracy = number(&m["target_accuracy"]);
        let [lower, upper] = [0, 1].map(|i| number(&m["target_interval"][i]));
        assert!(
            0.0 <= lower && lower <= accuracy && accuracy <= upper && upper <= 1.0,
            "{m}"
        );
    }
    assert!((0.0..=1.0).contains(&number(&details["target_cross_validated_accuracy"])));
    // The best alignment against none, in numbers and in words.
    let best = &details["best_vs_none"];
    assert!(number(&best["lower"]) <= number(&best["difference"]));
    assert!(number(&best["difference"]) <= number(&best["upper"]));
    assert!((0.0..=1.0).contains(&number(&best["mcnemar"]["p_value"])));
    let finding = d["finding"].as_str().unwrap();
    assert!(
        [
            "helps on the target",
            "hurts on the target",
            "no alignment measurably"
        ]
        .iter()
        .any(|w| finding.contains(w)),
        "{finding}"
    );
    // The target's extraction is timed on its own; the adapted head is kept with the run's heads.
    assert!(number(&details["target_extract_seconds"]) >= 0.0);
    let kept = details["adapted_head"]["name"].as_str().unwrap();
    assert_eq!(kept, "logistic-adapted");
    // Kept by evidence: the best alignment only when its paired interval is above zero, else none.
    let expected = if number(&best["lower"]) > 0.0 {
        best["alignment"].as_str().unwrap()
    } else {
        "no adaptation"
    };
    assert_eq!(details["adapted_head"]["alignment"], expected);
    assert!(
        finding.contains(&format!("logistic-adapted keeps {expected}")),
        "{finding}"
    );
    assert!(techniques().1.join("heads/logistic-adapted.json").is_file());
    assert!(number(&metrics(&techniques().1)["timings_seconds"]["techniques"]) > 0.0);
}

#[test]
fn domain_adaptation_takes_an_unlabelled_target_and_keeps_a_head_for_it() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline(
        "fixtures/pipelines/tiny-domain-unlabelled.toml",
        runs.path(),
    );
    let recorded = metrics(&run_dir);
    let d = &recorded["techniques"][0];
    assert_eq!(d["details"]["labelled"], false);
    assert_eq!(d["details"]["target_rows"], 12);
    assert!(d["details"]["best_vs_none"].is_null());
    assert!(d["details"]["methods"][0]["target_accuracy"].is_null());
    // Nothing validates an alignment without target labels: none is kept (on main CORAL was, by convention).
    assert_eq!(d["details"]["adapted_head"]["alignment"], "no adaptation");
    let finding = d["finding"].as_str().unwrap();
    assert!(
        finding.contains("unlabelled") && finding.contains("keeps no adaptation"),
        "{finding}"
    );
    // `predict` with the kept head on the raw target rows.
    let out = runs.path().join("target.csv");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("predict")
        .arg(&run_dir)
        .args([
            "fixtures/data/tiny-target-unlabelled.csv",
            "--no-progress",
            "--head",
            "logistic-adapted",
            "--output",
        ])
        .arg(&out)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 13, "{text}");
    // Each predicted class matches the report's shares for the kept alignment.
    let shares = d["rows"][0][2].as_str().unwrap();
    let positive = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1) == Some("positive"))
        .count();
    assert!(
        shares.contains(&format!("positive {:.0}%", 100.0 * positive as f64 / 12.0)),
        "{shares} vs {positive} of 12"
    );
}

#[test]
fn domain_adaptation_can_tune_the_backbone_with_simcse_on_both_domains_texts() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-domain-simcse.toml", runs.path());
    let recorded = metrics(&run_dir);
    let d = &recorded["techniques"][0];
    let methods = d["details"]["methods"].as_array().unwrap();
    let simcse = methods.last().unwrap();
    assert_eq!(
        simcse["method"], "SimCSE on both domains' texts (backbone tuned)",
        "{methods:?}"
    );
    let accuracy = number(&simcse["target_accuracy"]);
    let interval = simcse["target_interval"].as_array().unwrap();
    assert!(number(&interval[0]) <= accuracy && accuracy <= number(&interval[1]));
    let details = &d["details"]["simcse"];
    // SimCSE read the source's training texts and every target text; its labels none.
    let splits = std::fs::read_to_string(run_dir.join("splits.csv")).unwrap();
    let train = splits.lines().filter(|l| l.ends_with(",train")).count() as u64;
    assert_eq!(details["rows"].as_u64().unwrap(), train + 12, "{details}");
    assert_eq!(details["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(details["trained_blocks"], 1);
    // Not a no-op: the target's embeddings moved away from the frozen backbone's.
    assert!(number(&details["target_shift"]) > 1e-4, "{details}");
    assert!(
        d["method"]
            .as_str()
            .unwrap()
            .contains("SimCSE (Gao, Yao & Chen, 2021)")
    );
}

#[test]
fn a_progressive_column_learns_a_mix_of_every_layer() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-progressive.toml", runs.path());
    let recorded = metrics(&run_dir);
    let p = &recorded["techniques"][0];
    assert_eq!(p["technique"], "progressive");
    let details = &p["details"];
    assert_eq!(
        details["layers"], 7,
        "MiniLM-L6: the embeddings and 6 blocks"
    );
    let mix: Vec<f64> = details["mix"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    assert_eq!(mix.len(), 7);
    assert!((mix.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{mix:?}");
    // Not a no-op: training moved the mix away from the even start (1/7 each).
    let spread =
        mix.iter().copied().fold(f64::MIN, f64::max) - mix.iter().copied().fold(f64::MAX, f64::min);
    assert!(spread > 1e-3, "{mix:?}");
    for (accuracy, interval) in [
        ("mixed_test_accuracy", "mixed_interval"),
        ("last_layer_test_accuracy", "last_layer_interval"),
    ] {
        let a = number(&details[accuracy]);
        let i = details[interval].as_array().unwrap();
        assert!(number(&i[0]) <= a && a <= number(&i[1]), "{details}");
    }
    let difference = number(&details["mixed_minus_last"]["interval"]["estimate"]);
    let expected =
        number(&details["mixed_test_accuracy"]) - number(&details["last_layer_test_accuracy"]);
    assert!((difference - expected).abs() < 1e-12);
    assert!(
        p["finding"]
            .as_str()
            .unwrap()
            .starts_with("learned mix of 7 layers")
    );
}

/// A float32 `.npy` file of `rows` × `cols` values.
fn write_npy(path: &std::path::Path, rows: usize, cols: usize, values: &[f32]) {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    values
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn meta_learning_trains_on_base_classes_and_scores_novel_ones() {
    // Eight classes of 60 rows in 12 dimensions: each class a direction in the first 6, the rest noise
    // louder than the signal — what a learned projection can drop and cosine prototypes cannot.
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (480, 12);
    let mut values = Vec::with_capacity(rows * cols);
    let mut labels = String::from("label,split\n");
    let mut state = 11u64;
    for i in 0..rows {
        let class = i % 8;
        for j in 0..cols {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
            let signal = if j < 6 && (class >> (j % 3)) & 1 == usize::from(j >= 3) {
                1.0
            } else {
                0.0
            };
            values.push(signal + if j < 6 { 0.3 } else { 2.0 } * noise);
        }
        let split = if i < 320 { "train" } else { "test" };
        labels.push_str(&format!("c{class},{split}\n"));
    }
    write_npy(&dir.path().join("x.npy"), rows, cols, &values);
    std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
    let pipeline = dir.path().join("tiny-meta.toml");
    std::fs::write(
        &pipeline,
        "schema = 1\nname = \"tiny-meta\"\nseed = 3\n\n[data]\nfeatures = \"x.npy\"\nlabels = \"labels.csv\"\n\
         label_column = \"label\"\nsplit_column = \"split\"\n\n[split.predefined]\n\n[head.prototype]\n\n\
         [meta_learning]\nnovel = [\"c4\", \"c5\", \"c6\", \"c7\"]\nways = 3\nshots = [1, 5]\nqueries = 5\n\
         episodes = 50\ntrain_episodes = 300\ndim = 8\nlearning_rate = 0.01\n",
    )
    .unwrap();
    let run_dir = run_pipeline(pipeline.to_str().unwrap(), &dir.path().join("runs"));
    let recorded = metrics(&run_dir);
    let m = &recorded["techniques"][0];
    assert_eq!(m["technique"], "meta_learning");
    let details = &m["details"];
    // A quarter of the base classes (at least 2), spread over them, validate; the rest train.
    assert_eq!(
        details["validation_classes"],
        serde_json::json!(["c0", "c2"])
    );
    assert_eq!(details["base"], serde_json::json!(["c1", "c3"]));
    let scores = details["validation_accuracy"].as_array().unwrap();
    assert_eq!(scores.len(), 4, "the start and every 100 of 300 episodes");
    let kept = details["kept_episode"].as_u64().unwrap() as usize;
    let best = scores.iter().map(number).fold(f64::MIN, f64::max);
    assert_eq!(number(&scores[kept / 100]), best, "{details}");
    assert_eq!(details["trained_parameters"], 8 * 12);
    // Meta-training learned something: its episode loss fell (a no-op would stay where it started).
    let losses: Vec<f64> = details["training_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    assert!(losses.last().unwrap() < &(losses[0] * 0.9), "{losses:?}");
    let points = details["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "novel and base, K = 1 and 5");
    for point in points {
        let values = |key: &str| -> Vec<f64> {
            point[key]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(number)
                .collect()
        };
        let (frozen, learned, difference) = (
            values("frozen"),
            values("meta_trained"),
            values("difference"),
        );
        assert_eq!(frozen.len(), 50);
        for e in 0..50 {
            assert!((difference[e] - (learned[e] - frozen[e])).abs() < 1e-12);
        }
    }
    assert_eq!(points[0]["classes"], "novel");
    assert!(
        m["finding"]
            .as_str()
            .unwrap()
            .starts_with("novel 3-way 1-shot: meta-trained")
    );
}

#[test]
fn multitask_trains_each_label_column_and_a_shared_trunk() {
    let m = stage("multitask");
    let tasks = m["details"]["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["task"], "label");
    assert_eq!(tasks[1]["task"], "strength");
    assert_eq!(tasks[1]["classes"], serde_json::json!(["mild", "strong"]));
    // Two rows have no strength: the task uses fewer rows than the first.
    let rows = |t: &Value| t["train_rows"].as_u64().unwrap() + t["test_rows"].as_u64().unwrap();
    assert!(rows(&tasks[1]) < rows(&tasks[0]));
    for t in tasks {
        for key in ["head", "mlp_alone", "mlp_shared_trunk"] {
            assert!((0.0..=1.0).contains(&number(&t[key]["accuracy"])), "{t}");
        }
    }
}

#[test]
fn fusion_concatenates_the_second_backbone() {
    let f = stage("fusion");
    let dims: Vec<u64> = f["details"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["dimension"].as_u64().unwrap())
        .collect();
    assert_eq!(
        dims,
        [8, 4, 12, 6],
        "pipeline, second, concatenated, projected"
    );
}

#[test]
fn distillation_reports_teacher_student_and_speed() {
    let stage = stage("distillation");
    assert!(
        stage["method"]
            .as_str()
            .unwrap()
            .contains("an ensemble: the heads' mean probabilities")
    );
    let d = stage["details"].clone();
    for key in [
        "teacher_accuracy",
        "student_alone_accuracy",
        "distilled_accuracy",
    ] {
        assert!((0.0..=1.0).contains(&number(&d[key])), "{key}");
    }
    assert!(number(&d["teacher_rows_per_second"]) > 0.0);
    assert!(number(&d["student_rows_per_second"]) > 0.0);
    assert_eq!(d["timing_rows"], 8);
}

#[test]
fn text_augmentation_compares_training_with_and_without_views() {
    let a = stage("augmentation");
    let d = &a["details"];
    assert_eq!(d["views"], 2);
    assert_eq!(d["points"][0]["per_class"], 2);
    assert_interval(&d["points"][0]["without"]);
    assert_interval(&d["points"][0]["with"]);
    assert!(
        a["method"]
            .as_str()
            .unwrap()
            .contains("random deletion p = 0.1")
    );
}

#[test]
fn image_augmentation_measures_the_backbone_views() {
    let runs = tempfile::tempdir().unwrap();
    let recorded = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-images-augment.toml",
        runs.path(),
    ));
    let a = &recorded["techniques"][0];
    assert_eq!(a["technique"], "augmentation");
    assert_eq!(a["details"]["views"], 2);
    assert!((0.0..=1.0).contains(&number(&a["details"]["whole_split"]["with"])));
}

#[test]
fn continual_learning_tracks_every_stage_and_forgetting() {
    let runs = tempfile::tempdir().unwrap();
    let recorded = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-continual.toml",
        runs.path(),
    ));
    let c = &recorded["techniques"][0];
    assert_eq!(c["technique"], "continual");
    let d = &c["details"];
    assert_eq!(
        d["stages"],
        serde_json::json!([
            ["negative-mild", "negative-strong"],
            ["positive-mild", "positive-strong"]
        ])
    );
    // accuracy_matrix[learner][after stage][stage's classes]: three learners, 2 × 2, the upper triangle
    // (classes not seen yet) empty.
    let matrix = d["accuracy_matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 3);
    for learner in matrix {
        assert!(learner[0][1].is_null());
        assert!((0.0..=1.0).contains(&number(&learner[1][0])));
    }
    assert_eq!(d["seen_accuracy"][0].as_array().unwrap().len(), 2);
    assert_eq!(d["average_forgetting"].as_array().unwrap().len(), 3);
    assert!((0.0..=1.0).contains(&number(&d["joint_accuracy"])));
}

/// Runs an error fixture through the command line: it must fail with `fragments` in stderr and write no
/// run folder.
fn fails_with(name: &str, fragments: &[&str]) {
    let runs = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args([
            "run",
            &format!("fixtures/pipelines/errors/{name}.toml"),
            "--no-progress",
        ])
        .arg("--runs-dir")
        .arg(runs.path())
        .arg("--features-dir")
        .arg(runs.path().join(".features"))
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{name}.toml:")), "{stderr}");
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "expected `{fragment}` in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !runs.path().join(name).exists(),
        "no run folder for a failed run"
    );
}

#[test]
fn mistakes_found_once_the_data_is_read_are_located() {
    fails_with(
        "domain-other-classes",
        &["classes (bad, good) differ from the source's (negative, positive)"],
    );
    fails_with(
        "domain-empty-target",
        &["target domain: ", "has no data rows"],
    );
    fails_with(
        "distillation-same-backbone",
        &["the student backbone `tiny-embedder.onnx` is the teacher's"],
    );
    fails_with(
        "zero-shot-unknown-class",
        &["class `postive`", "did you mean `positive`?"],
    );
    fails_with(
        "domain-missing-text-column",
        &[
            "column `review` not found in the target table",
            "it has: text, label",
        ],
    );
    fails_with(
        "domain-missing-label-column",
        &["column `stars` not found in the target table"],
    );
}

/// `check` reads the data and opens the model (without extracting) and so refuses every error fixture a run
/// refuses, with the same located message, but for a head that diverges while it trains.
#[test]
fn check_finds_every_mistake_a_run_finds_but_divergence() {
    let scratch = tempfile::tempdir().unwrap();
    let files = common::error_fixtures();
    let stderr_of = |command: &str, file: &std::path::Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.current_dir(repo()).arg(command).arg(file);
        if command == "run" {
            c.args(["--no-progress", "--runs-dir"])
                .arg(scratch.path().join("runs"))
                .arg("--features-dir")
                .arg(scratch.path().join("features"));
        }
        let output = c.arg("--cache-dir").arg(cache()).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let mut missed = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy();
        let (code, checked) = stderr_of("check", file);
        if name == "diverging-mlp" {
            assert_eq!(code, Some(0), "{checked}");
            continue;
        }
        let (_, ran) = stderr_of("run", file);
        if code != Some(1) || checked != ran {
            missed.push(format!(
                "{name}: check said ({code:?})\n{checked}\nrun said\n{ran}"
            ));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn continual_classes_can_arrive_in_a_seeded_order() {
    let runs = tempfile::tempdir().unwrap();
    let recorded = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-continual-seeded.toml",
        runs.path(),
    ));
    let stages = recorded["techniques"][0]["details"]["stages"].clone();
    let mut arrived: Vec<String> = stages
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
        })
        .collect();
    let in_order = arrived.clone();
    arrived.sort();
    assert_eq!(
        arrived,
        [
            "negative-mild",
            "negative-strong",
            "positive-mild",
            "positive-strong"
        ]
    );
    // Seed 5 permutes the four classes (a fixed, reproducible order).
    assert_ne!(in_order, arrived, "{stages}");
    let again = tempfile::tempdir().unwrap();
    let second = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-continual-seeded.toml",
        again.path(),
    ));
    assert_eq!(
        second["techniques"][0]["details"],
        recorded["techniques"][0]["details"]
    );
}
