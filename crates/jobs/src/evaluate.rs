//! `graft evaluate`: a run's head on new labelled rows, with the full scores, intervals and a report, next
//! to what the run measured on its own test split.

use std::path::PathBuf;

use crate::JobError;
use graft_eval::{Bootstrap, classification_report, probability_report};
use graft_report::{EVALUATION_FORMAT, Evaluation, Manifest, Metrics, SplitMetrics};

use crate::predict::{PredictJob, artefact_name, output_format, score_rows, write_predictions};

/// What to evaluate and where the results go.
#[derive(Debug, Clone)]
pub struct EvaluateJob {
    /// The rows, the run, the head and the extraction settings, as for `predict`; `predict.output` is
    /// ignored (predictions go to `output/predictions.csv`).
    pub predict: PredictJob,
    /// Column with each row's true class.
    pub label_column: String,
    /// Folder for evaluation.json, report.md and predictions.csv.
    pub output: PathBuf,
    /// Confidence level of the intervals, and bootstrap resamples.
    pub level: f64,
    pub resamples: usize,
}

/// Each row's class among the head's, `None` for an empty label; a label the head does not know is an error.
fn true_classes(job: &EvaluateJob, classes: &[String]) -> Result<Vec<Option<usize>>, JobError> {
    let input = &job.predict.input;
    let table = graft_ingest::read_table(input)?;
    if table.width() == 0 || table.height() == 0 {
        return Err(JobError::invalid(
            format!(
                "{} holds no labelled rows (it has {} columns and {} rows)",
                input.display(),
                table.width(),
                table.height()
            ),
            "evaluate takes a table with a header line, a text column and a label column, one row per example",
        ));
    }
    let rows: Vec<usize> = (0..table.height()).collect();
    let (labels, names) =
        graft_ingest::task_labels(&table, &job.label_column, &rows).map_err(|e| {
            JobError::invalid(
                format!("{}: {e}", input.display()),
                "--label-column names the column holding each row's true class",
            )
        })?;
    let unknown: Vec<&String> = names.iter().filter(|n| !classes.contains(n)).collect();
    if !unknown.is_empty() {
        return Err(JobError::invalid(
            format!(
                "{}: the labels {} are not classes of the head, which knows {}",
                input.display(),
                unknown
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                classes.join(", ")
            ),
            "evaluate on rows labelled with the classes the run was trained on",
        ));
    }
    let to_head: Vec<usize> = names
        .iter()
        .map(|n| classes.iter().position(|c| c == n).expect("checked above"))
        .collect();
    Ok(labels.into_iter().map(|l| l.map(|l| to_head[l])).collect())
}

/// Scores the run's head on the labelled rows and writes `output/` (evaluation.json, report.md,
/// predictions.csv); returns the record.
pub fn evaluate(job: &EvaluateJob) -> Result<Evaluation, JobError> {
    if job.output.exists() && !job.output.is_dir() {
        return Err(JobError::invalid(
            format!("--output {} is a file", job.output.display()),
            "evaluate writes a folder (evaluation.json, report.md, predictions.csv): name a folder, new or existing",
        ));
    }
    std::fs::create_dir_all(&job.output).map_err(|source| JobError::Io {
        path: job.output.clone(),
        source,
    })?;
    let predict = PredictJob {
        output: job.output.join("predictions.csv"),
        ..job.predict.clone()
    };
    let scored = score_rows(&predict)?;
    if scored.loaded.trained.is_multi_label() {
        return Err(JobError::invalid(
            "evaluate scores single-label heads; this head predicts label sets",
            "score a multi-label head's predictions (predict) against your label sets",
        ));
    }
    let classes = scored.loaded.info.classes.clone();
    let truth = true_classes(job, &classes)?;
    if truth.len() != scored.proba.nrows() {
        return Err(JobError::invalid(
            format!(
                "{} rows were embedded but {} labels read",
                scored.proba.nrows(),
                truth.len()
            ),
            "give a table with one label per row",
        ));
    }
    let kept: Vec<usize> = (0..truth.len()).filter(|&r| truth[r].is_some()).collect();
    let dropped: Vec<usize> = (0..truth.len()).filter(|&r| truth[r].is_none()).collect();
    if kept.is_empty() {
        return Err(JobError::invalid(
            format!("{}: no row has a label", predict.input.display()),
            "--label-column names the column holding each row's true class",
        ));
    }
    let y: Vec<usize> = kept.iter().map(|&r| truth[r].expect("kept")).collect();
    let proba = scored.proba.select(ndarray::Axis(0), &kept);
    let predicted = graft_heads::argmax_rows(proba.view());
    let mut scores = SplitMetrics::new(
        classification_report(&y, &predicted, classes.len())?,
        &classes,
    );
    scores.probabilities = Some(probability_report(&y, proba.view(), 10)?);
    let seed = Manifest::read(&predict.run_dir).map_or(0, |m| m.seed);
    let bootstrap = Bootstrap {
        resamples: job.resamples,
        level: job.level,
        seed: graft_stdx::derive_seed(seed, "evaluate"),
    };
    scores.intervals = Some(graft_engine::split_intervals(
        &bootstrap,
        &y,
        &predicted,
        classes.len(),
    )?);
    let head = artefact_name(&scored.json_path);
    let run_test = Metrics::read(&predict.run_dir)
        .map_err(|e| {
            JobError::invalid(
                e.to_string(),
                "use the run folder as the run wrote it, or run the pipeline again",
            )
        })?
        .heads
        .into_iter()
        .find(|h| h.name == head)
        .map(|h| h.test);
    write_predictions(&predict, output_format(&predict)?, &scored)?;
    let evaluation = Evaluation {
        format: "graft-evaluation".to_owned(),
        format_version: EVALUATION_FORMAT,
        graft_version: env!("CARGO_PKG_VERSION").to_owned(),
        run_dir: predict.run_dir.clone(),
        head,
        input_sha256: graft_stdx::sha256_file(&predict.input).map_err(|source| JobError::Io {
            path: predict.input.clone(),
            source,
        })?,
        input: predict.input.clone(),
        text_column: predict.text_column.clone(),
        label_column: job.label_column.clone(),
        rows_read: truth.len(),
        dropped_rows: dropped,
        classes,
        scores,
        run_test,
    };
    for (name, text) in [
        ("evaluation.json", graft_report::to_json_text(&evaluation)),
        ("report.md", evaluation.markdown()),
    ] {
        let path = job.output.join(name);
        graft_stdx::atomic::write(&path, text.as_bytes())
            .map_err(|source| JobError::Io { path, source })?;
    }
    Ok(evaluation)
}
