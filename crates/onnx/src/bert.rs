//! A BERT encoder written as a graph of standard operators (opset 17) from weights under Hugging Face's
//! names: what graft runs for a backbone it only has as safetensors, and for one it fine-tuned.

use ndarray::{ArrayView2, ArrayViewD};

use crate::{Attribute, Dim, ElementType, Graph, OnnxError, ValueInfo, standalone_model};

/// The shape of the encoder to write.
#[derive(Debug, Clone, PartialEq)]
pub struct BertGraph {
    /// Width of the token states.
    pub hidden_size: usize,
    /// Attention heads per block.
    pub attention_heads: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
    /// Blocks written, from the bottom: fewer than the model has gives the states at that boundary.
    pub blocks: usize,
    /// The name of the graph's output, `[batch, sequence, hidden]`.
    pub output: String,
}

/// The additive attention bias of padded positions (BERT's).
const MASKED_BIAS: f32 = -10_000.0;

/// Writes the encoder as a standalone model with inputs `input_ids`, `attention_mask` and
/// `token_type_ids` (int64 `[batch, sequence]`) and one float output of token states. `tensor` looks a
/// weight up by name (`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`,
/// …); a missing one is an error naming it.
pub fn bert_model<'a>(
    tensor: &dyn Fn(&str) -> Option<ArrayViewD<'a, f32>>,
    shape: &BertGraph,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, OnnxError> {
    bert_model_with(tensor, None, shape, metadata)
}

/// A word-embedding table kept in 4-bit blocks (Q4_0, 32 weights a block): per row, `codes` holds 16 bytes
/// a block (byte `j`: weight `j` in the low nibble, weight `j + 16` in the high one) and `scales` one scale
/// a block; a weight is `(q − 8) · scale`.
#[derive(Debug, Clone, Copy)]
pub struct Q4Table<'a> {
    /// `[rows, width / 2]`.
    pub codes: ArrayView2<'a, u8>,
    /// `[rows, width / 32]`.
    pub scales: ArrayView2<'a, f32>,
}

/// [`bert_model`] with the word embeddings kept 4-bit in the graph and dequantized row by row as tokens
/// look them up (exactly: `(q − 8)` and its product with the f32 scale round once, as a dequantized table
/// would); every other weight comes from `tensor`. A 250,000-piece vocabulary's table takes 54 MB, not 384.
pub fn bert_model_q4_words<'a>(
    tensor: &dyn Fn(&str) -> Option<ArrayViewD<'a, f32>>,
    words: Q4Table<'_>,
    shape: &BertGraph,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, OnnxError> {
    let (rows, blocks) = words.scales.dim();
    if words.codes.dim() != (rows, blocks * 16) || blocks * 32 != shape.hidden_size {
        return Err(OnnxError::Unsupported(format!(
            "a 4-bit word table of {} codes and {} scales does not make rows of {} weights",
            words.codes.ncols(),
            blocks,
            shape.hidden_size
        )));
    }
    bert_model_with(tensor, Some(words), shape, metadata)
}

fn bert_model_with<'a>(
    tensor: &dyn Fn(&str) -> Option<ArrayViewD<'a, f32>>,
    q4_words: Option<Q4Table<'_>>,
    shape: &BertGraph,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, OnnxError> {
    let get = |name: &str| {
        tensor(name).ok_or_else(|| OnnxError::Unsupported(format!("missing BERT weight `{name}`")))
    };
    let mut g = Graph::new(17, "bert/");
    let words = match q4_words {
        Some(table) => q4_word_rows(&mut g, table),
        None => {
            let word_table =
                g.constant("word_embeddings", get("embeddings.word_embeddings.weight")?);
            g.node(
                "Gather",
                &[&word_table, "input_ids"],
                &[("axis", Attribute::Int(0))],
            )
        }
    };
    let hidden = embeddings(&mut g, &get, &words, shape)?;
    let bias = attention_bias(&mut g);
    let mut state = hidden;
    for layer in 0..shape.blocks {
        let name = |suffix: &str| format!("encoder.layer.{layer}.{suffix}");
        let weight = |suffix: &str| get(&name(suffix));
        state = block(&mut g, &weight, shape, &state, &bias)?;
    }
    g.node_into("Identity", &[&state], &[], &shape.output);
    let tokens = || vec![Dim::Named("batch".into()), Dim::Named("sequence".into())];
    let inputs: Vec<ValueInfo> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| ValueInfo::new(*n, ElementType::Int64, tokens()))
        .collect();
    let mut out_dims = tokens();
    out_dims.push(Dim::Fixed(shape.hidden_size as i64));
    let outputs = [ValueInfo::new(&shape.output, ElementType::Float, out_dims)];
    Ok(standalone_model(&g, &inputs, &outputs, metadata))
}

pub(crate) type Lookup<'l, 'a> = dyn Fn(&str) -> Result<ArrayViewD<'a, f32>, OnnxError> + 'l;

