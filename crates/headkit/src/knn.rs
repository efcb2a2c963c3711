//! `[head.knn]`: exact k-nearest neighbours (cosine or Euclidean, uniform or distance-weighted votes). Saved
//! as its training `points` and their `labels`; not exported to ONNX (it would carry its training set).

use std::any::Any;
use std::sync::Arc;

use graft_heads::{
    Fit, FittedKnn, HeadError, Knn, KnnValidParams, ParamGuard, Predict, Targets, Weighting,
};
use graft_onnx::Graph;
use graft_schema::Diagnostic;
use graft_schema::pipeline::{RawKnn, RawWeighting};
use graft_schema::resolved::{HeadKindSettings, KnnSettings};
use graft_schema::spanned::Spanned;
use ndarray::{Array1, Array2, ArrayView2};

use crate::HeadKind;
use crate::model::{ExportRefusal, Fitted, Head, Model, NamedTensor, RowLimit, TensorSource};
use crate::prototype::{metric, metric_named};
use crate::spec::{CheckContext, HeadSpec, span_of};

/// `[head.knn]`, checked (single-label only).
pub(crate) fn check(h: Spanned<RawKnn>, ctx: &CheckContext<'_>) -> Result<HeadSpec, Diagnostic> {
    let table = h.span();
    let r = h.into_inner();
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
        .map_err(|e| ctx.located(e, &[("k", span_of(&r.k))], table.clone()))?;
    ctx.key_span("knn", "k", span_of(&r.k).unwrap_or(table.clone()));
    ctx.single_label_only("knn", table)?;
    Ok(HeadSpec {
        kind: HeadKind::Knn(checked),
        calibrate: r.calibrate.unwrap_or(false),
        multi_label: None,
    })
}

/// The head a record names, checked again.
pub(crate) fn from_settings(o: &KnnSettings) -> Result<HeadKind, String> {
    Knn::params()
        .k(o.k)
        .metric(metric_named(&o.metric)?)
        .weighting(match o.weighting.as_str() {
            "distance" => Weighting::Distance,
            "uniform" => Weighting::Uniform,
            other => return Err(format!("unknown weighting `{other}`")),
        })
        .check()
        .map(HeadKind::Knn)
        .map_err(|e| e.to_string())
}

impl Head for KnnValidParams {
    fn name(&self) -> &'static str {
        "knn"
    }

    fn describe(&self) -> String {
        format!(
            "kNN (k = {}, {}, {} votes)",
            self.k(),
            self.metric().name(),
            self.weighting().name()
        )
    }

    fn settings(&self) -> HeadKindSettings {
        HeadKindSettings::Knn(KnnSettings {
            k: self.k(),
            metric: self.metric().name().to_owned(),
            weighting: self.weighting().name().to_owned(),
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
            "training rows stored",
        ))
    }

    fn load(
        &self,
        tensors: &dyn TensorSource,
        n_classes: usize,
        _multi_label: bool,
    ) -> Result<Arc<dyn Model>, String> {
        let labels = tensors.one("labels")?.iter().map(|&c| c as usize).collect();
        let fitted = FittedKnn::from_parts(tensors.two("points")?, labels, n_classes, self.clone())
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(fitted))
    }

    fn min_train_rows(&self) -> Option<RowLimit> {
        Some(RowLimit {
            rows: self.k(),
            key: "k",
            hint: "a k near the square root of the training rows is a usual start",
        })
    }
}

impl Model for FittedKnn {
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
        let labels: Array1<f32> = self.labels().iter().map(|&c| c as f32).collect();
        vec![
            NamedTensor::two("points", self.points()),
            NamedTensor::one("labels", &labels),
        ]
    }

    fn onnx_logits(&self, _g: &mut Graph, _x: &str) -> Result<String, ExportRefusal> {
        Err(ExportRefusal {
            message: "a kNN head cannot be exported to ONNX".to_owned(),
            hint: "it would have to carry its whole training set inside the model; export a logistic, MLP \
                   or prototype head of the run instead (--head)"
                .to_owned(),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
