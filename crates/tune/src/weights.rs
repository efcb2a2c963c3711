//! BERT weights as named ndarray tensors, read from and written to safetensors (Hugging Face names).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::TuneError;

/// The shape of a BERT encoder. Everything but the head count is read off the weights' shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of every token state.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block (not visible in the weights; from the model's config).
    pub attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table: the longest sequence the model reads.
    pub max_positions: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// Layer-norm epsilon (BERT's 1e-12).
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.attention_heads
    }
}

/// The name of block `layer`'s tensor `suffix` (e.g. `attention.self.query.weight`).
pub fn block_tensor(layer: usize, suffix: &str) -> String {
    format!("encoder.layer.{layer}.{suffix}")
}

/// The tensors of one block, by their name inside the block, with their shapes as (hidden, intermediate)
/// multiples: every block must have exactly these.
pub(crate) const BLOCK_TENSORS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// The shape of block tensor `suffix` in an encoder `hidden` wide with an `intermediate`-wide feed-forward.
pub(crate) fn block_shape(suffix: &str, hidden: usize, intermediate: usize) -> Vec<usize> {
    match suffix {
        "intermediate.dense.weight" => vec![intermediate, hidden],
        "intermediate.dense.bias" => vec![intermediate],
        "output.dense.weight" => vec![hidden, intermediate],
        s if s.ends_with(".weight") && !s.contains("LayerNorm") => vec![hidden, hidden],
        _ => vec![hidden],
    }
}

/// The embedding tensors.
pub(crate) const EMBEDDING_TENSORS: [&str; 5] = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
];

/// A BERT encoder's float32 weights under their Hugging Face names (`embeddings.…`, `encoder.layer.N.…`),
/// checked to form a complete encoder of [`BertConfig`]'s shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BertWeights {
    config: BertConfig,
    tensors: BTreeMap<String, ArrayD<f32>>,
}

impl BertWeights {
    /// Weights from named tensors; checks that every tensor of a `config`-shaped encoder is present with
    /// its shape. Extra tensors (a pooler, say) are kept but unused.
    pub fn new(
        config: BertConfig,
        tensors: BTreeMap<String, ArrayD<f32>>,
    ) -> Result<BertWeights, TuneError> {
        if config.attention_heads == 0 || !config.hidden_size.is_multiple_of(config.attention_heads)
        {
            return Err(TuneError::Config(format!(
                "attention_heads = {} does not divide hidden_size = {}",
                config.attention_heads, config.hidden_size
            )));
        }
        let weights = BertWeights { config, tensors };
        for (name, shape) in weights.expected_shapes() {
            let found = weights
                .tensors
                .get(&name)
                .ok_or_else(|| TuneError::MissingTensor { name: name.clone() })?;
            if found.shape() != shape.as_slice() {
                return Err(TuneError::TensorShape {
                    name,
                    expected: shape,
                    found: found.shape().to_vec(),
                });
            }
            if let Some(bad) = found.iter().position(|v| !v.is_finite()) {
                return Err(TuneError::NonFinite { name, index: bad });
            }
        }
        Ok(weights)
    }

    /// Reads a safetensors file (float32 tensors; other types, such as BERT's int64 `position_ids`, are
    /// skipped) and infers the shape from it; `attention_heads` comes from the model's config.
    pub fn read_safetensors(path: &Path, attention_heads: usize) -> Result<BertWeights, TuneError> {
        let tensors = read_f32_tensors(path)?;
        let in_file = |problem| TuneError::NotAnEncoder {
            path: path.to_path_buf(),
            problem: Box::new(problem),
        };
        let config = infer_config(&tensors, attention_heads).map_err(in_file)?;
        BertWeights::new(config, tensors).map_err(in_file)
    }

