//! The run folder's records besides `metrics.json`: `manifest.json` and each head's `heads/<name>.json`.
//! The same types write and read them; readers check the format version first.

use std::path::{Path, PathBuf};

use graft_schema::resolved::{BackboneSettings, HeadSettings, ResolvedPipeline, TransformSettings};
use serde::{Deserialize, Serialize};

/// The version of the run-folder format this build writes and reads (`manifest.json` `format`).
pub const RUN_FORMAT: u32 = 1;

/// The version of the head-artefact format (`heads/<name>.json` `format_version`).
pub const HEAD_FORMAT: u32 = 1;

/// A file graft used, as it was when used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Where it was: in a manifest, the path on the machine of the run; in a head's description, relative
    /// to the cache for a registered backbone (its name and sha256 identify it) or to the run folder for a
    /// graph a stage wrote there.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Whether this run fetched it (rather than finding it in the cache).
    pub fetched_now: bool,
}

/// The backbone's files (or the given features file).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Registry name (`None` for the user's own files).
    pub name: Option<String>,
    /// Registry licence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Output dimension, when known before extraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<usize>,
    /// The ONNX graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<FileRecord>,
    /// The tokenizer (text backbones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<FileRecord>,
    /// The float32 weights the graph was written from (models published as safetensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<FileRecord>,
    /// Given features: the file they came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FileRecord>,
    /// Given features in Parquet: the column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_column: Option<String>,
    /// Operators of the graph that make a row's output depend on the rows sharing its batch (dynamic
    /// activation quantisation: `DynamicQuantizeLinear`, …); empty for a batch-invariant graph.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_dependent_ops: Vec<String>,
}

/// ONNX Runtime as loaded, and where inference really ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// The library file.
    pub library: FileRecord,
    /// The path the loader used.
    pub loaded: PathBuf,
    /// `ORT_DYLIB_PATH` or `provisioned by graft`.
    pub source: String,
    /// Its version.
    pub version: String,
    /// ONNX Runtime's own build description.
    pub build_info: String,
    /// The provider asked for.
    pub provider_requested: String,
    /// The provider that ran.
    pub execution_provider: String,
    /// Why they differ, when they do.
    pub provider_fallback: Option<String>,
    /// Intra-op threads.
    pub intra_threads: usize,
    /// Sessions sharing the threads (batch jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    /// ONNX Runtime's own telemetry: `off` (graft's default: `ORT_DISABLE_TELEMETRY=1` and
    /// `DisableTelemetryEvents`) or `on` (`GRAFT_ONNXRUNTIME_TELEMETRY=1`); `None` in runs written before graft
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<String>,
}

/// What the feature cache gave and took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureCacheRecord {
    /// Whether the cache was used.
    pub enabled: bool,
    /// Text: the namespace folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<PathBuf>,
    /// Images: one namespace per view (`None` where the cache is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<Option<PathBuf>>>,
    /// Rows found in the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<usize>,
    /// Rows extracted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<usize>,
    /// Damaged chunks skipped (their rows were extracted again).
    pub rejected_chunks: usize,
    /// Whether rows from the cache are exactly what extracting them now would give: true for a
    /// batch-invariant graph; false when the graph quantises activations per batch (rows cached from other
    /// batches then differ slightly from fresh ones; `cache = false` gives single-pass features).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_invariant: Option<bool>,
}

/// The pipeline file as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// Its path.
    pub file: PathBuf,
    /// sha256 of its text.
    pub sha256: String,
    /// Every setting, defaults filled in.
    pub resolved: ResolvedPipeline,
}

/// The data as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// What it is, in words.
    pub source: String,
    /// The file read.
    pub file: FileRecord,
    /// Rows read.
    pub rows_read: usize,
    /// Rows dropped for a missing text.
    pub dropped_null_text: usize,
    /// Rows dropped for a missing label.
    pub dropped_null_label: usize,
    /// Rows left out by `sample`.
    pub not_sampled: usize,
    /// Classes in output order.
    pub classes: Vec<String>,
}

/// The machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// Logical CPUs.
    pub cpus: usize,
}

