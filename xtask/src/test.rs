//! `cargo xtask test`: check formatting and clippy's lints, fetch what the tests need (once, plainly
//! reported), then run every test of the workspace, the doctests, and the Python package's tests (see
//! [`crate::python`]). Test filters skip the format and lint checks.

use std::process::{Command, ExitCode};

use crate::{cache_dir, workspace_root};

pub(crate) fn run(args: &[String]) -> ExitCode {
    let root = workspace_root();
    let cache = cache_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if args.is_empty() {
        // What README promises is kept clean, checked where CI runs: formatting, then clippy's lints.
        for check in [
            &["fmt", "--all", "--check"][..],
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ] {
            let mut command = Command::new(&cargo);
            command.args(check).current_dir(&root);
            without_package_env(&mut command);
            if let Err(code) = run_step(&format!("cargo {}", check[0]), &cargo, command) {
                return code;
            }
        }
    }
    // Fetch first, so a network or checksum problem is reported once and plainly, not as many test failures.
    // The legacy runtime is what the version-check test must see refused.
    // The image tests need EfficientNet-Lite0 (converted on first fetch), Fashion-MNIST and two sample photos;
    // the fine-tuning tests the float32 MiniLM-L6.
    let fetched = graft::commands::fetch::fetch(
        &[
            root.join("pipelines/quickstart.toml"),
            root.join("pipelines/fashion-mnist.toml"),
            // the float32 MiniLM (safetensors) whose written graph the fine-tuning tests check
            root.join("pipelines/fine-tune.toml"),
        ],
        &cache,
    )
    .and_then(|()| graft_engine::provision_runtime("onnxruntime-legacy", &cache).map(drop))
    .and_then(|()| graft_engine::provision_samples(&["coffee", "chelsea"], &cache).map(drop));
    if let Err(e) = fetched {
        eprintln!("error: cannot provision the test assets: {e}");
        return ExitCode::FAILURE;
    }
    let has_nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut unit = Command::new(&cargo);
    if has_nextest {
        unit.args([
            "nextest",
            "run",
            "--workspace",
            "--exclude",
            "graft-python",
            "--no-fail-fast",
        ]);
    } else {
        unit.args([
            "test",
            "--workspace",
            "--exclude",
            "graft-python",
            "--no-fail-fast",
        ]);
    }
    unit.args(args);
    // nextest does not run doctests; they run separately below.
    let mut doc = Command::new(&cargo);
    doc.args(["test", "--workspace", "--exclude", "graft-python", "--doc"]);
    for (name, mut command) in [("tests", unit), ("doctests", doc)] {
        command
            .current_dir(&root)
            .env(graft_engine::CACHE_ENV, &cache);
        without_package_env(&mut command);
        if let Err(code) = run_step(name, &cargo, command) {
            return code;
        }
    }
    if args.is_empty() {
        return crate::python::run(&[]);
    }
    eprintln!("xtask: test filters given; the Python tests run with `cargo xtask test-python`");
    ExitCode::SUCCESS
}

/// `command` without the package variables `cargo run` gave this process: build scripts (ring's, via
/// polars' HTTP stack) watch some of them, so passing them on to a nested cargo would rebuild half the
/// dependency tree.
pub(crate) fn without_package_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            command.env_remove(key.as_ref());
        }
    }
    command
}

/// Runs one step, reporting it and how it ended; a failure is the exit code to return.
fn run_step(name: &str, cargo: &str, mut command: Command) -> Result<(), ExitCode> {
    eprintln!("xtask: running {name}: {command:?}");
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => {
            eprintln!("xtask: {name} failed ({status})");
            Err(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("xtask: cannot start {cargo}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
