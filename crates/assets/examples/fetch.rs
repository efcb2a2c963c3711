//! Fetches every registered part into the cache: `cargo run -p graft-assets --example fetch [cache-dir]`.
//! The GPU runtime (285 MB) is fetched only with `--gpu`.

use graft_assets::{Cache, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gpu = args.iter().any(|a| a == "--gpu");
    let root = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(Into::into)
        .unwrap_or_else(Cache::default_location);
    let cache = Cache::new(root);
    let registry = Registry::builtin();
    for name in registry.runtime.keys() {
        if name.contains("gpu") && !gpu {
            continue;
        }
        let runtime = cache.runtime(name)?;
        println!("runtime {name}: {}", runtime.library.path.display());
    }
    for name in registry.models.keys() {
        let files = cache.model(name)?;
        let main = files.onnx.or(files.weights).expect("a graph or weights");
        println!("model {name}: {}", main.path.display());
    }
    for name in registry.image_models.keys() {
        println!(
            "model {name}: {}",
            cache.image_model(name)?.onnx.path.display()
        );
    }
    for name in registry.datasets.keys() {
        println!(
            "dataset {name}: {}",
            cache.dataset(name)?.table.path.display()
        );
    }
    for name in registry.image_datasets.keys() {
        let files = cache.image_dataset(name)?;
        println!("dataset {name}: {}", files.train_images.path.display());
    }
    for name in registry.samples.keys() {
        println!("sample {name}: {}", cache.sample(name)?.path.display());
    }
    Ok(())
}
