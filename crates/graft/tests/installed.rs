//! The installed `graft` as a person meets it: from a folder that is not the checkout, runs land in
//! `./runs` there and the cache follows `$GRAFT_CACHE` / `$XDG_CACHE_HOME`, never the checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cache `cargo xtask test` filled (it holds ONNX Runtime), else the checkout's.
fn test_cache() -> PathBuf {
    std::env::var_os("GRAFT_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".graft-cache"))
}

fn graft(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_graft"));
    command
        .current_dir(cwd)
        .env_remove("GRAFT_CACHE")
        .env_remove("XDG_CACHE_HOME");
    command
}

#[test]
fn version_names_graft() {
    let out = graft(&repo()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("graft {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_run_from_another_folder_writes_runs_there() {
    let elsewhere = tempfile::tempdir().unwrap();
    let pipeline = repo().join("fixtures/pipelines/tiny.toml");
    let out = graft(elsewhere.path())
        .arg("run")
        .arg(&pipeline)
        .arg("--no-progress")
        .env("GRAFT_CACHE", test_cache())
        .env("XDG_CACHE_HOME", elsewhere.path().join("unused"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<_> = std::fs::read_dir(elsewhere.path().join("runs/tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].join("metrics.json").is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The printed folder is absolute: it can be opened from anywhere.
    let printed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run folder"))
        .unwrap_or_else(|| panic!("no run folder line in {stdout}"))
        .trim();
    assert_eq!(
        std::fs::canonicalize(printed).unwrap(),
        std::fs::canonicalize(&runs[0]).unwrap()
    );
    assert!(Path::new(printed).is_absolute(), "{printed}");
    // $GRAFT_CACHE wins over $XDG_CACHE_HOME: nothing was put there.
    assert!(!elsewhere.path().join("unused").exists());
}

#[test]
fn the_cache_follows_xdg_when_graft_cache_is_unset() {
    let elsewhere = tempfile::tempdir().unwrap();
    let xdg = elsewhere.path().join("xdg");
    let out = graft(elsewhere.path())
        .args(["cache", "clear"])
        .env("XDG_CACHE_HOME", &xdg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = xdg.join("graft/features");
    assert!(stdout.contains(&expected.display().to_string()), "{stdout}");
}

#[test]
fn a_mistake_is_an_error_with_exit_code_1() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = graft(elsewhere.path())
        .arg("check")
        .arg(repo().join("fixtures/pipelines/errors/unknown-key.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: unknown field `txt_column`"),
        "{stderr}"
    );
    let out = graft(elsewhere.path()).arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline file given"));
}
