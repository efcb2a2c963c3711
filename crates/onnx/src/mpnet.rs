//! An MPNet encoder (all-mpnet-base-v2's architecture) written as a graph of standard operators (opset 17)
//! from weights under Hugging Face's names. It differs from BERT in three places: positions count from
//! the padding id plus one over the real tokens (no token types), every block adds a bias learned per
//! bucket of relative distance (T5's buckets: 32, bidirectional, exact below 8, logarithmic up to 128) to
//! its attention scores, and the attention projections are `attention.attn.{q,k,v,o}`.

use ndarray::ArrayViewD;

use crate::bert::{
    BlockNames, Lookup, attention_bias, encoder_block, layer_norm, sequence_positions,
};
use crate::{Attribute, Dim, ElementType, Graph, OnnxError, ValueInfo, standalone_model};

/// The shape of the encoder to write.
#[derive(Debug, Clone, PartialEq)]
pub struct MpnetGraph {
    /// Width of the token states.
    pub hidden_size: usize,
    /// Attention heads per block.
    pub attention_heads: usize,
    /// Blocks written, from the bottom.
    pub blocks: usize,
    /// Layer-norm epsilon (MPNet's: 1e-5).
    pub layer_norm_eps: f32,
    /// Relative-distance buckets (MPNet's: 32).
    pub buckets: usize,
    /// The distance past which buckets stop growing (MPNet's: 128).
    pub max_distance: usize,
    /// The padding token's id: positions start after it (MPNet's: 1).
    pub padding_id: i64,
    /// The name of the graph's output, `[batch, sequence, hidden]`.
    pub output: String,
}

/// Writes the encoder as a standalone model with inputs `input_ids` and `attention_mask` (int64
/// `[batch, sequence]`) and one float output of token states. `tensor` looks a weight up by name
/// (`embeddings.word_embeddings.weight`, `encoder.relative_attention_bias.weight`,
/// `encoder.layer.0.attention.attn.q.weight`, …); a missing one is an error naming it.
pub fn mpnet_model<'a>(
    tensor: &dyn Fn(&str) -> Option<ArrayViewD<'a, f32>>,
    shape: &MpnetGraph,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, OnnxError> {
    let get = |name: &str| {
        tensor(name).ok_or_else(|| OnnxError::Unsupported(format!("missing MPNet weight `{name}`")))
    };
    let mut g = Graph::new(17, "mpnet/");
    let hidden = embeddings(&mut g, &get, shape)?;
    // Padding and relative distances, once for every block: [batch, 1, 1, k] + [1, heads, q, k].
    let mask = attention_bias(&mut g);
    let distances = relative_bias(&mut g, &get, shape)?;
    let bias = g.node("Add", &[&distances, &mask], &[]);
    let mut state = hidden;
    for layer in 0..shape.blocks {
        let weight = |suffix: &str| get(&format!("encoder.layer.{layer}.{suffix}"));
        let width = (
            shape.hidden_size,
            shape.attention_heads,
            shape.layer_norm_eps,
        );
        state = encoder_block(&mut g, &weight, &MPNET_BLOCK, width, &state, &bias)?;
    }
    g.node_into("Identity", &[&state], &[], &shape.output);
    let tokens = || vec![Dim::Named("batch".into()), Dim::Named("sequence".into())];
    let inputs: Vec<ValueInfo> = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| ValueInfo::new(*n, ElementType::Int64, tokens()))
        .collect();
    let mut out_dims = tokens();
    out_dims.push(Dim::Fixed(shape.hidden_size as i64));
    let outputs = [ValueInfo::new(&shape.output, ElementType::Float, out_dims)];
    Ok(standalone_model(&g, &inputs, &outputs, metadata))
}