impl HostRecord {
    /// This machine.
    pub fn this() -> HostRecord {
        HostRecord {
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// `manifest.json`: what a run used and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run-folder format ([`RUN_FORMAT`]).
    pub format: u32,
    /// graft's version.
    pub graft_version: String,
    /// The pipeline.
    pub pipeline: PipelineRecord,
    /// The seed.
    pub seed: u64,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// UTC, RFC 3339.
    pub finished_at: String,
    /// The data.
    pub data: DataRecord,
    /// The backbone's files (or the given features).
    pub backbone: ModelRecord,
    /// ONNX Runtime (none when nothing was extracted).
    pub runtime: Option<RuntimeRecord>,
    /// The feature cache (none for given features).
    pub feature_cache: Option<FeatureCacheRecord>,
    /// The transform.
    pub transform: Option<TransformSettings>,
    /// The heads as the pipeline declares them (a search's winner is in `metrics.json` `search`).
    pub heads: Vec<HeadSettings>,
    /// The machine.
    pub host: HostRecord,
    /// sha256 of every other file of the run folder, by its path in the folder (`heads/logistic.json`, …):
    /// readers refuse a head whose files were changed after the run.
    #[serde(default)]
    pub artefacts: std::collections::BTreeMap<String, String>,
}

/// Why a run folder or head artefact cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the JSON this type reads.
    #[error("{}: not a graft {what} ({problem})", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
        /// serde's account.
        problem: String,
    },
    /// A file of a run folder whose sha256 is not the one `manifest.json` records.
    #[error(
        "{} changed after the run: its sha256 is not the one manifest.json records",
        path.display()
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer graft.
    #[error(
        "{}: {what} format {found}, but this graft reads format {supported}; use the graft version that wrote it ({writer})",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// What it is.
        what: &'static str,
        /// Its format.
        found: u32,
        /// Ours.
        supported: u32,
        /// The graft version that wrote it.
        writer: String,
    },
}

/// Reads a JSON record, naming the file in every error.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, ArtefactError> {
    let bytes = std::fs::read(path).map_err(|source| ArtefactError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ArtefactError::Invalid {
        path: path.to_path_buf(),
        what,
        problem: e.to_string(),
    })
}

/// The version key and writer of a record, read before the rest so that a newer format gets the version
/// error, not a confusing field error.
#[derive(Deserialize)]
struct RunVersion {
    format: Option<u32>,
    #[serde(default)]
    graft_version: Option<String>,
}

#[derive(Deserialize)]
struct HeadVersion {
    format_version: Option<u32>,
    #[serde(default)]
    graft_version: Option<String>,
}

fn check_version(
    path: &Path,
    what: &'static str,
    key: &str,
    found: (Option<u32>, Option<String>),
    supported: u32,
) -> Result<(), ArtefactError> {
    match found {
        (Some(v), _) if v == supported => Ok(()),
        (Some(v), writer) => Err(ArtefactError::Version {
            path: path.to_path_buf(),
            what,
            found: v,
            supported,
            writer: writer.unwrap_or_else(|| "unknown".to_owned()),
        }),
        (None, _) => Err(ArtefactError::Invalid {
            path: path.to_path_buf(),
            what,
            problem: format!("no `{key}` version key"),
        }),
    }
}

impl Manifest {
    /// Reads `<run_dir>/manifest.json`, refusing other format versions.
    pub fn read(run_dir: &Path) -> Result<Manifest, ArtefactError> {
        let path = run_dir.join("manifest.json");
        let v: RunVersion = read_json(&path, "run manifest")?;
        check_version(
            &path,
            "run manifest",
            "format",
            (v.format, v.graft_version),
            RUN_FORMAT,
        )?;
        read_json(&path, "run manifest")
    }

    /// Checks `<run_dir>/<name>` against the sha256 this manifest records for it (runs written before
    /// checksums were recorded have none, and pass).
    pub fn verify(&self, run_dir: &Path, name: &str) -> Result<(), ArtefactError> {
        let Some(recorded) = self.artefacts.get(name) else {
            return Ok(());
        };
        let path = run_dir.join(name);
        let actual = graft_stdx::sha256_file(&path).map_err(|source| ArtefactError::Io {
            path: path.clone(),
            source,
        })?;
        if actual != *recorded {
            return Err(ArtefactError::Changed { path });
        }
        Ok(())
    }
}

