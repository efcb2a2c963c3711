//! `[fine_tune]`: train the backbone's top blocks on the task (or SetFit's contrastive pairs), then the same
//! head on the tuned features, compared with the frozen features on the same split.

use crate::spanned::Spanned;
use graft_schema::techniques::{
    FineTuneObjective, FineTuneSchedule, FirstObjective, FirstTexts, RawFineTune, RawFirstPhase,
    RawLayers,
};
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[fine_tune]`, checked. `layers = None` means every block (and the embeddings).
#[derive(Debug, Clone)]
pub struct FineTunePlan {
    pub layers: Option<usize>,
    pub layers_span: Option<std::ops::Range<usize>>,
    pub objective: FineTuneObjective,
    pub learning_rate: f64,
    pub head_learning_rate: f64,
    pub layer_decay: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub warmup: f64,
    pub schedule: FineTuneSchedule,
    pub weight_decay: f64,
    pub dropout: f64,
    pub patience: Option<usize>,
    pub patience_span: Option<std::ops::Range<usize>>,
    pub gradual_unfreezing: bool,
    /// Run the frozen blocks every step with dropout (as PyTorch's training mode) instead of from their
    /// cached states.
    pub frozen_dropout: bool,
    /// SetFit's `num_iterations` (contrastive objective): two pairs per training row each.
    pub iterations: usize,
    pub max_grad_norm: f64,
    /// Seeded draws of training rows the comparison is repeated on (1: the split alone).
    pub draws: usize,
    /// The float32 weights of a backbone given as files (safetensors) and its attention heads; a
    /// registered backbone brings its own.
    pub weights: Option<(std::path::PathBuf, usize)>,
    /// SimCSE's softmax temperature (`objective = "simcse"`).
    pub temperature: f64,
    /// `[fine_tune.first]`: a phase before the task's own training.
    pub first: Option<FirstPhasePlan>,
    /// `lora = { rank, alpha }`: low-rank adapters instead of the blocks' tensors.
    pub lora: Option<(usize, f64)>,
    pub span: std::ops::Range<usize>,
}

/// `[fine_tune.first]`, checked: the same top blocks trained first on unlabelled texts (SimCSE) or on
/// another labelled data set (intermediate-task transfer), then on the task.
#[derive(Debug, Clone)]
pub struct FirstPhasePlan {
    pub objective: FirstObjective,
    /// SimCSE: the training rows' texts or every row's.
    pub texts: FirstTexts,
    /// Classification: the registered data set.
    pub dataset: Option<String>,
    /// Classification: at most this many of its rows (a seeded stratified draw).
    pub max_rows: Option<usize>,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub dropout: f64,
    pub temperature: f64,
    pub span: std::ops::Range<usize>,
}

impl FirstPhasePlan {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "objective": format!("{:?}", self.objective).to_lowercase(),
            "texts": format!("{:?}", self.texts).to_lowercase(),
            "dataset": self.dataset,
            "max_rows": self.max_rows,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "dropout": self.dropout,
            "temperature": self.temperature,
        })
    }
}

impl FineTunePlan {
    /// Pairs drawn per training row by the contrastive objective: one same-class and one other-class
    /// partner per iteration, as the `setfit` library samples them.
    pub fn pairs_per_row(&self) -> usize {
        2 * self.iterations
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "layers": self.layers.map_or(json!("all"), |k| json!(k)),
            "objective": format!("{:?}", self.objective).to_lowercase(),
            "learning_rate": self.learning_rate,
            "head_learning_rate": self.head_learning_rate,
            "layer_decay": self.layer_decay,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "schedule": format!("{:?}", self.schedule).to_lowercase(),
            "weight_decay": self.weight_decay,
            "dropout": self.dropout,
            "patience": self.patience,
            "gradual_unfreezing": self.gradual_unfreezing,
            "frozen_dropout": self.frozen_dropout,
            "iterations": self.iterations,
            "pairs_per_row": self.pairs_per_row(),
            "max_grad_norm": self.max_grad_norm,
            "draws": self.draws,
            "weights": self.weights.as_ref().map(|(w, _)| w.display().to_string()),
            "attention_heads": self.weights.as_ref().map(|(_, h)| h),
            "temperature": self.temperature,
            "first": self.first.as_ref().map(FirstPhasePlan::json),
            "lora": self.lora.map(|(rank, alpha)| json!({ "rank": rank, "alpha": alpha })),
        })
    }
}

/// The registered text backbones published with float32 weights graft-tune trains (BERT), for hints.
fn tunable_models() -> String {
    graft_assets::Registry::builtin()
        .models
        .iter()
        .filter(|(_, m)| {
            m.weights
                .as_ref()
                .is_some_and(|w| w.architecture.trainable())
        })
        .map(|(n, _)| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A float in `[low, high)` (`high` included when `closed`), or the default.
fn ranged(
    c: &Checker<'_>,
    value: &Option<Spanned<f64>>,
    default: f64,
    key: &str,
    (low, high, closed): (f64, f64, bool),
    hint: &str,
) -> Result<f64, Diagnostic> {
    let Some(v) = value else {
        return Ok(default);
    };
    let x = *v.get_ref();
    let inside = x.is_finite() && x >= low && (x < high || (closed && x == high));
    if inside {
        return Ok(x);
    }
    let upper = if closed { "]" } else { ")" };
    Err(c
        .error(
            v.span(),
            format!("`{key}` = {x} must be in [{low}, {high}{upper}"),
        )
        .with_hint(hint.to_owned()))
}

/// A learning rate: finite and above 0.
fn rate(
    c: &Checker<'_>,
    value: &Option<Spanned<f64>>,
    default: f64,
    key: &str,
) -> Result<f64, Diagnostic> {
    c.positive_number(
        value,
        default,
        key,
        "pretrained blocks take small rates (1e-5 to 1e-4); a new head larger ones",
    )
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawFineTune>,
    modality: Modality,
) -> Result<FineTunePlan, Diagnostic> {
    let span = raw.span();
    if !modality.texts {
        return Err(c
            .error(span, "`[fine_tune]` needs a text backbone")
            .with_hint(
                "fine-tuning trains a BERT-style text encoder, e.g. `model = \"minilm-l6\"`",
            ));
    }
    c.single_label(modality, span.clone(), "fine_tune")?;
    let r = raw.into_inner();
    let layers = checked_layers(c, &r)?;
    let objective = checked_objective(c, &r)?;
    let weights = weights(c, &r, modality, &span)?;
    let learning_rate = rate(c, &r.learning_rate, 1e-4, "learning_rate")?;
    let dropout = ranged(
        c,
        &r.dropout,
        0.1,
        "dropout",
        (0.0, 1.0, false),
        "BERT trains with 0.1",
    )?;
    let first = match &r.first {
        Some(first) => Some(checked_first(c, first, learning_rate, dropout)?),
        None => None,
    };
    let lora = match &r.lora {
        Some(l) => Some(checked_lora(c, l)?),
        None => None,
    };
    Ok(FineTunePlan {
        weights,
        temperature: temperature(c, &r.temperature)?,
        first,
        lora,
        layers,
        layers_span: r.layers.as_ref().map(Spanned::span),
        objective,
        learning_rate,
        head_learning_rate: rate(c, &r.head_learning_rate, 1e-2, "head_learning_rate")?,
        layer_decay: ranged(
            c,
            &r.layer_decay,
            1.0,
            "layer_decay",
            (0.0, 1.0, true),
            "each block below the top trains at this factor of the one above; 0.9 is common, 1 turns it off",
        )?,
        epochs: c.positive(
            &r.epochs,
            3,
            "epochs",
            "a few epochs are usual when fine-tuning",
        )?,
        batch_size: c.positive(
            &r.batch_size,
            32,
            "batch_size",
            "16 or 32 rows per step are usual",
        )?,
        warmup: ranged(
            c,
            &r.warmup,
            0.1,
            "warmup",
            (0.0, 1.0, false),
            "the share of all steps spent warming up, e.g. 0.1",
        )?,
        schedule: r
            .schedule
            .as_ref()
            .map_or(FineTuneSchedule::Linear, |s| *s.get_ref()),
        weight_decay: ranged(
            c,
            &r.weight_decay,
            0.01,
            "weight_decay",
            (0.0, 1.0, false),
            "AdamW's decoupled weight decay, e.g. 0.01",
        )?,
        dropout,
        patience: match &r.patience {
            None => None,
            Some(p) if *p.get_ref() > 0 => Some(*p.get_ref()),
            Some(p) => {
                return Err(c
                    .error(p.span(), "`patience` must be at least 1")
                    .with_hint("stop after this many epochs without a better validation score; leave it out to train every epoch"));
            }
        },
        patience_span: r.patience.as_ref().map(Spanned::span),
        gradual_unfreezing: r.gradual_unfreezing.unwrap_or(false),
        frozen_dropout: r.frozen_dropout.unwrap_or(false),
        iterations: c.positive(
            &r.iterations,
            20,
            "iterations",
            "SetFit's default num_iterations is 20: 40 pairs per labelled sentence",
        )?,
        max_grad_norm: rate(c, &r.max_grad_norm, 1.0, "max_grad_norm")?,
        draws: c.positive(
            &r.draws,
            1,
            "draws",
            "few-shot results vary with the rows drawn: SetFit's paper averages 10 draws",
        )?,
        span,
    })
}

