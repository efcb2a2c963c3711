//! ONNX export: the merged model (backbone + pooling + normalisation + head + softmax) run by ONNX Runtime on
//! token ids or pixels gives the probabilities `predict` gives, within 1e-4; so does the head alone on
//! graft's features. Real parts: MiniLM-L6 on MR sentences, EfficientNet-Lite0 on images (fetched into the
//! cache like any run; `cargo xtask test` fetches them beforehand), plus the tiny fixtures.

mod common;

use std::path::{Path, PathBuf};

use graft_assets::Cache;
use graft_backbone::{ImageSource, Runtime, TextBackbone, TextBackboneConfig, resized_pixels};
use graft_config::Plan;
use graft_engine::{Provider, RunOptions, run};
use graft_jobs::{ExportJob, PredictJob, export, predict};
use ndarray::{Array2, Array4};
use ort::session::Session;
use ort::value::TensorRef;

use common::{cache_dir, repo};

const TOLERANCE: f32 = 1e-4;

fn runtime() -> Runtime {
    let cache = Cache::new(cache_dir());
    Runtime::load(&cache.runtime("onnxruntime").unwrap().library.path).unwrap()
}

/// Runs a pipeline file into `runs`, returning the run folder.
fn run_pipeline(pipeline: &str, runs: &Path) -> PathBuf {
    let plan = Plan::load(&repo().join(pipeline)).unwrap();
    let mut options = RunOptions::new(cache_dir(), runs);
    options.features_dir = runs.join(".features");
    options.progress = false;
    run(&plan, &options).unwrap().run_dir
}

/// `predict`'s probabilities for every row of `input`, one row per input row.
fn predicted(run_dir: &Path, head: &str, input: &Path, classes: &[&str]) -> Array2<f32> {
    let output = run_dir.join(format!("predict-{head}.csv"));
    let job = PredictJob {
        run_dir: run_dir.to_path_buf(),
        input: input.to_path_buf(),
        text_column: "text".to_owned(),
        id_column: None,
        output: output.clone(),
        head: Some(head.to_owned()),
        model: None,
        output_name: None,
        batch_size: 16,
        threads: 2,
        provider: Provider::Cpu,
        cache_dir: cache_dir(),
        progress: false,
    };
    predict(&job).unwrap();
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let columns: Vec<usize> = classes
        .iter()
        .map(|c| header.iter().position(|h| *h == format!("p_{c}")).unwrap())
        .collect();
    let rows: Vec<Vec<f32>> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            columns.iter().map(|&c| f[c].parse().unwrap()).collect()
        })
        .collect();
    Array2::from_shape_fn((rows.len(), classes.len()), |(r, c)| rows[r][c])
}

fn session(runtime: &Runtime, model: &Path) -> Session {
    Session::builder(runtime.environment())
        .unwrap()
        .commit_from_file(model)
        .unwrap()
}

/// Token ids, attention mask and token types for `texts`, padded to the longest (as any caller would).
fn token_batch(backbone: &TextBackbone, texts: &[String]) -> [Array2<i64>; 3] {
    let encoded = backbone.tokenizer().encode(texts).unwrap();
    let width = (0..texts.len())
        .map(|r| encoded.ids(r).len())
        .max()
        .unwrap();
    let mut ids = Array2::<i64>::zeros((texts.len(), width));
    let mut mask = Array2::<i64>::zeros((texts.len(), width));
    for r in 0..texts.len() {
        for (t, &id) in encoded.ids(r).iter().enumerate() {
            ids[[r, t]] = i64::from(id);
            mask[[r, t]] = 1;
        }
    }
    let types = Array2::<i64>::zeros(ids.raw_dim());
    [ids, mask, types]
}

/// The `probabilities` output of an exported model, rows × classes.
fn probabilities(out: &ort::session::SessionOutputs<'_>) -> Array2<f32> {
    out["probabilities"]
        .try_extract_array::<f32>()
        .unwrap()
        .into_dimensionality()
        .unwrap()
        .to_owned()
}

fn assert_close(name: &str, onnx: &Array2<f32>, graft: &Array2<f32>) {
    assert_eq!(onnx.dim(), graft.dim(), "{name}: shapes");
    let worst = onnx
        .iter()
        .zip(graft)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= TOLERANCE,
        "{name}: the exported model's probabilities differ from graft's by up to {worst}"
    );
}

