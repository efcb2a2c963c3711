//! What a run folder and a model folder may not get away with, as a user meets it on the command line: a
//! tokenizer other than the trained one, run files edited after the run, a model folder that reaches outside
//! itself or asks for more positions than its graph has, a pooling the folder names but the user overrides,
//! output that cannot be written, and paths taken for registry names. Each case failed (or passed silently)
//! before it was fixed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{cache, repo};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(args)
        .env(graft_assets::CACHE_ENV, cache())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `output` failed with exit code 1 and an error holding every fragment.
fn refused(output: &Output, fragments: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.starts_with("error: "), "{text}");
    for f in fragments {
        assert!(text.contains(f), "expected {f:?} in:\n{text}");
    }
    assert!(!text.contains("panicked"), "{text}");
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", stderr(output));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `xtask extract --model <model> --input <data> --output <output> …extra` on the tiny data's text column.
fn extract_model(model: &Path, data: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "extract",
        "--model",
        s(model),
        "--input",
        s(data),
        "--text-column",
        "text",
        "--output",
        s(output),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

/// One run of the tiny pipeline (its own graph and tokenizer files), shared by the tests here.
struct TinyRun {
    dir: tempfile::TempDir,
    run_dir: PathBuf,
}

fn tiny_run() -> &'static TinyRun {
    static RUN: OnceLock<TinyRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = common::run_pipeline("fixtures/pipelines/tiny.toml", dir.path());
        TinyRun { dir, run_dir }
    })
}

/// A model folder holding `graph` and the tiny tokenizer, or `tokenizer` instead of it.
fn folder(dir: &Path, name: &str, graph: &str, tokenizer: Option<&[u8]>) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let models = repo().join("fixtures/models");
    std::fs::copy(models.join(graph), folder.join("model.onnx")).unwrap();
    match tokenizer {
        Some(bytes) => std::fs::write(folder.join("tokenizer.json"), bytes).unwrap(),
        None => {
            std::fs::copy(
                models.join("tiny-tokenizer.json"),
                folder.join("tokenizer.json"),
            )
            .unwrap();
        }
    }
    folder
}

/// The tiny tokenizer with one more vocabulary word: the same graph would see other token ids.
fn other_tokenizer() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("fixtures/models/tiny-tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let next = vocab.len();
    vocab.insert("graftword".to_owned(), next.into());
    serde_json::to_vec(&json).unwrap()
}

#[test]
fn a_tokenizer_other_than_the_trained_one_is_refused() {
    let run = tiny_run();
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let out = run.dir.path().join("p.csv");
    let same = folder(run.dir.path(), "same-tokenizer", "tiny-embedder.onnx", None);
    let other_bytes = other_tokenizer();
    let swapped = folder(
        run.dir.path(),
        "swapped-tokenizer",
        "tiny-embedder.onnx",
        Some(&other_bytes),
    );
    // The trained graph and tokenizer, copied into a folder: accepted.
    ok(&xtask(&[
        "predict",
        s(&run.run_dir),
        s(&data),
        "--output",
        s(&out),
        "--model",
        s(&same),
        "--no-progress",
    ]));
    // The same graph with another tokenizer: by folder, by --tokenizer, for predict, evaluate and export.
    let (graph, tokenizer) = (swapped.join("model.onnx"), swapped.join("tokenizer.json"));
    let by_folder = ["--model", s(&swapped)];
    let by_file = ["--model", s(&graph), "--tokenizer", s(&tokenizer)];
    for model in [&by_folder[..], &by_file[..]] {
        let mut predict = vec!["predict", s(&run.run_dir), s(&data), "--output", s(&out)];
        predict.extend_from_slice(model);
        refused(
            &xtask(&predict),
            &[
                "the tokenizer",
                "head was trained with a tokenizer of sha256",
            ],
        );
        let evaluation = run.dir.path().join("evaluation");
        let mut evaluate = vec![
            "evaluate",
            s(&run.run_dir),
            s(&data),
            "--output",
            s(&evaluation),
        ];
        evaluate.extend_from_slice(model);
        refused(&xtask(&evaluate), &["head was trained with a tokenizer"]);
    }
}

