//! `run --mlflow` and `graft mlflow` against a real MLflow tracking server: `mlflow server` from the
//! hash-pinned PyPI wheels of `bindings/python/requirements/mlflow.txt` (a virtual environment of its own in
//! the graft cache), started on the loopback address, and the run read back through MLflow's own Python
//! client. Skipped, with a message, where CPython 3.11 (the pinned wheels' Python) is not available.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cache, metrics, repo};
use serde_json::Value;

const PINNED_PYTHON: &str = "3.11";

/// `python3` (or $GRAFT_PYTHON) when it is the pinned version.
fn pinned_python() -> Option<String> {
    let python = std::env::var("GRAFT_PYTHON")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".to_owned());
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if version == PINNED_PYTHON {
        Some(python)
    } else {
        eprintln!(
            "skipped: the MLflow test needs CPython {PINNED_PYTHON} (its pinned wheels'); `{python}` is {}",
            if version.is_empty() {
                "not available".to_owned()
            } else {
                version
            }
        );
        None
    }
}

/// The MLflow environment in the cache, made once from the hash-pinned requirements.
fn mlflow_env(python: &str) -> PathBuf {
    let requirements = repo().join("bindings/python/requirements/mlflow.txt");
    let pins = std::fs::read_to_string(&requirements).unwrap();
    let version = pins
        .lines()
        .find_map(|l| l.strip_prefix("mlflow=="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let env = cache().join(format!("python/mlflow-{version}-cp311"));
    let done = env.join("graft-installed.txt");
    if std::fs::read_to_string(&done).is_ok_and(|d| d == pins) {
        return env;
    }
    let _ = std::fs::remove_dir_all(&env);
    let ok = Command::new(python)
        .args(["-m", "venv"])
        .arg(&env)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python -m venv {}", env.display());
    let ok = Command::new(env.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            // No .pyc files written ahead (a quarter of the environment's size).
            "--no-compile",
            "--require-hashes",
            "--only-binary",
            ":all:",
        ])
        .arg("--cache-dir")
        .arg(cache().join("python/pip"))
        .arg("-r")
        .arg(&requirements)
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install -r {}", requirements.display());
    std::fs::write(&done, pins).unwrap();
    env
}

/// `mlflow server` on a free loopback port, with a SQLite store and proxied artefacts in `dir`, in a
/// process group of its own; the whole group is stopped on drop (the server's uvicorn workers and job
/// runner are its children and would outlive a kill of the server alone).
struct Server {
    child: Child,
    uri: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &group]).status();
            if signal == "-TERM" {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let _ = self.child.wait();
    }
}

fn start_server(env: &Path, dir: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env.join("bin/mlflow"))
        .process_group(0)
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        uri: format!("http://127.0.0.1:{port}"),
    };
    // Up when MLflow's own client can list experiments.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        let up = Command::new(env.join("bin/python"))
            .args([
                "-c",
                "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
            ])
            .arg(&server.uri)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if up {
            return server;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "mlflow server did not answer at {} within 180 s",
        server.uri
    );
}

/// What MLflow's client reads back for `run_id`: metrics, their histories, params, tags, artefacts and the
/// report's text.
const READ_BACK: &str = r#"
import json, sys, mlflow
client = mlflow.MlflowClient(sys.argv[1])
run = client.get_run(sys.argv[2])
histories = {k: [[m.step, m.value] for m in client.get_metric_history(run.info.run_id, k)]
             for k in run.data.metrics if k.startswith("learning_curve.")}
report = client.download_artifacts(run.info.run_id, "report.md", sys.argv[3])
print(json.dumps({
    "status": run.info.status,
    "experiment": client.get_experiment(run.info.experiment_id).name,
    "metrics": run.data.metrics,
    "histories": histories,
    "params": run.data.params,
    "tags": run.data.tags,
    "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
    "report": open(report).read(),
}))
"#;

