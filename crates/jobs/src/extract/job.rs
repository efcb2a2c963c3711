//! What an extraction job is: its settings, its shard of the rows, its input, the identity that ties
//! chunks to one job, and the records it leaves (the sidecar manifest, the outcome).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::EmbedSettings;
use graft_config::ModelSource;
use graft_ingest::TextRowReader;
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

    pub(crate) fn owns(self, chunk: u64) -> bool {
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
pub(crate) struct JobIdentity {
    pub(crate) format: u32,
    pub(crate) model: String,
    pub(crate) onnx_sha256: String,
    /// Empty for image backbones.
    pub(crate) tokenizer_sha256: String,
    pub(crate) output_name: String,
    /// Pooling, normalisation, truncation and prompt (text), or the preprocessing (images), as JSON.
    pub(crate) settings: serde_json::Value,
    pub(crate) batch_size: usize,
    pub(crate) chunk_rows: usize,
    pub(crate) input_name: String,
    pub(crate) input_signature: String,
    pub(crate) text_column: String,
    pub(crate) id_column: Option<String>,
}

/// What a finished part or output records beside itself (`<file>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartManifest {
    pub(crate) identity: JobIdentity,
    pub(crate) shard: Shard,
    /// Rows in the whole input.
    pub(crate) input_rows: u64,
    /// Rows in this file.
    pub(crate) rows: u64,
    pub(crate) dimension: usize,
    pub(crate) file_sha256: String,
    pub(crate) stats: PartStats,
}

/// How a part or output came to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum PartStats {
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
pub(crate) struct ExtractionRecord {
    pub(crate) rows_extracted_now: u64,
    pub(crate) rows_resumed: u64,
    pub(crate) seconds: f64,
    pub(crate) extract_seconds: f64,
    pub(crate) rows_per_second: f64,
    /// Inference calls (text; 0 in manifests written before graft counted them, and for images).
    #[serde(default)]
    pub(crate) batches: usize,
    pub(crate) tokens: usize,
    pub(crate) padded_tokens: usize,
    pub(crate) truncated_rows: usize,
    /// Texts longer than `max_length` (truncated, or chunked into windows); 0 in older manifests.
    #[serde(default)]
    pub(crate) long_rows: usize,
    /// Token sequences embedded: texts, or windows when chunking; 0 in older manifests.
    #[serde(default)]
    pub(crate) sequences: usize,
    pub(crate) runtime: Option<RuntimeRecord>,
    pub(crate) model: ModelRecord,
    pub(crate) input: PathBuf,
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

/// Where a job's rows come from.
pub(crate) enum Input {
    /// The text (and id) column of a table, streamed.
    Table(Box<TextRowReader>),
    /// The image files of a folder (recursively, sorted), named by their path relative to `root`.
    Images { root: PathBuf, files: Vec<PathBuf> },
}