/// Exports every exportable head of a text run merged and alone, and checks both against `predict`.
fn check_text_run(pipeline: &str, texts: Vec<String>, classes: &[&str], heads: &[&str]) {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline(pipeline, runs.path());
    let input = runs.path().join("input.csv");
    let mut csv = String::from("text\n");
    for t in &texts {
        csv.push_str(&format!("\"{}\"\n", t.replace('"', "\"\"")));
    }
    std::fs::write(&input, csv).unwrap();

    let runtime = runtime();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join(format!("heads/{}.json", heads[0]))).unwrap(),
    )
    .unwrap();
    let files = &manifest["backbone"]["files"];
    // A registered backbone's files are named relative to the cache, a graph a stage wrote relative to the
    // run folder (own files keep their absolute paths).
    let file = |key: &str| {
        let path = files[key]["path"].as_str().unwrap();
        let in_run = run_dir.join(path);
        if in_run.is_file() {
            in_run
        } else {
            cache_dir().join(path)
        }
    };
    let mut backbone = TextBackbone::load(
        &runtime,
        &file("onnx"),
        &file("tokenizer"),
        TextBackboneConfig {
            intra_threads: 2,
            progress: false,
            ..TextBackboneConfig::default()
        },
    )
    .unwrap();
    let [ids, mask, types] = token_batch(&backbone, &texts);
    let (features, _) = backbone.embed(&texts).unwrap();

    for head in heads {
        let graft = predicted(&run_dir, head, &input, classes);
        let merged = export(&ExportJob {
            run_dir: run_dir.clone(),
            head: Some((*head).to_owned()),
            output: None,
            head_only: false,
            cache_dir: cache_dir(),
        })
        .unwrap();
        // Self-describing: graft is the producer, and the tokenizer that makes its token ids is beside it.
        let merged_bytes = std::fs::read(&merged.output).unwrap();
        let parsed = graft_onnx::OnnxModel::parse(&merged_bytes).unwrap();
        assert!(
            parsed.producer().starts_with("graft "),
            "{}",
            parsed.producer()
        );
        let beside = merged
            .tokenizer
            .as_ref()
            .expect("a merged text model brings its tokenizer");
        assert_eq!(
            beside,
            &merged.output.parent().unwrap().join("tokenizer.json")
        );
        assert_eq!(
            std::fs::read(beside).unwrap(),
            std::fs::read(file("tokenizer")).unwrap()
        );
        let mut s = session(&runtime, &merged.output);
        let out = s
            .run(ort::inputs![
                "input_ids" => TensorRef::from_array_view(&ids).unwrap(),
                "attention_mask" => TensorRef::from_array_view(&mask).unwrap(),
                "token_type_ids" => TensorRef::from_array_view(&types).unwrap(),
            ])
            .unwrap();
        let p = probabilities(&out);
        assert_close(&format!("merged {head}"), &p, &graft);
        let predicted_index = out["predicted"].try_extract_array::<i64>().unwrap();
        let graft_index = graft_heads::argmax_rows(graft.view());
        assert_eq!(
            predicted_index
                .iter()
                .map(|&i| i as usize)
                .collect::<Vec<_>>(),
            graft_index,
            "merged {head}: predicted classes"
        );
        drop(out);

        let alone = export(&ExportJob {
            run_dir: run_dir.clone(),
            head: Some((*head).to_owned()),
            output: None,
            head_only: true,
            cache_dir: cache_dir(),
        })
        .unwrap();
        let mut s = session(&runtime, &alone.output);
        let out = s
            .run(ort::inputs!["features" => TensorRef::from_array_view(&features).unwrap()])
            .unwrap();
        let p = probabilities(&out);
        assert_close(&format!("{head} alone"), &p, &graft);
    }
}

#[test]
fn merged_minilm_models_match_graft_on_mr_sentences() {
    // 60 real MR sentences, both classes (positives come first in the file), lengths 3 to ~60 tokens.
    let mr = Cache::new(cache_dir()).dataset("mr").unwrap().table.path;
    let table = graft_ingest::read_table(&mr).unwrap();
    let text = table.column("text").unwrap().str().unwrap();
    let texts: Vec<String> = (0..30)
        .chain(10_000..10_030)
        .map(|i| text.get(i).unwrap().to_owned())
        .collect();
    check_text_run(
        "fixtures/pipelines/mr-export.toml",
        texts,
        &["negative", "positive"],
        &["logistic", "mlp", "prototype"],
    );
}

