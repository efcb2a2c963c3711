//! `[head.ridge]`: scikit-learn's ridge classifier (least squares on ±1 class indicators, L2 penalty,
//! solved in closed form). Saved as `weights` (features × classes) and `bias`; exported as one affine map.

use std::any::Any;
use std::sync::Arc;

use graft_heads::{
    Fit, FittedRidge, HeadError, ParamGuard, Predict, Ridge, RidgeValidParams, Targets,
};
use graft_onnx::Graph;
use graft_schema::Diagnostic;
use graft_schema::pipeline::RawRidge;
use graft_schema::resolved::{HeadKindSettings, RidgeSettings};
use graft_schema::spanned::Spanned;
use ndarray::{Array2, ArrayView2};

use crate::HeadKind;
use crate::model::{ExportRefusal, Fitted, Head, Model, NamedTensor, TensorSource};
use crate::onnx::affine;
use crate::spec::{CheckContext, HeadSpec, span_of};

/// `[head.ridge]`, checked (single-label only).
pub(crate) fn check(h: Spanned<RawRidge>, ctx: &CheckContext<'_>) -> Result<HeadSpec, Diagnostic> {
    let table = h.span();
    let r = h.into_inner();
    let mut params = Ridge::params();
    if let Some(a) = &r.alpha {
        params = params.alpha(*a.get_ref());
    }
    if let Some(f) = r.fit_intercept {
        params = params.fit_intercept(f);
    }
    let checked = params
        .check()
        .map_err(|e| ctx.located(e, &[("alpha", span_of(&r.alpha))], table.clone()))?;
    ctx.single_label_only("ridge", table)?;
    Ok(HeadSpec {
        kind: HeadKind::Ridge(checked),
        calibrate: r.calibrate.unwrap_or(false),
        multi_label: None,
    })
}

/// The head a record names, checked again.
pub(crate) fn from_settings(o: &RidgeSettings) -> Result<HeadKind, String> {
    Ridge::params()
        .alpha(o.alpha)
        .fit_intercept(o.fit_intercept)
        .check()
        .map(HeadKind::Ridge)
        .map_err(|e| e.to_string())
}

impl Head for RidgeValidParams {
    fn name(&self) -> &'static str {
        "ridge"
    }

    fn describe(&self) -> String {
        format!("ridge classifier (α = {}, closed form)", self.alpha())
    }

    fn settings(&self) -> HeadKindSettings {
        HeadKindSettings::Ridge(RidgeSettings {
            alpha: self.alpha(),
            fit_intercept: self.fit_intercept(),
        })
    }

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        _validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        Ok(Fitted::in_one_step(
            Fit::fit(self, x, targets)?,
            "closed form (Cholesky)",
        ))
    }

    fn load(
        &self,
        tensors: &dyn TensorSource,
        _n_classes: usize,
        _multi_label: bool,
    ) -> Result<Arc<dyn Model>, String> {
        let fitted = FittedRidge::from_parts(tensors.two("weights")?, tensors.one("bias")?)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(fitted))
    }
}

impl Model for FittedRidge {
    fn n_features(&self) -> usize {
        Predict::n_features(self)
    }

    fn n_outputs(&self) -> usize {
        self.n_classes()
    }

    fn scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        self.predict_proba(x)
    }

    fn tensors(&self) -> Vec<NamedTensor> {
        vec![
            NamedTensor::one("bias", self.bias()),
            NamedTensor::two("weights", self.weights()),
        ]
    }

    fn onnx_logits(&self, g: &mut Graph, x: &str) -> Result<String, ExportRefusal> {
        Ok(affine(g, x, self.weights(), self.bias().view()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
