//! `export`: a run's saved head as ONNX — alone (features in), or merged with its frozen backbone, pooling
//! and normalisation into one model that takes token ids (text) or pixels (image) and returns class
//! probabilities, runnable by ONNX Runtime in any language.

use std::path::{Path, PathBuf};

use graft_assets::Cache;
use graft_heads::{FittedTransform, TransformKind};
use graft_onnx::{Attribute, Dim, ElementType, Graph, OnnxModel, ValueInfo, standalone_model};
use serde_json::json;

use graft_config::resolved::{BackboneSettings, ImageSettings};

use crate::JobError;
use crate::predict::{head_file, model_sha256, recorded_model};
use graft_config::ModelSource;
use graft_engine::{LoadedHead, TrainedHead, load_head};

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// A run folder written by `run`.
    pub run_dir: PathBuf,
    /// Which of the run's heads (default: the headline).
    pub head: Option<String>,
    /// The `.onnx` file to write (default: `<run>/heads/<head>.onnx`, or `<head>.head.onnx` with
    /// `head_only`).
    pub output: Option<PathBuf>,
    /// Export the head alone (input: the backbone's features) instead of the merged model.
    pub head_only: bool,
    /// Cache of fetched models.
    pub cache_dir: PathBuf,
}

/// What `export` wrote.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// The model file.
    pub output: PathBuf,
    /// The head exported.
    pub head: String,
    /// The model's inputs, described for people (`name: type [shape]`).
    pub inputs: Vec<String>,
    /// Its outputs, described the same way.
    pub outputs: Vec<String>,
    /// File size in bytes.
    pub bytes: usize,
    /// A merged text model: its tokenizer, written beside it as `tokenizer.json`.
    pub tokenizer: Option<PathBuf>,
}

/// Operator set of a head exported alone (ONNX Runtime ≥ 1.7 reads it).
const HEAD_OPSET: i64 = 13;

fn batch() -> Dim {
    Dim::Named("batch".to_owned())
}

/// Writes the transform, the head, the temperature (or the multi-label thresholds) and the outputs
/// `probabilities` and `predicted` (see [`outputs`]) after the tensor `features`.
fn head_nodes(g: &mut Graph, trained: &TrainedHead, features: &str) -> Result<(), JobError> {
    let mut x = features.to_owned();
    if let Some(t) = &trained.transform {
        x = transform_nodes(g, t, &x);
    }
    let mut logits = trained
        .head
        .onnx_logits(g, &x)
        .map_err(|r| JobError::invalid(r.message, r.hint))?;
    if let Some(thresholds) = &trained.thresholds {
        // Multi-label: each label's probability, and the labels at or above their thresholds.
        g.node_into("Sigmoid", &[&logits], &[], "probabilities");
        let t = g.constant("thresholds", ndarray::aview1(thresholds).into_dyn());
        let below = g.node("Less", &["probabilities", &t], &[]);
        g.node_into("Not", &[&below], &[], "predicted");
        return Ok(());
    }
    if let Some(t) = &trained.temperature {
        // graft calibrates probabilities: softmax(ln(max(p, 1e-12)) / T).
        let p = g.node("Softmax", &[&logits], &[("axis", Attribute::Int(1))]);
        let floor = g.scalar("floor", 1e-12);
        let floored = g.node("Max", &[&p, &floor], &[]);
        let log = g.node("Log", &[&floored], &[]);
        let beta = g.scalar("inverse_temperature", (1.0 / t.temperature()) as f32);
        logits = g.node("Mul", &[&log, &beta], &[]);
    }
    g.node_into(
        "Softmax",
        &[&logits],
        &[("axis", Attribute::Int(1))],
        "probabilities",
    );
    g.node_into(
        "ArgMax",
        &["probabilities"],
        &[("axis", Attribute::Int(1)), ("keepdims", Attribute::Int(0))],
        "predicted",
    );
    Ok(())
}

fn transform_nodes(g: &mut Graph, t: &FittedTransform, x: &str) -> String {
    let mean = g.constant("transform_mean", t.mean().view().into_dyn());
    let centred = g.node("Sub", &[x, &mean], &[]);
    match t.kind() {
        TransformKind::Standardize => {
            let scale = g.constant("transform_scale", t.scale().view().into_dyn());
            g.node("Mul", &[&centred, &scale], &[])
        }
        TransformKind::PcaWhiten => {
            let projection = g.constant("transform_projection", t.scale().view().into_dyn());
            g.node("MatMul", &[&centred, &projection], &[])
        }
    }
}

