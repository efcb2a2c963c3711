//! `graft schema`: the JSON Schema of the pipeline file, derived from the types that read it.

use std::path::PathBuf;

use graft_engine::PipelineError;

/// Print the JSON Schema of the pipeline file (for editors: `#:schema` in taplo-based ones).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write it to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<(), PipelineError> {
    let text = graft_config::schema::pipeline_schema_json();
    match args.output {
        None => out!("{text}")?,
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| PipelineError::Io { path, source })?
        }
    }
    Ok(())
}
