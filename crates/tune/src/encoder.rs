//! The BERT encoder with its forward and backward passes written out: embeddings, blocks, masked mean
//! pooling and the two training losses, on the kernels of [`crate::kernels`]. A forward pass keeps what
//! its backward pass needs (a [`Pass`]); the backward pass adds each trained tensor's gradient into a
//! [`Params`] of the same shape.
//!
//! The arithmetic is the reference BERT's (and graft-onnx's graph's): post-norm blocks, GELU in its erf
//! form, additive −10,000 on padded keys, dropout on the embeddings, the attention probabilities and both
//! sublayer outputs. Tests pin it to float64 central differences and to candle's autodiff of the same model.

use faer::Accum;
use rand_chacha::ChaCha8Rng;

use crate::kernels::{
    AttentionShape, AttentionTape, LinearGrads, NormTape, Real, add_into, apply_mask, attention,
    attention_backward, dropout_mask, gelu, layer_norm, layer_norm_backward, linear,
    linear_backward, multiply_into, zeros,
};
use crate::weights::{BLOCK_TENSORS, BertConfig, BertWeights, EMBEDDING_TENSORS, block_tensor};

/// BERT's additive attention bias for padded positions (what the reference implementation used when
/// MiniLM was trained, and what graft-onnx's BERT graph writes).
pub(crate) const MASKED_BIAS: f64 = -10_000.0;

// Indices into a block's tensors, in `BLOCK_TENSORS`' order.
const QUERY_W: usize = 0;
const KEY_W: usize = 2;
const VALUE_W: usize = 4;
const ATTENTION_OUT_W: usize = 6;
const NORM1_W: usize = 8;
const UP_W: usize = 10;
const DOWN_W: usize = 12;
const NORM2_W: usize = 14;
// … and into the embeddings', in `EMBEDDING_TENSORS`' order.
const WORDS: usize = 0;
const POSITIONS: usize = 1;
const TYPES: usize = 2;
const EMBEDDING_NORM_W: usize = 3;

/// Every tensor of the encoder as a flat row-major buffer, in [`BertWeights`]' order: the embeddings, then
/// 16 tensors per block. Gradients and optimiser moments use the same shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Params<T> {
    pub(crate) embeddings: Vec<Vec<T>>,
    pub(crate) blocks: Vec<Vec<Vec<T>>>,
}

impl<T: Real> Params<T> {
    pub(crate) fn from_weights(weights: &BertWeights) -> Params<T> {
        let flat = |name: &str| -> Vec<T> {
            let t = weights.tensor(name).expect("checked by BertWeights::new");
            t.iter().map(|&v| T::of(f64::from(v))).collect()
        };
        Params {
            embeddings: EMBEDDING_TENSORS.iter().map(|n| flat(n)).collect(),
            blocks: (0..weights.config().layers)
                .map(|l| {
                    BLOCK_TENSORS
                        .iter()
                        .map(|s| flat(&block_tensor(l, s)))
                        .collect()
                })
                .collect(),
        }
    }

    /// Writes the values into `weights` (as float32), under their names and shapes.
    pub(crate) fn write_into(&self, weights: &mut BertWeights) {
        let mut set = |name: &str, values: &[T]| {
            let shape = weights
                .tensor(name)
                .expect("checked by BertWeights::new")
                .shape()
                .to_vec();
            let values = values.iter().map(|v| v.to_f64() as f32).collect();
            weights.set(
                name,
                ndarray::ArrayD::from_shape_vec(shape, values).expect("the tensor's own length"),
            );
        };
        for (name, values) in EMBEDDING_TENSORS.iter().zip(&self.embeddings) {
            set(name, values);
        }
        for (l, block) in self.blocks.iter().enumerate() {
            for (suffix, values) in BLOCK_TENSORS.iter().zip(block) {
                set(&block_tensor(l, suffix), values);
            }
        }
    }

    /// Zero-filled buffers for the embeddings (when `embeddings`) and blocks `from..`; empty elsewhere.
    pub(crate) fn zeros_for(&self, embeddings: bool, from: usize) -> Params<T> {
        let like = |v: &Vec<T>, wanted: bool| if wanted { zeros(v.len()) } else { Vec::new() };
        Params {
            embeddings: self
                .embeddings
                .iter()
                .map(|v| like(v, embeddings))
                .collect(),
            blocks: self
                .blocks
                .iter()
                .enumerate()
                .map(|(l, b)| b.iter().map(|v| like(v, l >= from)).collect())
                .collect(),
        }
    }