/// The sentences of fixtures/data/tiny-sentiment.csv.
fn tiny_sentences() -> Vec<String> {
    let csv = std::fs::read_to_string(repo().join("fixtures/data/tiny-sentiment.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let (_, rest) = l.split_once(',').unwrap();
            rest.rsplit_once(',')
                .unwrap()
                .0
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

#[test]
fn merged_tiny_models_match_graft_for_every_exportable_head() {
    check_text_run(
        "fixtures/pipelines/tiny-heads.toml",
        tiny_sentences(),
        &["negative", "positive"],
        &["logistic", "mlp", "prototype"],
    );
}

#[test]
fn a_tuned_backbone_s_head_exports_merged_with_the_tuned_graph_and_matches_predict() {
    // `[fine_tune]` keeps `logistic-tuned`, whose backbone is the run's tuned graph.
    check_text_run(
        "fixtures/pipelines/tiny-fine-tune.toml",
        tiny_sentences(),
        &["negative", "positive"],
        &["logistic-tuned"],
    );
}

#[test]
fn a_knn_head_is_refused_with_a_reason() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-heads.toml", runs.path());
    let err = export(&ExportJob {
        run_dir,
        head: Some("knn".to_owned()),
        output: None,
        head_only: false,
        cache_dir: cache_dir(),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("kNN head cannot be exported"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn merged_efficientnet_model_matches_graft_on_pixels() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-images.toml", runs.path());
    let folder = repo().join("fixtures/data/tiny-images");
    let merged = export(&ExportJob {
        run_dir: run_dir.clone(),
        head: None,
        output: None,
        head_only: false,
        cache_dir: cache_dir(),
    })
    .unwrap();
    let artefact: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("heads/logistic.json")).unwrap(),
    )
    .unwrap();
    let classes: Vec<String> = artefact["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let class_refs: Vec<&str> = classes.iter().map(String::as_str).collect();
    let graft = predicted(&run_dir, "logistic", &folder, &class_refs);

    // The images in the order `predict` lists them (its output's `path` column).
    let listed = std::fs::read_to_string(run_dir.join("predict-logistic.csv")).unwrap();
    let header: Vec<&str> = listed.lines().next().unwrap().split(',').collect();
    let path_column = header.iter().position(|h| *h == "path").unwrap();
    let paths: Vec<PathBuf> = listed
        .lines()
        .skip(1)
        .map(|l| folder.join(l.split(',').nth(path_column).unwrap()))
        .collect();
    assert_eq!(paths.len(), graft.nrows());

    let image = &artefact["backbone"]["settings"]["image"];
    let side = image["image_size"].as_u64().unwrap() as u32;
    let resize = image["resize"].as_u64().unwrap() as u32;
    let mut pixels = Array4::<u8>::zeros((paths.len(), side as usize, side as usize, 3));
    for (i, path) in paths.iter().enumerate() {
        pixels
            .index_axis_mut(ndarray::Axis(0), i)
            .assign(&resized_pixels(&ImageSource::File(path.clone()), resize, side).unwrap());
    }
    let runtime = runtime();
    let mut s = session(&runtime, &merged.output);
    let out = s
        .run(ort::inputs!["pixels" => TensorRef::from_array_view(&pixels).unwrap()])
        .unwrap();
    let p = probabilities(&out);
    assert_close("merged EfficientNet logistic", &p, &graft);
}

#[test]
fn exported_multi_label_heads_match_graft_with_sigmoids_and_thresholds() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-multilabel.toml", runs.path());
    let input = repo().join("fixtures/data/tiny-features.parquet");
    let features = graft_ingest::read_feature_matrix(&input, "embedding").unwrap();
    let runtime = runtime();
    for head in ["logistic", "mlp"] {
        let graft = predicted(&run_dir, head, &input, &["a", "b", "c"]);
        let alone = export(&ExportJob {
            run_dir: run_dir.clone(),
            head: Some(head.to_owned()),
            output: None,
            head_only: true,
            cache_dir: cache_dir(),
        })
        .unwrap();
        let mut s = session(&runtime, &alone.output);
        let out = s
            .run(ort::inputs!["features" => TensorRef::from_array_view(&features).unwrap()])
            .unwrap();
        let p = probabilities(&out);
        assert_close(&format!("multi-label {head}"), &p, &graft);
        // Rows need not sum to one: these are independent sigmoids.
        assert!(p.rows().into_iter().any(|r| (r.sum() - 1.0).abs() > 0.1));
        let decided = out["predicted"].try_extract_array::<bool>().unwrap();
        let artefact: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join(format!("heads/{head}.json"))).unwrap(),
        )
        .unwrap();
        let thresholds: Vec<f32> =
            serde_json::from_value(artefact["multi_label"]["thresholds"].clone()).unwrap();
        for ((r, l), &yes) in decided.indexed_iter().map(|(i, v)| ((i[0], i[1]), v)) {
            assert_eq!(
                yes,
                graft[[r, l]] >= thresholds[l],
                "{head} row {r} label {l}"
            );
        }
    }
}
