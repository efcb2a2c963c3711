//! `[multitask]`: further label columns of the same rows, each a task with its own head on the features the
//! run extracted once (the rows' split is the pipeline's). Per task: classes, rows, test accuracy and
//! macro-F1 of the headline head's settings, against always predicting the task's most frequent class.

use crate::spanned::Spanned;
use graft_schema::techniques::RawMultitask;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[multitask]`, checked.
#[derive(Debug, Clone)]
pub struct MultitaskPlan {
    /// Label columns besides `[data] label_column`.
    pub tasks: Vec<String>,
    /// Also train one MLP with a shared trunk and an output block per task, against one MLP per task.
    pub shared_trunk: bool,
    /// Epochs of those MLPs.
    pub epochs: usize,
    pub span: std::ops::Range<usize>,
}

impl MultitaskPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "tasks": self.tasks, "shared_trunk": self.shared_trunk, "epochs": self.epochs })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawMultitask>,
    modality: Modality,
) -> Result<MultitaskPlan, Diagnostic> {
    c.single_label(modality, raw.span(), "multitask")?;
    let raw = raw.into_inner();
    let epochs = c.positive(
        &raw.epochs,
        20,
        "epochs",
        "epochs of the task MLPs, e.g. 20",
    )?;
    let shared_trunk = raw.shared_trunk.unwrap_or(false);
    let tasks = raw.tasks;
    let span = tasks.span();
    let names = tasks.into_inner();
    if names.is_empty() {
        return Err(c.error(span, "`tasks` lists no label columns").with_hint(
            "name the further label columns of the data, e.g. `tasks = [\"intensity\"]`",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(*n)) {
        return Err(c
            .error(span, format!("task `{twice}` is listed twice"))
            .with_hint("list each label column once"));
    }
    if !modality.texts && !modality.images {
        return Err(c
            .error(span, "`[multitask]` reads further label columns of a data table")
            .with_hint("it works with `[data] path` or a registered text data set; for given features, run one pipeline per labels file"));
    }
    Ok(MultitaskPlan {
        tasks: names,
        shared_trunk,
        epochs,
        span,
    })
}