    /// Every buffer, embeddings first.
    #[cfg(test)]
    pub(crate) fn buffers_mut(&mut self) -> impl Iterator<Item = &mut Vec<T>> {
        self.embeddings
            .iter_mut()
            .chain(self.blocks.iter_mut().flatten())
    }
}

/// One padded batch of token ids with its padding mask.
pub(crate) struct Tokens<T> {
    pub(crate) rows: usize,
    pub(crate) width: usize,
    ids: Vec<u32>,
    /// 1 real, 0 padding, `[rows·width]`.
    mask: Vec<T>,
    /// 0 real, −10,000 padding: added to every score of that key.
    key_bias: Vec<T>,
}

impl<T: Real> Tokens<T> {
    pub(crate) fn new(rows: &[&[u32]]) -> Tokens<T> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; rows.len() * width];
        let mut mask = zeros(rows.len() * width);
        let mut key_bias = vec![T::of(MASKED_BIAS); rows.len() * width];
        for (r, row) in rows.iter().enumerate() {
            let at = r * width;
            ids[at..at + row.len()].copy_from_slice(row);
            mask[at..at + row.len()].fill(T::of(1.0));
            key_bias[at..at + row.len()].fill(T::default());
        }
        Tokens {
            rows: rows.len(),
            width,
            ids,
            mask,
            key_bias,
        }
    }

    fn count(&self) -> usize {
        self.rows * self.width
    }

    /// The padded token ids, `[rows·width]` (0 at padding).
    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// Where dropout masks come from: the run's seed, never an unseeded generator.
pub(crate) struct Dropout<'a> {
    pub(crate) rate: f32,
    pub(crate) rng: &'a mut ChaCha8Rng,
}

impl Dropout<'_> {
    fn active<'a>(dropout: &'a mut Option<Dropout<'_>>) -> Option<(f32, &'a mut ChaCha8Rng)> {
        dropout
            .as_mut()
            .filter(|d| d.rate > 0.0)
            .map(|d| (d.rate, &mut *d.rng))
    }

    /// Draws a mask for `x` and applies it; returns the mask for the backward pass.
    fn apply<T: Real>(dropout: &mut Option<Dropout<'_>>, x: &mut [T]) -> Option<Vec<u8>> {
        let (rate, rng) = Self::active(dropout)?;
        let mask = dropout_mask(x.len(), rate, rng);
        apply_mask(x, &mask, rate);
        Some(mask)
    }
}

/// Where a forward pass starts.
pub(crate) enum Start<T> {
    /// From the token ids, through the embedding layer.
    Ids,
    /// From given states `[rows·width, hidden]` at the input of the first block run.
    States(Vec<T>),
}

struct EmbeddingTape<T> {
    norm: NormTape<T>,
    mask: Option<Vec<u8>>,
}

struct BlockTape<T> {
    input: Vec<T>,
    /// Queries, keys and values side by side, `[tokens, 3·hidden]`.
    qkv: Vec<T>,
    attention: AttentionTape<T>,
    context: Vec<T>,
    attention_mask: Option<Vec<u8>>,
    norm1: NormTape<T>,
    attended: Vec<T>,
    gelu_slope: Vec<T>,
    inner: Vec<T>,
    output_mask: Option<Vec<u8>>,
    norm2: NormTape<T>,
}

/// A forward pass, with what the backward pass needs.
pub(crate) struct Pass<T> {
    pub(crate) tokens: Tokens<T>,
    embedding: Option<EmbeddingTape<T>>,
    /// The first block run.
    first: usize,
    blocks: Vec<BlockTape<T>>,
    /// The top block's output, `[rows·width, hidden]`.
    pub(crate) output: Vec<T>,
    mean: Vec<T>,
    norms: Vec<T>,
    /// The sentence embeddings: masked mean over tokens, L2-normalised, `[rows, hidden]`.
    pub(crate) pooled: Vec<T>,
}

