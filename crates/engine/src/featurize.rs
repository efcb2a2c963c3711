//! Rows to features: given features as they are, texts and images through the frozen backbone, every row
//! looked up in the shared feature cache first and only the missing ones extracted (and stored).

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_assets::{Cache, VerifiedFile};
use graft_backbone::{
    EncodedTexts, ImageBackbone, ImageBackboneConfig, ImageSource, LongTexts, Runtime,
    TextBackbone, TextTokenizer,
};
use graft_features::{FeatureStore, Lookup, RowKey, row_key};
use ndarray::Array2;
use rayon::prelude::*;

use crate::PipelineError;
use crate::data::{Inputs, Labelled};
use crate::options::RunOptions;
use crate::provision::{
    ModelProblem, ResolvedModel, RuntimeChoice, file_record, resolve_model, runtime_library,
    runtime_manifest,
};
use crate::stages::Embedded;
use graft_config::apply_prompt;
use graft_config::techniques::OtherBackbone;
use graft_config::{DataSource, ImagePlan, ModelSource, Plan};
use graft_report::{self, ExtractionFigures, FeatureCacheRecord, ModelRecord, RuntimeRecord};
use graft_stdx::derive_seed;

/// The backbone of a plan whose rows need one (checked when the plan was loaded).
pub(crate) fn backbone_of(plan: &Plan) -> &graft_config::BackbonePlan {
    plan.backbone
        .as_ref()
        .expect("texts and images come with a backbone (checked when the plan was loaded)")
}

/// Features given with the data: nothing to extract, nothing to provision.
pub(crate) fn given_features(
    plan: &Plan,
    features: Array2<f32>,
    file: &VerifiedFile,
) -> Featurized {
    let embedding_column = match &plan.data.source {
        DataSource::Features {
            embedding_column, ..
        } => embedding_column.clone(),
        _ => unreachable!("called for given features"),
    };
    let extraction = ExtractionFigures {
        rows: features.nrows(),
        extracted: 0,
        cache_hits: 0,
        dimension: features.ncols(),
        execution_provider: "none (features given)".to_owned(),
        unit: "features".to_owned(),
        ..ExtractionFigures::default()
    };
    let dimension = features.ncols();
    Featurized {
        features,
        train_views: Vec::new(),
        extraction,
        runtime: None,
        feature_cache: None,
        model_label: "no backbone (features given)".to_owned(),
        model: ModelRecord {
            features: Some(file_record(file)),
            embedding_column: Some(embedding_column),
            dimension: Some(dimension),
            ..ModelRecord::default()
        },
        model_sha256: file.sha256.clone(),
        provision_seconds: 0.0,
    }
}

/// What the extraction stage hands on.
pub(crate) struct Featurized {
    pub(crate) features: Array2<f32>,
    /// One matrix per augmented view, rows aligned with the training split.
    pub(crate) train_views: Vec<Array2<f32>>,
    pub(crate) extraction: ExtractionFigures,
    pub(crate) runtime: Option<RuntimeRecord>,
    pub(crate) feature_cache: Option<FeatureCacheRecord>,
    pub(crate) model_label: String,
    pub(crate) model: ModelRecord,
    pub(crate) model_sha256: String,
    pub(crate) provision_seconds: f64,
}

/// The text backbone's files, with located errors for a model that is not a text model or whose pinned
/// checksum differs.
pub(crate) fn resolve_text_model(
    plan: &Plan,
    cache: &Cache,
) -> Result<ResolvedModel, PipelineError> {
    resolve_model(cache, &backbone_of(plan).source).map_err(|problem| {
        match problem {
    ModelProblem::NotText(name) => PipelineError::from(plan.diagnostic(
        &plan.spans.backbone,
        format!("backbone `{name}` is not a text model"),
    )),
    ModelProblem::Checksum {
        path,
        expected,
        actual,
    } => plan
        .diagnostic(
            &plan.spans.sha256,
            format!(
                "checksum mismatch for {}: expected {expected}, found {actual}",
                path.display()
            ),
        )
        .with_hint(
            "the model file changed since the pipeline pinned it; restore it or update `sha256`",
        )
        .into(),
    ModelProblem::Other(e) => e,
}
    })
}

