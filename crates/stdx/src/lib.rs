//! The foundation under every graft crate: what all of them need and nothing about models, data or heads.
//!
//! - [`atomic`]: files and folders that appear whole or not at all (temporary name, fsync, rename).
//! - [`sha256_hex`], [`sha256_file`], [`HashingWriter`], [`hex`]: the checksums graft records and verifies.
//! - [`derive_seed`]: one independent, stable seed per purpose from a pipeline's seed.
//! - [`alloc_probe`]: the peak memory a piece of code allocates, for tests that bound what readers of
//!   damaged files may reserve.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("metrics.json");
//! graft_stdx::atomic::write(&path, b"{}")?;
//! assert_eq!(graft_stdx::sha256_file(&path)?, graft_stdx::sha256_hex(b"{}"));
//! assert_ne!(graft_stdx::derive_seed(42, "split"), graft_stdx::derive_seed(42, "sample"));
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod alloc_probe;
pub mod atomic;
mod hash;
mod seed;

pub use hash::{HashingWriter, hex, sha256_file, sha256_hex};
pub use seed::derive_seed;

/// The process's peak resident memory so far in MB (Linux's `VmHWM`), `None` where the system does not
/// say: a whole-process figure, for comparing runs that differ in one step.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
