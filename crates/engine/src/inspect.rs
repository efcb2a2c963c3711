//! What `check` learns from the backbone without running it: the files fetched and verified, the graph's
//! inputs and outputs read from its bytes (graft-onnx, no ONNX Runtime), the feature width and position
//! limit, and the checks that need them (PCA components, `[fine_tune] layers`).

use std::path::Path;

use graft_assets::Cache;
use graft_config::{ModelSource, Plan, StagePlan};
use graft_onnx::{Dim, ElementType, OnnxModel, ValueInfo};

use crate::PipelineError;
use crate::featurize::backbone_of;

/// The backbone as `check` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// The registry name or the graph's path.
    pub label: String,
    /// The graph's inputs, `name (type [dims])`.
    pub inputs: Vec<String>,
    /// The output features come from.
    pub output: String,
    /// Feature width, when the graph declares it.
    pub dimension: Option<usize>,
    /// Tokens kept per text (text backbones).
    pub max_length: Option<usize>,
    /// Texts longer than `max_length`, of how many, and the windows chunking embeds (text backbones).
    pub long_texts: Option<LongTextCount>,
    /// The `[backbones]` candidate this is (its label), when the pipeline ranks several.
    pub candidate: Option<String>,
    /// The prompt every text goes through (the pipeline's, or the registered model's own).
    pub prompt: Option<String>,
}

/// How many texts are longer than `max_length`, from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongTextCount {
    /// Texts longer than `max_length`.
    pub long: usize,
    /// Texts counted.
    pub rows: usize,
    /// Token sequences the run embeds: `rows` when truncating, every window when chunking.
    pub sequences: usize,
    /// Whether the run chunks them (else truncates).
    pub chunks: bool,
}

fn describe(v: &ValueInfo) -> String {
    format!("{} ({})", v.name, v.type_text())
}

/// The output extraction reads: the one named, else `sentence_embedding`, else the first float output of
/// rank 3, else of rank 2 (the rule the backbone applies when it opens the graph).
fn chosen_output<'a>(outputs: &'a [ValueInfo], named: Option<&str>) -> Option<&'a ValueInfo> {
    let float = |v: &&ValueInfo| v.element == ElementType::Float;
    match named {
        Some(name) => outputs.iter().find(|v| v.name == name),
        None => outputs
            .iter()
            .filter(float)
            .find(|v| v.name == "sentence_embedding")
            .or_else(|| outputs.iter().filter(float).find(|v| v.rank() == Some(3)))
            .or_else(|| outputs.iter().filter(float).find(|v| v.rank() == Some(2))),
    }
}

fn read_graph(path: &Path) -> Result<(Vec<ValueInfo>, Vec<ValueInfo>), PipelineError> {
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = OnnxModel::parse(&bytes).map_err(|e| PipelineError::Artefact {
        path: path.to_path_buf(),
        problem: format!("not an ONNX model graft can read: {e}"),
    })?;
    Ok((model.inputs().to_vec(), model.outputs().to_vec()))
}

/// Fetches (registry) or checksums (own files) the backbone, reads its graph and runs the checks that need
/// it (with the data's `train_rows`); `None` for given features.
pub fn check_model(
    plan: &Plan,
    cache_dir: &Path,
    train_rows: usize,
    texts: &[String],
) -> Result<Option<ModelSummary>, PipelineError> {
    let Some(backbone) = plan.backbone.as_ref() else {
        return Ok(None);
    };
    let cache = Cache::new(cache_dir);
    let (label, onnx, output, max_length, long_texts) = match (&backbone.image, &backbone.source) {
        (Some(image), ModelSource::Registry(name)) => {
            let model = cache.image_model(name)?;
            (
                name.clone(),
                model.onnx.path,
                Some(image.output.clone()),
                None,
                None,
            )
        }
        _ => {
            let resolved = crate::featurize::resolve_text_model(plan, &cache)?;
            let config = &backbone.config;
            // Counted as the run tokenizes them: through the prompt.
            let prompted: Option<Vec<String>> = backbone.prompt.as_ref().map(|p| {
                texts
                    .iter()
                    .map(|t| graft_config::apply_prompt(p, t))
                    .collect()
            });
            let encoded = graft_backbone::TextTokenizer::open_with(
                &resolved.tokenizer.path,
                config.max_length,
                config.long_texts,
            )?
            .encode(prompted.as_deref().unwrap_or(texts))?;
            let count = LongTextCount {
                long: encoded.long_texts(),
                rows: encoded.len(),
                sequences: encoded.sequences(),
                chunks: config.long_texts != graft_backbone::LongTexts::Truncate,
            };
            (
                resolved.label,
                resolved.onnx.path,
                backbone_of(plan).config.output.clone(),
                Some(config.max_length),
                Some(count),
            )
        }
    };
    let (inputs, outputs) = read_graph(&onnx)?;
    let chosen = chosen_output(&outputs, output.as_deref()).ok_or_else(|| {
        PipelineError::from(
            plan.diagnostic(
                &plan.spans.backbone,
                format!(
                    "{label}: no output holds float32 features; the graph's outputs are: {}",
                    outputs.iter().map(describe).collect::<Vec<_>>().join(", ")
                ),
            )
            .with_hint("name one with `output` in [backbone]"),
        )
    })?;
    let dimension = match chosen.dims.as_deref().and_then(<[Dim]>::last) {
        Some(Dim::Fixed(n)) => usize::try_from(*n).ok(),
        _ => None,
    };
    crate::train::check_against_data(plan, train_rows, dimension)?;
    check_fine_tune_layers(plan, &cache)?;
    Ok(Some(ModelSummary {
        label,
        inputs: inputs.iter().map(describe).collect(),
        output: describe(chosen),
        dimension,
        max_length,
        long_texts,
        candidate: None,
        prompt: backbone.prompt.clone(),
    }))
}