/// The rows the feature cache holds (nothing when the cache is off).
fn lookup(store: Option<&FeatureStore>, keys: &[RowKey]) -> Result<Lookup, PipelineError> {
    Ok(match store {
        Some(store) => store.lookup(keys)?,
        None => Lookup {
            rows: Array2::zeros((keys.len(), 0)),
            found: vec![false; keys.len()],
            rejected_chunks: 0,
        },
    })
}

/// The feature-cache namespace of a text backbone: everything that changes its output is in the description.
fn text_store(
    plan: &Plan,
    options: &RunOptions,
    onnx: &VerifiedFile,
    tokenizer: &VerifiedFile,
) -> Result<Option<FeatureStore>, PipelineError> {
    Ok(if backbone_of(plan).cache {
        let description = text_namespace(plan, onnx, tokenizer);
        Some(FeatureStore::open(&options.features_dir, &description)?)
    } else {
        None
    })
}

/// The description of a text backbone's feature-cache namespace: everything that changes its output.
fn text_namespace(plan: &Plan, onnx: &VerifiedFile, tokenizer: &VerifiedFile) -> String {
    let config = &backbone_of(plan).config;
    format!(
        "graft-features 1; model {}; onnx sha256 {}; tokenizer sha256 {}; output {}; pooling {}; \
         normalize {}; max_length {}{}",
        // The name is for `cache stats`; identity comes from the checksums.
        match &backbone_of(plan).source {
            ModelSource::Registry(name) => name.clone(),
            ModelSource::Files { onnx, .. } => onnx
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        },
        onnx.sha256,
        tokenizer.sha256,
        config
            .output
            .as_deref()
            .unwrap_or("(sentence_embedding, else the first float rank-3)"),
        config.pooling.name(),
        config.normalize,
        config.max_length,
        // Windows are keyed by their token ids (the texts' own keys would collide with truncated rows).
        match config.long_texts {
            LongTexts::Truncate => "",
            LongTexts::Chunks { .. } => "; windows keyed by token ids",
        }
    )
}

/// How many of `texts` (before the prompt) the feature cache holds for the pipeline's backbone, and of how
/// many: for `run --dry-run`. Reads the model's files (no fetch when they are cached) but runs nothing.
pub(crate) fn cached_text_rows(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    texts: &[String],
) -> Result<(usize, usize), PipelineError> {
    let model = resolve_text_model(plan, cache)?;
    let description = text_namespace(plan, &model.onnx, &model.tokenizer);
    let store = FeatureStore::open_existing(&options.features_dir, &description);
    let Some(store) = store.filter(|_| backbone_of(plan).cache) else {
        return Ok((0, texts.len()));
    };
    let keys: Vec<RowKey> = texts
        .iter()
        .map(|t| match &backbone_of(plan).prompt {
            Some(p) => row_key(apply_prompt(p, t).as_bytes()),
            None => row_key(t.as_bytes()),
        })
        .collect();
    Ok((store.lookup(&keys)?.hits(), texts.len()))
}

