//! `graft check`: a pipeline file and its data checked without a model.

use std::path::PathBuf;

use graft_config::Plan;
use graft_engine::PipelineError;

use crate::Defaults;

/// Check a pipeline file and its data without extracting or training.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Check only the file: skip reading and splitting the data (which fetches a registered data set) and
    /// opening the model.
    #[arg(long)]
    pub no_data: bool,
    /// Read the data but do not fetch or open the model.
    #[arg(long)]
    pub no_model: bool,
    /// Cache folder (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    let plan = Plan::load(&args.pipeline)?;
    if args.no_data {
        outln!("{}: ok (pipeline `{}`)", args.pipeline.display(), plan.name)?;
        return Ok(());
    }
    let cache_dir = args.cache_dir.unwrap_or_else(|| defaults.cache_dir.clone());
    let data = graft_engine::check_data(&plan, &cache_dir)?;
    let models = if args.no_model {
        Vec::new()
    } else {
        graft_engine::check_models(&plan, &cache_dir, data.train, &data.texts)?
    };
    outln!(
        "{}: ok (pipeline `{}`): {} rows, {} classes; train {} · validation {} · test {}{}",
        args.pipeline.display(),
        plan.name,
        data.rows,
        data.classes,
        data.train,
        data.validation,
        data.test,
        if data.dropped > 0 {
            let first: Vec<String> = data.dropped_rows.iter().map(usize::to_string).collect();
            format!(
                "; {} rows dropped (empty label or text: rows {}{})",
                data.dropped,
                first.join(", "),
                if data.dropped > first.len() {
                    ", …"
                } else {
                    ""
                }
            )
        } else {
            String::new()
        }
    )?;
    for m in models {
        outln!(
            "  {} {}: inputs {}; features from {}{}{}",
            if m.candidate.is_some() {
                "candidate"
            } else {
                "model"
            },
            m.candidate.as_deref().unwrap_or(&m.label),
            m.inputs.join(", "),
            m.output,
            m.dimension
                .map_or_else(String::new, |d| format!(", {d} wide")),
            m.max_length
                .map_or_else(String::new, |n| format!("; {n} tokens kept per text")),
        )?;
        if let Some(prompt) = &m.prompt {
            outln!("  prompt: every text is read as {prompt:?}")?;
        }
        if let Some(l) = m.long_texts.filter(|l| l.long > 0) {
            if l.chunks {
                outln!(
                    "  long texts: {} of {} rows are longer than max_length; chunks embed them as {} windows in all",
                    l.long,
                    l.rows,
                    l.sequences - (l.rows - l.long)
                )?;
            } else {
                outln!(
                    "  long texts: {} of {} rows are longer than max_length and would be truncated \
                     (`long_texts = \"chunks\"` in [backbone] keeps them whole)",
                    l.long,
                    l.rows
                )?;
            }
        }
    }
    Ok(())
}
