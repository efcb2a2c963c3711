//! `[head.mlp]`: a multilayer perceptron trained with AdamW, with early stopping on validation rows; one
//! sigmoid per label on multi-label data. Saved as `layers.<i>.weights`/`layers.<i>.bias` with the
//! activation beside them; exported layer by layer.

use std::any::Any;
use std::sync::Arc;

use graft_heads::{
    Activation, FittedMlp, FittedMultiLabelMlp, HeadError, LabelSets, Mlp, MlpParams, MlpReport,
    MlpValidParams, Monitor, ParamGuard, Predict, PredictMultiLabel, Schedule, Targets,
};
use graft_onnx::Graph;
use graft_schema::Diagnostic;
use graft_schema::pipeline::{RawActivation, RawMlp, RawMonitor, RawSchedule};
use graft_schema::resolved::{HeadKindSettings, MlpSettings};
use graft_schema::spanned::Spanned;
use ndarray::{Array1, Array2, ArrayView2};

use crate::HeadKind;
use crate::model::{
    EpochPoint, ExportRefusal, Figures, Fitted, Head, Model, ModelExtra, NamedTensor, TensorSource,
};
use crate::onnx::mlp_nodes;
use crate::spec::{CheckContext, HeadSpec, span_of};

/// `[head.mlp]`, checked; heads that draw random numbers take the pipeline's seed.
pub(crate) fn check(h: Spanned<RawMlp>, ctx: &CheckContext<'_>) -> Result<HeadSpec, Diagnostic> {
    let table = h.span();
    let r = h.into_inner();
    let mut params = Mlp::params().seed(ctx.seed);
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
    params = params.schedule(checked_schedule(&r, ctx)?);
    let checked = params.check().map_err(|e| {
        ctx.located(
            e,
            &[
                ("hidden", span_of(&r.hidden)),
                ("dropout", span_of(&r.dropout)),
                ("learning_rate", span_of(&r.learning_rate)),
                ("weight_decay", span_of(&r.weight_decay)),
                ("batch_size", span_of(&r.batch_size)),
                ("max_epochs", span_of(&r.max_epochs)),
                ("patience", span_of(&r.patience)),
                ("warmup_epochs", span_of(&r.warmup_epochs)),
                ("step_epochs", span_of(&r.step_epochs)),
                ("gamma", span_of(&r.gamma)),
            ],
            table.clone(),
        )
    })?;
    let multi_label = ctx.task(r.threshold, r.calibrate, table)?;
    Ok(HeadSpec {
        kind: HeadKind::Mlp(checked),
        calibrate: r.calibrate.unwrap_or(false),
        multi_label,
    })
}

/// `schedule` with only its own keys (`warmup_epochs` for cosine, `step_epochs` and `gamma` for step).
fn checked_schedule(r: &RawMlp, ctx: &CheckContext<'_>) -> Result<Schedule, Diagnostic> {
    let schedule_keys = [
        ("warmup_epochs", span_of(&r.warmup_epochs), "cosine"),
        ("step_epochs", span_of(&r.step_epochs), "step"),
        ("gamma", span_of(&r.gamma), "step"),
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
            return Err(ctx
                .error(span.clone(), format!("`{key}` applies to `schedule = \"{needs}\"`"))
                .with_hint(format!("this head's schedule is \"{schedule_name}\"; set `schedule = \"{needs}\"` or remove `{key}`")));
        }
    }
    Ok(match schedule {
        RawSchedule::Constant => Schedule::Constant,
        RawSchedule::Cosine => Schedule::Cosine {
            warmup_epochs: r.warmup_epochs.as_ref().map_or(0, |v| *v.get_ref()),
        },
        RawSchedule::Step => Schedule::Step {
            step_epochs: r.step_epochs.as_ref().map_or(10, |v| *v.get_ref()),
            gamma: r.gamma.as_ref().map_or(0.1, |v| *v.get_ref()),
        },
    })
}

/// The head a record names, checked again.
pub(crate) fn from_settings(o: &MlpSettings) -> Result<HeadKind, String> {
    let activation = match o.activation.as_str() {
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => return Err(format!("unknown activation `{other}`")),
    };
    let schedule = match o.schedule.as_str() {
        "constant" => Schedule::Constant,
        "cosine" => Schedule::Cosine {
            warmup_epochs: o.warmup_epochs.unwrap_or(0),
        },
        "step" => Schedule::Step {
            step_epochs: o.step_epochs.ok_or("`step_epochs` missing")?,
            gamma: o.gamma.ok_or("`gamma` missing")?,
        },
        other => return Err(format!("unknown schedule `{other}`")),
    };
    let monitor = match o.monitor.as_str() {
        "accuracy" => Monitor::Accuracy,
        "loss" => Monitor::Loss,
        other => return Err(format!("unknown monitor `{other}`")),
    };
    let params: MlpParams = Mlp::params()
        .hidden(&o.hidden)
        .activation(activation)
        .dropout(o.dropout)
        .learning_rate(o.learning_rate)
        .weight_decay(o.weight_decay)
        .batch_size(o.batch_size)
        .max_epochs(o.max_epochs)
        .schedule(schedule)
        .patience(o.patience)
        .monitor(monitor)
        .restore_best(o.restore_best)
        .seed(o.seed);
    params.check().map(HeadKind::Mlp).map_err(|e| e.to_string())
}

