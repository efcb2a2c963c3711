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
    /// Delete stored features (all of them, or the namespaces whose description contains `--model`).
    Clear {
        /// Only namespaces whose description contains this text (e.g. a model name).
        #[arg(long)]
        model: Option<String>,
    },
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let features = args.features_dir.unwrap_or_else(|| {
        args.cache_dir
            .unwrap_or_else(|| defaults.cache_dir.clone())
            .join("features")
    });
    match args.action {
        Action::Stats => {
            print!("{}", graft_engine::feature_cache_stats(&features)?);
        }
        Action::Clear { model } => {
            let n = graft_engine::clear_feature_cache(&features, model.as_deref())?;
            println!(
                "removed {n} feature namespace(s) from {}",
                features.display()
            );
        }
    }
    Ok(())
}
