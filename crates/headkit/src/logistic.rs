//! `[head.logistic]`: multinomial logistic regression (L2, L-BFGS), or one sigmoid per label on multi-label
//! data. Saved as `weights` (features × classes) and `bias`; exported as one affine map.

use std::any::Any;
use std::sync::Arc;

use graft_heads::{
    Fit, FitMultiLabel, FittedLogistic, FittedMultiLabelLogistic, HeadError, LabelSets, Logistic,
    LogisticValidParams, ParamGuard, Predict, PredictMultiLabel, Targets, TrainingReport,
};
use graft_onnx::Graph;
use graft_schema::Diagnostic;
use graft_schema::pipeline::{RawClassWeight, RawLogistic};
use graft_schema::resolved::{HeadKindSettings, LogisticSettings};
use graft_schema::spanned::Spanned;
use ndarray::{Array2, ArrayView2};

use crate::HeadKind;
use crate::model::{ExportRefusal, Figures, Fitted, Head, Model, NamedTensor, TensorSource};
use crate::onnx::affine;
use crate::spec::{CheckContext, HeadSpec, span_of};

/// `[head.logistic]`, checked; its table's start orders the heads.
pub(crate) fn check(
    h: Spanned<RawLogistic>,
    ctx: &CheckContext<'_>,
) -> Result<HeadSpec, Diagnostic> {
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
        ctx.located(
            e,
            &[
                ("c", span_of(&r.c)),
                ("max_iter", span_of(&r.max_iter)),
                ("tol", span_of(&r.tol)),
            ],
            table.clone(),
        )
    })?;
    let multi_label = ctx.task(r.threshold, r.calibrate, table.clone())?;
    if multi_label.is_some() && checked.balanced() {
        return Err(ctx
            .error(
                table,
                "`class_weight = \"balanced\"` applies to single-label heads",
            )
            .with_hint(
                "balanced weights are defined for one class per row; remove `class_weight`",
            ));
    }
    Ok(HeadSpec {
        kind: HeadKind::Logistic(checked),
        calibrate: r.calibrate.unwrap_or(false),
        multi_label,
    })
}

/// The head a record names, checked again.
pub(crate) fn from_settings(o: &LogisticSettings) -> Result<HeadKind, String> {
    Logistic::params()
        .c(o.c)
        .max_iter(o.max_iter)
        .tol(o.tol)
        .fit_intercept(o.fit_intercept)
        .balanced(o.class_weight == "balanced")
        .check()
        .map(HeadKind::Logistic)
        .map_err(|e| e.to_string())
}

fn figures(r: &TrainingReport) -> Figures {
    Figures {
        iterations: r.iterations,
        loss: r.loss,
        termination: r.termination.name().to_owned(),
        ..Figures::default()
    }
}

impl Head for LogisticValidParams {
    fn name(&self) -> &'static str {
        "logistic"
    }

    fn describe(&self) -> String {
        format!(
            "logistic regression (C = {}, L2{}, L-BFGS)",
            self.c(),
            if self.balanced() { ", balanced" } else { "" }
        )
    }

    fn settings(&self) -> HeadKindSettings {
        HeadKindSettings::Logistic(LogisticSettings {
            c: self.c(),
            max_iter: self.max_iter(),
            tol: self.tol(),
            fit_intercept: self.fit_intercept(),
            class_weight: if self.balanced() { "balanced" } else { "none" }.to_owned(),
        })
    }

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        _validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        let fitted = Fit::fit(self, x, targets)?;
        Ok(Fitted {
            figures: figures(fitted.report()),
            model: Arc::new(fitted),
        })
    }

    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
        _validation: Option<(ArrayView2<'_, f32>, &LabelSets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        let fitted = FitMultiLabel::fit_multi_label(self, x, targets)?;
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
        let (weights, bias) = (tensors.two("weights")?, tensors.one("bias")?);
        Ok(if multi_label {
            Arc::new(
                FittedMultiLabelLogistic::from_parts(weights, bias).map_err(|e| e.to_string())?,
            )
        } else {
            Arc::new(FittedLogistic::from_parts(weights, bias).map_err(|e| e.to_string())?)
        })
    }

    fn searched(
        &self,
        values: &[(&str, f64)],
        _hidden: Option<&[usize]>,
    ) -> Option<Result<HeadKind, HeadError>> {
        let mut params = Logistic::params()
            .c(self.c())
            .max_iter(self.max_iter())
            .tol(self.tol())
            .fit_intercept(self.fit_intercept())
            .balanced(self.balanced());
        for (key, x) in values {
            if *key == "c" {
                params = params.c(*x);
            }
        }
        Some(params.check().map(HeadKind::Logistic))
    }
}

/// The weights and bias of either form, as saved and exported.
fn affine_tensors(weights: &Array2<f32>, bias: &ndarray::Array1<f32>) -> Vec<NamedTensor> {
    vec![
        NamedTensor::one("bias", bias),
        NamedTensor::two("weights", weights),
    ]
}

/// `Model` for both forms: they are saved and exported alike and differ in what their outputs are
/// (classes through `Predict`, labels through `PredictMultiLabel`).
macro_rules! logistic_model {
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
                affine_tensors(self.weights(), self.bias())
            }

            fn onnx_logits(&self, g: &mut Graph, x: &str) -> Result<String, ExportRefusal> {
                Ok(affine(g, x, self.weights(), self.bias().view()))
            }

            fn as_any(&self) -> &dyn Any {
                self
            }
        }
    };
}

logistic_model!(FittedLogistic, Predict, n_classes, predict_proba);
logistic_model!(
    FittedMultiLabelLogistic,
    PredictMultiLabel,
    n_labels,
    predict_scores
);
