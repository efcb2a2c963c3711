//! Batch extraction jobs: a file of texts in, a file of embeddings out, for millions of rows.
//!
//! The input is cut into chunks of `chunk_rows` consecutive rows. Chunk `c` belongs to shard `c mod N`, so
//! every shard of an `N`-way job gets a deterministic share without knowing the row count in advance. Three
//! threads overlap the work: one reads and tokenizes the next chunk, one runs inference, one writes finished
//! chunks. Each chunk is written to its own file in a hidden work folder beside the output (temporary name,
//! fsync, rename), so a job killed at any moment restarts with the chunks it has and recomputes only the
//! others. When every chunk is there, they are copied in order into the output (again under a temporary name),
//! and the work folder is removed. Memory holds a few chunks, whatever the size of the input.

mod assemble;
mod identity;
mod job;
mod merge;
mod stream;
mod workdir;

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_assets::Cache;
use graft_ingest::EmbeddingFormat;
use graft_report::RuntimeRecord;

use crate::JobError;
use assemble::{ChunkSource, Written, assemble};
use identity::job_identity;
pub use job::{ExtractJob, ExtractOutcome, Shard};
use job::{ExtractionRecord, Input, JobIdentity, PartStats};
pub use merge::{MergeOutcome, merge};
use stream::{
    Extractor, StreamStats, empty_share, input_rows, load_workers, open_input, stream_chunks,
};
use workdir::{
    OutputLock, chunk_len, chunk_path, claim_work_dir, discard_if_no_chunks, finished_chunks,
    finished_manifest, remove_stale_temporaries,
};

fn validate(job: &ExtractJob) -> Result<(), JobError> {
    job.backbone
        .check_counts(|name| format!("--{}", name.replace('_', "-")))?;
    if let Some(id) = &job.id_column
        && (id == graft_ingest::embeddings::ROW_COLUMN
            || id == graft_ingest::embeddings::EMBEDDING_COLUMN)
    {
        return Err(JobError::invalid(
            format!("the id column may not be called `{id}`: the output has a column of that name"),
            "rename the column in the input",
        ));
    }
    if !job.input.exists() {
        return Err(JobError::invalid(
            format!("input not found: {}", job.input.display()),
            "--input takes a .csv, .tsv, .jsonl or .parquet file, or a folder of images",
        ));
    }
    Ok(())
}