/// Text rows: MiniLM-style backbone, feature cache keyed by each text's sha256.
pub(crate) fn text_features(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    texts: &[String],
) -> Result<Featurized, PipelineError> {
    let clock = Instant::now();
    let ResolvedModel {
        onnx,
        tokenizer,
        label: backbone_label,
        record: model_record,
    } = resolve_text_model(plan, cache)?;
    let provision_seconds = clock.elapsed().as_secs_f64();

    let config = &backbone_of(plan).config;
    let store = text_store(plan, options, &onnx, &tokenizer)?;
    // Chunking: every text's windows first (the keys are the windows' token ids); truncating: texts are
    // keyed by their bytes and only the missing ones tokenized.
    let windows = match config.long_texts {
        LongTexts::Truncate => None,
        long_texts => {
            let tokenizer =
                TextTokenizer::open_with(&tokenizer.path, config.max_length, long_texts)?;
            Some(tokenizer.encode(texts)?)
        }
    };
    let keys: Vec<RowKey> = match &windows {
        None => texts.iter().map(|t| row_key(t.as_bytes())).collect(),
        Some(encoded) => (0..encoded.sequences())
            .map(|w| row_key(&ids_bytes(encoded.ids(w))))
            .collect(),
    };
    let cached = lookup(store.as_ref(), &keys)?;
    let missing = cached.missing();
    let mut runtime_record = None;
    let mut extraction = ExtractionFigures {
        rows: texts.len(),
        extracted: missing.len(),
        cache_hits: cached.hits(),
        dimension: cached.rows.ncols(),
        execution_provider: "none: every feature came from the cache".to_owned(),
        unit: "texts".to_owned(),
        long_texts: config.long_texts.name().to_owned(),
        sequences: keys.len(),
        ..ExtractionFigures::default()
    };
    let features = if missing.is_empty() {
        cached.rows
    } else {
        // The runtime comes after the model files: a wrong model is reported before anything large is fetched.
        let choice = runtime_library(cache, config.provider)?;
        let runtime = Runtime::load(&choice.library.path)?;
        let mut config = config.clone();
        config.progress = false;
        config.provider = choice.provider;
        let mut backbone = TextBackbone::load(&runtime, &onnx.path, &tokenizer.path, config)?;
        let started = Instant::now();
        // The sequences to embed, as positions in `encoded`, and the key each one's row is stored under.
        let (encoded, todo, key_of): (EncodedTexts, Vec<usize>, Vec<usize>) = match &windows {
            Some(encoded) => (encoded.clone(), missing.clone(), (0..keys.len()).collect()),
            None => {
                let todo: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
                let encoded = backbone.tokenizer().encode(&todo)?;
                (encoded, (0..missing.len()).collect(), missing.clone())
            }
        };
        let features = embed_and_store(
            &mut backbone,
            &encoded,
            &todo,
            (store.as_ref(), &keys, &key_of),
            cached.rows,
            (&mut extraction, options.progress),
        )?;
        extraction.tokenize_seconds = encoded.tokenize_seconds();
        if windows.is_none() {
            // The extracted texts' own encodings say which were cut; the cached ones are counted below.
            extraction.long_rows = encoded.long_texts();
        }
        // Texts per second: when chunking, the texts whose windows were embedded here.
        let texts_done = match &windows {
            Some(w) => (0..w.len())
                .filter(|&t| w.windows_of(t).any(|s| !cached.found[s]))
                .count(),
            None => missing.len(),
        };
        extraction.rows_per_second = texts_done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        extraction.execution_provider = backbone.execution_provider().to_owned();
        extraction.threads = backbone.config().intra_threads;
        runtime_record = Some(runtime_manifest(
            &choice,
            &runtime,
            backbone.execution_provider(),
            backbone.provider_fallback(),
            backbone.config().intra_threads,
        ));
        features
    };
    let features = match &windows {
        Some(encoded) => {
            extraction.long_rows = encoded.long_texts();
            encoded.pool_windows(features, config.normalize)
        }
        None => {
            // Texts from the cache are counted too (tokenizing is cheap beside inference).
            let from_cache: Vec<&str> = (0..texts.len())
                .filter(|&i| cached.found[i])
                .map(|i| texts[i].as_str())
                .collect();
            if !from_cache.is_empty() {
                let counted = TextTokenizer::open(&tokenizer.path, config.max_length)?;
                extraction.long_rows += counted.encode(&from_cache)?.long_texts();
            }
            extraction.truncated_rows = extraction.long_rows;
            features
        }
    };
    let batch_invariant = model_record.batch_dependent_ops.is_empty();
    if !batch_invariant && extraction.cache_hits > 0 && extraction.extracted > 0 {
        tracing::warn!(
            cached = extraction.cache_hits,
            extracted = extraction.extracted,
            ops = ?model_record.batch_dependent_ops,
            "the model quantises activations per batch: rows from the feature cache were embedded in other \
             batches and differ slightly from fresh ones; set `cache = false` for single-pass features"
        );
    }
    let feature_cache = FeatureCacheRecord {
        enabled: store.is_some(),
        namespace: store.as_ref().map(|s| s.dir().to_path_buf()),
        namespaces: None,
        hits: Some(extraction.cache_hits),
        extracted: Some(extraction.extracted),
        rejected_chunks: cached.rejected_chunks,
        batch_invariant: Some(batch_invariant),
    };

    Ok(Featurized {
        features,
        train_views: Vec::new(),
        extraction,
        runtime: runtime_record,
        feature_cache: Some(feature_cache),
        model_label: backbone_label,
        model: model_record,
        model_sha256: onnx.sha256,
        provision_seconds,
    })
}

