//! `compare`: runs side by side — each run's headline head with its test scores and intervals, and every run
//! after the first paired with the first on the same test rows (McNemar's exact test and a paired bootstrap
//! of the accuracy difference), when their test rows are the same.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use graft_eval::{Bootstrap, McNemar, PairedBootstrap, mcnemar};
use graft_report::{Manifest, Metrics, SplitMetrics};
use serde::{Deserialize, Serialize};

use crate::JobError;
use crate::write_atomic;

/// What to compare and where the comparison goes.
#[derive(Debug, Clone)]
pub struct CompareJob {
    /// Run folders written by `run` (two or more); the first is the reference.
    pub runs: Vec<PathBuf>,
    /// Folder for `comparison.md` and `comparison.json`.
    pub output_dir: PathBuf,
    /// Bootstrap settings of the paired accuracy differences.
    pub bootstrap: Bootstrap,
}

/// One run in the comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparedRun {
    /// The run folder.
    pub run_dir: PathBuf,
    /// `<pipeline>/<run folder name>`.
    pub name: String,
    /// The run's headline head.
    pub head: String,
    /// Its test scores, as the run's metrics.json records them.
    pub test: SplitMetrics,
    /// Against the first run on the same test rows (absent for the first, or when the rows differ).
    pub versus_first: Option<Paired>,
    /// Why there is no pairing, when there is none.
    pub unpaired_because: Option<String>,
}

/// `comparison.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonRecord {
    /// How the paired differences were resampled.
    pub bootstrap: BootstrapRecord,
    /// The runs, the first the reference.
    pub runs: Vec<ComparedRun>,
}

/// Bootstrap settings as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapRecord {
    /// Resamples.
    pub resamples: usize,
    /// Confidence level.
    pub level: f64,
    /// Seed.
    pub seed: u64,
}

/// A paired comparison with the first run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paired {
    /// McNemar's exact test (`a_only`: rows only this run got right).
    pub mcnemar: McNemar,
    /// This run's accuracy minus the first's, with its interval and p-value.
    pub accuracy_difference: PairedBootstrap,
}

/// What `compare` did.
#[derive(Debug, Clone)]
pub struct CompareOutcome {
    /// The printed table.
    pub table: String,
    /// The runs, as compared.
    pub runs: Vec<ComparedRun>,
    /// `comparison.md`.
    pub markdown: PathBuf,
    /// `comparison.json`.
    pub json: PathBuf,
}

/// A run's test rows: row → (true label, the headline head's prediction).
struct TestRows {
    task: String,
    head: String,
    metrics_test: SplitMetrics,
    rows: HashMap<u64, (String, String)>,
}

fn read_run(run_dir: &Path) -> Result<TestRows, JobError> {
    let not_a_run = |e: graft_report::ArtefactError| {
        JobError::invalid(
            format!(
                "{} is not a graft run folder we can read: {e}",
                run_dir.display()
            ),
            "pass folders that `graft run` printed as `run folder`",
        )
    };
    let manifest = Manifest::read(run_dir).map_err(not_a_run)?;
    let metrics = Metrics::read(run_dir).map_err(not_a_run)?;
    manifest
        .verify(run_dir, "predictions.csv")
        .map_err(not_a_run)?;
    let path = run_dir.join("predictions.csv");
    if !path.is_file() {
        return Err(JobError::invalid(
            format!("{} has no predictions.csv", run_dir.display()),
            "runs made before graft wrote test predictions cannot be paired; run the pipeline again",
        ));
    }
    let damaged = |what: String| {
        JobError::invalid(
            format!("{}: {what}", path.display()),
            "the file is damaged; run the pipeline again",
        )
    };
    let table = graft_ingest::read_table(&path).map_err(|e| damaged(e.to_string()))?;
    // row, label, then the headline head's prediction (graft writes them in this order).
    let columns = table.columns();
    let [row, label, prediction] = [0, 1, 2].map(|i| columns.get(i));
    let (Some(row), Some(label), Some(prediction)) = (row, label, prediction) else {
        return Err(damaged("fewer than three columns".to_owned()));
    };
    let as_text = |c: &graft_ingest::Column| {
        c.cast(&graft_ingest::DataType::String)
            .map_err(|e| damaged(e.to_string()))
    };
    let rows_column = row
        .cast(&graft_ingest::DataType::UInt64)
        .map_err(|_| damaged("the row column is not row numbers".to_owned()))?;
    let (label, prediction) = (as_text(label)?, as_text(prediction)?);
    let numbers = rows_column.u64().expect("cast to UInt64");
    let (labels, predictions) = (
        label.str().expect("cast to String"),
        prediction.str().expect("cast to String"),
    );
    let mut rows = HashMap::new();
    for ((row, label), predicted) in numbers.iter().zip(labels.iter()).zip(predictions.iter()) {
        let row = row.ok_or_else(|| damaged("a row number is missing".to_owned()))?;
        rows.insert(
            row,
            (
                label.unwrap_or_default().to_owned(),
                predicted.unwrap_or_default().to_owned(),
            ),
        );
    }
    let head = prediction.name().to_string();
    Ok(TestRows {
        task: metrics.task,
        head,
        metrics_test: metrics.test,
        rows,
    })
}

