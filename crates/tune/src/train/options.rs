//! What a caller gives and gets: the objective, the options, the rows, and the outcome with its per-epoch
//! records and timings.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::TuneError;
use crate::weights::BertWeights;

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
    /// SimCSE (Gao, Yao & Chen, 2021), self-supervised: each row's text twice through different dropout
    /// masks is a positive pair, the batch's other rows are negatives (InfoNCE on cosines over
    /// `temperature`). Labels are not read; needs `dropout` > 0. There is no validation score, so the last
    /// epoch's weights are kept.
    SimCse {
        /// Divides the cosines before the softmax (SimCSE: 0.05).
        temperature: f64,
    },
}

/// LoRA's settings: the rank `r` of each adapter and its scale `α` (the change is `(α/r)·B·A`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lora {
    /// Rank of each adapter (PEFT's default 8).
    pub rank: usize,
    /// Scale numerator (PEFT's default 8; the original paper's examples use 16).
    pub alpha: f64,
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
    /// Seed of every random choice (batch order, dropout masks, pairs, LoRA's initial `A`).
    pub seed: u64,
    /// Train low-rank adapters of the trained blocks' weight matrices instead of the blocks themselves
    /// (biases, layer norms and the embeddings stay frozen); merged into the weights returned.
    pub lora: Option<Lora>,
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
        if let Some(lora) = self.lora {
            if lora.rank == 0 {
                return bad("lora.rank", "must be at least 1".into());
            }
            if !positive(lora.alpha) {
                return bad("lora.alpha", format!("must be > 0, got {}", lora.alpha));
            }
        }
        match self.objective {
            Objective::Classification { classes } if classes < 2 => bad(
                "objective",
                format!("classification needs ≥ 2 classes, got {classes}"),
            ),
            Objective::Contrastive { pairs_per_row: 0 } => {
                bad("pairs_per_row", "must be at least 1".into())
            }
            Objective::SimCse { temperature } if !positive(temperature) => {
                bad("temperature", format!("must be > 0, got {temperature}"))
            }
            Objective::SimCse { .. } if self.dropout == 0.0 => bad(
                "dropout",
                "SimCSE's positive pairs differ only by their dropout masks: it must be > 0".into(),
            ),
            Objective::SimCse { .. } if self.patience.is_some() => bad(
                "patience",
                "SimCSE has no validation score to stop on; remove it".into(),
            ),
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
    /// Class index (not read by [`Objective::SimCse`]).
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
    /// Values the optimiser trained (the head's included): the trained blocks' tensors, or with LoRA the
    /// adapters' factors.
    pub trainable_parameters: usize,
}
