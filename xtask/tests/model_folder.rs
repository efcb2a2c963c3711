//! Hugging Face–style model folders and the choice of a graph's output, as a user meets them: a folder the
//! suite assembles from the registered MiniLM package (graph under `onnx/`, tokenizer, sentence-transformers
//! settings) extracts exactly what the registered name extracts, its pooling setting is honoured, a pipeline
//! takes it as `model = "folder"`, and a graph whose first output is int64 is read by its float output or
//! refused with every output listed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cache, repo};
use graft_onnx::{Dim, ElementType, Graph, ValueInfo, standalone_model};

/// A sentence-transformers folder of MiniLM-L6 (int8) with `pooling` ("mean_tokens" or "cls_token").
fn assemble(dir: &Path, pooling: &str) -> PathBuf {
    let package = cache().join("models/minilm-l6-int8");
    let folder = dir.join(format!("minilm-{pooling}"));
    std::fs::create_dir_all(folder.join("onnx")).unwrap();
    std::fs::create_dir_all(folder.join("1_Pooling")).unwrap();
    std::fs::copy(package.join("model.onnx"), folder.join("onnx/model.onnx")).unwrap();
    std::fs::copy(
        package.join("tokenizer.json"),
        folder.join("tokenizer.json"),
    )
    .unwrap();
    let write = |name: &str, text: String| std::fs::write(folder.join(name), text).unwrap();
    write(
        "modules.json",
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#
            .to_owned(),
    );
    write(
        "1_Pooling/config.json",
        format!(
            r#"{{"word_embedding_dimension": 384, "pooling_mode_cls_token": {}, "pooling_mode_mean_tokens": {},
  "pooling_mode_max_tokens": false, "pooling_mode_mean_sqrt_len_tokens": false}}"#,
            pooling == "cls_token",
            pooling == "mean_tokens"
        ),
    );
    write(
        "sentence_bert_config.json",
        r#"{"max_seq_length": 256, "do_lower_case": false}"#.to_owned(),
    );
    folder
}

fn xtask(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(args)
        .args(paths)
        .args(["--cache-dir"])
        .arg(cache())
        .output()
        .unwrap()
}