pub(crate) fn layer_norm(
    g: &mut Graph,
    x: &str,
    w: ArrayViewD<'_, f32>,
    b: ArrayViewD<'_, f32>,
    eps: f32,
) -> String {
    let w = g.constant("ln_weight", w);
    let b = g.constant("ln_bias", b);
    g.node(
        "LayerNormalization",
        &[x, &w, &b],
        &[
            ("axis", Attribute::Int(-1)),
            ("epsilon", Attribute::Float(eps)),
        ],
    )
}

/// `x · wᵀ + b` for a Hugging Face `[out, in]` weight (stored transposed, as MatMul wants it).
pub(crate) fn dense(
    g: &mut Graph,
    x: &str,
    w: ArrayViewD<'_, f32>,
    b: ArrayViewD<'_, f32>,
) -> Result<String, OnnxError> {
    let w2 = w
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| OnnxError::Unsupported(format!("a dense weight is not 2-D: {e}")))?;
    let wt = g.constant("dense_weight", w2.t().into_dyn());
    let b = g.constant("dense_bias", b);
    let product = g.node("MatMul", &[x, &wt], &[]);
    Ok(g.node("Add", &[&product, &b], &[]))
}

/// `[batch, sequence, hidden]`: each token's row of a 4-bit table, dequantized.
fn q4_word_rows(g: &mut Graph, table: Q4Table<'_>) -> String {
    let blocks = table.scales.ncols();
    let codes: Vec<u8> = table.codes.iter().copied().collect();
    let codes = g.constant_u8("word_codes", &codes, &[table.codes.nrows(), blocks * 16]);
    let scales = g.constant("word_scales", table.scales.into_dyn());
    let gather = |g: &mut Graph, table: &str| {
        g.node(
            "Gather",
            &[table, "input_ids"],
            &[("axis", Attribute::Int(0))],
        )
    };
    let bytes = gather(g, &codes);
    let bytes = g.node("Cast", &[&bytes], &[("to", Attribute::Int(7))]);
    let by_block = g.constant_i64("block_shape", &[0, 0, blocks as i64, 16], &[4]);
    let bytes = g.node("Reshape", &[&bytes, &by_block], &[]);
    let sixteen = g.constant_i64("sixteen", &[16], &[]);
    let low = g.node("Mod", &[&bytes, &sixteen], &[]);
    let high = g.node("Div", &[&bytes, &sixteen], &[]);
    let nibbles = g.node("Concat", &[&low, &high], &[("axis", Attribute::Int(-1))]);
    let nibbles = g.node("Cast", &[&nibbles], &[("to", Attribute::Int(1))]);
    let eight = g.scalar("eight", 8.0);
    let centred = g.node("Sub", &[&nibbles, &eight], &[]);
    let scale = gather(g, &scales);
    let last = g.constant_i64("last_axis", &[-1], &[1]);
    let scale = g.node("Unsqueeze", &[&scale, &last], &[]);
    let weights = g.node("Mul", &[&centred, &scale], &[]);
    let rows = g.constant_i64("row_shape", &[0, 0, blocks as i64 * 32], &[3]);
    g.node("Reshape", &[&weights, &rows], &[])
}

fn embeddings(
    g: &mut Graph,
    get: &Lookup<'_, '_>,
    words: &str,
    shape: &BertGraph,
) -> Result<String, OnnxError> {
    let type_table = g.constant(
        "token_type_embeddings",
        get("embeddings.token_type_embeddings.weight")?,
    );
    let types = g.node(
        "Gather",
        &[&type_table, "token_type_ids"],
        &[("axis", Attribute::Int(0))],
    );
    let positions = sequence_positions(g);
    let position_table = g.constant(
        "position_embeddings",
        get("embeddings.position_embeddings.weight")?,
    );
    let placed = g.node(
        "Gather",
        &[&position_table, &positions],
        &[("axis", Attribute::Int(0))],
    );
    let sum = g.node("Add", &[words, &types], &[]);
    let sum = g.node("Add", &[&sum, &placed], &[]);
    Ok(layer_norm(
        g,
        &sum,
        get("embeddings.LayerNorm.weight")?,
        get("embeddings.LayerNorm.bias")?,
        shape.layer_norm_eps,
    ))
}

/// `0..sequence` (int64), the positions of `input_ids`' second axis.
pub(crate) fn sequence_positions(g: &mut Graph) -> String {
    let ids_shape = g.node("Shape", &["input_ids"], &[]);
    let one = g.constant_i64("one", &[1], &[]);
    let zero = g.constant_i64("zero", &[0], &[]);
    let length = g.node(
        "Gather",
        &[&ids_shape, &one],
        &[("axis", Attribute::Int(0))],
    );
    g.node("Range", &[&zero, &length, &one], &[])
}

/// `[batch, 1, 1, sequence]`: 0 where the mask is 1, a large negative number where it is 0.
pub(crate) fn attention_bias(g: &mut Graph) -> String {
    let mask = g.node("Cast", &["attention_mask"], &[("to", Attribute::Int(1))]);
    let one = g.scalar("one", 1.0);
    let masked = g.scalar("masked_bias", MASKED_BIAS);
    let inverted = g.node("Sub", &[&one, &mask], &[]);
    let bias = g.node("Mul", &[&inverted, &masked], &[]);
    let axes = g.constant_i64("bias_axes", &[1, 2], &[2]);
    g.node("Unsqueeze", &[&bias, &axes], &[])
}

