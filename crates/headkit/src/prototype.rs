//! `[head.prototype]`: nearest class mean (cosine or Euclidean) with a softmax over similarities; the
//! zero-shot stage can start it from class descriptions. Saved as `prototypes` and per-class `counts`;
//! exported as similarities to the prototypes, a class never seen masked out.

use std::any::Any;
use std::sync::Arc;

use graft_heads::{
    Fit, FittedPrototype, HeadError, Metric, ParamGuard, Predict, Prototype, PrototypeValidParams,
    Targets,
};
use graft_onnx::Graph;
use graft_schema::Diagnostic;
use graft_schema::pipeline::{RawMetric, RawPrototype};
use graft_schema::resolved::{HeadKindSettings, PrototypeSettings};
use graft_schema::spanned::Spanned;
use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::HeadKind;
use crate::model::{ExportRefusal, Fitted, Head, Model, ModelExtra, NamedTensor, TensorSource};
use crate::onnx::l2_normalize;
use crate::spec::{CheckContext, HeadSpec, span_of};

/// `cosine` (the default) or `euclidean`, as the prototype and kNN tables write it.
pub(crate) fn metric(m: Option<RawMetric>) -> Metric {
    match m {
        None | Some(RawMetric::Cosine) => Metric::Cosine,
        Some(RawMetric::Euclidean) => Metric::Euclidean,
    }
}

/// A metric as a record names it.
pub(crate) fn metric_named(name: &str) -> Result<Metric, String> {
    match name {
        "euclidean" => Ok(Metric::Euclidean),
        "cosine" => Ok(Metric::Cosine),
        other => Err(format!("unknown metric `{other}`")),
    }
}

/// `[head.prototype]`, checked (single-label only).
pub(crate) fn check(
    h: Spanned<RawPrototype>,
    ctx: &CheckContext<'_>,
) -> Result<HeadSpec, Diagnostic> {
    let table = h.span();
    let r = h.into_inner();
    let mut params = Prototype::params().metric(metric(r.metric));
    if let Some(t) = &r.temperature {
        params = params.temperature(*t.get_ref());
    }
    let checked = params.check().map_err(|e| {
        ctx.located(
            e,
            &[("temperature", span_of(&r.temperature))],
            table.clone(),
        )
    })?;
    ctx.single_label_only("prototype", table)?;
    Ok(HeadSpec {
        kind: HeadKind::Prototype(checked),
        calibrate: r.calibrate.unwrap_or(false),
        multi_label: None,
    })
}

/// The head a record names, checked again.
pub(crate) fn from_settings(o: &PrototypeSettings) -> Result<HeadKind, String> {
    Prototype::params()
        .metric(metric_named(&o.metric)?)
        .temperature(o.temperature)
        .check()
        .map(HeadKind::Prototype)
        .map_err(|e| e.to_string())
}

impl Head for PrototypeValidParams {
    fn name(&self) -> &'static str {
        "prototype"
    }

    fn describe(&self) -> String {
        format!("prototypes ({}, nearest class mean)", self.metric().name())
    }

    fn settings(&self) -> HeadKindSettings {
        HeadKindSettings::Prototype(PrototypeSettings {
            metric: self.metric().name().to_owned(),
            temperature: self.temperature(),
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
            "class means",
        ))
    }

    fn load(
        &self,
        tensors: &dyn TensorSource,
        _n_classes: usize,
        _multi_label: bool,
    ) -> Result<Arc<dyn Model>, String> {
        let counts = tensors.one("counts")?.iter().map(|&c| c as usize).collect();
        let fitted = FittedPrototype::from_parts(
            tensors.two("prototypes")?,
            counts,
            self.metric(),
            self.temperature() as f32,
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(fitted))
    }
}

impl Model for FittedPrototype {
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
        let counts: Array1<f32> = self.counts().iter().map(|&c| c as f32).collect();
        vec![
            NamedTensor::two("prototypes", self.prototypes()),
            NamedTensor::one("counts", &counts),
        ]
    }

    fn extra(&self) -> ModelExtra {
        ModelExtra {
            fitted_temperature: Some(self.temperature()),
            ..ModelExtra::default()
        }
    }

    fn onnx_logits(&self, g: &mut Graph, x: &str) -> Result<String, ExportRefusal> {
        let prototypes_t = self.prototypes().t().to_owned();
        let p = g.constant("prototypes_t", prototypes_t.view().into_dyn());
        let similarity = match self.metric() {
            Metric::Cosine => {
                let unit = l2_normalize(g, x);
                g.node("MatMul", &[&unit, &p], &[])
            }
            Metric::Euclidean => {
                // −‖x − μ‖² = 2x·μ − ‖x‖² − ‖μ‖², as graft computes it.
                let cross = g.node("MatMul", &[x, &p], &[]);
                let two = g.scalar("two", 2.0);
                let doubled = g.node("Mul", &[&cross, &two], &[]);
                let squares = g.node("Mul", &[x, x], &[]);
                let xn = g.reduce("ReduceSum", &squares, &[1], true);
                let mn = self.prototypes().map_axis(Axis(1), |r| r.dot(&r));
                let mn = g.constant("prototype_norms", mn.view().into_dyn());
                let partial = g.node("Sub", &[&doubled, &xn], &[]);
                g.node("Sub", &[&partial, &mn], &[])
            }
        };
        let inv_t = g.scalar("inverse_temperature", 1.0 / self.temperature());
        let mut scaled = g.node("Mul", &[&similarity, &inv_t], &[]);
        // A class never seen cannot be predicted (graft sets its logit to −∞).
        if self.counts().contains(&0) {
            let mask: Vec<f32> = self
                .counts()
                .iter()
                .map(|&c| if c == 0 { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            let mask = g.constant("unseen_classes", ndarray::aview1(&mask).into_dyn());
            scaled = g.node("Add", &[&scaled, &mask], &[]);
        }
        Ok(scaled)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
