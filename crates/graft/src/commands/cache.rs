//! `graft cache`: the shared feature cache, listed or cleared.

use std::path::PathBuf;

use graft_engine::PipelineError;

use crate::Defaults;

/// Show or clear the shared feature cache.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    /// Cache folder (as for `run`).
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Feature cache (default: features/ inside the cache folder).
    #[arg(long, global = true)]
    pub features_dir: Option<PathBuf>,
}

/// What to do with the feature cache.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Rows and bytes per feature namespace (one per model and extraction setting).
    Stats,
    /// Delete stored features: all of them, or those of one model.
    Clear {
        /// Only this model's features: its exact registry name (e.g. minilm-l6-int8) or `.onnx` file name.
        #[arg(long)]
        model: Option<String>,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let features = args.features_dir.unwrap_or_else(|| {
        args.cache_dir
            .unwrap_or_else(|| defaults.cache_dir.clone())
            .join("features")
    });
    // A missing folder is an empty cache; something else at its place is a mistake to report.
    if features.exists() && !features.is_dir() {
        return Err(PipelineError::Job {
            message: format!(
                "{} is a file, not a feature cache folder",
                features.display()
            ),
            hint: "give --features-dir the folder that holds the cached features (default: features/ in the cache)"
                .to_owned(),
        });
    }
    match args.action {
        Action::Stats => {
            out!("{}", graft_engine::feature_cache_stats(&features)?)?;
        }
        Action::Clear { model, dry_run } => {
            let removed = graft_engine::clear_feature_cache(&features, model.as_deref(), dry_run)?;
            for (dir, description) in &removed {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                outln!("  {name}  {description}")?;
            }
            outln!(
                "{} {} feature namespace(s) from {}",
                if dry_run { "would remove" } else { "removed" },
                removed.len(),
                features.display()
            )?;
        }
    }
    Ok(())
}
