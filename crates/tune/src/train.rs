//! The fine-tuning loop: seeded batches, AdamW parameter groups (layer-wise learning rates, no decay on
//! biases and layer norms), warm-up then linear or cosine decay, gradient clipping, gradual unfreezing,
//! early stopping with best-weight restore.

use std::time::Instant;

use crate::adamw::{AdamWParams, InPlaceAdamW, gradient_norm};
use candle_core::{DType, Device, Tensor, Var};
use ndarray::Array2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{Batch, Dropout, Encoder, padded_states, pool, zeros_var};
use crate::weights::{BLOCK_TENSORS, BertWeights, EMBEDDING_TENSORS};
use crate::{TuneError, candle_err};

/// What the encoder is trained to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Cross-entropy through a linear head on the pooled, normalised embedding.
    Classification {
        /// Number of classes.
        classes: usize,
    },
    /// SetFit: pairs drawn from the labels (same class → cosine 1, different → 0), squared error on the
    /// cosine similarity of the two embeddings.
    Contrastive {
        /// Pairs drawn per training row (half positive, half negative).
        pairs_per_row: usize,
    },
}

/// How the learning rate falls after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Stays at its peak.
    Constant,
    /// Falls linearly to zero at the last step.
    Linear,
    /// Follows half a cosine to zero at the last step.
    Cosine,
}

/// Everything a fine-tuning run needs to know; [`TuneOptions::check`] names the parameter that is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// Top blocks trained (the rest stay frozen); equal to the block count trains the embeddings too.
    pub trainable_layers: usize,
    /// Peak learning rate of the top block.
    pub learning_rate: f64,
    /// Peak learning rate of the new classification head.
    pub head_learning_rate: f64,
    /// Each block below the top gets this factor more (1 = the same rate everywhere).
    pub layer_decay: f64,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows (or pairs) per step.
    pub batch_size: usize,
    /// Share of all steps spent warming up linearly from zero.
    pub warmup: f64,
    /// The schedule after warm-up.
    pub decay: Decay,
    /// AdamW's decoupled weight decay (not applied to biases and layer norms).
    pub weight_decay: f64,
    /// Dropout on embeddings, attention probabilities and block outputs while training.
    pub dropout: f32,
    /// Stop after this many epochs without a better validation score, restoring the best weights.
    pub patience: Option<usize>,
    /// Unfreeze one more block per epoch, from the top, until `trainable_layers` train.
    pub gradual_unfreezing: bool,
    /// The training objective.
    pub objective: Objective,
    /// Gradients are scaled down to this global L2 norm when larger.
    pub max_grad_norm: f64,
    /// Seed of every random choice (batch order, dropout masks, pairs).
    pub seed: u64,
}

impl TuneOptions {
    /// Checks every parameter against the encoder's shape; the error names the first bad one.
    pub fn check(&self, layers: usize) -> Result<(), TuneError> {
        let bad = |name: &'static str, reason: String| Err(TuneError::Parameter { name, reason });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.trainable_layers == 0 || self.trainable_layers > layers {
            return bad(
                "layers",
                format!(
                    "must be between 1 and {layers}, got {}",
                    self.trainable_layers
                ),
            );
        }
        if !positive(self.learning_rate) {
            return bad(
                "learning_rate",
                format!("must be > 0, got {}", self.learning_rate),
            );
        }
        if !positive(self.head_learning_rate) {
            return bad(
                "head_learning_rate",
                format!("must be > 0, got {}", self.head_learning_rate),
            );
        }
        if !(self.layer_decay.is_finite() && self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad(
                "layer_decay",
                format!("must be in (0, 1], got {}", self.layer_decay),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.warmup.is_finite() && (0.0..1.0).contains(&self.warmup)) {
            return bad("warmup", format!("must be in [0, 1), got {}", self.warmup));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be ≥ 0, got {}", self.weight_decay),
            );
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if self.patience == Some(0) {
            return bad("patience", "must be at least 1".into());
        }
        if !positive(self.max_grad_norm) {
            return bad(
                "max_grad_norm",
                format!("must be > 0, got {}", self.max_grad_norm),
            );
        }
        match self.objective {
            Objective::Classification { classes } if classes < 2 => bad(
                "objective",
                format!("classification needs ≥ 2 classes, got {classes}"),
            ),
            Objective::Contrastive { pairs_per_row: 0 } => {
                bad("pairs_per_row", "must be at least 1".into())
            }
            _ => Ok(()),
        }
    }
}