/// `layers`: a positive number of top blocks (default 2), or "all" (`None`).
fn checked_layers(c: &Checker<'_>, r: &RawFineTune) -> Result<Option<usize>, Diagnostic> {
    Ok(match &r.layers {
        None => Some(2),
        Some(l) => match l.get_ref() {
            RawLayers::Count(k) if *k > 0 => Some(*k),
            RawLayers::Word(w) if w == "all" => None,
            _ => {
                return Err(c
                    .error(l.span(), "`layers` must be a positive number of top blocks or \"all\"")
                    .with_hint("e.g. `layers = 2` trains the top two blocks; `layers = \"all\"` trains every block and the embeddings"));
            }
        },
    })
}

/// `objective`, with the keys that belong to one objective (`iterations`) or were renamed (`pairs_per_row`).
fn checked_objective(c: &Checker<'_>, r: &RawFineTune) -> Result<FineTuneObjective, Diagnostic> {
    let objective = r
        .objective
        .as_ref()
        .map_or(FineTuneObjective::Classification, |o| *o.get_ref());
    if let Some(pairs) = &r.pairs_per_row {
        let n = *pairs.get_ref();
        return Err(c
            .error(
                pairs.span(),
                "`pairs_per_row` is now `iterations`, counted as SetFit counts `num_iterations`",
            )
            .with_hint(format!(
                "each iteration gives every row one same-class and one other-class partner (2 pairs): \
                 `pairs_per_row = {n}` is `iterations = {}`; SetFit's default is `iterations = 20` (40 pairs per row)",
                n.div_ceil(2)
            )));
    }
    if let Some(iterations) = &r.iterations
        && objective != FineTuneObjective::Contrastive
    {
        return Err(c
            .error(
                iterations.span(),
                "`iterations` applies to `objective = \"contrastive\"` only",
            )
            .with_hint("remove it, or set `objective = \"contrastive\"`"));
    }
    if let Some(t) = &r.temperature
        && objective != FineTuneObjective::Simcse
    {
        return Err(c
            .error(
                t.span(),
                "`temperature` applies to `objective = \"simcse\"` only",
            )
            .with_hint("remove it, or set `objective = \"simcse\"`"));
    }
    if objective == FineTuneObjective::Simcse {
        if let Some(p) = &r.patience {
            return Err(c
                .error(
                    p.span(),
                    "SimCSE has no validation score for `patience` to watch",
                )
                .with_hint("remove `patience`: SimCSE keeps its last epoch's weights"));
        }
        if let Some(d) = r.dropout.as_ref().filter(|d| *d.get_ref() == 0.0) {
            return Err(c.error(d.span(), "SimCSE needs `dropout` > 0").with_hint(
                "its positive pairs are one text through two dropout masks; SimCSE used 0.1",
            ));
        }
        if let Some(first) = &r.first {
            return Err(c
                .error(first.span(), "`[fine_tune.first]` comes before the task's own training, and `objective = \"simcse\"` has none")
                .with_hint("for SimCSE and then the task, set `objective = \"classification\"` here and `objective = \"simcse\"` in [fine_tune.first]"));
        }
    }
    Ok(objective)
}

