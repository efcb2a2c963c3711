//! `graft evaluate`: a run's head on new labelled rows, scored and reported.

use std::path::PathBuf;

use graft_engine::PipelineError;

use super::{InferenceArgs, all_cores};
use crate::Defaults;

/// Score a run's head on new labelled rows: accuracy, macro-F1 and their intervals, per class, confusion,
/// calibration, next to the run's own test scores (evaluation.json, report.md, predictions.csv).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run folder written by `run`.
    pub run_dir: PathBuf,
    /// Labelled rows: a .csv, .tsv, .jsonl or .parquet table.
    pub input: PathBuf,
    /// Column with each row's true class.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Column with the texts.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Which head of the run (default: the first in its pipeline).
    #[arg(long)]
    pub head: Option<String>,
    /// Folder for the results (default: <run_dir>/evaluations/<input file name>).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    #[command(flatten)]
    pub model: super::ModelOverride,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

pub(crate) fn run(args: Args, defaults: &Defaults) -> Result<(), PipelineError> {
    if !(args.level > 0.0 && args.level < 1.0) {
        return Err(PipelineError::Job {
            message: format!("--level {} is not between 0 and 1", args.level),
            hint: "e.g. --level 0.95 for 95% intervals".to_owned(),
        });
    }
    let model = args.model.source()?;
    let output = args.output.unwrap_or_else(|| {
        let name = args
            .input
            .file_name()
            .map_or_else(|| "input".to_owned(), |n| n.to_string_lossy().into_owned());
        args.run_dir.join("evaluations").join(name)
    });
    let job = graft_jobs::EvaluateJob {
        predict: graft_jobs::PredictJob {
            run_dir: args.run_dir,
            input: args.input,
            text_column: args.text_column,
            id_column: None,
            output: output.join("predictions.csv"),
            head: args.head,
            model,
            output_name: None,
            batch_size: args.inference.batch_size,
            threads: args.inference.threads.unwrap_or_else(all_cores),
            provider: args.inference.device.provider(),
            cache_dir: args
                .inference
                .cache_dir
                .unwrap_or_else(|| defaults.cache_dir.clone()),
            progress: !args.inference.no_progress,
        },
        label_column: args.label_column,
        output: output.clone(),
        level: args.level,
        resamples: 1000,
    };
    let e = graft_jobs::evaluate(&job)?;
    let s = &e.scores;
    let ci = s.intervals.as_ref().expect("evaluate sets intervals");
    outln!(
        "evaluated head `{}` on {} rows of {}: accuracy {:.4} [{:.4}, {:.4}], macro-F1 {:.4} [{:.4}, {:.4}] ({:.0}% intervals){}",
        e.head,
        s.rows,
        e.input.display(),
        s.accuracy,
        ci.accuracy.lower,
        ci.accuracy.upper,
        s.macro_f1,
        ci.macro_f1.lower,
        ci.macro_f1.upper,
        args.level * 100.0,
        e.run_test.as_ref().map_or_else(String::new, |t| format!(
            "; the run's test split: accuracy {:.4}, macro-F1 {:.4}",
            t.accuracy, t.macro_f1
        )),
    )?;
    outln!("  report {}", output.join("report.md").display())?;
    Ok(())
}
