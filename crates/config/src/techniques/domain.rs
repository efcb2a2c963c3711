//! `[domain_adaptation]`: a labelled source (the pipeline's data: its training split) and a target domain
//! whose rows are used unlabelled to align the features; the target's labels, when it has them, only score
//! the result.
//!
//! Feature-level alignment before the headline head, each compared with no adaptation on the same rows:
//! per-domain standardisation (each domain z-scored with its own statistics), CORAL (Sun, Feng & Saenko,
//! 2016: source covariance whitened and re-coloured with the target's, λ = 1 on standardised features), and
//! both. As a ceiling, the same head trained on target labels (stratified 5-fold cross-validation on the
//! target rows).

use std::path::PathBuf;

use crate::spanned::Spanned;
use graft_schema::techniques::{RawDomainAdaptation, RawDomainSimcse};
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// Where the target rows come from.
#[derive(Debug, Clone)]
pub enum TargetSource {
    /// A registered data set.
    Registry(String),
    /// A CSV/TSV/Parquet file.
    File(PathBuf),
}

/// `[domain_adaptation]`, checked.
#[derive(Debug, Clone)]
pub struct DomainPlan {
    pub target: TargetSource,
    pub text_column: String,
    /// The target's label column, used only to score: named by the pipeline or the registry (then it must
    /// exist), else `label` when the table has one; unlabelled target rows are fine.
    pub label_column: Option<String>,
    /// The `text_column` / `label_column` keys' spans, for errors found in the table.
    pub text_span: Option<std::ops::Range<usize>>,
    pub label_span: Option<std::ops::Range<usize>>,
    pub lambda: f64,
    /// `simcse = { … }`: the backbone's top blocks tuned on both domains' texts.
    pub simcse: Option<DomainSimcsePlan>,
    pub span: std::ops::Range<usize>,
}

/// `[domain_adaptation] simcse`, checked.
#[derive(Debug, Clone)]
pub struct DomainSimcsePlan {
    pub layers: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub temperature: f64,
    pub dropout: f64,
    pub span: std::ops::Range<usize>,
}

