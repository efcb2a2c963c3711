//! The fine-tuning loop: seeded batches, AdamW parameter groups (layer-wise learning rates, no decay on
//! biases and layer norms), warm-up then linear or cosine decay, gradient clipping, gradual unfreezing,
//! early stopping with best-weight restore.

use std::time::Instant;

use ndarray::Array2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TuneError;
use crate::adamw::{AdamWParams, Moments, Step, squares};
use crate::encoder::{
    Dropout, Params, Pass, Start, Tokens, backward, cross_entropy, forward, pair_loss,
};
use crate::weights::{BLOCK_TENSORS, BertConfig, BertWeights, EMBEDDING_TENSORS};

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
    /// Run the frozen blocks at every step, with dropout, as PyTorch in training mode does, instead of
    /// starting from their cached states (which carry no dropout). Slower: the frozen blocks' forward
    /// pass runs every step. Rows need their token ids only.
    pub frozen_dropout: bool,
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
    /// AdamW updates.
    #[serde(default)]
    pub phase_seconds: PhaseSeconds,
}

/// Where an epoch's training time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSeconds {
    /// Forward passes and the loss (with the classification head's gradient).
    pub forward: f64,
    /// The backward passes (every trained tensor's gradient).
    pub backward: f64,
    /// Gradient clipping and the optimiser steps.
    pub optimizer: f64,
}

/// Progress inside an epoch, for a progress line (and for comparing training step by step).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
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
    /// The loss of the step just taken.
    pub step_loss: f64,
    /// The training units of that step, in batch order: indices into the training rows (classification)
    /// or into the pairs drawn from them (contrastive).
    pub batch: &'a [usize],
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

/// One trainable tensor: of the embeddings, of a block, or of the classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Embedding(usize),
    Block(usize, usize),
    HeadWeight,
    HeadBias,
}

/// The classification head on the pooled embedding: `[classes, hidden]` and `[classes]`, zero at start.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// What training changes: the encoder and (classification) the head.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    encoder: Params<f32>,
    head: Option<Head>,
}

impl Model {
    /// The encoder as given, and (classification) a zero head.
    fn new(weights: &BertWeights, options: &TuneOptions) -> Model {
        let hidden = weights.config().hidden_size;
        Model {
            encoder: Params::from_weights(weights),
            head: match options.objective {
                Objective::Classification { classes } => Some(Head {
                    weight: vec![0.0; classes * hidden],
                    bias: vec![0.0; classes],
                }),
                Objective::Contrastive { .. } => None,
            },
        }
    }

    fn tensor_mut(&mut self, slot: Slot) -> &mut Vec<f32> {
        match slot {
            Slot::Embedding(i) => &mut self.encoder.embeddings[i],
            Slot::Block(l, i) => &mut self.encoder.blocks[l][i],
            Slot::HeadWeight => &mut self.head.as_mut().expect("a head").weight,
            Slot::HeadBias => &mut self.head.as_mut().expect("a head").bias,
        }
    }
}

