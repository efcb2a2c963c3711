//! `[domain_adaptation] simcse`: the backbone itself adapted to both domains without labels — its top blocks
//! tuned with SimCSE (Gao, Yao & Chen, 2021) on the source's training texts and the target's texts — then the
//! headline head on the adapted features, scored like the feature alignments.
//!
//! The bottom blocks stay frozen: their states come once from graft-onnx's graph of them (through the
//! feature cache), and the adapted features from graft-tune's forward pass of the tuned top blocks over
//! those states.

use std::time::Instant;

use graft_config::techniques::DomainSimcsePlan;
use graft_tune::{BertWeights, Decay, Objective, TuneOptions, TuneOutcome, TuneRow};
use ndarray::Array2;

use crate::PipelineError;
use crate::stages::RunData;

/// The graph output at the frozen boundary.
const BOUNDARY_OUTPUT: &str = "boundary_states";

/// The adapted encoder and the features it gives each group of rows.
pub(super) struct Adapted {
    pub(super) weights: BertWeights,
    pub(super) outcome: TuneOutcome,
    pub(super) source_train: Array2<f32>,
    pub(super) source_test: Array2<f32>,
    pub(super) target: Array2<f32>,
    /// Texts SimCSE trained on (source training rows + target rows).
    pub(super) rows: usize,
    pub(super) blocks: usize,
    pub(super) states_seconds: f64,
    pub(super) seconds: f64,
    /// Mean 1 − cosine between the target's frozen and adapted features (set by the caller).
    pub(super) target_shift: f64,
}

pub(super) fn adapt(
    p: &DomainSimcsePlan,
    d: &RunData<'_>,
    target_texts: &[String],
) -> Result<Adapted, PipelineError> {
    let (Some(kit), Some(texts)) = (d.tune, d.texts) else {
        return Err(d
            .diagnostic(
                &Some(p.span.clone()),
                "SimCSE needs the backbone's float32 weights",
            )
            .with_hint("use `model = \"minilm-l6\"` in [backbone]")
            .into());
    };
    let weights = BertWeights::read_safetensors(&kit.weights, kit.attention_heads)?;
    let blocks = weights.config().layers;
    if p.layers > blocks {
        return Err(d
            .diagnostic(
                &Some(p.span.clone()),
                format!(
                    "`layers = {}` but the backbone has {blocks} blocks",
                    p.layers
                ),
            )
            .with_hint(format!("use 1 to {blocks}"))
            .into());
    }
    let boundary = blocks - p.layers;
    let clock = Instant::now();
    let all: Vec<String> = d
        .train
        .iter()
        .chain(d.test)
        .map(|&row| texts[row].clone())
        .chain(target_texts.iter().cloned())
        .collect();
    let bottom = crate::provision::bert_graph(&weights, boundary, BOUNDARY_OUTPUT)?;
    let bottom_path = (kit.store_graph)(&bottom)?;
    let ((ids, states), _) = (kit.token_states)(&bottom_path, BOUNDARY_OUTPUT, &all)?;
    let states_seconds = clock.elapsed().as_secs_f64();
    let rows: Vec<TuneRow<'_>> = ids
        .iter()
        .zip(&states)
        .map(|(ids, states)| TuneRow {
            ids,
            states: (boundary > 0).then_some(states),
            label: 0,
        })
        .collect();
    let (train_end, test_end) = (d.train.len(), d.train.len() + d.test.len());
    // SimCSE reads the source's training texts and every target text; the source's test rows are only scored.
    let learn: Vec<TuneRow<'_>> = rows[..train_end]
        .iter()
        .chain(&rows[test_end..])
        .copied()
        .collect();
    let options = TuneOptions {
        trainable_layers: p.layers,
        learning_rate: p.learning_rate,
        head_learning_rate: p.learning_rate,
        layer_decay: 1.0,
        epochs: p.epochs,
        batch_size: p.batch_size,
        warmup: 0.1,
        decay: Decay::Linear,
        weight_decay: 0.01,
        dropout: p.dropout as f32,
        patience: None,
        gradual_unfreezing: false,
        frozen_dropout: false,
        objective: Objective::SimCse {
            temperature: p.temperature,
        },
        max_grad_norm: 1.0,
        seed: graft_stdx::derive_seed(d.seed, "domain simcse"),
        lora: None,
    };
    let bar = crate::progress::stage_bar(d.progress, "SimCSE on both domains", 0, 0, "steps");
    let clock = Instant::now();
    let outcome = graft_tune::fine_tune(&weights, &learn, &[], &options, &mut |s| {
        crate::progress::show_tuning_step(&bar, s)
    })?;
    bar.finish_and_clear();
    let seconds = clock.elapsed().as_secs_f64();
    let embed = |part: &[TuneRow<'_>]| graft_tune::embed_rows(&outcome.weights, p.layers, part, 64);
    Ok(Adapted {
        source_train: embed(&rows[..train_end])?,
        source_test: embed(&rows[train_end..test_end])?,
        target: embed(&rows[test_end..])?,
        weights: outcome.weights.clone(),
        rows: learn.len(),
        blocks,
        outcome,
        states_seconds,
        seconds,
        target_shift: 0.0,
    })
}
