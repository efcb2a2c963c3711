//! Assembly: the finished chunks copied in order into the output, under a temporary name until complete.

use std::path::{Path, PathBuf};

use graft_ingest::{EmbeddingWriter, read_embeddings};

use super::identity::file_metadata;
use super::job::{JobIdentity, PartManifest, PartStats, Shard};
use super::workdir::sidecar;
use crate::JobError;
use crate::write_atomic;

/// Where the rows of one chunk come from when assembling an output.
pub(crate) enum ChunkSource {
    /// A chunk file of the work folder.
    File(PathBuf),
    /// Rows `[offset, offset + len)` of a part file.
    Slice(PathBuf, u64, usize),
}

pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) dimension: usize,
    pub(crate) bytes: u64,
}

/// Copies chunks, in order, into `output` and writes its manifest beside it.
pub(crate) fn assemble(
    sources: Vec<ChunkSource>,
    output: &Path,
    identity: &JobIdentity,
    shard: Shard,
    input_rows: u64,
    rows: u64,
    stats: PartStats,
) -> Result<Written, JobError> {
    let mut writer: Option<EmbeddingWriter> = None;
    let mut dimension = 0;
    for source in sources {
        let batch = match &source {
            ChunkSource::File(path) => read_embeddings(path, None)?,
            ChunkSource::Slice(path, offset, len) => read_embeddings(path, Some((*offset, *len)))?,
        };
        let out = match &mut writer {
            Some(w) => w,
            None => {
                dimension = batch.embeddings.ncols();
                writer.insert(EmbeddingWriter::create(
                    output,
                    dimension,
                    batch
                        .ids
                        .as_ref()
                        .map(|s| (s.name().to_string(), s.dtype().clone())),
                    Some(rows),
                    file_metadata(identity),
                )?)
            }
        };
        out.write(&batch)?;
    }
    let writer = writer.ok_or_else(|| {
        JobError::invalid(
            format!("no rows for {}", output.display()),
            "this shard has no chunks: use fewer shards or smaller --chunk-rows",
        )
    })?;
    let bytes = writer.finish()?;
    let manifest = PartManifest {
        identity: identity.clone(),
        shard,
        input_rows,
        rows,
        dimension,
        file_sha256: graft_assets::sha256_file(output).map_err(JobError::io(output))?,
        stats,
    };
    write_atomic(
        &sidecar(output),
        &serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
    )?;
    Ok(Written {
        rows,
        dimension,
        bytes,
    })
}