/// A set of tensors sharing a learning rate and weight decay, with their AdamW moments.
struct Group {
    slots: Vec<Slot>,
    moments: Vec<Moments>,
    params: AdamWParams,
    /// AdamW steps taken (a group frozen by gradual unfreezing has taken fewer).
    steps: i32,
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
    progress: &mut dyn FnMut(&Progress<'_>),
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
    let mut model = Model::new(weights, options);
    let mut groups = param_groups(config, model.head.is_some(), options);
    let mut grads = Grads::new(
        &model,
        config.layers - options.trainable_layers,
        config.hidden_size,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let units = training_units(train, options, &mut rng);
    let steps_per_epoch = units.len().div_ceil(options.batch_size);
    let total_steps = steps_per_epoch * options.epochs;
    let warmup_steps = (options.warmup * total_steps as f64).ceil() as usize;
    let valid_pairs = validation_pairs(valid, options);
    let mut records = Vec::new();
    let mut best: Option<(f64, usize, Model)> = None;
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
            let factor = schedule(step, warmup_steps, total_steps, options.decay);
            let ctx = Context {
                model: &model,
                config,
                options,
            };
            grads.clear(active, config.layers);
            let mut dropout = Some(Dropout {
                rate: options.dropout,
                rng: &mut rng,
            });
            let value = ctx.train_step(
                train,
                &units,
                batch,
                active,
                &mut dropout,
                &mut grads,
                &mut phases,
            );
            if !value.is_finite() {
                return Err(TuneError::Diverged { epoch, step: b + 1 });
            }
            let clock = Instant::now();
            if let Some(lr) = update(
                &mut groups,
                &mut model,
                &grads,
                (active, config.layers),
                options.max_grad_norm,
                factor,
            ) {
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
                step_loss: value,
                batch,
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let ctx = Context {
            model: &model,
            config,
            options,
        };
        let (valid_loss, valid_accuracy) = ctx.validate(valid, &valid_pairs);
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
            best = Some((score, epoch, model.clone()));
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
    let mut tuned = weights.clone();
    kept.encoder.write_into(&mut tuned);
    Ok(TuneOutcome {
        weights: tuned,
        epochs: records,
        best_epoch,
        stopped_early,
    })
}

/// The gradients of every tensor that may train, kept between steps (cleared, not reallocated).
struct Grads {
    encoder: Params<f32>,
    head: Option<Head>,
    /// The word-embedding rows that may hold a gradient (sorted token ids of the step's batches): the
    /// only rows of the 11.7 M-value table to clear and to count in the norm.
    words: Vec<u32>,
    hidden: usize,
}

impl Grads {
    fn new(model: &Model, lowest: usize, hidden: usize) -> Grads {
        Grads {
            words: Vec::new(),
            hidden,
            encoder: model.encoder.zeros_for(lowest == 0, lowest),
            head: model.head.as_ref().map(|h| Head {
                weight: vec![0.0; h.weight.len()],
                bias: vec![0.0; h.bias.len()],
            }),
        }
    }

    /// Zeroes the gradients of the tensors training now (the top `active` blocks, the embeddings when
    /// every block trains, the head).
    fn clear(&mut self, active: usize, layers: usize) {
        let lowest = layers - active;
        if lowest == 0 {
            let h = self.hidden;
            let (words, rest) = self.encoder.embeddings.split_at_mut(1);
            for &id in &self.words {
                let id = id as usize;
                words[0][id * h..(id + 1) * h].fill(0.0);
            }
            rest.iter_mut().for_each(|g| g.fill(0.0));
        }
        self.words.clear();
        for block in &mut self.encoder.blocks[lowest..] {
            block.iter_mut().for_each(|g| g.fill(0.0));
        }
        if let Some(h) = &mut self.head {
            h.weight.fill(0.0);
            h.bias.fill(0.0);
        }
    }

    /// Notes the token ids of a pass whose backward pass reached the word embeddings.
    fn touch(&mut self, ids: &[u32]) {
        self.words.extend_from_slice(ids);
        self.words.sort_unstable();
        self.words.dedup();
    }

    /// The sum of squares of a tensor's gradient (of the word embeddings: over the touched rows alone,
    /// the rest being zero).
    fn squares(&self, slot: Slot) -> f64 {
        if slot == Slot::Embedding(0) {
            let h = self.hidden;
            let words = &self.encoder.embeddings[0];
            return self
                .words
                .iter()
                .map(|&id| squares(&words[id as usize * h..(id as usize + 1) * h]))
                .sum();
        }
        squares(self.of(slot))
    }

    fn of(&self, slot: Slot) -> &[f32] {
        match slot {
            Slot::Embedding(i) => &self.encoder.embeddings[i],
            Slot::Block(l, i) => &self.encoder.blocks[l][i],
            Slot::HeadWeight => &self.head.as_ref().expect("a head").weight,
            Slot::HeadBias => &self.head.as_ref().expect("a head").bias,
        }
    }
}

/// The validation pairs of the contrastive objective (drawn once, from their own seed); none otherwise.
fn validation_pairs(valid: &[TuneRow<'_>], options: &TuneOptions) -> Vec<Unit> {
    match options.objective {
        Objective::Contrastive { pairs_per_row } => {
            let mut pair_rng = ChaCha8Rng::seed_from_u64(graft_stdx::derive_seed(
                options.seed,
                "validation pairs",
            ));
            draw_pairs(valid, pairs_per_row, &mut pair_rng)
        }
        Objective::Classification { .. } => Vec::new(),
    }
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
    let needs_states = options.trainable_layers < c.layers && !options.frozen_dropout;
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
    model: &mut Model,
    grads: &Grads,
    (active, layers): (usize, usize),
    max_norm: f64,
    factor: f64,
) -> Option<f64> {
    let live = |g: &&mut Group| group_active(g.depth, active, layers);
    let norm = groups
        .iter_mut()
        .filter(live)
        .flat_map(|g| g.slots.iter().map(|&s| grads.squares(s)))
        .sum::<f64>()
        .sqrt();
    let grad_scale = if norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    let mut top = None;
    for g in groups.iter_mut().filter(|g| live(g)) {
        let lr = g.peak * factor;
        if g.depth == Some(0) {
            top = Some(lr);
        }
        g.steps += 1;
        let step = Step::new(&g.params, lr, g.steps, grad_scale);
        for (&slot, moments) in g.slots.iter().zip(&mut g.moments) {
            step.apply(model.tensor_mut(slot), grads.of(slot), moments);
        }
    }
    top
}

fn param_groups(config: &BertConfig, head: bool, options: &TuneOptions) -> Vec<Group> {
    let layers = config.layers;
    let mut groups = Vec::new();
    let mut push = |tensors: Vec<(&str, Slot, usize)>, depth: Option<usize>, peak: f64| {
        let (decayed, plain): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, ..)| decays(n));
        for (set, weight_decay) in [(decayed, options.weight_decay), (plain, 0.0)] {
            if set.is_empty() {
                continue;
            }
            groups.push(Group {
                slots: set.iter().map(|&(_, s, _)| s).collect(),
                moments: set.iter().map(|&(.., len)| Moments::new(len)).collect(),
                params: AdamWParams::new(weight_decay),
                steps: 0,
                depth,
                peak,
            });
        }
    };
    let (h, f) = (config.hidden_size, config.intermediate_size);
    for depth in 0..options.trainable_layers {
        let layer = layers - 1 - depth;
        let tensors = BLOCK_TENSORS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let len = crate::weights::block_shape(name, h, f).iter().product();
                (*name, Slot::Block(layer, i), len)
            })
            .collect();
        push(
            tensors,
            Some(depth),
            options.learning_rate * options.layer_decay.powi(depth as i32),
        );
    }
    if options.trainable_layers == layers {
        let lens = [
            config.vocab_size * h,
            config.max_positions * h,
            config.type_vocab_size * h,
            h,
            h,
        ];
        let tensors = EMBEDDING_TENSORS
            .iter()
            .zip(lens)
            .enumerate()
            .map(|(i, (name, len))| (*name, Slot::Embedding(i), len))
            .collect();
        push(
            tensors,
            Some(layers),
            options.learning_rate * options.layer_decay.powi(layers as i32),
        );
    }
    if let Objective::Classification { classes } = options.objective
        && head
    {
        push(
            vec![
                ("head.weight", Slot::HeadWeight, classes * h),
                ("head.bias", Slot::HeadBias, classes),
            ],
            None,
            options.head_learning_rate,
        );
    }
    groups
}