impl DomainPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "target": match &self.target {
                TargetSource::Registry(name) => json!({ "dataset": name }),
                TargetSource::File(path) => json!({ "path": path }),
            },
            "text_column": self.text_column, "label_column": self.label_column, "lambda": self.lambda,
            "simcse": self.simcse.as_ref().map(|s| json!({
                "layers": s.layers, "epochs": s.epochs, "learning_rate": s.learning_rate,
                "batch_size": s.batch_size, "temperature": s.temperature, "dropout": s.dropout,
            })),
        })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawDomainAdaptation>,
    modality: Modality,
) -> Result<DomainPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "domain_adaptation")?;
    if !modality.texts {
        return Err(c
            .error(span, "`[domain_adaptation]` reads a target table of texts")
            .with_hint("it needs text rows and a text `[backbone]`, so that both domains are embedded alike"));
    }
    let r = raw.into_inner();
    let registry = graft_assets::Registry::builtin();
    let target = match (&r.target, &r.target_path) {
        (Some(name), None) => {
            if !registry.datasets.contains_key(name.get_ref()) {
                let known: Vec<&str> = registry.datasets.keys().map(String::as_str).collect();
                return Err(c
                    .error(
                        name.span(),
                        format!("unknown data set `{}`", name.get_ref()),
                    )
                    .with_hint(format!("registered data sets: {}", known.join(", "))));
            }
            TargetSource::Registry(name.get_ref().clone())
        }
        (None, Some(path)) => {
            let resolved = c.resolve(path.get_ref());
            if !resolved.is_file() {
                return Err(c
                    .error(
                        path.span(),
                        format!("target table not found: {}", resolved.display()),
                    )
                    .with_hint(
                        "relative paths are resolved from the folder of the pipeline file",
                    ));
            }
            TargetSource::File(resolved)
        }
        (Some(name), Some(_)) => {
            return Err(c
                .error(
                    name.span(),
                    "give the target as `target` or `target_path`, not both",
                )
                .with_hint("`target` names a registered data set, `target_path` a file"));
        }
        (None, None) => {
            return Err(c
                .error(span, "`[domain_adaptation]` needs a target domain")
                .with_hint("add `target = \"amazon-snippets\"` (a registered data set) or `target_path = \"target.csv\"`"));
        }
    };
    if let (TargetSource::Registry(_), Some(key)) =
        (&target, r.text_column.as_ref().or(r.label_column.as_ref()))
    {
        return Err(c
            .error(
                key.span(),
                "`text_column` and `label_column` name the columns of a `target_path` table",
            )
            .with_hint("a registered target data set brings its own columns; remove this key"));
    }
    let (text_column, label_column) = match &target {
        TargetSource::Registry(name) => {
            let entry = &registry.datasets[name];
            (entry.text_column.clone(), Some(entry.label_column.clone()))
        }
        TargetSource::File(_) => (
            r.text_column
                .as_ref()
                .map_or_else(|| "text".to_owned(), |t| t.get_ref().clone()),
            r.label_column.as_ref().map(|t| t.get_ref().clone()),
        ),
    };
    let lambda = match &r.lambda {
        None => 1.0,
        Some(l) if l.get_ref().is_finite() && *l.get_ref() > 0.0 => *l.get_ref(),
        Some(l) => {
            return Err(c
                .error(l.span(), "`lambda` must be a number above 0")
                .with_hint("CORAL's covariance regulariser; Sun et al. (2016) use 1"));
        }
    };
    let simcse = match &r.simcse {
        Some(s) => Some(checked_simcse(c, s, modality)?),
        None => None,
    };
    Ok(DomainPlan {
        target,
        text_column,
        label_column,
        text_span: r.text_column.as_ref().map(Spanned::span),
        label_span: r.label_column.as_ref().map(Spanned::span),
        lambda,
        simcse,
        span,
    })
}

/// `simcse = { … }`: a registered backbone with float32 weights, and SimCSE's settings in range.
fn checked_simcse(
    c: &Checker<'_>,
    s: &Spanned<RawDomainSimcse>,
    modality: Modality,
) -> Result<DomainSimcsePlan, Diagnostic> {
    let span = s.span();
    if modality.registered_weights != Some(true) {
        return Err(c
            .error(
                span,
                "SimCSE tunes the backbone, which needs a registered backbone with float32 weights",
            )
            .with_hint("use `model = \"minilm-l6\"` in [backbone] (all-MiniLM-L6-v2 in float32)"));
    }
    let s = s.get_ref();
    let dropout = c.positive_number(
        &s.dropout,
        0.1,
        "dropout",
        "SimCSE's positive pairs are one text through two dropout masks: 0.1 as BERT",
    )?;
    if dropout >= 1.0 {
        let at = s.dropout.as_ref().map_or(span.clone(), Spanned::span);
        return Err(c
            .error(at, format!("`dropout` = {dropout} must be below 1"))
            .with_hint("0.1 as BERT"));
    }
    Ok(DomainSimcsePlan {
        layers: c.positive(
            &s.layers,
            2,
            "layers",
            "the top blocks SimCSE tunes, e.g. 2",
        )?,
        epochs: c.positive(&s.epochs, 1, "epochs", "SimCSE trained one epoch")?,
        learning_rate: c.positive_number(
            &s.learning_rate,
            3e-5,
            "learning_rate",
            "SimCSE used 3e-5 for BERT-base",
        )?,
        batch_size: c.positive(
            &s.batch_size,
            64,
            "batch_size",
            "SimCSE used 64 texts per batch",
        )?,
        temperature: c.positive_number(
            &s.temperature,
            0.05,
            "temperature",
            "SimCSE divides cosines by 0.05",
        )?,
        dropout,
        span,
    })
}
