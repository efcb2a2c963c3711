//! The fine-tuning loop: seeded batches, AdamW parameter groups (layer-wise learning rates, no decay on
//! biases and layer norms), warm-up then linear or cosine decay, gradient clipping, gradual unfreezing,
//! early stopping with best-weight restore.

mod infer;
mod lora;
pub use infer::{embed_rows, encode, layer_means, token_states};
mod model;
mod options;
mod step;
mod units;

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::TuneError;
use crate::encoder::Dropout;
use crate::weights::BertWeights;
use model::{Grads, Model, param_groups, schedule, trainable, update};
pub use options::{
    Decay, EpochRecord, Lora, Objective, PhaseSeconds, Progress, TuneOptions, TuneOutcome, TuneRow,
};
use step::Context;
use units::{check_rows, length_bucketed, training_units, validation_pairs};

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
        let active = active_blocks(options, epoch);
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
            let lowest = config.layers - active;
            if let (Some(adapters), Some(into)) = (&model.adapters, &mut grads.adapters) {
                adapters.gradients(&grads.encoder, into, lowest);
            }
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
            if let Some(adapters) = &model.adapters {
                adapters.merge_into(&mut model.encoder, lowest);
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
        let score = epoch_score(valid_accuracy, valid_loss, epoch);
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
    let trainable_parameters = trainable(&groups);
    let (_, best_epoch, kept) = best.expect("at least one epoch ran");
    let mut tuned = weights.clone();
    kept.encoder.write_into(&mut tuned);
    Ok(TuneOutcome {
        weights: tuned,
        epochs: records,
        best_epoch,
        stopped_early,
        trainable_parameters,
    })
}

/// The top blocks trained in `epoch`: all of them, or with gradual unfreezing one more per epoch.
fn active_blocks(options: &TuneOptions, epoch: usize) -> usize {
    if options.gradual_unfreezing {
        epoch.min(options.trainable_layers)
    } else {
        options.trainable_layers
    }
}

/// How good an epoch's weights are, higher better: validation accuracy first, loss to break ties (or alone
/// for contrastive training); without validation rows, the latest epoch.
fn epoch_score(valid_accuracy: Option<f64>, valid_loss: Option<f64>, epoch: usize) -> f64 {
    match (valid_accuracy, valid_loss) {
        (Some(a), Some(l)) => a - 1e-6 * l,
        (None, Some(l)) => -l,
        _ => f64::from(epoch as u32),
    }
}