impl<T: Real> Pass<T> {
    /// The masked mean over tokens (not normalised) of each block's input — the embeddings' output for the
    /// first — then of the top block's output: one `[rows·hidden]` buffer per layer, bottom first.
    pub(crate) fn layer_means(&self, h: usize) -> Vec<Vec<T>> {
        let mut means: Vec<Vec<T>> = self
            .blocks
            .iter()
            .map(|b| pool(&b.input, &self.tokens, h).0)
            .collect();
        means.push(self.mean.clone());
        means
    }
}

/// Runs blocks `first..` (from the embeddings when `start` is [`Start::Ids`]) and pools.
pub(crate) fn forward<T: Real>(
    params: &Params<T>,
    config: &BertConfig,
    tokens: Tokens<T>,
    start: Start<T>,
    first: usize,
    dropout: &mut Option<Dropout<'_>>,
) -> Pass<T> {
    let (mut hidden, embedding) = match start {
        Start::Ids => {
            let (x, tape) = embed(params, config, &tokens, dropout);
            (x, Some(tape))
        }
        Start::States(states) => (states, None),
    };
    let mut blocks = Vec::with_capacity(config.layers - first);
    for layer in first..config.layers {
        let (out, tape) = block(&params.blocks[layer], config, &tokens, hidden, dropout);
        blocks.push(tape);
        hidden = out;
    }
    let (mean, norms, pooled) = pool(&hidden, &tokens, config.hidden_size);
    Pass {
        tokens,
        embedding,
        first,
        blocks,
        output: hidden,
        mean,
        norms,
        pooled,
    }
}

fn embed<T: Real>(
    params: &Params<T>,
    config: &BertConfig,
    tokens: &Tokens<T>,
    dropout: &mut Option<Dropout<'_>>,
) -> (Vec<T>, EmbeddingTape<T>) {
    let h = config.hidden_size;
    let p = &params.embeddings;
    let mut sum = zeros(tokens.count() * h);
    for (t, (x, &id)) in sum.chunks_mut(h).zip(&tokens.ids).enumerate() {
        let word = &p[WORDS][id as usize * h..(id as usize + 1) * h];
        let pos = &p[POSITIONS][(t % tokens.width) * h..(t % tokens.width + 1) * h];
        let kind = &p[TYPES][..h];
        for (((x, &w), &q), &k) in x.iter_mut().zip(word).zip(pos).zip(kind) {
            *x = w + q + k;
        }
    }
    let (mut x, norm) = layer_norm(
        &sum,
        &p[EMBEDDING_NORM_W],
        &p[EMBEDDING_NORM_W + 1],
        config.layer_norm_eps,
    );
    let mask = Dropout::apply(dropout, &mut x);
    (x, EmbeddingTape { norm, mask })
}

fn block<T: Real>(
    p: &[Vec<T>],
    config: &BertConfig,
    tokens: &Tokens<T>,
    input: Vec<T>,
    dropout: &mut Option<Dropout<'_>>,
) -> (Vec<T>, BlockTape<T>) {
    let n = tokens.count();
    let (h, f) = (config.hidden_size, config.intermediate_size);
    // One product for queries, keys and values: their weights stacked (a copy of 3·hidden² values).
    let (w_qkv, b_qkv) = stacked_qkv(p);
    let qkv = linear(&input, &w_qkv, &b_qkv, n, h);
    let shape = attention_shape(config, tokens);
    let (context, attention) = attention(&qkv, &tokens.key_bias, shape, Dropout::active(dropout));
    let mut attended = linear(&context, &p[ATTENTION_OUT_W], &p[ATTENTION_OUT_W + 1], n, h);
    let attention_mask = Dropout::apply(dropout, &mut attended);
    add_into(&mut attended, &input);
    let (attended, norm1) = layer_norm(
        &attended,
        &p[NORM1_W],
        &p[NORM1_W + 1],
        config.layer_norm_eps,
    );
    let (inner, gelu_slope) = gelu(&linear(&attended, &p[UP_W], &p[UP_W + 1], n, h));
    let mut out = linear(&inner, &p[DOWN_W], &p[DOWN_W + 1], n, f);
    let output_mask = Dropout::apply(dropout, &mut out);
    add_into(&mut out, &attended);
    let (out, norm2) = layer_norm(&out, &p[NORM2_W], &p[NORM2_W + 1], config.layer_norm_eps);
    let tape = BlockTape {
        input,
        qkv,
        attention,
        context,
        attention_mask,
        norm1,
        attended,
        gelu_slope,
        inner,
        output_mask,
        norm2,
    };
    (out, tape)
}

