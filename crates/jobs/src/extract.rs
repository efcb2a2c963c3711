//! Batch extraction jobs: a file of texts in, a file of embeddings out, for millions of rows.
//!
//! The input is cut into chunks of `chunk_rows` consecutive rows. Chunk `c` belongs to shard `c mod N`, so
//! every shard of an `N`-way job gets a deterministic share without knowing the row count in advance. Three
//! threads overlap the work: one reads and tokenizes the next chunk, one runs inference, one writes finished
//! chunks. Each chunk is written to its own file in a hidden work folder beside the output (temporary name,
//! fsync, rename), so a job killed at any moment restarts with the chunks it has and recomputes only the
//! others. When every chunk is there, they are copied in order into the output (again under a temporary name),
//! and the work folder is removed. Memory holds a few chunks, whatever the size of the input.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use graft_assets::Cache;
use graft_backbone::{
    EncodedTexts, ImageBackbone, ImageBackboneConfig, ImageSource, Runtime, TextBackbone,
    TextBackboneConfig, session_threads,
};
use graft_ingest::{
    EmbeddingBatch, EmbeddingFormat, EmbeddingWriter, Series, TextRowReader, count_rows,
    read_embeddings,
};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::EmbedSettings;
use crate::JobError;
use crate::write_atomic;
use graft_config::{ModelSource, image_preprocess};
use graft_engine::provision::{runtime_library, runtime_manifest};
use graft_report::{ModelRecord, RuntimeRecord};

/// Which deterministic share of the rows a job processes: chunks `c` with `c mod count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based index of this shard.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `I/N` (e.g. `3/8`; `I` counts from 0).
    fn from_str(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not of the form I/N (e.g. 0/4)"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{v}` in `{s}` is not a {what}"))
        };
        let (index, count) = (parse(i, "shard index")?, parse(n, "shard count")?);
        if count == 0 || index >= count {
            return Err(format!(
                "`{s}`: the index counts from 0 and must be below the count (e.g. 0/{n} … {}/{n})",
                count.max(1) - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The whole input, as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The part file this shard writes inside a job's output folder.
    pub fn part_file_name(self) -> String {
        format!("part-{:05}-of-{:05}.parquet", self.index, self.count)
    }

    fn owns(self, chunk: u64) -> bool {
        chunk % u64::from(self.count) == u64::from(self.index)
    }
}

/// A batch extraction job.
#[derive(Debug, Clone)]
pub struct ExtractJob {
    /// The backbone and how it runs: model, text settings (pooling, truncation, prompt…), batch size,
    /// threads and sessions (text: a chunk's batches are shared out among the sessions; images: each takes
    /// whole chunks), rows per chunk (the unit of length-sorting, resumption and sharding), provider, cache.
    pub backbone: EmbedSettings,
    /// Image backbones: centre-crop size override (the short side is resized in proportion, as in pipelines).
    pub image_size: Option<u32>,
    /// Image backbones: short-side resize override.
    pub resize: Option<u32>,
    /// Input table: `.csv`, `.tsv`, `.jsonl`/`.ndjson` or `.parquet`.
    pub input: PathBuf,
    /// Column (or JSON key) holding the texts.
    pub text_column: String,
    /// Column copied into the output next to each embedding.
    pub id_column: Option<String>,
    /// Output file (`.parquet` or `.npy`); with a shard, the folder that receives the part files.
    pub output: PathBuf,
    /// The share of the rows this job processes (`None`: all of them, into `output` directly).
    pub shard: Option<Shard>,
    /// Draw a progress bar.
    pub progress: bool,
}

impl ExtractJob {
    /// A job with default settings (batch 64, all cores, 4,096-row chunks, no shard).
    pub fn new(
        model: ModelSource,
        input: impl Into<PathBuf>,
        text_column: impl Into<String>,
        output: impl Into<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> ExtractJob {
        ExtractJob {
            backbone: EmbedSettings::new(model, cache_dir),
            image_size: None,
            resize: None,
            input: input.into(),
            text_column: text_column.into(),
            id_column: None,
            output: output.into(),
            shard: None,
            progress: true,
        }
    }
}

/// Everything that determines a job's output bytes. A work folder or part file made under another identity is
/// never mixed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobIdentity {
    format: u32,
    model: String,
    onnx_sha256: String,
    /// Empty for image backbones.
    tokenizer_sha256: String,
    output_name: String,
    /// Pooling, normalisation, truncation and prompt (text), or the preprocessing (images), as JSON.
    settings: serde_json::Value,
    batch_size: usize,
    chunk_rows: usize,
    input_name: String,
    input_signature: String,
    text_column: String,
    id_column: Option<String>,
}

/// What a finished part or output records beside itself (`<file>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartManifest {
    identity: JobIdentity,
    shard: Shard,
    /// Rows in the whole input.
    input_rows: u64,
    /// Rows in this file.
    rows: u64,
    dimension: usize,
    file_sha256: String,
    stats: PartStats,
}

/// How a part or output came to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum PartStats {
    /// Extracted by one job.
    Extracted(Box<ExtractionRecord>),
    /// Merged from shard parts.
    Merged {
        /// The part files, by shard.
        merged_from: Vec<Option<PathBuf>>,
    },
}

