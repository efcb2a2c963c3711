//! `[multitask]`: further label columns of the same rows, each a task with its own head on the features the
//! run extracted once (the rows' split is the pipeline's). Per task: classes, rows, test accuracy and
//! macro-F1 of the headline head's settings, against always predicting the task's most frequent class.

use graft_eval::classification_report;
use graft_heads::{Fit, Predict, Targets, TaskTargets, argmax_rows};
use ndarray::Axis;
use serde_json::json;

use super::{RunData, f4};
use crate::PipelineError;
use crate::heads::train_head;
use graft_config::techniques::MultitaskPlan;
use graft_report::TechniqueReport;

/// One task: its name, each used row's class (or `None`), its class names.
struct Task {
    name: String,
    labels: Vec<Option<usize>>,
    classes: Vec<String>,
}

impl Task {
    /// The split's rows labelled for this task, and their classes.
    fn rows(&self, split: &[usize]) -> (Vec<usize>, Vec<usize>) {
        split
            .iter()
            .filter_map(|&r| self.labels[r].map(|l| (r, l)))
            .unzip()
    }
}

pub(crate) fn run(p: &MultitaskPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let span = Some(p.span.clone());
    let Some((table_path, source_rows)) = d.table else {
        return Err(d
            .diagnostic(
                &span,
                "`[multitask]` needs a data table with further label columns",
            )
            .with_hint("image folders and data sets without a table have one label per row")
            .into());
    };
    let tasks = read_tasks(p, d, table_path, source_rows)?;
    let spec = d.headline.uncalibrated();
    let x_of = |rows: &[usize]| d.features.select(Axis(0), rows);
    let score =
        |task: &Task, proba: ndarray::ArrayView2<'_, f32>| -> Result<(f64, f64), PipelineError> {
            let (_, y_test) = task.rows(d.test);
            let report = classification_report(&y_test, &argmax_rows(proba), task.classes.len())?;
            Ok((report.accuracy, report.macro_f1))
        };
    // (accuracy, macro-F1) per task: the headline's settings, and with `shared_trunk` an MLP per task and
    // one MLP for all tasks.
    let settings = p
        .shared_trunk
        .then(|| super::mlp_settings(d, p.epochs, "multitask mlp"))
        .transpose()?;
    let mut separate = Vec::new();
    let mut alone = Vec::new();
    for task in &tasks {
        let (train_rows, y_train) = task.rows(d.train);
        let (test_rows, _) = task.rows(d.test);
        let targets = Targets::new(&y_train, task.classes.len())?;
        let (head, _) = train_head(&spec, None, x_of(&train_rows).view(), &targets, None)?;
        separate.push(score(
            task,
            head.predict_proba(x_of(&test_rows).view())?.view(),
        )?);
        if let Some(settings) = &settings {
            let mlp = settings.fit(x_of(&train_rows).view(), &targets)?;
            alone.push(score(
                task,
                mlp.predict_proba(x_of(&test_rows).view())?.view(),
            )?);
        }
    }
    let shared = match &settings {
        Some(settings) => shared_trunk(settings, &tasks, d, &score)?,
        None => Vec::new(),
    };
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let (train_rows, y_train) = task.rows(d.train);
        let (_, y_test) = task.rows(d.test);
        let mut counts = vec![0usize; task.classes.len()];
        for &y in &y_train {
            counts[y] += 1;
        }
        let majority = (0..counts.len()).max_by_key(|&c| counts[c]).unwrap_or(0);
        let majority_accuracy =
            y_test.iter().filter(|&&y| y == majority).count() as f64 / y_test.len() as f64;
        let mut row = vec![
            task.name.clone(),
            task.classes.join(", "),
            train_rows.len().to_string(),
            y_test.len().to_string(),
            f4(majority_accuracy),
            format!("{} / {}", f4(separate[i].0), f4(separate[i].1)),
        ];
        if p.shared_trunk {
            row.push(format!("{} / {}", f4(alone[i].0), f4(alone[i].1)));
            row.push(format!("{} / {}", f4(shared[i].0), f4(shared[i].1)));
        }
        rows.push(row);
        details.push(json!({
            "task": task.name, "classes": task.classes, "train_rows": train_rows.len(),
            "test_rows": y_test.len(), "majority_accuracy": majority_accuracy,
            "head": { "accuracy": separate[i].0, "macro_f1": separate[i].1 },
            "mlp_alone": alone.get(i).map(|a| json!({ "accuracy": a.0, "macro_f1": a.1 })),
            "mlp_shared_trunk": shared.get(i).map(|a| json!({ "accuracy": a.0, "macro_f1": a.1 })),
        }));
    }
    let finding = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut text = format!("{} {:.4}", t.name, separate[i].0);
            if p.shared_trunk {
                text.push_str(&format!(
                    " (MLP alone {:.4}, shared trunk {:.4})",
                    alone[i].0, shared[i].0
                ));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut columns: Vec<String> = [
        "task",
        "classes",
        "train rows",
        "test rows",
        "majority class",
        "head: accuracy / macro-F1",
    ]
    .map(str::to_owned)
    .to_vec();
    if p.shared_trunk {
        columns.push("MLP per task".to_owned());
        columns.push("MLP, shared trunk".to_owned());
    }
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "multitask".to_owned(),
        title: "Multitask: several label columns, one extraction".to_owned(),
        method: method(p, d, &spec),
        finding: format!("test accuracy per task: {finding}"),
        columns,
        rows,
        details: json!({ "tasks": details }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Every task's labels from the data table: the pipeline's own label column first, then `tasks`.
fn read_tasks(
    p: &MultitaskPlan,
    d: &RunData<'_>,
    table_path: &std::path::Path,
    source_rows: &[usize],
) -> Result<Vec<Task>, PipelineError> {
    let span = Some(p.span.clone());
    let table = graft_ingest::read_table(table_path)?;
    // The pipeline's own label column is the first task.
    let mut tasks = Vec::new();
    for name in std::iter::once(&d.label_column.to_owned()).chain(&p.tasks) {
        let (labels, classes) =
            graft_ingest::task_labels(&table, name, source_rows).map_err(|e| {
                PipelineError::from(
                    d.diagnostic(
                        &span,
                        format!("task `{name}` in {}: {e}", table_path.display()),
                    )
                    .with_hint(
                        "each task is a label column of the data table with at least two classes",
                    ),
                )
            })?;
        let task = Task {
            name: name.clone(),
            labels,
            classes,
        };
        if task.rows(d.train).0.is_empty() || task.rows(d.test).0.is_empty() {
            return Err(d
                .diagnostic(
                    &span,
                    format!("task `{name}` has no labelled training or test rows"),
                )
                .with_hint("its column is empty on one of the splits")
                .into());
        }
        tasks.push(task);
    }
    Ok(tasks)
}

/// (accuracy, macro-F1) of a task's test rows from its predicted probabilities.
type ScoreTask<'a> =
    dyn Fn(&Task, ndarray::ArrayView2<'_, f32>) -> Result<(f64, f64), PipelineError> + 'a;

/// One MLP with a shared trunk and a softmax block per task, trained jointly; (accuracy, macro-F1) per task.
fn shared_trunk(
    settings: &graft_heads::MlpValidParams,
    tasks: &[Task],
    d: &RunData<'_>,
    score: &ScoreTask<'_>,
) -> Result<Vec<(f64, f64)>, PipelineError> {
    let x_of = |rows: &[usize]| d.features.select(Axis(0), rows);
    let mut shared = Vec::new();
    let labels: Vec<Vec<Option<usize>>> = tasks
        .iter()
        .map(|t| d.train.iter().map(|&r| t.labels[r]).collect())
        .collect();
    let targets: Vec<TaskTargets<'_>> = tasks
        .iter()
        .zip(&labels)
        .map(|(t, l)| TaskTargets::new(l, t.classes.len()))
        .collect::<Result<_, _>>()?;
    let joint = settings.fit_multitask(x_of(d.train).view(), &targets)?;
    for (index, task) in tasks.iter().enumerate() {
        let (test_rows, _) = task.rows(d.test);
        let proba = joint.predict_proba_tasks(x_of(&test_rows).view())?;
        shared.push(score(task, proba[index].view())?);
    }
    Ok(shared)
}

/// What the stage does, with its source.
fn method(p: &MultitaskPlan, d: &RunData<'_>, spec: &graft_config::HeadSpec) -> String {
    format!(
        "Each task is a label column of the same rows; the features were extracted once ({} rows, {} \
         dimensions) and every head trains on the pipeline's training split and is scored on its test split \
         (rows whose task label is empty are left out of that task). Head: {} per task.{}",
        d.features.nrows(),
        d.features.ncols(),
        spec.label(),
        if p.shared_trunk {
            format!(
                " With `shared_trunk`: an MLP per task vs one MLP whose hidden layers are shared and which has \
                 one softmax block per task, trained jointly on the summed cross-entropies (Caruana, 1997); \
                 same settings, {} epochs.",
                p.epochs
            )
        } else {
            String::new()
        }
    )
}