/// The query, key and value weights as one `[3·hidden, hidden]` matrix, and their biases.
fn stacked_qkv<T: Real>(p: &[Vec<T>]) -> (Vec<T>, Vec<T>) {
    let weights = [QUERY_W, KEY_W, VALUE_W];
    (
        weights
            .iter()
            .map(|&w| p[w].as_slice())
            .collect::<Vec<_>>()
            .concat(),
        weights
            .iter()
            .map(|&w| p[w + 1].as_slice())
            .collect::<Vec<_>>()
            .concat(),
    )
}

fn attention_shape<T>(config: &BertConfig, tokens: &Tokens<T>) -> AttentionShape {
    AttentionShape {
        rows: tokens.rows,
        width: tokens.width,
        heads: config.attention_heads,
        head_size: config.head_size(),
    }
}

/// Masked mean over tokens, then L2 normalisation: `(mean, norms, pooled)`.
fn pool<T: Real>(hidden: &[T], tokens: &Tokens<T>, h: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut mean = zeros(tokens.rows * h);
    let mut norms = zeros(tokens.rows);
    let mut pooled = zeros(tokens.rows * h);
    for r in 0..tokens.rows {
        let m = &mut mean[r * h..(r + 1) * h];
        let mask = &tokens.mask[r * tokens.width..(r + 1) * tokens.width];
        let mut count = T::default();
        for (t, &keep) in mask.iter().enumerate() {
            let row = &hidden[(r * tokens.width + t) * h..(r * tokens.width + t + 1) * h];
            for (m, &x) in m.iter_mut().zip(row) {
                *m += x * keep;
            }
            count += keep;
        }
        let count = if count < T::of(1e-9) {
            T::of(1e-9)
        } else {
            count
        };
        m.iter_mut().for_each(|m| *m /= count);
        let norm = (m.iter().map(|&x| x * x).sum::<T>() + T::of(1e-12)).sqrt_();
        norms[r] = norm;
        for (o, &x) in pooled[r * h..(r + 1) * h].iter_mut().zip(m.iter()) {
            *o = x / norm;
        }
    }
    (mean, norms, pooled)
}

/// Gradients of the loss with respect to each trained tensor, added into `grads` (blocks `lowest..`, and
/// the embeddings when `lowest` is 0 and the pass began at the token ids) from `d_pooled`.
pub(crate) fn backward<T: Real>(
    params: &Params<T>,
    config: &BertConfig,
    pass: &Pass<T>,
    d_pooled: &[T],
    lowest: usize,
    grads: &mut Params<T>,
    rate: f32,
) {
    let h = config.hidden_size;
    let tokens = &pass.tokens;
    let mut d = pool_backward(d_pooled, pass, h);
    let embeddings = lowest == 0 && pass.embedding.is_some();
    for layer in (lowest.max(pass.first)..config.layers).rev() {
        let tape = &pass.blocks[layer - pass.first];
        let wants_input = layer > lowest || embeddings;
        d = block_backward(
            &params.blocks[layer],
            config,
            tokens,
            tape,
            &d,
            &mut grads.blocks[layer],
            rate,
            wants_input,
        );
    }
    if embeddings && let Some(tape) = &pass.embedding {
        embed_backward(params, config, tokens, tape, d, grads, rate);
    }
}

fn pool_backward<T: Real>(d_pooled: &[T], pass: &Pass<T>, h: usize) -> Vec<T> {
    let tokens = &pass.tokens;
    let mut d = zeros(tokens.count() * h);
    for r in 0..tokens.rows {
        let (m, de) = (
            &pass.mean[r * h..(r + 1) * h],
            &d_pooled[r * h..(r + 1) * h],
        );
        let norm = pass.norms[r];
        let dot: T = m.iter().zip(de).map(|(&a, &b)| a * b).sum();
        let mask = &tokens.mask[r * tokens.width..(r + 1) * tokens.width];
        let count = mask.iter().copied().sum::<T>();
        let count = if count < T::of(1e-9) {
            T::of(1e-9)
        } else {
            count
        };
        let d_mean: Vec<T> = m
            .iter()
            .zip(de)
            .map(|(&m, &de)| (de / norm - m * dot / (norm * norm * norm)) / count)
            .collect();
        for (t, &keep) in mask.iter().enumerate() {
            let at = (r * tokens.width + t) * h;
            for (o, &x) in d[at..at + h].iter_mut().zip(&d_mean) {
                *o = x * keep;
            }
        }
    }
    d
}