    /// Writes the encoder's tensors (the ones [`BertWeights::new`] checks) as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, TuneError> {
        let names: Vec<String> = self.expected_shapes().into_iter().map(|(n, _)| n).collect();
        let raw: Vec<(String, Vec<u8>, Vec<usize>)> = names
            .into_iter()
            .map(|n| {
                let t = &self.tensors[&n];
                let bytes = t.iter().flat_map(|v| v.to_le_bytes()).collect();
                (n, bytes, t.shape().to_vec())
            })
            .collect();
        let views = raw
            .iter()
            .map(|(n, bytes, shape)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (n.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TuneError::Config(e.to_string()))?;
        safetensors::serialize(views, None).map_err(|e| TuneError::Config(e.to_string()))
    }

    /// The encoder's shape.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Every tensor's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<ArrayViewD<'_, f32>> {
        self.tensors.get(name).map(|t| t.view())
    }

    /// Replaces a tensor of the same shape (used to write tuned values back).
    pub(crate) fn set(&mut self, name: &str, values: ArrayD<f32>) {
        let slot = self.tensors.get_mut(name).expect("a checked tensor name");
        debug_assert_eq!(slot.shape(), values.shape());
        *slot = values;
    }

    /// Every tensor a `config`-shaped encoder needs, with its shape.
    fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut out = vec![
            (EMBEDDING_TENSORS[0].to_owned(), vec![c.vocab_size, h]),
            (EMBEDDING_TENSORS[1].to_owned(), vec![c.max_positions, h]),
            (EMBEDDING_TENSORS[2].to_owned(), vec![c.type_vocab_size, h]),
            (EMBEDDING_TENSORS[3].to_owned(), vec![h]),
            (EMBEDDING_TENSORS[4].to_owned(), vec![h]),
        ];
        for layer in 0..c.layers {
            for suffix in BLOCK_TENSORS {
                out.push((block_tensor(layer, suffix), block_shape(suffix, h, i)));
            }
        }
        out
    }
}

/// Reads the encoder's shape off its tensors.
fn infer_config(
    tensors: &BTreeMap<String, ArrayD<f32>>,
    attention_heads: usize,
) -> Result<BertConfig, TuneError> {
    let shape = |name: &str| -> Result<&[usize], TuneError> {
        let t = tensors.get(name).ok_or_else(|| TuneError::MissingTensor {
            name: name.to_owned(),
        })?;
        if t.ndim() != 2 {
            return Err(TuneError::TensorShape {
                name: name.to_owned(),
                expected: vec![0, 0],
                found: t.shape().to_vec(),
            });
        }
        Ok(t.shape())
    };
    let word = shape(EMBEDDING_TENSORS[0])?;
    let layers = (0..)
        .take_while(|l| tensors.contains_key(&block_tensor(*l, BLOCK_TENSORS[0])))
        .count();
    if layers == 0 {
        return Err(TuneError::MissingTensor {
            name: block_tensor(0, BLOCK_TENSORS[0]),
        });
    }
    Ok(BertConfig {
        vocab_size: word[0],
        hidden_size: word[1],
        layers,
        attention_heads,
        intermediate_size: shape(&block_tensor(0, "intermediate.dense.weight"))?[0],
        max_positions: shape(EMBEDDING_TENSORS[1])?[0],
        type_vocab_size: shape(EMBEDDING_TENSORS[2])?[0],
        layer_norm_eps: 1e-12,
    })
}

/// Every float32 tensor of a safetensors file by name (tensors of other types are skipped): the weights of
/// an encoder graft writes a graph for without training it (MPNet).
pub fn read_f32_tensors(path: &Path) -> Result<BTreeMap<String, ArrayD<f32>>, TuneError> {
    let bytes = std::fs::read(path).map_err(|source| TuneError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let damaged = |detail: String| TuneError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| damaged(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(TuneError::NonFinite { name, index: bad });
        }
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
            .map_err(|e| damaged(format!("{name}: {e}")))?;
        tensors.insert(name, array);
    }
    Ok(tensors)
}