/// A head's record of its own training, as `heads/<name>.json` holds it next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadArtefact {
    /// Always `graft-head`.
    pub format: String,
    /// [`HEAD_FORMAT`].
    pub format_version: u32,
    /// graft's version.
    pub graft_version: String,
    /// The head's settings.
    pub head: HeadSettings,
    /// The weights file, beside this one.
    pub weights: String,
    /// Its sha256.
    pub weights_sha256: String,
    /// Classes (labels, for multi-label heads) in output order.
    pub classes: Vec<String>,
    /// Features in.
    pub input_dimension: usize,
    /// Fitted temperature (`calibrate`).
    pub temperature: Option<f64>,
    /// Multi-label heads: thresholds and the label separator.
    pub multi_label: Option<MultiLabelRecord>,
    /// The backbone whose features the head takes.
    pub backbone: BackboneRecord,
    /// sha256 of its graph (or of the given features file).
    pub backbone_sha256: String,
    /// What the weights file needs besides tensors.
    pub extra: HeadExtra,
}

/// A multi-label head's decision rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelRecord {
    /// One threshold per label.
    pub thresholds: Vec<f32>,
    /// The separator of label sets in predictions.
    pub label_separator: Option<String>,
}

/// The backbone a head belongs to: its files and the settings that reproduce its features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneRecord {
    /// Files (or the given features file).
    pub files: ModelRecord,
    /// Extraction settings (`None` for given features).
    pub settings: Option<BackboneSettings>,
}

/// Non-tensor facts of the weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeadExtra {
    /// The transform's kind (`standardize`, `pca_whiten`), when one is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformRecord>,
    /// MLP activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    /// Prototype heads: the softmax temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_temperature: Option<f32>,
}

/// A stored transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformRecord {
    /// `standardize` or `pca_whiten`.
    pub kind: String,
}

impl HeadArtefact {
    /// Reads a head's JSON, refusing anything but a `graft-head` of [`HEAD_FORMAT`].
    pub fn read(path: &Path) -> Result<HeadArtefact, ArtefactError> {
        let v: HeadVersion = read_json(path, "head description")?;
        check_version(
            path,
            "head description",
            "format_version",
            (v.format_version, v.graft_version),
            HEAD_FORMAT,
        )?;
        let artefact: HeadArtefact = read_json(path, "head description")?;
        if artefact.format != "graft-head" {
            return Err(ArtefactError::Invalid {
                path: path.to_path_buf(),
                what: "head description",
                problem: "`format` is not \"graft-head\"".to_owned(),
            });
        }
        Ok(artefact)
    }
}

/// Writes a record as pretty JSON with a final newline.
pub fn to_json_text<T: Serialize>(record: &T) -> String {
    serde_json::to_string_pretty(record).expect("records serialise") + "\n"
}

impl crate::Metrics {
    /// Reads `<run_dir>/metrics.json`, refusing one that differs from what the run's manifest records.
    pub fn read(run_dir: &Path) -> Result<crate::Metrics, ArtefactError> {
        Manifest::read(run_dir)?.verify(run_dir, "metrics.json")?;
        read_json(&run_dir.join("metrics.json"), "metrics file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("graft-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            r#"{ "format": 2, "graft_version": "9.0.0" }"#,
        )
        .unwrap();
        let err = Manifest::read(&dir).unwrap_err().to_string();
        assert!(err.contains("run manifest format 2"), "{err}");
        assert!(err.contains("reads format 1"), "{err}");
        assert!(err.contains("9.0.0"), "{err}");
        std::fs::write(dir.join("manifest.json"), r#"{ "graft_version": "0.1.0" }"#).unwrap();
        let err = Manifest::read(&dir).unwrap_err().to_string();
        assert!(err.contains("no `format` version key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
