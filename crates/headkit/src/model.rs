//! The two traits every head kind implements, and what they exchange with the engine.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use graft_heads::{HeadError, LabelSets, Targets};
use graft_onnx::Graph;
use graft_schema::resolved::HeadKindSettings;
use ndarray::{Array1, Array2, ArrayView2};

/// A head kind with its checked hyperparameters: what a pipeline declares and a manifest records.
pub trait Head: Debug + Send + Sync {
    /// The table name (`[head.<name>]`), also the artefact's file stem.
    fn name(&self) -> &'static str;

    /// A one-line description for reports, e.g. `logistic regression (C = 1, L2, L-BFGS)`.
    fn describe(&self) -> String;

    /// The hyperparameters as manifests and artefacts record them.
    fn settings(&self) -> HeadKindSettings;

    /// Trains on (already transformed) rows of one class each; validation rows drive early stopping where
    /// the kind has it.
    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<Fitted, HeadError>;

    /// Trains on rows with label sets (one sigmoid per label). Kinds without a multi-label form refuse.
    fn fit_multi_label(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &LabelSets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &LabelSets<'_>)>,
    ) -> Result<Fitted, HeadError> {
        let _ = (x, targets, validation);
        Err(HeadError::InvalidParameter {
            name: "head",
            value: self.name().to_owned(),
            expected: "a logistic or MLP head for multi-label targets",
        })
    }

    /// The fitted head from the tensors [`Model::tensors`] wrote (`n_classes` outputs).
    fn load(
        &self,
        tensors: &dyn TensorSource,
        n_classes: usize,
        multi_label: bool,
    ) -> Result<Arc<dyn Model>, String>;

    /// The same kind at one point of a hyperparameter search (`values`: the searched keys; `hidden`: MLP
    /// layer widths), checked; `None` for kinds that are not searched.
    fn searched(
        &self,
        values: &[(&str, f64)],
        hidden: Option<&[usize]>,
    ) -> Option<Result<crate::HeadKind, HeadError>> {
        let _ = (values, hidden);
        None
    }

    /// The fewest training rows the settings make sense for (a kNN `k`), checked once the data is known.
    fn min_train_rows(&self) -> Option<RowLimit> {
        None
    }
}

/// A fitted head: its input width, its outputs, and what it is saved and exported as.
pub trait Model: Debug + Send + Sync {
    /// Features per row it reads.
    fn n_features(&self) -> usize;

    /// Outputs per row: classes, or labels for a multi-label head.
    fn n_outputs(&self) -> usize;

    /// Class probabilities (rows sum to one) or, multi-label, each label's probability.
    fn scores(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError>;

    /// The f32 tensors it is saved as; [`Head::load`] reads them back.
    fn tensors(&self) -> Vec<NamedTensor>;

    /// What an artefact records beside the tensors.
    fn extra(&self) -> ModelExtra {
        ModelExtra::default()
    }

    /// ONNX nodes from the features `x` to the logits (softmax or sigmoid inputs); the tensor's name.
    fn onnx_logits(&self, g: &mut Graph, x: &str) -> Result<String, ExportRefusal>;

    /// The concrete type, for a technique that works with one kind (the zero-shot prior of prototypes).
    fn as_any(&self) -> &dyn Any;
}

/// A trained head and how its training went.
#[derive(Debug)]
pub struct Fitted {
    /// The head.
    pub model: Arc<dyn Model>,
    /// How training went.
    pub figures: Figures,
}

impl Fitted {
    /// A head fitted in one step (class means, stored rows, a closed-form solve): no iterations, no loss;
    /// `termination` says what was done.
    pub(crate) fn in_one_step(model: impl Model + 'static, termination: &str) -> Fitted {
        Fitted {
            model: Arc::new(model),
            figures: Figures {
                termination: termination.to_owned(),
                ..Figures::default()
            },
        }
    }
}

/// How training went, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Iterations (L-BFGS) or epochs (MLP); 0 for kinds that do not iterate.
    pub iterations: usize,
    /// The final training loss (0 where there is none).
    pub loss: f64,
    /// Why training stopped.
    pub termination: String,
    /// Per-epoch losses, for kinds trained by epochs.
    pub curve: Vec<EpochPoint>,
    /// The kept epoch, when validation rows chose it.
    pub best_epoch: Option<usize>,
    /// Whether patience ran out.
    pub stopped_early: bool,
}

/// One epoch of a training curve.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPoint {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss, with validation rows.
    pub validation_loss: Option<f64>,
    /// Validation accuracy, with validation rows.
    pub validation_accuracy: Option<f64>,
}

/// Recorded beside a head's tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelExtra {
    /// The MLP's activation.
    pub activation: Option<String>,
    /// The prototype head's softmax temperature.
    pub fitted_temperature: Option<f32>,
}

/// One saved tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Its name in the weights file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A vector.
    pub fn one(name: impl Into<String>, a: &Array1<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![a.len()],
            data: a.to_vec(),
        }
    }

    /// A matrix, row-major.
    pub fn two(name: impl Into<String>, a: &Array2<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape: vec![a.nrows(), a.ncols()],
            data: a.as_standard_layout().iter().copied().collect(),
        }
    }
}

/// Where a head's tensors are read from (the engine's weights file); errors are messages naming the tensor.
pub trait TensorSource {
    /// A vector.
    fn one(&self, name: &str) -> Result<Array1<f32>, String>;
    /// A matrix.
    fn two(&self, name: &str) -> Result<Array2<f32>, String>;
    /// Whether the file holds `name`.
    fn has(&self, name: &str) -> bool;
}

/// A setting that needs at least `rows` training rows.
#[derive(Debug, Clone, PartialEq)]
pub struct RowLimit {
    /// The rows it needs.
    pub rows: usize,
    /// The key that sets it (its span is in [`CheckContext::key_spans`](crate::CheckContext)).
    pub key: &'static str,
    /// What to do when the data has fewer.
    pub hint: &'static str,
}

/// Why a head cannot be exported to ONNX, and what to do instead.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRefusal {
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}