/// Runs (or resumes, or finds already done) a batch extraction job.
pub fn extract(job: &ExtractJob) -> Result<ExtractOutcome, JobError> {
    let started = Instant::now();
    validate(job)?;
    let shard = job.shard.unwrap_or(Shard::WHOLE);
    let output = output_path(job)?;
    let cache = Cache::new(&job.backbone.cache_dir);
    // Open the input first: a wrong column is reported before anything is fetched.
    let (input, extractor, identity_model) = open_input(job, &cache)?;
    let identity = job_identity(job, &input, identity_model)?;

    if let Some(done) = finished_manifest(&output, &identity, shard)? {
        return Ok(already_complete(output, done.rows, started));
    }
    if output.exists() {
        return Err(JobError::invalid(
            format!("{} exists and was not made by this job", output.display()),
            "delete it, or choose another --output",
        ));
    }

    // Counting rows validates the whole input (quotes, widths, UTF-8): done before the work folder is
    // claimed, so that a refused input leaves nothing behind.
    let input_rows = input_rows(&input, job)?;
    let lock = OutputLock::take(&output)?;
    // A job started at the same time may have finished between the check above and taking the lock.
    if let Some(done) = finished_manifest(&output, &identity, shard)? {
        return Ok(already_complete(output, done.rows, started));
    }
    let chunks = input_rows.div_ceil(job.backbone.chunk_rows as u64);
    let mine: Vec<u64> = (0..chunks).filter(|&c| shard.owns(c)).collect();
    if mine.is_empty() {
        return empty_share(
            output,
            &identity,
            (shard, input_rows, chunks),
            &extractor,
            job,
            started,
        );
    }
    let work = claim_work_dir(&output, &identity)?;
    remove_stale_temporaries(&output);
    let shard_rows: u64 = mine
        .iter()
        .map(|&c| chunk_len(c, input_rows, job.backbone.chunk_rows) as u64)
        .sum();
    let done = finished_chunks(&work, &mine, input_rows, job.backbone.chunk_rows)?;
    let resumed_rows: u64 = done
        .iter()
        .map(|&c| chunk_len(c, input_rows, job.backbone.chunk_rows) as u64)
        .sum();
    if !done.is_empty() {
        tracing::info!(
            chunks = done.len(),
            rows = resumed_rows,
            "resuming an interrupted job"
        );
    }

    let todo: Vec<u64> = mine.iter().copied().filter(|c| !done.contains(c)).collect();
    let ran = if todo.is_empty() {
        Ran::default()
    } else {
        extract_chunks(
            job,
            (&cache, &extractor),
            input,
            &todo,
            (&work, &identity),
            (input_rows, shard_rows, resumed_rows),
        )?
    };
    let Ran {
        runtime: runtime_record,
        provider: provider_used,
        stats,
        seconds: extract_seconds,
    } = ran;

    // Every chunk is on disk: copy them in order into the output.
    let sources = mine
        .iter()
        .map(|&c| ChunkSource::File(chunk_path(&work, c)))
        .collect();
    let extracted = shard_rows - resumed_rows;
    let seconds = started.elapsed().as_secs_f64();
    let record = ExtractionRecord {
        rows_extracted_now: extracted,
        rows_resumed: resumed_rows,
        seconds,
        extract_seconds,
        rows_per_second: extracted as f64 / extract_seconds.max(1e-9),
        batches: stats.batches,
        tokens: stats.tokens,
        padded_tokens: stats.padded_tokens,
        truncated_rows: stats.truncated_rows,
        long_rows: stats.long_rows,
        sequences: stats.sequences,
        runtime: runtime_record,
        model: extractor.record(),
        input: job.input.clone(),
    };
    let written = assemble(
        sources,
        &output,
        &identity,
        shard,
        input_rows,
        shard_rows,
        PartStats::Extracted(Box::new(record)),
    )?;
    std::fs::remove_dir_all(&work).map_err(JobError::io(&work))?;
    drop(lock);
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = summary(
        &output,
        &written,
        (extracted, resumed_rows),
        (seconds, extract_seconds),
        &provider_used,
    );
    if stats.long_rows > 0 {
        // Truncating counts long texts as truncated; chunking truncates none.
        summary.push_str(&if stats.truncated_rows == 0 {
            format!(
                "; {} texts longer than max_length embedded in windows ({} windows in all), pooled",
                stats.long_rows, stats.sequences
            )
        } else {
            format!(
                "; {} texts longer than max_length truncated (--long-texts chunks keeps them whole)",
                stats.long_rows
            )
        });
    }
    Ok(ExtractOutcome {
        output,
        rows: written.rows,
        extracted,
        seconds,
        summary,
    })
}

/// What extracting the chunks still to do ran on and took.
struct Ran {
    runtime: Option<RuntimeRecord>,
    provider: String,
    stats: StreamStats,
    /// Reading, tokenizing, inference and writing chunks; not loading the model.
    seconds: f64,
}

impl Default for Ran {
    fn default() -> Ran {
        Ran {
            runtime: None,
            provider: "none: every chunk was already done".to_owned(),
            stats: StreamStats::default(),
            seconds: 0.0,
        }
    }
}

