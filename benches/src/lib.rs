//! Benchmarks live in `benches/`; this library holds what several of their binaries share.

use graft_tune::{Decay, Objective, TuneOptions};

/// `pipelines/fine-tune.toml`'s classification recipe for one epoch (what `fine_tune_torch.py` writes out
/// in PyTorch): `trainable_layers` top blocks, `classes` classes, dropout `dropout`, seed 42.
pub fn fine_tune_recipe(trainable_layers: usize, classes: usize, dropout: f32) -> TuneOptions {
    TuneOptions {
        trainable_layers,
        learning_rate: 1e-4,
        head_learning_rate: 1e-2,
        layer_decay: 0.9,
        epochs: 1,
        batch_size: 32,
        warmup: 0.1,
        decay: Decay::Linear,
        weight_decay: 0.01,
        dropout,
        patience: None,
        gradual_unfreezing: false,
        frozen_dropout: false,
        objective: Objective::Classification { classes },
        max_grad_norm: 1.0,
        seed: 42,
        lora: None,
    }
}
