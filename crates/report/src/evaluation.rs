//! `evaluation.json` and its report: a run's head scored on new labelled rows (`graft evaluate`), beside
//! the scores the run measured on its own test split.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SplitMetrics;
use crate::artefacts::ArtefactError;

/// Version of the evaluation record this build writes and reads.
pub const EVALUATION_FORMAT: u32 = 1;

/// A head scored on labelled rows it has never seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `graft-evaluation`.
    pub format: String,
    pub format_version: u32,
    pub graft_version: String,
    /// The run folder and the head (its artefact name, e.g. `logistic`).
    pub run_dir: PathBuf,
    pub head: String,
    /// The labelled file, its sha256, and its columns.
    pub input: PathBuf,
    pub input_sha256: String,
    pub text_column: String,
    pub label_column: String,
    /// Rows read, and rows left out for an empty label (their first row numbers, 0-based).
    pub rows_read: usize,
    pub dropped_rows: Vec<usize>,
    /// The head's classes, in output order.
    pub classes: Vec<String>,
    /// Scores on the new rows: accuracy, macro-F1, per class, confusion, probabilities and intervals.
    pub scores: SplitMetrics,
    /// The same head's scores on the run's own test split, for comparison (absent for a stage's head,
    /// which the run scores in its stage section).
    pub run_test: Option<SplitMetrics>,
}

impl Evaluation {
    /// Reads `<dir>/evaluation.json`.
    pub fn read(dir: &Path) -> Result<Evaluation, ArtefactError> {
        let path = dir.join("evaluation.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ArtefactError::Io {
            path: path.clone(),
            source,
        })?;
        let record: Evaluation =
            serde_json::from_str(&text).map_err(|e| ArtefactError::Invalid {
                path: path.clone(),
                what: "evaluation",
                problem: e.to_string(),
            })?;
        if record.format_version != EVALUATION_FORMAT {
            return Err(ArtefactError::Version {
                path,
                what: "evaluation",
                found: record.format_version,
                supported: EVALUATION_FORMAT,
                writer: record.graft_version,
            });
        }
        Ok(record)
    }

    /// `report.md`: the scores beside the run's test scores, intervals, calibration, per class, confusion.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Evaluation of `{}` on {}\n",
            self.head,
            self.input.display()
        );
        let _ = writeln!(
            s,
            "Run {}; {} rows read from {} (sha256 {}), labels from `{}`, texts from `{}`{}.\n",
            self.run_dir.display(),
            self.rows_read,
            self.input.display(),
            &self.input_sha256[..12.min(self.input_sha256.len())],
            self.label_column,
            self.text_column,
            dropped(&self.dropped_rows),
        );
        let _ = writeln!(
            s,
            "| rows | count | accuracy | macro-F1 |\n|---|---:|---:|---:|"
        );
        let row = |s: &mut String, name: &str, m: &SplitMetrics| {
            let cell = |v: f64, i: Option<&graft_eval::Interval>| match i {
                Some(i) => format!("{v:.4} [{:.4}, {:.4}]", i.lower, i.upper),
                None => format!("{v:.4}"),
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} |",
                m.rows,
                cell(m.accuracy, m.intervals.as_ref().map(|i| &i.accuracy)),
                cell(m.macro_f1, m.intervals.as_ref().map(|i| &i.macro_f1)),
            );
        };
        row(&mut s, "**these rows**", &self.scores);
        if let Some(t) = &self.run_test {
            row(&mut s, "the run's test split", t);
        }
        if let Some(i) = &self.scores.intervals {
            let _ = writeln!(
                s,
                "\nIntervals: {:.0}% percentile bootstrap, {} resamples of these rows.",
                i.accuracy.level * 100.0,
                i.accuracy.resamples
            );
        }
        if let Some(p) = &self.scores.probabilities {
            let opt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.4}"));
            let _ = writeln!(
                s,
                "\nROC-AUC {} · PR-AUC {} · log loss {:.4} · Brier {:.4} · expected calibration error {:.4} ({} bins)",
                opt(p.roc_auc),
                opt(p.pr_auc),
                p.log_loss,
                p.brier,
                p.ece,
                p.reliability.len()
            );
        }
        let _ = writeln!(
            s,
            "\n## Per class\n\n| class | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|"
        );
        for c in &self.scores.per_class {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {:.4} | {} |",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        let _ = writeln!(
            s,
            "\n## Confusion matrix (rows = true class, columns = predicted)\n\n| true \\ predicted | {} |\n|---|{}",
            self.classes.join(" | "),
            "---:|".repeat(self.classes.len())
        );
        for (class, counts) in self.classes.iter().zip(&self.scores.confusion) {
            let cells: Vec<String> = counts.iter().map(usize::to_string).collect();
            let _ = writeln!(s, "| {class} | {} |", cells.join(" | "));
        }
        s
    }
}

/// "; 2 rows without a label left out (rows 3, 8)": empty when none.
fn dropped(rows: &[usize]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let first: Vec<String> = rows.iter().take(10).map(usize::to_string).collect();
    format!(
        "; {} rows without a label left out (rows {}{})",
        rows.len(),
        first.join(", "),
        if rows.len() > 10 { ", …" } else { "" }
    )
}
