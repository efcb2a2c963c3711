//! What one step trains on: rows (classification) or SetFit's pairs (contrastive), checked, drawn from
//! the seed and bucketed by length.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::options::{Objective, TuneOptions, TuneRow};
use crate::TuneError;
use crate::weights::BertWeights;

/// The validation pairs of the contrastive objective (drawn once, from their own seed); none otherwise.
pub(crate) fn validation_pairs(valid: &[TuneRow<'_>], options: &TuneOptions) -> Vec<Unit> {
    match options.objective {
        Objective::Contrastive { pairs_per_row } => {
            let mut pair_rng = ChaCha8Rng::seed_from_u64(graft_stdx::derive_seed(
                options.seed,
                "validation pairs",
            ));
            draw_pairs(valid, pairs_per_row, &mut pair_rng)
        }
        Objective::Classification { .. } | Objective::SimCse { .. } => Vec::new(),
    }
}

pub(crate) fn check_rows(
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

/// A training unit: one row (classification, SimCSE) or one pair with its target cosine (contrastive).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Row(usize),
    Pair(usize, usize, f32),
}

impl Unit {
    pub(crate) fn longest(&self, rows: &[TuneRow<'_>]) -> usize {
        match *self {
            Unit::Row(r) => rows[r].ids.len(),
            Unit::Pair(a, b, _) => rows[a].ids.len().max(rows[b].ids.len()),
        }
    }
}

pub(crate) fn training_units(
    rows: &[TuneRow<'_>],
    options: &TuneOptions,
    rng: &mut ChaCha8Rng,
) -> Vec<Unit> {
    match options.objective {
        Objective::Classification { .. } | Objective::SimCse { .. } => {
            (0..rows.len()).map(Unit::Row).collect()
        }
        Objective::Contrastive { pairs_per_row } => draw_pairs(rows, pairs_per_row, rng),
    }
}

/// SetFit's pair generation: for each row, alternately a row of its class (target 1) and a row of
/// another class (target 0). A class with one row gets no positive pairs; one class alone, no negatives.
pub(crate) fn draw_pairs(rows: &[TuneRow<'_>], per_row: usize, rng: &mut ChaCha8Rng) -> Vec<Unit> {
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
pub(crate) fn length_bucketed(
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

/// Pairs as (left rows, right rows, target cosines).
pub(crate) fn split_pairs(pairs: impl Iterator<Item = Unit>) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
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
