//! The jobs' one error type: what the job itself refuses, a file it cannot read or write, and everything
//! the engine reports, passed through unchanged.

use std::path::{Path, PathBuf};

use graft_engine::PipelineError;

/// Everything that can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's inputs cannot work: a file of the wrong kind, a column that is not there, shards that do
    /// not belong together, a head that does not match its backbone.
    #[error("{message}\n  hint: {hint}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine, a model, the data or a run-folder record failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl JobError {
    /// A job input that cannot work, with what to do about it.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> JobError {
        JobError::Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// `map_err` for an I/O error on `path`.
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> JobError + '_ {
        move |source| JobError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The leaf crates' errors reach a job through the engine's type (the same message either way).
macro_rules! through_the_engine {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for JobError {
            fn from(e: $error) -> JobError {
                JobError::Pipeline(e.into())
            }
        }
    )*};
}
through_the_engine!(
    graft_config::ConfigError,
    graft_config::Diagnostic,
    graft_assets::AssetError,
    graft_backbone::BackboneError,
    graft_ingest::IngestError,
    graft_heads::HeadError,
    graft_eval::EvalError,
    graft_report::ArtefactError,
);

/// For callers that report every failure as the engine's type (the command line, the Python binding).
impl From<JobError> for PipelineError {
    fn from(e: JobError) -> PipelineError {
        match e {
            JobError::Invalid { message, hint } => PipelineError::Job { message, hint },
            JobError::Io { path, source } => PipelineError::Io { path, source },
            JobError::Pipeline(e) => e,
        }
    }
}
