//! Paths the integration tests share.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The cache `cargo xtask test` filled (GRAFT_CACHE), else the default one.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(graft_engine::CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".graft-cache"))
}
