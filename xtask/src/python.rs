//! `cargo xtask test-python` (and the last step of `cargo xtask test`): build the Python wheel with maturin,
//! install it into a fresh virtual environment, and run `bindings/python/tests` there with pytest.
//!
//! Everything Python comes from PyPI through pip with `--require-hashes` (`bindings/python/requirements/`),
//! and pip's download cache lives in the graft cache, so a second run fetches nothing. The wheel is built in
//! the dev profile: it shares the workspace's compiled crates, and inference runs in ONNX Runtime either way.

use std::path::Path;
use std::process::{Command, ExitCode};

use crate::{cache_dir, test::without_package_env, workspace_root};

/// The Python whose wheels `requirements/cp311.txt` pins.
const PINNED_PYTHON: &str = "3.11";

/// The interpreter the wheel is built for and tested with: `$GRAFT_PYTHON`, else `python3`.
fn interpreter() -> String {
    std::env::var("GRAFT_PYTHON")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

pub(crate) fn run(pytest_args: &[String]) -> ExitCode {
    match build_and_test(pytest_args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: python tests: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build_and_test(pytest_args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let cache = cache_dir();
    let python = interpreter();
    let version = output(Command::new(&python).args([
        "-c",
        "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
    ]))
    .map_err(|e| {
        format!("{e}\n  hint: the Python tests need Python 3.10 or newer as `python3` (or set GRAFT_PYTHON)")
    })?;
    let version = version.trim().to_owned();
    let requirements = root.join("bindings/python/requirements");
    let pip_cache = cache.join("python/pip");

    // The build tools, once per Python version and maturin pin, in the cache.
    let tools = cache.join(format!("python/build-tools-{version}"));
    let maturin = tools.join("bin/maturin");
    let pins =
        std::fs::read_to_string(requirements.join("build.txt")).map_err(|e| e.to_string())?;
    let installed = output(Command::new(&maturin).arg("--version")).unwrap_or_default();
    let pinned = installed
        .split_whitespace()
        .nth(1)
        .is_some_and(|v| pins.contains(&format!("maturin=={v} ")));
    if !pinned {
        eprintln!("xtask: installing maturin into {}", tools.display());
        fresh_venv(&python, &tools)?;
        pip_install(&tools, &pip_cache, &requirements.join("build.txt"))?;
    }

    // The wheel, into a folder of its own so exactly one wheel is there to install.
    let wheels = root.join("target/python-wheel");
    let _ = std::fs::remove_dir_all(&wheels);
    eprintln!("xtask: building the wheel (maturin, dev profile)");
    status(
        without_package_env(&mut Command::new(&maturin))
            .current_dir(&root)
            .args([
                "build",
                "--profile",
                "dev",
                "-m",
                "bindings/python/Cargo.toml",
                "-o",
            ])
            .arg(&wheels)
            .arg("-i")
            .arg(&python),
    )?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| format!("{}: {e}", wheels.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("maturin wrote no wheel into {}", wheels.display()))?;

    // A fresh environment every time: the tests see what a user who pip-installs the wheel sees.
    let venv = root.join("target/python-tests/venv");
    fresh_venv(&python, &venv)?;
    pip_install(&venv, &pip_cache, &requirements.join("test.txt"))?;
    // Ray's and mypy's binary wheels are pinned for one Python; elsewhere their tests are skipped (and say
    // why).
    if version == PINNED_PYTHON {
        pip_install(&venv, &pip_cache, &requirements.join("cp311.txt"))?;
    } else {
        eprintln!(
            "xtask: Python {version}: Ray's and mypy's pinned wheels are CPython {PINNED_PYTHON}'s; the Ray and \
             stub tests are skipped"
        );
    }
    status(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-compile",
                "--no-deps",
            ])
            .arg(&wheel),
    )?;
    eprintln!("xtask: running pytest on {}", wheel.display());
    let path = std::env::join_paths(std::iter::once(venv.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .map_err(|e| e.to_string())?;
    status(
        Command::new(venv.join("bin/python"))
            .current_dir(&root)
            .args([
                "-m",
                "pytest",
                "bindings/python/tests",
                "-q",
                "-p",
                "no:cacheprovider",
            ])
            .args(pytest_args)
            .env("PATH", path)
            .env("VIRTUAL_ENV", &venv)
            .env(graft_engine::CACHE_ENV, &cache),
    )
}

/// A new virtual environment at `dir` (an old one is removed first).
fn fresh_venv(python: &str, dir: &Path) -> Result<(), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    status(Command::new(python).args(["-m", "venv"]).arg(dir))
}

/// `pip install --require-hashes -r requirements` into `venv`, pip's downloads cached in `pip_cache`.
fn pip_install(venv: &Path, pip_cache: &Path, requirements: &Path) -> Result<(), String> {
    status(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                // No .pyc files written ahead: Python compiles what it imports (CI's disk is small).
                "--no-compile",
                "--require-hashes",
                "--only-binary",
                ":all:",
                "-r",
            ])
            .arg(requirements)
            .env("PIP_CACHE_DIR", pip_cache),
    )
}

fn status(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown} failed ({s})")),
        Err(e) => Err(format!("cannot start {shown}: {e}")),
    }
}

fn output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    match command.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{shown} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot start {shown}: {e}")),
    }
}