#[test]
fn run_files_edited_after_the_run_are_refused_wherever_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = common::run_pipeline("fixtures/pipelines/tiny.toml", dir.path());
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let evaluation = dir.path().join("evaluation");
    let evaluate = || {
        xtask(&[
            "evaluate",
            s(&run_dir),
            s(&data),
            "--output",
            s(&evaluation),
            "--no-progress",
        ])
    };
    let compare = || {
        xtask(&[
            "compare",
            s(&run_dir),
            s(&run_dir),
            "--output",
            s(&dir.path().join("compare")),
        ])
    };
    ok(&evaluate());
    ok(&compare());
    let metrics = run_dir.join("metrics.json");
    let text = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(
        &metrics,
        text.replacen("\"accuracy\": 1.0", "\"accuracy\": 0.5", 1),
    )
    .unwrap();
    for output in [evaluate(), compare()] {
        refused(
            &output,
            &["metrics.json changed after the run", "manifest.json"],
        );
    }
    std::fs::write(&metrics, text).unwrap();
    let predictions = run_dir.join("predictions.csv");
    let mut table = std::fs::read_to_string(&predictions).unwrap();
    let last = table.lines().last().unwrap().to_owned();
    table.push_str(&last);
    table.push('\n');
    std::fs::write(&predictions, table).unwrap();
    refused(&compare(), &["predictions.csv changed after the run"]);
}

#[test]
fn a_folder_cannot_ask_for_more_positions_than_its_graph_has() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    // tiny-bert.onnx reads 32 positions; graft's default max_length is 256.
    let bert = folder(dir.path(), "tiny-bert", "tiny-bert.onnx", None);
    let pipeline = dir.path().join("folder.toml");
    let write_pipeline = |max_length: &str| {
        std::fs::write(
            &pipeline,
            format!(
                "schema = 1\nname = \"folder\"\n\n[data]\npath = \"{}\"\ntext_column = \"text\"\nlabel_column = \
                 \"label\"\n\n[split.stratified]\ntrain = 0.5\nvalidation = 0.25\ntest = 0.25\n\n[backbone]\nmodel = \
                 \"{}\"\n{max_length}\n[head.logistic]\n",
                data.display(),
                bert.display()
            ),
        )
        .unwrap();
    };
    let features = dir.path().join("f.parquet");
    let extract = |extra: &[&str]| extract_model(&bert, &data, &features, extra);
    // graft's default (256) is lowered to the graph's 32 positions, as sentence-transformers does.
    write_pipeline("");
    ok(&xtask(&["check", s(&pipeline)]));
    ok(&extract(&[]));
    let sidecar = std::fs::read_to_string(dir.path().join("f.parquet.json")).unwrap();
    assert!(
        sidecar.contains("\"max_length\":32") || sidecar.contains("\"max_length\": 32"),
        "{sidecar}"
    );
    // A length the user or the folder chose must fit.
    refused(
        &extract(&["--max-length", "64"]),
        &["max_length 64 is more than", "(32 token positions)"],
    );
    std::fs::write(
        bert.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 1000000000000}"#,
    )
    .unwrap();
    refused(&extract(&[]), &["max_length 1000000000000 is more than"]);
    for command in ["check", "run"] {
        refused(
            &xtask(&[command, s(&pipeline)]),
            &[
                "`max_length` 1000000000000, from the model folder's sentence_bert_config.json, is more than \
                 `model.onnx` reads (32 token positions)",
                "folder.toml:",
                "hint: set `max_length` in [backbone]",
            ],
        );
    }
    // What the hint says works.
    write_pipeline("max_length = 32\n");
    ok(&xtask(&["check", s(&pipeline)]));
    ok(&extract(&["--max-length", "32"]));
    write_pipeline("");
    std::fs::write(
        bert.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 0}"#,
    )
    .unwrap();
    refused(
        &xtask(&["check", s(&pipeline)]),
        &["sentence_bert_config.json", "`max_seq_length` is 0"],
    );
}