/// One training or validation row: its token ids (special tokens included) and, when the bottom blocks
/// stay frozen, their cached output states `[ids.len(), hidden]` at the boundary.
#[derive(Debug, Clone, Copy)]
pub struct TuneRow<'a> {
    /// Token ids, `[CLS] … [SEP]`.
    pub ids: &'a [u32],
    /// The frozen blocks' output for these tokens; `None` when every block trains.
    pub states: Option<&'a Array2<f32>>,
    /// Class index.
    pub label: usize,
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Blocks that trained this epoch (grows with gradual unfreezing).
    pub trainable_blocks: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation loss, when there are validation rows.
    pub valid_loss: Option<f64>,
    /// Validation accuracy of the training head (classification objective).
    pub valid_accuracy: Option<f64>,
    /// The learning rate of the top block at the epoch's last step.
    pub learning_rate: f64,
    /// Wall-clock seconds of the epoch's training steps (validation excluded).
    pub seconds: f64,
    /// Of `seconds`: the forward passes and losses, the backward passes, and gradient clipping with the
    /// AdamW updates (candle runs each operation to completion, so wall time splits cleanly).
    #[serde(default)]
    pub phase_seconds: PhaseSeconds,
}

/// Where an epoch's training time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSeconds {
    /// Forward passes and the loss.
    pub forward: f64,
    /// `loss.backward()`.
    pub backward: f64,
    /// Gradient clipping and the optimiser steps.
    pub optimizer: f64,
}

/// Progress inside an epoch, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Epochs planned.
    pub epochs: usize,
    /// Steps done in this epoch.
    pub step: usize,
    /// Steps in this epoch.
    pub steps: usize,
    /// Mean training loss so far this epoch.
    pub loss: f64,
}

/// The tuned weights and the record of how they came about.
#[derive(Debug, Clone)]
pub struct TuneOutcome {
    /// Every tensor of the encoder; the trained ones at their best epoch.
    pub weights: BertWeights,
    /// One record per epoch run.
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Whether early stopping ended training before the last planned epoch.
    pub stopped_early: bool,
}

/// A set of variables sharing a learning rate and weight decay.
struct Group {
    optimizer: InPlaceAdamW,
    /// Blocks from the top (0 = top block; `layers` = the embeddings; `None` = the head).
    depth: Option<usize>,
    peak: f64,
}

fn decays(name: &str) -> bool {
    name.ends_with("weight") && !name.contains("LayerNorm")
}