fn describe(v: &ValueInfo) -> String {
    format!("{}: {}", v.name, v.type_text())
}

/// `probabilities` [batch, classes] and `predicted`: the arg-max class (int64 [batch]), or for a
/// multi-label head each label's yes/no (bool [batch, labels]).
fn outputs(trained: &TrainedHead) -> Vec<ValueInfo> {
    let classes = Dim::Fixed(trained.n_classes() as i64);
    vec![
        ValueInfo::new(
            "probabilities",
            ElementType::Float,
            vec![batch(), classes.clone()],
        ),
        if trained.is_multi_label() {
            ValueInfo::new("predicted", ElementType::Bool, vec![batch(), classes])
        } else {
            ValueInfo::new("predicted", ElementType::Int64, vec![batch()])
        },
    ]
}

fn metadata(loaded: &LoadedHead, kind: &str, input_note: &str) -> Vec<(String, String)> {
    vec![
        (
            "graft.classes".to_owned(),
            json!(loaded.info.classes).to_string(),
        ),
        (
            "graft.head".to_owned(),
            loaded.trained.spec.name().to_owned(),
        ),
        ("graft.export".to_owned(), kind.to_owned()),
        ("graft.inputs".to_owned(), input_note.to_owned()),
        (
            "graft.backbone_sha256".to_owned(),
            loaded.info.backbone_sha256.clone(),
        ),
        (
            "graft.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]
}

/// The head alone: `features` (float [batch, d], the backbone's features as graft extracts them) in.
fn head_only_model(loaded: &LoadedHead) -> Result<(Vec<u8>, Vec<ValueInfo>), JobError> {
    let trained = &loaded.trained;
    let mut g = Graph::new(HEAD_OPSET, "graft/");
    head_nodes(&mut g, trained, "features")?;
    let inputs = vec![ValueInfo::new(
        "features",
        ElementType::Float,
        vec![batch(), Dim::Fixed(trained.n_features() as i64)],
    )];
    let meta = metadata(
        loaded,
        "head",
        "features: the frozen backbone's pooled (and, for text, L2-normalised) features",
    );
    let bytes = standalone_model(&g, &inputs, &outputs(trained), &meta);
    Ok((bytes, inputs))
}

fn model_error(path: &Path, e: graft_onnx::OnnxError) -> JobError {
    JobError::invalid(
        format!("cannot merge the head into {}: {e}", path.display()),
        "export the head alone with --head-only and run it after the backbone",
    )
}

/// Backbone + pooling + normalisation + head, for a text backbone: the backbone's own token inputs in.
fn merged_text_model(
    loaded: &LoadedHead,
    settings: &BackboneSettings,
    backbone_path: &Path,
    backbone: &[u8],
) -> Result<(Vec<u8>, Vec<ValueInfo>), JobError> {
    let model = OnnxModel::parse(backbone).map_err(|e| model_error(backbone_path, e))?;
    let states = match settings.output.as_deref() {
        Some(name) => model
            .outputs()
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| {
                JobError::invalid(
                    format!("the backbone has no output `{name}`"),
                    "the run's backbone settings do not match this model",
                )
            })?,
        None => model.outputs().first().ok_or_else(|| {
            JobError::invalid("the backbone has no outputs", "check the model file")
        })?,
    }
    .clone();
    let mut g = Graph::new(model.opset(), "graft/");
    let mut new_inputs = Vec::new();
    let pooled = match states.rank() {
        Some(2) => states.name.clone(),
        Some(3) if settings.pooling == "cls" => {
            let first = g.constant_i64("first_token", &[0], &[]);
            g.node(
                "Gather",
                &[&states.name, &first],
                &[("axis", Attribute::Int(1))],
            )
        }
        Some(3) => {
            // Mean over the tokens the attention mask keeps.
            if !model.inputs().iter().any(|i| i.name == "attention_mask") {
                new_inputs.push(ValueInfo::new(
                    "attention_mask",
                    ElementType::Int64,
                    vec![batch(), Dim::Named("sequence".to_owned())],
                ));
            }
            let mask = g.node("Cast", &["attention_mask"], &[("to", Attribute::Int(1))]);
            let shape = g.constant_i64("mask_shape", &[0, 0, 1], &[3]);
            let mask3 = g.node("Reshape", &[&mask, &shape], &[]);
            let masked = g.node("Mul", &[&states.name, &mask3], &[]);
            let sum = g.reduce("ReduceSum", &masked, &[1], false);
            let count = g.reduce("ReduceSum", &mask, &[1], true);
            let one = g.scalar("one", 1.0);
            let count = g.node("Max", &[&count, &one], &[]);
            g.node("Div", &[&sum, &count], &[])
        }
        other => {
            return Err(JobError::invalid(
                format!(
                    "the backbone's output `{}` has rank {}; expected [batch, tokens, dim] or [batch, dim]",
                    states.name,
                    other.map_or("unknown".to_owned(), |r| r.to_string())
                ),
                "export the head alone with --head-only",
            ));
        }
    };
    let features = if settings.normalize {
        graft_headkit::l2_normalize(&mut g, &pooled)
    } else {
        pooled
    };
    head_nodes(&mut g, &loaded.trained, &features)?;
    let note = format!(
        "token ids from the backbone's tokenizer (truncate at {} tokens, pad with 0 and attention_mask 0); \
         token_type_ids all 0{}{}",
        settings.max_length,
        settings
            .prompt
            .as_deref()
            .map_or(String::new(), |p| format!(
                "; put each text through the prompt {p:?} first"
            )),
        // The graph reads one token sequence; the run's windows and their pooling stay outside it.
        settings.long_texts.as_ref().map_or(String::new(), |l| format!(
            "; the run embedded longer texts in windows of {} tokens pooled by their {}: this graph \
             reads one window and truncates (embed long texts with graft for the run's features)",
            settings.max_length, l.chunk_pooling
        ))
    );
    let meta = metadata(loaded, "merged", &note);
    let bytes = model
        .merge(None, &[], &g, &new_inputs, &outputs(&loaded.trained), &meta)
        .map_err(|e| model_error(backbone_path, e))?;
    let mut inputs: Vec<ValueInfo> = model.inputs().to_vec();
    inputs.extend(new_inputs);
    Ok((bytes, inputs))
}

/// Backbone + head for an image backbone: 8-bit RGB pixels `[batch, size, size, 3]` (already resized and
/// centre-cropped) in; scaling, normalisation, channel order and layout happen inside.
fn merged_image_model(
    loaded: &LoadedHead,
    image: &ImageSettings,
    backbone_path: &Path,
    backbone: &[u8],
) -> Result<(Vec<u8>, Vec<ValueInfo>), JobError> {
    let model = OnnxModel::parse(backbone).map_err(|e| model_error(backbone_path, e))?;
    let input = image.input.as_str();
    let output = image.output.as_str();
    let size = i64::from(image.image_size);
    let features = model
        .outputs()
        .iter()
        .find(|o| o.name == output)
        .ok_or_else(|| {
            JobError::invalid(
                format!("the backbone has no output `{output}`"),
                "the run's backbone settings do not match this model",
            )
        })?
        .clone();

    let mut pre = Graph::new(model.opset(), "graft/pre/");
    let float = image.dtype == "float32";
    let mut x = "pixels".to_owned();
    if float {
        let cast = pre.node("Cast", &[&x], &[("to", Attribute::Int(1))]);
        // (v / 255 − mean) / std, in graft's order of operations.
        let full = pre.scalar("full_scale", 255.0);
        let mean = pre.constant("pixel_mean", ndarray::aview1(&image.mean).into_dyn());
        let std = pre.constant("pixel_std", ndarray::aview1(&image.std).into_dyn());
        let unit = pre.node("Div", &[&cast, &full], &[]);
        let centred = pre.node("Sub", &[&unit, &mean], &[]);
        x = pre.node("Div", &[&centred, &std], &[]);
    }
    if image.bgr {
        let order = pre.constant_i64("bgr", &[2, 1, 0], &[3]);
        x = pre.node("Gather", &[&x, &order], &[("axis", Attribute::Int(3))]);
    }
    if image.layout == "nchw" {
        pre.node_into(
            "Transpose",
            &[&x],
            &[("perm", Attribute::Ints(vec![0, 3, 1, 2]))],
            input,
        );
    } else {
        pre.node_into("Identity", &[&x], &[], input);
    }

    let mut g = Graph::new(model.opset(), "graft/");
    let pooled = match features.rank() {
        Some(2) => features.name.clone(),
        Some(4) => g.reduce("ReduceMean", &features.name, &[2, 3], false),
        other => {
            return Err(JobError::invalid(
                format!(
                    "the backbone's output `{output}` has rank {}; expected [batch, dim] or [batch, c, h, w]",
                    other.map_or("unknown".to_owned(), |r| r.to_string())
                ),
                "export the head alone with --head-only",
            ));
        }
    };
    head_nodes(&mut g, &loaded.trained, &pooled)?;
    let pixels = ValueInfo::new(
        "pixels",
        ElementType::Uint8,
        vec![batch(), Dim::Fixed(size), Dim::Fixed(size), Dim::Fixed(3)],
    );
    let note = format!(
        "pixels: 8-bit RGB, [batch, {size}, {size}, 3]; resize the short side to {} (bilinear) and take the \
         centred {size}×{size} crop first",
        image.resize
    );
    let meta = metadata(loaded, "merged", &note);
    let bytes = model
        .merge(
            Some(&pre),
            &[input],
            &g,
            std::slice::from_ref(&pixels),
            &outputs(&loaded.trained),
            &meta,
        )
        .map_err(|e| model_error(backbone_path, e))?;
    Ok((bytes, vec![pixels]))
}

/// Copies the tokenizer to `tokenizer.json` in the output's folder; a different `tokenizer.json` already
/// there is refused rather than replaced.
fn tokenizer_beside(source: &Path, output: &Path) -> Result<PathBuf, JobError> {
    let target = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("tokenizer.json");
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| JobError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let bytes = read(source)?;
    if target.exists() {
        if read(&target)? == bytes {
            return Ok(target);
        }
        return Err(JobError::invalid(
            format!(
                "{} already holds another tokenizer than the one this model reads",
                target.display()
            ),
            "export into a folder of its own (--output <folder>/model.onnx)",
        ));
    }
    crate::write_atomic(&target, &bytes)?;
    Ok(target)
}

/// Exports a run's head to ONNX (merged with its backbone unless `head_only`).
pub fn export(job: &ExportJob) -> Result<ExportOutcome, JobError> {
    let json_path = head_file(&job.run_dir, job.head.as_deref())?;
    let loaded = load_head(&json_path)?;
    let name = crate::predict::artefact_name(&json_path);
    let output = job.output.clone().unwrap_or_else(|| {
        let file = if job.head_only {
            format!("{name}.head.onnx")
        } else {
            format!("{name}.onnx")
        };
        job.run_dir.join("heads").join(file)
    });
    if output.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return Err(JobError::invalid(
            format!("cannot write an ONNX model to {}", output.display()),
            "name the output .onnx",
        ));
    }
    let mut tokenizer = None;
    let (bytes, inputs) = if job.head_only {
        head_only_model(&loaded)?
    } else if let Some(settings) = &loaded.info.backbone.settings {
        let image = settings.image.is_some();
        let model = recorded_model(&loaded, &job.run_dir)?;
        let cache = Cache::new(&job.cache_dir);
        let sha = model_sha256(&cache, &model, image)?;
        if sha != loaded.info.backbone_sha256 {
            return Err(JobError::invalid(
                format!(
                    "the backbone's sha256 is {sha}, but the head was trained on features of {}",
                    loaded.info.backbone_sha256
                ),
                "the recorded backbone file changed since the run; restore it or run the pipeline again",
            ));
        }
        crate::predict::check_tokenizer(&loaded, &model)?;
        let path = match &model {
            ModelSource::Registry(n) if image => cache.image_model(n)?.onnx.path,
            ModelSource::Registry(n) => graft_engine::provision::text_model(&cache, n)?.1.path,
            ModelSource::Files { onnx, .. } => onnx.clone(),
        };
        let backbone = std::fs::read(&path).map_err(|source| JobError::Io {
            path: path.clone(),
            source,
        })?;
        if !image {
            tokenizer = Some(match &model {
                ModelSource::Registry(n) => graft_engine::provision::text_model(&cache, n)?
                    .0
                    .tokenizer
                    .map(|t| t.path)
                    .unwrap_or_default(),
                ModelSource::Files { tokenizer, .. } => tokenizer.clone(),
            });
        }
        match &settings.image {
            Some(image) => merged_image_model(&loaded, image, &path, &backbone)?,
            None => merged_text_model(&loaded, settings, &path, &backbone)?,
        }
    } else {
        return Err(JobError::invalid(
            "the run trained on given features, so there is no backbone to merge the head with",
            "export the head alone with --head-only; run it on the same kind of features",
        ));
    };
    // The merged text model takes token ids: its tokenizer goes beside it, as Hugging Face folders hold it.
    let tokenizer = tokenizer
        .map(|source| tokenizer_beside(&source, &output))
        .transpose()?;
    crate::write_atomic(&output, &bytes)?;
    Ok(ExportOutcome {
        tokenizer,
        output,
        head: name,
        inputs: inputs.iter().map(describe).collect(),
        outputs: outputs(&loaded.trained).iter().map(describe).collect(),
        bytes: bytes.len(),
    })
}
