//! Where things come from: models and paths, shared by the plan and the technique tables.

use std::path::{Path, PathBuf};

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