struct Context<'a> {
    model: &'a Model,
    config: &'a BertConfig,
    options: &'a TuneOptions,
}

impl Context<'_> {
    /// A forward pass over `rows[indices]` from the frozen boundary (cached states, or the token ids when
    /// every block trains), through the top blocks, to the pooled embeddings.
    fn pass(
        &self,
        rows: &[TuneRow<'_>],
        indices: &[usize],
        dropout: &mut Option<Dropout<'_>>,
    ) -> Pass<f32> {
        // With `frozen_dropout`, training passes run the frozen blocks too, with dropout (the gradient still
        // stops at the trained ones); so do passes over rows given without states.
        let from_ids = self.options.frozen_dropout
            && (dropout.is_some() || indices.iter().any(|&i| rows[i].states.is_none()));
        let boundary = if from_ids {
            0
        } else {
            self.config.layers - self.options.trainable_layers
        };
        let ids: Vec<&[u32]> = indices.iter().map(|&i| rows[i].ids).collect();
        let tokens = Tokens::new(&ids);
        let start = if boundary == 0 {
            Start::Ids
        } else {
            let states: Vec<&Array2<f32>> = indices
                .iter()
                .map(|&i| rows[i].states.expect("checked: states present"))
                .collect();
            Start::States(padded_states(
                &states,
                tokens.width,
                self.config.hidden_size,
            ))
        };
        forward(
            &self.model.encoder,
            self.config,
            tokens,
            start,
            boundary,
            dropout,
        )
    }

    fn head(&self) -> (&[f32], &[f32]) {
        let h = self.model.head.as_ref().expect("classification has a head");
        (&h.weight, &h.bias)
    }

    /// One training step's forward passes, loss and backward passes; the gradients go into `grads`.
    /// Returns the loss.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &self,
        rows: &[TuneRow<'_>],
        units: &[Unit],
        batch: &[usize],
        active: usize,
        dropout: &mut Option<Dropout<'_>>,
        grads: &mut Grads,
        phases: &mut PhaseSeconds,
    ) -> f64 {
        let clock = Instant::now();
        let lowest = self.config.layers - active;
        let (pass, loss, d_pooled) = match self.options.objective {
            Objective::Classification { .. } => {
                let indices: Vec<usize> = batch
                    .iter()
                    .map(|&u| match units[u] {
                        Unit::Row(r) => r,
                        Unit::Pair(..) => unreachable!("classification trains on rows"),
                    })
                    .collect();
                let pass = self.pass(rows, &indices, dropout);
                let labels: Vec<usize> = indices.iter().map(|&i| rows[i].label).collect();
                let (loss, _, d_logits) = cross_entropy(&pass.pooled, self.head(), &labels);
                let d_pooled = head_backward(&pass.pooled, &d_logits, self.head().0, grads);
                (pass, loss, d_pooled)
            }
            Objective::Contrastive { .. } => {
                // Both sides of every pair in one pass: twice the rows per matrix product.
                let (left, right, targets) = split_pairs(batch.iter().map(|&u| units[u]));
                let both: Vec<usize> = left.iter().chain(&right).copied().collect();
                let pass = self.pass(rows, &both, dropout);
                let (u, v) = pass.pooled.split_at(left.len() * self.config.hidden_size);
                let (loss, mut du, dv) = pair_loss(u, v, &targets, self.config.hidden_size);
                du.extend_from_slice(&dv);
                (pass, loss, du)
            }
        };
        phases.forward += clock.elapsed().as_secs_f64();
        if !loss.is_finite() {
            return loss;
        }
        let clock = Instant::now();
        let encoder = &self.model.encoder;
        let rate = self.options.dropout;
        backward(
            encoder,
            self.config,
            &pass,
            &d_pooled,
            lowest,
            &mut grads.encoder,
            rate,
        );
        if lowest == 0 {
            grads.touch(pass.tokens.ids());
        }
        phases.backward += clock.elapsed().as_secs_f64();
        loss
    }

    /// Validation loss and (for classification) accuracy, without dropout or gradients.
    fn validate(&self, rows: &[TuneRow<'_>], pairs: &[Unit]) -> (Option<f64>, Option<f64>) {
        if rows.is_empty() {
            return (None, None);
        }
        let size = self.options.batch_size.max(32);
        match self.options.objective {
            Objective::Classification { classes } => {
                let (mut loss, mut correct) = (0.0, 0usize);
                let indices: Vec<usize> = (0..rows.len()).collect();
                for chunk in indices.chunks(size) {
                    let pooled = self.pass(rows, chunk, &mut None).pooled;
                    let labels: Vec<usize> = chunk.iter().map(|&i| rows[i].label).collect();
                    let (l, logits, _) = cross_entropy(&pooled, self.head(), &labels);
                    loss += l * chunk.len() as f64;
                    correct += logits
                        .chunks(classes)
                        .zip(&labels)
                        .filter(|(z, label)| argmax(z) == **label)
                        .count();
                }
                let n = rows.len() as f64;
                (Some(loss / n), Some(correct as f64 / n))
            }
            Objective::Contrastive { .. } => {
                if pairs.is_empty() {
                    return (None, None);
                }
                let mut loss = 0.0;
                for chunk in pairs.chunks(size) {
                    let (left, right, targets) = split_pairs(chunk.iter().copied());
                    let both: Vec<usize> = left.iter().chain(&right).copied().collect();
                    let pooled = self.pass(rows, &both, &mut None).pooled;
                    let (u, v) = pooled.split_at(left.len() * self.config.hidden_size);
                    let (l, ..) = pair_loss(u, v, &targets, self.config.hidden_size);
                    loss += l * chunk.len() as f64;
                }
                (Some(loss / pairs.len() as f64), None)
            }
        }
    }
}

/// The first index of the largest value (as candle's and numpy's `argmax`).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The head's gradients (added into `grads.head`) and the pooled embeddings' gradient.
fn head_backward(pooled: &[f32], d_logits: &[f32], weight: &[f32], grads: &mut Grads) -> Vec<f32> {
    let g = grads.head.as_mut().expect("classification has a head");
    let classes = g.bias.len();
    let h = weight.len() / classes;
    let mut d_pooled = vec![0.0; pooled.len()];
    for ((e, dz), de) in pooled
        .chunks(h)
        .zip(d_logits.chunks(classes))
        .zip(d_pooled.chunks_mut(h))
    {
        for (c, &d) in dz.iter().enumerate() {
            g.bias[c] += d;
            let w = &weight[c * h..(c + 1) * h];
            for (((gw, &x), de), &wv) in g.weight[c * h..(c + 1) * h]
                .iter_mut()
                .zip(e)
                .zip(de.iter_mut())
                .zip(w)
            {
                *gw += d * x;
                *de += d * wv;
            }
        }
    }
    d_pooled
}

/// Pairs as (left rows, right rows, target cosines).
fn split_pairs(pairs: impl Iterator<Item = Unit>) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    let (mut left, mut right, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for p in pairs {
        if let Unit::Pair(a, b, t) = p {
            left.push(a);
            right.push(b);
            targets.push(t);
        }
    }
    (left, right, targets)
}

/// A zero-filled `[rows·width, hidden]` buffer holding each row's cached states at the front.
fn padded_states(states: &[&Array2<f32>], width: usize, hidden: usize) -> Vec<f32> {
    let mut flat = vec![0f32; states.len() * width * hidden];
    for (r, s) in states.iter().enumerate() {
        for (t, row) in s.outer_iter().enumerate() {
            let at = (r * width + t) * hidden;
            flat[at..at + hidden]
                .iter_mut()
                .zip(row)
                .for_each(|(o, v)| *o = *v);
        }
    }
    flat
}

/// Sentence embeddings (masked mean, L2-normalised) of `rows` through the whole encoder.
pub fn encode(
    weights: &BertWeights,
    rows: &[&[u32]],
    batch_size: usize,
) -> Result<Array2<f32>, TuneError> {
    let params = Params::<f32>::from_weights(weights);
    let hidden = weights.config().hidden_size;
    let mut out = Array2::zeros((rows.len(), hidden));
    let size = batch_size.max(1);
    for (c, chunk) in rows.chunks(size).enumerate() {
        let pass = forward(
            &params,
            weights.config(),
            Tokens::new(chunk),
            Start::Ids,
            0,
            &mut None,
        );
        for (r, row) in pass.pooled.chunks(hidden).enumerate() {
            out.row_mut(c * size + r)
                .assign(&ndarray::ArrayView1::from(row));
        }
    }
    Ok(out)
}

/// Sentence embeddings (masked mean, L2-normalised) of rows whose states at the boundary below the top
/// `top_blocks` blocks are given (`states: None` and `top_blocks` = depth: from the token ids): what a
/// tuned encoder makes of rows without running the frozen blocks again.
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
        frozen_dropout: false,
        objective: Objective::Contrastive { pairs_per_row: 1 },
        max_grad_norm: 1.0,
        seed: 0,
    };
    options.check(c.layers)?;
    check_rows(weights, rows, &options, "embedded")?;
    let model = Model {
        encoder: Params::from_weights(weights),
        head: None,
    };
    let ctx = Context {
        model: &model,
        config: c,
        options: &options,
    };
    let mut out = Array2::zeros((rows.len(), c.hidden_size));
    let indices: Vec<usize> = (0..rows.len()).collect();
    for chunk in indices.chunks(options.batch_size) {
        let pooled = ctx.pass(rows, chunk, &mut None).pooled;
        for (&i, row) in chunk.iter().zip(pooled.chunks(c.hidden_size)) {
            out.row_mut(i).assign(&ndarray::ArrayView1::from(row));
        }
    }
    Ok(out)
}

/// The unpooled token states after the bottom `blocks` blocks, one `[tokens, hidden]` array per row. (A
/// run computes these with ONNX Runtime from graft-onnx's graph of the same blocks.)
pub fn token_states(
    weights: &BertWeights,
    blocks: usize,
    rows: &[&[u32]],
) -> Result<Vec<Array2<f32>>, TuneError> {
    let c = weights.config();
    let mut bottom = c.clone();
    bottom.layers = blocks.min(c.layers);
    let params = Params::<f32>::from_weights(weights);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let pass = forward(
            &params,
            &bottom,
            Tokens::new(&[row]),
            Start::Ids,
            0,
            &mut None,
        );
        out.push(
            Array2::from_shape_vec((row.len(), c.hidden_size), pass.output)
                .expect("a row's own shape"),
        );
    }
    Ok(out)
}