/// Embeds the sequences `todo` of `encoded`, batches planned over their length order and embedded and
/// stored a few at a time (the same batches as one call, and a stopped run keeps what it had stored):
/// sequence `r`'s row goes to the feature cache under `keys[key_of[r]]` and to row `key_of[r]` of
/// `features`. Counts batches and tokens into `extraction`.
fn embed_and_store(
    backbone: &mut TextBackbone,
    encoded: &EncodedTexts,
    todo: &[usize],
    (store, keys, key_of): (Option<&FeatureStore>, &[RowKey], &[usize]),
    mut features: Array2<f32>,
    (extraction, progress): (&mut ExtractionFigures, bool),
) -> Result<Array2<f32>, PipelineError> {
    let mut order = todo.to_vec();
    order.sort_by_key(|&i| std::cmp::Reverse(encoded.ids(i).len()));
    let plan = encoded.batch_plan(&order, backbone.config().batch_size);
    let bar = crate::progress::bar(progress, order.len() as u64, 0, "sequences");
    for group in plan.chunks(TEXT_STORE_BATCHES) {
        let (span, batches) = graft_backbone::rebase(group);
        let slice = &order[span];
        let (fresh, stats) =
            backbone.embed_batches(encoded, slice, &batches, |rows| bar.inc(rows as u64))?;
        if let Some(store) = store {
            let fresh_keys: Vec<RowKey> = slice.iter().map(|&r| keys[key_of[r]]).collect();
            store.insert(&fresh_keys, fresh.view())?;
        }
        if features.ncols() != fresh.ncols() {
            features = Array2::zeros((keys.len(), fresh.ncols()));
        }
        for (row, &r) in slice.iter().enumerate() {
            features.row_mut(key_of[r]).assign(&fresh.row(row));
        }
        extraction.dimension = fresh.ncols();
        extraction.batches += stats.batches;
        extraction.tokens += stats.tokens;
        extraction.padded_tokens += stats.padded_tokens;
    }
    bar.finish_and_clear();
    Ok(features)
}

/// A window's cache key material: its token ids, little-endian.
fn ids_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// One set of feature rows to extract for images: which rows, the feature-cache namespace and keys, and
/// for an augmented view each row's augmentation seed.
pub(crate) struct View {
    pub(crate) rows: Vec<usize>,
    pub(crate) namespace: String,
    pub(crate) keys: Vec<RowKey>,
    pub(crate) seeds: Option<Vec<u64>>,
}

/// The feature-cache namespace of an image backbone: the model and the whole preprocessing.
fn image_namespace(name: &str, onnx_sha256: &str, image_plan: &ImagePlan) -> String {
    let p = &image_plan.preprocess;
    format!(
        "graft-features 1; image model {name}; onnx sha256 {}; output {}; input {}; resize {}; crop {}; \
         mean {:?}; std {:?}; layout {:?}; dtype {:?}; bgr {}",
        onnx_sha256,
        image_plan.output,
        p.input,
        p.resize,
        p.crop,
        p.mean,
        p.std,
        p.layout,
        p.dtype,
        p.bgr
    )
}

/// The plain view of every row first, then each augmented view of the training rows (seeded per image, so a
/// view's features are cached under its own key).
fn image_views(
    seed: u64,
    image_plan: &ImagePlan,
    description: &str,
    keys: Vec<RowKey>,
    train: &[usize],
) -> Vec<View> {
    // The plain view of every row first, then each augmented view of the training rows.
    let mut jobs = vec![View {
        rows: (0..keys.len()).collect(),
        namespace: description.to_owned(),
        keys: keys.clone(),
        seeds: None,
    }];
    if let Some((aug, views)) = image_plan.augment {
        for view in 1..=views as u64 {
            let seeds: Vec<u64> = train
                .iter()
                .map(|&i| {
                    derive_seed(
                        seed,
                        &format!("augment {view} {}", graft_stdx::hex(&keys[i])),
                    )
                })
                .collect();
            let view_keys = train
                .iter()
                .zip(&seeds)
                .map(|(&i, seed)| {
                    let mut bytes = keys[i].to_vec();
                    bytes.extend_from_slice(&seed.to_le_bytes());
                    row_key(&bytes)
                })
                .collect();
            jobs.push(View {
                rows: train.to_vec(),
                namespace: format!(
                    "{description}; augmented view: flip {}, crop_scale {:?}",
                    aug.horizontal_flip, aug.crop_scale
                ),
                keys: view_keys,
                seeds: Some(seeds),
            });
        }
    }

    jobs
}