#[test]
fn the_pooling_hint_for_a_folder_is_one_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let max = folder(dir.path(), "max-pooled", "tiny-embedder.onnx", None);
    std::fs::write(
        max.join("modules.json"),
        r#"[{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    std::fs::create_dir(max.join("1_Pooling")).unwrap();
    std::fs::write(
        max.join("1_Pooling/config.json"),
        r#"{"pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    let features = dir.path().join("f.parquet");
    let extract = |extra: &[&str]| extract_model(&max, &data, &features, extra);
    refused(
        &extract(&[]),
        &[
            "pooling mode max_tokens is not one graft has",
            "--pooling on the command line",
        ],
    );
    ok(&extract(&["--pooling", "mean"]));
}

#[test]
fn output_that_cannot_be_written_is_an_error_not_a_panic() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    for args in [&["models"][..], &["schema"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(repo())
            .args(args)
            .env(graft_assets::CACHE_ENV, cache())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        refused(&output, &["cannot write to standard output"]);
    }
}

#[test]
fn paths_are_not_taken_for_registry_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let missing = dir.path().join("no-such-model");
    refused(
        &xtask(&[
            "extract",
            "--model",
            s(&missing),
            "--input",
            s(&data),
            "--text-column",
            "text",
            "--output",
            s(&dir.path().join("f.parquet")),
        ]),
        &["no such file or folder"],
    );
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "schema = 1\nname = \"p\"\n[data]\npath = \"{}\"\ntext_column = \"text\"\nlabel_column = \"label\"\n\
             [split.stratified]\ntrain = 0.5\nvalidation = 0.25\ntest = 0.25\n[backbone]\nmodel = \"./no-such-folder\"\n\
             [head.logistic]\n",
            data.display()
        ),
    )
    .unwrap();
    refused(
        &xtask(&["check", s(&pipeline)]),
        &["no-such-folder does not exist", "p.toml:12:"],
    );
}

#[test]
fn a_file_where_a_folder_belongs_is_named() {
    let run = tiny_run();
    let data = repo().join("fixtures/data/tiny-sentiment.csv");
    let file = run.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    refused(
        &xtask(&["cache", "--features-dir", s(&file), "stats"]),
        &["is a file, not a feature cache folder"],
    );
    refused(
        &xtask(&["evaluate", s(&run.run_dir), s(&data), "--output", s(&file)]),
        &["--output", "is a file", "evaluate writes a folder"],
    );
}

/// The tiny fine-tuning pipeline with `edit` applied to its text, written into `dir` (paths made absolute).
fn tiny_fine_tune(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let fixtures = repo().join("fixtures");
    let text = std::fs::read_to_string(fixtures.join("pipelines/tiny-fine-tune.toml"))
        .unwrap()
        .replace("../", &format!("{}/", fixtures.display()));
    let path = dir.join("tuned.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn a_damaged_tokenizer_or_weights_file_is_found_by_check_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    // A truncated tokenizer.json used to pass `check` and fail only in `run`.
    let tokenizer = std::fs::read(repo().join("fixtures/models/tiny-tokenizer.json")).unwrap();
    let truncated = dir.path().join("truncated-tokenizer.json");
    std::fs::write(&truncated, &tokenizer[..tokenizer.len() / 2]).unwrap();
    let pipeline = tiny_fine_tune(dir.path(), |text| {
        text.replace(
            &format!(
                "{}",
                repo().join("fixtures/models/tiny-tokenizer.json").display()
            ),
            &truncated.display().to_string(),
        )
    });
    for command in ["check", "run"] {
        refused(
            &xtask(&[command, s(&pipeline)]),
            &["truncated-tokenizer.json", "tuned.toml:19:", "hint: "],
        );
    }
    // A weights file that is not safetensors: named, at the `weights` key.
    let weights = dir.path().join("weights.safetensors");
    std::fs::write(&weights, b"not safetensors").unwrap();
    let pipeline = tiny_fine_tune(dir.path(), |text| {
        text.replace(
            &format!(
                "{}",
                repo()
                    .join("fixtures/models/tiny-bert.safetensors")
                    .display()
            ),
            &weights.display().to_string(),
        )
    });
    refused(
        &xtask(&["check", s(&pipeline)]),
        &["weights.safetensors", "tuned.toml:28:"],
    );
    // A value of the wrong kind is said in a pipeline author's words, not serde's.
    let pipeline = tiny_fine_tune(dir.path(), |text| {
        text.replace("layers = 1", "layers = 2.5")
    });
    let out = xtask(&["check", s(&pipeline)]);
    refused(
        &out,
        &[
            "`layers` is the number of top blocks to train (such as 2) or \"all\"",
            "tuned.toml:30:",
        ],
    );
    assert!(!stderr(&out).contains("untagged"), "{}", stderr(&out));
}