/// One block's backward pass from its output's gradient `dy`; returns the input's gradient when wanted.
#[allow(clippy::too_many_arguments)]
fn block_backward<T: Real>(
    p: &[Vec<T>],
    config: &BertConfig,
    tokens: &Tokens<T>,
    tape: &BlockTape<T>,
    dy: &[T],
    g: &mut [Vec<T>],
    rate: f32,
    wants_input: bool,
) -> Vec<T> {
    let n = tokens.count();
    let (h, f) = (config.hidden_size, config.intermediate_size);
    let (g_norm2, rest) = g[NORM2_W..].split_at_mut(1);
    let d_sum2 = layer_norm_backward(dy, &tape.norm2, &p[NORM2_W], &mut g_norm2[0], &mut rest[0]);
    // The residual carries d_sum2 to the attended states; dropout's mask to the feed-forward output.
    let mut d_attended = d_sum2.clone();
    let mut d_out = d_sum2;
    if let Some(mask) = &tape.output_mask {
        apply_mask(&mut d_out, mask, rate);
    }
    let mut d_inner = zeros(n * f);
    linear_backward(
        &d_out,
        &tape.inner,
        &p[DOWN_W],
        (n, f, h),
        grads_of(g, DOWN_W),
        Some((&mut d_inner, Accum::Replace)),
    );
    multiply_into(&mut d_inner, &tape.gelu_slope);
    linear_backward(
        &d_inner,
        &tape.attended,
        &p[UP_W],
        (n, h, f),
        grads_of(g, UP_W),
        Some((&mut d_attended, Accum::Add)),
    );
    let (g_norm1, rest) = g[NORM1_W..].split_at_mut(1);
    let d_sum1 = layer_norm_backward(
        &d_attended,
        &tape.norm1,
        &p[NORM1_W],
        &mut g_norm1[0],
        &mut rest[0],
    );
    let mut d_input = if wants_input {
        d_sum1.clone()
    } else {
        Vec::new()
    };
    let mut d_attention = d_sum1;
    if let Some(mask) = &tape.attention_mask {
        apply_mask(&mut d_attention, mask, rate);
    }
    let mut d_context = zeros(n * h);
    linear_backward(
        &d_attention,
        &tape.context,
        &p[ATTENTION_OUT_W],
        (n, h, h),
        grads_of(g, ATTENTION_OUT_W),
        Some((&mut d_context, Accum::Replace)),
    );
    let d_qkv = attention_backward(
        &d_context,
        &tape.qkv,
        &tape.attention,
        attention_shape(config, tokens),
        rate,
    );
    let (w_qkv, _) = stacked_qkv(p);
    let (mut dw_qkv, mut db_qkv) = (zeros(3 * h * h), zeros(3 * h));
    let grads = LinearGrads {
        dw: &mut dw_qkv,
        db: &mut db_qkv,
    };
    let dx = wants_input.then_some((d_input.as_mut_slice(), Accum::Add));
    linear_backward(&d_qkv, &tape.input, &w_qkv, (n, h, 3 * h), grads, dx);
    for (part, w) in [QUERY_W, KEY_W, VALUE_W].into_iter().enumerate() {
        add_into(&mut g[w], &dw_qkv[part * h * h..(part + 1) * h * h]);
        add_into(&mut g[w + 1], &db_qkv[part * h..(part + 1) * h]);
    }
    d_input
}

/// The gradients of weight `w` and the bias after it.
fn grads_of<T>(g: &mut [Vec<T>], w: usize) -> LinearGrads<'_, T> {
    let (dw, db) = g[w..].split_at_mut(1);
    LinearGrads {
        dw: &mut dw[0],
        db: &mut db[0],
    }
}