/// ONNX Runtime and the image backbone, loaded once the first image needs extracting.
fn load_image_backbone(
    cache: &Cache,
    onnx: &Path,
    image_plan: &ImagePlan,
    config: &graft_backbone::TextBackboneConfig,
) -> Result<(ImageBackbone, RuntimeChoice, Runtime), PipelineError> {
    let choice = runtime_library(cache, config.provider)?;
    let runtime = Runtime::load(&choice.library.path)?;
    let loaded = ImageBackbone::load(
        &runtime,
        onnx,
        ImageBackboneConfig {
            preprocess: image_plan.preprocess.clone(),
            output: image_plan.output.clone(),
            batch_size: config.batch_size,
            intra_threads: config.intra_threads,
            // One bar over all slices, drawn by the caller.
            progress: false,
            provider: choice.provider,
        },
    )?;
    Ok((loaded, choice, runtime))
}

/// Image rows: an image backbone, feature cache keyed by each image's content (plus, for augmented views,
/// the view's seed); augmented views are extracted for the training rows only.
pub(crate) fn image_features(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    images: &[ImageSource],
    train: &[usize],
) -> Result<Featurized, PipelineError> {
    let clock = Instant::now();
    let image_plan = backbone_of(plan)
        .image
        .as_ref()
        .expect("image data needs an image backbone");
    let ModelSource::Registry(name) = &backbone_of(plan).source else {
        unreachable!("image backbones come from the registry")
    };
    let model = cache.image_model(name)?;
    let batch_dependent_ops = crate::provision::batch_dependent_ops(&model.onnx.path);
    let provision_seconds = clock.elapsed().as_secs_f64();
    let config = &backbone_of(plan).config;
    let description = image_namespace(name, &model.onnx.sha256, image_plan);
    let keys: Vec<RowKey> = images.par_iter().map(image_key).collect::<Result<_, _>>()?;
    let jobs = image_views(plan.seed, image_plan, &description, keys, train);

    let mut extraction = ExtractionFigures {
        rows: jobs.iter().map(|j| j.rows.len()).sum(),
        execution_provider: "none: every feature came from the cache".to_owned(),
        unit: "images".to_owned(),
        ..ExtractionFigures::default()
    };
    let mut runtime_record = None;
    let mut backbone: Option<(ImageBackbone, RuntimeChoice, Runtime)> = None;
    let mut matrices = Vec::new();
    let mut namespaces = Vec::new();
    let mut rejected_chunks = 0;
    let mut extract_seconds = 0.0;
    for view in jobs {
        let store = if backbone_of(plan).cache {
            Some(FeatureStore::open(&options.features_dir, &view.namespace)?)
        } else {
            None
        };
        let cached = lookup(store.as_ref(), &view.keys)?;
        rejected_chunks += cached.rejected_chunks;
        namespaces.push(store.as_ref().map(|s| s.dir().to_path_buf()));
        let missing = cached.missing();
        extraction.cache_hits += cached.hits();
        extraction.extracted += missing.len();
        if missing.is_empty() {
            extraction.dimension = cached.rows.ncols();
            matrices.push(cached.rows);
            continue;
        }
        if backbone.is_none() {
            backbone = Some(load_image_backbone(
                cache,
                &model.onnx.path,
                image_plan,
                config,
            )?);
        }
        let (extractor, _, _) = backbone.as_mut().expect("loaded above");
        let matrix = extract_missing(
            extractor,
            &view,
            (images, image_plan),
            (&missing, cached.rows),
            store.as_ref(),
            (&mut extraction, &mut extract_seconds),
            options.progress,
        )?;
        matrices.push(matrix);
    }
    if let Some(loaded) = &backbone {
        runtime_record = Some(image_runtime_record(
            loaded,
            &mut extraction,
            extract_seconds,
        ));
    }
    let mut matrices = matrices.into_iter();
    let features = matrices.next().expect("the plain view is always extracted");
    Ok(Featurized {
        features,
        train_views: matrices.collect(),
        extraction,
        runtime: runtime_record,
        feature_cache: Some(FeatureCacheRecord {
            enabled: backbone_of(plan).cache,
            namespace: None,
            namespaces: Some(namespaces),
            hits: None,
            extracted: None,
            rejected_chunks,
            batch_invariant: Some(batch_dependent_ops.is_empty()),
        }),
        model_label: name.clone(),
        model: ModelRecord {
            name: Some(name.clone()),
            licence: Some(model.entry.licence.clone()),
            dimension: Some(model.entry.dimension),
            onnx: Some(file_record(&model.onnx)),
            batch_dependent_ops,
            ..ModelRecord::default()
        },
        model_sha256: model.onnx.sha256,
        provision_seconds,
    })
}