/// [`check_model`] for the run's backbone, or for every `[backbones]` candidate (each summary's
/// `candidate` names it).
pub fn check_models(
    plan: &Plan,
    cache_dir: &Path,
    train_rows: usize,
    texts: &[String],
) -> Result<Vec<ModelSummary>, PipelineError> {
    if plan.backbone_candidates.is_empty() {
        return Ok(check_model(plan, cache_dir, train_rows, texts)?
            .into_iter()
            .collect());
    }
    let mut summaries = Vec::new();
    for candidate in &plan.backbone_candidates {
        let mut one = plan.clone();
        one.backbone = Some(candidate.backbone.clone());
        one.spans.backbone = Some(candidate.span.clone());
        one.backbone_candidates = Vec::new();
        if let Some(mut summary) = check_model(&one, cache_dir, train_rows, texts)? {
            summary.candidate = Some(candidate.label.clone());
            summaries.push(summary);
        }
    }
    Ok(summaries)
}

/// `[fine_tune] layers` against the blocks of the weights it would train.
fn check_fine_tune_layers(plan: &Plan, cache: &Cache) -> Result<(), PipelineError> {
    let Some(p) = plan.techniques.stages.iter().find_map(|s| match s {
        StagePlan::FineTune(p) => Some(p),
        _ => None,
    }) else {
        return Ok(());
    };
    let Some((weights, heads, _, _)) = crate::featurize::tune_sources(plan, cache)? else {
        return Ok(());
    };
    let layers = graft_tune::BertWeights::read_safetensors(&weights, heads)?
        .config()
        .layers;
    crate::stages::check_tune_layers(p, layers, &plan.file, &plan.source)
}

/// What `run --dry-run` learns without fetching, extracting or writing anything.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// Registered parts the run needs: (what, name, in the cache already).
    pub parts: Vec<(String, String, bool)>,
    /// The data's rows and split, when it can be read without fetching.
    pub data: Option<crate::DataSummary>,
    /// Rows whose features the feature cache holds, of the rows, when the model is at hand (text rows).
    pub cached_features: Option<(usize, usize)>,
}

fn present(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// The plan of a run: which registered parts are in the cache and which a run would fetch, the data's rows
/// and split (when no fetch is needed to read it), and how many rows' features the feature cache holds.
pub fn dry_run(plan: &Plan, options: &crate::RunOptions) -> Result<DryRun, PipelineError> {
    use graft_config::DataSource;
    let root = options.cache_dir.as_path();
    let registry = graft_assets::Registry::builtin();
    let mut parts = Vec::new();
    let dataset = match &plan.data.source {
        DataSource::Registry(name) | DataSource::ImageRegistry(name) => Some(name.clone()),
        _ => None,
    };
    if let Some(name) = &dataset {
        parts.push((
            "data set".to_owned(),
            name.clone(),
            present(&root.join("datasets").join(name)),
        ));
    }
    let model = match plan.backbone.as_ref().map(|b| &b.source) {
        Some(ModelSource::Registry(name)) => {
            let here = present(&root.join("models").join(name));
            parts.push(("backbone".to_owned(), name.clone(), here));
            here
        }
        Some(ModelSource::Files { .. }) => true,
        None => false,
    };
    // The other candidates' models (the first is `plan.backbone`).
    for candidate in plan.backbone_candidates.iter().skip(1) {
        if let ModelSource::Registry(name) = &candidate.backbone.source
            && !parts
                .iter()
                .any(|(what, n, _)| what == "backbone" && n == name)
        {
            let here = present(&root.join("models").join(name));
            parts.push(("backbone".to_owned(), name.clone(), here));
        }
    }
    if plan.backbone.is_some() {
        let name = match backbone_of(plan).config.provider {
            graft_backbone::Provider::Cpu => "onnxruntime",
            graft_backbone::Provider::Cuda { .. } => "onnxruntime-gpu",
        };
        let version = registry
            .runtime
            .get(name)
            .map_or("", |r| r.version.as_str());
        let here = std::env::var_os(graft_backbone::ORT_DYLIB_ENV).is_some_and(|v| !v.is_empty())
            || present(&root.join("runtime").join(format!("{name}-{version}")));
        parts.push(("runtime".to_owned(), name.to_owned(), here));
    }
    let data_here = dataset.is_none() || parts[0].2;
    if !data_here {
        return Ok(DryRun {
            parts,
            data: None,
            cached_features: None,
        });
    }
    let cache = Cache::new(root);
    let ingested = crate::data::ingest(plan, &cache)?;
    let data = Some(crate::DataSummary::of(&ingested));
    let cached_features = match &ingested.data.inputs {
        crate::data::Inputs::Texts(texts) if model => Some(crate::featurize::cached_text_rows(
            plan, options, &cache, texts,
        )?),
        _ => None,
    };
    Ok(DryRun {
        parts,
        data,
        cached_features,
    })
}