/// Where a block's attention weights live, under the block's prefix: BERT's and MPNet's names differ, the
/// rest of the block (feed-forward, norms after each half) is the same.
pub(crate) struct BlockNames {
    /// Query, key and value projections (`<name>.weight`, `<name>.bias`).
    pub(crate) query: &'static str,
    pub(crate) key: &'static str,
    pub(crate) value: &'static str,
    /// The attention output's projection and the layer norm after its residual.
    pub(crate) attention_out: &'static str,
    pub(crate) attention_norm: &'static str,
}

const BERT_BLOCK: BlockNames = BlockNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
};

fn block(
    g: &mut Graph,
    weight: &Lookup<'_, '_>,
    shape: &BertGraph,
    x: &str,
    bias: &str,
) -> Result<String, OnnxError> {
    let width = (
        shape.hidden_size,
        shape.attention_heads,
        shape.layer_norm_eps,
    );
    encoder_block(g, weight, &BERT_BLOCK, width, x, bias)
}

/// One post-norm transformer block: multi-head attention with the additive `bias`, residual and layer norm,
/// then the erf-GELU feed-forward, residual and layer norm. `(hidden, heads, eps)` is the block's width.
pub(crate) fn encoder_block(
    g: &mut Graph,
    weight: &Lookup<'_, '_>,
    names: &BlockNames,
    (hidden, heads, eps): (usize, usize, f32),
    x: &str,
    bias: &str,
) -> Result<String, OnnxError> {
    let head_size = (hidden / heads) as i64;
    let split = g.constant_i64("split_heads", &[0, 0, heads as i64, head_size], &[4]);
    let merge = g.constant_i64("merge_heads", &[0, 0, hidden as i64], &[3]);
    let project = |g: &mut Graph, which: &str, perm: [i64; 4]| -> Result<String, OnnxError> {
        let y = dense(
            g,
            x,
            weight(&format!("{which}.weight"))?,
            weight(&format!("{which}.bias"))?,
        )?;
        let y = g.node("Reshape", &[&y, &split], &[]);
        Ok(g.node(
            "Transpose",
            &[&y],
            &[("perm", Attribute::Ints(perm.to_vec()))],
        ))
    };
    let q = project(g, names.query, [0, 2, 1, 3])?;
    let k = project(g, names.key, [0, 2, 3, 1])?;
    let v = project(g, names.value, [0, 2, 1, 3])?;
    let scale = g.scalar("scale", 1.0 / (head_size as f32).sqrt());
    let scores = g.node("MatMul", &[&q, &k], &[]);
    let scores = g.node("Mul", &[&scores, &scale], &[]);
    let scores = g.node("Add", &[&scores, bias], &[]);
    let probs = g.node("Softmax", &[&scores], &[("axis", Attribute::Int(-1))]);
    let context = g.node("MatMul", &[&probs, &v], &[]);
    let context = g.node(
        "Transpose",
        &[&context],
        &[("perm", Attribute::Ints(vec![0, 2, 1, 3]))],
    );
    let context = g.node("Reshape", &[&context, &merge], &[]);
    let attended = dense(
        g,
        &context,
        weight(&format!("{}.weight", names.attention_out))?,
        weight(&format!("{}.bias", names.attention_out))?,
    )?;
    let residual = g.node("Add", &[&attended, x], &[]);
    let attended = layer_norm(
        g,
        &residual,
        weight(&format!("{}.weight", names.attention_norm))?,
        weight(&format!("{}.bias", names.attention_norm))?,
        eps,
    );
    let inner = dense(
        g,
        &attended,
        weight("intermediate.dense.weight")?,
        weight("intermediate.dense.bias")?,
    )?;
    let inner = gelu(g, &inner);
    let out = dense(
        g,
        &inner,
        weight("output.dense.weight")?,
        weight("output.dense.bias")?,
    )?;
    let residual = g.node("Add", &[&out, &attended], &[]);
    Ok(layer_norm(
        g,
        &residual,
        weight("output.LayerNorm.weight")?,
        weight("output.LayerNorm.bias")?,
        eps,
    ))
}

/// The exact (erf) GELU: `x · ½ (1 + erf(x / √2))`.
pub(crate) fn gelu(g: &mut Graph, x: &str) -> String {
    let root2 = g.scalar("sqrt2", std::f32::consts::SQRT_2);
    let one = g.scalar("one", 1.0);
    let half = g.scalar("half", 0.5);
    let scaled = g.node("Div", &[x, &root2], &[]);
    let erf = g.node("Erf", &[&scaled], &[]);
    let shifted = g.node("Add", &[&erf, &one], &[]);
    let product = g.node("Mul", &[x, &shifted], &[]);
    g.node("Mul", &[&product, &half], &[])
}