/// The rows of `view` the feature cache lacks (`missing`, positions in the view), extracted and stored a
/// slice at a time — a run stopped after an hour keeps most of its work — and written into the view's
/// matrix of cached rows.
fn extract_missing(
    extractor: &mut ImageBackbone,
    view: &View,
    (images, image_plan): (&[ImageSource], &ImagePlan),
    (missing, mut matrix): (&[usize], Array2<f32>),
    store: Option<&FeatureStore>,
    (extraction, extract_seconds): (&mut ExtractionFigures, &mut f64),
    progress: bool,
) -> Result<Array2<f32>, PipelineError> {
    let bar = crate::progress::bar(progress, missing.len() as u64, 0, "images");
    for part in missing.chunks(IMAGE_STORE_ROWS) {
        let todo: Vec<ImageSource> = part.iter().map(|&k| images[view.rows[k]].clone()).collect();
        let (fresh, stats) = match (&view.seeds, image_plan.augment) {
            (Some(seeds), Some((aug, _))) => {
                let todo_seeds: Vec<u64> = part.iter().map(|&k| seeds[k]).collect();
                extractor.embed_augmented(&todo, aug, &todo_seeds)?
            }
            _ => extractor.embed(&todo)?,
        };
        *extract_seconds += stats.seconds;
        extraction.batches += stats.batches;
        extraction.tokenize_seconds += stats.preprocess_seconds;
        if let Some(store) = store {
            let fresh_keys: Vec<RowKey> = part.iter().map(|&k| view.keys[k]).collect();
            store.insert(&fresh_keys, fresh.view())?;
        }
        if matrix.ncols() != fresh.ncols() {
            matrix = Array2::zeros((view.keys.len(), fresh.ncols()));
        }
        for (row, &k) in part.iter().enumerate() {
            matrix.row_mut(k).assign(&fresh.row(row));
        }
        extraction.dimension = fresh.ncols();
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    Ok(matrix)
}

/// What ran an image extraction: the provider, threads and throughput into the figures, and the runtime as
/// the manifest records it.
fn image_runtime_record(
    (extractor, choice, runtime): &(ImageBackbone, RuntimeChoice, Runtime),
    extraction: &mut ExtractionFigures,
    extract_seconds: f64,
) -> RuntimeRecord {
    extraction.rows_per_second = extraction.extracted as f64 / extract_seconds.max(1e-9);
    extraction.execution_provider = extractor.execution_provider().to_owned();
    extraction.threads = extractor.config().intra_threads;
    runtime_manifest(
        choice,
        runtime,
        extractor.execution_provider(),
        extractor.provider_fallback(),
        extractor.config().intra_threads,
    )
}

/// Batches of texts embedded (and stored in the feature cache) per step of a text pipeline.
pub(crate) const TEXT_STORE_BATCHES: usize = 32;

/// Images extracted (and stored in the feature cache) per step of an image pipeline.
pub(crate) const IMAGE_STORE_ROWS: usize = 2048;

/// An image's content key: the file's bytes, or the pixels with their shape.
pub(crate) fn image_key(image: &ImageSource) -> Result<RowKey, PipelineError> {
    match image {
        ImageSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(row_key(&bytes))
        }
        ImageSource::Pixels {
            width,
            height,
            channels,
            data,
        } => {
            let mut bytes = format!("{width}x{height}x{channels}:").into_bytes();
            bytes.extend_from_slice(data);
            Ok(row_key(&bytes))
        }
    }
}