/// `lora = { rank, alpha }`: PEFT's defaults (8, 8).
fn checked_lora(
    c: &Checker<'_>,
    l: &Spanned<graft_schema::techniques::RawLora>,
) -> Result<(usize, f64), Diagnostic> {
    let raw = l.get_ref();
    let rank = c.positive(&raw.rank, 8, "rank", "LoRA's rank r: 4 to 16 is usual")?;
    let alpha = c.positive_number(
        &raw.alpha,
        8.0,
        "alpha",
        "the adapters' change is (alpha / rank)·B·A; alpha = 2 × rank is common",
    )?;
    Ok((rank, alpha))
}

/// `temperature`: positive, SimCSE's 0.05 by default.
fn temperature(c: &Checker<'_>, value: &Option<Spanned<f64>>) -> Result<f64, Diagnostic> {
    c.positive_number(
        value,
        0.05,
        "temperature",
        "SimCSE divides cosines by 0.05 before the softmax",
    )
}

/// `[fine_tune.first]`: keys that belong to one objective only are refused under the other, each at its key.
fn checked_first(
    c: &Checker<'_>,
    first: &Spanned<RawFirstPhase>,
    learning_rate: f64,
    dropout: f64,
) -> Result<FirstPhasePlan, Diagnostic> {
    let span = first.span();
    let f = first.get_ref();
    let objective = *f.objective.get_ref();
    let misplaced = |key: &str, at: Option<std::ops::Range<usize>>, belongs: &str| {
        at.map_or(Ok(()), |at| {
            Err(c
                .error(
                    at,
                    format!("`{key}` applies to `objective = \"{belongs}\"` in [fine_tune.first]"),
                )
                .with_hint(format!("remove it, or set `objective = \"{belongs}\"`")))
        })
    };
    let dataset = match objective {
        FirstObjective::Simcse => {
            misplaced(
                "dataset",
                f.dataset.as_ref().map(Spanned::span),
                "classification",
            )?;
            misplaced(
                "max_rows",
                f.max_rows.as_ref().map(Spanned::span),
                "classification",
            )?;
            None
        }
        FirstObjective::Classification => {
            misplaced("texts", f.texts.as_ref().map(Spanned::span), "simcse")?;
            misplaced(
                "temperature",
                f.temperature.as_ref().map(Spanned::span),
                "simcse",
            )?;
            let registry = graft_assets::Registry::builtin();
            let known: Vec<&str> = registry.datasets.keys().map(String::as_str).collect();
            match &f.dataset {
                None => {
                    return Err(c
                        .error(span, "an intermediate task needs `dataset`: the labelled data set to train on first")
                        .with_hint(format!("registered data sets: {}", known.join(", "))));
                }
                Some(name) if !registry.datasets.contains_key(name.get_ref()) => {
                    return Err(c
                        .error(
                            name.span(),
                            format!("unknown data set `{}`", name.get_ref()),
                        )
                        .with_hint(format!("registered data sets: {}", known.join(", "))));
                }
                Some(name) => Some(name.get_ref().clone()),
            }
        }
    };
    let dropout = ranged(
        c,
        &f.dropout,
        dropout,
        "dropout",
        (0.0, 1.0, false),
        "BERT trains with 0.1",
    )?;
    if objective == FirstObjective::Simcse && dropout == 0.0 {
        let at = f.dropout.as_ref().map_or(span.clone(), Spanned::span);
        return Err(c.error(at, "SimCSE needs `dropout` > 0").with_hint(
            "its positive pairs are one text through two dropout masks; SimCSE used 0.1",
        ));
    }
    Ok(FirstPhasePlan {
        objective,
        texts: f.texts.as_ref().map_or(FirstTexts::Train, |t| *t.get_ref()),
        dataset,
        max_rows: match &f.max_rows {
            None => None,
            Some(_) => Some(c.positive(
                &f.max_rows,
                1,
                "max_rows",
                "rows of the intermediate data set, at most",
            )?),
        },
        epochs: c.positive(
            &f.epochs,
            1,
            "epochs",
            "one epoch is SimCSE's and often enough for an intermediate task",
        )?,
        learning_rate: rate(c, &f.learning_rate, learning_rate, "learning_rate")?,
        batch_size: c.positive(
            &f.batch_size,
            64,
            "batch_size",
            "SimCSE used 64 texts per batch: each one's negatives are the other 63",
        )?,
        dropout,
        temperature: match objective {
            FirstObjective::Simcse => temperature(c, &f.temperature)?,
            FirstObjective::Classification => 0.05,
        },
        span,
    })
}

