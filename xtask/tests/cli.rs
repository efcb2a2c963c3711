//! The command line as a user meets it: exit codes, located messages, no panics, and the runtime-loading
//! failures (each in its own process, since ONNX Runtime can be loaded only once per process).

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{cache, repo};

/// Runs `xtask run <pipeline>` with a fresh runs folder and an empty feature cache (so the backbone really
/// runs), optionally with ORT_DYLIB_PATH set.
fn xtask_run(pipeline: &str, ort_dylib: Option<&Path>) -> (Output, tempfile::TempDir) {
    let runs = tempfile::tempdir().unwrap();
    let features = runs.path().join(".features");
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .current_dir(repo())
        .args(["run", pipeline, "--no-progress", "--runs-dir"])
        .arg(runs.path())
        .arg("--cache-dir")
        .arg(cache())
        .arg("--features-dir")
        .arg(&features)
        .env_remove("ORT_DYLIB_PATH");
    if let Some(path) = ort_dylib {
        command.env("ORT_DYLIB_PATH", path);
    }
    (command.output().unwrap(), runs)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A user mistake: exit code 1, one `error:` report, no panic or backtrace, nothing on stdout.
fn assert_user_error(output: &Output, fragments: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    for fragment in fragments {
        assert!(err.contains(fragment), "expected `{fragment}` in:\n{err}");
    }
}

#[test]
fn misspelt_key_exits_nonzero_with_a_located_message() {
    let (output, _) = xtask_run("fixtures/pipelines/errors/unknown-key.toml", None);
    assert_user_error(
        &output,
        &[
            "error: unknown field `txt_column`",
            "fixtures/pipelines/errors/unknown-key.toml:7:1",
            "did you mean `text_column`?",
        ],
    );
}

#[test]
fn missing_pipeline_file() {
    let (output, _) = xtask_run("pipelines/nope.toml", None);
    assert_user_error(
        &output,
        &["error: cannot read pipeline file pipelines/nope.toml: No such file"],
    );
}

#[test]
fn missing_onnx_runtime_library() {
    let (output, _) = xtask_run(
        "fixtures/pipelines/tiny.toml",
        Some(Path::new("/nonexistent/libonnxruntime.so")),
    );
    assert_user_error(
        &output,
        &[
            "error: cannot load ONNX Runtime from /nonexistent/libonnxruntime.so",
            "hint: ",
            "ORT_DYLIB_PATH",
        ],
    );
}

#[test]
fn onnx_runtime_too_old() {
    let legacy = graft_assets::Cache::new(cache())
        .runtime("onnxruntime-legacy")
        .unwrap();
    let (output, runs) = xtask_run("fixtures/pipelines/tiny.toml", Some(&legacy.library.path));
    assert_user_error(
        &output,
        &[
            "error: cannot load ONNX Runtime from ",
            "it is version 1.20.1, and graft needs 1.31 or newer",
            "hint: unset ORT_DYLIB_PATH to use the ONNX Runtime 1.31.1 that graft provisions",
        ],
    );
    assert!(
        !runs.path().join("tiny").exists()
            || std::fs::read_dir(runs.path().join("tiny"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn a_library_that_is_not_onnx_runtime() {
    let runtime = graft_assets::Cache::new(cache())
        .runtime("onnxruntime")
        .unwrap();
    let provider = runtime
        .library
        .path
        .with_file_name("libonnxruntime_providers_shared.so");
    let (output, _) = xtask_run("fixtures/pipelines/tiny.toml", Some(&provider));
    assert_user_error(
        &output,
        &[
            "but not ONNX Runtime (no `OrtGetApiBase`)",
            "hint: point ORT_DYLIB_PATH at libonnxruntime.so",
        ],
    );
}

#[test]
fn a_good_run_prints_the_summary_and_writes_the_run_folder() {
    let (output, runs) = xtask_run("fixtures/pipelines/tiny.toml", None);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.contains("graft · tiny · "), "{out}");
    assert!(
        out.contains("  test            10    1.0000    1.0000"),
        "{out}"
    );
    assert!(out.contains("run folder  "), "{out}");
    let folders: Vec<_> = std::fs::read_dir(runs.path().join("tiny"))
        .unwrap()
        .collect();
    assert_eq!(folders.len(), 1);
    let folder = folders.into_iter().next().unwrap().unwrap().path();
    for file in [
        "metrics.json",
        "manifest.json",
        "report.md",
        "pipeline.toml",
    ] {
        assert!(folder.join(file).is_file(), "{file}");
    }
}

#[test]
fn check_accepts_the_quickstart_and_rejects_a_bad_file() {
    let ok = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["check", "pipelines/quickstart.toml"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "pipelines/quickstart.toml: ok (pipeline `quickstart`): 10605 rows, 2 classes; \
         train 8485 · validation 1060 · test 1060\n  model minilm-l6: inputs input_ids (int64 [batch, \
         sequence]), attention_mask (int64 [batch, sequence]), token_type_ids (int64 [batch, sequence]); \
         features from last_hidden_state (float32 [batch, sequence, 384]), 384 wide; 256 tokens kept per text\n"
    );
    // `--no-data` checks the file alone.
    let file_only = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["check", "--no-data", "pipelines/quickstart.toml"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&file_only.stdout),
        "pipelines/quickstart.toml: ok (pipeline `quickstart`)\n"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["check", "fixtures/pipelines/errors/misspelt-head.toml"])
        .output()
        .unwrap();
    assert_user_error(
        &bad,
        &["unknown field `logistc`", "did you mean `logistic`?"],
    );
}

#[test]
fn cache_stats_and_clear() {
    let (output, runs) = xtask_run("fixtures/pipelines/tiny.toml", None);
    assert!(output.status.success(), "{}", stderr(&output));
    let features = runs.path().join(".features");
    let cache_output = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["cache"])
            .args(args)
            .arg("--features-dir")
            .arg(&features)
            .output()
            .unwrap()
    };
    let cache = |args: &[&str]| {
        let out = cache_output(args);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stats = cache(&["stats"]);
    assert!(stats.contains("       40 rows     1 chunks"), "{stats}");
    assert!(stats.contains("tiny-embedder.onnx"), "{stats}");
    // An unknown model is an error listing what the cache holds; a part of a name matches nothing (on main
    // `--model a` matched every namespace whose description contained an "a").
    for unknown in ["no-such-model", "tiny-embedder", "a"] {
        let out = cache_output(&["clear", "--model", unknown]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("it holds features of: tiny-embedder.onnx"),
            "{}",
            stderr(&out)
        );
    }
    let dry = cache(&["clear", "--model", "tiny-embedder.onnx", "--dry-run"]);
    assert!(dry.contains("would remove 1 feature namespace(s)"), "{dry}");
    assert!(cache(&["stats"]).contains("       40 rows"));
    let cleared = cache(&["clear", "--model", "tiny-embedder.onnx"]);
    assert!(
        cleared.contains("removed 1 feature namespace(s)"),
        "{cleared}"
    );
    assert!(cache(&["stats"]).contains("(empty)"));
}

#[test]
fn models_lists_every_registered_backbone_and_what_the_cache_holds() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["models", "--cache-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for name in [
        "minilm-l6-int8",
        "minilm-l6",
        "minilm-l3",
        "mpnet-base",
        "efficientnet-lite0",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} in:\n{text}"
        );
    }
    let tunable = text.lines().find(|l| l.starts_with("minilm-l6 ")).unwrap();
    assert!(
        tunable.contains("384")
            && tunable.contains("Apache-2.0")
            && tunable.contains("not fetched"),
        "{tunable}"
    );
    assert!(tunable.contains("fine-tunable"), "{tunable}");
    // MPNet has float32 weights, but graft-tune trains BERT only.
    let mpnet = text.lines().find(|l| l.starts_with("mpnet-base ")).unwrap();
    assert!(
        mpnet.contains("768") && !mpnet.contains("fine-tunable"),
        "{mpnet}"
    );
    let image = text
        .lines()
        .find(|l| l.starts_with("efficientnet-lite0"))
        .unwrap();
    assert!(image.contains("image") && image.contains("1280"), "{image}");
}