/// Features of every used row: given features as read, texts through the backbone's prompt, images with
/// their augmented training views. Rows the feature cache holds are not extracted again.
pub(crate) fn featurize(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    data: &mut Labelled,
    train: &[usize],
    data_file: &VerifiedFile,
) -> Result<Featurized, PipelineError> {
    match &mut data.inputs {
        Inputs::Texts(texts) => {
            // The template is part of what the backbone reads, so of each row's cache key too.
            let prompted: Option<Vec<String>> = backbone_of(plan)
                .prompt
                .as_ref()
                .map(|p| texts.iter().map(|t| apply_prompt(p, t)).collect());
            text_features(plan, options, cache, prompted.as_deref().unwrap_or(texts))
        }
        Inputs::Images(images) => image_features(plan, options, cache, images, train),
        Inputs::Features(given) => Ok(given_features(plan, std::mem::take(given), data_file)),
    }
}

/// Texts a technique stage brings (label descriptions, a target domain, augmented views), through the
/// pipeline's prompt and the feature cache like the rows; with the pipeline's backbone or `backbone`, and
/// every row extracted afresh when `fresh` (for timing).
pub(crate) fn embed_texts(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    backbone: Option<&OtherBackbone>,
    texts: &[String],
    fresh: bool,
) -> Result<Embedded, PipelineError> {
    let prompted: Vec<String> = match &backbone_of(plan).prompt {
        Some(p) => texts.iter().map(|t| apply_prompt(p, t)).collect(),
        None => texts.to_vec(),
    };
    let mut other = plan.clone();
    let chosen = other.backbone.as_mut().expect("text rows have a backbone");
    if let Some(backbone) = backbone {
        *chosen = graft_config::other_text_backbone(chosen, backbone);
    }
    chosen.cache &= !fresh;
    let f = text_features(&other, options, cache, &prompted)?;
    Ok(Embedded {
        features: f.features,
        rows_per_second: f.extraction.rows_per_second,
        extracted: f.extraction.extracted,
    })
}

/// The float32 weights (path, attention heads), tokenizer and token-state output of the pipeline's
/// backbone, for `[fine_tune]`, `[domain_adaptation] simcse` and `[progressive]`: a registered model published with weights,
/// or the `weights` `[fine_tune]` names for a backbone given as files.
pub(crate) fn tune_sources(
    plan: &Plan,
    cache: &Cache,
) -> Result<Option<(PathBuf, usize, PathBuf, String)>, PipelineError> {
    let Some(backbone) = plan.backbone.as_ref().filter(|b| b.image.is_none()) else {
        return Ok(None);
    };
    let named = plan.techniques.stages.iter().find_map(|s| match s {
        graft_config::StagePlan::FineTune(f) => Some(f.weights.clone()),
        // SimCSE in domain adaptation: registered backbones only (config checked it).
        graft_config::StagePlan::DomainAdaptation(d) if d.simcse.is_some() => Some(None),
        // `[progressive]` reads every layer: registered backbones only (config checked it).
        graft_config::StagePlan::Progressive(_) => Some(None),
        _ => None,
    });
    let Some(named) = named else {
        return Ok(None);
    };
    match (&backbone.source, named) {
        (ModelSource::Files { tokenizer, .. }, Some((weights, heads))) => Ok(Some((
            weights,
            heads,
            tokenizer.clone(),
            backbone
                .config
                .output
                .clone()
                .unwrap_or_else(|| "last_hidden_state".to_owned()),
        ))),
        (ModelSource::Registry(name), _) => {
            let (files, _) = crate::provision::text_model(cache, name)?;
            Ok(
                match (files.weights, files.entry.weights, files.tokenizer) {
                    // Only BERT weights are trained (config refused the others at their table).
                    (Some(w), Some(entry), Some(t)) if entry.architecture.trainable() => {
                        Some((w.path, entry.attention_heads, t.path, files.entry.output))
                    }
                    _ => None,
                },
            )
        }
        (ModelSource::Files { .. }, None) => Ok(None),
    }
}

