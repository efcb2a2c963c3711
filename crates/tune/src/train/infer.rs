//! Inference with trained weights: token states of the frozen bottom, and pooled embeddings.

use ndarray::Array2;

use super::model::Model;
use super::options::{Decay, Objective, TuneOptions, TuneRow};
use super::step::Context;
use super::units::check_rows;
use crate::TuneError;
use crate::encoder::{Params, Start, Tokens, forward};
use crate::weights::BertWeights;

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

/// Every layer's sentence embedding: the masked mean over tokens (not normalised) of the embeddings' output
/// and of each block's output, `[rows, layers + 1, hidden]`, bottom first — what a learned mix of layers
/// (ELMo's scalar mix) or a progressive column reads from a frozen encoder.
pub fn layer_means(
    weights: &BertWeights,
    rows: &[&[u32]],
    batch_size: usize,
) -> Result<ndarray::Array3<f32>, TuneError> {
    let c = weights.config();
    if let Some((index, row)) = rows.iter().enumerate().find(|(_, r)| {
        r.is_empty() || r.len() > c.max_positions || r.iter().any(|&id| id as usize >= c.vocab_size)
    }) {
        return Err(TuneError::Row {
            which: "embedded",
            index,
            reason: format!(
                "{} tokens (ids below {}, 1 to {} tokens expected)",
                row.len(),
                c.vocab_size,
                c.max_positions
            ),
        });
    }
    let params = Params::<f32>::from_weights(weights);
    let hidden = c.hidden_size;
    let mut out = ndarray::Array3::zeros((rows.len(), c.layers + 1, hidden));
    let size = batch_size.max(1);
    for (k, chunk) in rows.chunks(size).enumerate() {
        let pass = forward(&params, c, Tokens::new(chunk), Start::Ids, 0, &mut None);
        for (layer, means) in pass.layer_means(hidden).iter().enumerate() {
            for (r, row) in means.chunks(hidden).enumerate() {
                out.slice_mut(ndarray::s![k * size + r, layer, ..])
                    .assign(&ndarray::ArrayView1::from(row));
            }
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
        lora: None,
    };
    options.check(c.layers)?;
    check_rows(weights, rows, &options, "embedded")?;
    let model = Model {
        encoder: Params::from_weights(weights),
        head: None,
        adapters: None,
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
