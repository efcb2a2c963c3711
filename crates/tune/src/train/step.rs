//! One batch: the forward and backward passes through the trained blocks and the head, accumulating
//! gradients.

use std::time::Instant;

use ndarray::Array2;

use super::model::{Grads, Model};
use super::options::{Objective, PhaseSeconds, TuneOptions, TuneRow};
use super::units::{Unit, split_pairs};
use crate::encoder::{
    Dropout, Pass, Start, Tokens, backward, cross_entropy, forward, info_nce, pair_loss,
};
use crate::weights::BertConfig;

pub(crate) struct Context<'a> {
    pub(crate) model: &'a Model,
    pub(crate) config: &'a BertConfig,
    pub(crate) options: &'a TuneOptions,
}

impl Context<'_> {
    /// A forward pass over `rows[indices]` from the frozen boundary (cached states, or the token ids when
    /// every block trains), through the top blocks, to the pooled embeddings.
    pub(crate) fn pass(
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

    pub(crate) fn head(&self) -> (&[f32], &[f32]) {
        let h = self.model.head.as_ref().expect("classification has a head");
        (&h.weight, &h.bias)
    }

    /// One training step's forward passes, loss and backward passes; the gradients go into `grads`.
    /// Returns the loss.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_step(
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
        let row_indices = || -> Vec<usize> {
            batch
                .iter()
                .map(|&u| match units[u] {
                    Unit::Row(r) => r,
                    Unit::Pair(..) => unreachable!("classification and SimCSE train on rows"),
                })
                .collect()
        };
        let (pass, loss, d_pooled) = match self.options.objective {
            Objective::Classification { .. } => {
                let indices = row_indices();
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
            Objective::SimCse { temperature } => {
                // Every row twice in one pass: each copy draws its own dropout masks.
                let indices = row_indices();
                let twice: Vec<usize> = indices.iter().chain(&indices).copied().collect();
                let pass = self.pass(rows, &twice, dropout);
                let (u, v) = pass
                    .pooled
                    .split_at(indices.len() * self.config.hidden_size);
                let (loss, mut du, dv) =
                    info_nce(u, v, temperature as f32, self.config.hidden_size);
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

    /// Validation loss and (for classification) accuracy, without dropout or gradients; SimCSE has none
    /// (without dropout its two views are the same row).
    pub(crate) fn validate(
        &self,
        rows: &[TuneRow<'_>],
        pairs: &[Unit],
    ) -> (Option<f64>, Option<f64>) {
        if rows.is_empty() {
            return (None, None);
        }
        let size = self.options.batch_size.max(32);
        match self.options.objective {
            Objective::SimCse { .. } => (None, None),
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
pub(crate) fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The head's gradients (added into `grads.head`) and the pooled embeddings' gradient.
pub(crate) fn head_backward(
    pooled: &[f32],
    d_logits: &[f32],
    weight: &[f32],
    grads: &mut Grads,
) -> Vec<f32> {
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

/// A zero-filled `[rows·width, hidden]` buffer holding each row's cached states at the front.
pub(crate) fn padded_states(states: &[&Array2<f32>], width: usize, hidden: usize) -> Vec<f32> {
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