/// Writes a graph graft made into the cache (`models/written/<sha256>.onnx`) and returns its path.
pub(crate) fn store_graph(cache: &Cache, bytes: &[u8]) -> Result<PathBuf, PipelineError> {
    let dir = cache.root().join("models").join("written");
    let path = dir.join(format!("{}.onnx", graft_stdx::sha256_hex(bytes)));
    if !path.exists() {
        std::fs::create_dir_all(&dir).map_err(|source| PipelineError::Io {
            path: dir.clone(),
            source,
        })?;
        graft_stdx::atomic::write(&path, bytes).map_err(|source| PipelineError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(path)
}

/// Token ids and unpooled `output` states of `texts` through the graph at `onnx`, with the pipeline's
/// backbone settings (tokenizer, truncation, batch size, threads, provider), and how many texts came whole
/// from the feature cache. The states are cached one token per row (key: the text and the token's
/// position) in a namespace of the graph's and tokenizer's sha256, so a second run with the same frozen
/// blocks computes nothing.
pub(crate) fn token_states(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    onnx: &Path,
    output: &str,
    texts: &[String],
) -> Result<(crate::stages::TokenStatesOf, usize), PipelineError> {
    let ResolvedModel { tokenizer, .. } = resolve_text_model(plan, cache)?;
    let mut config = backbone_of(plan).config.clone();
    let max_length = config.max_length;
    let choice = runtime_library(cache, config.provider)?;
    let runtime = Runtime::load(&choice.library.path)?;
    config.progress = false;
    config.provider = choice.provider;
    config.output = Some(output.to_owned());
    config.normalize = false;
    // Fine-tuning reads each text's first `max_length` tokens, whatever `long_texts` says.
    config.long_texts = LongTexts::Truncate;
    let mut backbone = TextBackbone::load(&runtime, onnx, &tokenizer.path, config)?;
    let encoded = backbone.tokenizer().encode(texts)?;
    let ids: Vec<Vec<u32>> = (0..texts.len()).map(|i| encoded.ids(i).to_vec()).collect();
    let graph_sha256 = graft_stdx::sha256_file(onnx).map_err(|source| PipelineError::Io {
        path: onnx.to_path_buf(),
        source,
    })?;
    let store = if backbone_of(plan).cache {
        let description = format!(
            "graft-token-states 1; onnx sha256 {graph_sha256}; output {output}; tokenizer sha256 {}; max_length {max_length}",
            tokenizer.sha256
        );
        Some(FeatureStore::open(&options.features_dir, &description)?)
    } else {
        None
    };
    let token_key = |text: &str, position: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0xff); // not UTF-8: no text ends the same way as a key with a position
        bytes.extend_from_slice(&(position as u64).to_le_bytes());
        row_key(&bytes)
    };
    let mut states = vec![Array2::zeros((0, 0)); texts.len()];
    let mut missing = Vec::new();
    if let Some(store) = &store {
        let keys: Vec<RowKey> = texts
            .iter()
            .zip(&ids)
            .flat_map(|(t, ids)| (0..ids.len()).map(move |p| (t, p)))
            .map(|(t, p)| token_key(t, p))
            .collect();
        let found = lookup(Some(store), &keys)?;
        let mut at = 0;
        for (i, row_ids) in ids.iter().enumerate() {
            let span = at..at + row_ids.len();
            at = span.end;
            if span.clone().all(|k| found.found[k]) {
                states[i] = found.rows.slice(ndarray::s![span, ..]).to_owned();
            } else {
                missing.push(i);
            }
        }
    } else {
        missing = (0..texts.len()).collect();
    }
    let hits = texts.len() - missing.len();
    if !missing.is_empty() {
        let todo: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
        let encoded = backbone.tokenizer().encode(&todo)?;
        let order = encoded.length_order();
        let bar = crate::progress::bar(options.progress, todo.len() as u64, 0, "rows");
        for slice in order.chunks(backbone.config().batch_size * TEXT_STORE_BATCHES) {
            let computed = backbone.token_states(&encoded, slice, |n| bar.inc(n as u64))?;
            if let Some(store) = &store {
                let keys: Vec<RowKey> = slice
                    .iter()
                    .zip(&computed)
                    .flat_map(|(&r, s)| (0..s.nrows()).map(move |p| (r, p)))
                    .map(|(r, p)| token_key(todo[r], p))
                    .collect();
                let views: Vec<_> = computed.iter().map(|s| s.view()).collect();
                let rows = ndarray::concatenate(ndarray::Axis(0), &views)
                    .expect("every row has the graph's width");
                store.insert(&keys, rows.view())?;
            }
            for (s, &r) in computed.into_iter().zip(slice) {
                states[missing[r]] = s;
            }
        }
        bar.finish_and_clear();
    }
    Ok(((ids, states), hits))
}
