//! Fine-tuning the top blocks of a BERT-style sentence encoder, with the encoder's forward and backward
//! passes written out on faer's matrix products and rayon.
//!
//! The encoder is read from safetensors under Hugging Face's names ([`BertWeights`]); [`fine_tune`] trains
//! its top `k` blocks (with a classification head or SetFit's contrastive pairs) starting from the frozen
//! blocks' cached output states, so that an epoch runs only the blocks that learn; the tuned weights come
//! back as ndarray tensors under the same names, for whoever writes them out (graft-onnx writes the graph).
//!
//! ```
//! use graft_tune::{BertWeights, Decay, Objective, TuneOptions, TuneRow, fine_tune, tiny_bert};
//!
//! # fn main() -> Result<(), graft_tune::TuneError> {
//! // A two-block random encoder; token 5 means class 0, token 6 class 1.
//! let weights: BertWeights = tiny_bert(2, 7);
//! let rows: Vec<Vec<u32>> = (0..16).map(|i| vec![1, 5 + (i % 2) as u32, 2]).collect();
//! let train: Vec<TuneRow> = rows
//!     .iter()
//!     .enumerate()
//!     .map(|(i, ids)| TuneRow { ids, states: None, label: i % 2 })
//!     .collect();
//! let options = TuneOptions {
//!     trainable_layers: 2,
//!     learning_rate: 1e-3,
//!     head_learning_rate: 1e-2,
//!     layer_decay: 1.0,
//!     epochs: 30,
//!     batch_size: 8,
//!     warmup: 0.1,
//!     decay: Decay::Linear,
//!     weight_decay: 0.01,
//!     dropout: 0.0,
//!     patience: None,
//!     gradual_unfreezing: false,
//!     frozen_dropout: false,
//!     objective: Objective::Classification { classes: 2 },
//!     max_grad_norm: 1.0,
//!     seed: 7,
//!     lora: None,
//! };
//! let outcome = fine_tune(&weights, &train, &train, &options, &mut |_| {})?;
//! assert_eq!(outcome.epochs.last().unwrap().valid_accuracy, Some(1.0));
//! # Ok(())
//! # }
//! ```

mod adamw;
mod encoder;
mod kernels;
mod memory;
#[cfg(test)]
mod reference;
mod train;
mod weights;

use std::path::PathBuf;

pub use train::{
    Decay, EpochRecord, Lora, Objective, PhaseSeconds, Progress, TuneOptions, TuneOutcome, TuneRow,
    embed_rows, encode, fine_tune, layer_means, token_states,
};
pub use weights::{BertConfig, BertWeights, block_tensor, read_f32_tensors};

/// What can go wrong loading weights or fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not readable safetensors.
    #[error("{}: not a readable safetensors file ({detail})", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        detail: String,
    },
    /// Readable safetensors whose tensors are not a BERT encoder graft can use.
    #[error("{}: {problem}", path.display())]
    NotAnEncoder {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong ([`TuneError::MissingTensor`], [`TuneError::TensorShape`], …).
        problem: Box<TuneError>,
    },
    /// A tensor a BERT encoder needs is absent.
    #[error("the weights lack tensor `{name}`, which a BERT encoder needs")]
    MissingTensor {
        /// Its Hugging Face name.
        name: String,
    },
    /// A tensor has the wrong shape for the encoder the others describe.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// Its name.
        name: String,
        /// What the encoder's shape implies.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// A weight is NaN or infinite.
    #[error("tensor `{name}` holds a non-finite value at flat index {index}")]
    NonFinite {
        /// Its name.
        name: String,
        /// Where.
        index: usize,
    },
    /// The encoder's shape is inconsistent.
    #[error("{0}")]
    Config(String),
    /// A fine-tuning parameter is out of range.
    #[error("fine_tune.{name}: {reason}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A row cannot be fed to the encoder.
    #[error("{which} row {index}: {reason}")]
    Row {
        /// `training` or `validation`.
        which: &'static str,
        /// 0-based.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "fine-tuning diverged at epoch {epoch}, step {step} (the loss is not finite); lower the learning rates"
    )]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step in the epoch.
        step: usize,
    },
}

/// A small random BERT (`layers` blocks, hidden 8, 2 heads, 16-wide feed-forward, 32 positions, `vocab`
/// tokens), seeded: for tests, examples and graft's tiny fixture (a few KB).
pub fn tiny_bert(layers: usize, vocab: usize) -> BertWeights {
    use rand::{Rng, SeedableRng};
    let config = BertConfig {
        vocab_size: vocab,
        hidden_size: 8,
        layers,
        attention_heads: 2,
        intermediate_size: 16,
        max_positions: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let mut random = |shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect();
        ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).expect("matching length")
    };
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let mut tensors = std::collections::BTreeMap::new();
    tensors.insert(
        "embeddings.word_embeddings.weight".into(),
        random(&[vocab, h], 0.5, 0.0),
    );
    tensors.insert(
        "embeddings.position_embeddings.weight".into(),
        random(&[32, h], 0.1, 0.0),
    );
    tensors.insert(
        "embeddings.token_type_embeddings.weight".into(),
        random(&[2, h], 0.1, 0.0),
    );
    tensors.insert("embeddings.LayerNorm.weight".into(), random(&[h], 0.1, 1.0));
    tensors.insert("embeddings.LayerNorm.bias".into(), random(&[h], 0.1, 0.0));
    for l in 0..layers {
        for suffix in weights::BLOCK_TENSORS {
            let shape = weights::block_shape(suffix, h, i);
            let offset = if suffix.contains("LayerNorm.weight") {
                1.0
            } else {
                0.0
            };
            let scale = if shape.len() == 2 { 0.3 } else { 0.05 };
            tensors.insert(block_tensor(l, suffix), random(&shape, scale, offset));
        }
    }
    BertWeights::new(config, tensors).expect("a complete tiny encoder")
}
