//! Where things come from: models and paths, shared by the plan and the technique tables.

use std::path::{Path, PathBuf};

pub use graft_schema::techniques::{RawBackboneRef, RawModelFiles};

/// Where the backbone comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A backbone from graft's registry.
    Registry(String),
    /// The user's own files.
    Files {
        /// The ONNX graph.
        onnx: PathBuf,
        /// The `tokenizers` JSON.
        tokenizer: PathBuf,
        /// Expected sha256 of the graph, if pinned.
        sha256: Option<String>,
    },
}

/// An absolute path with `.` and `..` removed lexically (so messages show `/repo/data/x.csv`, not
/// `/repo/pipelines/../data/x.csv`).
pub fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A second text backbone, checked: the pipeline's extraction settings apply to it (registered ones bring
/// their own output, pooling, normalisation and length).
#[derive(Debug, Clone, PartialEq)]
pub enum OtherBackbone {
    Registry(String),
    Files {
        onnx: std::path::PathBuf,
        tokenizer: std::path::PathBuf,
    },
}

impl OtherBackbone {
    /// For reports.
    pub fn name(&self) -> String {
        match self {
            OtherBackbone::Registry(name) => name.clone(),
            OtherBackbone::Files { onnx, .. } => onnx
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Whether it is the pipeline's own backbone.
    pub fn is_pipeline_backbone(&self, pipeline: Option<&ModelSource>) -> bool {
        match (self, pipeline) {
            (OtherBackbone::Registry(a), Some(ModelSource::Registry(b))) => a == b,
            (OtherBackbone::Files { onnx: a, .. }, Some(ModelSource::Files { onnx: b, .. })) => {
                a == b
            }
            _ => false,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            OtherBackbone::Registry(name) => serde_json::json!({ "model": name }),
            OtherBackbone::Files { onnx, tokenizer } => {
                serde_json::json!({ "onnx": onnx, "tokenizer": tokenizer })
            }
        }
    }
}

impl std::fmt::Display for OtherBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