/// The float32 weights `[fine_tune]` trains: a registered backbone's own, or `weights` + `attention_heads`
/// beside the user's graph; each mistake at its key.
fn weights(
    c: &Checker<'_>,
    r: &RawFineTune,
    modality: Modality,
    span: &std::ops::Range<usize>,
) -> Result<Option<(std::path::PathBuf, usize)>, Diagnostic> {
    let tunable = tunable_models();
    match (modality.registered_weights, &r.weights) {
        (Some(false), _) => {
            return Err(c
                .error(
                    span.clone(),
                    "the registered backbone has no float32 weights graft can fine-tune (graft-tune trains BERT-architecture encoders)",
                )
                .with_hint(format!("registered backbones with weights: {tunable}")));
        }
        (Some(true), Some(w)) => {
            return Err(c
                .error(
                    w.span(),
                    "`weights` is for a backbone given as files; a registered one brings its own",
                )
                .with_hint("remove `weights` and `attention_heads`"));
        }
        (None, None) => {
            return Err(c
                .error(span.clone(), "fine-tuning needs the backbone's float32 weights")
                .with_hint(format!("use a registered backbone with weights ({tunable}), or name the weights your ONNX graph was written from: `weights = \"model.safetensors\"` and `attention_heads`")));
        }
        _ => {}
    }
    Ok(match (&r.weights, &r.attention_heads) {
        (None, None) => None,
        (Some(w), Some(h)) if *h.get_ref() > 0 => {
            let path = c.existing_file(w, "fine-tuning weights")?;
            safetensors_header(&path).map_err(|why| {
                c.error(w.span(), format!("{}: not a readable safetensors file ({why})", path.display()))
                    .with_hint("the float32 weights the ONNX graph was written from, as Hugging Face saves them (model.safetensors)")
            })?;
            Some((path, *h.get_ref()))
        }
        (Some(w), None) => {
            return Err(c
                .error(w.span(), "`weights` needs `attention_heads` beside it")
                .with_hint("the head count is not visible in the tensors: take it from the model's config.json (`num_attention_heads`)"));
        }
        (_, Some(h)) => {
            return Err(c
                .error(
                    h.span(),
                    "`attention_heads` goes with `weights` (a positive count)",
                )
                .with_hint(
                    "give `weights = \"model.safetensors\"` and the model's `num_attention_heads`",
                ));
        }
    })
}

/// Reads a safetensors file's header — an 8-byte little-endian length, then that many bytes of JSON object —
/// without its tensors, so that `check` finds a damaged or wrong file at its key. The tensors themselves are
/// checked when fine-tuning reads them.
fn safetensors_header(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| "shorter than a safetensors header".to_owned())?;
    let length = u64::from_le_bytes(length);
    if length > size.saturating_sub(8) {
        return Err(format!(
            "its header claims {length} bytes, but the file holds {size}"
        ));
    }
    let mut header = vec![0u8; usize::try_from(length).map_err(|e| e.to_string())?];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    match serde_json::from_slice::<serde_json::Value>(&header) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err("its header is not a JSON object".to_owned()),
        Err(e) => Err(format!("its header is not JSON: {e}")),
    }
}
