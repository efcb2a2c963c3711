//! `graft models`: the registered backbones, with what the cache holds of them.

use std::path::PathBuf;

use graft_engine::PipelineError;

use crate::Defaults;

/// List the registered backbones: modality, embedding width, licence, package, whether they are fetched.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cache of fetched parts (default: see `graft --help`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let cache = args.cache_dir.unwrap_or_else(|| defaults.cache_dir.clone());
    let models = graft_engine::provision::model_listings(&cache);
    let width = models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let package = models
        .iter()
        .map(|m| m.package.len())
        .max()
        .unwrap_or(7)
        .max(7);
    outln!(
        "{:<width$}  {:<5}  {:>5}  {:<10}  {:<12}  {:<package$}  notes",
        "name",
        "kind",
        "dim",
        "licence",
        "in cache",
        "package"
    )?;
    for m in &models {
        let cached = m.cached_bytes.map_or_else(
            || "not fetched".to_owned(),
            |b| format!("{:.1} MB", b as f64 / 1e6),
        );
        let mut notes: Vec<String> = Vec::new();
        if m.fine_tunable {
            notes.push("fine-tunable ([fine_tune])".to_owned());
        }
        if let Some(prompt) = &m.prompt {
            notes.push(format!("prompt {prompt:?}"));
        }
        let notes = notes.join("; ");
        let line = format!(
            "{:<width$}  {:<5}  {:>5}  {:<10}  {:<12}  {:<package$}  {notes}",
            m.name, m.modality, m.dimension, m.licence, cached, m.package
        );
        outln!("{}", line.trim_end())?;
    }
    outln!(
        "\n{} registered backbones; descriptions and checksums: crates/assets/registry.toml",
        models.len()
    )?;
    Ok(())
}
