//! File writes with the engine's error: every artefact goes through `graft_stdx::atomic`.

use std::path::Path;

use crate::PipelineError;

/// Writes `content` to `path` atomically; an error names `path`, never a temporary file.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), PipelineError> {
    graft_stdx::atomic::write(path, content).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })
}