/// Loads the model's sessions and streams the chunks `todo` through them into the work folder; a failure
/// before any chunk was written leaves no work folder behind.
fn extract_chunks(
    job: &ExtractJob,
    (cache, extractor): (&Cache, &Extractor),
    input: Input,
    todo: &[u64],
    (work, identity): (&Path, &JobIdentity),
    (input_rows, shard_rows, resumed_rows): (u64, u64, u64),
) -> Result<Ran, JobError> {
    let (mut backbones, record) =
        load_workers(job, cache, extractor).map_err(|e| discard_if_no_chunks(work, e))?;
    let provider = backbones[0].execution_provider().to_owned();
    let bar = graft_engine::progress::bar(job.progress, shard_rows, resumed_rows, "rows");
    let clock = Instant::now();
    let stats = stream_chunks(
        job,
        input,
        todo,
        &mut backbones,
        work,
        input_rows,
        identity,
        &bar,
    )
    .map_err(|e| discard_if_no_chunks(work, e))?;
    let seconds = clock.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(Ran {
        runtime: Some(record),
        provider,
        stats,
        seconds,
    })
}

/// The line `extract` prints: rows, output, width, size, time, throughput and provider.
fn summary(
    output: &Path,
    written: &Written,
    (extracted, resumed_rows): (u64, u64),
    (seconds, extract_seconds): (f64, f64),
    provider_used: &str,
) -> String {
    format!(
        "{rows} rows → {} ({dim}-d, {:.1} MB) in {seconds:.1} s: {extracted} extracted at {:.0} rows/s on {provider_used}{}",
        output.display(),
        written.bytes as f64 / 1e6,
        extracted as f64 / extract_seconds.max(1e-9),
        if resumed_rows > 0 {
            format!(", {resumed_rows} kept from the interrupted run")
        } else {
            String::new()
        },
        rows = written.rows,
        dim = written.dimension,
    )
}

/// The file this job writes: `--output`, or its part file inside the `--output` folder for a shard.
fn output_path(job: &ExtractJob) -> Result<PathBuf, JobError> {
    let output = match job.shard {
        Some(shard) => {
            std::fs::create_dir_all(&job.output).map_err(JobError::io(&job.output))?;
            job.output.join(shard.part_file_name())
        }
        None => job.output.clone(),
    };
    let format = EmbeddingFormat::from_path(&output)?;
    if format == EmbeddingFormat::Npy && job.id_column.is_some() {
        return Err(JobError::invalid(
            format!(
                "{} would hold only the embedding matrix, so --id-column has nowhere to go",
                output.display()
            ),
            "write a .parquet file to keep ids, or leave out --id-column (rows stay in input order)",
        ));
    }
    Ok(output)
}

fn already_complete(output: PathBuf, rows: u64, started: Instant) -> ExtractOutcome {
    let summary = format!(
        "{}: already complete ({rows} rows); nothing to do",
        output.display()
    );
    ExtractOutcome {
        output,
        rows,
        extracted: 0,
        seconds: started.elapsed().as_secs_f64(),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::identity::input_signature;
    use super::*;

    #[test]
    fn the_input_signature_sees_an_edit_anywhere_in_the_file() {
        // On main only the size and the first and last MiB were hashed: an edit in the middle was missed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corpus.csv");
        let mut content = vec![b'a'; 3 << 20];
        std::fs::write(&path, &content).unwrap();
        let before = input_signature(&path).unwrap();
        content[3 << 19] = b'b';
        std::fs::write(&path, &content).unwrap();
        assert_ne!(input_signature(&path).unwrap(), before);
    }

    #[test]
    fn shards_parse_and_partition_the_chunks() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 4 });
        assert_eq!(s.part_file_name(), "part-00002-of-00004.parquet");
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        for c in 0..20 {
            let owners = (0..4)
                .filter(|&i| Shard { index: i, count: 4 }.owns(c))
                .count();
            assert_eq!(owners, 1);
        }
        assert_eq!(chunk_len(2, 10, 4), 2);
        assert_eq!(chunk_len(1, 10, 4), 4);
        assert_eq!(chunk_len(3, 10, 4), 0);
    }
}