/// `extract --model <model…>` of the tiny sentiment table into `out` (.npy); the file's bytes.
fn extract(model: &[&str], out: &Path) -> Result<Vec<u8>, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("extract")
        .args(model)
        .args([
            "--input",
            "fixtures/data/tiny-sentiment.csv",
            "--text-column",
            "text",
            "--no-progress",
        ])
        .arg("--output")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    if output.status.success() {
        Ok(std::fs::read(out).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn a_model_folder_extracts_what_the_registered_model_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let mean = assemble(dir.path(), "mean_tokens");
    let cls = assemble(dir.path(), "cls_token");
    let registered = extract(
        &["--model", "minilm-l6-int8"],
        &dir.path().join("registered.npy"),
    )
    .unwrap();
    let folder = extract(
        &["--model", mean.to_str().unwrap()],
        &dir.path().join("folder.npy"),
    )
    .unwrap();
    assert_eq!(
        registered, folder,
        "mean-pooled, normalised, 256 tokens: the same bytes"
    );
    // The folder's pooling module is read: CLS pooling gives other vectors of the same shape.
    let first_token = extract(
        &["--model", cls.to_str().unwrap()],
        &dir.path().join("cls.npy"),
    )
    .unwrap();
    assert_eq!(first_token.len(), registered.len());
    assert_ne!(first_token, registered);
    // --tokenizer with a folder is a contradiction, said plainly.
    let err = extract(
        &[
            "--model",
            mean.to_str().unwrap(),
            "--tokenizer",
            "fixtures/models/tiny-tokenizer.json",
        ],
        &dir.path().join("x.npy"),
    )
    .unwrap_err();
    assert!(
        err.contains("is a folder, and --tokenizer is given too"),
        "{err}"
    );
}

#[test]
fn a_pipeline_names_a_model_folder_and_takes_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    assemble(dir.path(), "cls_token"); // named below by its path relative to the pipeline
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let pipeline = dir.path().join("folder.toml");
    std::fs::write(
        &pipeline,
        format!(
            "schema = 1\nname = \"folder\"\n\n[data]\npath = {:?}\ntext_column = \"text\"\nlabel_column = \"label\"\n\n\
             [split.stratified]\ntrain = 0.5\nvalidation = 0.25\ntest = 0.25\n\n[backbone]\nmodel = \"minilm-cls_token\"\n\
             threads = 1\n\n[head.logistic]\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let output = xtask(
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--no-progress",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--features-dir",
        ],
        &[&dir.path().join("features")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run_dir = std::fs::read_dir(runs.join("folder"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    let settings = &manifest["pipeline"]["resolved"]["backbone"];
    assert_eq!(settings["pooling"], "cls", "{settings}");
    assert_eq!(settings["normalize"], true);
    assert_eq!(settings["max_length"], 256);
    assert!(
        settings["source"]["onnx"]
            .as_str()
            .unwrap()
            .ends_with("minilm-cls_token/onnx/model.onnx"),
        "{settings}"
    );
}

/// A graph over the tiny tokenizer's 54 ids: `ids` (int64, the input copied) first, then, when `float`,
/// `states` (a 4-wide embedding of every token).
fn graph_with_int_output(path: &Path, float: bool) {
    let mut g = Graph::new(17, "t");
    g.node_into("Identity", &["input_ids"], &[], "ids");
    let table =
        ndarray::Array2::from_shape_fn((54, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
    let table = g.constant("table", table.view().into_dyn());
    let mut outputs = vec![ValueInfo::new(
        "ids",
        ElementType::Int64,
        vec![Dim::Named("batch".into()), Dim::Named("tokens".into())],
    )];
    if float {
        g.node_into("Gather", &[&table, "input_ids"], &[], "states");
        outputs.push(ValueInfo::new(
            "states",
            ElementType::Float,
            vec![
                Dim::Named("batch".into()),
                Dim::Named("tokens".into()),
                Dim::Fixed(4),
            ],
        ));
    }
    let inputs = [
        ValueInfo::new(
            "input_ids",
            ElementType::Int64,
            vec![Dim::Named("batch".into()), Dim::Named("tokens".into())],
        ),
        ValueInfo::new(
            "attention_mask",
            ElementType::Int64,
            vec![Dim::Named("batch".into()), Dim::Named("tokens".into())],
        ),
    ];
    std::fs::write(path, standalone_model(&g, &inputs, &outputs, &[])).unwrap();
}

#[test]
fn the_float_output_is_chosen_and_an_int64_one_is_refused_with_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let (both, ints) = (dir.path().join("both.onnx"), dir.path().join("ints.onnx"));
    graph_with_int_output(&both, true);
    graph_with_int_output(&ints, false);
    let model = |onnx: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--model",
            onnx.to_str().unwrap(),
            "--tokenizer",
            "fixtures/models/tiny-tokenizer.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>, out: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        extract(&args, &dir.path().join(out))
    };
    // The first output is int64: the float token states are pooled instead.
    let chosen = run(model(&both, &[]), "both.npy").unwrap();
    assert_eq!(
        run(model(&both, &["--output-name", "states"]), "named.npy").unwrap(),
        chosen
    );
    // Naming the int64 output, or a graph with nothing else: every output listed with its type.
    let err = run(model(&both, &["--output-name", "ids"]), "wrong.npy").unwrap_err();
    assert!(
        err.contains("output `ids` holds") && err.contains("not float32 features"),
        "{err}"
    );
    assert!(err.contains("states ("), "{err}");
    let err = run(model(&ints, &[]), "ints.npy").unwrap_err();
    assert!(
        err.contains("no output holds float32 token states") && err.contains("ids ("),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Cannot extract"),
        "{err}"
    );
}
