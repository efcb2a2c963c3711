//! graft's command line, shared by the installed `graft` binary and `cargo xtask` in a checkout.
//!
//! The two differ only in their [`Defaults`]: an installed `graft` writes runs to `./runs` of the current
//! folder and keeps fetched parts in `$GRAFT_CACHE`, else `$XDG_CACHE_HOME/graft`, else `~/.cache/graft`;
//! `cargo xtask` uses the checkout's `runs/` and `.graft-cache/`. Each subcommand lives in a module of
//! [`commands`]; this file parses and dispatches.
//!
//! ```
//! let defaults = graft::Defaults {
//!     program: "graft",
//!     runs_dir: "runs".into(),
//!     cache_dir: "/tmp/graft-cache".into(),
//!     fetch_pipelines: Vec::new(),
//! };
//! let code = graft::main_with(&defaults, ["graft", "--version"]);
//! assert_eq!(code, std::process::ExitCode::SUCCESS);
//! ```

pub mod commands;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Where a command line puts things it is not told about.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The program name shown in help and errors (`graft`, `cargo xtask`).
    pub program: &'static str,
    /// Where run folders go (`--runs-dir` overrides).
    pub runs_dir: PathBuf,
    /// Fetched runtimes, models, data sets and the feature cache (`--cache-dir` overrides).
    pub cache_dir: PathBuf,
    /// What `fetch` fetches when given no pipeline.
    pub fetch_pipelines: Vec<PathBuf>,
}

impl Defaults {
    /// An installed `graft`: `./runs` of the current folder, and the cache folder of [`user_cache_dir`].
    pub fn installed() -> Defaults {
        Defaults {
            program: "graft",
            // Absolute, so the printed run folder can be opened from anywhere.
            runs_dir: std::path::absolute("runs").unwrap_or_else(|_| PathBuf::from("runs")),
            cache_dir: user_cache_dir(),
            fetch_pipelines: Vec::new(),
        }
    }
}

/// `$GRAFT_CACHE`, else `$XDG_CACHE_HOME/graft`, else `~/.cache/graft` (empty variables count as unset).
pub fn user_cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name);
    cache_dir_from(
        var(graft_engine::CACHE_ENV),
        var("XDG_CACHE_HOME"),
        var("HOME"),
    )
}

/// [`user_cache_dir`]'s rule on given values.
fn cache_dir_from(
    graft_cache: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(graft_cache) {
        return dir;
    }
    if let Some(xdg) = set(xdg_cache_home) {
        return xdg.join("graft");
    }
    match set(home) {
        Some(home) => home.join(".cache/graft"),
        // No home folder (a bare container): a cache beside the runs is better than none.
        None => PathBuf::from(".graft-cache"),
    }
}

#[derive(Parser)]
#[command(
    name = "graft",
    about = "graft: transfer learning on frozen ONNX backbones",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file end to end and write its run folder.
    Run(commands::run::Args),
    /// Check a pipeline file and its data without extracting or training.
    Check(commands::check::Args),
    /// Fetch and verify what pipelines need (runtime, models, data sets) without running them.
    Fetch(commands::fetch::Args),
    /// Show or clear the shared feature cache.
    Cache(commands::cache::Args),
    /// Embed every row of a file with a frozen backbone, streaming into Parquet or .npy (resumable,
    /// shardable).
    Extract(commands::extract::Args),
    /// Merge the part files of a sharded `extract` into one file in input order.
    Merge(commands::merge::Args),
    /// Classify new rows with a run's saved head (features from the same frozen backbone).
    Predict(commands::predict::Args),
    /// Score a run's head on new labelled rows: scores with intervals, per class, confusion, calibration,
    /// beside the run's own test scores.
    Evaluate(commands::evaluate::Args),
    /// Write a run's head as ONNX: merged with its backbone (token ids or pixels in, probabilities out) or
    /// alone.
    Export(commands::export::Args),
    /// Put runs side by side: each run's headline head, its test scores and intervals, and a paired test
    /// against the first run on the same test rows.
    Compare(commands::compare::Args),
    /// Log a finished run to an MLflow tracking server (parameters, metrics with intervals, the learning
    /// curve, report and manifest, tags).
    Mlflow(commands::mlflow::Args),
    /// List the registered backbones: kind, embedding width, licence, package, whether fetched.
    Models(commands::models::Args),
    /// Print the JSON Schema of the pipeline file (for editors: `#:schema` in taplo-based ones).
    Schema(commands::schema::Args),
}