/// `run --dry-run` prints the plan and touches nothing: parts missing from an empty cache are listed as to
/// fetch (and not fetched), and the feature cache count follows a real run.
#[test]
fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, features, empty) = (
        dir.path().join("runs"),
        dir.path().join("features"),
        dir.path().join("empty"),
    );
    let dry = |pipeline: &str, cache_dir: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(repo())
            .args(["run", "--dry-run", pipeline, "--no-progress", "--runs-dir"])
            .arg(&runs)
            .arg("--features-dir")
            .arg(&features)
            .arg("--cache-dir")
            .arg(cache_dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let before = dry("fixtures/pipelines/tiny.toml", &cache());
    assert!(
        before.contains("rows      40 (2 classes; 0 dropped): train 20 · validation 10 · test 10"),
        "{before}"
    );
    assert!(
        before.contains("features  0 of 40 rows in the feature cache; 40 to extract"),
        "{before}"
    );
    assert!(
        !runs.exists() && !features.exists(),
        "a dry run writes nothing"
    );
    let real = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args([
            "run",
            "fixtures/pipelines/tiny.toml",
            "--no-progress",
            "--runs-dir",
        ])
        .arg(&runs)
        .arg("--features-dir")
        .arg(&features)
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    assert!(real.status.success(), "{}", stderr(&real));
    let after = dry("fixtures/pipelines/tiny.toml", &cache());
    assert!(
        after.contains("features  40 of 40 rows in the feature cache; 0 to extract"),
        "{after}"
    );
    // A registered data set and backbone missing from the cache: listed, not fetched.
    let fresh = dry("pipelines/quickstart.toml", &empty);
    for line in [
        "data set  mr: would be fetched",
        "backbone  minilm-l6: would be fetched",
        "runtime   onnxruntime: would be fetched",
    ] {
        assert!(fresh.contains(line), "{fresh}");
    }
    assert!(!empty.exists(), "nothing fetched into the empty cache");
}

/// Rows left out for an empty text or label are counted and named by their first row numbers.
#[test]
fn check_names_the_rows_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut table =
        std::fs::read_to_string(repo().join("fixtures/data/tiny-sentiment.csv")).unwrap();
    table += "41,\"a film without a label\",\n42,,positive\n";
    std::fs::write(dir.path().join("data.csv"), table).unwrap();
    let pipeline = std::fs::read_to_string(repo().join("fixtures/pipelines/tiny.toml"))
        .unwrap()
        .replace("../data/tiny-sentiment.csv", "data.csv")
        .replace(
            "../models/",
            &format!("{}/", repo().join("fixtures/models").display()),
        );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("check")
        .arg(dir.path().join("p.toml"))
        .args(["--no-model", "--cache-dir"])
        .arg(cache())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout.contains("40 rows, 2 classes"), "{stdout}");
    assert!(
        stdout.contains("2 rows dropped (empty label or text: rows 40, 41)"),
        "{stdout}"
    );
}
