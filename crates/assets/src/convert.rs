//! Running a checked-in converter (Python with pinned numpy + onnx from PyPI) to turn a checkpoint into ONNX.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use crate::fetch::sha256_file;
use crate::{AssetError, Conversion, PYTHON_ENV, VerifiedFile};

/// The converters shipped with this crate, by file name.
fn script(name: &str) -> Option<&'static str> {
    match name {
        "efficientnet_lite0.py" => Some(include_str!("../converters/efficientnet_lite0.py")),
        _ => None,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AssetError + '_ {
    move |source| AssetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `python` and turns a failure into an [`AssetError`] carrying the end of its output.
fn run(python: &str, mut command: Command, what: &str, dir: &Path) -> Result<(), AssetError> {
    let output = command
        .output()
        .map_err(|source| AssetError::PythonMissing {
            python: python.to_owned(),
            requirement: what.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let lines: Vec<&str> = text.lines().collect();
    Err(AssetError::PipFailed {
        requirement: what.to_owned(),
        status: output.status.to_string(),
        output: lines[lines.len().saturating_sub(12)..].join("\n"),
        dir: dir.to_path_buf(),
    })
}

/// The folder holding the converter's pinned Python packages, installed on first use.
fn python_packages(
    python: &str,
    cache_root: &Path,
    requirements: &[String],
) -> Result<PathBuf, AssetError> {
    let digest = sha2::Sha256::digest(requirements.join("\n").as_bytes());
    let id = graft_stdx::hex(&digest[..8]);
    let root = cache_root.join("python");
    let dir = root.join(format!("convert-{id}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let scratch = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&root)
        .map_err(io_err(&root))?;
    let names: Vec<&str> = requirements
        .iter()
        .map(|r| r.split_whitespace().next().unwrap_or_default())
        .collect();
    eprintln!(
        "graft: installing the converter's Python packages ({}, sha256-pinned) …",
        names.join(" ")
    );
    // Each requirement carries the sha256 of its wheels: pip refuses any file that does not match.
    let requirements_file = scratch.path().join(".requirements.txt");
    std::fs::write(&requirements_file, requirements.join("\n") + "\n")
        .map_err(io_err(&requirements_file))?;
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--no-deps",
        // No .pyc files written ahead into the user's cache: Python compiles what it imports.
        "--no-compile",
        "--only-binary",
        ":all:",
        "--require-hashes",
        "--disable-pip-version-check",
        // pip keeps no cache of its own in the user's home: the cache is graft's.
        "--no-cache-dir",
        "--quiet",
        "--target",
    ])
    .arg(scratch.path())
    .arg("-r")
    .arg(&requirements_file)
    .env("PIP_NO_CACHE_DIR", "1");
    run(python, pip, &names.join(" "), &dir)?;
    std::fs::write(scratch.path().join(".complete"), requirements.join("\n"))
        .map_err(io_err(scratch.path()))?;
    let staged = scratch.keep();
    if let Err(e) = std::fs::rename(&staged, &dir) {
        // Another process finished first; its copy is as good as ours.
        let _ = std::fs::remove_dir_all(&staged);
        if !dir.join(".complete").exists() {
            return Err(io_err(&dir)(e));
        }
    }
    Ok(dir)
}

/// Converts `checkpoint` with the registered script and stores the result at `out` if its sha256 matches.
pub(crate) fn convert(
    python: &str,
    cache_root: &Path,
    conversion: &Conversion,
    checkpoint: &Path,
    out: &Path,
    expected_sha256: &str,
) -> Result<VerifiedFile, AssetError> {
    let source = script(&conversion.script).ok_or_else(|| AssetError::Unknown {
        kind: "converter",
        name: conversion.script.clone(),
        known: vec!["efficientnet_lite0.py".to_owned()],
    })?;
    let packages = python_packages(python, cache_root, &conversion.requirements)?;
    let dir = out.parent().expect("models live in a model folder");
    let scratch = tempfile::Builder::new()
        .prefix(".convert-")
        .tempdir_in(dir)
        .map_err(io_err(dir))?;
    let script_path = scratch.path().join(&conversion.script);
    std::fs::write(&script_path, source).map_err(io_err(&script_path))?;
    let converted = scratch.path().join("model.onnx");
    eprintln!(
        "graft: converting {} to ONNX …",
        checkpoint
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut command = Command::new(python);
    command
        .arg(&script_path)
        .arg(checkpoint)
        .arg(&converted)
        // Only the pinned packages: nothing the user happens to have installed changes the graph.
        .env("PYTHONPATH", &packages)
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONHOME");
    run(python, command, &conversion.script, dir)?;
    let actual = sha256_file(&converted).map_err(io_err(&converted))?;
    if actual != expected_sha256 {
        return Err(AssetError::ChecksumMismatch {
            path: out.to_path_buf(),
            expected: expected_sha256.to_owned(),
            actual,
            hint: format!(
                "the conversion did not reproduce the registered graph (check that {PYTHON_ENV} or python3 \
                 can import the pinned packages); nothing was stored"
            ),
        });
    }
    graft_stdx::atomic::copy(&converted, out).map_err(io_err(out))?;
    Ok(VerifiedFile {
        path: out.to_path_buf(),
        sha256: actual,
        fetched: true,
    })
}