fn read_back(env: &Path, uri: &str, run_id: &str, scratch: &Path) -> Value {
    let out = Command::new(env.join("bin/python"))
        .args(["-c", READ_BACK, uri, run_id])
        .arg(scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn graft(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

/// `run fixtures/pipelines/tiny-curve.toml` into `runs` with the graft cache and `extra` arguments.
fn run_tiny_curve(runs: &Path, extra: &[&str]) -> std::process::Output {
    let (runs, cache_dir) = (runs.to_str().unwrap(), cache());
    let mut args = vec![
        "run",
        "fixtures/pipelines/tiny-curve.toml",
        "--no-progress",
        "--runs-dir",
        runs,
    ];
    args.extend(["--cache-dir", cache_dir.to_str().unwrap()]);
    args.extend(extra);
    graft(&args)
}

/// The one run folder `run_tiny_curve` made in `runs`.
fn only_run(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs.join("tiny-curve"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

fn recorded_runs(run_dir: &Path) -> Vec<String> {
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("mlflow.json")).unwrap())
            .unwrap();
    record["logged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["run_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_run_logged_to_mlflow_reads_back_as_metrics_json_says() {
    let Some(python) = pinned_python() else {
        return;
    };
    let env = mlflow_env(&python);
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&env, dir.path());
    let runs = dir.path().join("runs");
    let out = run_tiny_curve(
        &runs,
        &["--mlflow", &server.uri, "--mlflow-experiment", "graft-test"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("mlflow      run "), "{stdout}");
    let run_dir = only_run(&runs);
    let run_ids = recorded_runs(&run_dir);
    assert_eq!(run_ids.len(), 1);
    let back = read_back(&env, &server.uri, &run_ids[0], dir.path());
    assert_eq!(back["status"], "FINISHED");
    assert_eq!(back["experiment"], "graft-test");

    // Every number of metrics.json, by its path, is the metric MLflow returns, bit for bit.
    let recorded = metrics(&run_dir);
    let expected = graft_tracking::metrics_of(&recorded);
    let logged = back["metrics"].as_object().unwrap();
    for (key, value) in &expected {
        let got = logged.get(key).and_then(Value::as_f64);
        assert_eq!(got, Some(*value), "{key}");
    }
    for (key, pointer) in [
        ("test.accuracy", "/test/accuracy"),
        (
            "test.intervals.accuracy.lower",
            "/test/intervals/accuracy/lower",
        ),
        (
            "test.intervals.accuracy.upper",
            "/test/intervals/accuracy/upper",
        ),
        ("test.macro_f1", "/test/macro_f1"),
        ("validation.accuracy", "/validation/accuracy"),
    ] {
        assert_eq!(
            logged[key].as_f64(),
            recorded.pointer(pointer).and_then(Value::as_f64),
            "{key}"
        );
    }
    // The learning curve as a series: one step per point (training rows drawn), the means as recorded.
    let points = recorded["learning_curve"]["points"].as_array().unwrap();
    let history = back["histories"]["learning_curve.transfer.mean"]
        .as_array()
        .unwrap();
    assert_eq!(history.len(), points.len());
    for (h, p) in history.iter().zip(points) {
        assert_eq!(h[0], p["rows"]);
        assert_eq!(h[1].as_f64(), p["transfer"]["mean"].as_f64());
    }
    assert!(back["histories"]["learning_curve.baseline.upper"].is_array());
    // Parameters, tags and artefacts.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(back["params"]["seed"], "7");
    assert_eq!(back["params"]["heads.logistic.c"], "10.0");
    assert_eq!(back["params"]["backbone.max_length"], "256");
    assert_eq!(back["tags"]["graft.seed"], "7");
    assert_eq!(back["tags"]["graft.version"], manifest["graft_version"]);
    assert_eq!(
        back["tags"]["graft.backbone_sha256"],
        manifest["backbone"]["onnx"]["sha256"]
    );
    for file in ["manifest.json", "metrics.json", "report.html", "report.md"] {
        assert!(
            back["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == file),
            "{file}: {back}"
        );
    }
    assert_eq!(
        back["report"].as_str().unwrap(),
        std::fs::read_to_string(run_dir.join("report.md")).unwrap()
    );

    // `graft mlflow` on the same run: refused (it is logged there), then logged again when asked.
    let run_arg = run_dir.to_str().unwrap();
    let out = graft(&["mlflow", run_arg, "--tracking-uri", &server.uri]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("logged to") && stderr.contains("--again"),
        "{stderr}"
    );
    let out = graft(&["mlflow", run_arg, "--tracking-uri", &server.uri, "--again"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_ids = recorded_runs(&run_dir);
    assert_eq!(run_ids.len(), 2);
    assert_ne!(run_ids[0], run_ids[1]);
    let again = read_back(&env, &server.uri, &run_ids[1], dir.path());
    assert_eq!(again["metrics"], back["metrics"]);
    // Named after the pipeline when no experiment is given.
    assert_eq!(again["experiment"], "tiny-curve");
}

#[test]
fn an_unreachable_server_fails_after_the_run_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("http://127.0.0.1:{port}");
    let runs = dir.path().join("runs");
    let out = run_tiny_curve(&runs, &["--mlflow", &uri]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the MLflow tracking server"),
        "{stderr}"
    );
    assert!(stderr.contains("graft mlflow"), "{stderr}");
    // The run folder is complete and unrecorded.
    let run_dir = only_run(&runs);
    assert!(run_dir.join("metrics.json").is_file() && !run_dir.join("mlflow.json").exists());
    // A URI that is not HTTP is refused before anything runs.
    let out = graft(&[
        "run",
        "fixtures/pipelines/tiny-curve.toml",
        "--runs-dir",
        runs.to_str().unwrap(),
        "--mlflow",
        "./mlruns",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("over HTTP"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(runs.join("tiny-curve")).unwrap().count(),
        1
    );
}
