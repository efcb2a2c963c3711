//! `cargo xtask`: graft's command line inside its checkout, plus the developer tasks.
//!
//! Every user command (`run`, `check`, `fetch`, `extract`, …) is the installed `graft`'s own code
//! ([`graft::main_with`]) with the checkout's folders as defaults: runs in `runs/`, the cache in
//! `.graft-cache/` (or `$GRAFT_CACHE`). Developer tasks are modules of their own: `test`, `test-python`, `docs`.

mod docs;
mod python;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The checkout's root.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `$GRAFT_CACHE`, else `.graft-cache/` in the checkout.
fn cache_dir() -> PathBuf {
    std::env::var_os(graft_engine::CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".graft-cache"))
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "test") {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| a != "--")
            .collect();
        return test::run(&rest);
    }
    if args.get(1).is_some_and(|a| a == "test-python") {
        let rest: Vec<String> = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return python::run(&rest);
    }
    if args.get(1).is_some_and(|a| a == "docs") {
        return docs::run();
    }
    let root = workspace_root();
    let defaults = graft::Defaults {
        program: "cargo xtask",
        runs_dir: root.join("runs"),
        cache_dir: cache_dir(),
        fetch_pipelines: vec![root.join("pipelines/quickstart.toml")],
    };
    let asks_help = args.len() == 1
        || args
            .get(1)
            .is_some_and(|a| a == "--help" || a == "-h" || a == "help");
    let code = graft::main_with(&defaults, args);
    if asks_help {
        println!(
            "\nDeveloper tasks (cargo xtask only):\n  test         Fetch what the tests need, then run every test of the workspace, the doctests and the\n               Python package's tests\n  test-python  Build the Python wheel, install it into a fresh venv, run its pytest suite there\n  docs         Build the guide under docs/ with mdBook (when installed) into target/guide/"
        );
    }
    code
}
