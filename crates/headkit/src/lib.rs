//! Every kind of head as one module. A head kind (`logistic.rs`, `mlp.rs`, `prototype.rs`, `knn.rs`,
//! `ridge.rs`) owns
//! its settings check (the `[head.<kind>]` table into checked hyperparameters, errors at their keys), its
//! record (the settings a manifest keeps, read back and checked again), training, the tensors it is saved
//! as and loaded from, prediction, and its ONNX export, behind two traits: [`Head`] (the checked kind) and
//! [`Model`] (the fitted head, with its input and output widths). The engine, the jobs and the command line
//! handle heads only through them; [`HeadKind`] is the registry, the one list of kinds, whose matches have
//! no catch-all arm (adding a kind makes the compiler point at the registry's lines).
//!
//! ```
//! use graft_headkit::{HeadKind, HeadSpec};
//! use graft_heads::{Logistic, ParamGuard, Targets};
//! use ndarray::array;
//!
//! let spec = HeadSpec {
//!     kind: HeadKind::Logistic(Logistic::params().check().unwrap()),
//!     calibrate: false,
//!     multi_label: None,
//! };
//! let x = array![[0.0f32, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]];
//! let fitted = spec.kind.head().fit(x.view(), &Targets::new(&[0, 0, 1, 1], 2).unwrap(), None).unwrap();
//! assert_eq!((fitted.model.n_features(), fitted.model.n_outputs()), (2, 2));
//! // What a run records, read back into the same head.
//! assert_eq!(HeadSpec::from_settings(&spec.settings()).unwrap(), spec);
//! ```

mod knn;
mod logistic;
mod mlp;
mod model;
mod onnx;
mod prototype;
mod registry;
mod ridge;
mod spec;

pub use model::{
    EpochPoint, ExportRefusal, Figures, Fitted, Head, Model, ModelExtra, NamedTensor, RowLimit,
    TensorSource,
};
pub use onnx::l2_normalize;
pub use registry::{HEAD_KINDS, HeadKind, check_heads};
pub use spec::{CheckContext, HeadSpec, Locate, Threshold};