/// Parses `args` (the program name first) and runs the subcommand; errors are printed as `error: …` and
/// give exit code 1 (2 for a command line clap refuses).
pub fn main_with<I, T>(defaults: &Defaults, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    ExitCode::from(exit_status_with(defaults, args))
}

/// [`main_with`], returning the exit status as a number (for a host that exits by itself, such as the
/// Python package's `graft` command).
pub fn exit_status_with<I, T>(defaults: &Defaults, args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // First, while the process has one thread: no ONNX Runtime telemetry (a user opts in with
    // GRAFT_ONNXRUNTIME_TELEMETRY=1).
    graft_engine::provision::disable_runtime_telemetry();
    init_tracing();
    let command = Cli::command()
        .name(defaults.program)
        .bin_name(defaults.program);
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let dispatch = || match cli.command {
        Command::Run(args) => commands::run::run(args, defaults),
        Command::Check(args) => commands::check::run(args, defaults),
        Command::Fetch(args) => commands::fetch::run(args, defaults),
        Command::Cache(args) => commands::cache::run(args, defaults),
        Command::Extract(args) => commands::extract::run(args, defaults),
        Command::Merge(args) => commands::merge::run(args),
        Command::Predict(args) => commands::predict::run(args, defaults),
        Command::Evaluate(args) => commands::evaluate::run(args, defaults),
        Command::Export(args) => commands::export::run(args, defaults),
        Command::Compare(args) => commands::compare::run(args, defaults),
        Command::Mlflow(args) => commands::mlflow::run(args),
        Command::Models(args) => commands::models::run(args, defaults),
        Command::Schema(args) => commands::schema::run(args),
    };
    match quiet_panics(dispatch) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            1
        }
        Err(panics) => {
            for message in panics {
                eprintln!("{message}");
            }
            eprintln!(
                "error: graft stopped on an internal error; this is a bug, please report it with the command \
                 and the message above"
            );
            101
        }
    }
}

/// Runs `work` with panic messages held back: a panic that a library catches and turns into an error
/// (polars' Parquet decoder panics on some damaged files; graft-ingest catches that and names the file) then
/// prints nothing. Only a panic that escapes `work` is a bug, and its messages are returned for printing.
fn quiet_panics<T>(work: impl FnOnce() -> T) -> Result<T, Vec<String>> {
    static HELD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = format!(
            "thread '{}' panicked at {}: {}",
            thread.name().unwrap_or("<unnamed>"),
            info.location().map_or_else(String::new, |l| l.to_string()),
            info.payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        );
        HELD.lock().unwrap_or_else(|p| p.into_inner()).push(message);
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(previous);
    let held = std::mem::take(&mut *HELD.lock().unwrap_or_else(|p| p.into_inner()));
    outcome.map_err(|_| held)
}

/// Logs `warn` and above (or `RUST_LOG`) to stderr; later calls keep the first set-up.
pub fn init_tracing() {
    // A second call (tests, xtask calling in twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ort=error")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_folder_prefers_graft_cache_then_xdg_then_home() {
        let v = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_dir_from(v("/g"), v("/x"), v("/h")),
            PathBuf::from("/g")
        );
        assert_eq!(
            cache_dir_from(v(""), v("/x"), v("/h")),
            PathBuf::from("/x/graft")
        );
        assert_eq!(
            cache_dir_from(None, None, v("/h")),
            PathBuf::from("/h/.cache/graft")
        );
        assert_eq!(
            cache_dir_from(None, v(""), None),
            PathBuf::from(".graft-cache")
        );
    }
}
