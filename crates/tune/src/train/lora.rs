//! LoRA (Hu et al., 2021). In the trained blocks the six weight matrices — query, key, value, attention
//! output, feed-forward up and down — keep their released values `W₀` and learn a low-rank change: the
//! encoder computes with `W = W₀ + (α/r)·B·A`, `A: [r, in]` drawn as PyTorch initialises a linear layer
//! (uniform ±1/√in, seeded), `B: [out, r]` zero, so training starts from the released encoder. Biases and
//! layer norms stay frozen; the classification head trains.
//!
//! The encoder's own backward pass gives `∂L/∂W`; the adapters' gradients follow by the chain rule,
//! `∂L/∂B = (α/r)·∂L/∂W·Aᵀ` and `∂L/∂A = (α/r)·Bᵀ·∂L/∂W`, so the passes are the full model's and the
//! adapters are merged by construction: the tuned weights written out are `W₀ + (α/r)·B·A`, at no
//! inference cost. What LoRA saves here is optimiser state and the trained parameters' count, not the
//! backward pass's time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::options::Lora;
use crate::encoder::Params;
use crate::kernels::product;
use crate::weights::{BLOCK_TENSORS, BertConfig, block_shape};

/// The adapted matrices' indices among a block's tensors (`BLOCK_TENSORS` order).
pub(crate) const ADAPTED: [usize; 6] = [0, 2, 4, 6, 10, 12];

/// One adapted matrix: its released value and its two factors (or, in a gradient, their gradients).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Adapter {
    base: Vec<f32>,
    pub(crate) a: Vec<f32>,
    pub(crate) b: Vec<f32>,
    rows: usize,
    cols: usize,
}

/// The adapters of the trained blocks: `blocks[l]` holds block `l`'s six (empty below the trained ones).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Adapters {
    scale: f32,
    rank: usize,
    pub(crate) blocks: Vec<Vec<Adapter>>,
}

impl Adapters {
    /// Adapters for blocks `lowest..`, `A` drawn from `seed`, `B` zero.
    pub(crate) fn new(
        encoder: &Params<f32>,
        config: &BertConfig,
        lowest: usize,
        lora: Lora,
        seed: u64,
    ) -> Adapters {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = lora.rank;
        let blocks = (0..config.layers)
            .map(|l| {
                if l < lowest {
                    return Vec::new();
                }
                ADAPTED
                    .iter()
                    .map(|&i| {
                        let shape = block_shape(
                            BLOCK_TENSORS[i],
                            config.hidden_size,
                            config.intermediate_size,
                        );
                        let (rows, cols) = (shape[0], shape[1]);
                        let bound = 1.0 / (cols as f32).sqrt();
                        Adapter {
                            base: encoder.blocks[l][i].clone(),
                            a: (0..r * cols)
                                .map(|_| rng.random_range(-bound..bound))
                                .collect(),
                            b: vec![0.0; rows * r],
                            rows,
                            cols,
                        }
                    })
                    .collect()
            })
            .collect();
        Adapters {
            scale: (lora.alpha / r as f64) as f32,
            rank: r,
            blocks,
        }
    }