/// Word plus position embeddings, layer-normalised. A real token's position is the padding id plus its
/// rank among the real tokens (Hugging Face's `create_position_ids_from_input_ids` with padding at the end).
fn embeddings(
    g: &mut Graph,
    get: &Lookup<'_, '_>,
    shape: &MpnetGraph,
) -> Result<String, OnnxError> {
    let word_table = g.constant("word_embeddings", get("embeddings.word_embeddings.weight")?);
    let words = g.node(
        "Gather",
        &[&word_table, "input_ids"],
        &[("axis", Attribute::Int(0))],
    );
    let axis = g.constant_i64("sequence_axis", &[1], &[]);
    let rank = g.node("CumSum", &["attention_mask", &axis], &[]);
    let rank = g.node("Mul", &[&rank, "attention_mask"], &[]);
    let padding = g.constant_i64("padding_id", &[shape.padding_id], &[]);
    let positions = g.node("Add", &[&rank, &padding], &[]);
    // Not named `position_embedding…`: the table's first rows are never read, so its length is not the
    // limit (the registry records it).
    let position_table = g.constant(
        "offset_positions",
        get("embeddings.position_embeddings.weight")?,
    );
    let placed = g.node(
        "Gather",
        &[&position_table, &positions],
        &[("axis", Attribute::Int(0))],
    );
    let sum = g.node("Add", &[&words, &placed], &[]);
    Ok(layer_norm(
        g,
        &sum,
        get("embeddings.LayerNorm.weight")?,
        get("embeddings.LayerNorm.bias")?,
        shape.layer_norm_eps,
    ))
}

/// `[1, heads, sequence, sequence]`: the learned bias of each query–key distance's bucket. For
/// `n = query − key`: keys before the query (n > 0) use buckets `0..half`, keys after it `half..buckets`;
/// within a half, `|n| < half/2` is its own bucket and longer distances share buckets logarithmically up to
/// `max_distance` (T5's `relative_position_bucket`, as MPNet computes it).
fn relative_bias(
    g: &mut Graph,
    get: &Lookup<'_, '_>,
    shape: &MpnetGraph,
) -> Result<String, OnnxError> {
    let half = (shape.buckets / 2) as i64;
    let exact = half / 2;
    let positions = sequence_positions(g);
    let column = g.constant_i64("column_axis", &[1], &[1]);
    let row = g.constant_i64("row_axis", &[0], &[1]);
    let queries = g.node("Unsqueeze", &[&positions, &column], &[]);
    let keys = g.node("Unsqueeze", &[&positions, &row], &[]);
    let n = g.node("Sub", &[&queries, &keys], &[]);
    // Keys after the query go to the upper half.
    let zero_i = g.constant_i64("zero_scalar", &[0], &[]);
    let after = g.node("Less", &[&n, &zero_i], &[]);
    let after = g.node("Cast", &[&after], &[("to", Attribute::Int(7))]);
    let half_c = g.constant_i64("half", &[half], &[]);
    let base = g.node("Mul", &[&after, &half_c], &[]);
    let n = g.node("Abs", &[&n], &[]);
    // Logarithmic buckets, computed where they apply (|n| ≥ exact; clamped so the log is finite elsewhere).
    let exact_c = g.constant_i64("exact", &[exact], &[]);
    let small = g.node("Less", &[&n, &exact_c], &[]);
    let far = g.node("Max", &[&n, &exact_c], &[]);
    let far = g.node("Cast", &[&far], &[("to", Attribute::Int(1))]);
    let exact_f = g.scalar("exact_f", exact as f32);
    let ratio = g.node("Div", &[&far, &exact_f], &[]);
    let log = g.node("Log", &[&ratio], &[]);
    let scale = g.scalar(
        "log_scale",
        (half - exact) as f32 / (shape.max_distance as f32 / exact as f32).ln(),
    );
    let scaled = g.node("Mul", &[&log, &scale], &[]);
    let scaled = g.node("Floor", &[&scaled], &[]);
    let scaled = g.node("Cast", &[&scaled], &[("to", Attribute::Int(7))]);
    let large = g.node("Add", &[&exact_c, &scaled], &[]);
    let last = g.constant_i64("last_bucket", &[half - 1], &[]);
    let large = g.node("Min", &[&large, &last], &[]);
    let within = g.node("Where", &[&small, &n, &large], &[]);
    let bucket = g.node("Add", &[&base, &within], &[]);
    let table = g.constant(
        "relative_attention_bias",
        get("encoder.relative_attention_bias.weight")?,
    );
    let bias = g.node("Gather", &[&table, &bucket], &[("axis", Attribute::Int(0))]);
    let bias = g.node(
        "Transpose",
        &[&bias],
        &[("perm", Attribute::Ints(vec![2, 0, 1]))],
    );
    let batch_axis = g.constant_i64("batch_axis", &[0], &[1]);
    Ok(g.node("Unsqueeze", &[&bias, &batch_axis], &[]))
}

/// MPNet's names for a block's attention weights.
const MPNET_BLOCK: BlockNames = BlockNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
};
