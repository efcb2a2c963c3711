//! `run` under faults, as a user meets them: killed with SIGKILL at random points and run again, and two
//! runs at once on one feature cache. Every finished run must equal an undisturbed one (splits and test
//! predictions byte for byte), and a killed run must leave no run folder behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cache, repo};

/// A labelled corpus of `rows` short texts (the label follows the words), and a pipeline on it with the
/// tiny fixture model: enough rows that extraction spans many feature-cache slices.
fn pipeline(dir: &Path, rows: usize) -> PathBuf {
    let good = ["wonderful", "great", "moving", "superb", "charming"];
    let bad = ["dull", "boring", "terrible", "bad", "tedious"];
    let mut csv = String::from("id,text,label\n");
    for i in 0..rows {
        let positive = (i * 7 + i / 3) % 2 == 0;
        let words = if positive { &good } else { &bad };
        let text: Vec<&str> = (0..(3 + i % 9))
            .map(|k| {
                if (i + k) % 4 == 0 {
                    "film"
                } else {
                    words[(i * 3 + k) % 5]
                }
            })
            .collect();
        let label = if positive { "positive" } else { "negative" };
        csv.push_str(&format!("{i},{},{label}\n", text.join(" ")));
    }
    std::fs::write(dir.join("corpus.csv"), csv).unwrap();
    let models = repo().join("fixtures/models");
    let file = dir.join("faults.toml");
    std::fs::write(
        &file,
        format!(
            "schema = 1\nname = \"faults\"\nseed = 3\n[data]\npath = \"corpus.csv\"\n\
             text_column = \"text\"\nlabel_column = \"label\"\n\
             [split.stratified]\ntrain = 0.6\nvalidation = 0.2\ntest = 0.2\n\
             [backbone]\nonnx = {:?}\ntokenizer = {:?}\nthreads = 1\nbatch_size = 8\n\
             [head.logistic]\nc = 1.0\n",
            models.join("tiny-embedder.onnx"),
            models.join("tiny-tokenizer.json"),
        ),
    )
    .unwrap();
    file
}

fn run_command(pipeline: &Path, runs: &Path, features: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .current_dir(repo())
        .arg("run")
        .arg(pipeline)
        .args(["--no-progress", "--runs-dir"])
        .arg(runs)
        .arg("--features-dir")
        .arg(features)
        .arg("--cache-dir")
        .arg(cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The run folders under `runs/faults`.
fn run_folders(runs: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(runs.join("faults"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    folders.sort();
    folders
}

/// What must not change between runs of the same file and seed.
fn results(run_dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(run_dir.join("splits.csv")).unwrap(),
        std::fs::read(run_dir.join("predictions.csv")).unwrap(),
    )
}

fn finished(output: std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Files under `dir`, recursively.
fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    file_count(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[test]
fn a_run_killed_at_random_points_reruns_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), 12_000);
    let reference_runs = dir.path().join("reference");
    finished(
        run_command(
            &file,
            &reference_runs,
            &dir.path().join("reference-features"),
        )
        .output()
        .unwrap(),
    );
    let reference = results(&run_folders(&reference_runs)[0]);

    let runs = dir.path().join("runs");
    let features = dir.path().join("features");
    // Kill points drawn from a fixed seed: early (the cache barely started) and later ones.
    let mut state = 0x9e37_79b9_u64;
    let mut kills = 0;
    for kill in 0..3 {
        let mut child = run_command(&file, &runs, &features).spawn().unwrap();
        let stored = file_count(&features);
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_for = stored + 1 + (state >> 61) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while file_count(&features) < wait_for && child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "kill {kill}: the feature cache never grew"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_some() {
            break; // it finished first: nothing left to interrupt
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        kills += 1;
        assert!(
            run_folders(&runs).is_empty(),
            "kill {kill}: a killed run left a run folder: {:?}",
            run_folders(&runs)
        );
    }
    assert!(kills > 0, "every run finished before it could be killed");
    eprintln!("killed {kills} times");
    finished(run_command(&file, &runs, &features).output().unwrap());
    let folders = run_folders(&runs);
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert!(
        results(&folders[0]) == reference,
        "a run resumed from a killed run's feature cache differs from an undisturbed one"
    );
}

#[test]
fn two_runs_at_once_on_one_feature_cache_both_finish_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), 4_000);
    let features = dir.path().join("features");
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            run_command(&file, &dir.path().join(name), &features)
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        finished(child.wait_with_output().unwrap());
    }
    let a = results(&run_folders(&dir.path().join("a"))[0]);
    let b = results(&run_folders(&dir.path().join("b"))[0]);
    assert!(a == b, "two runs at once on one cache disagree");
    // A third run finds every row in the cache the two wrote, and agrees.
    let third = dir.path().join("c");
    finished(run_command(&file, &third, &features).output().unwrap());
    assert!(results(&run_folders(&third)[0]) == a);
    let metrics = std::fs::read_to_string(run_folders(&third)[0].join("manifest.json")).unwrap();
    assert!(metrics.contains("\"extracted\": 0"), "{metrics}");
}