    /// Zero-filled buffers of the factors' shapes, for their gradients.
    pub(crate) fn zeros_like(&self) -> Adapters {
        Adapters {
            scale: self.scale,
            rank: self.rank,
            blocks: self
                .blocks
                .iter()
                .map(|adapters| {
                    adapters
                        .iter()
                        .map(|a| Adapter {
                            base: Vec::new(),
                            a: vec![0.0; a.a.len()],
                            b: vec![0.0; a.b.len()],
                            rows: a.rows,
                            cols: a.cols,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Writes `W₀ + scale·B·A` into the encoder's adapted matrices of blocks `from..`.
    pub(crate) fn merge_into(&self, encoder: &mut Params<f32>, from: usize) {
        for (l, adapters) in self.blocks.iter().enumerate().skip(from) {
            for (adapter, &i) in adapters.iter().zip(&ADAPTED) {
                let w = &mut encoder.blocks[l][i];
                product(
                    w,
                    (&adapter.b, adapter.rows, self.rank, false),
                    (&adapter.a, self.rank, adapter.cols, false),
                    self.scale,
                );
                w.iter_mut().zip(&adapter.base).for_each(|(w, b)| *w += b);
            }
        }
    }

    /// The factors' gradients (into `out`, replacing them) from the encoder's weight gradients, for blocks
    /// `from..`.
    pub(crate) fn gradients(&self, d_encoder: &Params<f32>, out: &mut Adapters, from: usize) {
        for (l, adapters) in self.blocks.iter().enumerate().skip(from) {
            for ((adapter, grad), &i) in adapters.iter().zip(&mut out.blocks[l]).zip(&ADAPTED) {
                let dw = (
                    &d_encoder.blocks[l][i][..],
                    adapter.rows,
                    adapter.cols,
                    false,
                );
                // ∂L/∂B = scale · ∂L/∂W · Aᵀ, ∂L/∂A = scale · Bᵀ · ∂L/∂W.
                product(
                    &mut grad.b,
                    dw,
                    (&adapter.a, self.rank, adapter.cols, true),
                    self.scale,
                );
                product(
                    &mut grad.a,
                    (&adapter.b, adapter.rows, self.rank, true),
                    dw,
                    self.scale,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L(W) = ½‖W − T‖²` over the merged matrices: `∂L/∂W = W − T` is known, so the adapters' gradients
    /// from [`Adapters::gradients`] can be held against central differences of `L(merge(A, B))`.
    #[test]
    fn the_adapters_gradients_match_central_differences_through_the_merge() {
        let weights = crate::tiny_bert(2, 13);
        let config = weights.config();
        let encoder = Params::<f32>::from_weights(&weights);
        let mut adapters = Adapters::new(
            &encoder,
            config,
            1,
            Lora {
                rank: 2,
                alpha: 4.0,
            },
            3,
        );
        // B is zero at the start; give it values so that ∂L/∂A is not zero too.
        for (k, adapter) in adapters.blocks[1].iter_mut().enumerate() {
            adapter
                .b
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = 0.05 * ((i * 7 + k) % 11) as f32 - 0.25);
        }
        let target = |l: usize, i: usize, j: usize| 0.1 * ((l + i + 3 * j) % 5) as f32 - 0.2;
        let loss = |adapters: &Adapters| -> f64 {
            let mut merged = encoder.clone();
            adapters.merge_into(&mut merged, 1);
            ADAPTED
                .iter()
                .map(|&i| {
                    merged.blocks[1][i]
                        .iter()
                        .enumerate()
                        .map(|(j, &w)| 0.5 * f64::from(w - target(1, i, j)).powi(2))
                        .sum::<f64>()
                })
                .sum()
        };
        let mut merged = encoder.clone();
        adapters.merge_into(&mut merged, 1);
        let mut d_encoder = merged.clone();
        for &i in &ADAPTED {
            for (j, w) in d_encoder.blocks[1][i].iter_mut().enumerate() {
                *w -= target(1, i, j);
            }
        }
        let mut grads = adapters.zeros_like();
        adapters.gradients(&d_encoder, &mut grads, 1);
        let eps = 1e-2f32;
        for k in 0..ADAPTED.len() {
            for which in [0, 1] {
                let len = if which == 0 {
                    adapters.blocks[1][k].a.len()
                } else {
                    adapters.blocks[1][k].b.len()
                };
                for index in [0, len / 2, len - 1] {
                    let at = |delta: f32| {
                        let mut moved = adapters.clone();
                        let factor = &mut moved.blocks[1][k];
                        let values = if which == 0 {
                            &mut factor.a
                        } else {
                            &mut factor.b
                        };
                        values[index] += delta;
                        loss(&moved)
                    };
                    let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
                    let g = &grads.blocks[1][k];
                    let analytic = f64::from(if which == 0 { g.a[index] } else { g.b[index] });
                    assert!(
                        (analytic - numeric).abs() <= 2e-3 * (1.0 + numeric.abs()),
                        "matrix {k}, factor {which}, entry {index}: {analytic} vs {numeric}"
                    );
                }
            }
        }
    }

    #[test]
    fn new_adapters_leave_the_released_weights_as_they_are() {
        let weights = crate::tiny_bert(2, 13);
        let encoder = Params::<f32>::from_weights(&weights);
        let adapters = Adapters::new(
            &encoder,
            weights.config(),
            0,
            Lora {
                rank: 4,
                alpha: 8.0,
            },
            9,
        );
        let mut merged = encoder.clone();
        adapters.merge_into(&mut merged, 0);
        assert_eq!(merged, encoder, "B starts at zero");
    }
}
