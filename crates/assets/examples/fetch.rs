//! Fetches every registered part into the cache: `cargo run -p graft-assets --example fetch [cache-dir]`.

use graft_assets::{Cache, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args_os()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(Cache::default_location);
    let cache = Cache::new(root);
    let registry = Registry::builtin();
    for name in registry.runtime.keys() {
        let runtime = cache.runtime(name)?;
        println!(
            "runtime {name}: {} ({})",
            runtime.library.path.display(),
            runtime.library.sha256
        );
    }
    for name in registry.model_names() {
        let model = cache.model(name)?;
        println!(
            "model {name}: {} ({})",
            model.onnx.path.display(),
            model.onnx.sha256
        );
    }
    for name in registry.dataset_names() {
        let data = cache.dataset(name)?;
        println!(
            "dataset {name}: {} ({})",
            data.table.path.display(),
            data.table.sha256
        );
    }
    Ok(())
}