/// What one extract job did, for the manifest beside its output.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExtractionRecord {
    rows_extracted_now: u64,
    rows_resumed: u64,
    seconds: f64,
    extract_seconds: f64,
    rows_per_second: f64,
    /// Inference calls (text; 0 in manifests written before graft counted them, and for images).
    #[serde(default)]
    batches: usize,
    tokens: usize,
    padded_tokens: usize,
    truncated_rows: usize,
    runtime: Option<RuntimeRecord>,
    model: ModelRecord,
    input: PathBuf,
}

/// What [`extract`] did.
#[derive(Debug, Clone)]
pub struct ExtractOutcome {
    /// The file written.
    pub output: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// Rows embedded by this invocation (the rest came from an interrupted run's chunks).
    pub extracted: u64,
    /// Seconds this invocation took.
    pub seconds: f64,
    /// The one-line summary.
    pub summary: String,
}

/// The input's identity: its size and the sha256 of its whole content (read once per start; an edit anywhere
/// in the file makes an interrupted job's chunks useless, and they are discarded).
fn input_signature(path: &Path) -> Result<String, JobError> {
    let io = |source| JobError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let sha256 = graft_stdx::sha256_file(path).map_err(io)?;
    Ok(format!("{len} bytes, sha256 {sha256}"))
}

/// Rows in chunk `c` of an input of `rows` rows.
fn chunk_len(c: u64, rows: u64, chunk_rows: usize) -> usize {
    rows.saturating_sub(c * chunk_rows as u64)
        .min(chunk_rows as u64) as usize
}

fn chunk_path(work: &Path, c: u64) -> PathBuf {
    work.join(format!("chunk-{c:09}.parquet"))
}

/// The sha256 of a finished chunk, written after the chunk: a chunk without one, or whose bytes no longer
/// match it, is extracted again on resume.
fn checksum_path(work: &Path, c: u64) -> PathBuf {
    work.join(format!("verify-{c:09}.sha256"))
}

/// The Parquet key-value metadata of an output: the identity, so the file says what made it.
fn file_metadata(identity: &JobIdentity) -> Vec<(String, String)> {
    vec![(
        "graft.extract".to_owned(),
        serde_json::to_string(identity).expect("identity serialises"),
    )]
}

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
    let mut runtime_record = None;
    let mut provider_used = "none: every chunk was already done".to_owned();
    let mut stats = StreamStats::default();
    let mut extract_seconds = 0.0;
    if !todo.is_empty() {
        let (backbones, record) =
            load_workers(job, &cache, &extractor).map_err(|e| discard_if_no_chunks(&work, e))?;
        runtime_record = Some(record);
        provider_used = backbones[0].execution_provider().to_owned();
        let bar = graft_engine::progress::bar(job.progress, shard_rows, resumed_rows, "rows");
        // Throughput counts reading, tokenizing, inference and writing chunks; not loading the model.
        let extract_clock = Instant::now();
        let mut backbones = backbones;
        stats = stream_chunks(
            job,
            input,
            &todo,
            &mut backbones,
            &work,
            input_rows,
            &identity,
            &bar,
        )
        .map_err(|e| discard_if_no_chunks(&work, e))?;
        extract_seconds = extract_clock.elapsed().as_secs_f64();
        bar.finish_and_clear();
    }

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
    let summary = format!(
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
    );
    Ok(ExtractOutcome {
        output,
        rows: written.rows,
        extracted,
        seconds,
        summary,
    })
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

