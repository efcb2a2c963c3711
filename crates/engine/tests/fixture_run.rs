//! A whole pipeline on the tiny fixtures: a generated BERT-shaped ONNX graph and a 40-row CSV/Parquet file.
//!
//! Needs the ONNX Runtime library, which it fetches into the cache like any run (`cargo xtask test` fetches it
//! beforehand).

mod common;

use std::path::Path;

use graft_config::Plan;
use graft_engine::{RunOptions, run};

use common::{cache_dir, repo};

/// Run options with a fresh feature cache in `features`, so every run's extraction counts are its own.
fn options(runs: &Path, features: &Path) -> RunOptions {
    let mut options = RunOptions::new(cache_dir(), runs);
    options.progress = false;
    options.features_dir = features.to_path_buf();
    options
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tiny_pipeline_runs_end_to_end_and_writes_a_complete_run_folder() {
    let plan = Plan::load(&repo().join("fixtures/pipelines/tiny.toml")).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let options = options(runs.path(), features.path());
    let started = std::time::Instant::now();
    let outcome = run(&plan, &options).unwrap();
    let wall = started.elapsed().as_secs_f64();

    // The fixture's sentiment words are linearly separable after mean pooling.
    let m = &outcome.metrics;
    assert_eq!(m.classes, ["negative", "positive"]);
    assert_eq!(
        (
            m.rows.read,
            m.rows.used,
            m.rows.train,
            m.rows.validation,
            m.rows.test
        ),
        (40, 40, 20, 10, 10)
    );
    assert_eq!(m.test.accuracy, 1.0, "{:?}", m.test);
    assert_eq!(m.test.confusion, vec![vec![5, 0], vec![0, 5]]);
    assert_eq!(
        (
            m.extraction.rows,
            m.extraction.extracted,
            m.extraction.cache_hits
        ),
        (40, 40, 0)
    );
    assert_eq!(m.extraction.dimension, 8);
    assert_eq!(m.extraction.batches, 10);
    assert_eq!(m.extraction.execution_provider, "CPUExecutionProvider");

    // The folder sits at runs/<name>/<timestamp>/ and holds every file; no partial folder is left over.
    assert_eq!(outcome.run_dir.parent().unwrap(), runs.path().join("tiny"));
    let names: Vec<String> = std::fs::read_dir(runs.path().join("tiny"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].starts_with('.'), "{names:?}");

    let metrics = read_json(&outcome.run_dir.join("metrics.json"));
    assert_eq!(metrics["test"]["accuracy"], 1.0);
    assert_eq!(metrics["rows"]["test"], 10);
    assert_eq!(metrics["test"]["per_class"][0]["class"], "negative");
    // Timings are measured, not placeholders: the stages that compute take time, they fit inside the
    // total, and the total inside the wall time of `run` itself.
    let timing = |stage: &str| metrics["timings_seconds"][stage].as_f64().unwrap();
    let stages = ["ingest", "provision", "extract", "train", "evaluate"];
    for stage in ["extract", "train", "total"] {
        assert!(timing(stage) > 0.0, "{stage}: {}", timing(stage));
    }
    let sum: f64 = stages.iter().map(|s| timing(s)).sum();
    assert!(
        stages.iter().all(|s| timing(s) >= 0.0) && sum <= timing("total") + 1e-3,
        "stages sum to {sum} s, total {} s",
        timing("total")
    );
    assert!(
        timing("total") <= wall,
        "total {} s, wall {wall} s",
        timing("total")
    );

    let manifest = read_json(&outcome.run_dir.join("manifest.json"));
    assert_eq!(manifest["seed"], 7);
    assert_eq!(manifest["graft_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["pipeline"]["resolved"]["name"], "tiny");
    assert_eq!(
        manifest["pipeline"]["resolved"]["backbone"]["pooling"],
        "mean"
    );
    assert_eq!(
        manifest["data"]["file"]["sha256"],
        graft_assets::sha256_file(&repo().join("fixtures/data/tiny-sentiment.csv")).unwrap()
    );
    assert_eq!(
        manifest["backbone"]["onnx"]["sha256"],
        graft_assets::sha256_file(&repo().join("fixtures/models/tiny-embedder.onnx")).unwrap()
    );
    assert_eq!(
        manifest["runtime"]["execution_provider"],
        "CPUExecutionProvider"
    );
    assert_eq!(manifest["runtime"]["version"], "1.31.1");
    assert_eq!(manifest["runtime"]["source"], "provisioned by graft");

    // splits.csv names every used row's split by its row in the data file.
    let splits = std::fs::read_to_string(outcome.run_dir.join("splits.csv")).unwrap();
    let lines: Vec<&str> = splits.lines().collect();
    assert_eq!(lines[0], "row,label,split");
    assert_eq!(lines.len(), 41);
    assert_eq!(lines.iter().filter(|l| l.ends_with(",test")).count(), 10);
    assert!(lines[1].starts_with("0,positive,"), "{}", lines[1]);

    let report = std::fs::read_to_string(outcome.run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("| **test** | 10 | 1.0000 | 1.0000 |"),
        "{report}"
    );
    assert!(report.contains("| negative | 5 | 0 |"), "{report}");
    assert!(
        outcome
            .summary
            .contains("test            10    1.0000    1.0000"),
        "{}",
        outcome.summary
    );
}

#[test]
fn same_file_and_seed_give_identical_metrics_csv_parquet_and_jsonl_alike() {
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let options = options(runs.path(), features.path());
    let csv = Plan::load(&repo().join("fixtures/pipelines/tiny.toml")).unwrap();
    let parquet = Plan::load(&repo().join("fixtures/pipelines/tiny-parquet.toml")).unwrap();
    let jsonl = Plan::load(&repo().join("fixtures/pipelines/tiny-jsonl.toml")).unwrap();
    let a = run(&csv, &options).unwrap().metrics;
    let b = run(&csv, &options).unwrap().metrics;
    let c = run(&parquet, &options).unwrap().metrics;
    let j = run(&jsonl, &options).unwrap().metrics;
    // The later runs find every row in the feature cache (the Parquet and JSONL files have the same texts).
    assert_eq!(
        (
            a.extraction.extracted,
            b.extraction.extracted,
            c.extraction.extracted
        ),
        (40, 0, 0)
    );
    assert_eq!(b.extraction.cache_hits, 40);
    for other in [&b, &c, &j] {
        assert_eq!(a.test, other.test);
        assert_eq!(a.validation, other.validation);
        assert_eq!(a.train, other.train);
        assert_eq!(a.rows, other.rows);
        assert_eq!(a.training, other.training);
    }
    // A different seed draws a different split.
    let mut reseeded = csv.clone();
    reseeded.seed = 8;
    let d = run(&reseeded, &options).unwrap().metrics;
    assert_eq!(d.rows.test, 10);
    assert_ne!(a.training.loss, d.training.loss);
}

#[test]
fn feature_cache_extracts_only_new_rows_and_never_trusts_a_damaged_chunk() {
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let options = options(runs.path(), features.path());
    let full = Plan::load(&repo().join("fixtures/pipelines/tiny.toml")).unwrap();

    // 30 of the 40 rows first, then all 40: only the 10 new rows are extracted.
    let mut part = full.clone();
    part.data.sample = Some(30);
    let first = run(&part, &options).unwrap().metrics;
    assert_eq!(
        (first.extraction.extracted, first.extraction.cache_hits),
        (30, 0)
    );
    let second = run(&full, &options).unwrap().metrics;
    assert_eq!(
        (second.extraction.extracted, second.extraction.cache_hits),
        (10, 30)
    );

    // Different extraction settings are a different namespace.
    let mut cls = full.clone();
    cls.backbone.as_mut().unwrap().config.pooling = graft_backbone::Pooling::Cls;
    assert_eq!(
        run(&cls, &options).unwrap().metrics.extraction.extracted,
        40
    );

    // A damaged chunk is skipped and its rows extracted again; results are unchanged.
    let namespace = graft_features::stats(features.path())
        .unwrap()
        .into_iter()
        .find(|s| s.description.contains("pooling mean"))
        .unwrap();
    let chunk = std::fs::read_dir(&namespace.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("chunk-"))
        .unwrap();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    let third = run(&full, &options).unwrap().metrics;
    assert!(third.extraction.extracted > 0);
    assert_eq!(third.test, second.test);

    // With `cache = false` nothing is read or written.
    let mut off = full.clone();
    off.backbone.as_mut().unwrap().cache = false;
    assert_eq!(
        run(&off, &options).unwrap().metrics.extraction.extracted,
        40
    );
}

#[test]
fn cuda_without_a_usable_gpu_falls_back_to_cpu_or_fails_as_configured() {
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let options = options(runs.path(), features.path());
    let mut plan = Plan::load(&repo().join("fixtures/pipelines/tiny.toml")).unwrap();
    let on_cpu = run(&plan, &options).unwrap();
    plan.backbone.as_mut().unwrap().cache = false;
    if Path::new("/proc/driver/nvidia/version").exists() {
        // CUDA may really start here: without fallback it either runs on the GPU with the CPU's scores, or
        // fails naming CUDA — never a silent CPU run.
        plan.backbone.as_mut().unwrap().config.provider = graft_engine::Provider::Cuda {
            device_id: 0,
            fallback: false,
        };
        match run(&plan, &options) {
            Ok(on_gpu) => {
                assert_eq!(
                    on_gpu.metrics.extraction.execution_provider,
                    "CUDAExecutionProvider"
                );
                assert_eq!(on_gpu.metrics.test.accuracy, on_cpu.metrics.test.accuracy);
            }
            Err(e) => assert!(e.to_string().starts_with("cannot run on CUDA"), "{e}"),
        }
        return;
    }
    plan.backbone.as_mut().unwrap().config.provider = graft_engine::Provider::Cuda {
        device_id: 0,
        fallback: true,
    };
    let fell_back = run(&plan, &options).unwrap();
    assert_eq!(fell_back.metrics.test, on_cpu.metrics.test);
    let runtime = &read_json(&fell_back.run_dir.join("manifest.json"))["runtime"];
    assert_eq!(runtime["provider_requested"], "cuda");
    assert_eq!(runtime["execution_provider"], "CPUExecutionProvider");
    assert!(
        runtime["provider_fallback"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA driver"),
        "{runtime}"
    );

    plan.backbone.as_mut().unwrap().config.provider = graft_engine::Provider::Cuda {
        device_id: 0,
        fallback: false,
    };
    let err = run(&plan, &options).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot run on CUDA: no NVIDIA driver"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn image_folder_pipeline_with_augmented_views_is_deterministic_and_cached() {
    let plan = Plan::load(&repo().join("fixtures/pipelines/tiny-images.toml")).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let options = options(runs.path(), features.path());
    let first = run(&plan, &options).unwrap();
    let m = &first.metrics;
    assert_eq!(m.classes, ["dark", "light"]);
    assert_eq!((m.rows.train, m.rows.validation, m.rows.test), (4, 2, 2));
    // 8 plain views + 2 augmented views of each of the 4 training images.
    assert_eq!(m.extraction.rows, 16);
    assert_eq!(m.extraction.extracted, 16);
    assert_eq!(m.extraction.dimension, 1280);
    // Dark and light 8x8 squares are trivially separable in ImageNet features.
    assert_eq!(m.test.accuracy, 1.0);
    let manifest = read_json(&first.run_dir.join("manifest.json"));
    let image = &manifest["pipeline"]["resolved"]["backbone"]["image"];
    assert_eq!(image["image_size"], 32);
    assert_eq!(image["resize"], 37); // 32 * 256 / 224, the registry's resize-to-crop ratio
    assert_eq!(image["augment"]["views"], 2);

    let second = run(&plan, &options).unwrap().metrics;
    assert_eq!(second.extraction.extracted, 0);
    assert_eq!(second.extraction.cache_hits, 16);
    assert_eq!(second.test, m.test);
    assert_eq!(second.training, m.training);

    // Another seed draws other augmented views (new cache entries), the plain views are reused.
    let mut reseeded = plan.clone();
    reseeded.seed = 4;
    let third = run(&reseeded, &options).unwrap().metrics;
    assert!(third.extraction.cache_hits >= 8, "{:?}", third.extraction);
    assert!(third.extraction.extracted >= 8);
}

#[test]
fn a_diverging_head_stops_with_the_setting_to_lower_and_no_run_folder() {
    // On main this handed NaN probabilities to the metrics, where average precision looped forever.
    let plan = Plan::load(&repo().join("fixtures/pipelines/errors/diverging-mlp.toml")).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let features = tempfile::tempdir().unwrap();
    let err = run(&plan, &options(runs.path(), features.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the MLP's training diverged"), "{err}");
    assert!(err.contains("lower `learning_rate` (now 1e30)"), "{err}");
    assert!(!runs.path().join("diverging-mlp").exists());
}