/// Fine-tunes the top `options.trainable_layers` blocks of `weights`.
pub fn fine_tune(
    weights: &BertWeights,
    train: &[TuneRow<'_>],
    valid: &[TuneRow<'_>],
    options: &TuneOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TuneOutcome, TuneError> {
    let config = weights.config();
    options.check(config.layers)?;
    check_rows(weights, train, options, "training")?;
    check_rows(weights, valid, options, "validation")?;
    if train.is_empty() {
        return Err(TuneError::Parameter {
            name: "rows",
            reason: "no training rows".into(),
        });
    }
    crate::memory::keep_freed_memory();
    let device = Device::Cpu;
    let encoder = Encoder::new(weights, &device, DType::F32).map_err(candle_err)?;
    let head = match options.objective {
        Objective::Classification { classes } => Some((
            zeros_var(&[classes, config.hidden_size], &device).map_err(candle_err)?,
            zeros_var(&[classes], &device).map_err(candle_err)?,
        )),
        Objective::Contrastive { .. } => None,
    };
    let mut groups = param_groups(&encoder, head.as_ref(), options)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let units = training_units(train, options, &mut rng);
    let steps_per_epoch = units.len().div_ceil(options.batch_size);
    let total_steps = steps_per_epoch * options.epochs;
    let warmup_steps = (options.warmup * total_steps as f64).ceil() as usize;
    let valid_pairs = match options.objective {
        Objective::Contrastive { pairs_per_row } => {
            let mut pair_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5eed_0f7a_1d00);
            draw_pairs(valid, pairs_per_row, &mut pair_rng)
        }
        Objective::Classification { .. } => Vec::new(),
    };
    let ctx = Context {
        encoder: &encoder,
        head: head.as_ref(),
        options,
        device: &device,
    };
    let mut records = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut since_best = 0;
    let mut step = 0;
    let mut stopped_early = false;
    for epoch in 1..=options.epochs {
        let active = if options.gradual_unfreezing {
            epoch.min(options.trainable_layers)
        } else {
            options.trainable_layers
        };
        let started = Instant::now();
        let mut order: Vec<usize> = (0..units.len()).collect();
        order.shuffle(&mut rng);
        let batches = length_bucketed(&order, &units, train, options.batch_size, &mut rng);
        let mut loss_sum = 0.0;
        let mut lr_now = 0.0;
        let mut phases = PhaseSeconds::default();
        for (b, batch) in batches.iter().enumerate() {
            let clock = Instant::now();
            let factor = schedule(step, warmup_steps, total_steps, options.decay);
            let mut dropout = Dropout {
                rate: options.dropout,
                rng: &mut rng,
            };
            let loss = ctx.batch_loss(train, &units, batch, active, Some(&mut dropout))?;
            let value = f64::from(loss.to_scalar::<f32>().map_err(candle_err)?);
            if !value.is_finite() {
                return Err(TuneError::Diverged { epoch, step: b + 1 });
            }
            phases.forward += clock.elapsed().as_secs_f64();
            let clock = Instant::now();
            let grads = loss.backward().map_err(candle_err)?;
            phases.backward += clock.elapsed().as_secs_f64();
            let clock = Instant::now();
            let trained = trained_vars(&encoder, head.as_ref());
            let blocks = (active, config.layers);
            if let Some(lr) = update(
                &mut groups,
                &grads,
                &trained,
                blocks,
                options.max_grad_norm,
                factor,
            )? {
                lr_now = lr;
            }
            phases.optimizer += clock.elapsed().as_secs_f64();
            step += 1;
            loss_sum += value;
            progress(&Progress {
                epoch,
                epochs: options.epochs,
                step: b + 1,
                steps: batches.len(),
                loss: loss_sum / (b + 1) as f64,
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let (valid_loss, valid_accuracy) = ctx.validate(valid, &valid_pairs)?;
        records.push(EpochRecord {
            epoch,
            trainable_blocks: active,
            train_loss: loss_sum / batches.len().max(1) as f64,
            valid_loss,
            valid_accuracy,
            learning_rate: lr_now,
            seconds,
            phase_seconds: phases,
        });
        // Higher is better: accuracy first, loss to break ties (or alone for contrastive training).
        let score = match (valid_accuracy, valid_loss) {
            (Some(a), Some(l)) => a - 1e-6 * l,
            (None, Some(l)) => -l,
            _ => f64::from(epoch as u32),
        };
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, epoch, snapshot(&encoder, head.as_ref())?));
            since_best = 0;
        } else {
            since_best += 1;
            if options.patience.is_some_and(|p| since_best >= p) && !valid.is_empty() {
                stopped_early = epoch < options.epochs;
                break;
            }
        }
    }
    let (_, best_epoch, kept) = best.expect("at least one epoch ran");
    restore(&encoder, head.as_ref(), &kept)?;
    let mut tuned = weights.clone();
    encoder.write_into(&mut tuned).map_err(candle_err)?;
    Ok(TuneOutcome {
        weights: tuned,
        epochs: records,
        best_epoch,
        stopped_early,
    })
}

fn group_active(depth: Option<usize>, active: usize, layers: usize) -> bool {
    match depth {
        None => true,
        Some(d) if d == layers => active == layers,
        Some(d) => d < active,
    }
}

fn check_rows(
    weights: &BertWeights,
    rows: &[TuneRow<'_>],
    options: &TuneOptions,
    which: &'static str,
) -> Result<(), TuneError> {
    let c = weights.config();
    let needs_states = options.trainable_layers < c.layers;
    for (index, row) in rows.iter().enumerate() {
        let fail = |reason: String| {
            Err(TuneError::Row {
                which,
                index,
                reason,
            })
        };
        if row.ids.is_empty() || row.ids.len() > c.max_positions {
            return fail(format!(
                "{} tokens; a row needs 1 to {}",
                row.ids.len(),
                c.max_positions
            ));
        }
        if let Some(&id) = row.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return fail(format!(
                "token id {id} is outside the vocabulary of {}",
                c.vocab_size
            ));
        }
        if let Objective::Classification { classes } = options.objective
            && row.label >= classes
        {
            return fail(format!("label {} with {classes} classes", row.label));
        }
        match (needs_states, row.states) {
            (true, None) => return fail("the frozen blocks' states are missing".into()),
            (true, Some(s)) if s.dim() != (row.ids.len(), c.hidden_size) => {
                return fail(format!(
                    "states of shape {:?}, expected [{}, {}]",
                    s.dim(),
                    row.ids.len(),
                    c.hidden_size
                ));
            }
            (true, Some(s)) if s.iter().any(|v| !v.is_finite()) => {
                return fail("states hold a non-finite value".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A training unit: one row (classification) or one pair with its target cosine (contrastive).
#[derive(Debug, Clone, Copy)]
enum Unit {
    Row(usize),
    Pair(usize, usize, f32),
}

impl Unit {
    fn longest(&self, rows: &[TuneRow<'_>]) -> usize {
        match *self {
            Unit::Row(r) => rows[r].ids.len(),
            Unit::Pair(a, b, _) => rows[a].ids.len().max(rows[b].ids.len()),
        }
    }
}

fn training_units(rows: &[TuneRow<'_>], options: &TuneOptions, rng: &mut ChaCha8Rng) -> Vec<Unit> {
    match options.objective {
        Objective::Classification { .. } => (0..rows.len()).map(Unit::Row).collect(),
        Objective::Contrastive { pairs_per_row } => draw_pairs(rows, pairs_per_row, rng),
    }
}

/// SetFit's pair generation: for each row, alternately a row of its class (target 1) and a row of
/// another class (target 0). A class with one row gets no positive pairs; one class alone, no negatives.
fn draw_pairs(rows: &[TuneRow<'_>], per_row: usize, rng: &mut ChaCha8Rng) -> Vec<Unit> {
    use rand::Rng;
    let mut pairs = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let same: Vec<usize> = (0..rows.len())
            .filter(|&j| j != i && rows[j].label == row.label)
            .collect();
        let other: Vec<usize> = (0..rows.len())
            .filter(|&j| rows[j].label != row.label)
            .collect();
        for k in 0..per_row {
            let (pool, target) = if k % 2 == 0 {
                (&same, 1.0)
            } else {
                (&other, 0.0)
            };
            if !pool.is_empty() {
                pairs.push(Unit::Pair(i, pool[rng.random_range(0..pool.len())], target));
            }
        }
    }
    pairs
}

/// Batches of similar length (rows are sorted within windows of 16 batches) in a shuffled order: less
/// padding, still random.
fn length_bucketed(
    order: &[usize],
    units: &[Unit],
    rows: &[TuneRow<'_>],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    for window in order.chunks(batch_size * 16) {
        let mut sorted = window.to_vec();
        sorted.sort_by_key(|&u| units[u].longest(rows));
        batches.extend(sorted.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// The learning-rate factor at `step` (0-based).
fn schedule(step: usize, warmup: usize, total: usize, decay: Decay) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let done = (step - warmup) as f64 / span;
    match decay {
        Decay::Constant => 1.0,
        Decay::Linear => 1.0 - done,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
    }
}

/// One optimiser update of the active groups at `factor` of their peak rates, the gradients clipped to a
/// joint norm of `max_norm` (applied as a factor inside the update); returns the top block's rate.
fn update(
    groups: &mut [Group],
    grads: &candle_core::backprop::GradStore,
    trained: &[&Var],
    (active, layers): (usize, usize),
    max_norm: f64,
    factor: f64,
) -> Result<Option<f64>, TuneError> {
    let norm = gradient_norm(grads, trained).map_err(candle_err)?;
    let grad_scale = if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    let mut top = None;
    for g in groups.iter_mut() {
        if !group_active(g.depth, active, layers) {
            continue;
        }
        let lr = g.peak * factor;
        if g.depth == Some(0) {
            top = Some(lr);
        }
        g.optimizer.set_learning_rate(lr);
        g.optimizer.step(grads, grad_scale).map_err(candle_err)?;
    }
    Ok(top)
}

fn param_groups(
    encoder: &Encoder,
    head: Option<&(Var, Var)>,
    options: &TuneOptions,
) -> Result<Vec<Group>, TuneError> {
    let layers = encoder.config.layers;
    let mut groups = Vec::new();
    let mut push = |vars: Vec<(&str, &Var)>, depth: Option<usize>, peak: f64| {
        let (decayed, plain): (Vec<_>, Vec<_>) = vars.into_iter().partition(|(n, _)| decays(n));
        for (set, weight_decay) in [(decayed, options.weight_decay), (plain, 0.0)] {
            if set.is_empty() {
                continue;
            }
            let vars = set.into_iter().map(|(_, v)| v.clone()).collect();
            groups.push(Group {
                optimizer: InPlaceAdamW::new(vars, AdamWParams::new(peak, weight_decay)),
                depth,
                peak,
            });
        }
        Ok::<(), TuneError>(())
    };
    for depth in 0..options.trainable_layers {
        let block = &encoder.blocks[layers - 1 - depth];
        let named = BLOCK_TENSORS.iter().copied().zip(block).collect();
        push(
            named,
            Some(depth),
            options.learning_rate * options.layer_decay.powi(depth as i32),
        )?;
    }
    if options.trainable_layers == layers {
        let named = EMBEDDING_TENSORS
            .iter()
            .copied()
            .zip(&encoder.embeddings)
            .collect();
        push(
            named,
            Some(layers),
            options.learning_rate * options.layer_decay.powi(layers as i32),
        )?;
    }
    if let Some((w, b)) = head {
        push(
            vec![("head.weight", w), ("head.bias", b)],
            None,
            options.head_learning_rate,
        )?;
    }
    Ok(groups)
}

struct Context<'a> {
    encoder: &'a Encoder,
    head: Option<&'a (Var, Var)>,
    options: &'a TuneOptions,
    device: &'a Device,
}

impl Context<'_> {
    /// Pooled, normalised embeddings of `rows`, running the blocks above the frozen boundary; the top
    /// `active` blocks (and the embeddings when every block trains) take part in the gradient.
    fn embed(
        &self,
        rows: &[TuneRow<'_>],
        indices: &[usize],
        active: usize,
        dropout: &mut Option<Dropout<'_>>,
    ) -> Result<Tensor, TuneError> {
        let layers = self.encoder.config.layers;
        let boundary = layers - self.options.trainable_layers;
        let ids: Vec<&[u32]> = indices.iter().map(|&i| rows[i].ids).collect();
        let batch = Batch::new(&ids, self.device, DType::F32).map_err(candle_err)?;
        let mut hidden = if boundary == 0 {
            self.encoder
                .embed(&batch, active == layers, dropout)
                .map_err(candle_err)?
        } else {
            let states: Vec<&Array2<f32>> = indices
                .iter()
                .map(|&i| rows[i].states.expect("checked: states present"))
                .collect();
            padded_states(
                &states,
                batch.width(),
                self.encoder.config.hidden_size,
                self.device,
            )
            .map_err(candle_err)?
        };
        for layer in boundary..layers {
            let trained = layer >= layers - active;
            hidden = self
                .encoder
                .block(layer, &hidden, &batch, trained, dropout)
                .map_err(candle_err)?;
        }
        pool(&hidden, &batch.mask).map_err(candle_err)
    }

    fn logits(&self, pooled: &Tensor) -> Result<Tensor, TuneError> {
        let (w, b) = self.head.expect("classification has a head");
        pooled
            .matmul(&w.as_tensor().t().map_err(candle_err)?)
            .and_then(|x| x.broadcast_add(b.as_tensor()))
            .map_err(candle_err)
    }

    fn labels(&self, rows: &[TuneRow<'_>], indices: &[usize]) -> Result<Tensor, TuneError> {
        let labels: Vec<u32> = indices.iter().map(|&i| rows[i].label as u32).collect();
        Tensor::from_vec(labels, indices.len(), self.device).map_err(candle_err)
    }

    fn batch_loss(
        &self,
        rows: &[TuneRow<'_>],
        units: &[Unit],
        batch: &[usize],
        active: usize,
        dropout: Option<&mut Dropout<'_>>,
    ) -> Result<Tensor, TuneError> {
        let mut dropout = dropout.map(|d| Dropout {
            rate: d.rate,
            rng: &mut *d.rng,
        });
        match self.options.objective {
            Objective::Classification { .. } => {
                let indices: Vec<usize> = batch
                    .iter()
                    .map(|&u| match units[u] {
                        Unit::Row(r) => r,
                        Unit::Pair(..) => unreachable!("classification trains on rows"),
                    })
                    .collect();
                let pooled = self.embed(rows, &indices, active, &mut dropout)?;
                let logits = self.logits(&pooled)?;
                candle_nn::loss::cross_entropy(&logits, &self.labels(rows, &indices)?)
                    .map_err(candle_err)
            }
            Objective::Contrastive { .. } => {
                let pairs: Vec<Unit> = batch.iter().map(|&u| units[u]).collect();
                self.pair_loss(rows, &pairs, active, &mut dropout)
            }
        }
    }

    fn pair_loss(
        &self,
        rows: &[TuneRow<'_>],
        pairs: &[Unit],
        active: usize,
        dropout: &mut Option<Dropout<'_>>,
    ) -> Result<Tensor, TuneError> {
        let (mut left, mut right, mut target) = (Vec::new(), Vec::new(), Vec::new());
        for p in pairs {
            if let Unit::Pair(a, b, t) = *p {
                left.push(a);
                right.push(b);
                target.push(t);
            }
        }
        let u = self.embed(rows, &left, active, dropout)?;
        let v = self.embed(rows, &right, active, dropout)?;
        let target = Tensor::from_vec(target, left.len(), self.device).map_err(candle_err)?;
        (u * v)
            .and_then(|p| p.sum(1))
            .and_then(|cos| cos - target)
            .and_then(|d| d.sqr())
            .and_then(|s| s.mean_all())
            .map_err(candle_err)
    }

    /// Validation loss and (for classification) accuracy, without dropout or gradients.
    fn validate(
        &self,
        rows: &[TuneRow<'_>],
        pairs: &[Unit],
    ) -> Result<(Option<f64>, Option<f64>), TuneError> {
        if rows.is_empty() {
            return Ok((None, None));
        }
        let size = self.options.batch_size.max(32);
        match self.options.objective {
            Objective::Classification { .. } => {
                let (mut loss, mut correct) = (0.0, 0usize);
                let indices: Vec<usize> = (0..rows.len()).collect();
                for chunk in indices.chunks(size) {
                    let pooled = self.embed(rows, chunk, 0, &mut None)?;
                    let logits = self.logits(&pooled)?.detach();
                    let labels = self.labels(rows, chunk)?;
                    let l = candle_nn::loss::cross_entropy(&logits, &labels)
                        .and_then(|l| l.to_scalar::<f32>())
                        .map_err(candle_err)?;
                    loss += f64::from(l) * chunk.len() as f64;
                    let predicted = logits
                        .argmax(1)
                        .and_then(|p| p.to_vec1::<u32>())
                        .map_err(candle_err)?;
                    correct += predicted
                        .iter()
                        .zip(chunk)
                        .filter(|(p, i)| **p as usize == rows[**i].label)
                        .count();
                }
                let n = rows.len() as f64;
                Ok((Some(loss / n), Some(correct as f64 / n)))
            }
            Objective::Contrastive { .. } => {
                if pairs.is_empty() {
                    return Ok((None, None));
                }
                let mut loss = 0.0;
                for chunk in pairs.chunks(size) {
                    let l = self
                        .pair_loss(rows, chunk, 0, &mut None)?
                        .to_scalar::<f32>()
                        .map_err(candle_err)?;
                    loss += f64::from(l) * chunk.len() as f64;
                }
                Ok((Some(loss / pairs.len() as f64), None))
            }
        }
    }
}

fn trained_vars<'a>(encoder: &'a Encoder, head: Option<&'a (Var, Var)>) -> Vec<&'a Var> {
    let mut vars: Vec<&Var> = encoder.embeddings.iter().collect();
    vars.extend(encoder.blocks.iter().flatten());
    if let Some((w, b)) = head {
        vars.extend([w, b]);
    }
    vars
}

fn snapshot(encoder: &Encoder, head: Option<&(Var, Var)>) -> Result<Vec<Tensor>, TuneError> {
    trained_vars(encoder, head)
        .into_iter()
        .map(|v| v.as_tensor().copy().map_err(candle_err))
        .collect()
}

fn restore(encoder: &Encoder, head: Option<&(Var, Var)>, kept: &[Tensor]) -> Result<(), TuneError> {
    for (var, value) in trained_vars(encoder, head).into_iter().zip(kept) {
        var.set(value).map_err(candle_err)?;
    }
    Ok(())
}

/// Sentence embeddings (masked mean, L2-normalised) of `rows` through the whole encoder, in candle.
pub fn encode(
    weights: &BertWeights,
    rows: &[&[u32]],
    batch_size: usize,
) -> Result<Array2<f32>, TuneError> {
    let device = Device::Cpu;
    let encoder = Encoder::new(weights, &device, DType::F32).map_err(candle_err)?;
    let hidden = weights.config().hidden_size;
    let mut out = Array2::zeros((rows.len(), hidden));
    for (c, chunk) in rows.chunks(batch_size.max(1)).enumerate() {
        let batch = Batch::new(chunk, &device, DType::F32).map_err(candle_err)?;
        let mut h = encoder
            .embed(&batch, false, &mut None)
            .map_err(candle_err)?;
        for layer in 0..weights.config().layers {
            h = encoder
                .block(layer, &h, &batch, false, &mut None)
                .map_err(candle_err)?;
        }
        let pooled = pool(&h, &batch.mask)
            .and_then(|p| p.to_dtype(DType::F32))
            .and_then(|p| p.to_vec2::<f32>())
            .map_err(candle_err)?;
        for (r, row) in pooled.into_iter().enumerate() {
            out.row_mut(c * batch_size.max(1) + r)
                .assign(&ndarray::Array1::from(row));
        }
    }
    Ok(out)
}

/// Sentence embeddings (masked mean, L2-normalised) of rows whose states at the boundary below the top
/// `top_blocks` blocks are given (`states: None` and `top_blocks` = depth: from the token ids), in candle:
/// what a tuned encoder makes of rows without running the frozen blocks again.
pub fn embed_rows(
    weights: &BertWeights,
    top_blocks: usize,
    rows: &[TuneRow<'_>],
    batch_size: usize,
) -> Result<Array2<f32>, TuneError> {
    let c = weights.config();
    let options = TuneOptions {
        trainable_layers: top_blocks,
        learning_rate: 1.0,
        head_learning_rate: 1.0,
        layer_decay: 1.0,
        epochs: 1,
        batch_size: batch_size.max(1),
        warmup: 0.0,
        decay: Decay::Constant,
        weight_decay: 0.0,
        dropout: 0.0,
        patience: None,
        gradual_unfreezing: false,
        objective: Objective::Contrastive { pairs_per_row: 1 },
        max_grad_norm: 1.0,
        seed: 0,
    };
    options.check(c.layers)?;
    check_rows(weights, rows, &options, "embedded")?;
    let device = Device::Cpu;
    let encoder = Encoder::new(weights, &device, DType::F32).map_err(candle_err)?;
    let ctx = Context {
        encoder: &encoder,
        head: None,
        options: &options,
        device: &device,
    };
    let mut out = Array2::zeros((rows.len(), c.hidden_size));
    let indices: Vec<usize> = (0..rows.len()).collect();
    for chunk in indices.chunks(options.batch_size) {
        let pooled = ctx
            .embed(rows, chunk, 0, &mut None)?
            .to_vec2::<f32>()
            .map_err(candle_err)?;
        for (&i, row) in chunk.iter().zip(pooled) {
            out.row_mut(i).assign(&ndarray::Array1::from(row));
        }
    }
    Ok(out)
}

/// The unpooled token states after the bottom `blocks` blocks, one `[tokens, hidden]` array per row, in
/// candle. (A run computes these with ONNX Runtime from graft-onnx's graph of the same blocks.)
pub fn token_states(
    weights: &BertWeights,
    blocks: usize,
    rows: &[&[u32]],
) -> Result<Vec<Array2<f32>>, TuneError> {
    let device = Device::Cpu;
    let encoder = Encoder::new(weights, &device, DType::F32).map_err(candle_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let batch = Batch::new(&[row], &device, DType::F32).map_err(candle_err)?;
        let mut h = encoder
            .embed(&batch, false, &mut None)
            .map_err(candle_err)?;
        for layer in 0..blocks.min(weights.config().layers) {
            h = encoder
                .block(layer, &h, &batch, false, &mut None)
                .map_err(candle_err)?;
        }
        let values = h
            .squeeze(0)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(candle_err)?;
        let hidden = weights.config().hidden_size;
        let flat: Vec<f32> = values.into_iter().flatten().collect();
        out.push(Array2::from_shape_vec((row.len(), hidden), flat).expect("a row's own shape"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cross-entropy through a fixed head on the pooled embedding of every block, in float64.
    fn loss(encoder: &Encoder, rows: &[&[u32]], labels: &[u32], head: &Tensor) -> Tensor {
        let device = Device::Cpu;
        let batch = Batch::new(rows, &device, DType::F64).unwrap();
        let mut h = encoder.embed(&batch, true, &mut None).unwrap();
        for layer in 0..encoder.config.layers {
            h = encoder.block(layer, &h, &batch, true, &mut None).unwrap();
        }
        let logits = pool(&h, &batch.mask)
            .unwrap()
            .matmul(&head.t().unwrap())
            .unwrap();
        let labels = Tensor::from_vec(labels.to_vec(), labels.len(), &device).unwrap();
        candle_nn::loss::cross_entropy(&logits, &labels).unwrap()
    }

    #[test]
    fn a_block_s_gradients_match_central_differences_in_float64() {
        let weights = crate::tiny_bert(1, 13);
        let device = Device::Cpu;
        let encoder = Encoder::new(&weights, &device, DType::F64).unwrap();
        let rows: Vec<Vec<u32>> = vec![vec![1, 5, 8, 2], vec![1, 6, 2], vec![1, 9, 6, 10, 2]];
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let labels = [0u32, 1, 1];
        let head = Tensor::from_vec(
            (0..16)
                .map(|i| f64::from(i % 5 - 2) * 0.7)
                .collect::<Vec<_>>(),
            (2, 8),
            &device,
        )
        .unwrap();
        let grads = loss(&encoder, &rows, &labels, &head).backward().unwrap();
        // query weight, attention layer norm, feed-forward bias, output dense weight, word embeddings
        let checked: [(&Var, usize); 5] = [
            (&encoder.blocks[0][0], 0),
            (&encoder.blocks[0][8], 3),
            (&encoder.blocks[0][11], 5),
            (&encoder.blocks[0][12], 17),
            (&encoder.embeddings[0], 5 * 8 + 2),
        ];
        for (var, index) in checked {
            let analytic: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let original: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let at = |delta: f64| {
                let mut moved = original.clone();
                moved[index] += delta;
                var.set(&Tensor::from_vec(moved, var.shape(), &device).unwrap())
                    .unwrap();
                let l: f64 = loss(&encoder, &rows, &labels, &head).to_scalar().unwrap();
                l
            };
            let eps = 1e-6;
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            at(0.0);
            assert!(
                (analytic[index] - numeric).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                "analytic {} vs central difference {numeric}",
                analytic[index]
            );
        }
    }
}
