//! The reference for the explicit passes of [`crate::encoder`]: the same BERT encoder in candle
//! (embeddings, blocks, masked mean pooling) written with differentiable operations only, so that candle's
//! autodiff gives every tensor's gradient independently of graft's own backward pass. Tests only; this was
//! graft-tune's training engine until the explicit passes replaced it (benches/README.md says why).

use candle_core::{D, DType, Device, Tensor, Var};

use crate::weights::{BLOCK_TENSORS, BertConfig, BertWeights, EMBEDDING_TENSORS, block_tensor};

/// Every weight of the encoder as a candle variable, in [`BertWeights`]' order: the embeddings, then 16
/// tensors per block.
pub(crate) struct Encoder {
    pub(crate) config: BertConfig,
    pub(crate) embeddings: Vec<Var>,
    pub(crate) blocks: Vec<Vec<Var>>,
}

fn to_var(
    weights: &BertWeights,
    name: &str,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Var> {
    let t = weights.tensor(name).expect("checked by BertWeights::new");
    let values: Vec<f32> = t.iter().copied().collect();
    Var::from_tensor(&Tensor::from_vec(values, t.shape(), device)?.to_dtype(dtype)?)
}

/// `x · wᵀ + b` with a Hugging Face `[out, in]` weight.
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_matmul(&w.t()?)?.broadcast_add(b)
}

fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(variance + eps)?.sqrt()?)?;
    normed.broadcast_mul(w)?.broadcast_add(b)
}

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// One padded batch: token ids, their mask (1 real, 0 padding) and the additive attention bias.
pub(crate) struct Batch {
    pub(crate) ids: Tensor,
    pub(crate) mask: Tensor,
    pub(crate) bias: Tensor,
}

impl Batch {
    pub(crate) fn new(
        rows: &[&[u32]],
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Batch> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows.len() * width];
        let mut mask = vec![0f32; rows.len() * width];
        for (r, row) in rows.iter().enumerate() {
            ids[r * width..r * width + row.len()].copy_from_slice(row);
            mask[r * width..r * width + row.len()].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (rows.len(), width), device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), width), device)?.to_dtype(dtype)?;
        let bias =
            ((1.0 - &mask)? * crate::encoder::MASKED_BIAS)?.reshape((rows.len(), 1, 1, width))?;
        Ok(Batch { ids, mask, bias })
    }
}

impl Encoder {
    pub(crate) fn new(
        weights: &BertWeights,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<Encoder> {
        let embeddings = EMBEDDING_TENSORS
            .iter()
            .map(|n| to_var(weights, n, device, dtype))
            .collect::<candle_core::Result<_>>()?;
        let blocks = (0..weights.config().layers)
            .map(|l| {
                BLOCK_TENSORS
                    .iter()
                    .map(|s| to_var(weights, &block_tensor(l, s), device, dtype))
                    .collect()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Encoder {
            config: weights.config().clone(),
            embeddings,
            blocks,
        })
    }

    /// A variable's tensor, cut from the autodiff graph unless it is being trained.
    fn param(var: &Var, trained: bool) -> Tensor {
        if trained {
            var.as_tensor().clone()
        } else {
            var.as_tensor().detach()
        }
    }

    /// Token states after the embedding layer, `[batch, width, hidden]`.
    pub(crate) fn embed(&self, batch: &Batch, trained: bool) -> candle_core::Result<Tensor> {
        let p: Vec<Tensor> = self
            .embeddings
            .iter()
            .map(|v| Self::param(v, trained))
            .collect();
        let (rows, width) = batch.ids.dims2()?;
        let words = p[0].index_select(&batch.ids.flatten_all()?, 0)?.reshape((
            rows,
            width,
            self.config.hidden_size,
        ))?;
        let positions = p[1].narrow(0, 0, width)?;
        let types = p[2].narrow(0, 0, 1)?;
        let sum = words.broadcast_add(&positions)?.broadcast_add(&types)?;
        let normed = layer_norm(&sum, &p[3], &p[4], self.config.layer_norm_eps)?;
        Ok(normed)
    }

    /// Runs block `layer` on `hidden` (`[batch, width, hidden]`).
    pub(crate) fn block(
        &self,
        layer: usize,
        hidden: &Tensor,
        batch: &Batch,
        trained: bool,
    ) -> candle_core::Result<Tensor> {
        let p: Vec<Tensor> = self.blocks[layer]
            .iter()
            .map(|v| Self::param(v, trained))
            .collect();
        let c = &self.config;
        let (rows, width, _) = hidden.dims3()?;
        let heads = |x: Tensor| -> candle_core::Result<Tensor> {
            x.reshape((rows, width, c.attention_heads, c.head_size()))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(linear(hidden, &p[0], &p[1])?)?;
        let k = heads(linear(hidden, &p[2], &p[3])?)?;
        let v = heads(linear(hidden, &p[4], &p[5])?)?;
        let scale = 1.0 / (c.head_size() as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&batch.bias)?;
        let probs = softmax_last(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((rows, width, c.hidden_size))?;
        let attended = linear(&context, &p[6], &p[7])?;
        let attended = layer_norm(&(attended + hidden)?, &p[8], &p[9], c.layer_norm_eps)?;
        let inner = linear(&attended, &p[10], &p[11])?.gelu_erf()?;
        let out = linear(&inner, &p[12], &p[13])?;
        layer_norm(&(out + attended)?, &p[14], &p[15], c.layer_norm_eps)
    }
}

/// Masked mean over tokens, then L2 normalisation: the sentence embedding, `[batch, hidden]`.
pub(crate) fn pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask3 = mask.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask3)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = (mean.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?;
    mean.broadcast_div(&norm)
}