fn embed_backward<T: Real>(
    params: &Params<T>,
    config: &BertConfig,
    tokens: &Tokens<T>,
    tape: &EmbeddingTape<T>,
    mut d: Vec<T>,
    grads: &mut Params<T>,
    rate: f32,
) {
    let h = config.hidden_size;
    if let Some(mask) = &tape.mask {
        apply_mask(&mut d, mask, rate);
    }
    let g = &mut grads.embeddings;
    let (g_norm, rest) = g[EMBEDDING_NORM_W..].split_at_mut(1);
    let d_sum = layer_norm_backward(
        &d,
        &tape.norm,
        &params.embeddings[EMBEDDING_NORM_W],
        &mut g_norm[0],
        &mut rest[0],
    );
    for (t, (d, &id)) in d_sum.chunks(h).zip(&tokens.ids).enumerate() {
        let pos = t % tokens.width;
        for (target, row) in [(WORDS, id as usize), (POSITIONS, pos), (TYPES, 0)] {
            for (o, &x) in g[target][row * h..(row + 1) * h].iter_mut().zip(d) {
                *o += x;
            }
        }
    }
}

/// Mean cross-entropy of `logits = pooled · wᵀ + b` against `labels`; returns the loss, the logits and
/// the gradient of the loss with respect to the logits.
pub(crate) fn cross_entropy<T: Real>(
    pooled: &[T],
    (w, b): (&[T], &[T]),
    labels: &[usize],
) -> (f64, Vec<T>, Vec<T>) {
    let classes = b.len();
    let rows = labels.len();
    let h = pooled.len() / rows.max(1);
    let logits = linear(pooled, w, b, rows, h);
    let mut d_logits = zeros(rows * classes);
    let mut loss = 0.0;
    for ((z, dz), &label) in logits
        .chunks(classes)
        .zip(d_logits.chunks_mut(classes))
        .zip(labels)
    {
        let max = z
            .iter()
            .copied()
            .fold(z[0], |a, b| if b > a { b } else { a });
        let sum: T = z.iter().map(|&v| (v - max).exp_()).sum();
        let log_sum = max + sum.ln_();
        loss += (log_sum - z[label]).to_f64();
        for (c, (dz, &v)) in dz.iter_mut().zip(z).enumerate() {
            let p = (v - log_sum).exp_();
            let target = if c == label { T::of(1.0) } else { T::default() };
            *dz = (p - target) / T::of(rows as f64);
        }
    }
    (loss / rows as f64, logits, d_logits)
}

/// Mean squared error between the cosine of each pair (`u·v`, both unit length) and its target; returns
/// the loss and the gradients with respect to `u` and `v`.
pub(crate) fn pair_loss<T: Real>(
    u: &[T],
    v: &[T],
    targets: &[T],
    h: usize,
) -> (f64, Vec<T>, Vec<T>) {
    let n = T::of(targets.len() as f64);
    let (mut du, mut dv) = (zeros(u.len()), zeros(v.len()));
    let mut loss = 0.0;
    for (r, &t) in targets.iter().enumerate() {
        let (a, b) = (&u[r * h..(r + 1) * h], &v[r * h..(r + 1) * h]);
        let err = a.iter().zip(b).map(|(&x, &y)| x * y).sum::<T>() - t;
        loss += (err * err).to_f64();
        let scale = T::of(2.0) * err / n;
        for ((du, dv), (&x, &y)) in du[r * h..(r + 1) * h]
            .iter_mut()
            .zip(&mut dv[r * h..(r + 1) * h])
            .zip(a.iter().zip(b))
        {
            *du = scale * y;
            *dv = scale * x;
        }
    }
    (loss / targets.len() as f64, du, dv)
}

