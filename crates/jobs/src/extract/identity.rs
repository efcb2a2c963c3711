//! A job's identity: what makes finished chunks belong to it (the input's bytes, the model's files, the
//! settings that change the output). A chunk of another identity is never reused.

use std::path::{Path, PathBuf};

use super::job::{ExtractJob, Input, JobIdentity};
use crate::JobError;
use graft_config::ModelSource;

/// The input's identity: its size and the sha256 of its whole content (read once per start; an edit anywhere
/// in the file makes an interrupted job's chunks useless, and they are discarded).
pub(crate) fn input_signature(path: &Path) -> Result<String, JobError> {
    let io = |source| JobError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let sha256 = graft_stdx::sha256_file(path).map_err(io)?;
    Ok(format!("{len} bytes, sha256 {sha256}"))
}

/// The Parquet key-value metadata of an output: the identity, so the file says what made it.
pub(crate) fn file_metadata(identity: &JobIdentity) -> Vec<(String, String)> {
    vec![(
        "graft.extract".to_owned(),
        serde_json::to_string(identity).expect("identity serialises"),
    )]
}

/// What makes two runs the same job: model, settings, chunking and the input.
pub(crate) fn job_identity(
    job: &ExtractJob,
    input: &Input,
    (onnx_sha256, tokenizer_sha256, output_name, settings): IdentityModel,
) -> Result<JobIdentity, JobError> {
    Ok(JobIdentity {
        // 2: `settings` is JSON (it was a debug string).
        format: 2,
        model: model_label(&job.backbone.model),
        onnx_sha256,
        tokenizer_sha256,
        output_name,
        settings,
        batch_size: job.backbone.batch_size,
        chunk_rows: job.backbone.chunk_rows,
        input_name: job
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        input_signature: match input {
            Input::Table(_) => input_signature(&job.input)?,
            Input::Images { root, files } => folder_signature(root, files),
        },
        text_column: match input {
            Input::Table(_) => job.text_column.clone(),
            Input::Images { .. } => String::new(),
        },
        id_column: job.id_column.clone(),
    })
}

/// The model's hashes, output and settings that enter the job's identity.
pub(crate) type IdentityModel = (String, String, String, serde_json::Value);

/// A registry name, or (own files) the graph's file name: shards that mount the model elsewhere still agree.
pub(crate) fn model_label(model: &ModelSource) -> String {
    match model {
        ModelSource::Registry(name) => name.clone(),
        ModelSource::Files { onnx, .. } => onnx
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// A folder's identity without reading every image: relative names and sizes.
pub(crate) fn folder_signature(root: &Path, files: &[PathBuf]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for file in files {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        hasher.update(format!(
            "{} {size}\n",
            file.strip_prefix(root).unwrap_or(file).display()
        ));
    }
    format!(
        "{} images, names+sizes sha256 {:x}",
        files.len(),
        hasher.finalize()
    )
}
