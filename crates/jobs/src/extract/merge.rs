//! `merge`: the outputs of an N-way sharded job interleaved back into one file in row order.

use std::path::{Path, PathBuf};

use graft_ingest::EmbeddingFormat;

use super::assemble::{ChunkSource, assemble};
use super::job::{PartManifest, PartStats, Shard};
use super::workdir::chunk_len;
use crate::JobError;

/// What [`merge`] produced.
#[derive(Debug, Clone)]
pub struct MergeOutcome {
    /// The merged file.
    pub output: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Part files read.
    pub parts: usize,
}

/// Merges the part files of a sharded job (the folder given to `--output` with `--shard`) into one file in
/// input order, identical to what the job would have written unsharded.
pub fn merge(parts_dir: &Path, output: &Path) -> Result<MergeOutcome, JobError> {
    EmbeddingFormat::from_path(output)?;
    // As `extract` does: never overwrite a file this command did not make.
    if output.exists() {
        return Err(JobError::invalid(
            format!("{} exists", output.display()),
            "delete it, or choose another --output",
        ));
    }
    let entries = std::fs::read_dir(parts_dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            JobError::invalid(
                format!("no such folder: {}", parts_dir.display()),
                "give the folder that `extract --shard I/N --output <folder>` wrote its parts into",
            )
        } else {
            JobError::Io {
                path: parts_dir.to_path_buf(),
                source,
            }
        }
    })?;
    let mut manifests: Vec<(PathBuf, PartManifest)> = Vec::new();
    for entry in entries {
        let path = entry.map_err(JobError::io(parts_dir))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !(name.starts_with("part-") && name.ends_with(".parquet.json")) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(JobError::io(&path))?;
        let manifest: PartManifest = serde_json::from_slice(&bytes).map_err(|e| {
            JobError::invalid(
                format!("{}: not a part manifest: {e}", path.display()),
                "remove the file or re-run that shard",
            )
        })?;
        let part = path.with_file_name(name.trim_end_matches(".json"));
        manifests.push((part, manifest));
    }
    let Some((_, first)) = manifests.first() else {
        return Err(JobError::invalid(
            format!("no finished part files in {}", parts_dir.display()),
            "run `cargo xtask extract … --shard I/N --output <folder>` for every I first",
        ));
    };
    let (identity, count, input_rows) =
        (first.identity.clone(), first.shard.count, first.input_rows);
    let mut by_index: Vec<Option<PathBuf>> = vec![None; count as usize];
    for (part, m) in &manifests {
        if m.identity != identity || m.shard.count != count || m.input_rows != input_rows {
            return Err(JobError::invalid(
                format!(
                    "{} comes from a different job than the other parts",
                    part.display()
                ),
                "every shard must run the same command apart from --shard; remove stray parts",
            ));
        }
        if m.rows == 0 {
            // An empty share has a manifest and no part file; it must own no chunk indeed.
            let chunks = input_rows.div_ceil(m.identity.chunk_rows as u64);
            if (0..chunks).any(|c| m.shard.owns(c)) {
                return Err(JobError::invalid(
                    format!(
                        "{}.json records no rows, but shard {}/{count} owns chunks of the input",
                        part.display(),
                        m.shard.index
                    ),
                    "the manifest is damaged: run that shard again",
                ));
            }
            by_index[m.shard.index as usize] = Some(part.clone());
            continue;
        }
        let actual = graft_assets::sha256_file(part).map_err(JobError::io(part))?;
        if actual != m.file_sha256 {
            return Err(JobError::invalid(
                format!("{} does not match its manifest's checksum", part.display()),
                "the part is damaged or was changed: run that shard again",
            ));
        }
        by_index[m.shard.index as usize] = Some(part.clone());
    }
    let missing: Vec<String> = by_index
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(i, _)| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(JobError::invalid(
            format!(
                "{} of {count} parts are missing or unfinished: {}",
                missing.len(),
                missing.join(", ")
            ),
            "run (or finish) those shards, then merge again",
        ));
    }
    let chunk_rows = identity.chunk_rows;
    let chunks = input_rows.div_ceil(chunk_rows as u64);
    let sources = (0..chunks)
        .map(|c| {
            let part = by_index[(c % u64::from(count)) as usize]
                .clone()
                .expect("checked above");
            // Within its part, chunk c is preceded by the part's earlier chunks, all full.
            let offset = (c / u64::from(count)) * chunk_rows as u64;
            ChunkSource::Slice(part, offset, chunk_len(c, input_rows, chunk_rows))
        })
        .collect();
    let written = assemble(
        sources,
        output,
        &identity,
        Shard::WHOLE,
        input_rows,
        input_rows,
        PartStats::Merged {
            merged_from: by_index.clone(),
        },
    )?;
    Ok(MergeOutcome {
        output: output.to_path_buf(),
        rows: written.rows,
        parts: count as usize,
    })
}