/// What makes two runs the same job: model, settings, chunking and the input.
fn job_identity(
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
type IdentityModel = (String, String, String, serde_json::Value);

/// The job's rows and its extractor: a folder of images with an image backbone, or a table's text column
/// with a text backbone.
fn open_input(
    job: &ExtractJob,
    cache: &Cache,
) -> Result<(Input, Extractor, IdentityModel), JobError> {
    let registry = graft_assets::Registry::builtin();
    let image_model = match &job.backbone.model {
        ModelSource::Registry(name) => registry.image_models.get(name),
        ModelSource::Files { .. } => None,
    };
    if job.input.is_dir() {
        return open_images(job, cache, registry, image_model);
    }
    if image_model.is_some() {
        return Err(JobError::invalid(
            format!(
                "`{}` is an image backbone; --input must be a folder of images",
                model_label(&job.backbone.model)
            ),
            "give a folder (images at any depth), or a text backbone for a table",
        ));
    }
    if job.text_column.is_empty() {
        return Err(JobError::invalid(
            format!(
                "{} is a table: say which column holds the texts",
                job.input.display()
            ),
            "add --text-column <name>",
        ));
    }
    let reader = TextRowReader::open(&job.input, &job.text_column, job.id_column.as_deref())?;
    let settings = &job.backbone;
    let (model, config) = settings.resolved(cache)?;
    let identity_model = (
        model.onnx.sha256.clone(),
        model.tokenizer.sha256.clone(),
        config.output.clone().unwrap_or_default(),
        serde_json::json!({
            "pooling": config.pooling.name(),
            "normalize": config.normalize,
            "max_length": config.max_length,
            "prompt": job.backbone.prompt,
        }),
    );
    Ok((
        Input::Table(Box::new(reader)),
        Extractor::Text(Box::new(model), config),
        identity_model,
    ))
}

/// A folder of images with a registered image backbone.
fn open_images(
    job: &ExtractJob,
    cache: &Cache,
    registry: &graft_assets::Registry,
    image_model: Option<&graft_assets::ImageModelEntry>,
) -> Result<(Input, Extractor, IdentityModel), JobError> {
    let Some(entry) = image_model else {
        return Err(JobError::invalid(
            format!(
                "{} is a folder of images, and `{}` is not an image backbone",
                job.input.display(),
                model_label(&job.backbone.model)
            ),
            format!(
                "registered image backbones: {}",
                registry.image_model_names().join(", ")
            ),
        ));
    };
    if job.id_column.is_some() {
        return Err(JobError::invalid(
            "--id-column does not apply to a folder of images",
            "each row is identified by `path`, the image's path inside the folder",
        ));
    }
    let files = list_images(&job.input)?;
    let ModelSource::Registry(name) = &job.backbone.model else {
        unreachable!("image backbones come from the registry")
    };
    let model = cache.image_model(name)?;
    let mut preprocess = image_preprocess(&entry.preprocess);
    if let Some(size) = job.image_size {
        preprocess.resize = (f64::from(size) * f64::from(preprocess.resize)
            / f64::from(preprocess.crop))
        .round() as u32;
        preprocess.crop = size;
    }
    if let Some(resize) = job.resize {
        preprocess.resize = resize;
    }
    let config = ImageBackboneConfig {
        preprocess,
        output: entry.output.clone(),
        batch_size: job.backbone.batch_size,
        intra_threads: job.backbone.threads,
        progress: false,
        provider: job.backbone.provider,
    };
    let p = &config.preprocess;
    let description = serde_json::json!({
        "input": p.input, "resize": p.resize, "crop": p.crop, "mean": p.mean, "std": p.std,
        "layout": format!("{:?}", p.layout).to_lowercase(), "dtype": format!("{:?}", p.dtype).to_lowercase(),
        "bgr": p.bgr,
    });
    let sha = model.onnx.sha256.clone();
    Ok((
        Input::Images {
            root: job.input.clone(),
            files,
        },
        Extractor::Image(Box::new(model), config),
        (sha, String::new(), entry.output.clone(), description),
    ))
}

/// The work folder: resumed if it belongs to this very job; an abandoned one made with other settings or
/// another input is of no use and is discarded. The caller holds the output's [`OutputLock`].
fn claim_work_dir(output: &Path, identity: &JobIdentity) -> Result<PathBuf, JobError> {
    let work = work_dir(output);
    let identity_file = work.join("job.json");
    if work.exists() {
        let theirs: Option<JobIdentity> = std::fs::read(&identity_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if theirs.as_ref() != Some(identity) {
            tracing::warn!(
                work = %work.display(),
                "discarding an interrupted job made with other settings or another input"
            );
            std::fs::remove_dir_all(&work).map_err(JobError::io(&work))?;
        }
    }
    if !work.exists() {
        std::fs::create_dir_all(&work).map_err(JobError::io(&work))?;
        write_atomic(
            &identity_file,
            &serde_json::to_vec_pretty(identity).expect("identity serialises"),
        )?;
    }
    Ok(work)
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

/// An interrupted job's work folder that holds no finished chunk is of no use to a resume: removed when
/// the job fails, so that a failed start leaves nothing behind.
fn discard_if_no_chunks(work: &Path, e: JobError) -> JobError {
    let has_chunks = std::fs::read_dir(work).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with("chunk-"))
    });
    if !has_chunks {
        let _ = std::fs::remove_dir_all(work);
    }
    e
}