/// SimCSE's InfoNCE loss (Gao, Yao & Chen, 2021): row `i` of `u` and row `i` of `v` are the same sentence
/// through two dropout masks (a positive pair); every other row of `v` is a negative. With `s_ij = u_i·v_j
/// / τ` (both unit length: cosines), the loss is the mean over `i` of `logsumexp_j s_ij − s_ii`. Returns
/// the loss and the gradients with respect to `u` and `v`.
pub(crate) fn info_nce<T: Real>(
    u: &[T],
    v: &[T],
    temperature: T,
    h: usize,
) -> (f64, Vec<T>, Vec<T>) {
    let n = u.len() / h;
    let (mut du, mut dv) = (zeros(u.len()), zeros(v.len()));
    let mut loss = 0.0;
    let mut scores: Vec<T> = zeros(n);
    for i in 0..n {
        let a = &u[i * h..(i + 1) * h];
        for (j, s) in scores.iter_mut().enumerate() {
            let b = &v[j * h..(j + 1) * h];
            *s = a.iter().zip(b).map(|(&x, &y)| x * y).sum::<T>() / temperature;
        }
        let max = scores
            .iter()
            .copied()
            .fold(scores[0], |m, s| if s > m { s } else { m });
        let log_sum = max + scores.iter().map(|&s| (s - max).exp_()).sum::<T>().ln_();
        loss += (log_sum - scores[i]).to_f64();
        for (j, &s) in scores.iter().enumerate() {
            // ∂loss/∂s_ij = (softmax_j − [i = j]) / n, and ∂s_ij/∂u_i = v_j / τ, ∂s_ij/∂v_j = u_i / τ.
            let target = if i == j { T::of(1.0) } else { T::default() };
            let d = ((s - log_sum).exp_() - target) / (T::of(n as f64) * temperature);
            let b = &v[j * h..(j + 1) * h];
            for (du, &y) in du[i * h..(i + 1) * h].iter_mut().zip(b) {
                *du += d * y;
            }
            for (dv, &x) in dv[j * h..(j + 1) * h].iter_mut().zip(a) {
                *dv += d * x;
            }
        }
    }
    (loss / n.max(1) as f64, du, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rows() -> Vec<Vec<u32>> {
        vec![
            vec![1, 5, 8, 2],
            vec![1, 6, 2],
            vec![1, 9, 6, 10, 2],
            vec![1, 7, 2],
        ]
    }

    /// A fixed head for the classification loss, `[2, 8]` and `[2]`.
    fn head() -> (Vec<f64>, Vec<f64>) {
        let w = (0..16).map(|i| f64::from(i % 5 - 2) * 0.7).collect();
        (w, vec![0.1, -0.2])
    }

    /// The loss of one objective and (when `grads` is given) every tensor's gradient, in float64, with
    /// dropout masks drawn from `seed` (the same masks at every call).
    fn loss(
        params: &Params<f64>,
        config: &BertConfig,
        objective: TestObjective,
        seed: u64,
        grads: Option<&mut Params<f64>>,
    ) -> f64 {
        let rows = rows();
        let ids: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dropout = Some(Dropout {
            rate: 0.2,
            rng: &mut rng,
        });
        let mut run = |ids: &[&[u32]]| {
            forward(
                params,
                config,
                Tokens::new(ids),
                Start::Ids,
                0,
                &mut dropout,
            )
        };
        if objective == TestObjective::SimCse {
            // Every row twice in one pass: two dropout masks per sentence.
            let twice: Vec<&[u32]> = ids.iter().chain(&ids).copied().collect();
            let pass = run(&twice);
            let (u, v) = pass.pooled.split_at(ids.len() * config.hidden_size);
            let (l, mut du, dv) = info_nce(u, v, 0.5, config.hidden_size);
            if let Some(g) = grads {
                du.extend_from_slice(&dv);
                backward(params, config, &pass, &du, 0, g, 0.2);
            }
            l
        } else if objective == TestObjective::Pairs {
            let (u, v) = (run(&ids[..2]), run(&ids[2..]));
            let (l, du, dv) = pair_loss(&u.pooled, &v.pooled, &[1.0, 0.0], config.hidden_size);
            if let Some(g) = grads {
                backward(params, config, &u, &du, 0, g, 0.2);
                backward(params, config, &v, &dv, 0, g, 0.2);
            }
            l
        } else {
            let pass = run(&ids);
            let (w, b) = head();
            let (l, _, d_logits) = cross_entropy(&pass.pooled, (&w, &b), &[0, 1, 1, 0]);
            if let Some(g) = grads {
                let mut d_pooled = vec![0.0; pass.pooled.len()];
                for (dz, de) in d_logits.chunks(2).zip(d_pooled.chunks_mut(8)) {
                    for (c, &d) in dz.iter().enumerate() {
                        for (de, &w) in de.iter_mut().zip(&w[c * 8..(c + 1) * 8]) {
                            *de += d * w;
                        }
                    }
                }
                backward(params, config, &pass, &d_pooled, 0, g, 0.2);
            }
            l
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum TestObjective {
        Classification,
        Pairs,
        SimCse,
    }

    #[test]
    fn every_kind_of_tensor_s_gradient_matches_central_differences_in_float64() {
        let weights = crate::tiny_bert(2, 13);
        let config = weights.config();
        for objective in [
            TestObjective::Classification,
            TestObjective::Pairs,
            TestObjective::SimCse,
        ] {
            let params = Params::<f64>::from_weights(&weights);
            let mut grads = params.zeros_for(true, 0);
            loss(&params, config, objective, 5, Some(&mut grads));
            let analytic: Vec<Vec<f64>> = grads.buffers_mut().map(|g| g.clone()).collect();
            let count = analytic.len();
            for (t, analytic) in analytic.iter().enumerate() {
                // Three entries of every tensor, spread over it (word rows of tokens that occur).
                let len = analytic.len();
                let picks = if t == WORDS {
                    vec![5 * 8 + 2, 9 * 8 + 7, 2 * 8]
                } else {
                    vec![0, len / 2, len - 1]
                };
                for index in picks {
                    let at = |delta: f64| {
                        let mut moved = params.clone();
                        moved.buffers_mut().nth(t).unwrap()[index] += delta;
                        loss(&moved, config, objective, 5, None)
                    };
                    let eps = 1e-6;
                    let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                    assert!(
                        (analytic[index] - numeric).abs() <= 1e-8 + 1e-5 * numeric.abs(),
                        "tensor {t} of {count}, entry {index}, {objective:?}: \
                         analytic {} vs central difference {numeric}",
                        analytic[index]
                    );
                }
            }
        }
    }

    #[test]
    fn the_passes_equal_candle_s_autodiff_of_the_same_encoder() {
        use candle_core::{DType, Device, Tensor};
        let weights = crate::tiny_bert(2, 13);
        let config = weights.config();
        let rows = rows();
        let ids: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        // Ours, without dropout: pooled embeddings and the gradient of Σ pooled ⊙ r.
        let params = Params::<f64>::from_weights(&weights);
        let pass = forward(&params, config, Tokens::new(&ids), Start::Ids, 0, &mut None);
        let r: Vec<f64> = (0..pass.pooled.len())
            .map(|i| ((i * 7) % 11) as f64 / 11.0 - 0.5)
            .collect();
        let mut grads = params.zeros_for(true, 0);
        backward(&params, config, &pass, &r, 0, &mut grads, 0.0);
        // candle's.
        let device = Device::Cpu;
        let reference = crate::reference::Encoder::new(&weights, &device, DType::F64).unwrap();
        let batch = crate::reference::Batch::new(&ids, &device, DType::F64).unwrap();
        let mut h = reference.embed(&batch, true).unwrap();
        for layer in 0..config.layers {
            h = reference.block(layer, &h, &batch, true).unwrap();
        }
        let pooled = crate::reference::pool(&h, &batch.mask).unwrap();
        let theirs: Vec<f64> = pooled.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in pass.pooled.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-12, "pooled {a} vs candle {b}");
        }
        let r = Tensor::from_vec(r, pooled.shape(), &device).unwrap();
        let store = (pooled * r).unwrap().sum_all().unwrap().backward().unwrap();
        let vars = reference
            .embeddings
            .iter()
            .chain(reference.blocks.iter().flatten());
        for (t, (ours, var)) in grads.buffers_mut().zip(vars).enumerate() {
            let theirs: Vec<f64> = store
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // Not closer: candle's GELU backward writes 1/√(2π) as 0.398942 (7e-7 off), so its gradients
            // below a feed-forward layer carry that error; the central differences above have none.
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-7 * (1.0 + b.abs()),
                    "tensor {t}[{i}]: {a} vs candle {b}"
                );
            }
        }
    }

    #[test]
    fn float32_follows_float64() {
        let weights = crate::tiny_bert(2, 13);
        let config = weights.config();
        let rows = rows();
        let ids: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let wide = forward(
            &Params::<f64>::from_weights(&weights),
            config,
            Tokens::new(&ids),
            Start::Ids,
            0,
            &mut None,
        );
        let narrow = forward(
            &Params::<f32>::from_weights(&weights),
            config,
            Tokens::new(&ids),
            Start::Ids,
            0,
            &mut None,
        );
        for (a, b) in wide.pooled.iter().zip(&narrow.pooled) {
            assert!((a - f64::from(*b)).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
