//! graft's batch jobs besides `run`, each reading what a run or an earlier job wrote through the typed
//! records of `graft-report`:
//!
//! - [`Embedder`]: texts embedded in this process, batched as `extract` batches a file;
//! - [`extract`]: embed every row of a file with a frozen backbone, streaming into Parquet or `.npy`;
//!   resumable (finished chunks are checksummed) and shardable, with [`merge`] for the shards;
//! - [`predict`]: a run's saved head on new rows;
//! - [`export`]: a run's head as ONNX, alone or merged with its backbone;
//! - [`compare`]: two runs' test predictions, paired (McNemar, paired bootstrap).
//!
//! ```no_run
//! use graft_config::ModelSource;
//! use graft_jobs::{ExtractJob, extract};
//!
//! # fn main() -> Result<(), graft_jobs::JobError> {
//! let model = ModelSource::Registry("minilm-l6-int8".into());
//! let job = ExtractJob::new(model, "reviews.csv", "text", "reviews.parquet", ".graft-cache");
//! let outcome = extract(&job)?;
//! println!("{}", outcome.summary);
//! # Ok(())
//! # }
//! ```

mod compare;
mod embed;
mod error;
mod evaluate;
mod export;
mod extract;
mod predict;

use std::path::Path;

pub use compare::{
    BootstrapRecord, CompareJob, CompareOutcome, ComparedRun, ComparisonRecord, Paired, compare,
    comparison_dir,
};
pub use embed::{EmbedSettings, Embedder};
pub use error::JobError;
pub use evaluate::{EvaluateJob, evaluate};
pub use export::{ExportJob, ExportOutcome, export};
pub use extract::{ExtractJob, ExtractOutcome, MergeOutcome, Shard, extract, merge};
pub use predict::{PredictJob, PredictOutcome, SavedHead, predict};

/// Writes `content` to `path` atomically (a temporary beside it, then a rename).
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), JobError> {
    graft_stdx::atomic::write(path, content).map_err(|source| JobError::Io {
        path: path.to_path_buf(),
        source,
    })
}
