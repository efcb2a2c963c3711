//! `[head.*]`: each head table checked into a [`HeadSpec`](crate::HeadSpec); a bad hyperparameter points at its line.

use std::ops::Range;

use crate::spanned::Spanned;
use graft_heads::{
    Activation, HeadError, Knn, Logistic, Metric, Mlp, Monitor, ParamGuard, Prototype, Schedule,
    Weighting,
};

use crate::Diagnostic;
use crate::heads::{HeadKind, HeadSpec, Threshold};
use crate::plan::Spans;
use crate::schema::{
    RawActivation, RawClassWeight, RawHeads, RawMetric, RawMlp, RawMonitor, RawSchedule,
    RawThreshold, RawWeighting,
};

use super::Checker;

impl Checker<'_> {
    /// Checks every `[head.*]` table; an invalid hyperparameter points at its own line. Heads that draw random
    /// numbers (the MLP) are seeded with the pipeline's seed.
    /// A head's task: single-label unless the data is multi-label, where `threshold` (a probability or
    /// "tune") applies and temperature scaling does not.
    pub(super) fn head_task(
        &self,
        multi_label: bool,
        threshold: Option<Spanned<RawThreshold>>,
        calibrate: Option<bool>,
        table: Range<usize>,
    ) -> Result<Option<Threshold>, Diagnostic> {
        if !multi_label {
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

    pub(super) fn check_heads(
        &self,
        raw: Spanned<RawHeads>,
        seed: u64,
        multi_label: bool,
        spans: &mut Spans,
    ) -> Result<Vec<HeadSpec>, Diagnostic> {
        let section = raw.span();
        let raw = raw.into_inner();
        // (position in the file, head)
        let mut heads: Vec<(usize, HeadSpec)> = Vec::new();
        let metric = |m: Option<RawMetric>| match m {
            None | Some(RawMetric::Cosine) => Metric::Cosine,
            Some(RawMetric::Euclidean) => Metric::Euclidean,
        };
        if let Some(h) = raw.logistic {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Logistic::params();
            if let Some(c) = &r.c {
                params = params.c(*c.get_ref());
            }
            if let Some(m) = &r.max_iter {
                params = params.max_iter(*m.get_ref());
            }
            if let Some(t) = &r.tol {
                params = params.tol(*t.get_ref());
            }
            if let Some(f) = r.fit_intercept {
                params = params.fit_intercept(f);
            }
            params = params.balanced(matches!(r.class_weight, Some(RawClassWeight::Balanced)));
            let checked = params.check().map_err(|e| {
                self.located(
                    e,
                    &[
                        ("c", sp(&r.c)),
                        ("max_iter", su(&r.max_iter)),
                        ("tol", sp(&r.tol)),
                    ],
                    table.clone(),
                )
            })?;
            let multi_label =
                self.head_task(multi_label, r.threshold, r.calibrate, table.clone())?;
            if multi_label.is_some() && checked.balanced() {
                return Err(self
                    .error(
                        table,
                        "`class_weight = \"balanced\"` applies to single-label heads",
                    )
                    .with_hint(
                        "balanced weights are defined for one class per row; remove `class_weight`",
                    ));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Logistic(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label,
                },
            ));
        }
        if let Some(h) = raw.mlp {
            heads.push(self.check_mlp(h, seed, multi_label)?);
        }
        if let Some(h) = raw.prototype {
            let table = h.span();
            let r = h.into_inner();
            let mut params = Prototype::params().metric(metric(r.metric));
            if let Some(t) = &r.temperature {
                params = params.temperature(*t.get_ref());
            }
            let checked = params.check().map_err(|e| {
                self.located(e, &[("temperature", sp(&r.temperature))], table.clone())
            })?;
            if multi_label {
                return Err(self
                    .error(table, "`[head.prototype]` is single-label, and the data is multi-label (`label_separator`)")
                    .with_hint("multi-label data trains `[head.logistic]` and `[head.mlp]` (one sigmoid per label)"));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Prototype(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label: None,
                },
            ));
        }
        if let Some(h) = raw.knn {
            let table = h.span();
            let r = h.into_inner();
            spans.knn_k = Some(r.k.as_ref().map_or(table.clone(), |k| k.span()));
            let mut params = Knn::params().metric(metric(r.metric));
            if let Some(k) = &r.k {
                params = params.k(*k.get_ref());
            }
            if let Some(w) = r.weighting {
                params = params.weighting(match w {
                    RawWeighting::Uniform => Weighting::Uniform,
                    RawWeighting::Distance => Weighting::Distance,
                });
            }
            let checked = params
                .check()
                .map_err(|e| self.located(e, &[("k", su(&r.k))], table.clone()))?;
            if multi_label {
                return Err(self
                    .error(table, "`[head.knn]` is single-label, and the data is multi-label (`label_separator`)")
                    .with_hint("multi-label data trains `[head.logistic]` and `[head.mlp]` (one sigmoid per label)"));
            }
            heads.push((
                table.start,
                HeadSpec {
                    kind: HeadKind::Knn(checked),
                    calibrate: r.calibrate.unwrap_or(false),
                    multi_label: None,
                },
            ));
        }
        if heads.is_empty() {
            return Err(self
                .error(section, "`[head]` names no head")
                .with_hint("add at least one of `[head.logistic]`, `[head.mlp]`, `[head.prototype]`, `[head.knn]`"));
        }
        heads.sort_by_key(|(at, _)| *at);
        Ok(heads.into_iter().map(|(_, h)| h).collect())
    }

    /// `[head.mlp]`, with its position in the file.
    fn check_mlp(
        &self,
        h: Spanned<RawMlp>,
        seed: u64,
        multi_label: bool,
    ) -> Result<(usize, HeadSpec), Diagnostic> {
        let table = h.span();
        let r = h.into_inner();
        let mut params = Mlp::params().seed(seed);
        if let Some(v) = &r.hidden {
            params = params.hidden(v.get_ref());
        }
        if let Some(a) = r.activation {
            params = params.activation(match a {
                RawActivation::Relu => Activation::Relu,
                RawActivation::Gelu => Activation::Gelu,
            });
        }
        if let Some(v) = &r.dropout {
            params = params.dropout(*v.get_ref());
        }
        if let Some(v) = &r.learning_rate {
            params = params.learning_rate(*v.get_ref());
        }
        if let Some(v) = &r.weight_decay {
            params = params.weight_decay(*v.get_ref());
        }
        if let Some(v) = &r.batch_size {
            params = params.batch_size(*v.get_ref());
        }
        if let Some(v) = &r.max_epochs {
            params = params.max_epochs(*v.get_ref());
        }
        if let Some(v) = &r.patience {
            params = params.patience((*v.get_ref() > 0).then_some(*v.get_ref()));
        }
        if let Some(m) = r.monitor {
            params = params.monitor(match m {
                RawMonitor::Loss => Monitor::Loss,
                RawMonitor::Accuracy => Monitor::Accuracy,
            });
        }
        if let Some(b) = r.restore_best {
            params = params.restore_best(b);
        }
        let schedule_keys = [
            (
                "warmup_epochs",
                r.warmup_epochs.as_ref().map(Spanned::span),
                "cosine",
            ),
            (
                "step_epochs",
                r.step_epochs.as_ref().map(Spanned::span),
                "step",
            ),
            ("gamma", r.gamma.as_ref().map(Spanned::span), "step"),
        ];
        let schedule = r.schedule.unwrap_or(RawSchedule::Constant);
        let schedule_name = match schedule {
            RawSchedule::Constant => "constant",
            RawSchedule::Cosine => "cosine",
            RawSchedule::Step => "step",
        };
        for (key, span, needs) in &schedule_keys {
            if let Some(span) = span
                && *needs != schedule_name
            {
                return Err(self
                    .error(span.clone(), format!("`{key}` applies to `schedule = \"{needs}\"`"))
                    .with_hint(format!("this head's schedule is \"{schedule_name}\"; set `schedule = \"{needs}\"` or remove `{key}`")));
            }
        }
        params = params.schedule(match schedule {
            RawSchedule::Constant => Schedule::Constant,
            RawSchedule::Cosine => Schedule::Cosine {
                warmup_epochs: r.warmup_epochs.as_ref().map_or(0, |v| *v.get_ref()),
            },
            RawSchedule::Step => Schedule::Step {
                step_epochs: r.step_epochs.as_ref().map_or(10, |v| *v.get_ref()),
                gamma: r.gamma.as_ref().map_or(0.1, |v| *v.get_ref()),
            },
        });
        let checked = params.check().map_err(|e| {
            self.located(
                e,
                &[
                    ("hidden", r.hidden.as_ref().map(Spanned::span)),
                    ("dropout", sp(&r.dropout)),
                    ("learning_rate", sp(&r.learning_rate)),
                    ("weight_decay", sp(&r.weight_decay)),
                    ("batch_size", su(&r.batch_size)),
                    ("max_epochs", su(&r.max_epochs)),
                    ("patience", su(&r.patience)),
                    ("warmup_epochs", su(&r.warmup_epochs)),
                    ("step_epochs", su(&r.step_epochs)),
                    ("gamma", sp(&r.gamma)),
                ],
                table.clone(),
            )
        })?;
        let multi_label = self.head_task(multi_label, r.threshold, r.calibrate, table.clone())?;
        Ok((
            table.start,
            HeadSpec {
                kind: HeadKind::Mlp(checked),
                calibrate: r.calibrate.unwrap_or(false),
                multi_label,
            },
        ))
    }

    /// A hyperparameter error at the key it names, else at the head's table.
    fn located(
        &self,
        e: HeadError,
        spans: &[(&str, Option<Range<usize>>)],
        table: Range<usize>,
    ) -> Diagnostic {
        let span = match &e {
            HeadError::InvalidParameter { name, .. } => spans
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, s)| s.clone()),
            _ => None,
        };
        self.error(span.unwrap_or(table), e.to_string())
    }
}

/// The span of an optional float key.
fn sp(v: &Option<Spanned<f64>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// The span of an optional count key.
fn su(v: &Option<Spanned<usize>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}
