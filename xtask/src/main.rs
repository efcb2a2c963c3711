//! `cargo xtask`: graft's command line. It parses arguments and calls `graft-engine`; nothing else.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use graft_config::Plan;
use graft_engine::RunOptions;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "graft: transfer learning on frozen ONNX backbones",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline file end to end and write its run folder.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Where run folders go (default: runs/ at the repository root).
        #[arg(long)]
        runs_dir: Option<PathBuf>,
        /// Cache of fetched runtimes, models and data sets (default: $GRAFT_CACHE, else .graft-cache/ at the
        /// repository root).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Shared feature cache (default: features/ inside the cache folder).
        #[arg(long)]
        features_dir: Option<PathBuf>,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Fetch and verify what pipelines need (runtime, models, data sets) without running them.
    Fetch {
        /// Pipeline files whose parts to fetch (default: pipelines/quickstart.toml).
        pipelines: Vec<PathBuf>,
        /// Cache folder (as for `run`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Show or clear the shared feature cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// Cache folder (as for `run`).
        #[arg(long, global = true)]
        cache_dir: Option<PathBuf>,
        /// Feature cache (default: features/ inside the cache folder).
        #[arg(long, global = true)]
        features_dir: Option<PathBuf>,
    },
    /// Embed every row of a file with a frozen backbone, streaming into Parquet or .npy (resumable, shardable).
    Extract(ExtractArgs),
    /// Classify new rows with a run's saved head (features from the same frozen backbone).
    Predict(PredictArgs),
    /// Write a run's head as ONNX: merged with its backbone (token ids or pixels in, probabilities out) or alone.
    Export {
        /// A run folder written by `cargo xtask run`.
        run_dir: PathBuf,
        /// Which head of the run (default: the first in its pipeline).
        #[arg(long)]
        head: Option<String>,
        /// The .onnx file (default: heads/<head>.onnx in the run folder, heads/<head>.head.onnx with --head-only).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Export the head alone; its input is the backbone's features.
        #[arg(long)]
        head_only: bool,
        /// Cache folder (as for `run`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Put runs side by side: each run's headline head, its test scores and intervals, and a paired test
    /// against the first run on the same test rows.
    Compare {
        /// Two or more run folders; the first is the reference.
        #[arg(num_args = 2.., required = true)]
        runs: Vec<PathBuf>,
        /// Folder for comparison.md and comparison.json (default: runs/comparisons/<UTC timestamp>/).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Bootstrap resamples of the paired accuracy difference.
        #[arg(long, default_value_t = 1000)]
        bootstrap: usize,
        /// Seed of the resampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Merge the part files of a sharded `extract` into one file in input order.
    Merge {
        /// The folder the shards wrote into (their --output).
        parts: PathBuf,
        /// The merged file (.parquet or .npy).
        #[arg(long)]
        output: PathBuf,
    },
    /// Check a pipeline file without running it.
    Check {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Fetch what the tests need, then run every test of the workspace.
    Test {
        /// Extra arguments for the test runner.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ExtractArgs {
    /// A registry backbone (e.g. minilm-l6-int8) or an .onnx file (then give --tokenizer).
    #[arg(long)]
    model: String,
    /// The tokenizer.json of an .onnx --model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Input: a .csv, .tsv, .jsonl/.ndjson or .parquet table, or a folder of images (with an image backbone).
    #[arg(long)]
    input: PathBuf,
    /// Column (or JSON key) with the texts (tables only; a folder of images needs none).
    #[arg(long)]
    text_column: Option<String>,
    /// Column copied next to each embedding (otherwise rows are identified by `row`, their 0-based number).
    #[arg(long)]
    id_column: Option<String>,
    /// Output: a .parquet or .npy file; with --shard, a folder for the part files.
    #[arg(long)]
    output: PathBuf,
    /// Texts per inference call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Inference sessions sharing --threads, running batches at once (2 sessions of 1 thread can beat 1 of 2).
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Rows per chunk: the unit of length-sorted batching, resumption and sharding.
    #[arg(long, default_value_t = 4096)]
    chunk_rows: usize,
    /// Process only shard I of N (I from 0), e.g. --shard "$JOB_COMPLETION_INDEX/8".
    #[arg(long)]
    shard: Option<graft_engine::Shard>,
    /// Tokens kept per text (default: the registry entry's, else 256).
    #[arg(long)]
    max_length: Option<usize>,
    /// Pooling of token states: mean or cls (default: the registry entry's, else mean).
    #[arg(long, value_parser = ["mean", "cls"])]
    pooling: Option<String>,
    /// A template each text is put through before tokenization, `{text}` marking the text
    /// (e.g. "query: {text}").
    #[arg(long)]
    prompt: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Cache folder (as for `run`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(clap::Args)]
struct PredictArgs {
    /// A run folder written by `cargo xtask run`.
    run_dir: PathBuf,
    /// Rows to classify: a .csv, .tsv, .jsonl or .parquet table, or a folder of images.
    input: PathBuf,
    /// Predictions: .csv or .parquet (row, id, predicted class, one probability column per class).
    #[arg(long)]
    output: PathBuf,
    /// Which head of the run (default: the first in its pipeline).
    #[arg(long)]
    head: Option<String>,
    /// Column with the texts (tables).
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column copied into the output to identify rows.
    #[arg(long)]
    id_column: Option<String>,
    /// Use this backbone instead of the run's (registry name, or .onnx with --tokenizer); refused unless its
    /// sha256 is the one the head was trained on.
    #[arg(long)]
    model: Option<String>,
    /// The tokenizer.json of an .onnx --model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Rows per inference call.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Cache folder (as for `run`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Where inference runs (`extract`, `predict`).
#[derive(clap::Args)]
struct DeviceArgs {
    /// Execution provider.
    #[arg(long, value_parser = ["cpu", "cuda"], default_value = "cpu")]
    provider: String,
    /// GPU to use with --provider cuda.
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// With --provider cuda: fail instead of running on CPU when CUDA cannot be initialised.
    #[arg(long)]
    no_fallback: bool,
}

impl DeviceArgs {
    fn provider(&self) -> graft_engine::Provider {
        if self.provider == "cuda" {
            graft_engine::Provider::Cuda {
                device_id: self.device_id,
                fallback: !self.no_fallback,
            }
        } else {
            graft_engine::Provider::Cpu
        }
    }
}

#[derive(Subcommand)]
enum CacheAction {
    /// Rows and bytes per feature namespace (one per model and extraction setting).
    Stats,
    /// Delete stored features (all of them, or the namespaces whose description contains `--model`).
    Clear {
        /// Only namespaces whose description contains this text (e.g. a model name).
        #[arg(long)]
        model: Option<String>,
    },
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn default_cache() -> PathBuf {
    std::env::var_os(graft_engine::CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".graft-cache"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ort=error")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            pipeline,
            runs_dir,
            cache_dir,
            features_dir,
            no_progress,
        } => run(&pipeline, runs_dir, cache_dir, features_dir, !no_progress),
        Cmd::Fetch {
            pipelines,
            cache_dir,
        } => fetch(pipelines, cache_dir),
        Cmd::Cache {
            action,
            cache_dir,
            features_dir,
        } => {
            let features = features_dir
                .unwrap_or_else(|| cache_dir.unwrap_or_else(default_cache).join("features"));
            match action {
                CacheAction::Stats => {
                    graft_engine::feature_cache_stats(&features).map(|table| print!("{table}"))
                }
                CacheAction::Clear { model } => {
                    graft_engine::clear_feature_cache(&features, model.as_deref()).map(|n| {
                        println!(
                            "removed {n} feature namespace(s) from {}",
                            features.display()
                        )
                    })
                }
            }
        }
        Cmd::Extract(args) => extract(args),
        Cmd::Predict(args) => predict(args),
        Cmd::Export {
            run_dir,
            head,
            output,
            head_only,
            cache_dir,
        } => graft_engine::export(&graft_engine::ExportJob {
            run_dir,
            head,
            output,
            head_only,
            cache_dir: cache_dir.unwrap_or_else(default_cache),
        })
        .map(|o| {
            println!(
                "exported head `{}` → {} ({:.1} KB)",
                o.head,
                o.output.display(),
                o.bytes as f64 / 1e3
            );
            println!("  inputs   {}", o.inputs.join("; "));
            println!("  outputs  {}", o.outputs.join("; "));
        }),
        Cmd::Compare {
            runs,
            output,
            bootstrap,
            seed,
        } => graft_engine::compare(&graft_engine::CompareJob {
            runs,
            output_dir: output
                .unwrap_or_else(|| graft_engine::comparison_dir(&workspace_root().join("runs"))),
            bootstrap: graft_engine::Bootstrap {
                resamples: bootstrap,
                seed,
                ..graft_engine::Bootstrap::default()
            },
        })
        .map(|o| {
            print!("{}", o.table);
            println!("wrote {} and {}", o.markdown.display(), o.json.display());
        }),
        Cmd::Merge { parts, output } => graft_engine::merge(&parts, &output).map(|m| {
            println!(
                "merged {} parts: {} rows → {}",
                m.parts,
                m.rows,
                m.output.display()
            )
        }),
        Cmd::Check { pipeline } => Plan::load(&pipeline).map_err(Into::into).map(|plan| {
            println!("{}: ok (pipeline `{}`)", pipeline.display(), plan.name);
        }),
        Cmd::Test { args } => return test(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    pipeline: &Path,
    runs_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    features_dir: Option<PathBuf>,
    progress: bool,
) -> Result<(), graft_engine::PipelineError> {
    let plan = Plan::load(pipeline)?;
    let mut options = RunOptions::new(
        cache_dir.unwrap_or_else(default_cache),
        runs_dir.unwrap_or_else(|| workspace_root().join("runs")),
    );
    options.progress = progress;
    if let Some(dir) = features_dir {
        options.features_dir = dir;
    }
    let outcome = graft_engine::run(&plan, &options)?;
    println!("{}", outcome.summary);
    Ok(())
}

/// `--model` (+ `--tokenizer`) as a model source.
fn model_source(
    model: String,
    tokenizer: Option<PathBuf>,
) -> Result<graft_config::ModelSource, graft_engine::PipelineError> {
    let is_file = model.ends_with(".onnx") || Path::new(&model).is_file();
    match (is_file, tokenizer) {
        (true, Some(tokenizer)) => Ok(graft_config::ModelSource::Files {
            onnx: PathBuf::from(&model),
            tokenizer,
            sha256: None,
        }),
        (true, None) => Err(graft_engine::PipelineError::Job {
            message: format!("--model {model} is a file, and --tokenizer is missing"),
            hint: "give the model's tokenizer.json with --tokenizer, or a registry name as --model"
                .to_owned(),
        }),
        (false, _) => Ok(graft_config::ModelSource::Registry(model)),
    }
}

fn predict(args: PredictArgs) -> Result<(), graft_engine::PipelineError> {
    let model = args
        .model
        .map(|m| model_source(m, args.tokenizer))
        .transpose()?;
    let job = graft_engine::PredictJob {
        run_dir: args.run_dir,
        input: args.input,
        text_column: args.text_column,
        id_column: args.id_column,
        output: args.output,
        head: args.head,
        model,
        batch_size: args.batch_size,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        provider: args.device.provider(),
        cache_dir: args.cache_dir.unwrap_or_else(default_cache),
        progress: !args.no_progress,
    };
    let outcome = graft_engine::predict(&job)?;
    println!(
        "predicted {} rows with head `{}` → {}",
        outcome.rows,
        outcome.head,
        outcome.output.display()
    );
    Ok(())
}

fn extract(args: ExtractArgs) -> Result<(), graft_engine::PipelineError> {
    let model = model_source(args.model, args.tokenizer)?;
    let mut job = graft_engine::ExtractJob::new(
        model,
        args.input,
        args.text_column.unwrap_or_default(),
        args.output,
        args.cache_dir.unwrap_or_else(default_cache),
    );
    job.id_column = args.id_column;
    job.batch_size = args.batch_size;
    if let Some(threads) = args.threads {
        job.threads = threads;
    }
    job.chunk_rows = args.chunk_rows;
    job.sessions = args.sessions;
    job.shard = args.shard;
    job.max_length = args.max_length;
    job.pooling = args.pooling.map(|p| {
        if p == "cls" {
            graft_engine::Pooling::Cls
        } else {
            graft_engine::Pooling::Mean
        }
    });
    if let Some(p) = &args.prompt
        && !p.contains("{text}")
    {
        return Err(graft_engine::PipelineError::Job {
            message: format!("--prompt {p:?} has no {{text}} placeholder"),
            hint: "mark where each text goes, e.g. --prompt \"query: {text}\"".to_owned(),
        });
    }
    job.prompt = args.prompt;
    job.progress = !args.no_progress;
    job.provider = args.device.provider();
    let outcome = graft_engine::extract(&job)?;
    println!("{}", outcome.summary);
    Ok(())
}

fn fetch(
    pipelines: Vec<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> Result<(), graft_engine::PipelineError> {
    let cache = cache_dir.unwrap_or_else(default_cache);
    let pipelines = if pipelines.is_empty() {
        vec![workspace_root().join("pipelines/quickstart.toml")]
    } else {
        pipelines
    };
    for pipeline in pipelines {
        let plan = Plan::load(&pipeline)?;
        graft_engine::provision_all(&plan, &cache)?;
        println!(
            "{}: everything fetched and verified in {}",
            pipeline.display(),
            cache.display()
        );
    }
    Ok(())
}

fn test(args: &[String]) -> ExitCode {
    let root = workspace_root();
    let cache = default_cache();
    // Fetch first, so a network or checksum problem is reported once and plainly, not as many test failures.
    // The legacy runtime is what the version-check test must see refused.
    // The image tests need EfficientNet-Lite0 (converted on first fetch), Fashion-MNIST and two sample photos.
    let fetched = fetch(
        vec![
            root.join("pipelines/quickstart.toml"),
            root.join("pipelines/fashion-mnist.toml"),
        ],
        Some(cache.clone()),
    )
    .and_then(|()| graft_engine::provision_runtime("onnxruntime-legacy", &cache).map(drop))
    .and_then(|()| graft_engine::provision_samples(&["coffee", "chelsea"], &cache).map(drop));
    if let Err(e) = fetched {
        eprintln!("error: cannot provision the test assets: {e}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let has_nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut unit = Command::new(&cargo);
    if has_nextest {
        unit.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        unit.args(["test", "--workspace", "--no-fail-fast"]);
    }
    unit.args(args);
    // nextest does not run doctests; they run separately below.
    let mut doc = Command::new(&cargo);
    doc.args(["test", "--workspace", "--doc"]);
    for (name, mut command) in [("tests", unit), ("doctests", doc)] {
        command
            .current_dir(&root)
            .env(graft_engine::CACHE_ENV, &cache);
        // `cargo run` gave this process the package variables of xtask; build scripts (ring's, via polars'
        // HTTP stack) watch some of them, so passing them on would rebuild half the dependency tree.
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
        eprintln!("xtask: running {name}: {command:?}");
        match command.status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("xtask: {name} failed ({status})");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("xtask: cannot start {cargo}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
