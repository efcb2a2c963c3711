//! A head as a pipeline declares it ([`HeadSpec`]), and what every kind's check shares: the task
//! (single- or multi-label) and errors located at the key they name.

use std::cell::RefCell;
use std::ops::Range;

use graft_heads::HeadError;
use graft_schema::Diagnostic;
use graft_schema::pipeline::RawThreshold;
use graft_schema::resolved::{HeadSettings, ThresholdSetting, TuneWord};
use graft_schema::spanned::Spanned;

use crate::HeadKind;

/// A head as the pipeline declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSpec {
    /// Which head, with its checked hyperparameters.
    pub kind: HeadKind,
    /// Fit a temperature on the validation split and apply it to the probabilities.
    pub calibrate: bool,
    /// For multi-label data: how each label's decision threshold is set (`None`: single-label).
    pub multi_label: Option<Threshold>,
}

/// How a multi-label head turns per-label probabilities into a label set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// The same probability for every label.
    Fixed(f32),
    /// Per label, the threshold that maximises F1 on the validation rows.
    Tuned,
}

impl HeadSpec {
    /// The same head without temperature scaling: for fits that have no validation rows to calibrate on, or
    /// only compare predicted classes (which calibration does not change).
    pub fn uncalibrated(&self) -> HeadSpec {
        HeadSpec {
            calibrate: false,
            ..self.clone()
        }
    }

    /// The head's name: its table name in the pipeline, and its artefact file stem.
    pub fn name(&self) -> &'static str {
        self.kind.head().name()
    }

    /// A one-line description for reports.
    pub fn label(&self) -> String {
        let base = self.kind.head().describe();
        match self.multi_label {
            Some(Threshold::Fixed(t)) => format!("{base}, multi-label (sigmoid, threshold {t})"),
            Some(Threshold::Tuned) => format!("{base}, multi-label (sigmoid, thresholds tuned)"),
            None if self.calibrate => format!("{base}, temperature-scaled"),
            None => base,
        }
    }

    /// The hyperparameters, as recorded in manifests and artefacts.
    pub fn settings(&self) -> HeadSettings {
        HeadSettings {
            kind: self.kind.head().settings(),
            calibrate: self.calibrate,
            threshold: self.multi_label.map(|t| match t {
                Threshold::Fixed(t) => ThresholdSetting::Fixed(t),
                Threshold::Tuned => ThresholdSetting::Tuned(TuneWord::Tune),
            }),
        }
    }

    /// The head a saved artefact or manifest records, checked again (an edited file gets an error naming
    /// the parameter).
    pub fn from_settings(s: &HeadSettings) -> Result<HeadSpec, String> {
        Ok(HeadSpec {
            kind: HeadKind::from_settings(&s.kind)?,
            calibrate: s.calibrate,
            multi_label: s.threshold.map(|t| match t {
                ThresholdSetting::Fixed(t) => Threshold::Fixed(t),
                ThresholdSetting::Tuned(_) => Threshold::Tuned,
            }),
        })
    }
}

/// Turns a span of the pipeline file into a located error (graft-config's checker implements it).
pub trait Locate {
    /// An error at `span`.
    fn error(&self, span: Range<usize>, message: String) -> Diagnostic;
}

/// What a head table's check needs besides the table.
pub struct CheckContext<'a> {
    /// Locates errors in the pipeline file.
    pub locate: &'a dyn Locate,
    /// The pipeline's seed (heads that draw random numbers take it).
    pub seed: u64,
    /// Whether the data is multi-label (`label_separator`).
    pub multi_label: bool,
    /// Where keys checked again once the data is known were written: (kind, key, span) — the key, or its
    /// table when left at its default.
    pub key_spans: RefCell<Vec<(&'static str, &'static str, Range<usize>)>>,
}

impl CheckContext<'_> {
    /// Records where `kind`'s `key` was written (see [`CheckContext::key_spans`]).
    pub(crate) fn key_span(&self, kind: &'static str, key: &'static str, span: Range<usize>) {
        self.key_spans.borrow_mut().push((kind, key, span));
    }

    /// An error at `span`.
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        self.locate.error(span, message.into())
    }

    /// A hyperparameter error at the key it names (`keys`: each key's span when written), else at the table.
    pub(crate) fn located(
        &self,
        e: HeadError,
        keys: &[(&str, Option<Range<usize>>)],
        table: Range<usize>,
    ) -> Diagnostic {
        let span = match &e {
            HeadError::InvalidParameter { name, .. } => keys
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, s)| s.clone()),
            _ => None,
        };
        self.error(span.unwrap_or(table), e.to_string())
    }

    /// A head's task: single-label unless the data is multi-label, where `threshold` (a probability or
    /// "tune") applies and temperature scaling does not.
    pub(crate) fn task(
        &self,
        threshold: Option<Spanned<RawThreshold>>,
        calibrate: Option<bool>,
        table: Range<usize>,
    ) -> Result<Option<Threshold>, Diagnostic> {
        if !self.multi_label {
            return match threshold {
                Some(t) => Err(self
                    .error(t.span(), "`threshold` applies to multi-label data")
                    .with_hint("set `label_separator` in `[data]` when a row can carry several labels; single-label heads predict the most probable class")),
                None => Ok(None),
            };
        }
        if calibrate == Some(true) {
            return Err(self
                .error(table, "`calibrate` applies to single-label heads")
                .with_hint("temperature scaling calibrates a softmax; multi-label heads have one sigmoid per label — tune their decision with `threshold = \"tune\"`"));
        }
        Ok(Some(
            match threshold.as_ref().map(|t| (t.span(), t.get_ref())) {
                None => Threshold::Fixed(0.5),
                Some((_, RawThreshold::Name(n))) if n == "tune" => Threshold::Tuned,
                Some((span, RawThreshold::Value(v))) => {
                    if !(*v > 0.0 && *v < 1.0) {
                        return Err(self
                        .error(span, format!("`threshold = {v}` must be between 0 and 1"))
                        .with_hint("a label is predicted when its probability reaches the threshold, e.g. 0.5"));
                    }
                    Threshold::Fixed(*v as f32)
                }
                Some((span, RawThreshold::Name(n))) => {
                    return Err(self
                    .error(span, format!("`threshold = \"{n}\"` is not a probability or \"tune\""))
                    .with_hint("`threshold = 0.5` or `threshold = \"tune\"` (per label, maximising F1 on the validation rows)"));
                }
            },
        ))
    }

    /// A single-label kind on multi-label data: refused at its table.
    pub(crate) fn single_label_only(
        &self,
        name: &str,
        table: Range<usize>,
    ) -> Result<(), Diagnostic> {
        if self.multi_label {
            return Err(self
                .error(table, format!("`[head.{name}]` is single-label, and the data is multi-label (`label_separator`)"))
                .with_hint("multi-label data trains `[head.logistic]` and `[head.mlp]` (one sigmoid per label)"));
        }
        Ok(())
    }
}

/// The span of an optional key.
pub(crate) fn span_of<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}