/// Pairs `run` with `first` when both scored the same rows with the same labels.
fn pair(
    first: &TestRows,
    run: &TestRows,
    bootstrap: &Bootstrap,
) -> Result<Result<Paired, String>, JobError> {
    if first.task != "single-label" || run.task != "single-label" {
        return Ok(Err("multi-label runs are not paired".to_owned()));
    }
    if first.rows.len() != run.rows.len() || first.rows.keys().any(|r| !run.rows.contains_key(r)) {
        return Ok(Err(
            "different test rows (another data set, split or seed)".to_owned()
        ));
    }
    let mut keys: Vec<u64> = first.rows.keys().copied().collect();
    keys.sort_unstable();
    let mut class_index: HashMap<String, usize> = HashMap::new();
    let mut index = |name: &str| {
        let next = class_index.len();
        *class_index.entry(name.to_owned()).or_insert(next)
    };
    let (mut truth, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for k in &keys {
        let (label_first, predicted_first) = &first.rows[k];
        let (label_run, predicted_run) = &run.rows[k];
        if label_first != label_run {
            return Ok(Err(format!(
                "row {k} has label `{label_first}` in one run and `{label_run}` in the other"
            )));
        }
        truth.push(index(label_first));
        a.push(index(predicted_run));
        b.push(index(predicted_first));
    }
    Ok(Ok(Paired {
        mcnemar: mcnemar(&truth, &a, &b)?,
        accuracy_difference: bootstrap.paired_accuracy(&truth, &a, &b)?,
    }))
}

fn number(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |x| format!("{x:.4}"))
}

/// The default folder of a comparison: `<runs>/comparisons/<UTC timestamp>`.
pub fn comparison_dir(runs_dir: &Path) -> PathBuf {
    runs_dir
        .join("comparisons")
        .join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
}

/// Compares the runs' headline heads and writes `comparison.md` and `comparison.json`.
pub fn compare(job: &CompareJob) -> Result<CompareOutcome, JobError> {
    if job.runs.len() < 2 {
        return Err(JobError::invalid(
            "compare needs at least two run folders",
            "pass two or more run folders",
        ));
    }
    let loaded: Vec<TestRows> = job
        .runs
        .iter()
        .map(|r| read_run(r))
        .collect::<Result<_, _>>()?;
    let mut runs = Vec::new();
    for (i, (dir, run)) in job.runs.iter().zip(&loaded).enumerate() {
        let (versus_first, unpaired_because) = if i == 0 {
            (None, None)
        } else {
            match pair(&loaded[0], run, &job.bootstrap)? {
                Ok(p) => (Some(p), None),
                Err(why) => (None, Some(why)),
            }
        };
        let pipeline = dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        runs.push(ComparedRun {
            run_dir: dir.clone(),
            name: format!("{pipeline}/{stamp}"),
            head: run.head.clone(),
            test: run.metrics_test.clone(),
            versus_first,
            unpaired_because,
        });
    }
    let mut table = String::new();
    let mut md = String::from(
        "# graft comparison\n\nEach run's headline head on its test split; runs after the first are paired with it on the same test rows (McNemar's exact test; paired bootstrap of the accuracy difference).\n\n| run | head | test accuracy | 95% interval | macro-F1 | ROC-AUC | log loss | ECE | accuracy − first's | interval | McNemar p |\n|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|\n",
    );
    let _ = writeln!(
        table,
        "{:<44} {:<10} {:>9} {:>18} {:>9} {:>8} {:>12} {:>9}",
        "run", "head", "test acc", "95% interval", "macro-F1", "ROC-AUC", "Δ vs first", "McNemar p"
    );
    for r in &runs {
        let t = &r.test;
        let interval = t.intervals.as_ref().map_or("-".to_owned(), |i| {
            format!(
                "[{}, {}]",
                number(Some(i.accuracy.lower)),
                number(Some(i.accuracy.upper))
            )
        });
        let proba = t.probabilities.as_ref();
        let (diff, diff_interval, p) = match (&r.versus_first, &r.unpaired_because) {
            (Some(v), _) => (
                format!("{:+.4}", v.accuracy_difference.interval.estimate),
                format!(
                    "[{:+.4}, {:+.4}]",
                    v.accuracy_difference.interval.lower, v.accuracy_difference.interval.upper
                ),
                format!("{:.3}", v.mcnemar.p_value),
            ),
            (None, Some(why)) => ("-".to_owned(), format!("not paired: {why}"), "-".to_owned()),
            (None, None) => ("(reference)".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        // The scores both tables show, formatted once.
        let (accuracy, macro_f1, roc_auc) = (
            number(Some(t.accuracy)),
            number(Some(t.macro_f1)),
            number(proba.and_then(|p| p.roc_auc)),
        );
        let _ = writeln!(
            table,
            "{:<44} {:<10} {accuracy:>9} {interval:>18} {macro_f1:>9} {roc_auc:>8} {diff:>12} {p:>9}",
            r.name, r.head,
        );
        let _ = writeln!(
            md,
            "| {} | {} | {accuracy} | {interval} | {macro_f1} | {roc_auc} | {} | {} | {diff} | {diff_interval} | {p} |",
            r.name,
            r.head,
            number(proba.map(|p| p.log_loss)),
            number(proba.map(|p| p.ece)),
        );
    }
    std::fs::create_dir_all(&job.output_dir).map_err(|source| JobError::Io {
        path: job.output_dir.clone(),
        source,
    })?;
    let markdown = job.output_dir.join("comparison.md");
    let json_path = job.output_dir.join("comparison.json");
    write_atomic(&markdown, md.as_bytes())?;
    let record = ComparisonRecord {
        bootstrap: BootstrapRecord {
            resamples: job.bootstrap.resamples,
            level: job.bootstrap.level,
            seed: job.bootstrap.seed,
        },
        runs: runs.clone(),
    };
    write_atomic(&json_path, graft_report::to_json_text(&record).as_bytes())?;
    Ok(CompareOutcome {
        table,
        runs,
        markdown,
        json: json_path,
    })
}
