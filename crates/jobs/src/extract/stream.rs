//! The thread pipeline: one thread reads and tokenizes the next chunk, one runs inference, one writes
//! finished chunks; the model's sessions are loaded once per job.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use graft_assets::Cache;
use graft_backbone::{
    EncodedTexts, ImageBackbone, ImageBackboneConfig, ImageSource, Runtime, TextBackbone,
    TextBackboneConfig, session_threads,
};
use graft_ingest::{EmbeddingBatch, EmbeddingWriter, Series, TextRowReader, count_rows};
use indicatif::ProgressBar;

use super::identity::{IdentityModel, file_metadata, model_label};
use super::job::{
    ExtractJob, ExtractOutcome, ExtractionRecord, Input, JobIdentity, PartManifest, PartStats,
    Shard,
};
use super::workdir::{checksum_path, chunk_len, chunk_path, sidecar};
use crate::JobError;
use crate::write_atomic;
use graft_config::{ModelSource, image_preprocess};
use graft_engine::provision::{runtime_library, runtime_manifest};
use graft_report::{ModelRecord, RuntimeRecord};

/// The job's rows and its extractor: a folder of images with an image backbone, or a table's text column
/// with a text backbone.
pub(crate) fn open_input(
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
            "prompt": job.backbone.prompt_in_effect(),
            // Absent when truncating, so the outputs of earlier versions resume.
            "long_texts": match config.long_texts {
                graft_backbone::LongTexts::Truncate => serde_json::Value::Null,
                graft_backbone::LongTexts::Chunks { stride, pooling } => serde_json::json!({
                    "stride": stride,
                    "chunk_pooling": pooling.name(),
                }),
            },
        }),
    );
    Ok((
        Input::Table(Box::new(reader)),
        Extractor::Text(Box::new(model), config),
        identity_model,
    ))
}

/// A folder of images with a registered image backbone.
pub(crate) fn open_images(
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

/// ONNX Runtime and the workers. Text: one backbone whose sessions share out each chunk's batches (so small
/// inputs with few chunks still use every session). Images: one backbone per session, each taking whole
/// chunks.
pub(crate) fn load_workers(
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
pub(crate) enum Extractor {
    Text(
        Box<graft_engine::provision::ResolvedModel>,
        TextBackboneConfig,
    ),
    Image(Box<graft_assets::ImageModelFiles>, ImageBackboneConfig),
}

impl Extractor {
    /// The model as the output's manifest records it.
    pub(crate) fn record(&self) -> ModelRecord {
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

/// The input's data rows (a table's counted, which checks every row); none is an error.
pub(crate) fn input_rows(input: &Input, job: &ExtractJob) -> Result<u64, JobError> {
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
pub(crate) fn empty_share(
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
            long_rows: 0,
            sequences: 0,
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

#[derive(Debug, Default)]
pub(crate) struct StreamStats {
    pub(crate) batches: usize,
    pub(crate) tokens: usize,
    pub(crate) padded_tokens: usize,
    pub(crate) truncated_rows: usize,
    pub(crate) long_rows: usize,
    pub(crate) sequences: usize,
}

/// A session of the job's modality.
pub(crate) enum Worker {
    Text(TextBackbone),
    Image(ImageBackbone),
}

impl Worker {
    pub(crate) fn execution_provider(&self) -> &'static str {
        match self {
            Worker::Text(b) => b.execution_provider(),
            Worker::Image(b) => b.execution_provider(),
        }
    }

    pub(crate) fn provider_fallback(&self) -> Option<&str> {
        match self {
            Worker::Text(b) => b.provider_fallback(),
            Worker::Image(b) => b.provider_fallback(),
        }
    }
}

/// A chunk ready for inference: tokenized texts, or the images to decode.
pub(crate) enum Prepared {
    Texts(EncodedTexts),
    Images(Vec<ImageSource>),
}

impl Prepared {
    pub(crate) fn len(&self) -> usize {
        match self {
            Prepared::Texts(e) => e.len(),
            Prepared::Images(i) => i.len(),
        }
    }
}

pub(crate) struct Tokenized {
    pub(crate) chunk: u64,
    pub(crate) first_row: u64,
    pub(crate) ids: Option<Series>,
    pub(crate) encoded: Prepared,
}

/// Image files under `root`, at any depth, sorted by path.
pub(crate) fn list_images(root: &Path) -> Result<Vec<PathBuf>, JobError> {
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
pub(crate) fn read_chunk(
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
pub(crate) fn stream_chunks(
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
    let prompt = job.backbone.prompt_in_effect();
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
pub(crate) fn infer_chunks(
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
                stats.long_rows += s.long_rows;
                stats.sequences += s.sequences;
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