/// The training curve, why training stopped, and the last epoch's training loss.
fn figures(r: &MlpReport) -> Figures {
    let curve = r
        .history
        .iter()
        .map(|e| EpochPoint {
            epoch: e.epoch,
            train_loss: e.train_loss,
            validation_loss: e.validation_loss,
            validation_accuracy: e.validation_accuracy,
        })
        .collect();
    let termination = match (r.stopped_early, r.best_epoch) {
        (true, Some(best)) => format!("early stop; best validation epoch {best}"),
        (false, Some(best)) => format!("epoch limit; best validation epoch {best}"),
        _ => "epoch limit".to_owned(),
    };
    Figures {
        iterations: r.epochs_run,
        loss: r.history.last().map_or(f64::NAN, |e| e.train_loss),
        termination,
        curve,
        best_epoch: r.best_epoch,
        stopped_early: r.stopped_early,
    }
}

impl Head for MlpValidParams {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn describe(&self) -> String {
        format!(
            "MLP (hidden {:?}, {}, dropout {}, AdamW lr {} wd {})",
            self.hidden(),
            self.activation().name(),
            self.dropout(),
            self.learning_rate(),
            self.weight_decay()
        )
    }

    fn settings(&self) -> HeadKindSettings {
        let (schedule, warmup_epochs, step_epochs, gamma) = match self.schedule() {
            Schedule::Constant => ("constant", None, None, None),
            Schedule::Cosine { warmup_epochs } => ("cosine", Some(warmup_epochs), None, None),
            Schedule::Step { step_epochs, gamma } => ("step", None, Some(step_epochs), Some(gamma)),
        };
        HeadKindSettings::Mlp(MlpSettings {
            hidden: self.hidden().to_vec(),
            activation: self.activation().name().to_owned(),
            dropout: self.dropout(),
            learning_rate: self.learning_rate(),
            weight_decay: self.weight_decay(),
            batch_size: self.batch_size(),
            max_epochs: self.max_epochs(),
            schedule: schedule.to_owned(),
            warmup_epochs,
            step_epochs,
            gamma,
            patience: self.patience(),
            monitor: match self.monitor() {
                Monitor::Loss => "loss",
                Monitor::Accuracy => "accuracy",
            }
            .to_owned(),
            restore_best: self.restore_best(),
            seed: self.seed(),
        })
    }

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        let fitted = self.fit_with_validation(x, targets, validation)?;
        Ok(Fitted {
            figures: figures(fitted.report()),
            model: Arc::new(fitted),
        })
    }

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &LabelSets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        let fitted = self.fit_multi_label_with_validation(x, targets, validation)?;
        Ok(Fitted {
            figures: figures(fitted.report()),
            model: Arc::new(fitted),
        })
    }

    fn load(
        &self,
        tensors: &dyn TensorSource,
        _n_classes: usize,
        multi_label: bool,
    ) -> Result<Arc<dyn Model>, String> {
        let mut layers = Vec::new();
        while tensors.has(&format!("layers.{}.weights", layers.len())) {
            let i = layers.len();
            layers.push((
                tensors.two(&format!("layers.{i}.weights"))?,
                tensors.one(&format!("layers.{i}.bias"))?,
            ));
        }
        let error = |e: HeadError| e.to_string();
        Ok(if multi_label {
            Arc::new(FittedMultiLabelMlp::from_layers(layers, self.activation()).map_err(error)?)
        } else {
            Arc::new(FittedMlp::from_layers(layers, self.activation()).map_err(error)?)
        })
    }

    fn searched(
        &self,
        values: &[(&str, f64)],
        hidden: Option<&[usize]>,
    ) -> Option<Result<HeadKind, HeadError>> {
        let mut params = self.unchecked();
        for (key, x) in values {
            params = match *key {
                "learning_rate" => params.learning_rate(*x),
                "weight_decay" => params.weight_decay(*x),
                _ => params.dropout(*x),
            };
        }
        if let Some(l) = hidden {
            params = params.hidden(l);
        }
        Some(params.check().map(HeadKind::Mlp))
    }
}

/// The layers of either form, as saved (bias, then weights, per layer).
fn layer_tensors(layers: Vec<(&Array2<f32>, &Array1<f32>)>) -> Vec<NamedTensor> {
    layers
        .into_iter()
        .enumerate()
        .flat_map(|(i, (w, b))| {
            [
                NamedTensor::one(format!("layers.{i}.bias"), b),
                NamedTensor::two(format!("layers.{i}.weights"), w),
            ]
        })
        .collect()
}

/// `Model` for both forms: they are saved and exported alike and differ in what their outputs are
/// (classes through `Predict`, labels through `PredictMultiLabel`).
macro_rules! mlp_model {
    ($fitted:ty, $predict:ident, $outputs:ident, $scores:ident) => {
        impl Model for $fitted {
            fn n_features(&self) -> usize {
                $predict::n_features(self)
            }

            fn n_outputs(&self) -> usize {
                self.$outputs()
            }

            fn scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
                self.$scores(x)
            }

            fn tensors(&self) -> Vec<NamedTensor> {
                layer_tensors(self.layers())
            }

            fn extra(&self) -> ModelExtra {
                ModelExtra {
                    activation: Some(self.activation().name().to_owned()),
                    ..ModelExtra::default()
                }
            }

            fn onnx_logits(&self, g: &mut Graph, x: &str) -> Result<String, ExportRefusal> {
                Ok(mlp_nodes(g, x, self.layers(), self.activation()))
            }

            fn as_any(&self) -> &dyn Any {
                self
            }
        }
    };
}

mlp_model!(FittedMlp, Predict, n_classes, predict_proba);
mlp_model!(
    FittedMultiLabelMlp,
    PredictMultiLabel,
    n_labels,
    predict_scores
);
