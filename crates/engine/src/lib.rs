//! The engine: runs a checked pipeline by composing graft's leaf crates.
//!
//! A pipeline file names the data, the split, a frozen backbone and one or more heads.
//! [`graft_config::Plan::load`] parses and checks it before any work starts (errors point at the offending
//! line); [`run`] then ingests and splits
//! the rows, provisions ONNX Runtime and the model, extracts features, trains the heads, evaluates each once on
//! the test split and writes a run folder with `metrics.json`, `report.md`, `manifest.json` and the saved
//! heads, which the batch jobs of `graft-jobs` (`predict`, `export`, `extract`, `compare`) read back.
//!
//! ```no_run
//! use graft_config::Plan;
//! use graft_engine::{RunOptions, run};
//!
//! # fn main() -> Result<(), graft_engine::PipelineError> {
//! let plan = Plan::load("pipelines/quickstart.toml".as_ref())?;
//! let outcome = run(&plan, &RunOptions::new(".graft-cache", "runs"))?;
//! println!("{}", outcome.summary);
//! # Ok(())
//! # }
//! ```

mod artifacts;
mod candidates;
mod curve;
mod data;
mod evaluate;
mod featurize;
mod heads;
mod inspect;
mod io;
mod options;
pub mod progress;
pub mod provision;
mod run;
mod stages;
mod train;

use std::path::PathBuf;

use graft_config::{ConfigError, Diagnostic};

pub use evaluate::split_intervals;
pub use graft_assets::CACHE_ENV;
pub use graft_backbone::{ChunkPooling, LongTexts, ModelFolder, Pooling, Provider};
pub use graft_eval::Bootstrap;
pub use heads::{
    ArtefactInfo, FittedHead, LoadedHead, TrainedHead, load_head, save_head, train_head,
};
pub use inspect::{DryRun, LongTextCount, ModelSummary, check_model, check_models, dry_run};
pub use provision::{
    clear_feature_cache, feature_cache_stats, provision_all, provision_runtime, provision_samples,
};
pub use run::{DataSummary, RunOptions, RunOutcome, check_data, run};

/// Everything that can stop a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    PipelineFile {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A mistake located in the pipeline file.
    #[error("{0}")]
    Config(Diagnostic),
    /// Provisioning of the runtime, a model or a data set failed.
    #[error(transparent)]
    Assets(#[from] graft_assets::AssetError),
    /// Loading or running the backbone failed.
    #[error(transparent)]
    Backbone(#[from] graft_backbone::BackboneError),
    /// Reading the data failed for a reason not tied to a pipeline key.
    #[error(transparent)]
    Ingest(#[from] graft_ingest::IngestError),
    /// The feature cache could not be read or written.
    #[error(transparent)]
    Features(#[from] graft_features::FeatureError),
    /// Training the head failed.
    #[error("training the head: {0}")]
    Head(#[from] graft_heads::HeadError),
    /// Scoring failed.
    #[error("evaluation: {0}")]
    Eval(#[from] graft_eval::EvalError),
    /// A batch extraction job that cannot go on.
    #[error("{message}\n  hint: {hint}")]
    Job {
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// A saved head that cannot be loaded.
    #[error("{}: {problem}", path.display())]
    Artefact {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A run-folder record that cannot be read (missing, damaged, or of another format version).
    #[error(transparent)]
    Record(#[from] graft_report::ArtefactError),
    /// Fine-tuning failed, or a model's weights are unusable.
    #[error(transparent)]
    Tune(#[from] graft_tune::TuneError),
    /// Writing the run folder failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl From<ConfigError> for PipelineError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::File { path, source } => PipelineError::PipelineFile { path, source },
            ConfigError::Invalid(d) => PipelineError::Config(d),
        }
    }
}

impl From<Diagnostic> for PipelineError {
    fn from(d: Diagnostic) -> Self {
        PipelineError::Config(d)
    }
}