/// One process per output, decided before anything is read or written: a lock file beside the output,
/// created if missing, locked for the whole job and removed (while still held) when the job ends.
/// (Locking `job.json` inside the work folder raced: a second process could find the folder before its
/// `job.json` existed and discard it.)
struct OutputLock {
    path: PathBuf,
    file: std::fs::File,
}

impl OutputLock {
    fn take(output: &Path) -> Result<OutputLock, JobError> {
        let path = lock_path(output);
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(JobError::io(&path))?;
            if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
                return Err(JobError::invalid(
                    format!("another extract is writing {} right now", output.display()),
                    "wait for it to finish (running the same command afterwards is a no-op), or stop it and run again to resume",
                ));
            }
            // The holder before us removes the file as it ends: a lock on a removed file guards nothing,
            // so it counts only while the path still names the file we locked.
            if same_file(&file, &path) {
                return Ok(OutputLock { path, file });
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while held: a process waiting on this file sees it gone and opens a fresh one.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

/// The hidden lock file beside an output: held while a job writes it.
fn lock_path(output: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(output.file_name().unwrap_or_default());
    name.push(".lock");
    output.with_file_name(name)
}

/// Chunks finished by an earlier, interrupted run. A file exists only once complete (it is renamed into
/// place); one whose row count is off is recomputed.
fn finished_chunks(
    work: &Path,
    mine: &[u64],
    input_rows: u64,
    chunk_rows: usize,
) -> Result<std::collections::BTreeSet<u64>, JobError> {
    let mut done = std::collections::BTreeSet::new();
    for &c in mine {
        let path = chunk_path(work, c);
        if !path.exists() {
            continue;
        }
        let recorded = std::fs::read_to_string(checksum_path(work, c)).ok();
        let intact = recorded
            .is_some_and(|r| graft_stdx::sha256_file(&path).is_ok_and(|actual| actual == r.trim()))
            && count_rows(&path).is_ok_and(|n| n == chunk_len(c, input_rows, chunk_rows) as u64);
        if intact {
            done.insert(c);
        } else {
            tracing::warn!(
                chunk = %path.display(),
                "a finished chunk is damaged or unverified; extracting it again"
            );
            std::fs::remove_file(&path).map_err(JobError::io(&path))?;
        }
    }
    Ok(done)
}

/// ONNX Runtime and the workers. Text: one backbone whose sessions share out each chunk's batches (so small
/// inputs with few chunks still use every session). Images: one backbone per session, each taking whole
/// chunks.
fn load_workers(
    job: &ExtractJob,
    cache: &Cache,
    extractor: &Extractor,
) -> Result<(Vec<Worker>, RuntimeRecord), JobError> {
    let choice = runtime_library(cache, job.backbone.provider)?;
    let runtime = Runtime::load(&choice.library.path)?;
    // Text: one backbone whose sessions share out each chunk's batches (so small inputs with few chunks
    // still use every session). Images: one backbone per session, each taking whole chunks.
    let backbones: Vec<Worker> = match extractor {
        Extractor::Text(model, config) => vec![Worker::Text(TextBackbone::load(
            &runtime,
            &model.onnx.path,
            &model.tokenizer.path,
            TextBackboneConfig {
                provider: choice.provider,
                intra_threads: job.backbone.threads,
                sessions: job.backbone.sessions,
                ..config.clone()
            },
        )?)],
        Extractor::Image(model, config) => (0..job.backbone.sessions)
            .map(|s| {
                ImageBackbone::load(
                    &runtime,
                    &model.onnx.path,
                    ImageBackboneConfig {
                        provider: choice.provider,
                        intra_threads: session_threads(
                            job.backbone.threads,
                            job.backbone.sessions,
                            s,
                        ),
                        ..config.clone()
                    },
                )
                .map(Worker::Image)
            })
            .collect::<Result<_, _>>()?,
    };
    let mut record = runtime_manifest(
        &choice,
        &runtime,
        backbones[0].execution_provider(),
        backbones[0].provider_fallback(),
        job.backbone.threads,
    );
    record.sessions = Some(job.backbone.sessions);
    Ok((backbones, record))
}

/// The model as the job is made: registered name and settings, or own files.
enum Extractor {
    Text(
        Box<graft_engine::provision::ResolvedModel>,
        TextBackboneConfig,
    ),
    Image(Box<graft_assets::ImageModelFiles>, ImageBackboneConfig),
}

impl Extractor {
    /// The model as the output's manifest records it.
    fn record(&self) -> ModelRecord {
        match self {
            Extractor::Text(model, _) => model.record.clone(),
            Extractor::Image(model, _) => ModelRecord {
                name: Some(model.name.clone()),
                onnx: Some(graft_engine::provision::file_record(&model.onnx)),
                ..ModelRecord::default()
            },
        }
    }
}

/// A registry name, or (own files) the graph's file name: shards that mount the model elsewhere still agree.
fn model_label(model: &ModelSource) -> String {
    match model {
        ModelSource::Registry(name) => name.clone(),
        ModelSource::Files { onnx, .. } => onnx
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// A folder's identity without reading every image: relative names and sizes.
fn folder_signature(root: &Path, files: &[PathBuf]) -> String {
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

/// The input's data rows (a table's counted, which checks every row); none is an error.
fn input_rows(input: &Input, job: &ExtractJob) -> Result<u64, JobError> {
    let rows = match input {
        Input::Table(reader) => match reader.known_rows() {
            Some(rows) => rows,
            None => count_rows(&job.input)?,
        },
        Input::Images { files, .. } => files.len() as u64,
    };
    if rows == 0 {
        return Err(JobError::invalid(
            format!("{} has no data rows", job.input.display()),
            "check the file",
        ));
    }
    Ok(rows)
}

/// A shard that owns no chunk (more shards than chunks: a fixed-size array job on a small input): its manifest
/// alone records the empty share for `merge` (no part file: there are no rows to hold), and the job succeeds.
fn empty_share(
    output: PathBuf,
    identity: &JobIdentity,
    (shard, input_rows, chunks): (Shard, u64, u64),
    extractor: &Extractor,
    job: &ExtractJob,
    started: Instant,
) -> Result<ExtractOutcome, JobError> {
    let manifest = PartManifest {
        identity: identity.clone(),
        shard,
        input_rows,
        rows: 0,
        dimension: 0,
        file_sha256: String::new(),
        stats: PartStats::Extracted(Box::new(ExtractionRecord {
            rows_extracted_now: 0,
            rows_resumed: 0,
            seconds: 0.0,
            extract_seconds: 0.0,
            rows_per_second: 0.0,
            batches: 0,
            tokens: 0,
            padded_tokens: 0,
            truncated_rows: 0,
            runtime: None,
            model: extractor.record(),
            input: job.input.clone(),
        })),
    };
    write_atomic(
        &sidecar(&output),
        &serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
    )?;
    let summary = format!(
        "shard {}/{}: no rows ({input_rows} rows make {chunks} chunks of {}, and chunk c goes to shard c mod {}); \
         {} records the empty share for merge",
        shard.index,
        shard.count,
        job.backbone.chunk_rows,
        shard.count,
        sidecar(&output).display()
    );
    Ok(ExtractOutcome {
        output,
        rows: 0,
        extracted: 0,
        seconds: started.elapsed().as_secs_f64(),
        summary,
    })
}

/// Removes temporary files that a killed run of this job left beside the output (`.<name>.tmp-<pid>`,
/// `.<name>.json.tmp-<pid>`); the caller holds the job's lock, so no live process is writing them.
fn remove_stale_temporaries(output: &Path) {
    let removed = graft_stdx::atomic::remove_stale(output)
        + graft_stdx::atomic::remove_stale(&sidecar(output));
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files left by an interrupted run"
        );
    }
}

/// `<output>.json`: the manifest beside a finished file.
fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    output.with_file_name(name)
}

/// The hidden folder where an unfinished job keeps its chunks.
fn work_dir(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.partial"))
}

/// The manifest of `output` if it is complete and was made by this job.
fn finished_manifest(
    output: &Path,
    identity: &JobIdentity,
    shard: Shard,
) -> Result<Option<PartManifest>, JobError> {
    let Ok(bytes) = std::fs::read(sidecar(output)) else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<PartManifest>(&bytes) else {
        return Ok(None);
    };
    if manifest.identity != *identity || manifest.shard != shard || !output.exists() {
        return Ok(None);
    }
    let actual = graft_assets::sha256_file(output).map_err(JobError::io(output))?;
    Ok((actual == manifest.file_sha256).then_some(manifest))
}

#[derive(Debug, Default)]
struct StreamStats {
    batches: usize,
    tokens: usize,
    padded_tokens: usize,
    truncated_rows: usize,
}

/// Where a job's rows come from.
enum Input {
    /// The text (and id) column of a table, streamed.
    Table(Box<TextRowReader>),
    /// The image files of a folder (recursively, sorted), named by their path relative to `root`.
    Images { root: PathBuf, files: Vec<PathBuf> },
}

/// A session of the job's modality.
enum Worker {
    Text(TextBackbone),
    Image(ImageBackbone),
}

impl Worker {
    fn execution_provider(&self) -> &'static str {
        match self {
            Worker::Text(b) => b.execution_provider(),
            Worker::Image(b) => b.execution_provider(),
        }
    }

    fn provider_fallback(&self) -> Option<&str> {
        match self {
            Worker::Text(b) => b.provider_fallback(),
            Worker::Image(b) => b.provider_fallback(),
        }
    }
}

/// A chunk ready for inference: tokenized texts, or the images to decode.
enum Prepared {
    Texts(EncodedTexts),
    Images(Vec<ImageSource>),
}

impl Prepared {
    fn len(&self) -> usize {
        match self {
            Prepared::Texts(e) => e.len(),
            Prepared::Images(i) => i.len(),
        }
    }
}

struct Tokenized {
    chunk: u64,
    first_row: u64,
    ids: Option<Series>,
    encoded: Prepared,
}

/// Image files under `root`, at any depth, sorted by path.
fn list_images(root: &Path) -> Result<Vec<PathBuf>, JobError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(JobError::io(&dir))? {
            let path = entry.map_err(JobError::io(&dir))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
/// The reader's step for chunk `c`: the chunk read and tokenized (images: named) when this job wants it;
/// `None` when the chunk is skipped (another shard's, or finished earlier).
fn read_chunk(
    input: &mut Input,
    c: u64,
    wanted: bool,
    job: &ExtractJob,
    tokenizer: Option<&graft_backbone::TextTokenizer>,
    prompt: Option<&str>,
) -> Option<Result<Tokenized, JobError>> {
    let chunk_rows = job.backbone.chunk_rows;
    Some(match input {
        Input::Table(reader) if wanted => match reader.next_chunk(chunk_rows) {
            Ok(Some(chunk)) => tokenizer
                .as_ref()
                .expect("a table is read for a text backbone")
                .encode(&match prompt {
                    Some(p) => chunk
                        .texts
                        .iter()
                        .map(|t| graft_config::apply_prompt(p, t))
                        .collect::<Vec<_>>(),
                    None => chunk.texts.clone(),
                })
                .map(|encoded| Tokenized {
                    chunk: c,
                    first_row: chunk.first_row,
                    ids: chunk.ids,
                    encoded: Prepared::Texts(encoded),
                })
                .map_err(JobError::from),
            Ok(None) => Err(JobError::invalid(
                format!(
                    "{} ended before row {}",
                    job.input.display(),
                    c * chunk_rows as u64
                ),
                "the input changed while the job ran; run it again",
            )),
            Err(e) => Err(e.into()),
        },
        Input::Table(reader) => match reader.skip(chunk_rows) {
            Ok(_) => return None,
            Err(e) => Err(e.into()),
        },
        Input::Images { root, files } if wanted => {
            let first = c as usize * chunk_rows;
            let slice = &files[first..(first + chunk_rows).min(files.len())];
            let names: Vec<String> = slice
                .iter()
                .map(|f| f.strip_prefix(&*root).unwrap_or(f).display().to_string())
                .collect();
            Ok(Tokenized {
                chunk: c,
                first_row: first as u64,
                ids: Some(graft_ingest::string_series("path", names)),
                encoded: Prepared::Images(slice.iter().cloned().map(ImageSource::File).collect()),
            })
        }
        Input::Images { .. } => return None,
    })
}

/// Reads, tokenizes, embeds and writes the `todo` chunks, with reading+tokenizing and writing on their own
/// threads so that inference never waits for them.
#[allow(clippy::too_many_arguments)]
fn stream_chunks(
    job: &ExtractJob,
    mut input: Input,
    todo: &[u64],
    backbones: &mut [Worker],
    work: &Path,
    input_rows: u64,
    identity: &JobIdentity,
    bar: &ProgressBar,
) -> Result<StreamStats, JobError> {
    let tokenizer = match &backbones[0] {
        Worker::Text(b) => Some(b.tokenizer()),
        Worker::Image(_) => None,
    };
    let failed = std::sync::atomic::AtomicBool::new(false);
    let failed = &failed;
    let chunk_rows = job.backbone.chunk_rows;
    let wanted: std::collections::BTreeSet<u64> = todo.iter().copied().collect();
    let last = *todo.last().expect("todo is not empty");
    let metadata = file_metadata(identity);
    // Depth 1 on each side: memory holds at most ~4 chunks (reading, queued, in inference, writing).
    let (to_infer, from_reader): (SyncSender<Result<Tokenized, JobError>>, Receiver<_>) =
        sync_channel(1);
    let (to_write, from_infer): (SyncSender<EmbeddingBatch>, Receiver<EmbeddingBatch>) =
        sync_channel(1);
    // Taken (and so dropped) once inference ends, so that a reader blocked on a full queue wakes up with an
    // error instead of waiting forever for sessions that are gone (e.g. after the writer hit a full disk).
    let from_reader = std::sync::Mutex::new(Some(from_reader));
    let stats = std::sync::Mutex::new(StreamStats::default());
    let prompt = job.backbone.prompt.clone();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut c = 0u64;
            while c <= last && !failed.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(step) = read_chunk(
                    &mut input,
                    c,
                    wanted.contains(&c),
                    job,
                    tokenizer.as_ref(),
                    prompt.as_deref(),
                ) else {
                    c += 1;
                    continue;
                };
                let failed = step.is_err();
                if to_infer.send(step).is_err() || failed {
                    return;
                }
                c += 1;
            }
        });
        let writer = scope.spawn(move || -> Result<(), JobError> {
            for batch in from_infer {
                let c = batch.first_row / chunk_rows as u64;
                let path = chunk_path(work, c);
                let mut out = EmbeddingWriter::create(
                    &path,
                    batch.embeddings.ncols(),
                    batch
                        .ids
                        .as_ref()
                        .map(|s| (s.name().to_string(), s.dtype().clone())),
                    None,
                    metadata.clone(),
                )?;
                out.write(&batch)?;
                out.finish()?;
                let digest = graft_stdx::sha256_file(&path).map_err(JobError::io(&path))?;
                write_atomic(&checksum_path(work, c), digest.as_bytes())?;
            }
            Ok(())
        });
        // Each session takes the next tokenized chunk when it is free; chunks are independent files, so the
        // order in which they finish does not matter.
        let workers: Vec<_> = backbones
            .iter_mut()
            .map(|backbone| {
                let to_write = to_write.clone();
                let (from_reader, stats) = (&from_reader, &stats);
                scope.spawn(move || -> Result<(), JobError> {
                    let result = infer_chunks(
                        job,
                        backbone,
                        from_reader,
                        &to_write,
                        stats,
                        input_rows,
                        bar,
                    );
                    if result.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        drop(to_write);
        let inference: Vec<Result<(), JobError>> = workers
            .into_iter()
            .map(|w| w.join().expect("an inference thread does not panic"))
            .collect();
        failed.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(
            from_reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let written = writer.join().expect("the writer thread does not panic");
        for result in inference {
            result?;
        }
        written
    })?;
    Ok(stats
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// One inference session's loop: take a tokenized chunk, embed it, hand it to the writer.
#[allow(clippy::too_many_arguments)]
fn infer_chunks(
    job: &ExtractJob,
    backbone: &mut Worker,
    from_reader: &std::sync::Mutex<Option<Receiver<Result<Tokenized, JobError>>>>,
    to_write: &SyncSender<EmbeddingBatch>,
    stats: &std::sync::Mutex<StreamStats>,
    input_rows: u64,
    bar: &ProgressBar,
) -> Result<(), JobError> {
    loop {
        let next = from_reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(Receiver::recv);
        let Some(Ok(item)) = next else {
            return Ok(()); // the reader is done
        };
        let item = item?;
        let expected = chunk_len(item.chunk, input_rows, job.backbone.chunk_rows);
        if item.encoded.len() != expected {
            return Err(JobError::invalid(
                format!(
                    "chunk {} of {} has {} rows, expected {expected}",
                    item.chunk,
                    job.input.display(),
                    item.encoded.len()
                ),
                "the input changed while the job ran; run it again",
            ));
        }
        let embeddings = match (&mut *backbone, &item.encoded) {
            (Worker::Text(backbone), Prepared::Texts(encoded)) => {
                let (embeddings, s) =
                    backbone.embed_encoded(encoded, |rows| bar.inc(rows as u64))?;
                let mut stats = stats
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                stats.batches += s.batches;
                stats.tokens += s.tokens;
                stats.padded_tokens += s.padded_tokens;
                stats.truncated_rows += s.truncated_rows;
                embeddings
            }
            (Worker::Image(backbone), Prepared::Images(images)) => {
                let (embeddings, _) = backbone.embed(images)?;
                bar.inc(images.len() as u64);
                embeddings
            }
            _ => unreachable!("the reader prepares what the sessions take"),
        };
        let batch = EmbeddingBatch {
            first_row: item.first_row,
            ids: item.ids,
            embeddings,
        };
        if to_write.send(batch).is_err() {
            // The writer stopped: its error is reported by the caller.
            return Ok(());
        }
    }
}

/// Where the rows of one chunk come from when assembling an output.
enum ChunkSource {
    /// A chunk file of the work folder.
    File(PathBuf),
    /// Rows `[offset, offset + len)` of a part file.
    Slice(PathBuf, u64, usize),
}

struct Written {
    rows: u64,
    dimension: usize,
    bytes: u64,
}

/// Copies chunks, in order, into `output` and writes its manifest beside it.
fn assemble(
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

#[cfg(test)]
mod tests {
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
